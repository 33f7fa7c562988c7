"""Observe: one typed, immutable snapshot of everything one FineTuneJob's decision depends on.

Built from the watch caches (the FineTuneJob from kopf's watch, the child and the training pods
from ``cache``), the last progress report (the push ``ProgressBoard`` when the trainer posts, else
a rank-0 log tail read at a low rate), the prerequisites' presence (PVCs from their informer; the
Kueue LocalQueue by a GET remembered, and repeated with backoff only while it is missing), and what the executor
learnt last time (a child the API server refused).  The only API calls of a reconcile that are
not writes happen here; ``decide`` makes none.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune.api import FineTuneJob, FineTuneJobSpec
from kubetune.api.contract import SPEC_FILE
from kubetune.render import Problem, RenderOptions, validate_object
from kubetune.cluster.backends import ChildStatus, WorkloadBackend, backend_for_kind, get_backend
from kubetune.render.pipeline import CONFIG_MAP_SUFFIX
from kubetune.render.serving import render_serving

from .cache import SERVING_KINDS, Caches, Informer, Termination
from .discovery import Choice, Discovery, wants_auto
from .kube import ApiError, Kube, path
from .progress import LogReading, read_log

log = logging.getLogger(__name__)

Key = tuple[str, str]

LOCALQUEUE_API = "kueue.x-k8s.io/v1beta1"


class Board(Protocol):
    """The push progress transport (``intake.ProgressBoard``): the trainer's newest report."""

    def latest(self, namespace: str, name: str) -> tuple[LogReading, float] | None: ...


@dataclass(frozen=True)
class Prerequisite:
    kind: str
    """PersistentVolumeClaim or LocalQueue."""
    name: str
    found: bool | None
    """None: could not be checked (no permission, server error)."""
    detail: str = ""
    """Why it is not usable, when found is False (not found, not bound, Kueue not installed)."""


RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True)
class ApplyFailure:
    """A permanent refusal of a child by the API server, remembered for the generation it hit."""

    generation: int | None
    status: int
    reason: str
    message: str
    attempts: int = 1
    """How many applies of this generation were refused in a row."""
    at: float = 0.0
    """When the last one was refused (epoch seconds)."""

    @property
    def retry_at(self) -> float:
        """When a refused re-apply of a running job's children is tried again: 5 s after the first
        refusal, doubling up to 5 minutes (a refusal may be a webhook's passing state; never at once)."""
        return self.at + min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (self.attempts - 1))


@dataclass(frozen=True)
class Snapshot:
    """Everything ``decide`` reads. Frozen; the mappings are private deep copies."""

    namespace: str
    name: str
    obj: Mapping[str, Any]
    generation: int | None
    resource_version: str
    status: Mapping[str, Any]
    job: FineTuneJob | None
    problems: tuple[Problem, ...]
    render_options: RenderOptions
    child_kind: str
    """The child's kind (status.job.kind once created, else the spec's backend's)."""
    child: Mapping[str, Any] | None
    child_kind_served: bool | None
    pods: tuple[Mapping[str, Any], ...] = ()
    applied_spec: FineTuneJobSpec | None = None
    """The spec the running children were rendered from (the ConfigMap), read only when needed."""
    progress: LogReading | None = None
    progress_at: float | None = None
    progress_error: str | None = None
    prerequisites: tuple[Prerequisite, ...] = ()
    terminations: tuple[Termination, ...] = ()
    apply_failure: ApplyFailure | None = None
    first_seen: bool = False
    """First reconcile of this job in this process (re-apply children, as a resume)."""
    controller_grace_s: float = 120.0
    next_log_read: float | None = None
    """When observe will read the log tail again (the decision's requeue hint)."""
    next_prereq_check: float | None = None
    """When a missing prerequisite will be checked again."""
    gpu_memory_by_product: Mapping[str, str] = field(default_factory=dict)
    """The Helm value gpuMemoryByProduct (nvidia.com/gpu.product -> quantity), for the Feasible check."""
    sources: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """FineTuneJobs this one builds on (spec.model.fromJob, spec.training.ppo.rewardModel.fromJob),
    by name, as the watch last saw them (None: not in the namespace)."""
    serving: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """spec.serve's watched objects of a Succeeded job, by kind (None: not in the cache)."""
    serving_served: Mapping[str, bool | None] = field(default_factory=dict)
    """Whether the cluster serves each of those kinds (False: KServe/KAITO not installed)."""
    backend_choice: Choice | None = None
    """With spec.distributed.backend auto and no child yet: what API discovery chose, and why
    (render_options.backend carries it)."""
    runtime_missing: bool = False
    """With spec.distributed.backend trainjob and no child yet: kubetune's ClusterTrainingRuntime is
    missing, so Trainer's webhook would refuse the TrainJob (pkg/runtime/core/clustertrainingruntime.go:99-108
    @ kubeflow/trainer v2.3.0); checked as ``auto`` checks it."""
    runtime_recheck_s: float = 60.0
    """When to look for the runtime again (discovery's cache of a missing answer)."""

    @property
    def child_status(self) -> ChildStatus:
        """What the child's status says, read by its kind's backend (cluster/backends)."""
        if self.child is None:
            return ChildStatus(None, acted=False)
        backend = backend_for_kind(str(self.child.get("kind") or self.child_kind)) or get_backend("pytorchjob")
        return backend.status(self.child)


