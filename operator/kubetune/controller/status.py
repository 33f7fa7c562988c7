"""Pure status logic: Kubernetes-style conditions, and the phase a child job implies.

Everything here is a function of its arguments (the clock is passed in), so the
rules a user sees in ``kubectl get ftj`` / ``kubectl describe ftj`` are unit
tested without a server.  Conventions followed (API conventions, metav1.Condition):
``lastTransitionTime`` changes only when a condition's ``status`` flips; reason
is CamelCase; message says what happened and what to do; every condition
carries the ``observedGeneration`` it was computed from.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.api import Phase
from kubetune.api.contract import KUEUE_QUEUE_LABEL

RANK0_REPLICA_TYPES = ("master", "launcher")
"""Kubeflow replica types whose pod prints rank 0's stdout (PyTorchJob Master, MPIJob Launcher)."""
LABEL_JOB_NAME = "training.kubeflow.org/job-name"
LABEL_REPLICA_TYPE = "training.kubeflow.org/replica-type"

_IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError")


def now_rfc3339(clock: datetime.datetime | None = None) -> str:
    moment = clock or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; lastTransitionTime kept unless the status flips."""
    wanted = "True" if status else "False"
    message = message[:4096]  # child and pod messages can be long; keep status objects small
    previous = next((c for c in conditions or () if c.get("type") == type_), None)
    kept_time = previous.get("lastTransitionTime", now) if previous and previous.get("status") == wanted else now
    updated = {
        "type": type_,
        "status": wanted,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": kept_time,
    }
    out = [updated if c is previous else dict(c) for c in conditions or ()]
    if previous is None:
        out.append(updated)
    return [{k: v for k, v in c.items() if v is not None} for c in out]


def get_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


@dataclass(frozen=True)
class Observation:
    """What the child job and its pods say, reduced to what the FineTuneJob shows."""

    phase: Phase
    reason: str
    message: str


def _true(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    cond = get_condition(conditions, type_)
    return cond if cond is not None and cond.get("status") == "True" else None


def child_state(child: Mapping[str, Any]) -> str | None:
    """The child's current state: its most significant True condition type."""
    conditions = (child.get("status") or {}).get("conditions") or []
    for type_ in ("Succeeded", "Failed", "Suspended", "Restarting", "Running", "Created"):
        if _true(conditions, type_):
            return type_
    return None


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The most useful reason a training pod is stuck or died: (Reason, message) or None."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("reason") == "OOMKilled":
                return "OOMKilled", (
                    f"pod {name} container {cs.get('name')} was OOMKilled (exit code {terminated.get('exitCode')}): "
                    "raise spec.resources.memory, lower per-device batch size or cutoff length, or offload with ZeRO"
                )
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _IMAGE_REASONS:
                return str(waiting["reason"]), (
                    f"pod {name} container {cs.get('name')}: {waiting.get('reason')}: {waiting.get('message', '')}".rstrip(": ")
                    + " (check spec.image and spec.imagePullSecrets)"
                )
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
                return "Unschedulable", (
                    f"pod {name} cannot be scheduled: {cond.get('message', '')} "
                    "(no node has the requested GPUs/CPU/memory free; check spec.resources and spec.scheduling)"
                )
    return None


def observe(
    child: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], exporting: bool, suspend_requested: bool = False
) -> Observation:
    """The FineTuneJob phase implied by the Kubeflow job's conditions and its pods.

    Kubeflow v1 jobs (PyTorchJob) and MPIJob v2beta1 share condition types:
    Created, Running, Restarting, Succeeded, Failed, Suspended.  Terminal
    conditions win; a pod problem explains a Pending or Failed job.
    """
    if child is None:
        return Observation("Pending", "JobMissing", "waiting for the Kubeflow job to be created")
    conditions = (child.get("status") or {}).get("conditions") or []
    problem = pod_problem(pods)
    if cond := _true(conditions, "Succeeded"):
        return Observation("Succeeded", "JobSucceeded", str(cond.get("message") or "training finished"))
    if cond := _true(conditions, "Failed"):
        message = str(cond.get("message") or "the Kubeflow job failed")
        if problem:
            return Observation("Failed", problem[0], f"{message}; {problem[1]}")
        return Observation("Failed", str(cond.get("reason") or "JobFailed"), message)
    if cond := _true(conditions, "Suspended"):
        queue = ((child.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        if queue and not suspend_requested:
            # Kueue keeps queued jobs suspended until it admits them: for the user that is "waiting".
            return Observation("Pending", "WaitingForQueue", f"queued in Kueue LocalQueue {queue}; waiting for admission (quota)")
        return Observation("Suspended", "JobSuspended", str(cond.get("message") or "the job is suspended"))
    if _true(conditions, "Restarting"):
        detail = f": {problem[1]}" if problem else ""
        return Observation("Running", "Restarting", f"pods are restarting (resuming from the newest checkpoint){detail}")
    if cond := _true(conditions, "Running"):
        if exporting:
            return Observation("Exporting", "Exporting", "training finished; merging the adapter into the base model")
        return Observation("Running", "JobRunning", str(cond.get("message") or "training pods are running"))
    if problem:
        return Observation("Pending", problem[0], problem[1])
    return Observation("Pending", "PodsPending", "waiting for the training pods to start")


def rank0_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The PyTorchJob Master / MPIJob Launcher pod (rank 0's stdout), newest first."""
    candidates = [
        p
        for p in pods
        if str((p.get("metadata", {}).get("labels") or {}).get(LABEL_REPLICA_TYPE, "")).lower() in RANK0_REPLICA_TYPES
    ]
    candidates.sort(key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")), reverse=True)
    return candidates[0] if candidates else None


PHASE_CONDITIONS = ("Running", "Exporting", "Succeeded", "Failed", "Suspended")


def phase_conditions(
    conditions: Sequence[Mapping[str, Any]] | None, obs: Observation, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Update the phase-related conditions for ``obs``; conditions never seen stay absent until relevant."""
    out = [dict(c) for c in conditions or ()]
    for type_ in PHASE_CONDITIONS:
        active = obs.phase == type_ or (type_ == "Running" and obs.phase == "Exporting")
        present = get_condition(out, type_) is not None
        if not active and not present:
            if type_ == "Running" and obs.phase == "Pending":
                out = set_condition(out, "Running", False, obs.reason, obs.message, generation, now)
            continue
        if active:
            reason, message = obs.reason, obs.message
        else:
            reason, message = f"Job{obs.phase}", obs.message
        out = set_condition(out, type_, active, reason, message, generation, now)
    return out
