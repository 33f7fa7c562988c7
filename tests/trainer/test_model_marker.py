"""The first process of a node stages the model (Hub, bucket, a source job's results) and publishes where
it is; the node's other processes (MPI ranks of one worker pod) wait for that marker. A marker left on a
models claim by an earlier launch must not count: the first process may be rewriting that folder."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubetune.trainer import model
from kubetune.trainer.errors import Retryable

WAIT = {model.ENV_WAIT_TIMEOUT: "5"}


def test_a_marker_from_an_earlier_launch_does_not_release_the_other_processes(tmp_path: Path) -> None:
    marker = tmp_path / ".kubetune-model-x.ready"
    # An earlier pod's launch, as an old kubetune wrote it (the path alone), then as this one writes it
    # from another parent process (another launch).
    marker.write_text(f"{tmp_path / 'old'}\n", encoding="utf-8")
    with pytest.raises(Retryable):
        model.await_published(marker, "the first process", {model.ENV_WAIT_TIMEOUT: "0.3"})
    code = (
        "from kubetune.trainer import model; from pathlib import Path; "
        f"model.publish(Path({str(marker)!r}), {str(tmp_path / 'other')!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert marker.read_text(encoding="utf-8").startswith(str(tmp_path / "other"))
    with pytest.raises(Retryable):
        model.await_published(marker, "the first process", {model.ENV_WAIT_TIMEOUT: "0.3"})

    # This launch's first process (same parent) publishes: the waiting process gets its folder.
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(model.await_published(marker, "the first process", WAIT)))
    waiter.start()
    time.sleep(0.2)
    model.publish(marker, str(tmp_path / "new"))
    waiter.join(timeout=10)
    assert got == [str(tmp_path / "new")]


def test_the_launch_token_differs_between_parents_and_is_stable_within_one() -> None:
    here = model.launch_token()
    assert here == model.launch_token()
    code = "from kubetune.trainer import model; print(model.launch_token())"
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert child != here  # the child's parent is this process, not ours


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_the_launch_token_reads_the_start_time_of_a_parent_with_an_odd_name() -> None:
    """A parent whose name is not ASCII and holds spaces and parentheses (comm is the parent's to set)
    still yields its start time, so a restarted parent with a reused PID still gives another token."""
    code = (
        "import subprocess, sys; from pathlib import Path\n"
        "Path('/proc/self/comm').write_bytes('é) (x y'.encode())\n"
        "print(subprocess.run([sys.executable, '-c', 'from kubetune.trainer import model; "
        "print(model.launch_token())'],"
        " check=True, capture_output=True, text=True).stdout.strip())\n"
    )
    token = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    _, started = token.split(":")
    assert started.isdigit(), token