@dataclass
class Memory:
    """What the controller remembers between reconciles (never the source of a status field by itself)."""

    seen: set[Key] = field(default_factory=set)
    logs: dict[Key, tuple[LogReading | None, float, str | None]] = field(default_factory=dict)
    """Last log tail reading, when it was read, and the last error."""
    prereqs: dict[Key, tuple[tuple[Prerequisite, ...], float, float, int | None]] = field(default_factory=dict)
    """Last prerequisites, when checked, the backoff to the next check, the generation checked."""
    apply_failures: dict[Key, ApplyFailure] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.seen.discard(key)
        self.logs.pop(key, None)
        self.prereqs.pop(key, None)
        self.apply_failures.pop(key, None)


@dataclass(frozen=True)
class ObserveSettings:
    render_options: RenderOptions
    log_interval_s: float = 60.0
    log_tail_lines: int = 300
    log_limit_bytes: int = 256 * 1024
    controller_grace_s: float = 120.0
    prereq_recheck_s: float = 30.0
    prereq_recheck_max_s: float = 300.0
    push_fresh_s: float = 150.0
    """A pushed report younger than this stands in for the log tail (the trainer heartbeats every 60 s)."""
    gpu_memory_by_product: Mapping[str, str] = field(default_factory=dict)


def _strip_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


def from_jobs(job: FineTuneJob) -> list[str]:
    """Names of the FineTuneJobs ``job`` builds on."""
    names = [job.spec.model.from_job]
    ppo = job.spec.training.ppo
    if ppo is not None and ppo.reward_model is not None:
        names.append(ppo.reward_model.from_job)
    return sorted({n for n in names if n})


def claim_names(job: FineTuneJob) -> list[str]:
    storage = job.spec.storage
    names = [
        v.claim_name
        for v in (storage.outputs, storage.datasets, storage.models)
        if v is not None and v.claim_name is not None
    ]
    return list(dict.fromkeys(names))


def queue_name(job: FineTuneJob, options: RenderOptions) -> str | None:
    scheduling = job.spec.scheduling
    return (scheduling.queue_name if scheduling else None) or options.default_queue


