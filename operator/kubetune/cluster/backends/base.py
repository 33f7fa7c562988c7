"""What kubetune knows about one training child's kind, and the small types it answers with.

A backend (see docs/adding-a-backend.md) is two halves with the same ``name``: this one, which
knows the kind as it runs in the cluster, and its renderer (:mod:`kubetune.render.backends`:
``build``, the child object, and ``check``, the cross-field checks of a spec rendered for it).
This half owns:

* ``api_version``, ``kind``, ``plural`` - what the operator applies, watches and grants in RBAC;
* ``status``         - the child's status as one :class:`ChildStatus` (pure, table-tested);
* ``pod_job_label``, ``rank0_pod``, ``pod_for_rank`` - how its pods are found (rank 0's log);
* ``controller``     - who acts on the kind: named in install hints (KindNotInstalled);
* ``rbac``           - the RBAC rules the operator needs for it (the chart is tested against them);
* ``suspended``      - the rendered child, changed so that its pods stop (to free GPUs after too many retries);
* ``refused_changes`` - which changes of a running child its API refuses, and when (the operator
  reports them as ImmutableFieldChanged instead of sending a write that can only fail).

Everything here is pure: no I/O, no cluster client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from ..rbac import RbacRule

ChildState = Literal["Created", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]
"""The states every backend's status is reduced to (Kubeflow v1's condition types, which the
controller's decisions were written against)."""

_PHASE: dict[ChildState | None, tuple[str, str]] = {
    "Succeeded": ("Succeeded", "JobSucceeded"),
    "Failed": ("Failed", "JobFailed"),
    "Suspended": ("Suspended", "JobSuspended"),
    "Restarting": ("Running", "Restarting"),
    "Running": ("Running", "JobRunning"),
    "Created": ("Pending", "PodsPending"),
    None: ("Pending", "PodsPending"),
}


@dataclass(frozen=True)
class ChildStatus:
    """What a child job's status says, in kubetune's terms."""

    state: ChildState | None
    """The most significant state the child reports (None: no status yet)."""
    message: str = ""
    """The child controller's own message for that state (empty when it gave none)."""
    since: str | None = None
    """When the child entered that state (the condition's lastTransitionTime), RFC 3339."""
    acted: bool = True
    """Whether the child's controller has written any status yet (False: nobody acted on it)."""

    @property
    def phase(self) -> str:
        """The FineTuneJob phase this state maps to (before kubetune's own evidence: pods, retries, queue)."""
        return _PHASE[self.state][0]

    @property
    def reason(self) -> str:
        """The kubetune reason (controller/reasons.py) this state maps to."""
        return _PHASE[self.state][1]


@dataclass(frozen=True)
class PodRef:
    """Where one rank's output is: the labels of its pod, its container, and how to say it."""

    labels: Mapping[str, str]
    container: str
    description: str
    """What the pod is, for messages, e.g. ``master pod (index 0) of PyTorchJob`` (the caller adds the job's name)."""


class WorkloadBackend(Protocol):
    """One Kubeflow job kind as it runs: status, pods, RBAC, install hint, suspend, update rules."""

    name: ClassVar[str]
    """Registry key, the value of spec.distributed.backend."""
    api_version: ClassVar[str]
    kind: ClassVar[str]
    plural: ClassVar[str]
    controller: ClassVar[str]
    """Who acts on the kind, as the install hint names it, e.g. ``Kubeflow Trainer v2 (TrainJob
    trainer.kubeflow.org/v1alpha1)``."""
    pod_job_label: ClassVar[str]
    """The label every pod of the child carries, whose value is the child's name."""

    def status(self, child: Mapping[str, Any]) -> ChildStatus:
        """The child's status, read from its ``status`` only (pure)."""
        ...

    def rank0_pod(self, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The pod whose log holds rank 0's progress lines, newest first."""
        ...

    def pod_for_rank(self, job_name: str, rank: int | None) -> PodRef:
        """The pod whose log holds ``rank``'s output (None: the default one, ``kubetune logs``)."""
        ...

    def rbac(self) -> tuple[RbacRule, ...]: ...

    def suspended(self, workload: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the rendered child that stops its pods (to free GPUs after too many retries)."""
        ...

    def refused_changes(
        self, running: Mapping[str, Any], wanted: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[str]:
        """What the child's API server (CRD rules, admission webhooks) would refuse when the child
        rendered as ``running`` is re-applied as ``wanted``: one sentence per refused field of the
        child, naming the upstream rule; empty when it accepts the change.  ``observed``: the child
        as the watch last saw it (some fields may change only while it is suspended)."""
        ...


def condition(child: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The child's condition ``type_`` when it is True."""
    for cond in (child.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def newest_matching(pods: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The newest pod whose labels include ``labels`` (values compared case-insensitively)."""
    found = [
        p
        for p in pods
        if all(
            str(((p.get("metadata") or {}).get("labels") or {}).get(k, "")).lower() == v.lower()
            for k, v in labels.items()
        )
    ]
    found.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")), reverse=True)
    return found[0] if found else None
