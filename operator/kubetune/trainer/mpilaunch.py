"""``python -m kubetune.trainer.mpilaunch mpirun ...``: the MPIJob launcher's command.

Why a wrapper around ``mpirun``: the training processes need a rendezvous
address (``MASTER_ADDR``) that every worker can resolve, and the only source
that is right for the installed mpi-operator is the hostfile it writes.  Its
host names have changed between releases (v0.4 had a ``<job>-worker``
Service; v0.5+ one headless Service named ``<job>`` with pods
``<job>-worker-N.<job>.<ns>.svc``), so a name guessed at render time can be
wrong.  The first host of the hostfile is where mpirun places rank 0
(``--map-by slot``), which is exactly where torch.distributed's store must run.

mpi-operator v2beta1 mounts the hostfile on the launcher only, at
``/etc/mpi/hostfile``, and names it in ``OMPI_MCA_orte_default_hostfile``
(pkg/controller/mpi_job_controller.go, ``ompiEnvVars``); the workers never see
it, so the address is decided here and forwarded with ``-x MASTER_ADDR``.
Nothing from the FineTuneJob spec reaches this command line: the renderer
writes the argv (its own names and numbers only) and the environment.

Stopping: the launcher pod is told to stop with SIGTERM to its PID 1, this
process.  Open MPI 4's mpirun, given SIGTERM, waits ``odls_base_sigkill_timeout``
before it even sends SIGTERM to the ranks (orte/mca/odls/base
``kill_local_procs``: SIGCONT, wait, SIGTERM, wait, SIGKILL), and the ranks
would lose their step.  It forwards SIGUSR1 to every rank at once, though
(``Forwarding signal 10 to job``), so this process keeps mpirun as a child and
turns the pod's SIGTERM into a SIGUSR1: every rank saves a stop checkpoint at
the end of its step (:mod:`kubetune.trainer.worker`) and exits with the
retryable code.  Only an mpirun still running after the stop grace
(``KUBETUNE_STOP_GRACE_SECONDS``) gets SIGTERM; a second SIGTERM sends it at once.
The workers keep their sshd up for those sessions (:mod:`kubetune.trainer.mpiworker`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from kubetune.api import contract

from .distenv import MPI_HOSTFILE, read_hostfile
from .launch import stop_grace
from .mpiworker import STOP_SIGNAL

ENV_OMPI_HOSTFILE = "OMPI_MCA_orte_default_hostfile"


def hostfile_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(ENV_OMPI_HOSTFILE) or MPI_HOSTFILE)


def launch_argv(
    argv: Sequence[str], env: Mapping[str, str], hostfile_text: str, hostfile: Path
) -> tuple[list[str], dict[str, str]]:
    """mpirun's argv and environment: the hostfile named explicitly, MASTER_ADDR set and forwarded."""
    if not argv or Path(argv[0]).name != "mpirun":
        raise ValueError(f"expected an mpirun command line, got {list(argv)[:1]}")
    hosts = read_hostfile(hostfile_text)
    if not hosts:
        raise ValueError(f"the MPI hostfile {hostfile} lists no hosts")
    out = dict(env)
    out.setdefault("MASTER_ADDR", hosts[0])
    extra = ["--hostfile", str(hostfile)] if "--hostfile" not in argv else []
    return [argv[0], *extra, "-x", "MASTER_ADDR", *argv[1:]], out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    path = hostfile_path(env)
    try:
        text = path.read_text(encoding="utf-8")
        command, child_env = launch_argv(args, env, text, path)
    except (OSError, ValueError) as exc:
        print(f"kubetune mpilaunch: {exc}", file=sys.stderr, flush=True)
        return contract.EXIT_CONFIG
    print(f"kubetune mpilaunch: rank 0 on {child_env['MASTER_ADDR']} ({len(read_hostfile(text))} hosts)", flush=True)
    return Launcher(command, child_env).run()


class Launcher:
    """mpirun as a child in its own session: the pod's SIGTERM becomes SIGUSR1 to every rank."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.grace = stop_grace(env)
        self.signals = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            self._send(signal.SIGTERM)
            return
        print(
            f"kubetune mpilaunch: signal {signum}: asking every rank for a stop checkpoint (up to {self.grace:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        self._send(STOP_SIGNAL)
        threading.Thread(target=self._after_grace, daemon=True).start()

    def _after_grace(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            print("kubetune mpilaunch: stop grace over: SIGTERM to mpirun", file=sys.stderr, flush=True)
            self._send(signal.SIGTERM)

    def run(self) -> int:
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603 - argv list, no shell
        except OSError as exc:
            print(f"kubetune mpilaunch: cannot start {self.argv[0]!r}: {exc}", file=sys.stderr, flush=True)
            return contract.EXIT_CONFIG
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        code = self.proc.wait()
        return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
