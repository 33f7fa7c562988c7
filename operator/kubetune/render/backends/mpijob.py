"""mpi-operator MPIJob (kubeflow.org/v2beta1): mpirun launches one DeepSpeed process per GPU.

The launcher pod has no GPU; it runs ``mpirun`` (an argv list, nothing from
the spec on it) which ssh-es into the Worker pods, where sshd runs.  Processes
started by sshd do not inherit the worker container's environment, so the
launcher forwards kubetune's variables with ``-x`` and the user's
``spec.env`` names through ``OMPI_MCA_mca_base_env_list`` (an environment
value, so no spec string reaches a command line).

Image contract (images/trainer): user ``kubetune`` (uid 1000) with home
``/home/kubetune``, where mpi-operator mounts the ssh keys
(``sshAuthMountPath``, keys only); sshd runs unprivileged from
``/etc/ssh/kubetune_sshd_config`` and the ssh client settings (port 2222, no
host-key prompts) are in ``/etc/ssh/ssh_config.d/kubetune.conf``, where that
mount cannot hide them.

Names: mpi-operator v2beta1 creates ``<job>-config`` (hostfile),
``<job>-launcher``, ``<job>-ssh`` and a headless Service ``<job>``
(pkg/controller/mpi_job_controller.go); kubetune's ConfigMap is
``<job>-kubetune`` so it can never be mistaken for one of them.
``MASTER_ADDR`` is not rendered: the launcher command
(:mod:`kubetune.trainer.mpilaunch`) takes it from the hostfile mpi-operator
wrote, whatever Service naming the installed release uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from kubetune.api.contract import METRICS_PORT
from kubetune.cluster.backends.mpijob import MPIJobBackend

from ..intermediate import Plan
from ..podspec import TRAINER_COMMAND, container_security_context, user_env_names
from ..templating import render_manifest
from ..types import Problem
from .base import WorkloadRenderer
from .common import child_labels, run_policy

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob

HOME: Final = "/home/kubetune"
SSH_AUTH_MOUNT_PATH: Final = f"{HOME}/.ssh"
SSHD_CONFIG: Final = "/etc/ssh/kubetune_sshd_config"
SSHD_COMMAND: Final = ["/usr/sbin/sshd", "-De", "-f", SSHD_CONFIG]
WORKER_COMMAND: Final = ["python", "-m", "kubetune.trainer.mpiworker", *SSHD_COMMAND]
"""sshd under a PID 1 that keeps it up, on SIGTERM, until the ranks' stop checkpoint is written."""
LAUNCH_WRAPPER: Final = ["python", "-m", "kubetune.trainer.mpilaunch"]
ALWAYS_FORWARDED: Final = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH")
OPEN_MPI_KILL_STEP_SECONDS: Final = 5
"""Open MPI's ``odls_base_sigkill_timeout``: its wait before SIGTERM, and again before SIGKILL."""
LAUNCHER_RESOURCES: Final = {"requests": {"cpu": "500m", "memory": "512Mi"}}
"""mpirun only: the launcher never trains, so it asks for little and gets no GPU."""


class MPIJobRenderer:
    name: ClassVar[str] = MPIJobBackend.name

    def build(self, plan: Plan) -> dict[str, Any]:
        user_names = set(user_env_names(plan))
        own_names = [e["name"] for e in plan.env if e["name"] not in user_names]
        # MASTER_ADDR comes from the hostfile at launch (kubetune.trainer.mpilaunch); the port is ours.
        rendezvous = [{"name": "MASTER_PORT", "value": str(plan.job.spec.distributed.master_port)}]
        own_names += [e["name"] for e in rendezvous]
        launcher_env = (
            list(plan.env)
            + rendezvous
            + [
                # mpirun, given SIGTERM, waits this long before SIGTERM to the ranks and again before
                # SIGKILL (Open MPI's default is 1 s).  The stop request itself reaches the ranks at once
                # as SIGUSR1 (kubetune.trainer.mpilaunch); this only bounds Open MPI's own kill, e.g.
                # after one rank exited: time for the others to finish writing the same checkpoint.
                {"name": "OMPI_MCA_odls_base_sigkill_timeout", "value": str(OPEN_MPI_KILL_STEP_SECONDS)},
            ]
        )
        if user_names:
            launcher_env.append({"name": "OMPI_MCA_mca_base_env_list", "value": ";".join(sorted(user_names))})
        scratch = [v for v in plan.volumes if v["name"] == "scratch"]
        scratch_mounts = [m for m in plan.volume_mounts if m["name"] == "scratch"]
        return render_manifest(
            "mpijob.json.j2",
            plan=plan,
            labels=child_labels(plan),
            slots_per_worker=plan.procs_per_node,
            ssh_auth_mount_path=SSH_AUTH_MOUNT_PATH,
            run_policy=run_policy(plan, min_available=plan.nodes + 1),
            launcher_command=mpirun_argv(plan, own_names),
            launcher_env=launcher_env,
            launcher_resources=LAUNCHER_RESOURCES,
            launcher_security_context=container_security_context(),
            launcher_volumes=scratch,
            launcher_mounts=scratch_mounts,
            worker_command=list(WORKER_COMMAND),
            metrics_port=METRICS_PORT,
            worker_security_context=container_security_context(read_only_root=False),
            image_pull_policy=plan.job.spec.image_pull_policy,
        )

    def check(self, job: FineTuneJob) -> list[Problem]:
        launcher = job.spec.distributed.launcher
        if launcher not in (None, "deepspeed"):
            return [
                Problem(
                    "spec.distributed.launcher",
                    f"backend mpijob runs DeepSpeed under mpirun, but spec.distributed.launcher is {launcher}: "
                    "use backend pytorchjob, or launcher deepspeed",
                )
            ]
        return []


def mpirun_argv(plan: Plan, forwarded: list[str]) -> list[str]:
    """``python -m kubetune.trainer.mpilaunch mpirun -np nodes*gpus -x VAR ... python -m kubetune.trainer``.

    The wrapper adds ``--hostfile`` and ``-x MASTER_ADDR`` from mpi-operator's hostfile."""
    argv = [
        *LAUNCH_WRAPPER,
        "mpirun",
        "-np",
        str(plan.nodes * plan.procs_per_node),
        "--bind-to",
        "none",
        "--map-by",
        "slot",
    ]
    for name in (*ALWAYS_FORWARDED, *forwarded):
        argv += ["-x", name]
    return argv + list(TRAINER_COMMAND)


_CONFORMS: WorkloadRenderer = MPIJobRenderer()
"""Static check (mypy) that the class implements the renderer Protocol."""
