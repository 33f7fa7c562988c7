"""tests/conftest.py's CI rule, run on throw-away test files: under ``CI=true`` a test that did not
run fails the run, whether it skipped in its body or its whole module skipped while being collected
(``pytest.importorskip`` at module level: tests/localrun/test_serve_local.py), except a ``gpu`` test
on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

REPO = Path(__file__).resolve().parents[2]

FILES = {
    "test_body_skip.py": "import pytest\n\ndef test_skips():\n    pytest.skip('no tool here')\n",
    "test_module_skip.py": "import pytest\n\npytest.importorskip('kubetune_no_such_module')\n\n"
    "def test_never_collected():\n    pass\n",
    "test_runs.py": "def test_runs():\n    pass\n",
}


def run_pytest(tmp_path: Path, files: list[str], ci: bool) -> subprocess.CompletedProcess[str]:
    for name in files:
        (tmp_path / name).write_text(FILES[name], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-rs", *files],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


@pytest.mark.parametrize("skipping", ["test_body_skip.py", "test_module_skip.py"])
def test_a_skip_fails_the_run_under_ci(tmp_path: Path, skipping: str) -> None:
    done = run_pytest(tmp_path, [skipping, "test_runs.py"], ci=True)
    assert done.returncode != 0, done.stdout
    assert "skipped under CI=true" in done.stdout, done.stdout


def test_a_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, ["test_body_skip.py", "test_module_skip.py", "test_runs.py"], ci=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped" in done.stdout, done.stdout
