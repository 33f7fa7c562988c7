"""Watch caches (informers): the children, the training pods, the serving objects and the
PersistentVolumeClaims (prerequisites), kept current by LIST + WATCH.

Each ``Informer`` lists its resource once, then watches from the list's resourceVersion and
keeps a local copy of every object; a watch that ends is resumed from the last seen
resourceVersion (bookmarks keep it fresh), and a 410 Gone relists, as client-go's reflector
does (k8s.io/client-go/tools/cache/reflector.go).  A resource the cluster does not serve (404 on
the LIST: Kubeflow's CRD is not installed) marks the informer ``served = False`` and is tried
again every ``recheck_s``; when it appears, every job waiting for it is reconciled.

Nothing here decides anything: each event only asks for a reconcile of the FineTuneJob the
object belongs to (``on_change``).  A job whose children and pods do not change costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.contract import LABEL_MANAGED_BY
from kubetune.cluster.backends import BACKENDS
from kubetune.cluster.serving import served_kinds

from .kube import ApiError, Kube
from .conditions import EVICTED, LABEL_JOB_NAME, eviction_reason

log = logging.getLogger(__name__)

ObjKey = tuple[str, str]  # namespace, name


SERVING_KINDS: dict[str, tuple[str, str]] = {
    k.kind: (k.api_version, k.plural) for k in served_kinds().values() if k.watched
}
"""spec.serve's objects the operator watches (readiness, URL, deletion); kind -> (apiVersion, plural).
Each serving engine says which of its kinds are watched (cluster/serving: ``ServedKind.watched``)."""
SERVING_SELECTOR = "app.kubernetes.io/component=serving,app.kubernetes.io/managed-by=kubetune"
"""Only serving objects kubetune rendered (kubetune.render.serving labels them so)."""


def trim_serving(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator reads of a serving object: identity, generation, replicas and status."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "generation", "resourceVersion", "ownerReferences")
            if k in meta
        },
        **({"spec": {"replicas": spec["replicas"]}} if "replicas" in spec else {}),
        "status": dict(obj.get("status") or {}),
    }


def _key(obj: Mapping[str, Any]) -> ObjKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator reads of a pod (status, names, labels): a pod cache stays small."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return {
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "labels", "creationTimestamp", "resourceVersion", "deletionTimestamp")
            if k in meta
        },
        "spec": {
            "containers": [{"name": c.get("name")} for c in spec.get("containers") or []],
            **({"nodeName": spec["nodeName"]} if "nodeName" in spec else {}),
        },
        "status": dict(pod.get("status") or {}),
    }


def trim_claim(pvc: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator reads of a PersistentVolumeClaim (a prerequisite): that it exists, and its phase."""
    meta = pvc.get("metadata") or {}
    phase = (pvc.get("status") or {}).get("phase")
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
        "status": {"phase": phase} if phase else {},
    }


@dataclass(frozen=True)
class Termination:
    """A training pod seen terminated (phase Failed) with an exit code: evidence for retry counting."""

    pod: str
    uid: str
    exit_code: int
    reason: str
    seen_at: float = 0.0
    """When this operator first saw the pod terminated (time.time()): the Restarting status waits
    briefly for this evidence (decide.py), since pod and child events come on separate watches."""


