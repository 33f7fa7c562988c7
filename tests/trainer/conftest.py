import os
from pathlib import Path

import pytest

from trainerlib import TinyAssets, build_shared_assets


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    """The tiny random model and dataset, built once per test session (~10 s)."""
    return build_shared_assets(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def torch_extensions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DeepSpeed op cache for the session: the first DeepSpeed test pays the compile
    (DeepSpeed's CPU shared-memory op, 1-3 min). KUBETUNE_TEST_TORCH_EXTENSIONS reuses a
    cache across sessions while developing."""
    reuse = os.environ.get("KUBETUNE_TEST_TORCH_EXTENSIONS")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("torch_extensions")
