"""The controller: a work queue of FineTuneJob keys and the workers that reconcile them.

Triggers only enqueue a key: kopf's watch of FineTuneJobs (``handlers``), the informers of the
children, training pods and serving objects (``cache``), a progress report pushed by a trainer (``intake``), and
the requeue hint of the last decision.  A worker takes a key and runs observe -> decide -> act
once.  The queue follows client-go's workqueue: a key is queued at most once, never processed
by two workers at a time, and queued again if it changed while it was processed; failures are
retried with per-key exponential backoff.

Peering: kopf pauses its own watch when a peer with a higher or equal priority runs; the workers
follow the same rule (``peering.pause_state``, one GET of the peering object per ``peering_check_s``)
and say loudly when two operators of the same priority pause each other.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from .act import EventRecorder, Executor
from .cache import Caches
from .decide import decide
from .discovery import Discovery
from .kube import ApiError
from .peering import pause_state
from .runtime import Runtime
from .snapshot import Key, Memory, ObserveSettings, observe
from .sweeps.loop import SweepController

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(self) -> None:
        self._queue: collections.deque[Key] = collections.deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._ready = asyncio.Event()
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: Key, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        when = loop.time() + delay
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return  # an earlier wake-up is already planned
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)


class Controller:
    def __init__(self, rt: Runtime, *, peering: str | None) -> None:
        self.rt = rt
        config = rt.config
        self.peering = peering
        self.queue = WorkQueue()
        self.caches = Caches(rt.kube, config.namespaces, self.enqueue, recheck_s=6 * config.retry_delay_s)
        self.discovery = Discovery(rt.kube, missing_ttl_s=6 * config.retry_delay_s)
        for informer in self.caches.children.values():  # a kind appeared: discovery answers are stale
            informer.on_served = self._kind_appeared
        self.memory = Memory()
        self.settings = ObserveSettings(
            render_options=config.render_options,
            log_interval_s=config.sync_interval_s,
            log_tail_lines=config.log_tail_lines,
            log_limit_bytes=config.log_limit_bytes,
            controller_grace_s=config.controller_grace_s,
            prereq_recheck_s=config.prereq_recheck_s,
            push_fresh_s=config.progress_fresh_s,
            gpu_memory_by_product=config.gpu_memory_by_product,
        )
        recorder = EventRecorder(rt.kube, rt.metrics)
        self.executor = Executor(
            rt.kube, self.caches, self.memory, recorder, conflict_retry_s=min(1.0, config.retry_delay_s)
        )
        self.failures: dict[Key, int] = {}
        self.sweeps = SweepController(
            rt.kube,
            self.caches,
            retry_delay_s=config.retry_delay_s,
            gpu_memory_by_product=config.gpu_memory_by_product,
            events=recorder,
        )
        """FineTuneSweeps (controller/sweeps): their trials are FineTuneJobs of this controller."""
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.ready = asyncio.Event()
        self._draining = False
        self._busy: set[asyncio.Task[Any]] = set()
        """Workers inside a reconcile (drain waits for them)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        if rt.board is not None:
            rt.board.on_update = self.enqueue

    # --- triggers --------------------------------------------------------------------

    def _kind_appeared(self) -> None:
        self.discovery.invalidate()
        for namespace, name in list(self.caches.jobs):
            self.enqueue(namespace, name)

    def enqueue(self, namespace: str, name: str) -> None:
        """Ask for a reconcile of a job (safe to call from another thread, e.g. an HTTP intake)."""
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.enqueue, namespace, name)
            return
        if (namespace, name) in self.caches.jobs:
            self.queue.add((namespace, name))

    def job_event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """kopf's watch of FineTuneJobs (``handlers.index``): keep the newest copy, enqueue its key."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if event_type == "DELETED":
            self.caches.drop_job(namespace, name)
            self.memory.forget((namespace, name))
            self.failures.pop((namespace, name), None)
            self._enqueue_dependents(namespace, name)
            return
        if self.caches.store_job(obj):
            self.queue.add((namespace, name))
            self._enqueue_dependents(namespace, name)

    def _enqueue_dependents(self, namespace: str, name: str) -> None:
        """Jobs not started yet that build on ``name`` (fromJob): its phase decides whether they start."""
        for key in self.caches.dependents(namespace, name):
            self.queue.add(key)

    def phases(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in list(self.caches.jobs.values()):
            phase = str((obj.get("status") or {}).get("phase") or "Unknown")
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
        tasks = [asyncio.create_task(self.caches.run(), name="kubetune-informers")]
        if self.peering is not None:
            tasks.append(asyncio.create_task(self._watch_peering(), name="kubetune-peering"))
        try:
            await self.caches.wait_synced()
            self.ready.set()
            log.debug("watch caches synced; %d FineTuneJobs known", len(self.caches.jobs))
            workers = [
                asyncio.create_task(self._worker(), name=f"kubetune-worker-{i}")
                for i in range(self.rt.config.sync_concurrency)
            ]
            workers.append(
                asyncio.create_task(
                    self.sweeps.run(self.resumed, lambda: self._draining, self._busy), name="kubetune-sweep-worker"
                )
            )
            tasks.extend(workers)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_peering(self) -> None:
        config = self.rt.config
        last_blockers: tuple[str, ...] | None = None
        while True:
            state = await pause_state(self.rt.kube, self.peering, config.namespaces, self.rt.identity, config.priority)
            blockers = tuple(sorted(state))
            if blockers != last_blockers:
                if blockers:
                    twins = [p for p, prio in state.items() if prio == config.priority]
                    if twins:
                        log.error(
                            "paused: operator %s runs with the same peering priority %d on peering "
                            "%r, and kopf pauses both; stop one of them, "
                            "or restart this one with --priority %d to take over",
                            ", ".join(twins),
                            config.priority,
                            self.peering,
                            config.priority + 1,
                        )
                    else:
                        log.warning(
                            "paused: operator %s with a higher peering priority runs on peering %r; "
                            "this one resumes when it stops",
                            ", ".join(blockers),
                            self.peering,
                        )
                    self.resumed.clear()
                elif last_blockers:
                    log.info("resumed: no live peer with a higher or equal priority on peering %r", self.peering)
                    self.resumed.set()
                    for key in list(self.caches.jobs):
                        self.queue.add(key)
                    self.sweeps.requeue_all()
                last_blockers = blockers
            await asyncio.sleep(config.peering_check_s)

    async def _worker(self) -> None:
        task = asyncio.current_task()
        while not self._draining:
            key = await self.queue.get()
            try:
                await self.resumed.wait()
                if self._draining:  # stopping: the key stays for whoever runs next
                    break
                if task is not None:
                    self._busy.add(task)
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a worker outlives any single bad object
                self._retry(key, exc)
            else:
                self.failures.pop(key, None)
            finally:
                if task is not None:
                    self._busy.discard(task)
                self.queue.done(key)

    async def drain(self, grace: float) -> None:
        """Stop taking keys, and give the reconciles under way up to ``grace`` seconds to finish their
        writes (children, status, Events) before the caller cancels what is left (controller/main.py's
        kopf cleanup handler, at a SIGTERM). A key not yet started is left to the next operator: every
        reconcile starts from what the API server holds."""
        self._draining = True
        busy = [t for t in self._busy if not t.done()]
        if busy:
            await asyncio.wait(busy, timeout=grace)

    def _retry(self, key: Key, exc: Exception) -> None:
        n = self.failures.get(key, 0) + 1
        self.failures[key] = n
        config = self.rt.config
        if isinstance(exc, ApiError):
            delay = exc.retry_after or min(config.retry_delay_s * 2 ** (n - 1), 300.0)
            self.rt.metrics.api_retries.labels(str(exc.status)).inc()
            log.warning("reconcile of %s/%s: %s; retrying in %.1f s", key[0], key[1], exc, delay)
        else:
            delay = min(config.retry_delay_s * 2 ** (n - 1), 300.0)
            log.exception("reconcile of %s/%s failed; retrying in %.1f s", key[0], key[1], delay, exc_info=exc)
        self.queue.add_after(key, delay)

    async def reconcile(self, key: Key) -> None:
        """observe -> decide -> act, once."""
        obj = self.caches.jobs.get(key)
        if obj is None:
            return
        with self.rt.metrics.timed("reconcile"):
            snap = await observe(
                key, obj, self.caches, self.memory, self.rt.kube, self.settings, self.rt.board, discovery=self.discovery
            )
            decision = decide(snap, time.time())
            requeue = await self.executor.act(snap, decision)
        if requeue is not None:
            self.queue.add_after(key, requeue)
