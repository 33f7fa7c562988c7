"""The status loop: mirror each started FineTuneJob's child job, pods and rank-0 progress.

Why one loop and not kopf timers/daemons: kopf puts a finalizer on every object
that has a timer or daemon, so a stopped operator would block ``kubectl delete
ftj``; this operator adds no finalizer at all (children go by ownerReference,
outputs on PVCs are never touched).  The loop reads the FineTuneJobs from the
operator's own watch (kopf's ``on.event`` feeds ``observe``), so it costs no
LIST; per started, unfinished job and interval it makes one GET of the child
and, once rank 0 runs, one GET of its log tail (see ``progress``); pods are
LISTed by label only while the job is not Running or rank 0 is not yet known.
When rank 0 pushes its progress to the intake (``intake.ProgressBoard``), a fresh
report replaces the log read, and a Running job costs the one GET of the child.  It writes status with a merge patch that carries the
object's resourceVersion: if a handler wrote in between, the API answers 409
and the loop simply retries next interval instead of overwriting newer data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubetune.api import TERMINAL_PHASES
from kubetune.api.contract import API_VERSION, PLURAL

from .children import plural_of
from .kube import ApiError
from .peering import paused
from .progress import LogReading, read_log
from .runtime import Runtime
from .status import LABEL_JOB_NAME, Observation, child_state, now_rfc3339, observe, phase_conditions, rank0_pod

log = logging.getLogger("kubetune.operator.sync")

Key = tuple[str, str]


class StatusSync:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.wakeup = asyncio.Event()
        self.rank0: dict[Key, tuple[str, str | None]] = {}
        """Rank-0 pod and container per running job, so a steady job needs no LIST."""

    # --- fed by kopf's watch -----------------------------------------------------

    def observe(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.jobs.pop(key, None)
            self.rank0.pop(key, None)
            self.rt.board.forget(*key)
        else:
            self.jobs[key] = dict(obj)

    def phases(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in list(self.jobs.values()):
            phase = str((obj.get("status") or {}).get("phase") or "Unknown")
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    # --- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        config = self.rt.config
        while True:
            try:
                if not await paused(self.rt.kube, config.peering, config.namespaces, self.rt.identity, config.priority):
                    await self.tick()
            except Exception:  # the loop must outlive any single bad object
                log.exception("status sync tick failed")
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.rt.config.sync_interval_s)
            except TimeoutError:
                pass
            self.wakeup.clear()

    async def tick(self) -> None:
        due = [obj for obj in list(self.jobs.values()) if _due(obj)]
        limit = asyncio.Semaphore(self.rt.config.sync_concurrency)
        await asyncio.gather(*(self._guarded(obj, limit) for obj in due))

    async def _guarded(self, obj: dict[str, Any], limit: asyncio.Semaphore) -> None:
        """Sync one job; errors end here (kopf re-raises failed tasks of its loop at shutdown)."""
        name = f"{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}"
        async with limit:
            try:
                with self.rt.metrics.timed("sync"):
                    await self.sync(obj)
            except ApiError as exc:
                if exc.status != 409:  # 409: a handler wrote first; the next interval sees its result
                    log.warning("status sync of %s: %s", name, exc)
            except Exception:
                log.exception("status sync of %s failed", name)

    async def sync(self, obj: Mapping[str, Any]) -> None:
        kube, config = self.rt.kube, self.rt.config
        meta, status = obj["metadata"], obj.get("status") or {}
        namespace, ref = meta["namespace"], status["job"]
        child = await kube.get(ref["apiVersion"], plural_of(ref["apiVersion"], ref["kind"]), namespace, ref["name"])
        pods: list[dict[str, Any]] = []
        reading: LogReading | None = None
        if child is not None:
            pods, reading = await self._pods_and_log((namespace, meta["name"]), namespace, ref["name"], child)
        exporting = reading.exporting if reading else status.get("phase") == "Exporting"
        obs = observe(child, pods, exporting, suspend_requested=bool((obj.get("spec") or {}).get("suspend")))
        if child is None:
            obs = Observation("Failed", "JobDeleted", f"the {ref['kind']} {ref['name']} was deleted; create a new FineTuneJob to train again")
        # Conditions carry the generation the handlers last acted on, not one they have not seen yet.
        new = desired_status(status, obs, reading, status.get("observedGeneration"), now_rfc3339())
        if not new:
            return
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": new}
        result = await kube.patch_status(API_VERSION, PLURAL, namespace, meta["name"], patch)
        self.observe("MODIFIED", result)
        if new.get("phase") and new["phase"] != status.get("phase"):
            kind = "Warning" if new["phase"] == "Failed" else "Normal"
            await self.rt.post_event(result, kind, new["phase"], obs.message)


    async def _pods_and_log(
        self, key: Key, namespace: str, job: str, child: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], LogReading | None]:
        """The job's pods (when worth listing) and what rank 0's log tail says.

        While the child is Running and rank 0's pod is known, the LIST is skipped:
        a steady running job costs two reads per interval (child + log).  Any other
        state, or a rank-0 pod that vanished (restart), lists the pods again.
        """
        config = self.rt.config
        pushed = self._pushed(key)
        if pushed is not None and child_state(child) == "Running":
            return [], pushed  # rank 0 pushes (intake): no LIST, no log read
        pods: list[dict[str, Any]] = []
        known = self.rank0.get(key)
        if known is None or child_state(child) != "Running":
            pods = await self.rt.kube.list("v1", "pods", namespace, f"{LABEL_JOB_NAME}={job}")
            rank0 = rank0_pod(pods)
            known = None
            if rank0 is not None and (rank0.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
                containers = (rank0.get("spec") or {}).get("containers") or [{}]
                known = (rank0["metadata"]["name"], containers[0].get("name"))
                self.rank0[key] = known
        if pushed is not None:
            return pods, pushed
        if known is None:
            return pods, None
        try:
            text = await self.rt.kube.pod_log(namespace, known[0], known[1], config.log_tail_lines, config.log_limit_bytes)
        except ApiError as exc:
            if exc.status in (400, 404):  # pod replaced or not started yet: look again next interval
                self.rank0.pop(key, None)
                return pods, None
            raise
        return pods, read_log(text)

    def _pushed(self, key: Key) -> LogReading | None:
        """The trainer's pushed report, when one came recently enough to trust it over the log."""
        latest = self.rt.board.latest(*key)
        if latest is None or time.time() - latest[1] > self.rt.config.progress_fresh_s:
            return None
        return latest[0]


