"""Act on a ``SweepDecision``: the status first, then the trials, deletions and the promotion.

1. One merge patch of the sweep's ``/status`` with ``metadata.resourceVersion``: a 409 (someone
   wrote the sweep since the snapshot) decides again from the newer object, so the study is never
   overwritten; nothing is sent when nothing changed.  The trials just asked are in it.
2. Only then the trial FineTuneJobs, by server-side apply (field manager ``kubetune``, like every
   child): a restart between 1 and 2 finds the trials recorded and creates them, never asking the
   sampler again, and a FineTuneJob that exists already is the same object applied again (the name is
   the trial's), never a second one.  A permanent refusal (4xx other than 401/403 from RBAC) is
   remembered and reported by ``decide`` as the trial's failure; transient errors and RBAC's 403 go
   back to the work queue's backoff.
3. Deletions (pruned trials; propagation Background) and the winner's promotion (server-side apply
   of its FineTuneJob with spec.serve).
4. Events on the sweep (trials created, pruned, ended; the sweep's end; the promotion), through the
   FineTuneJob controller's ``EventRecorder`` (deduplicated and aggregated like client-go), as soon as
   the status that announces them is stored (before step 2): a 409 decides again and posts nothing
   twice, and a trial write that fails afterwards does not lose them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.api.contract import API_VERSION, PLURAL
from kubetune.api.sweep import SWEEP_PLURAL

from ..act import EventRecorder, admission_denied
from ..cache import Informer
from ..kube import ApiError, Kube
from ..conditions import merge_diff
from .decide import SweepDecision
from .snapshot import SweepMemory, SweepSnapshot

log = logging.getLogger(__name__)


@dataclass
class SweepExecutor:
    kube: Kube
    trials: Informer
    memory: SweepMemory
    events: EventRecorder | None = None
    conflict_retry_s: float = 0.5
    refused_retry_s: float = 0.5

    async def act(self, snap: SweepSnapshot, decision: SweepDecision) -> tuple[Mapping[str, Any] | None, float | None]:
        """Apply ``decision``; returns (the sweep as stored, when to look again)."""
        key = (snap.namespace, snap.name)
        patch = merge_diff(snap.status, decision.status)
        stored: Mapping[str, Any] | None = None
        if patch:
            body = {"metadata": {"resourceVersion": snap.resource_version}, "status": patch}
            try:
                stored = await self.kube.patch_status(API_VERSION, SWEEP_PLURAL, snap.namespace, snap.name, body)
            except ApiError as exc:
                if exc.status == 409:
                    return None, self.conflict_retry_s
                if exc.status == 404:
                    self.memory.forget(key)
                    return None, None
                raise
        if self.events is not None and stored is not None:
            # Now, before the trials are written: the status that announces them is stored, so a decision
            # taken again derives no Event from it; a write below that raises (a 500, a timeout: the work
            # queue's backoff) would otherwise lose them for good.
            for event in decision.events:
                await self.events.record(stored, event)
        requeue: float | None = None
        for obj in (*decision.trials, *((decision.winner,) if decision.winner is not None else ())):
            name = obj["metadata"]["name"]
            try:
                result = await self.kube.apply(API_VERSION, PLURAL, obj)
            except ApiError as exc:
                if exc.transient or (exc.status in (401, 403) and not admission_denied(exc)):
                    raise
                log.warning("%s/%s: FineTuneJob %s refused: %s", snap.namespace, snap.name, name, exc)
                self.memory.refused.setdefault(key, {})[name] = f"{exc.message} ({exc.status} {exc.reason})"
                requeue = self.refused_retry_s
                continue
            if result:
                self.trials.put(result)  # the next snapshot sees it before the watch event
        for name in decision.deletions:
            await self.kube.delete(API_VERSION, PLURAL, snap.namespace, name)
        if decision.requeue_after is not None:
            requeue = decision.requeue_after if requeue is None else min(requeue, decision.requeue_after)
        return stored, requeue
