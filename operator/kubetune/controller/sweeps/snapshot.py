"""Observe one FineTuneSweep: the sweep as kopf's watch last saw it and its trials (FineTuneJobs)
as the FineTuneJob watch holds them.  No API request: everything comes from the caches."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.sweep import LABEL_SWEEP

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
    """Names of FineTuneJobs in the namespace that some recorded trial would take, but that this sweep does not own."""
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
    return any(r.get("controller") and r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or [])


def observe(
    key: Key, obj: Mapping[str, Any], trials: Informer, caches: Caches, memory: SweepMemory, gpu_memory_by_product: Mapping[str, str] | None = None
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
    foreign = set()
    for n in recorded - set(found):
        other = caches.jobs.get((namespace, n)) or trials.get(namespace, n)
        if other is not None and not owned_by(other, uid):
            foreign.add(n)
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
        refused=dict(memory.refused.get(key) or {}),
        first_seen=first_seen,
        gpu_memory_by_product=dict(gpu_memory_by_product or {}),
    )