async def observe(
    key: Key,
    obj: Mapping[str, Any],
    caches: Caches,
    memory: Memory,
    kube: Kube,
    settings: ObserveSettings,
    board: Board | None,
    now: float | None = None,
    discovery: Discovery | None = None,
) -> Snapshot:
    """One immutable picture of job ``key``: spec, backend, child and pods, prerequisites, progress, serving."""
    now = time.time() if now is None else now
    namespace, name = key
    obj = copy.deepcopy(dict(obj))
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    job, problems = validate_object(_strip_status(obj))
    generation = meta.get("generation")
    ref = status.get("job") or {}
    options, choice = await _backend_options(job, ref, settings.render_options, discovery, now)
    backend = child_backend(job, ref, options)
    runtime_missing = False
    if not ref and backend.name == "trainjob" and discovery is not None and job is not None and not problems:
        runtime_missing = await discovery.runtime_present(now) is False
    kind = backend.kind
    informer = caches.children[backend.plural]
    child = informer.get(namespace, str(ref.get("name") or name))
    pods = caches.pods_of(namespace, str(ref.get("name") or name), backend.pod_job_label)
    first_seen = key not in memory.seen
    memory.seen.add(key)
    started = bool(ref)
    gen_int = int(generation) if generation is not None else None

    applied: FineTuneJobSpec | None = None
    if started and job is not None and (first_seen or gen_int != status.get("observedGeneration")):
        applied = await _applied_as_running(
            job, kube, namespace, str(status.get("configMap") or name + CONFIG_MAP_SUFFIX), options
        )

    prereqs: tuple[Prerequisite, ...] = ()
    next_check: float | None = None
    if job is not None and not problems and status.get("phase") in (None, "Pending"):
        assert caches.claims is not None
        prereqs = await _prerequisites(key, job, settings, memory, kube, gen_int, now, caches.claims)
        next_check = _next_prerequisite_check(key, memory)

    reading, read_at, error, next_read = await _progress(key, backend, child, pods, memory, kube, settings, board, now)
    terminations = tuple((caches.terminations.get((namespace, str(ref.get("name") or name))) or {}).values())
    failure = memory.apply_failures.get(key)
    if failure is not None and failure.status == 404:
        # "Kind not served" is reported once per failed attempt; the next reconcile tries again.
        memory.apply_failures.pop(key, None)
    return Snapshot(
        namespace=namespace,
        name=name,
        obj=obj,
        generation=gen_int,
        resource_version=str(meta.get("resourceVersion") or ""),
        status=status,
        job=job,
        problems=tuple(problems),
        render_options=options,
        child_kind=kind,
        child=copy.deepcopy(child) if child is not None else None,
        child_kind_served=informer.served,
        pods=tuple(copy.deepcopy(pods)),
        applied_spec=applied,
        progress=reading,
        progress_at=read_at,
        progress_error=error,
        prerequisites=prereqs,
        terminations=terminations,
        apply_failure=failure if failure is not None and failure.generation == gen_int else None,
        first_seen=first_seen,
        controller_grace_s=settings.controller_grace_s,
        next_log_read=next_read,
        next_prereq_check=next_check,
        gpu_memory_by_product=settings.gpu_memory_by_product,
        sources={n: copy.deepcopy(caches.jobs.get((namespace, n))) for n in from_jobs(job)} if job is not None else {},
        backend_choice=choice,
        runtime_missing=runtime_missing,
        runtime_recheck_s=discovery.missing_ttl_s if discovery is not None else 60.0,
        **_serving(job, namespace, status, caches, settings.render_options),
    )


async def _backend_options(
    job: FineTuneJob | None, ref: Mapping[str, Any], options: RenderOptions, discovery: Discovery | None, now: float
) -> tuple[RenderOptions, Choice | None]:
    """The render options with the backend ``backend: auto`` resolves to: the kind of the child it
    created before (a running job keeps its kind), else discovery's choice (returned too, for the status)."""
    if not wants_auto(job) or options.backend is not None:
        return options, None
    assert job is not None
    created = backend_for_kind(str(ref.get("kind") or ""))
    if created is not None:  # chosen before: the child's kind stays
        return dataclasses.replace(options, backend=created.name), None  # type: ignore[arg-type]
    if discovery is not None:
        choice = await discovery.choose(job, now)
        return dataclasses.replace(options, backend=choice.backend), choice  # type: ignore[arg-type]
    return options, None


async def _applied_as_running(
    job: FineTuneJob, kube: Kube, namespace: str, config_map: str, options: RenderOptions
) -> FineTuneJobSpec | None:
    """The spec the running child was rendered from (its ConfigMap), with the backend as the spec says it."""
    applied = await _applied_spec(kube, namespace, config_map)
    if applied is not None and wants_auto(job) and applied.distributed.backend == options.backend:
        # The ConfigMap records the kind auto chose; the spec still says auto: no change.
        applied = applied.model_copy(update={"distributed": applied.distributed.model_copy(update={"backend": "auto"})})
    return applied


