"""Session-wide test rules (every test directory).

* ``gpu`` tests run only where a CUDA device is (``nvidia-smi -L`` lists one); elsewhere they skip.
* Under ``CI=true`` a skipped test fails the run: CI installs every tool (``.ci/install-tools``) and
  has the upstream CRDs (``../shared``), so a skip there means a check silently did not run. The one
  allowed skip is a ``gpu`` test on a machine without a GPU.
* Every pytest-timeout limit is multiplied by ``KUBETUNE_TEST_TIME_FACTOR`` (tests/support/kt_time.py).
* ``tiny_assets``: the tiny random Qwen2 model, tokenizer and dataset, for every directory
  (tests/trainer, tests/localrun): the model built once per run in a child process (~10 s), each
  session (xdist worker) with its own copy.
* ``torch_extensions``: DeepSpeed's compiled CPU ops (1-3 min to build, built or checked once per
  run by the fixture itself), kept in ``.cache/`` of the repository (gitignored) across tests and runs;
  ``KUBETUNE_TEST_TORCH_EXTENSIONS`` points elsewhere.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled, time_factor
from tests.support.xdist_once import run_shared

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def has_gpu() -> bool:
    """A CUDA device is visible (without importing torch into the test process)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the train marker must be there by then
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that builds the tiny model needs the train extra: it must say so, or `-m "not train"`
    # (.ci/test --quick, a machine without torch) errors on it instead of leaving it out.
    unmarked = [
        item.nodeid
        for item in items
        if "tiny_assets" in getattr(item, "fixturenames", ()) and item.get_closest_marker("train") is None
    ]
    if unmarked:
        raise pytest.UsageError("these tests use tiny_assets (torch) without the train marker: " + ", ".join(unmarked))
    _scale_timeouts(config, items)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest -n (.ci/test), the multi-minute tests go out first, so the run does not end
        # with one worker busy on a long training while the other is idle. Every worker collects,
        # so the order must be the same in each: a stable sort on the marker.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker); none on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def _scale_timeouts(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every pytest-timeout limit (the 120 s default of pyproject, or a test's own marker) times
    KUBETUNE_TEST_TIME_FACTOR (tests/support/kt_time.py)."""
    factor = time_factor()
    if factor == 1:
        return
    default = getattr(config, "_env_timeout", None) or float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        base = (marker.args[0] if marker.args else marker.kwargs.get("timeout")) if marker is not None else default
        if base:
            item.add_marker(pytest.mark.timeout(float(base) * factor), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        allowed = item.get_closest_marker("gpu") is not None and not has_gpu()
        if not allowed:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true (a check that did not run fails CI): {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    # A module that skips while it is collected (pytest.importorskip or pytest.skip(allow_module_level=True)
    # at its top) never reaches pytest_runtest_makereport: its tests vanish with one "skipped" line.
    report = yield
    if in_ci() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a module whose tests did not run fails CI): {reason}"
    return report


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny random model and dataset (kubetune.trainer.tiny.TinyAssets), each session its own copy.
    Tests may add dataset files of their own names; none changes the model.  The model is built once
    per run, in a child process (torch), by the first xdist worker that asks; the others copy its
    folder (0.5 MB, no torch) instead of building it again (tests/support/xdist_once.py)."""
    from kubetune.trainer.tiny import build_assets
    from tests.support.trainerlib import build_shared_assets

    with run_shared(tmp_path_factory, "tiny-model") as shared:
        built = shared / "built"  # written once the build succeeded: a failed one is not copied
        if not built.is_file():
            # A build killed halfway may have left config.json without the weights, and build_assets
            # skips a folder that has config.json (kubetune/trainer/tiny.py): start from nothing.
            shutil.rmtree(shared / "models", ignore_errors=True)
            build_shared_assets(shared)
            built.write_text("ok\n", encoding="utf-8")
        root = tmp_path_factory.mktemp("tiny")
        shutil.copytree(shared / "models", root / "models")
    return build_assets(root)  # the model is there: writes the dataset only


@pytest.fixture(scope="session")
def torch_extensions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DeepSpeed op cache, kept across sessions: the first DeepSpeed test of a fresh clone pays
    the compile, later runs reuse it (torch.utils.cpp_extension rebuilds when the sources or flags
    change, so a stale cache is not a risk).

    The op a CPU training loads (deepspeed/comm/torch.py ``build_shm_op``: the CPU accelerator's
    ShareMemCommBuilder, "deepspeed_shm_comm" @ deepspeed 0.18.4) is built here, before any test
    gets the folder, with the environment the trainings get (trainerlib.isolated_env): a test that
    copies the cache (test_mpi_ssh.py, for its unprivileged user) then copies a built op instead of
    an empty folder and compiling it a second time. Two xdist workers asking at once: run_shared's
    lock (tests/support/xdist_once.py) lets one build or check and the other wait, then reuse it."""
    from tests.support.trainerlib import isolated_env

    reuse = os.environ.get("KUBETUNE_TEST_TORCH_EXTENSIONS")
    path = Path(reuse) if reuse else REPO / ".cache" / "torch_extensions"
    path.mkdir(parents=True, exist_ok=True)
    code = (
        "from deepspeed.accelerator import get_accelerator; "
        "get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
    )
    # Once per run: the first xdist worker builds or checks the op, the others wait for it and reuse
    # the folder (each check alone is a process importing DeepSpeed, ~13 s of CPU).
    with run_shared(tmp_path_factory, "torch-extensions") as shared:
        checked = shared / "checked"
        if not checked.is_file() or checked.read_text(encoding="utf-8") != str(path):
            env = isolated_env(tmp_path_factory.mktemp("torch-extensions-build"), extensions=path)
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=scaled(600)
            )
            assert done.returncode == 0, (
                f"building DeepSpeed's CPU op into {path} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
            checked.write_text(str(path), encoding="utf-8")
    return path
