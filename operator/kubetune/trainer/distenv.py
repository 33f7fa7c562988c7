"""Map what the Kubeflow controller puts into a pod's environment onto what
LLaMA-Factory's launcher (torchrun) or an in-process DeepSpeed worker reads.

Three shapes exist, and the mapping is ours to do (LLaMA-Factory only reads
``NNODES``/``NODE_RANK``/``NPROC_PER_NODE``/``MASTER_ADDR``/``MASTER_PORT``):

* **single node** (``kubetune run --local``, or a 1-replica job): nothing set.
* **PyTorchJob** (one pod per node, torchrun inside): ``MASTER_ADDR``,
  ``MASTER_PORT``, ``WORLD_SIZE`` (= nodes), ``RANK`` (= node rank), and the
  ``PET_*`` names (they win).
* **TrainJob** (Trainer v2 torch plugin, pkg/runtime/framework/plugins/torch/torch.go): only
  ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
  ``PET_MASTER_PORT``: the same torchrun shape (kind ``pytorchjob`` below).

The mapping is keyed by what the controller put into the environment, not by the backend's name:
the trainer image depends on the API only (import-linter), so it cannot read the render registry,
and a new backend whose controller sets one of these shapes needs nothing here.
* **MPIJob** (mpirun starts one process per GPU on every worker): per-process
  ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}`` and ``/etc/mpi/hostfile``,
  whose first host is where rank 0 runs, so it is the rendezvous address.

Everything here is pure (an environment mapping in, values out) so it is tested
table-driven without processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

Kind = Literal["single", "pytorchjob", "mpijob"]

DEFAULT_MASTER_PORT = 23456
MPI_HOSTFILE = "/etc/mpi/hostfile"
ENV_MPI_HOSTFILE = "KUBETUNE_MPI_HOSTFILE"
"""Override of the hostfile path (tests; MPI operators that mount it elsewhere)."""

# Variables that describe *one process* of a distributed run.  The launcher
# (torchrun) sets them per worker; inherited node-level values would mislead it.
_PER_PROCESS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


@dataclass(frozen=True)
class Distribution:
    """Where this process sits in the job."""

    kind: Kind
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    global_rank: int | None = None
    """Set for MPIJob (one trainer per process); for torchrun shapes the node's first process."""
    local_rank: int | None = None

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_global_zero(self) -> bool:
        """The one process that fetches data, publishes progress, exports and records."""
        if self.global_rank is not None:
            return self.global_rank == 0
        return self.node_rank == 0

    @property
    def is_local_zero(self) -> bool:
        """The first process on this node (downloads the model into this node's cache)."""
        return self.local_rank in (None, 0)


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # Elastic forms such as PET_NNODES="1:4" mean min:max; the max is the target size.
    raw = raw.rsplit(":", 1)[-1]
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def read_hostfile(text: str) -> list[str]:
    """Host names of an Open MPI hostfile, in order (``host slots=N`` lines, ``#`` comments)."""
    hosts: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line.split()[0])
    return hosts