def _next_prerequisite_check(key: Key, memory: Memory) -> float | None:
    """When to check a pending job's missing prerequisite again, after :func:`_prerequisites` (None:
    nothing missing, or its appearance enqueues the job: a claim's creation does, a LocalQueue's does not)."""
    remembered = memory.prereqs.get(key)  # the LocalQueue's GET; a claim's creation enqueues the job itself
    if remembered is not None and any(p.found is False for p in remembered[0]):
        return remembered[1] + remembered[2]
    return None


def _serving(
    job: FineTuneJob | None, namespace: str, status: Mapping[str, Any], caches: Caches, options: RenderOptions
) -> dict[str, Any]:
    """spec.serve's watched objects (from the serving informers) once the job has Succeeded."""
    if job is None or job.spec.serve is None or status.get("phase") != "Succeeded":
        return {}
    try:
        rendered = render_serving(job, options)
    except ValueError:
        return {}
    observed: dict[str, Mapping[str, Any] | None] = {}
    served: dict[str, bool | None] = {}
    for obj in rendered.prepare + rendered.objects:
        kind = obj["kind"]
        if kind not in SERVING_KINDS:
            continue
        informer = caches.serving[SERVING_KINDS[kind][1]]
        found = informer.get(namespace, obj["metadata"]["name"])
        observed[kind] = copy.deepcopy(found) if found is not None else None
        served[kind] = informer.served
    return {"serving": observed, "serving_served": served}


def child_backend(job: FineTuneJob | None, ref: Mapping[str, Any], options: RenderOptions) -> WorkloadBackend:
    """The backend of the child: the kind already created (status.job), else what the spec asks for."""
    created = backend_for_kind(str(ref.get("kind") or ""))
    if created is not None:
        return created
    return get_backend(str(options.backend or (job.spec.distributed.backend if job is not None else "pytorchjob")))


async def _applied_spec(kube: Kube, namespace: str, config_map: str) -> FineTuneJobSpec | None:
    """The spec the running children were rendered from (the ConfigMap's finetunejob.json).

    Immutable-field checks compare against this, not a last-handled copy: after a rejected
    change the FineTuneJob holds the rejected spec, the ConfigMap still holds the running one.
    """
    cm = await kube.get("v1", "configmaps", namespace, config_map)
    text = ((cm or {}).get("data") or {}).get(SPEC_FILE)
    if not text:
        return None
    try:
        return FineTuneJob.from_api(json.loads(text)).spec
    except ValueError:
        return None


def _claim(claims: Informer, namespace: str, name: str) -> Prerequisite:
    """A PersistentVolumeClaim the spec names, as the claims informer holds it (no request)."""
    forbidden = claims.forbidden_in(namespace)
    if forbidden is not None:
        return Prerequisite("PersistentVolumeClaim", name, None, forbidden)
    if not claims.listed(
        namespace
    ):  # not "not found": nothing read yet (the workers wait for every LIST, Caches.wait_synced)
        return Prerequisite(
            "PersistentVolumeClaim", name, None, f"the claims of namespace {namespace} are not listed yet"
        )
    pvc = claims.get(namespace, name)
    if pvc is None:
        return Prerequisite("PersistentVolumeClaim", name, False, "not found")
    # Pending is normal for WaitForFirstConsumer claims: the PV controller leaves them unbound,
    # with Event "waiting for first consumer to be created before binding", until a pod that
    # uses them is scheduled (pkg/controller/volume/persistentvolume/pv_controller.go:305-309,
    # emitEventForUnboundDelayBindingClaim, in openshift/microshift's vendored Kubernetes 1.36
    # @ 8e16b12). So Pending counts as found (docs/status.md, "Prerequisites"); an Immediate
    # claim that never binds shows on the pod (VolumeNotReady). Lost is not usable.
    phase = (pvc.get("status") or {}).get("phase")
    return Prerequisite("PersistentVolumeClaim", name, phase != "Lost", "phase Lost" if phase == "Lost" else "")


