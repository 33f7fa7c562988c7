"""The sweep controller's work queue and worker: the FineTuneJob controller's rules (``..loop``).

Triggers only enqueue a sweep's key: kopf's watch of FineTuneSweeps (``handlers``), and every
event of a FineTuneJob labelled with a sweep (its trials: their phase, progress and evaluation
are the study's input).  One worker reconciles observe -> decide -> act; failures back off per key.

The trials come from an informer of their own (LIST + WATCH of FineTuneJobs with the sweep label,
``..cache.Informer``), not from kopf's watch of every FineTuneJob: the worker starts only once it
has listed them all (``synced``), so a sweep reconciled right after a restart never takes a trial
not delivered yet for one that was deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubetune.api.contract import API_VERSION, PLURAL
from kubetune.api.sweep import LABEL_SWEEP

from ..act import EventRecorder
from ..cache import Caches, Informer, _key, keep_newest
from ..kube import ApiError, Kube
from .. import loop as job_loop  # WorkQueue; a module import: ..loop imports this module
from .act import SweepExecutor
from .decide import decide_sweep
from .snapshot import Key, SweepMemory, observe

log = logging.getLogger(__name__)


class SweepController:
    def __init__(
        self,
        kube: Kube,
        caches: Caches,
        *,
        retry_delay_s: float = 1.0,
        gpu_memory_by_product: Mapping[str, str] | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.kube = kube
        self.gpu_memory_by_product = dict(gpu_memory_by_product or {})
        self.caches = caches
        self.sweeps: dict[Key, dict[str, Any]] = {}
        """FineTuneSweeps, fed by kopf's watch (``handlers``) and our own status patches."""
        self.trials = Informer(
            kube, API_VERSION, PLURAL, caches.namespaces, self._trial_event, label_selector=LABEL_SWEEP
        )
        """Every sweep's trial FineTuneJobs (label kubetune.io/finetunesweep), whole."""
        self.queue = job_loop.WorkQueue()
        self.memory = SweepMemory()
        self.executor = SweepExecutor(kube, self.trials, self.memory, events, conflict_retry_s=min(0.5, retry_delay_s))
        self.retry_delay_s = retry_delay_s
        self.failures: dict[Key, int] = {}

    # --- triggers ---------------------------------------------------------------------

    def sweep_event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        if event_type == "DELETED":
            self.sweeps.pop(key, None)
            self.memory.forget(key)
            self.failures.pop(key, None)
            return
        if self._store(obj):
            self.queue.add(key)

    def _trial_event(self, _type: str, obj: Mapping[str, Any]) -> None:
        """A trial FineTuneJob changed or went away: its sweep looks again."""
        meta = obj.get("metadata") or {}
        sweep = (meta.get("labels") or {}).get(LABEL_SWEEP)
        key = (str(meta.get("namespace")), str(sweep))
        if sweep and key in self.sweeps:
            self.queue.add(key)

    def requeue_all(self) -> None:
        for key in list(self.sweeps):
            self.queue.add(key)

    def _store(self, obj: Mapping[str, Any]) -> bool:
        return keep_newest(self.sweeps, obj)

    # --- the worker -------------------------------------------------------------------

    async def run(self, resumed: asyncio.Event, draining: Any, busy: set[asyncio.Task[Any]] | None = None) -> None:
        """Reconcile keys until cancelled; waits while ``resumed`` is clear (peering pause), stops taking
        keys once ``draining()`` is true; while a reconcile runs its task is in ``busy`` (the FineTuneJob
        controller's drain waits for it at a stop, ``..loop.Controller.drain``)."""
        informer = asyncio.create_task(self.trials.run(), name="kubetune-sweep-trials")
        try:
            await self.trials.synced.wait()
            await self._work(resumed, draining, busy)
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    async def _work(self, resumed: asyncio.Event, draining: Any, busy: set[asyncio.Task[Any]] | None) -> None:
        task = asyncio.current_task()
        while not draining():
            key = await self.queue.get()
            try:
                await resumed.wait()
                if draining():
                    break
                if busy is not None and task is not None:
                    busy.add(task)
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker outlives any single bad sweep
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = (exc.retry_after if isinstance(exc, ApiError) and exc.retry_after else None) or min(
                    self.retry_delay_s * 2 ** (n - 1), 300.0
                )
                log.warning(
                    "reconcile of sweep %s/%s failed (%s); retrying in %.1f s",
                    key[0],
                    key[1],
                    exc,
                    delay,
                    exc_info=not isinstance(exc, ApiError),
                )
                self.queue.add_after(key, delay)
            else:
                self.failures.pop(key, None)
            finally:
                if busy is not None and task is not None:
                    busy.discard(task)
                self.queue.done(key)

    async def reconcile(self, key: Key) -> None:
        obj = self.sweeps.get(key)
        if obj is None:
            return
        snap = observe(key, obj, self.trials, self.caches, self.memory, self.gpu_memory_by_product)
        # In a worker thread: decide rebuilds the Optuna study, which is CPU work that grows with the
        # trials recorded (hyperband replays every trial's reports: about 3 s at 200 trials of 100
        # evaluations each on a busy 2-core machine), and it runs at every new evaluation of every
        # running trial.  On the event loop that stalled every watch, the FineTuneJob controller and
        # the progress endpoint for as long.  decide is pure and the snapshot is a deep copy
        # (observe), so nothing is shared with the loop; one worker means one decide at a time.
        decision = await asyncio.to_thread(decide_sweep, snap, time.time())
        stored, requeue = await self.executor.act(snap, decision)
        if stored is not None:
            self._store(stored)
        if requeue is not None:
            self.queue.add_after(key, requeue)
