"""The newcomer's path: `git clone` into a folder with no ../shared beside it, then the README's
commands. Issue 22: `bash .ci/run` stopped at `.ci/regen --check` in such a clone (a test helper
loaded ../shared/upstream-crds unguarded), while the checks that need those CRDs passed silently
where they were missing.

What this test does, cheaply: clones the repository's committed HEAD into a temporary folder
(nothing named ``shared`` beside it, ``KUBETUNE_UPSTREAM_CRDS`` unset), links the installed ``.venv``
into it instead of installing again, and in the clone runs

* ``bash .ci/regen --check``: every generated file regenerates identically without the upstream
  CRDs (the recorded API calls included), and it says, on stderr, that it recorded without them;
* a small pytest selection that needs the upstream CRDs: it passes with each such check skipped,
  the skip naming the folder it looked in and how to get the CRDs; under ``CI=true`` the same run
  fails.

What it does not cover: ``bash .ci/install`` (the venv is reused, not rebuilt: CI's own run of
``.ci/run`` installs from scratch), ``kubetune demo`` (tests/localrun/test_demo.py runs it), the
whole suite in the clone (too slow to run twice), and uncommitted changes (the clone has HEAD only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.train]  # .ci/regen imports LLaMA-Factory for its argument catalog


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("the newcomer test needs git and a git checkout (CI has both)")
    root = tmp_path_factory.mktemp("newcomer")
    dest = root / "kubetune"
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO), str(dest)], check=True, capture_output=True, timeout=scaled(120)
    )
    assert not (root / "shared").exists()
    (dest / ".venv").symlink_to((REPO / ".venv").resolve())
    if (REPO / ".tools").exists():
        (dest / ".tools").symlink_to((REPO / ".tools").resolve())
    return dest


def _env(clone: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBETUNE_UPSTREAM_CRDS", "CI", "PYTHONPATH", "KUBETUNE_UPDATE_API_CALLS")
    }
    # the clone's package, not the one the venv was installed from
    env.update(
        PYTHONPATH=str(clone / "operator"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


@pytest.mark.timeout(420)  # regenerates everything: the CRD, goldens, LLaMA-Factory's catalog, one operator run
def test_regen_check_passes_in_a_clone_without_the_upstream_crds(clone: Path) -> None:
    done = subprocess.run(
        ["bash", ".ci/regen", "--check"],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=scaled(400),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every generated file is current" in done.stdout
    assert "no upstream CRDs at ../shared/upstream-crds" in done.stderr


UPSTREAM_SELECTION = ["tests/render/test_trainjob_render.py", "-k", "upstream", "-p", "no:cacheprovider", "-q", "-rs"]


def test_checks_needing_the_upstream_crds_skip_and_say_where_they_looked(clone: Path) -> None:
    python = str(clone / ".venv" / "bin" / "python")
    done = subprocess.run(
        [python, "-m", "pytest", *UPSTREAM_SELECTION],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=scaled(110),
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" not in done.stdout.splitlines()[-1], "without the CRDs no upstream check can pass"
    assert f"upstream CRDs not found at {clone.parent / 'shared' / 'upstream-crds'}" in done.stdout
    assert "KUBETUNE_UPSTREAM_CRDS=" in done.stdout

    in_ci = subprocess.run(
        [python, "-m", "pytest", *UPSTREAM_SELECTION],
        cwd=clone,
        env=_env(clone, CI="true"),
        capture_output=True,
        text=True,
        timeout=scaled(110),
    )
    assert in_ci.returncode == 1 and "skipped under CI=true" in in_ci.stdout, in_ci.stdout[-3000:]
