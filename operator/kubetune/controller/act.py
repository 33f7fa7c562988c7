"""Act: the one executor of a ``Decision`` — children, then status, then Events.

1. Server-side apply of each child (field manager ``kubetune``, ``force=true``) in the decision's
   order (the deletions come after the status, step 2).  A permanent refusal is remembered for this generation (with how
   many times in a row it was refused) and the key is reconciled again after ``report_after_s``
   (never at once), so ``decide`` reports it on the FineTuneJob and retries with backoff
   (snapshot.ApplyFailure.retry_at); the children after the refused one are not sent.  Permanent:
   a 4xx other than 401/403, and a 403 that an admission webhook answered (``admission webhook
   "<name>" denied the request: ...``, or a ValidatingAdmissionPolicy's ``... denied request: ...``; controller-runtime
   denies with 403 Forbidden, pkg/webhook/admission/response.go:35-37,63-83 and validator_custom.go:143-150 @ v0.24.1,
   and the API server prefixes the webhook's name, k8s.io/apiserver pkg/admission/plugin/webhook/errors/ statuserror.go
   ToStatusErr, read through the code search index, release not pinned).  A 403 from RBAC and transient errors go back
   to the work queue's backoff.
2. One merge patch of ``/status`` carrying ``metadata.resourceVersion``: if anyone wrote the
   FineTuneJob since the snapshot, the API server answers 409 and the key is reconciled again
   from the newer object instead of overwriting it.  Nothing is sent when nothing changed.
3. Events, only once the status that announces them is stored, through ``EventRecorder``.
"""

from __future__ import annotations

import collections
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.contract import API_VERSION, KIND, PLURAL
from kubetune.cluster.backends import BACKENDS
from kubetune.cluster.serving import served_kinds

from .cache import Caches
from .decide import Decision, EventSpec
from .kube import ApiError, Kube
from .metrics import Metrics
from .snapshot import ApplyFailure, Memory, Snapshot
from .conditions import merge_diff, now_rfc3339

log = logging.getLogger(__name__)

PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    **{(b.api_version, b.kind): b.plural for b in BACKENDS.values()},  # the children kinds (cluster/backends)
    # spec.serve, after the job Succeeded: every kind a serving engine writes (cluster/serving)
    **{key: k.plural for key, k in served_kinds().items()},
}


ADMISSION_DENIED = re.compile(
    r'admission webhook "[^"]*" denied the request|'
    r'ValidatingAdmissionPolicy \'[^\']*\'( with binding \'[^\']*\')? denied request'
)
"""The API server's wording for a validating or mutating webhook's refusal (statuserror.go ToStatusErr)
and for a ValidatingAdmissionPolicy's (403 Forbidden unless the policy names another reason:
k8s.io/apiserver pkg/admission/plugin/policy/validating/dispatcher.go, ``ValidatingAdmissionPolicy '%s'
with binding '%s' denied request: %s`` through admission.NewForbidden; read through the code search
index, release not pinned)."""


def admission_denied(exc: ApiError) -> bool:
    """Whether a 403 (or any error) is an admission webhook's or policy's denial, not RBAC's "User ... cannot ..."."""
    return ADMISSION_DENIED.search(exc.message) is not None


def plural_of(api_version: str, kind: str) -> str:
    try:
        return PLURALS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"kubetune does not manage {kind} {api_version}") from None