def distribution_from_env(
    env: Mapping[str, str],
    *,
    hostfile_text: str | None = None,
    default_port: int = DEFAULT_MASTER_PORT,
) -> Distribution:
    """Work out this process's place from the controller's environment.

    ``hostfile_text`` is the content of the MPI hostfile, read by the caller (so
    this stays pure); it is only needed for MPIJob.
    """
    nproc = _int(env, "NPROC_PER_NODE") or _int(env, "PET_NPROC_PER_NODE") or 1
    # Trainer v2 (TrainJob, torch plugin) sets only PET_MASTER_ADDR/PET_MASTER_PORT; PyTorchJob both.
    port = _int(env, "MASTER_PORT") or _int(env, "PET_MASTER_PORT") or default_port
    if "OMPI_COMM_WORLD_RANK" in env:
        rank = _int(env, "OMPI_COMM_WORLD_RANK", 0) or 0
        size = _int(env, "OMPI_COMM_WORLD_SIZE", 1) or 1
        local_rank = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0) or 0
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", nproc) or nproc
        if size % local_size:
            raise ConfigError(f"MPI world size {size} is not a multiple of the processes per node {local_size}")
        addr = env.get("MASTER_ADDR", "")
        if not addr:
            hosts = read_hostfile(hostfile_text or "")
            if not hosts:
                raise ConfigError(
                    "MPIJob: no MASTER_ADDR and no hosts in the MPI hostfile "
                    f"({env.get(ENV_MPI_HOSTFILE, MPI_HOSTFILE)})"
                )
            addr = hosts[0]
        return Distribution(
            kind="mpijob",
            nnodes=size // local_size,
            node_rank=rank // local_size,
            nproc_per_node=local_size,
            master_addr=addr,
            master_port=port,
            global_rank=rank,
            local_rank=local_rank,
        )
    nnodes = _int(env, "PET_NNODES") or _int(env, "WORLD_SIZE") or 1
    node_rank = _int(env, "PET_NODE_RANK")
    if node_rank is None:
        node_rank = _int(env, "RANK", 0) or 0
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"node rank {node_rank} is outside 0..{nnodes - 1}")
    kind: Kind = "pytorchjob" if "MASTER_ADDR" in env or "PET_NNODES" in env else "single"
    return Distribution(
        kind=kind,
        nnodes=nnodes,
        node_rank=node_rank,
        nproc_per_node=nproc,
        master_addr=env.get("MASTER_ADDR") or env.get("PET_MASTER_ADDR") or "127.0.0.1",
        master_port=port,
    )


def launcher_env(env: Mapping[str, str], dist: Distribution, *, force_torchrun: bool) -> dict[str, str]:
    """The environment for ``llamafactory-cli train`` (torchrun shapes).

    ``FORCE_TORCHRUN`` is set whenever more than one process trains, or when
    DeepSpeed is configured (LLaMA-Factory refuses DeepSpeed outside torchrun).
    """
    out = {k: v for k, v in env.items() if k not in _PER_PROCESS}
    out.update(
        NNODES=str(dist.nnodes),
        NODE_RANK=str(dist.node_rank),
        NPROC_PER_NODE=str(dist.nproc_per_node),
        MASTER_ADDR=dist.master_addr,
        MASTER_PORT=str(dist.master_port),
    )
    if force_torchrun or dist.distributed:
        out["FORCE_TORCHRUN"] = "1"
    else:
        out.pop("FORCE_TORCHRUN", None)
    return out


def mpi_process_env(env: Mapping[str, str], dist: Distribution) -> dict[str, str]:
    """The environment of one MPI-started process, as torch.distributed and DeepSpeed read it.

    mpirun already started one process per GPU, so training runs in this very
    process (no torchrun): it needs ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and
    the rendezvous address exactly as torchrun would have set them.
    """
    if dist.global_rank is None or dist.local_rank is None:
        raise ConfigError("not an MPI process: OMPI_COMM_WORLD_RANK is not set")
    out = dict(env)
    out.update(
        RANK=str(dist.global_rank),
        WORLD_SIZE=str(dist.world_size),
        LOCAL_RANK=str(dist.local_rank),
        LOCAL_WORLD_SIZE=str(dist.nproc_per_node),
        GROUP_RANK=str(dist.node_rank),
        NNODES=str(dist.nnodes),
        NODE_RANK=str(dist.node_rank),
        MASTER_ADDR=dist.master_addr,
        MASTER_PORT=str(dist.master_port),
    )
    out.pop("FORCE_TORCHRUN", None)
    return out


def accelerate_argv(config_file: str, dist: Distribution, worker_args: list[str]) -> list[str]:
    """``accelerate launch`` for one node: machine rank and rendezvous from the controller."""
    return [
        "accelerate",
        "launch",
        "--config_file",
        config_file,
        "--num_machines",
        str(dist.nnodes),
        "--num_processes",
        str(dist.world_size),
        "--machine_rank",
        str(dist.node_rank),
        "--main_process_ip",
        dist.master_addr,
        "--main_process_port",
        str(dist.master_port),
        "-m",
        "kubetune.trainer.worker",
        *worker_args,
    ]
