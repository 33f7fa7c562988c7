"""``python -m kubetune.trainer.mpiworker /usr/sbin/sshd -De -f CONFIG``: an MPIJob worker's PID 1.

An MPIJob worker pod runs sshd; the ranks are started by mpirun on the
launcher through it (sshd -> orted -> ``python -m kubetune.trainer``).  With
sshd itself as the container's PID 1, a SIGTERM (pod deletion, suspend, node
drain, preemption) ends sshd at once, the container stops, and the kernel kills
every rank in it: no stop checkpoint, and the step is lost.

This wrapper is PID 1 instead and keeps sshd as its child:

* on SIGTERM it asks the ranks in this container for a stop checkpoint
  (SIGUSR1, which :mod:`kubetune.trainer.worker` treats like its own SIGTERM:
  every rank saves at the end of the current step, together, then exits with
  the retryable code; the launcher's mpirun forwards the same SIGUSR1 when its
  own pod is told to stop, see :mod:`kubetune.trainer.mpilaunch`);
* it keeps sshd, and so the ranks' sessions, alive until those sessions have
  ended, or until the stop grace (``KUBETUNE_STOP_GRACE_SECONDS``, rendered
  from ``terminationGracePeriodSeconds``) runs out; then it stops sshd;
* as PID 1 it reaps orphaned processes, which sshd does not.

Only processes of this container are seen (its own PID namespace) and only the
ranks' command (``-m kubetune.trainer``) is signalled, never orted or sshd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from kubetune.api import contract

from .launch import stop_grace

RANK_MODULE = "kubetune.trainer"
STOP_SIGNAL = signal.SIGUSR1
"""What the ranks take as a stop request; Open MPI's mpirun forwards it to every rank."""
POLL_SECONDS = 0.5


def read_processes(proc: Path = Path("/proc")) -> dict[int, tuple[int, list[str]]]:
    """{pid: (parent pid, argv)} of every live process visible here (its PID namespace)."""
    out: dict[int, tuple[int, list[str]]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or fields[0] in ("Z", "X"):  # exited, not yet reaped: no longer a session
            continue
        out[int(entry.name)] = (int(fields[1]), [a.decode("utf-8", "replace") for a in argv if a])
    return out


def descendants(root: int, processes: Mapping[int, tuple[int, list[str]]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _argv) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def is_rank(argv: Sequence[str]) -> bool:
    """``python -m kubetune.trainer`` exactly: not orted, not sshd, not another kubetune module."""
    return any(a == "-m" and b == RANK_MODULE for a, b in zip(argv, argv[1:], strict=False))


def ranks_under(root: int, processes: Mapping[int, tuple[int, list[str]]]) -> list[int]:
    return sorted(pid for pid in descendants(root, processes) if is_rank(processes[pid][1]))


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _log(message: str) -> None:
    print(f"kubetune mpiworker: {message}", file=sys.stderr, flush=True)


class Worker:
    """sshd as a child; a SIGTERM becomes a stop request to the ranks, then a stop of sshd."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.grace = stop_grace(env)
        self.stopping = threading.Event()
        self._sshd: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        threading.Thread(target=self._stop, args=(signum,), daemon=True).start()

    def _stop(self, signum: int) -> None:
        sshd = self._sshd
        if sshd is None or sshd.poll() is not None:
            return
        ranks = ranks_under(sshd.pid, read_processes())
        if ranks:
            _log(
                f"signal {signum}: asking {len(ranks)} rank(s) here for a stop checkpoint; "
                f"sshd stays up for them (up to {self.grace:.0f} s)"
            )
            _signal_all(ranks, STOP_SIGNAL)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and sshd.poll() is None:
            # Sessions end when mpirun ends: the ranks have saved and exited, or the launcher gave up.
            if not descendants(sshd.pid, read_processes()):
                break
            time.sleep(POLL_SECONDS)
        else:
            if sshd.poll() is None:
                _log("stop grace over with sessions still open: stopping sshd")
        if sshd.poll() is None:
            sshd.terminate()

    def run(self) -> int:
        try:
            self._sshd = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)  # noqa: S603 - rendered argv, no shell
        except OSError as exc:
            _log(f"cannot start {self.argv[0]!r}: {exc}")
            return contract.EXIT_CONFIG
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        code = 0
        while True:
            # PID 1 reaps every orphan; sshd's own exit ends the wrapper.
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
                continue
            if pid == self._sshd.pid:
                self._sshd.returncode = os.waitstatus_to_exitcode(status)
                code = self._sshd.returncode
                break
        if self.stopping.is_set():
            return 0  # told to stop, and stopped
        _log(f"sshd exited with {code}")
        return code if code > 0 else 128 - code if code < 0 else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _log("usage: python -m kubetune.trainer.mpiworker SSHD [ARG ...]")
        return contract.EXIT_CONFIG
    return Worker(args, os.environ).run()


if __name__ == "__main__":
    sys.exit(main())