@dataclass
class Informer:
    kube: Kube
    api_version: str
    plural: str
    namespaces: tuple[str, ...]
    """Empty: one cluster-wide LIST/WATCH; else one per namespace."""
    on_event: Callable[[str, dict[str, Any]], None]
    label_selector: str | None = None
    transform: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    recheck_s: float = 60.0
    page_size: int = 500
    """Items per LIST page (``_list``)."""
    objects: dict[ObjKey, dict[str, Any]] = field(default_factory=dict)
    served: bool | None = None
    """None until the first LIST answers; False while the cluster does not serve the resource."""
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    on_served: Callable[[], None] | None = None
    tolerate_forbidden: bool = False
    """A 403 on the LIST (RBAC without list/watch) counts as synced, with ``forbidden`` saying why, and is
    tried again every ``recheck_s``: the controller starts, and what this informer answers is "unknown"."""
    forbidden: dict[str | None, str] = field(default_factory=dict)
    """Per LIST scope (a watched namespace, or None: cluster-wide), why it may not be listed.  Per scope:
    in namespaced mode each namespace has its own Role (charts/kubetune/templates/rbac.yaml), so one
    namespace may be refused while another answers; a single flag let the last scope to answer decide
    for all (a refused namespace's claims reported "not found", or a listed one's "could not be checked")."""

    answered: set[str | None] = field(default_factory=set)
    """The LIST scopes that answered at least once (listed, refused with 403, or not served). ``synced``
    is set only once every scope answered: in namespaced mode the workers (which wait on ``synced``,
    ``Caches.wait_synced``) must not read a namespace that was not listed yet as empty, as a client-go
    WaitForCacheSync waits on every informer's first full LIST (tools/cache/shared_informer.go:416-428,
    delta_fifo.go:369-371 @ v0.36.3)."""

    def forbidden_in(self, namespace: str) -> str | None:
        """Why ``namespace``'s objects could not be listed (None: they were, or are being)."""
        return self.forbidden.get(namespace) or self.forbidden.get(None)

    def listed(self, namespace: str) -> bool:
        """Whether ``namespace``'s objects have been listed (its LIST scope answered)."""
        return namespace in self.answered or None in self.answered

    def _answered(self, namespace: str | None) -> None:
        self.answered.add(namespace)
        if len(self.answered) >= len(self.namespaces or (None,)):
            self.synced.set()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def put(self, obj: Mapping[str, Any]) -> None:
        """Write-through after our own write (server-side apply), so the next snapshot sees it."""
        key = _key(obj)
        old = self.objects.get(key)
        if old is None or _rv(obj) >= _rv(old):
            self.objects[key] = self.transform(obj)

    async def run(self) -> None:
        scopes: tuple[str | None, ...] = self.namespaces or (None,)
        await asyncio.gather(*(self._run_scope(ns) for ns in scopes))

    async def _run_scope(self, namespace: str | None) -> None:
        backoff = 1.0
        while True:
            try:
                fresh, rv = await self._list(namespace)
            except ApiError as exc:
                if exc.status == 403 and self.tolerate_forbidden:
                    if namespace not in self.forbidden:
                        log.warning(
                            "may not list %s %s (%s): rechecking every %.0f s",
                            self.plural,
                            self.api_version,
                            exc,
                            self.recheck_s,
                        )
                    self.forbidden[namespace] = str(exc)
                    self._answered(namespace)
                    await asyncio.sleep(self.recheck_s)
                elif exc.status == 404:  # the CRD is not installed (yet)
                    if self.served is not False:
                        log.info(
                            "the cluster does not serve %s %s: rechecking every %.0f s",
                            self.plural,
                            self.api_version,
                            self.recheck_s,
                        )
                    self.served = False
                    self._answered(namespace)
                    await asyncio.sleep(self.recheck_s)
                else:
                    log.warning("LIST %s failed: %s", self.plural, exc)
                    await asyncio.sleep(min(backoff, 30.0))
                    backoff *= 2
                continue
            was_missing = self.served is False
            self.served = True
            self.forbidden.pop(namespace, None)
            self._replace(namespace, fresh)
            self._answered(namespace)
            if was_missing and self.on_served is not None:
                self.on_served()
            backoff = 1.0
            await self._watch_from(namespace, rv)

    async def _list(self, namespace: str | None) -> tuple[dict[ObjKey, dict[str, Any]], str]:
        """The scope's objects, transformed, and the list's resourceVersion: LISTed in pages of
        ``page_size``, each page transformed before the next is asked for, so no more than one page of
        whole objects is held (a cluster-wide PVC LIST of 50,000 claims unpaginated is ~330 MB parsed).
        As client-go's reflector (tools/cache/reflector.go:693-719, pager.go:31 defaultPageSize = 500
        @ v0.36.3), the resourceVersion is the first page's, and a continue token that expired (410)
        is followed by one full LIST (pager.go:110-121)."""
        fresh: dict[ObjKey, dict[str, Any]] = {}
        rv, token, limit = "", "", self.page_size
        while True:
            try:
                items, page_rv, token = await self.kube.list_chunk(
                    self.api_version, self.plural, namespace, self.label_selector, limit, token or None
                )
            except ApiError as exc:
                if exc.status != 410 or not token:
                    raise
                fresh, rv, token, limit = {}, "", "", 0
                continue
            rv = rv or page_rv
            for obj in items:
                fresh[_key(obj)] = self.transform(obj)
            del items
            if not token:
                return fresh, rv

    def _replace(self, namespace: str | None, fresh: dict[ObjKey, dict[str, Any]]) -> None:
        """A relist: objects that vanished while we did not watch are DELETED, the rest ADDED/MODIFIED."""
        for key, old in list(self.objects.items()):
            if (namespace is None or key[0] == namespace) and key not in fresh:
                del self.objects[key]
                self.on_event("DELETED", old)
        for key, obj in fresh.items():
            before = self.objects.get(key)
            self.objects[key] = obj
            if before is None or before != obj:
                self.on_event("ADDED" if before is None else "MODIFIED", obj)

    async def _watch_from(self, namespace: str | None, rv: str) -> None:
        backoff = 1.0
        while True:
            try:
                async for event in self.kube.watch(
                    self.api_version,
                    self.plural,
                    namespace,
                    rv,
                    self.label_selector,
                    timeout_s=random.randint(300, 600),
                ):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # history compacted: relist
                            return
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind == "BOOKMARK":
                        continue
                    key = _key(obj)
                    if kind == "DELETED":
                        self.objects.pop(key, None)
                        self.on_event("DELETED", self.transform(obj))
                    else:
                        self.objects[key] = self.transform(obj)
                        self.on_event(str(kind), self.objects[key])
                backoff = 1.0
            except ApiError as exc:
                if exc.status == 410:
                    return
                if exc.status == 404:
                    self.served = False
                    return
                log.debug("WATCH %s ended: %s; resuming from %s", self.plural, exc, rv)
                await asyncio.sleep(min(backoff, 30.0))
                backoff *= 2


