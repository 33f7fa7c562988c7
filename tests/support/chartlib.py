"""Helpers for the chart tests: render charts/kubetune with the real helm binary (.ci/install-tools)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from kubetune.api import load_documents

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
HELM = ROOT / ".tools" / "bin" / "helm"
CI_VALUES = CHART / "ci" / "namespaced-values.yaml"
GENERATED_CRD = ROOT / "crds" / "kubetune.io_finetunejobs.yaml"
CHART_CRD = CHART / "crds" / "kubetune.io_finetunejobs.yaml"
RELEASE = "kt"
NAMESPACE = "kubetune-system"


def helm_available() -> bool:
    return HELM.is_file()


needs_helm = pytest.mark.skipif(
    not helm_available(), reason=f"{HELM.relative_to(ROOT)} missing: run `bash .ci/install-tools` (CI always does)"
)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=scaled(120), check=False)


def template(*extra: str, values: Path | None = None) -> list[dict[str, Any]]:
    """`helm template` the chart; every rendered object (tests included), parsed."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    proc = run_helm(*args, *extra)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    # YAML 1.2 numbers, as kubectl and the API server read them (PyYAML alone reads 5e-05 as a string).
    return list(load_documents(proc.stdout))


def template_error(*extra: str) -> str:
    """`helm template` that must fail; its error output."""
    proc = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra)
    assert proc.returncode != 0, f"helm template accepted {extra}, expected a failure"
    return proc.stderr


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def _cached(values: Path | None) -> tuple[dict[str, Any], ...]:
    return tuple(template(values=values))


def _rendered(values: Path | None) -> list[dict[str, Any]]:
    if not helm_available():
        pytest.skip(f"{HELM.relative_to(ROOT)} missing: run `bash .ci/install-tools` (CI always does)")
    return list(_cached(values))


# Fixtures of the chart tests: each test module imports the ones it requests.
@pytest.fixture
def default_objects() -> list[dict[str, Any]]:
    """The chart rendered with its default values."""
    return _rendered(None)


@pytest.fixture
def ci_objects() -> list[dict[str, Any]]:
    """The chart rendered with ci/namespaced-values.yaml (namespaced mode, ServiceMonitor, queue)."""
    return _rendered(CI_VALUES)
