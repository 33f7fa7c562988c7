"""Observe one FineTuneSweep: the sweep as kopf's watch last saw it and its trials (FineTuneJobs)
as the FineTuneJob watch holds them.  No API request: everything comes from the caches."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.sweep import LABEL_SWEEP, SWEEP_KIND

from ..cache import Caches, Informer

Key = tuple[str, str]


@dataclass(frozen=True)
class SweepSnapshot:
    namespace: str
    name: str
    obj: Mapping[str, Any]
    uid: str
    generation: int | None
    resource_version: str
    status: Mapping[str, Any]
    trials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """This sweep's trial FineTuneJobs by name (controller ownerReference to this sweep's uid)."""
    foreign: frozenset[str] = frozenset()
    """Names of FineTuneJobs in the namespace that a trial (recorded, or about to be asked: ``<sweep>-<n>``)
    would take, but that this sweep does not own."""
    predecessor: frozenset[str] = frozenset()
    """Names of recorded trials still held by the FineTuneJob of an earlier sweep of this name (deleted
    and created again): the garbage collector deletes it, then the trial is created."""
    refused: Mapping[str, str] = field(default_factory=dict)
    """Trials whose FineTuneJob the API server refused (permanently), with its message (act.py)."""
    first_seen: bool = False
    gpu_memory_by_product: Mapping[str, str] = field(default_factory=dict)
    """The operator's GPU table (Helm value gpuMemoryByProduct): the planner's check of the range's extremes."""


@dataclass
class SweepMemory:
    """What the sweep controller remembers between reconciles."""

    seen: set[Key] = field(default_factory=set)
    refused: dict[Key, dict[str, str]] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.seen.discard(key)
        self.refused.pop(key, None)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(
        r.get("controller") and r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def _earlier_sweeps(job: Mapping[str, Any], sweep: str) -> bool:
    """Whether ``job`` is a trial of an earlier FineTuneSweep of this name (``kubectl delete fts X``, then
    apply it again) that is on its way out.  Deleting the sweep (propagation Background, the default for
    custom resources: k8s.io/apiserver/pkg/registry/generic/registry/store.go:886-980 @ v0.36.3) removes
    it at once and leaves its trials to the garbage collector, which deletes a dependent whose owners
    are all gone; until it has, the trial's name is taken.  Its controller reference names a
    FineTuneSweep of this name (another uid: the same name in the namespace is this sweep), or it is
    already being deleted.  A job orphaned on purpose (--cascade=orphan drops the reference) is not."""
    meta = job.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return True
    return any(
        r.get("controller") and r.get("kind") == SWEEP_KIND and r.get("name") == sweep
        for r in meta.get("ownerReferences") or []
    )


def observe(
    key: Key,
    obj: Mapping[str, Any],
    trials: Informer,
    caches: Caches,
    memory: SweepMemory,
    gpu_memory_by_product: Mapping[str, str] | None = None,
) -> SweepSnapshot:
    """``trials``: the informer of every sweep's trial FineTuneJobs; ``caches.jobs`` (kopf's watch of all
    FineTuneJobs) only tells whether a recorded trial's name is taken by a job this sweep does not own."""
    namespace, name = key
    obj = copy.deepcopy(dict(obj))
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    uid = str(meta.get("uid") or "")
    found: dict[str, Mapping[str, Any]] = {}
    for (ns, job_name), job in list(trials.objects.items()):
        labels = (job.get("metadata") or {}).get("labels") or {}
        if ns == namespace and labels.get(LABEL_SWEEP) == name and owned_by(job, uid):
            found[job_name] = copy.deepcopy(job)
    recorded = {str(t.get("name")) for t in status.get("trials") or [] if isinstance(t, Mapping)}
    # Every name a trial has or may get (<sweep>-<n>, recorded or about to be asked) that a FineTuneJob
    # this sweep does not own holds: such a name is never applied, since server-side apply would take the
    # job over (ownerReferences is a map keyed by uid and the old entry was applied by the same field
    # manager, so it is dropped: k8s.io/apimachinery/pkg/apis/meta/v1/types.go:257-261 @ v0.36.3),
    # with the parameters it was created with.
    trial_name = re.compile(re.escape(name) + r"-[0-9]+")
    holders = {
        n: job
        for (ns, n), job in (*caches.jobs.items(), *trials.objects.items())
        if ns == namespace and (n in recorded or trial_name.fullmatch(n))
    }
    foreign: set[str] = set()
    predecessor: set[str] = set()
    for n, other in holders.items():
        if n not in found and not owned_by(other, uid):
            (predecessor if _earlier_sweeps(other, name) else foreign).add(n)
    first_seen = key not in memory.seen
    memory.seen.add(key)
    generation = meta.get("generation")
    return SweepSnapshot(
        namespace=namespace,
        name=name,
        obj=obj,
        uid=uid,
        generation=int(generation) if generation is not None else None,
        resource_version=str(meta.get("resourceVersion") or ""),
        status=status,
        trials=found,
        foreign=frozenset(foreign),
        predecessor=frozenset(predecessor),
        refused=dict(memory.refused.get(key) or {}),
        first_seen=first_seen,
        gpu_memory_by_product=dict(gpu_memory_by_product or {}),
    )