def _due(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("job")) and status.get("phase") not in TERMINAL_PHASES and bool(obj["metadata"].get("resourceVersion"))


def desired_status(
    status: Mapping[str, Any], obs: Observation, reading: LogReading | None, generation: int | None, now: str
) -> dict[str, Any]:
    """The status fields that must change (empty when nothing does)."""
    out: dict[str, Any] = {}
    conditions = phase_conditions(status.get("conditions"), obs, generation, now)
    if _strip_times(conditions) != _strip_times(status.get("conditions") or []):
        out["conditions"] = conditions
    if obs.phase != status.get("phase"):
        out["phase"] = obs.phase
    if obs.message != status.get("message"):
        out["message"] = obs.message
    if obs.phase in ("Running", "Exporting") and not status.get("startTime"):
        out["startTime"] = now
    if obs.phase in TERMINAL_PHASES and not status.get("completionTime"):
        out["completionTime"] = now
    if reading is not None and reading.progress is not None:
        old = dict(status.get("progress") or {})
        if reading.progress != old:
            # merge patch: keys the trainer stopped sending (loss on the last line) must be cleared
            out["progress"] = {**{k: None for k in old if k not in reading.progress}, **reading.progress}
    return out


def _strip_times(conditions: list[Any]) -> list[Any]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]
