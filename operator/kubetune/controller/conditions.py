"""Pure helpers of ``decide``: Kubernetes-style conditions, and what a child job and its pods say
(the status model they fill in is :mod:`kubetune.api.status`).

Everything here is a function of its arguments (the clock is passed in).  Conventions followed
(API conventions, metav1.Condition): ``lastTransitionTime`` changes only when a condition's
``status`` flips; reason is CamelCase; message says what happened and what to do; every
condition carries the ``observedGeneration`` it was computed from.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubetune.cluster.backends import BACKENDS
from kubetune.cluster.backends.kubeflow import KUBEFLOW_JOB_NAME_LABEL

from .reasons import with_hint

LABEL_JOB_NAME = KUBEFLOW_JOB_NAME_LABEL
"""The label the Kubeflow v1 controllers put on pods (the pod informer's selector)."""

_IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
# The kubelet's messages (pkg/kubelet/kubelet_pods.go, makeEnvironmentVariables):
# `secret "hf-token" not found`, `couldn't find key token in Secret team-a/hf-token`.
_SECRET_MISSING = re.compile(r'secret "([^"]+)" not found|couldn\'t find key (\S+) in Secret (\S+)', re.IGNORECASE)
# The scheduler's volume-binding plugin: `persistentvolumeclaim "x" not found`,
# `pod has unbound immediate PersistentVolumeClaims`.
_VOLUME = re.compile(r"persistentvolumeclaim|unbound immediate PersistentVolumeClaims", re.IGNORECASE)


def now_rfc3339(clock: datetime.datetime | float | None = None) -> str:
    if isinstance(clock, (int, float)):
        clock = datetime.datetime.fromtimestamp(clock, datetime.UTC)
    moment = clock or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> float | None:
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set (``status`` None: Unknown); lastTransitionTime kept unless the status flips."""
    wanted = "Unknown" if status is None else "True" if status else "False"
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


EVICTED = "Evicted"
"""A pod the kubelet evicted: phase Failed, status.reason ``Evicted`` and status.message saying why
(``evictPod`` in pkg/kubelet/eviction/eviction_manager.go:611-631, ``Reason`` in helpers.go:44, read in
openshift/microshift 8e16b12fda's deps/github.com/openshift/kubernetes, the 1.36 line; not at a
kubernetes tag). Its containers' own terminated reason says only how they were killed."""
OUTPUTS_EMPTYDIR_EVICTION = 'Usage of EmptyDir volume "outputs" exceeds the limit'
"""The kubelet's message when the outputs emptyDir (spec.storage.outputs without claimName,
kubetune.render.podspec.outputs_volume) grows past its sizeLimit: ``emptyDirMessageFmt`` =
``Usage of EmptyDir volume %q exceeds the limit %q. `` (helpers.go:57-58), sent by
emptyDirLimitEviction (eviction_manager.go:534-556) with a 1 s grace period, so the trainer writes
no stop checkpoint."""


def eviction_reason(status: Mapping[str, Any]) -> str:
    """What an evicted pod's termination says: the kubelet's message, and for the outputs emptyDir
    the field to change (otherwise the same overflow evicts every restarted pod again)."""
    message = str(status.get("message") or "").strip()
    text = f"{EVICTED}: {message}" if message else EVICTED
    if OUTPUTS_EMPTYDIR_EVICTION in message:
        text += (
            " - raise spec.storage.outputs.sizeLimit (it must hold training.saveTotalLimit + 1 checkpoints, "
            "the final model and an exported merged model); the restarted pod resumes from the newest checkpoint "
            "uploaded to spec.storage.outputs.uri"
        )
    return text


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The most useful reason a training pod is stuck or died: (Reason, message with hint) or None."""
    found: list[tuple[int, str, str]] = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if terminated and terminated.get("reason") == "OOMKilled":
                found.append(
                    (
                        0,
                        "OOMKilled",
                        with_hint(
                            "OOMKilled",
                            f"pod {name} container {cs.get('name')} was OOMKilled (exit code "
                            f"{terminated.get('exitCode')})",
                        ),
                    )
                )
            waiting = (cs.get("state") or {}).get("waiting") or {}
            why, text = str(waiting.get("reason") or ""), str(waiting.get("message") or "")
            where = f"pod {name} container {cs.get('name')}"
            if why == "CreateContainerConfigError" and (m := _SECRET_MISSING.search(text)):
                secret = m.group(1) or m.group(3).split("/")[-1]
                detail = f"Secret {secret} does not exist" if m.group(1) else f"Secret {secret} has no key {m.group(2)}"
                found.append((1, "SecretMissing", with_hint("SecretMissing", f"{where}: {detail} ({text})")))
            elif why == "CreateContainerConfigError":
                found.append((2, why, with_hint(why, f"{where}: {why}: {text}".rstrip(": "))))
            elif why in _IMAGE_REASONS:
                found.append((2, why, with_hint(why, f"{where}: {why}: {text}".rstrip(": "))))
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                text = str(cond.get("message") or "")
                reason = "VolumeNotReady" if _VOLUME.search(text) else "Unschedulable"
                found.append((3, reason, with_hint(reason, f"pod {name} cannot be scheduled: {text}")))
    if not found:
        return None
    found.sort(key=lambda f: f[0])
    return found[0][1], found[0][2]


def rank0_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod whose log holds rank 0's output, as any backend finds it (PyTorchJob Master, MPIJob
    Launcher, TrainJob node 0); the controller asks the child's own backend."""
    for backend in BACKENDS.values():
        found = backend.rank0_pod(pods)
        if found is not None:
            return found
    return None


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``; empty when they are equal."""
    out: dict[str, Any] = {}
    for key in old:
        if key not in new and old[key] is not None:
            out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                out[key] = sub
        elif value != before:
            out[key] = value
    return out
