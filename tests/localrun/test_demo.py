"""``kubetune demo`` (README command 1) ends by serving the model it trained and asking it through the
official openai client: run as a user runs it, with fewer steps."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

from tests.support.trainerlib import isolated_env


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(300)  # trains, merges and serves in subprocesses (about 1 min on 2 idle cores)
def test_demo_trains_merges_serves_and_answers_through_openai(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    done = subprocess.run(
        [sys.executable, "-m", "kubetune", "demo", "--work", str(tmp_path / "demo"), "--steps", "5"],
        env=isolated_env(tmp_path / "env"),
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    merged = tmp_path / "demo" / "outputs" / "default" / "kubetune-demo" / "merged"
    assert re.search(rf"served {re.escape(str(merged))} at http://127\.0\.0\.1:\d+/v1 ", done.stdout)
    assert "  user> What does kubetune do?\n  assistant (through the openai client)> " in done.stdout
    assert "serve+ask" in done.stdout