async def _prerequisites(
    key: Key,
    job: FineTuneJob,
    settings: ObserveSettings,
    memory: Memory,
    kube: Kube,
    generation: int | None,
    now: float,
    claims: Informer,
) -> tuple[Prerequisite, ...]:
    """PVCs and the LocalQueue the spec names, checked before the children exist.

    The PVCs come from the claims informer at every reconcile (a watch: no request per job, and a
    claim created later enqueues the jobs that name it, ``Caches._claim_event``).  The LocalQueue is
    one GET: a found one is not checked again, a missing one again after 30 s, 60 s, ... up to
    5 min (or a spec change)."""
    namespace = key[0]
    found = tuple(_claim(claims, namespace, name) for name in claim_names(job))
    queue = queue_name(job, settings.render_options)
    if not queue:
        memory.prereqs.pop(key, None)
        return found
    remembered = memory.prereqs.get(key)
    if remembered is not None:
        items, checked_at, backoff, gen = remembered
        if gen == generation and (all(p.found is not False for p in items) or now - checked_at < backoff):
            return found + items

    async def local_queue(name: str) -> Prerequisite:
        try:
            await kube.request("get", "GET", path(LOCALQUEUE_API, "localqueues", namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                return Prerequisite("LocalQueue", name, None, str(exc))
            if "could not find the requested resource" in exc.message:  # no such resource type
                return Prerequisite(
                    "LocalQueue",
                    name,
                    False,
                    "Kueue is not installed (the cluster does not serve kueue.x-k8s.io LocalQueue)",
                )
            return Prerequisite("LocalQueue", name, False, "not found")
        return Prerequisite("LocalQueue", name, True)

    items = (await local_queue(queue),)
    previous_backoff = remembered[2] if remembered is not None and remembered[3] == generation else 0.0
    backoff = min(settings.prereq_recheck_max_s, max(settings.prereq_recheck_s, previous_backoff * 2))
    memory.prereqs[key] = (items, now, backoff, generation)
    return found + items


async def _progress(
    key: Key,
    backend: WorkloadBackend,
    child: Mapping[str, Any] | None,
    pods: list[dict[str, Any]],
    memory: Memory,
    kube: Kube,
    settings: ObserveSettings,
    board: Board | None,
    now: float,
) -> tuple[LogReading | None, float | None, str | None, float | None]:
    """The newest progress: a pushed report, else the rank-0 log tail (read at most once per
    ``log_interval_s``).  A failed log read only leaves progress as it was."""
    pushed = board.latest(*key) if board is not None else None
    remembered = memory.logs.get(key)
    reading, read_at, error = remembered if remembered is not None else (None, None, None)
    if pushed is not None and (read_at is None or pushed[1] >= read_at):
        reading, read_at = pushed
        if now - pushed[1] < settings.push_fresh_s:  # the trainer pushes: no log reads needed
            # Look again when it goes stale: if the pushes stopped, the log tail takes over.
            return reading, read_at, None, pushed[1] + settings.push_fresh_s
    if child is None or backend.status(child).state not in ("Running", "Restarting", "Succeeded", "Failed"):
        return reading, read_at, error, None
    rank0 = backend.rank0_pod(pods)
    if rank0 is None or (rank0.get("status") or {}).get("phase") not in ("Running", "Succeeded", "Failed"):
        return reading, read_at, error, None
    last = remembered[1] if remembered is not None else None
    if last is not None and now - last < settings.log_interval_s:
        return reading, read_at, error, last + settings.log_interval_s
    containers = (rank0.get("spec") or {}).get("containers") or [{}]
    try:
        text = await kube.pod_log(
            key[0],
            rank0["metadata"]["name"],
            containers[0].get("name"),
            settings.log_tail_lines,
            settings.log_limit_bytes,
        )
    except ApiError as exc:
        if error is None:
            log.warning(
                "cannot read the log of %s/%s (progress only; the phase is unaffected): %s",
                key[0],
                rank0["metadata"]["name"],
                exc,
            )
        memory.logs[key] = (reading, now, str(exc))
        return reading, read_at, str(exc), now + settings.log_interval_s
    fresh = read_log(text)
    if reading is not None and (
        fresh.progress is None or fresh.evaluation is None
    ):  # keep what the tail no longer holds
        fresh = LogReading(fresh.progress or reading.progress, fresh.exporting, fresh.evaluation or reading.evaluation)
    memory.logs[key] = (fresh, now, None)
    return fresh, now, None, now + settings.log_interval_s
