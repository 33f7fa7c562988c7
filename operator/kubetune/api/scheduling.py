"""spec.scheduling, spec.runPolicy and spec.imagePullSecrets.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    ApiModel,
    DNS1123Label,
    DNS1123Subdomain,
)
from .fields import Count64
from .k8s import (
    INT32_MAX,
    Affinity,
    LabelValue,
    QualifiedName,
    Toleration,
)


class SchedulingSpec(ApiModel):
    """Placement and queueing of the training pods."""

    node_selector: Annotated[dict[QualifiedName, LabelValue], Field(max_length=64)] | None = None
    """Node labels the pods must match (label keys and values), e.g. `nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = None
    """Tolerations for tainted (GPU) nodes."""
    affinity: Affinity | None = None
    (
        "core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), "
        "checked like the API server checks a pod's and copied into every pod."
    )
    priority_class_name: DNS1123Subdomain | None = None
    """PriorityClass of the pods (and of the Kubeflow job for gang scheduling)."""
    queue_name: DNS1123Label | None = None
    (
        "Kueue LocalQueue: sets the `kueue.x-k8s.io/queue-name` label on the child job and "
        "lets Kueue admit (and suspend) it."
    )
    pod_annotations: (
        Annotated[
            dict[QualifiedName, Annotated[str, Field(max_length=4096)]],
            Field(max_length=32),
        ]
        | None
    ) = None
    (
        "Annotations on every training pod, e.g. `k8s.v1.cni.cncf.io/networks: "
        "rdma-net` to attach Multus secondary (RDMA/InfiniBand) networks."
    )


class RunPolicySpec(ApiModel):
    """Restart and lifetime limits, mapped onto the Kubeflow job's runPolicy."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    (
        "Pod restarts on retryable failures (preemption, NCCL errors) before the job fails; "
        "training resumes from the newest checkpoint."
    )
    active_deadline_seconds: Count64 | None = None
    """Fail the job after this many seconds of running."""
    ttl_seconds_after_finished: (
        Annotated[int, Field(ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"})] | None
    ) = None
    (
        "Delete the finished PyTorchJob or MPIJob (not the FineTuneJob, not the outputs) after this many seconds. A "
        "TrainJob has no such field (Trainer v2.3's TrainJob CRD): it stays until its FineTuneJob is deleted."
    )
    termination_grace_period_seconds: Annotated[int, Field(ge=30, le=86400)] = 300
    (
        "The training pods' terminationGracePeriodSeconds. On SIGTERM (preemption, node drain, "
        "suspend) the trainer finishes the current step and writes a checkpoint within this time, "
        "so a restart loses no progress; raise it for models whose checkpoint takes longer to write. The last 15 s are "
        "kept for the run record; with spec.storage.outputs.uri the checkpoint gets about half of the rest and its "
        "upload the remainder (docs/object-storage.md). Spot/preemptible nodes may give less notice than this."
    )


class ImagePullSecret(ApiModel):
    """A reference to a docker-registry Secret."""

    name: DNS1123Subdomain
    """Secret name."""
