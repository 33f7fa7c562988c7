"""What the Kubeflow v1 jobs share as they run (training-operator PyTorchJob, mpi-operator MPIJob
v2beta1): their pods' labels, their status conditions, their RBAC and how they are suspended."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from ..rbac import RbacRule
from .base import ChildStatus, PodRef, condition

KUBEFLOW_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
KUBEFLOW_REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
KUBEFLOW_REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
"""Labels both controllers put on their pods (lower-case replica types since training-operator v1.7)."""

_V1_ORDER = ("Succeeded", "Failed", "Suspended", "Restarting", "Running", "Created")


def kubeflow_v1_status(child: Mapping[str, Any]) -> ChildStatus:
    """Kubeflow v1 jobs (training-operator, PyTorchJob) and MPIJob v2beta1 (mpi-operator) share the
    condition types Created, Running, Restarting, Succeeded, Failed, Suspended: the most significant
    True one is the state."""
    for type_ in _V1_ORDER:
        cond = condition(child, type_)
        if cond is not None:
            return ChildStatus(
                type_,  # type: ignore[arg-type]  # one of ChildState by construction
                str(cond.get("message") or ""),
                str(cond.get("lastTransitionTime") or cond.get("lastUpdateTime") or "") or None,
            )
    return ChildStatus(None, acted=bool((child.get("status") or {}).get("conditions")))


def suspended_v1(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The rendered Kubeflow v1 job with runPolicy.suspend: true."""
    stopped = copy.deepcopy(dict(workload))
    stopped["spec"].setdefault("runPolicy", {})["suspend"] = True
    return stopped


def kubeflow_pod_ref(job_name: str, replica: str, index: int, container: str, kind: str) -> PodRef:
    return PodRef(
        {
            KUBEFLOW_JOB_NAME_LABEL: job_name,
            KUBEFLOW_REPLICA_TYPE_LABEL: replica,
            KUBEFLOW_REPLICA_INDEX_LABEL: str(index),
        },
        container,
        f"{replica} pod (index {index}) of {kind}",
    )


class KubeflowV1Backend:
    """The half of :class:`~.base.WorkloadBackend` both Kubeflow v1 kinds answer alike: their pods carry
    the job-name label, their status is :func:`kubeflow_v1_status`, they are suspended by
    :func:`suspended_v1`, and the operator's RBAC on them is the same.  A subclass names its kind and
    says where its ranks' pods are and which changes its API refuses."""

    plural: ClassVar[str]
    pod_job_label: ClassVar[str] = KUBEFLOW_JOB_NAME_LABEL

    def status(self, child: Mapping[str, Any]) -> ChildStatus:
        return kubeflow_v1_status(child)

    def rbac(self) -> tuple[RbacRule, ...]:
        # delete: a job past its retry bound that Kueue manages is deleted, not suspended (controller/decide.py)
        return (RbacRule("kubeflow.org", (self.plural,), ("list", "watch", "create", "patch", "delete")),)

    def suspended(self, workload: Mapping[str, Any]) -> dict[str, Any]:
        return suspended_v1(workload)
