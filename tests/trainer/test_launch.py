"""How a training child's end maps to the exit code the operator's restart policy reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

from kubetune.api import contract
from kubetune.trainer.errors import Retryable, TrainerError
from kubetune.trainer.launch import Child, classify
from tests.support.trainerlib import TinyAssets

CASES = {
    "CUDA OOM is permanent": (
        1,
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        contract.EXIT_TRAINING,
    ),
    "OOM wins over the NCCL noise of the other ranks": (
        1,
        "NCCL error: remote process exited\ntorch.OutOfMemoryError: CUDA out of memory",
        contract.EXIT_TRAINING,
    ),
    "NCCL failure is retryable": (
        1,
        "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp",
        contract.EXIT_RETRYABLE,
    ),
    "rendezvous timeout is retryable": (
        1,
        "torch.distributed.DistNetworkError: The client socket has timed out after 900s",
        contract.EXIT_RETRYABLE,
    ),
    "a worker killed by a signal is retryable": (
        1,
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n  exitcode  : -9 (pid: 12)",
        contract.EXIT_RETRYABLE,
    ),
    "LLaMA-Factory finding no samples is a data error": (
        1,
        "ValueError: Cannot find valid samples, check `data/README.md` for the data format.",
        contract.EXIT_DATA,
    ),
    "unknown arguments are a config error": (
        1,
        "ValueError: Some keys are not used by the HfArgumentParser: ['lora_rnak']",
        contract.EXIT_CONFIG,
    ),
    "any other crash is permanent": (1, "Traceback ...\nKeyError: 'q_proj'", contract.EXIT_TRAINING),
    "killed by a signal itself": (-9, "", contract.EXIT_RETRYABLE),
}


@pytest.mark.parametrize(("code", "output", "expected"), CASES.values(), ids=CASES.keys())
def test_classify(code: int, output: str, expected: int) -> None:
    error = classify(code, output)
    assert error.exit_code == expected
    assert str(error)


def test_child_output_is_passed_through_and_a_crash_is_classified(capfd: pytest.CaptureFixture[str]) -> None:
    script = (
        "import sys; print('step 1'); sys.stderr.write('torch.OutOfMemoryError: CUDA out of memory\\n'); sys.exit(1)"
    )
    with pytest.raises(TrainerError) as err:
        Child([sys.executable, "-c", script], dict(os.environ)).run()
    assert err.value.exit_code == contract.EXIT_TRAINING
    assert "step 1" in capfd.readouterr().out


def test_sigterm_to_the_trainer_stops_the_whole_training_group_and_is_retryable(tmp_path: Path) -> None:
    # The child starts a grandchild (as torchrun starts workers); both must stop.
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); "
        "print('training', flush=True); time.sleep(60)"
    )
    child = Child([sys.executable, "-c", script], dict(os.environ))

    def preempt() -> None:
        while not pidfile.exists() or not pidfile.read_text():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # what the kubelet does on preemption

    threading.Thread(target=preempt, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(Retryable, match="SIGTERM"):
        child.run()
    assert time.monotonic() - started < 20
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker outlived the SIGTERM")


def test_missing_launcher_binary_is_a_config_error() -> None:
    with pytest.raises(TrainerError) as err:
        Child(["/nonexistent/llamafactory-cli", "train"], {}).run()
    assert err.value.exit_code == contract.EXIT_CONFIG


def test_signal_handlers_are_restored_after_the_child_ends() -> None:
    before = signal.getsignal(signal.SIGTERM)
    Child([sys.executable, "-c", "pass"], dict(os.environ)).run()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_started_after_a_stop_was_taken_can_still_be_stopped(capfd: pytest.CaptureFixture[str]) -> None:
    """After a stop request is taken the trainer ignores later ones (trainer.main.ignore_stop_requests:
    an MPI rank whose training ended with a stop request still pending goes on to export and evaluate,
    each a Child). An ignored signal stays ignored across fork and exec (POSIX; Python's subprocess
    resets only SIGPIPE, SIGXFZ and SIGXFSZ: restore_signals, Lib/subprocess.py:1710-1713 of the
    CPython 3.11 installed here), so the child ignored the SIGTERM that Child itself sends to stop it and lived on
    until the SIGKILL. The child starts with the default actions; the trainer keeps ignoring."""
    from kubetune.trainer.main import STOP_SIGNALS, ignore_stop_requests

    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    ignore_stop_requests()
    try:
        code = "import signal; print([signal.getsignal(s) is signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGUSR1)])"
        Child([sys.executable, "-c", code], dict(os.environ)).run()
        assert "[True, True]" in capfd.readouterr().out
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in STOP_SIGNALS), "the trainer itself still ignores them"
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.mark.train
def test_sigterm_while_waiting_for_rank_0_exits_retryable(tmp_path: Path, tiny_assets: TinyAssets) -> None:
    from kubetune.trainer.tiny import tiny_job
    from tests.support.trainerlib import make_pod, stage_lines

    pod = make_pod(tmp_path, tiny_job("waiting", tiny_assets), tiny_assets)
    env = {
        **pod.env,
        "MASTER_ADDR": "127.0.0.1",
        "WORLD_SIZE": "2",
        "RANK": "1",
    }  # a worker pod whose master never comes
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trainer"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the data stage has started: the worker now waits for rank 0
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=scaled(30))
    out = first + out
    assert proc.returncode == contract.EXIT_RETRYABLE, err
    assert [(s["stage"], s["event"]) for s in stage_lines(out)] == [("data", "start"), ("data", "failed")]
    assert not (pod.output_dir / contract.RUN_RECORD_FILE).exists()  # only rank 0 records