@dataclass
class EventRecorder:
    """Events on FineTuneJobs, deduplicated and aggregated like client-go's event correlator
    (k8s.io/client-go/tools/record/events_cache.go):

    * an identical Event (same object, type, reason, message) seen again is not posted twice:
      the existing Event is patched with ``count + 1`` and a new ``lastTimestamp`` (EventLogger);
    * from the ``max_similar``-th different message of one object, type and reason on, while each
      comes within ``interval_s`` of the one before, they become one Event whose message starts with
      ``(combined from similar events): `` and is counted (EventAggregator, events_cache.go:238-289
      @ v0.36.3: the window restarts only after ``interval_s`` without a similar Event, :256-265, and
      at most ``max_similar`` messages are remembered per key, :268-273).
    """

    kube: Kube
    metrics: Metrics
    component: str = "kubetune-operator"
    max_similar: int = 10
    interval_s: float = 600.0
    cache_size: int = 4096
    _seen: collections.OrderedDict[tuple[str, ...], tuple[str, int, str]] = field(
        default_factory=collections.OrderedDict
    )
    _similar: collections.OrderedDict[tuple[str, ...], tuple[float, set[str]]] = field(
        default_factory=collections.OrderedDict
    )
    """Per (object, type, reason): when the last similar Event came and the messages seen since. A least-recently
    used cache of ``cache_size`` entries, as client-go's EventAggregator keeps (lru.New(maxLruCacheEntries),
    maxLruCacheEntries = 4096: tools/record/events_cache.go:36,213,249-266 @ v0.36.3); an expired window is
    replaced when its key comes again. (It was pruned by rebuilding the whole dict on every Event once
    more than cache_size objects had Events: a scan per Event, quadratic in the number of jobs.)"""

    async def record(self, obj: Mapping[str, Any], spec: EventSpec, now: float | None = None) -> None:
        now = time.time() if now is None else now
        meta = obj.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        message = spec.message[:1024]
        similar = (namespace, uid, spec.type, spec.reason)
        last, messages = self._similar.get(similar, (now, set()))
        if now - last > self.interval_s:  # measured from the last similar Event (events_cache.go:256-262)
            messages = set()
        messages.add(message)
        self._similar[similar] = (now, messages)  # record.lastTimestamp = now (:265)
        self._similar.move_to_end(similar)
        while len(self._similar) > self.cache_size:
            self._similar.popitem(last=False)
        key: tuple[str, ...] = (*similar, message)
        if len(messages) >= self.max_similar:  # "< maxEvents" is posted as is (:268-270)
            messages.pop()  # "do not grow our local key set any larger than max" (:272-273)
            message = f"(combined from similar events): {message}"[:1024]
            key = (*similar, "(combined)")
        ts = now_rfc3339(now)
        try:
            previous = self._seen.get(key)
            if previous is not None:
                event_name, count, _ = previous
                try:
                    await self.kube.request(
                        "patch",
                        "PATCH",
                        f"/api/v1/namespaces/{namespace}/events/{event_name}",
                        body={"count": count + 1, "lastTimestamp": ts, "message": message},
                        content_type="application/merge-patch+json",
                    )
                    self._remember(key, (event_name, count + 1, ts))
                    self.metrics.events.labels(spec.reason).inc()
                    return
                except ApiError as exc:
                    if exc.status != 404:  # 404: the Event expired (1 h TTL): post a new one
                        raise
            event_name = f"{name}.{uuid.uuid4().hex[:16]}"
            await self.kube.create(
                "v1",
                "events",
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": event_name, "namespace": namespace},
                    "involvedObject": {
                        "apiVersion": str(obj.get("apiVersion") or API_VERSION),
                        "kind": str(obj.get("kind") or KIND),
                        "name": name,
                        "namespace": namespace,
                        "uid": uid,
                    },
                    "type": spec.type,
                    "reason": spec.reason,
                    "message": message,
                    "source": {"component": self.component},
                    "reportingComponent": "kubetune.io/operator",
                    "reportingInstance": self.component,
                    "firstTimestamp": ts,
                    "lastTimestamp": ts,
                    "count": 1,
                },
            )
            self._remember(key, (event_name, 1, ts))
            self.metrics.events.labels(spec.reason).inc()
        except ApiError as exc:  # an Event is never worth failing a reconcile for
            log.warning("could not post Event %s on %s/%s: %s", spec.reason, namespace, name, exc)

    def _remember(self, key: tuple[str, ...], value: tuple[str, int, str]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)


