"""Pieces every Kubeflow backend shares: runPolicy and the child's labels."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..intermediate import Plan
from .base import ChildStatus, PodRef, condition


def run_policy(plan: Plan, *, min_available: int) -> dict[str, Any]:
    """Kubeflow runPolicy from spec.runPolicy, spec.suspend and spec.scheduling.

    ``suspend`` is omitted when a Kueue queue is named: Kueue suspends and
    resumes the job itself and a value of ours would fight it.
    ``schedulingPolicy.queue`` is deliberately not set: it names a Volcano /
    scheduler-plugins queue, not a Kueue LocalQueue, and a gang scheduler would
    wait forever for a queue of that name.
    """
    rp = plan.job.spec.run_policy
    out: dict[str, Any] = {"backoffLimit": rp.backoff_limit, "cleanPodPolicy": "Running"}
    if rp.active_deadline_seconds is not None:
        out["activeDeadlineSeconds"] = rp.active_deadline_seconds
    if rp.ttl_seconds_after_finished is not None:
        out["ttlSecondsAfterFinished"] = rp.ttl_seconds_after_finished
    scheduling: dict[str, Any] = {"minAvailable": min_available}
    sched = plan.job.spec.scheduling
    if sched is not None and sched.priority_class_name:
        scheduling["priorityClass"] = sched.priority_class_name
    out["schedulingPolicy"] = scheduling
    if plan.suspend is not None:
        out["suspend"] = plan.suspend
    return out


def child_labels(plan: Plan) -> dict[str, str]:
    from kubetune.api.contract import KUEUE_QUEUE_LABEL

    labels = dict(plan.labels)
    if plan.queue:
        labels[KUEUE_QUEUE_LABEL] = plan.queue
    return labels


# --- Kubeflow v1 jobs (training-operator PyTorchJob, mpi-operator MPIJob v2beta1) -------------------

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
