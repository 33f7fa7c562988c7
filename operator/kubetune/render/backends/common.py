"""What every Kubeflow backend's renderer shares: runPolicy and the child's labels."""

from __future__ import annotations

from typing import Any

from ..intermediate import Plan


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
