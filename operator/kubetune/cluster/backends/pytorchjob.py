"""Kubeflow PyTorchJob (kubeflow.org/v1): torchrun, DeepSpeed or Accelerate inside each pod.

The training operator injects MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK and
PET_* into every pod; the trainer maps them onto LLaMA-Factory's launcher
variables (NNODES, NODE_RANK, ...).  The master pod is rank 0, whose log the
operator reads for progress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .base import PodRef, WorkloadBackend, newest_matching
from .kubeflow import KUBEFLOW_REPLICA_TYPE_LABEL, KubeflowV1Backend, kubeflow_pod_ref


class PyTorchJobBackend(KubeflowV1Backend):
    name: ClassVar[str] = "pytorchjob"
    api_version: ClassVar[str] = "kubeflow.org/v1"
    kind: ClassVar[str] = "PyTorchJob"
    plural: ClassVar[str] = "pytorchjobs"
    controller: ClassVar[str] = "Kubeflow training-operator (PyTorchJob kubeflow.org/v1)"

    def rank0_pod(self, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The Master (node rank 0; torchrun's rank 0 prints there)."""
        return newest_matching(pods, {KUBEFLOW_REPLICA_TYPE_LABEL: "master"})

    def pod_for_rank(self, job_name: str, rank: int | None) -> PodRef:
        """Node rank 0 is the Master, node rank N the Worker N-1 (container ``pytorch``)."""
        rank = rank or 0
        if rank == 0:
            return kubeflow_pod_ref(job_name, "master", 0, "pytorch", self.kind)
        return kubeflow_pod_ref(job_name, "worker", rank - 1, "pytorch", self.kind)

    def refused_changes(
        self, running: Mapping[str, Any], wanted: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[str]:
        """Nothing kubetune renders is refused: the v1.9.4 PyTorchJob CRD's only transition rule is
        spec.runPolicy.schedulingPolicy.queue (``self == oldSelf``; manifests/base/crds/kubeflow.org_pytorchjobs.yaml
        @ kubeflow/trainer v1.9.4), which kubetune never sets, and the webhook's ValidateUpdate checks only
        runPolicy.managedBy (pkg/webhooks/pytorch/pytorchjob_webhook.go:62-68, pkg/common/util/webhooks.go:27-32
        @ v1.9.4; it even compares the new object with itself, line 63), which kubetune never sets either.
        A change reaches only pods created after it (a restart or a resume): the controller never
        rewrites a running pod."""
        return []


_CONFORMS: WorkloadBackend = PyTorchJobBackend()
"""Static check (mypy) that the class implements the backend Protocol."""
