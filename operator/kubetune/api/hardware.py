"""spec.resources and spec.distributed: nodes, GPUs, job kind, launcher and sharding.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    Rule,
    RuledModel,
)
from .fields import (
    MAX_NODES,
    Backend,
    Launcher,
    Offload,
)
from .k8s import (
    ExtendedResourceName,
    PositiveQuantity,
)

# --- resources and distribution -------------------------------------------------


RDMA_PREFIX = "rdma/"


class ResourcesSpec(RuledModel):
    """How much hardware the job gets: nodes x GPUs, plus CPU, memory and shared memory per node."""

    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = 1
    """Number of pods (one per node). PyTorchJob: 1 Master + nodes-1 Workers; MPIJob: nodes Workers."""
    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs requested by each pod; also the number of training processes per pod. 0 trains on CPU (fp32 only)."""
    gpu_resource_name: ExtendedResourceName = "nvidia.com/gpu"
    (
        "Extended resource name of the GPU, with its domain: e.g. `nvidia.com/gpu`, `amd.com/gpu`, "
        "or a MIG profile such as `nvidia.com/mig-1g.10gb`. Never cpu, memory or ephemeral-storage."
    )
    cpu: PositiveQuantity | None = None
    """CPU request and limit per pod, a Kubernetes quantity, e.g. `16` or `15500m`. Unset: no CPU limit."""
    memory: PositiveQuantity | None = None
    """Memory request and limit per pod, a Kubernetes quantity, e.g. `128Gi`. Unset: no memory limit."""
    shared_memory_size: PositiveQuantity = "16Gi"
    """Size of the in-memory /dev/shm (dataloader workers and NCCL need more than the container default 64Mi)."""
    gpu_memory: PositiveQuantity | None = None
    (
        "Memory of one GPU, e.g. `80Gi` (H100) or `141Gi` (H200). When known (here, "
        "or from the operator's table for the nodeSelector's nvidia.com/gpu.product), "
        "kubetune predicts the peak memory per GPU before creating pods and refuses a job that cannot fit (condition "
        "Feasible=False with the numbers and the cheapest fix); `kubetune plan` prints the breakdown."
    )
    extra: Annotated[dict[ExtendedResourceName, Annotated[int, Field(ge=1, le=1000)]], Field(max_length=16)] | None = (
        None
    )
    (
        "Other extended resources per training pod, e.g. `rdma/ib: 1` (RDMA device plugin) or a secondary network's "
        "device. RDMA needs no extra capability (the containers keep `drop: [ALL]`); "
        "it needs an unlimited memlock limit from the node's container runtime (see docs/networking.md)."
    )

    rules = (
        Rule(
            name="extra-not-the-gpu",
            cel="!has(self.extra) || !has(self.gpuResourceName) || !(self.gpuResourceName in self.extra)",
            message="spec.resources.extra must not repeat the GPU resource: set GPUs with "
            "spec.resources.gpusPerNode (and gpuResourceName)",
            field_path=".extra",
            check=lambda r: r.extra is None or r.gpu_resource_name not in r.extra,
        ),
    )

    @property
    def rdma(self) -> bool:
        """RDMA devices requested (spec.resources.extra has an `rdma/...` resource)."""
        return any(k.startswith(RDMA_PREFIX) for k in (self.extra or {}))


class DistributedSpec(RuledModel):
    """How training processes are launched and how state is sharded."""

    backend: Backend = "auto"
    (
        "Kubeflow job kind: `pytorchjob` (kubeflow.org/v1, torchrun), `mpijob` (kubeflow.org/v2beta1, "
        "mpirun + DeepSpeed), `trainjob` (Kubeflow Trainer v2 TrainJob trainer.kubeflow.org/v1alpha1 on kubetune's "
        "ClusterTrainingRuntime; launchers torchrun or deepspeed) or `auto` (the operator picks trainjob when the "
        "cluster serves TrainJob and has kubetune's runtime, else pytorchjob; `kubetune render` picks pytorchjob)."
    )
    launcher: Launcher | None = None
    (
        "Process launcher: `torchrun` (DDP), `deepspeed` (DeepSpeed engine via LLaMA-Factory's `deepspeed` config) "
        "or `accelerate` (accelerate launch with a generated config). Unset: "
        "deepspeed when zeroStage > 0 or backend is mpijob, else torchrun."
    )
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 0
    """DeepSpeed ZeRO stage: 0 off, 1 optimizer states, 2 + gradients (the tutorial's choice), 3 + parameters."""
    offload: Offload = "none"
    """ZeRO-Offload to CPU memory: `optimizer` (stage >= 2) or `all` = optimizer and parameters (stage 3)."""
    fsdp: bool = False
    """With launcher accelerate: shard with PyTorch FSDP instead of DDP (zeroStage must be 0)."""
    master_port: Annotated[int, Field(ge=1024, le=65535)] = 23456
    """Rendezvous port of the master pod (PyTorchJob's `pytorchjob-port`)."""

    rules = (
        Rule(
            name="torchrun-has-no-zero",
            cel="!has(self.launcher) || self.launcher != 'torchrun' || self.zeroStage == 0",
            message="spec.distributed.zeroStage > 0 needs DeepSpeed: set launcher: "
            "deepspeed (or accelerate), or zeroStage: 0 for plain DDP",
            field_path=".zeroStage",
            check=lambda d: d.launcher != "torchrun" or d.zero_stage == 0,
        ),
        Rule(
            name="mpijob-needs-deepspeed",
            cel="self.backend != 'mpijob' || !has(self.launcher) || self.launcher == 'deepspeed'",
            message="spec.distributed.backend mpijob starts one process per GPU with mpirun, "
            "which only the DeepSpeed launcher understands: set launcher: deepspeed (or backend: "
            "pytorchjob for torchrun/accelerate)",
            field_path=".launcher",
            check=lambda d: d.backend != "mpijob" or d.launcher in (None, "deepspeed"),
        ),
        Rule(
            name="offload-optimizer-needs-zero2",
            cel="self.offload != 'optimizer' || self.zeroStage >= 2",
            message="spec.distributed.offload: optimizer needs zeroStage 2 or 3",
            field_path=".offload",
            check=lambda d: d.offload != "optimizer" or d.zero_stage >= 2,
        ),
        Rule(
            name="offload-all-needs-zero3",
            cel="self.offload != 'all' || self.zeroStage == 3",
            message="spec.distributed.offload: all (parameters too) needs zeroStage 3; "
            "use offload: optimizer with stage 2",
            field_path=".offload",
            check=lambda d: d.offload != "all" or d.zero_stage == 3,
        ),
        Rule(
            name="fsdp-needs-accelerate",
            cel="!self.fsdp || (has(self.launcher) && self.launcher == 'accelerate' && self.zeroStage == 0)",
            message="spec.distributed.fsdp needs launcher: accelerate and zeroStage: "
            "0 (FSDP and ZeRO both shard; pick one)",
            field_path=".fsdp",
            check=lambda d: not d.fsdp or (d.launcher == "accelerate" and d.zero_stage == 0),
        ),
    )

    @property
    def effective_launcher(self) -> Launcher:
        """The launcher actually used once the unset default is resolved."""
        return self.launcher_for(self.backend)

    def launcher_for(self, backend: str) -> Launcher:
        """The launcher on ``backend``, which may differ from spec.backend (``kubetune render --backend``)."""
        if self.launcher is not None:
            return self.launcher
        if self.zero_stage > 0 or backend == "mpijob":
            return "deepspeed"
        return "torchrun"
