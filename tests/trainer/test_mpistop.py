"""The MPIJob pods' stop path with real processes: a SIGTERM to the launcher's or a worker's PID 1
becomes a stop request (SIGUSR1) to the ranks, and the worker keeps its sessions up until they end.

The full path over real sshd and mpirun is in test_mpi_ssh.py; these use stand-ins for sshd and
mpirun (small Python programs) so that each rule is seen on its own, in about a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

from kubetune.api import contract
from kubetune.trainer.mpiworker import descendants, is_rank, read_processes, ranks_under

# A rank: `python -c CODE -m kubetune.trainer` has the rank's argv pair; it records the signals it gets.
RANK = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    out = Path(sys.argv[1]); mode = sys.argv[2]
    def stop(signum, frame):
        out.write_text(out.read_text() + f"{signum}\\n")
        if mode == "obeys":
            sys.exit(130)
    signal.signal(signal.SIGUSR1, stop)
    signal.signal(signal.SIGTERM, stop)
    Path(str(out) + ".pid").write_text(str(__import__("os").getpid()))
    out.write_text("")
    while True:
        time.sleep(0.05)
    """
)

# sshd: starts one session child (the rank) and ends on SIGTERM, as `sshd -D` does.
SSHD = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    rank = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3], "-m", "kubetune.trainer"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("Server listening", flush=True)
    while True:
        time.sleep(0.05)
    """
)


def _wait_for(path: Path, text: str | None = None, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if path.exists() and (text is None or text in path.read_text()):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never showed {text!r}")


def _start_worker(tmp_path: Path, mode: str, grace: str) -> tuple[subprocess.Popen[str], Path, Path]:
    signals, log = tmp_path / "rank-signals", tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trainer.mpiworker", sys.executable, "-c", SSHD, RANK, str(signals), mode],
        env={**os.environ, contract.ENV_STOP_GRACE: grace},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(signals)
    return proc, signals, log


def _stop_rank(signals: Path) -> None:
    """A rank left running (on a cluster the container's end kills it; here nothing does)."""
    try:
        os.kill(int(Path(str(signals) + ".pid").read_text()), signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_worker_sigterm_asks_the_rank_to_stop_and_waits_for_it(tmp_path: Path) -> None:
    proc, signals, log = _start_worker(tmp_path, "obeys", "30")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=scaled(30)) == 0, log.read_text()
    out = log.read_text()
    assert signals.read_text().split() == [str(int(signal.SIGUSR1))]  # a stop request, never a SIGTERM
    assert "asking 1 rank(s) here for a stop checkpoint" in out
    assert time.monotonic() - started < 20  # it stopped when the session ended, not at the grace


def test_worker_stops_sshd_when_the_grace_is_over(tmp_path: Path) -> None:
    proc, signals, log = _start_worker(tmp_path, "ignores", "1")
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=scaled(30)) == 0, log.read_text()
    finally:
        _stop_rank(signals)
    out = log.read_text()
    assert "stop grace over with sessions still open: stopping sshd" in out
    assert signals.read_text().split()[0] == str(int(signal.SIGUSR1))


def test_worker_passes_on_sshds_own_failure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.trainer.mpiworker", sys.executable, "-c", "import sys; sys.exit(255)"],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 255 and "sshd exited with 255" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "kubetune.trainer.mpiworker", str(tmp_path / "no-sshd")],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert missing.returncode == contract.EXIT_CONFIG and "cannot start" in missing.stderr