def _reindex(
    forward: dict[ObjKey, frozenset[str]], reverse: dict[ObjKey, set[str]], key: ObjKey, names: frozenset[str]
) -> None:
    """Keep ``forward`` (job -> names it refers to) and ``reverse`` ((namespace, name) -> jobs) in step."""
    before = forward.get(key, frozenset())
    if names == before:
        return
    for name in before - names:
        waiting = reverse.get((key[0], name))
        if waiting is not None:
            waiting.discard(key[1])
            if not waiting:
                del reverse[(key[0], name)]
    for name in names - before:
        reverse.setdefault((key[0], name), set()).add(key[1])
    if names:
        forward[key] = names
    else:
        forward.pop(key, None)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def keep_newest(store: dict[ObjKey, dict[str, Any]], obj: Mapping[str, Any]) -> bool:
    """Keep ``obj`` in ``store`` under its namespace and name unless the copy there is newer (a higher
    resourceVersion: a watch event can arrive after our own write's answer); whether it was kept."""
    key = _key(obj)
    old = store.get(key)
    if old is not None and _rv(obj) < _rv(old):
        return False
    store[key] = dict(obj)
    return True


@dataclass
class Caches:
    """Every informer the controller reads, and the per-job evidence collected from their events."""

    kube: Kube
    namespaces: tuple[str, ...]
    enqueue: Callable[[str, str], None]
    recheck_s: float = 60.0
    jobs: dict[ObjKey, dict[str, Any]] = field(default_factory=dict)
    """FineTuneJobs, fed by kopf's watch (``handlers.index``)."""
    terminations: dict[ObjKey, dict[str, Termination]] = field(default_factory=dict)
    """Per job (namespace, child name): terminated training pods seen in the pod stream, by uid."""
    children: dict[str, Informer] = field(default_factory=dict)
    pods: Informer | None = None
    pod_index: dict[ObjKey, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Training pods by (namespace, job-name label), kept from the pod informer's events."""
    serving: dict[str, Informer] = field(default_factory=dict)
    """spec.serve's objects by plural (SERVING_KINDS); a kind the cluster does not serve (KServe or
    KAITO not installed) is rechecked like a child's, and every job is reconciled when it appears."""

    other_pods: dict[str, Informer] = field(default_factory=dict)
    """Pods of backends whose pods carry another job-name label (TrainJob: JobSet's), by that label."""
    claims: Informer | None = None
    """Every PersistentVolumeClaim in the watched namespaces, trimmed (``trim_claim``): the prerequisites
    the specs name are read here, not with a GET per job, and a claim created later wakes its jobs."""
    _sources: dict[ObjKey, frozenset[str]] = field(default_factory=dict)
    """Per job: the names of the jobs it builds on (spec.model.fromJob, spec.training.ppo.rewardModel.fromJob)."""
    _dependents: dict[ObjKey, set[str]] = field(default_factory=dict)
    """The reverse: per (namespace, source job name), the jobs that name it."""
    _claims_of: dict[ObjKey, frozenset[str]] = field(default_factory=dict)
    """Per job: the PersistentVolumeClaims its spec.storage names."""
    _claimants: dict[ObjKey, set[str]] = field(default_factory=dict)
    """The reverse: per (namespace, claim name), the jobs that name it."""

    def __post_init__(self) -> None:
        for backend in BACKENDS.values():  # one informer per child kind (cluster/backends registry)
            self.children[backend.plural] = Informer(
                self.kube,
                backend.api_version,
                backend.plural,
                self.namespaces,
                self._child_event,
                recheck_s=self.recheck_s,
                on_served=self._enqueue_all,
            )
        # Only Kubeflow training pods (they carry the job-name label), trimmed to what we read.
        self.pods = Informer(
            self.kube, "v1", "pods", self.namespaces, self._pod_event, label_selector=LABEL_JOB_NAME, transform=trim_pod
        )
        for label in dict.fromkeys(b.pod_job_label for b in BACKENDS.values()):
            if label != LABEL_JOB_NAME:  # e.g. every JobSet's pods: only ours (our labels are on the pod template)
                self.other_pods[label] = Informer(
                    self.kube,
                    "v1",
                    "pods",
                    self.namespaces,
                    self._pod_event_for(label),
                    label_selector=f"{label},{LABEL_MANAGED_BY}=kubetune",
                    transform=trim_pod,
                )

        self.claims = Informer(
            self.kube,
            "v1",
            "persistentvolumeclaims",
            self.namespaces,
            self._claim_event,
            transform=trim_claim,
            recheck_s=self.recheck_s,
            tolerate_forbidden=True,
        )
        for api_version, plural in SERVING_KINDS.values():
            self.serving[plural] = Informer(
                self.kube,
                api_version,
                plural,
                self.namespaces,
                self._child_event,
                label_selector=SERVING_SELECTOR,
                transform=trim_serving,
                recheck_s=self.recheck_s,
                on_served=self._enqueue_all,
            )

    def informers(self) -> list[Informer]:
        assert self.pods is not None and self.claims is not None
        return [*self.children.values(), self.pods, *self.other_pods.values(), self.claims, *self.serving.values()]

    async def run(self) -> None:
        await asyncio.gather(*(i.run() for i in self.informers()))

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers()))

    def store_job(self, obj: Mapping[str, Any]) -> bool:
        """Keep the newest copy of a FineTuneJob (kopf's watch, or our own status patch's answer)."""
        if not keep_newest(self.jobs, obj):
            return False
        self._index(_key(obj), obj)
        return True

    def drop_job(self, namespace: str, name: str) -> None:
        self.jobs.pop((namespace, name), None)
        self.terminations.pop((namespace, name), None)
        self._index((namespace, name), None)

    def dependents(self, namespace: str, name: str) -> list[ObjKey]:
        """Jobs of ``namespace`` not started yet (no status.job) that build on job ``name`` (fromJob).

        From an index kept by ``store_job``/``drop_job``: the cost does not grow with the number of
        jobs (a scan of every job on every FineTuneJob event made the controller quadratic)."""
        found = []
        for other in sorted(self._dependents.get((namespace, name), ())):
            obj = self.jobs.get((namespace, other))
            if obj is not None and not (obj.get("status") or {}).get("job"):
                found.append((namespace, other))
        return found

    def _index(self, key: ObjKey, obj: Mapping[str, Any] | None) -> None:
        # The object is not validated yet (a hostile or stale spec reaches here before decide refuses
        # it): every level may be any JSON value.
        spec = _mapping((obj or {}).get("spec"))
        ppo = _mapping(_mapping(spec.get("training")).get("ppo"))
        storage = _mapping(spec.get("storage"))
        refs = (_mapping(spec.get("model")).get("fromJob"), _mapping(ppo.get("rewardModel")).get("fromJob"))
        sources = {r for r in refs if isinstance(r, str) and r}
        claims = {
            v["claimName"]
            for v in (storage.get(k) for k in ("outputs", "datasets", "models"))
            if isinstance(v, dict) and isinstance(v.get("claimName"), str) and v["claimName"]
        }
        _reindex(self._sources, self._dependents, key, frozenset(sources))
        _reindex(self._claims_of, self._claimants, key, frozenset(claims))

    def _claim_event(self, _type: str, obj: dict[str, Any]) -> None:
        """A claim appeared, changed phase or went away: the jobs that name it look again (prerequisites)."""
        namespace, name = _key(obj)
        for job in sorted(self._claimants.get((namespace, name), ())):
            self.enqueue(namespace, job)

    def _enqueue_all(self) -> None:
        for namespace, name in list(self.jobs):
            self.enqueue(namespace, name)

    def _owner(self, obj: Mapping[str, Any]) -> str | None:
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") == "FineTuneJob" and ref.get("controller"):
                return str(ref.get("name"))
        return None

    def _child_event(self, _type: str, obj: dict[str, Any]) -> None:
        owner = self._owner(obj)
        if owner is not None:
            self.enqueue(str(obj["metadata"].get("namespace")), owner)

    def _pod_event_for(self, label: str) -> Callable[[str, dict[str, Any]], None]:
        return lambda type_, pod: self._pod_event(type_, pod, label)

    def _pod_event(self, _type: str, pod: dict[str, Any], label: str = LABEL_JOB_NAME) -> None:
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        job = str((meta.get("labels") or {}).get(label) or "")
        pods = self.pod_index.setdefault((namespace, job), {})
        if _type == "DELETED":
            pods.pop(str(meta.get("name")), None)
            if not pods:
                del self.pod_index[(namespace, job)]
        else:
            pods[str(meta.get("name"))] = pod
        if (namespace, job) not in self.jobs:  # a Kubeflow job that is not ours (children share the FineTuneJob's name)
            return
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            for cs in status.get("containerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated")
                if terminated and terminated.get("exitCode") is not None:
                    uid = str(meta.get("uid"))
                    seen = self.terminations.setdefault((namespace, job), {})
                    first = seen[uid].seen_at if uid in seen else time.time()
                    reason = (
                        eviction_reason(status)
                        if status.get("reason") == EVICTED
                        else str(terminated.get("reason") or "")
                    )
                    seen[uid] = Termination(str(meta.get("name")), uid, int(terminated["exitCode"]), reason, first)
                    break
        self.enqueue(namespace, job)

    def pods_of(self, namespace: str, job: str, label: str = LABEL_JOB_NAME) -> list[dict[str, Any]]:
        """Training pods of child ``job`` whose job-name label is ``label`` (the backend's ``pod_job_label``)."""
        return [
            p
            for p in (self.pod_index.get((namespace, job)) or {}).values()
            if ((p.get("metadata") or {}).get("labels") or {}).get(label) == job
        ]
