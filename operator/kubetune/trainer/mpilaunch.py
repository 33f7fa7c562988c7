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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubetune.api import contract

from .distenv import MPI_HOSTFILE, read_hostfile

ENV_OMPI_HOSTFILE = "OMPI_MCA_orte_default_hostfile"


def hostfile_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(ENV_OMPI_HOSTFILE) or MPI_HOSTFILE)


def launch_argv(argv: Sequence[str], env: Mapping[str, str], hostfile_text: str, hostfile: Path) -> tuple[list[str], dict[str, str]]:
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
    os.execvpe(command[0], command, child_env)  # noqa: S606 - argv list, no shell


if __name__ == "__main__":
    sys.exit(main())