# mpirun: forwards SIGUSR1 to its rank as Open MPI 4 does ("Forwarding signal 10 to job"); the rank
# exits 130 after its "checkpoint"; SIGTERM makes it exit 143 at once.
MPIRUN = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    log = Path(sys.argv[1])
    def on(signum, frame):
        log.write_text(log.read_text() + f"{signum}\\n")
        sys.exit(130 if signum == signal.SIGUSR1 and sys.argv[2] == "obeys" else 143)
    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGTERM, on)
    log.write_text("")
    while True:
        time.sleep(0.05)
    """
)


@pytest.mark.parametrize(
    ("mode", "grace", "expected", "code"), [("obeys", "30", ["10"], 130), ("slow", "1", ["10", "15"], 143)]
)
def test_launcher_sigterm_becomes_a_stop_request_then_a_kill_after_the_grace(
    tmp_path: Path, mode: str, grace: str, expected: list[str], code: int
) -> None:
    if mode == "slow":
        mpirun = MPIRUN.replace(
            'sys.exit(130 if signum == signal.SIGUSR1 and sys.argv[2] == "obeys" else 143)',
            "None if signum == signal.SIGUSR1 else sys.exit(143)",
        )
    else:
        mpirun = MPIRUN
    # mpilaunch puts --hostfile and -x MASTER_ADDR in front; the stand-in reads its log and mode from the end.
    fake = tmp_path / "bin" / "mpirun"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys; sys.argv = [sys.argv[0], *sys.argv[-2:]]\n{mpirun}")
    fake.chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("w-0 slots=1\n")
    log = tmp_path / "mpirun-signals"
    env = {
        **os.environ,
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "OMPI_MCA_orte_default_hostfile": str(hostfile),
        contract.ENV_STOP_GRACE: grace,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trainer.mpilaunch", "mpirun", str(log), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(log)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=scaled(30))
    assert log.read_text().split() == expected, out
    assert proc.returncode == code, out
    assert "asking every rank for a stop checkpoint" in out


def test_only_the_ranks_are_signalled() -> None:
    assert is_rank(["python", "-m", "kubetune.trainer"])
    assert not is_rank(["python", "-m", "kubetune.trainer.mpiworker", "/usr/sbin/sshd"])
    assert not is_rank(["orted", "-mca", "ess", "env"])
    table = {
        10: (1, ["sshd"]),
        11: (10, ["sshd: kubetune"]),
        12: (11, ["orted"]),
        13: (12, ["python", "-m", "kubetune.trainer"]),
        20: (1, ["python", "-m", "kubetune.trainer"]),
    }
    assert descendants(10, table) == {11, 12, 13}
    assert ranks_under(10, table) == [13]  # pid 20 is not under this sshd


def test_process_table_reads_this_process() -> None:
    table = read_processes()
    assert table[os.getpid()][0] == os.getppid()
    assert table[os.getpid()][1][0].endswith(("python", "python3", "python3.11")) or "pytest" in " ".join(
        table[os.getpid()][1]
    )


# A rank (`python -m kubetune.trainer`'s main) whose training is LLaMA-Factory's stand-in: the rank
# gets the stop request twice, as on a cluster (mpirun forwards the launcher's, the worker pod's PID 1
# sends its own, each when it gets to it), and the second one lands late: while the rank writes its
# outcome, or while the interpreter tears its modules down (torch's, in a real rank; the exit of
# rank 1 in test_mpi_ssh.py took long enough under load for mpirun to report 138 = 128 + SIGUSR1).
LATE_REQUEST = textwrap.dedent(
    """
    import os, signal, sys
    from kubetune.api import contract
    from kubetune.trainer import main as trainer, train, worker
    from kubetune.trainer.errors import TrainerError

    first, late = sys.argv[1], sys.argv[2]

    def request():
        os.kill(os.getpid(), signal.SIGUSR1)

    def training(args):  # worker.run: the request arrives mid-step, the step's checkpoint is saved
        request()
        assert worker.stop_requested_locally()
        raise worker.StopRequested(10)

    worker.run = training

    class Module:  # torch's C extension state, freed at interpreter exit in a real rank
        def __del__(self):
            if late == "teardown":
                request()

    module = Module()

    def run(env, sink=None):  # trainer.main.run's outline: stages, then the exit code, then the record
        try:
            if first == "outside-training":
                request()  # while fetching data or waiting for rank 0: trainer.main._stop raises
            train.run_in_process({}, env)
        except TrainerError as exc:
            if late == "exit-path":
                request()
            print(f"outcome: exit {exc.exit_code}: {exc}", flush=True)
            return exc.exit_code
        return contract.EXIT_OK

    trainer.run = run
    sys.exit(trainer.main([]))
    """
)


@pytest.mark.parametrize(
    ("first", "late"),
    [
        ("in-training", "teardown"),
        ("in-training", "exit-path"),
        ("outside-training", "exit-path"),
        ("outside-training", "teardown"),
    ],
)
def test_a_late_second_stop_request_neither_kills_the_rank_nor_changes_its_exit_code(first: str, late: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_REQUEST, first, late], capture_output=True, text=True, timeout=scaled(60)
    )
    # Before: a late request in the exit path raised a second Retryable there (a traceback, exit 1);
    # one during teardown found SIGUSR1 back at its default action and killed the rank (-10, mpirun: 138).
    assert done.returncode == contract.EXIT_RETRYABLE, (done.returncode, done.stdout, done.stderr)
    assert "outcome: exit 130" in done.stdout and "Traceback" not in done.stderr, done.stderr


# A rank whose first stop request lands after the training's last step check (while the final model
# is saved): worker.run returns normally, the request still pending; rank 0 goes on to export. The
# second request (the other sender's) must still stop the export with the retryable code, after the
# training was recorded as completed (trainer.main.run sets trainingCompleted before export), so the
# restart does not train again.
LATE_AFTER_COMPLETION = textwrap.dedent(
    """
    import os, signal, sys
    from kubetune.api import contract
    from kubetune.trainer import main as trainer, train, worker
    from kubetune.trainer.errors import TrainerError

    def request():
        os.kill(os.getpid(), signal.SIGUSR1)

    def training(args):  # worker.run: the request arrives after the last step's check, the training completes
        request()

    worker.run = training

    def run(env, sink=None):  # trainer.main.run's outline: train, record the training done, export
        completed = False
        try:
            train.run_in_process({}, env)
            completed = True
            request()  # the second sender's request, during the export
            print("export finished", flush=True)
        except TrainerError as exc:
            print(f"outcome: exit {exc.exit_code}, training completed: {completed}", flush=True)
            return exc.exit_code
        return contract.EXIT_OK

    trainer.run = run
    sys.exit(trainer.main([]))
    """
)


def test_a_stop_request_pending_when_the_training_completes_still_stops_the_rank_at_the_next_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_AFTER_COMPLETION], capture_output=True, text=True, timeout=scaled(60)
    )
    # Before: run_in_process left both stop signals ignored after any training that saw a request, so the
    # rank went on exporting (and evaluating, uploading) through every later request until the SIGKILL.
    assert "export finished" not in done.stdout, done.stdout
    assert done.returncode == contract.EXIT_RETRYABLE, (done.returncode, done.stdout, done.stderr)
    assert "outcome: exit 130, training completed: True" in done.stdout, done.stdout
