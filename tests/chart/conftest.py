"""Session fixtures: the chart rendered once with default values and once with ci/ values."""

from __future__ import annotations

from typing import Any

import pytest

from chartlib import CI_VALUES, HELM, helm_available, template


@pytest.fixture(scope="session")
def default_objects() -> list[dict[str, Any]]:
    if not helm_available():
        pytest.skip(f"{HELM} missing: run `bash .ci/install-tools`")
    return template()


@pytest.fixture(scope="session")
def ci_objects() -> list[dict[str, Any]]:
    if not helm_available():
        pytest.skip(f"{HELM} missing: run `bash .ci/install-tools`")
    return template(values=CI_VALUES)