def _previous_owner(caches: Caches, api_version: str, kind: str, obj: Mapping[str, Any], uid: str | None) -> str | None:
    """The uid of the FineTuneJob that controls the cached child ``obj`` would overwrite, when that is not
    ``uid`` (the job being reconciled); None when there is no such child, or it is this job's or nobody's."""
    if not uid:
        return None
    plural = plural_of(api_version, kind)
    informer = caches.children.get(plural) or caches.serving.get(plural)
    meta = obj.get("metadata") or {}
    existing = (
        informer.get(str(meta.get("namespace") or ""), str(meta.get("name") or "")) if informer is not None else None
    )
    for ref in ((existing or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND and ref.get("uid") and ref.get("uid") != uid:
            return str(ref["uid"])
    return None


@dataclass
class Executor:
    kube: Kube
    caches: Caches
    memory: Memory
    recorder: EventRecorder
    conflict_retry_s: float = 0.5
    report_after_s: float = 1.0
    """After a refused apply: when ``decide`` looks again to report it (never 0: no hot loop)."""

    async def act(self, snap: Snapshot, decision: Decision, now: float | None = None) -> float | None:
        """Apply ``decision``; returns when to reconcile the key again (None: only on a change).
        Transient API errors are raised for the work queue's backoff."""
        key = (snap.namespace, snap.name)
        uid = (snap.obj.get("metadata") or {}).get("uid")
        for obj in decision.children:
            api_version, kind = obj["apiVersion"], obj["kind"]
            previous = _previous_owner(self.caches, api_version, kind, obj, uid)
            if previous is not None:
                # A job deleted and created again under the same name: its predecessor's child (same name)
                # is still there until the garbage collector removes it -- background propagation, the
                # default for custom resources (k8s.io/apiserver/pkg/registry/generic/registry/store.go:886-980
                # @ v0.36.3), deletes dependents after the owner is gone.  Applying now would adopt it:
                # ownerReferences is a map keyed by uid for server-side apply (listType=map, listMapKey=uid:
                # k8s.io/apimachinery/pkg/apis/meta/v1/types.go:257-261 @ v0.36.3) and the predecessor's
                # entry was applied by this same field manager, so it is dropped, and the old run -- still
                # training with the old spec -- becomes the new job's.  Wait for the collector instead.
                log.info(
                    "%s/%s: %s %s still belongs to a previous FineTuneJob of this name (uid "
                    "%s); waiting for its deletion",
                    *key,
                    kind,
                    obj["metadata"]["name"],
                    previous,
                )
                return self.report_after_s
            try:
                result = await self.kube.apply(api_version, plural_of(api_version, kind), obj)
            except ApiError as exc:
                if exc.transient or (exc.status in (401, 403) and not admission_denied(exc)):
                    raise
                before = self.memory.apply_failures.get(key)
                attempts = before.attempts + 1 if before is not None and before.generation == snap.generation else 1
                self.memory.apply_failures[key] = ApplyFailure(
                    snap.generation,
                    exc.status,
                    exc.reason,
                    exc.message,
                    attempts=attempts,
                    at=time.time() if now is None else now,
                )
                return self.report_after_s if exc.status != 404 else None
            plural = plural_of(api_version, kind)
            informer = self.caches.children.get(plural) or self.caches.serving.get(plural)
            if informer is not None and result:
                informer.put(result)
        cleared = None
        if decision.children or decision.deletions:
            cleared = self.memory.apply_failures.pop(key, None)
            for event in decision.events:
                if event.with_children:
                    await self.recorder.record(snap.obj, event)
        patch = merge_diff(snap.status, decision.status)
        stored: Mapping[str, Any] = snap.obj
        if patch:
            body = {"metadata": {"resourceVersion": snap.resource_version}, "status": patch}
            try:
                stored = await self.kube.patch_status(API_VERSION, PLURAL, snap.namespace, snap.name, body)
            except ApiError as exc:
                if exc.status == 409:  # someone wrote first: decide again from the newer object
                    return self.conflict_retry_s
                if exc.status == 404:  # deleted meanwhile: forgotten here, as kopf may never say so
                    # (after a 410 Gone kopf relists without a DELETED for what went meanwhile,
                    # kopf/_cogs/clients/watching.py:157-210 @ 1.45.2)
                    self.caches.drop_job(snap.namespace, snap.name)
                    self.memory.forget(key)
                    return None
                raise
            self.caches.store_job(stored)
        # Deletions only once the status saying why is stored: deleted before a status patch that
        # lost a race (409), the job would be decided again with the child's pods, and what they
        # showed (the failures past backoffLimit), gone.
        for obj in decision.deletions:
            api_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
            await self.kube.delete(api_version, plural_of(api_version, kind), str(meta["namespace"]), str(meta["name"]))
        for event in decision.events:
            if not event.with_children:
                await self.recorder.record(stored, event)
        if cleared is not None:  # a refused apply went through: decide again to clear its report
            return (
                min(decision.requeue_after, self.report_after_s)
                if decision.requeue_after is not None
                else self.report_after_s
            )
        return decision.requeue_after
