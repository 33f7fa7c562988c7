"""Decide: a pure function from one ``Snapshot`` (and the clock) to one ``Decision``.

The decision holds the desired children (from ``render()``), the complete desired status
(phase, conditions, message, progress, retries, child refs), the Events to emit and when to
look again.  Every status field and every Event the operator writes is computed here; the
rules for which reason wins and how long a reason stays live here and nowhere else:

1. A finished job (Succeeded/Failed after its children were created) never changes again.
2. An invalid spec: ``Validated=False/InvalidSpec``; phase Failed if nothing was created yet.
3. Not started: the child's kind must be served (``KindNotInstalled``, retried) and the API server
   must accept the children (``ChildRejected``, permanent); prerequisites are checked and reported
   (``PrerequisitesReady``) but never required: a user may create them later.
4. Started: a spec change (generation) is checked against the spec the children run
   (``ImmutableFieldChanged``) and re-applied otherwise; the phase follows the child:
   terminal conditions win, then the retry bound (``BackoffLimitExceeded``, which also suspends the
   child), Kueue/user suspension, Restarting, Running/Exporting, and Pending with the most specific
   reason.  A Pending reason from a pod problem (Unschedulable, VolumeNotReady, SecretMissing,
   image errors) stays until a pod shows that its cause changed: no pod at all (pods being
   recreated) is not evidence, so the reason is kept.
5. Progress comes from the last report; a failed log read changes nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api import TERMINAL_PHASES, FineTuneJob, broken_transition_rules
from kubetune.api.contract import KUEUE_QUEUE_LABEL
from kubetune.plan.feasibility import Verdict, autotune, feasibility, gpu_memory_for
from kubetune.render import Rendered, RenderOptions, render
from kubetune.cluster.backends import backend_for_kind
from kubetune.cluster.serving import engine_for, observed_state
from kubetune.render.chain import Failed, ModelSource, Waiting, resolve_from_job, reward_base_problem
from kubetune.render.serving import Serving, evaluation_verdict, render_serving

from .reasons import CONTROLLERS, REASONS, retryable_exit_code, with_hint
from .snapshot import Snapshot
from .conditions import (
    EVICTED,
    get_condition,
    now_rfc3339,
    parse_time,
    pod_problem,
    set_condition,
)

PHASE_CONDITIONS = ("Running", "Exporting", "Succeeded", "Failed", "Suspended")
STICKY_PENDING = (
    "Unschedulable",
    "VolumeNotReady",
    "SecretMissing",
    "CreateContainerConfigError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
)
"""Pending reasons that stay until a pod shows their cause changed."""
MAX_COUNTED = 64
FAILURE_SETTLE_S = 3.0
"""How long a Failed child waits for the pod that explains it before the status is final."""


@dataclass(frozen=True)
class EventSpec:
    type: str
    reason: str
    message: str
    with_children: bool = False
    """Announces the children's apply: posted once that succeeded, even if the status patch then
    has to be decided again (the action happened); other Events wait for their status."""


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    """The complete desired status."""
    children: tuple[dict[str, Any], ...] = ()
    """Objects to server-side apply, in order."""
    events: tuple[EventSpec, ...] = ()
    requeue_after: float | None = None
    deletions: tuple[dict[str, Any], ...] = ()
    """Children to delete (apiVersion, kind, metadata.name/namespace), after the applies."""


@dataclass
class _Draft:
    """The status being decided, starting from the current one."""

    snap: Snapshot
    now: str
    status: dict[str, Any] = field(default_factory=dict)
    events: list[EventSpec] = field(default_factory=list)

    def cond(self, type_: str, holds: bool | None, reason: str, message: str) -> None:
        """Set a condition; ``holds`` None is status Unknown."""
        assert reason in REASONS or type_ in PHASE_CONDITIONS, reason
        self.status["conditions"] = set_condition(
            self.status.get("conditions"), type_, holds, reason, message, self.snap.generation, self.now
        )

    def previous(self, type_: str) -> Mapping[str, Any] | None:
        return get_condition(self.snap.status.get("conditions"), type_)

    def event_once(self, type_: str, kind: str, reason: str, message: str) -> None:
        """An Event for a condition's new reason/message, not one per reconcile or restart."""
        before = self.previous(type_)
        if before is None or before.get("reason") != reason or before.get("message") != message:
            self.events.append(EventSpec(kind, reason, message))

    def decision(
        self,
        children: tuple[dict[str, Any], ...] = (),
        requeue: float | None = None,
        deletions: tuple[dict[str, Any], ...] = (),
    ) -> Decision:
        return Decision(self.status, children, tuple(self.events), requeue, deletions)


def decide(snap: Snapshot, now: float) -> Decision:
    draft = _Draft(snap, now_rfc3339(now), copy.deepcopy(dict(snap.status)))
    status = draft.status
    started = bool(status.get("job"))
    if started and status.get("phase") in TERMINAL_PHASES:
        status["observedGeneration"] = snap.generation
        if (
            status.get("phase") == "Succeeded"
            and snap.job is not None
            and snap.job.spec.serve is not None
            and not snap.problems
        ):
            return _serve(draft, now)  # spec.serve: the one thing that follows a finished job
        return _late_evaluation(draft, now) or draft.decision(deletions=_queued_child_left(draft))

    rendered: Rendered | None = None
    verdict: Verdict | None = None
    reapply = True
    options = snap.render_options
    message = "; ".join(str(p) for p in snap.problems)
    if snap.job is not None and not snap.problems:
        try:
            chained = _from_jobs(snap, started)
            if isinstance(chained, (Waiting, Failed)):
                return _blocked(draft, chained)
            options, reapply = chained
            job, planned, verdict = _plan(draft, snap.job, started, options)
            rendered = render(job, planned)
        except ValueError as exc:
            message = str(exc)
    if rendered is None:
        return _invalid(draft, message or "the spec is invalid", started)
    if not started:
        return _start(draft, rendered, now, verdict)
    decision = _follow(draft, rendered, now, options, reapply=reapply)
    if decision.status.get("phase") == "Succeeded" and rendered.job.spec.serve is not None:
        return dataclasses.replace(decision, requeue_after=0.0)  # serve next (the terminal branch)
    return decision


FROM_JOB_REASONS = ("FromJobNotFound", "FromJobFailed")
"""resolve_from_job's Failed reasons reported as they are; every other one (self-reference, other
outputs volume, a LoRA source without export, ...) as ``FromJobUnusable`` with the resolver's message."""


def _from_jobs(snap: Snapshot, started: bool) -> tuple[RenderOptions, bool] | Waiting | Failed:
    """spec.model.fromJob / spec.training.ppo.rewardModel.fromJob resolved against the sources the
    watch saw: the options to render with and whether the children may be re-applied, or why the
    job cannot start (a Failed wins over a Waiting).  Once started, only the source's spec matters:
    when it can no longer be resolved (deleted), the running children are followed, not re-applied."""
    assert snap.job is not None
    job, options = snap.job, snap.render_options
    refs: list[tuple[str, str]] = []
    if job.spec.model.from_job:
        refs.append(("model", job.spec.model.from_job))
    ppo = job.spec.training.ppo
    if ppo is not None and ppo.reward_model is not None and ppo.reward_model.from_job:
        refs.append(("rewardModel", ppo.reward_model.from_job))
    waiting: Waiting | None = None
    reapply = True
    for reference, name in refs:
        source = snap.sources.get(name)
        got = resolve_from_job(
            job,
            dict(source) if source is not None else None,
            reference="model" if reference == "model" else "rewardModel",
            layout=options.layout,
            assume_succeeded=started,
            default_namespace=snap.namespace,
        )
        if started and not isinstance(got, ModelSource):
            got, reapply = ModelSource(name, f"<unresolved FineTuneJob {name}>"), False
        if isinstance(got, Failed):
            return got
        if isinstance(got, Waiting):
            waiting = waiting or got
            continue
        if reference == "model":
            options = dataclasses.replace(options, model_source=got)
        else:
            options = dataclasses.replace(options, reward_source=got)
    if waiting is None and reapply and options.model_source is not None and options.reward_source is not None:
        problem = reward_base_problem(job, options.model_source, options.reward_source)
        if problem is not None:
            return problem
    return waiting if waiting is not None else (options, reapply)


def _blocked(draft: _Draft, why: Waiting | Failed) -> Decision:
    """A job that cannot start yet (WaitingForJob) or ever (its fromJob cannot work): no children."""
    status = draft.status
    status["observedGeneration"] = draft.snap.generation
    draft.cond("Validated", True, "Valid", "the spec is valid")
    if isinstance(why, Waiting):
        message = with_hint("WaitingForJob", why.message)
        draft.event_once("Created", "Normal", "WaitingForJob", message)
        draft.cond("Created", False, "WaitingForJob", message)
        status.update(phase="Pending", message=message)
        return draft.decision()  # the source's watch events re-enqueue this job
    reason = why.reason if why.reason in FROM_JOB_REASONS else "FromJobUnusable"
    message = with_hint(reason, why.message)
    draft.event_once("Failed", "Warning", reason, message)
    draft.cond("Failed", True, reason, message)
    status.update(phase="Failed", message=message)
    status.setdefault("completionTime", draft.now)
    return draft.decision()


def _plan(
    draft: _Draft, job: FineTuneJob, started: bool, options: RenderOptions
) -> tuple[FineTuneJob, RenderOptions, Verdict | None]:
    """The job to render (spec.autoTune's adjusted one) and, before the start, the Feasible verdict.

    autoTune is pure and deterministic, so a started job re-renders the same children."""
    table = draft.snap.gpu_memory_by_product
    memory = gpu_memory_for(job, table)
    sources = [s for s in draft.snap.sources.values() if s is not None]  # spec.model.fromJob: the source's architecture
    if job.spec.auto_tune:
        result = autotune(job, memory, product_table=table, together=sources)
        record = result.record()
        options = dataclasses.replace(options, auto_tune=record)
        draft.status["autoTune"] = {k: v for k, v in record.items() if v not in ({}, None)}
        return result.job, options, result.verdict if not started else None
    return job, options, feasibility(job, memory, product_table=table, together=sources) if not started else None


def _invalid(draft: _Draft, problems: str, started: bool) -> Decision:
    message = with_hint("InvalidSpec", problems)
    draft.event_once("Validated", "Warning", "InvalidSpec", message)
    draft.cond("Validated", False, "InvalidSpec", message)
    draft.status["observedGeneration"] = draft.snap.generation
    if not started:
        draft.status.update(phase="Failed", message=message)
        draft.status.setdefault("completionTime", draft.now)
    return draft.decision()


def _kinds_text(rendered: Rendered) -> str:
    return (
        f"ConfigMap {rendered.config_map['metadata']['name']} and {rendered.workload['kind']} "
        f"{rendered.workload['metadata']['name']}"
    )


def _start(draft: _Draft, rendered: Rendered, now: float, verdict: Verdict | None) -> Decision:
    snap, status = draft.snap, draft.status
    kind, api_version = rendered.workload["kind"], rendered.workload["apiVersion"]
    status["observedGeneration"] = snap.generation
    draft.cond("Validated", True, "Valid", "the spec is valid")
    # Feasible: a CPU job (CPUTraining) gets no condition; Unknown says what is missing and never blocks.
    if verdict is not None and verdict.status == "False" and verdict.reason == "InsufficientGPUMemory":
        message = with_hint("InsufficientGPUMemory", verdict.message)
        draft.event_once("Feasible", "Warning", "InsufficientGPUMemory", message)
        draft.cond("Feasible", False, "InsufficientGPUMemory", message)
        status.update(phase="Pending", message=message)
        return draft.decision()  # the spec is immutable: nothing to look at again
    if verdict is not None and verdict.status == "True" and verdict.reason == "Fits":
        draft.cond("Feasible", True, "Fits", verdict.message)
    if verdict is not None and verdict.status == "Unknown":
        draft.cond("Feasible", None, verdict.reason, with_hint(verdict.reason, verdict.message))
    failure = snap.apply_failure
    if snap.runtime_missing:
        message = with_hint(
            "KindNotInstalled",
            f"spec.distributed.backend is trainjob but the cluster has no {CONTROLLERS[kind]}; "
            "Trainer's webhook would refuse the TrainJob: install it, or set backend: pytorchjob or auto; retrying",
        )
        draft.event_once("Created", "Warning", "KindNotInstalled", message)
        draft.cond("Created", False, "KindNotInstalled", message)
        status.update(phase="Pending", message=message)
        return draft.decision(requeue=snap.runtime_recheck_s)
    if snap.child_kind_served is False or (failure is not None and failure.status == 404):
        message = with_hint(
            "KindNotInstalled",
            f"the cluster does not serve {kind} {api_version}: install the {CONTROLLERS[kind]}; retrying",
        )
        draft.event_once("Created", "Warning", "KindNotInstalled", message)
        draft.cond("Created", False, "KindNotInstalled", message)
        status.update(phase="Pending", message=message)
        return draft.decision(requeue=None if snap.child_kind_served is False else 60.0)
    if failure is not None:
        message = with_hint(
            "ChildRejected",
            f"the API server rejected a child object: {failure.message} ({failure.status} {failure.reason})",
        )
        draft.event_once("Created", "Warning", "ChildRejected", message)
        draft.cond("Created", False, "ChildRejected", message)
        status.update(phase="Failed", message=message)
        status.setdefault("completionTime", draft.now)
        return draft.decision()
    created = f"created {_kinds_text(rendered)}"
    draft.cond("Created", True, "ChildrenCreated", created)
    status.pop("completionTime", None)  # a fixed spec of a job that failed validation starts now
    job = rendered.job
    outputs = job.spec.storage.outputs
    output = {"path": _folder(rendered)}
    if outputs.claim_name is not None:
        output = {"claimName": outputs.claim_name, **output}
    if outputs.uri is not None:
        output["uri"] = f"{outputs.uri}{job.namespace}/{job.name}/"
    if job.spec.export.enabled:
        output["mergedPath"] = f"{output['path']}/merged"
    _backend_choice(draft)
    status.update(
        job={
            "apiVersion": api_version,
            "kind": kind,
            "name": rendered.workload["metadata"]["name"],
            **_selection(draft),
        },
        configMap=rendered.config_map["metadata"]["name"],
        output=output,
        gpus=job.spec.resources.nodes * job.spec.resources.gpus_per_node,
        phase="Pending",
    )
    _prerequisites(draft)
    reason, message = _pending(draft, None, now)[:2]
    draft.cond("Running", False, reason, message)
    status["message"] = message
    draft.events.append(EventSpec("Normal", "Created", created))
    requeue = _sooner(None, snap.next_prereq_check, now)
    return draft.decision(tuple(rendered.objects), max(0.0, requeue) if requeue is not None else None)


def _selection(draft: _Draft) -> dict[str, str]:
    """status.job.selection: why backend auto chose this kind (absent when the spec named it)."""
    choice = draft.snap.backend_choice
    return {"selection": choice.why} if choice is not None else {}


def _backend_choice(draft: _Draft) -> None:
    """backend auto: the kind discovery chose, announced once with the children."""
    choice = draft.snap.backend_choice
    if choice is not None:
        draft.events.append(EventSpec("Normal", "BackendSelected", f"backend auto: {choice.why}", with_children=True))


def _folder(rendered: Rendered) -> str:
    job = rendered.job
    folder = f"{job.namespace}/{job.name}"
    sub = job.spec.storage.outputs.sub_path
    return f"{sub.rstrip('/')}/{folder}" if sub else folder


def _prerequisites(draft: _Draft) -> None:
    prereqs = [p for p in draft.snap.prerequisites if p.found is not None]
    if not prereqs:
        return
    missing = [p for p in prereqs if p.found is False]
    if missing:
        text = "; ".join(f"{p.kind} {p.name} in namespace {draft.snap.namespace}: {p.detail}" for p in missing)
        draft.cond("PrerequisitesReady", False, "PrerequisiteMissing", with_hint("PrerequisiteMissing", text))
    else:
        draft.cond(
            "PrerequisitesReady",
            True,
            "PrerequisitesFound",
            "found " + ", ".join(f"{p.kind} {p.name}" for p in prereqs),
        )


def _pending(draft: _Draft, child: Mapping[str, Any] | None, now: float) -> tuple[str, str, float | None]:
    """Why a started job is still Pending: the most specific reason, and when to look again."""
    snap = draft.snap
    ref = draft.status.get("job") or {}
    waiting = (
        f"created ConfigMap {draft.status.get('configMap')} and {ref.get('kind')} {ref.get('name')}; "
        "waiting for the training pods to start"
    )
    problem = pod_problem(snap.pods)
    if problem is not None:
        return problem[0], problem[1], None
    missing = [p for p in snap.prerequisites if p.found is False]
    requeue: float | None = None
    previous = draft.previous("Running")
    if (
        not snap.pods
        and previous is not None
        and previous.get("status") == "False"
        and previous.get("reason") in STICKY_PENDING
    ):
        return str(previous["reason"]), str(previous.get("message") or ""), None  # no pod shows the cause changed
    if child is not None and not snap.child_status.acted and not snap.pods:
        created = parse_time((child.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            due = created + snap.controller_grace_s
            if now >= due:
                kind = str(child.get("kind") or snap.child_kind)
                message = with_hint(
                    "ControllerNotRunning",
                    f"no controller has acted on {kind} {child['metadata'].get('name')} within "
                    f"{int(snap.controller_grace_s)} s of its creation; {kind} is run by "
                    f"{CONTROLLERS.get(kind, 'a Kubeflow controller')}",
                )
                return "ControllerNotRunning", message, None
            if not missing:
                return "PodsPending", waiting, due - now
            requeue = due - now
    if missing:
        cond = get_condition(draft.status.get("conditions"), "PrerequisitesReady")
        return "PrerequisiteMissing", str((cond or {}).get("message") or ""), requeue
    return "PodsPending", waiting, requeue


def _follow(draft: _Draft, rendered: Rendered, now: float, options: RenderOptions, *, reapply: bool = True) -> Decision:
    """A started job: re-apply on a spec change (unless refused), then follow the child's phase.
    ``options``: the render options before spec.autoTune (to render the running spec again)."""
    snap, status = draft.snap, draft.status
    assert snap.job is not None
    children, requeue_failure = _reapply(draft, rendered, now, options, reapply)
    status["observedGeneration"] = snap.generation
    _prerequisites(draft)  # observe checks them only while the job is Pending

    phase, reason, message, requeue = _phase(draft, rendered, now)
    requeue = _sooner(requeue, None if requeue_failure is None else now + requeue_failure, now)
    deletions: tuple[dict[str, Any], ...] = ()
    if reason == "BackoffLimitExceeded":
        children, deletions, message = _stop_past_backoff(draft, rendered, children, message)
    old_phase = snap.status.get("phase")
    _phase_conditions(draft, phase, reason, message)
    status.update(phase=phase, message=message)
    if phase in ("Running", "Exporting"):
        status.setdefault("startTime", draft.now)
    if phase in TERMINAL_PHASES:
        status.setdefault("completionTime", draft.now)
    if phase != old_phase:
        draft.events.append(EventSpec("Warning" if phase == "Failed" else "Normal", phase, message))
    elif phase == "Pending" and reason != "PodsPending":
        before = draft.previous("Running")
        if before is None or before.get("reason") != reason:
            draft.events.append(EventSpec("Warning", reason, message))
    if snap.progress is not None and snap.progress.progress is not None:
        status["progress"] = dict(snap.progress.progress)
    if snap.progress is not None and snap.progress.evaluation is not None:
        _evaluation(draft, snap.progress.evaluation)
    if phase not in TERMINAL_PHASES:
        requeue = _sooner(requeue, snap.next_log_read, now)
    if phase == "Pending":
        requeue = _sooner(requeue, snap.next_prereq_check, now)
    return draft.decision(children, max(0.0, requeue) if requeue is not None else None, deletions)


def _reapply(
    draft: _Draft, rendered: Rendered, now: float, options: RenderOptions, reapply: bool
) -> tuple[tuple[dict[str, Any], ...], float | None]:
    """A spec change (or the operator's first look, or a refused re-apply) of a started job: the
    children to apply again unless the child's API refuses the change (ImmutableFieldChanged) or a
    refusal is still backing off (UpdateRejected); (children, seconds until the refused apply is due)."""
    snap, status = draft.snap, draft.status
    assert snap.job is not None
    children: tuple[dict[str, Any], ...] = ()
    generation_changed = snap.generation != status.get("observedGeneration")
    failure = snap.apply_failure  # this generation's re-apply was refused (controller/act.py)
    requeue_failure: float | None = None
    rejected_before = (draft.previous("Validated") or {}).get("reason") == "UpdateRejected"
    if generation_changed or snap.first_seen or failure is not None or rejected_before:
        broken = (
            [r.message for r in broken_transition_rules(snap.job.spec, snap.applied_spec)]
            if snap.applied_spec is not None
            else []
        )
        if not broken:
            broken, reapply = _refused_by_child(draft, rendered, options, reapply)
        if broken:
            message = with_hint(
                "ImmutableFieldChanged", " | ".join(broken) + "; the running job keeps its original settings"
            )
            draft.event_once("Validated", "Warning", "ImmutableFieldChanged", message)
            draft.cond("Validated", False, "ImmutableFieldChanged", message)
        elif failure is not None and now < failure.retry_at:
            message = with_hint(
                "UpdateRejected",
                f"the API server refused the change to {rendered.workload['kind']} "
                f"{rendered.workload['metadata']['name']} ({failure.attempts} time(s)): "
                f"{failure.message} ({failure.status} {failure.reason}); the running job keeps its previous "
                "settings; retrying with backoff",
            )
            shown = draft.previous("Validated") or {}
            # One Event per refusal, not one per retry: the count in the message changes each time.
            if shown.get(
                "reason"
            ) != "UpdateRejected" or f"{failure.message} ({failure.status} {failure.reason})" not in str(
                shown.get("message")
            ):
                draft.events.append(EventSpec("Warning", "UpdateRejected", message))
            draft.cond("Validated", False, "UpdateRejected", message)
            requeue_failure = failure.retry_at - now
        elif failure is not None:  # due: try again; the refusal stays reported until an apply succeeds
            if snap.child is not None and reapply:
                children = (*(o for o in rendered.objects if o is not rendered.config_map), rendered.config_map)
        else:
            draft.cond("Validated", True, "Valid", "the spec is valid")
            if snap.child is not None and reapply:  # never recreate a child someone deleted
                # The ConfigMap is the record of what the children run: written only once they took the change.
                children = (*(o for o in rendered.objects if o is not rendered.config_map), rendered.config_map)
            if snap.applied_spec is not None and snap.applied_spec.suspend != snap.job.spec.suspend:
                verb = "Suspending" if snap.job.spec.suspend else "Resuming"
                draft.events.append(
                    EventSpec(
                        "Normal",
                        verb,
                        f"{verb.lower()} {rendered.workload['kind']} {rendered.workload['metadata']['name']}",
                        with_children=True,
                    )
                )
    return children, requeue_failure


def _stop_past_backoff(
    draft: _Draft, rendered: Rendered, children: tuple[dict[str, Any], ...], message: str
) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...], str]:
    """BackoffLimitExceeded: free the GPUs (the child suspended, or deleted when Kueue manages it);
    (children: ``children`` or the suspended child, deletions, message)."""
    snap = draft.snap
    deletions: tuple[dict[str, Any], ...] = ()
    backend = backend_for_kind(rendered.workload["kind"])
    assert backend is not None  # rendered by a registered backend
    if snap.child is None:
        pass  # already gone: nothing to stop, and an apply would create it again
    elif ((snap.child.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL):
        # Kueue starts again any job it admitted that it finds suspended (kubernetes-sigs/kueue
        # pkg/controller/jobframework/reconciler.go:621-635 @ v0.19.2, "Job admitted, unsuspending"):
        # a queued child is deleted instead; its Workload, owned by it, goes with it and the quota is freed.
        deletions = (
            {k: rendered.workload[k] for k in ("apiVersion", "kind")}
            | {
                "metadata": {
                    "name": rendered.workload["metadata"]["name"],
                    "namespace": rendered.workload["metadata"]["namespace"],
                }
            },
        )
        message = message.replace(
            "was suspended to free its GPUs", "was deleted to free its GPUs (Kueue would resume a suspended one)"
        )
    else:
        children = (backend.suspended(rendered.workload),)
    return children, deletions, message


def _queued_child_left(draft: _Draft) -> tuple[dict[str, Any], ...]:
    """A job Failed past its retry bound whose queued child still exists (the delete that followed
    the stored status failed, or the operator restarted in between; controller/act.py): delete it
    again, or Kueue keeps running it (reconciler.go:621-635 @ kueue v0.19.2)."""
    child = draft.snap.child
    if child is None or (draft.previous("Failed") or {}).get("reason") != "BackoffLimitExceeded":
        return ()
    meta = child.get("metadata") or {}
    if meta.get("deletionTimestamp") or not (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL):
        return ()
    return (
        {
            "apiVersion": child["apiVersion"],
            "kind": child["kind"],
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace") or draft.snap.namespace},
        },
    )


def _refused_by_child(
    draft: _Draft, rendered: Rendered, options: RenderOptions, reapply: bool
) -> tuple[list[str], bool]:
    """The edited spec's changes that the running child's API would refuse (its backend's
    ``refused_changes``), with the FineTuneJob fields that were edited (empty: none), and whether
    to re-apply.  When no field was edited but the child would still refuse the re-rendered object
    (a newer kubetune renders it differently), nothing is reported and nothing is re-applied."""
    snap = draft.snap
    applied, job = snap.applied_spec, snap.job
    if applied is None or job is None or snap.child is None:
        return [], reapply
    backend = backend_for_kind(rendered.workload["kind"])
    assert backend is not None  # rendered by a registered backend
    try:
        running_job, planned, _ = _plan(
            _Draft(snap, draft.now), job.model_copy(update={"spec": applied}), True, options
        )
        running = render(running_job, planned).workload
    except ValueError:
        return [], reapply  # the applied spec no longer renders (an older kubetune): nothing to compare with
    refused = backend.refused_changes(running, rendered.workload, snap.child)
    if not refused:
        return [], reapply
    old, new = (
        applied.model_dump(by_alias=True, exclude_none=True),
        job.spec.model_dump(by_alias=True, exclude_none=True),
    )
    edited = ", ".join(f"spec.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    if not edited:
        return [], False
    return [
        f"{edited} changed, which the running {rendered.workload['kind']} cannot take: {'; '.join(refused)}"
    ], reapply


def _late_evaluation(draft: _Draft, now: float) -> Decision | None:
    """spec.evaluation of a Succeeded job whose result was not read before its phase became final (the
    log tail is read once per interval and the evaluate stage ends just before the pod exits): read it
    now, or look again at the next log read while the rank-0 pod's log can be read (a FineTuneSweep's
    trial is judged on it).  None: nothing to wait for."""
    snap, status = draft.snap, draft.status
    if (
        status.get("phase") != "Succeeded"
        or snap.job is None
        or snap.job.spec.evaluation is None
        or "evaluation" in status
    ):
        return None
    if snap.progress is not None and snap.progress.evaluation is not None:
        _evaluation(draft, snap.progress.evaluation)
        return draft.decision()
    requeue = _sooner(None, snap.next_log_read, now)
    return draft.decision(requeue=max(0.0, requeue) if requeue is not None else None) if requeue is not None else None


def _evaluation(draft: _Draft, evaluation: Mapping[str, Any]) -> None:
    """status.evaluation mirrors the trainer's evaluate stage; a failed evaluation is a condition, never a phase."""
    draft.status["evaluation"] = copy.deepcopy(dict(evaluation))
    if evaluation.get("state") == "Failed":
        message = with_hint("EvaluationFailed", f"the evaluation failed: {evaluation.get('message') or 'no message'}")
        draft.event_once("EvaluationFailed", "Warning", "EvaluationFailed", message)
        draft.cond("EvaluationFailed", True, "EvaluationFailed", message)


SERVING_REASONS = ("ServingStarting", "ServingReady")
"""Serving reasons that mean the objects were applied for the condition's observedGeneration."""


def _serve(draft: _Draft, now: float) -> Decision:
    """spec.serve once the job has Succeeded: the serving objects (server-side applied when new, when
    the spec changed, when one was deleted, or on the operator's first look), ``status.serving`` and
    the ``Serving`` condition.  With ``when: evaluationImproves`` nothing is created unless
    ``status.evaluation`` shows the trained model beating the base model."""
    snap, status = draft.snap, draft.status
    assert snap.job is not None and snap.job.spec.serve is not None
    if (waiting := _serve_gate(draft, now)) is not None:
        return waiting
    try:
        serving = render_serving(snap.job, snap.render_options)
    except ValueError as exc:  # refused by the API's rules first; never a crash loop if one slips through
        message = with_hint("ServingRejected", f"spec.serve cannot be rendered: {exc}")
        draft.cond("Serving", False, "ServingRejected", message)
        return draft.decision()
    if (refused := _serve_refused(draft, serving)) is not None:
        return refused
    before = draft.previous("Serving")
    needed = (
        snap.first_seen
        or before is None
        or before.get("reason") not in SERVING_REASONS
        or before.get("observedGeneration") != snap.generation
    )
    everything = [*serving.prepare, *serving.objects]
    status["serving"] = {
        "engine": serving.engine,
        "servedModel": serving.served_model,
        "model": serving.model_uri,
        "ready": False,
        "objects": [
            {"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"]} for o in everything
        ],
        **({"url": serving.url} if serving.url else {}),
        **({"adapter": serving.adapter_uri} if serving.adapter_uri else {}),
    }
    if serving.prepare:  # engine kaito: the adapter is copied to its own volume first
        everything, preparing = _serve_prepare(draft, serving, everything, needed)
        if preparing is not None:
            return preparing
    return _serve_objects(draft, serving, everything, needed)


def _serve_gate(draft: _Draft, now: float) -> Decision | None:
    """``when: evaluationImproves``: a decision that serves nothing (yet) unless the evaluation shows
    the trained model beating the base; None: go on serving."""
    snap, status = draft.snap, draft.status
    assert snap.job is not None and snap.job.spec.serve is not None
    if snap.job.spec.serve.when != "evaluationImproves":
        return None
    if "evaluation" not in status and snap.progress is not None and snap.progress.evaluation is not None:
        status["evaluation"] = copy.deepcopy(dict(snap.progress.evaluation))  # read after the phase became final
    improved, why = evaluation_verdict(status.get("evaluation"))
    if improved is None:
        draft.cond(
            "Serving",
            False,
            "WaitingForEvaluation",
            with_hint("WaitingForEvaluation", f"spec.serve.when is evaluationImproves: {why}"),
        )
        requeue = _sooner(None, snap.next_log_read, now)
        return draft.decision(requeue=max(0.0, requeue) if requeue is not None else None)
    if not improved:
        message = with_hint("EvaluationNotImproved", f"nothing is served: {why}")
        draft.event_once("Serving", "Warning", "EvaluationNotImproved", message)
        draft.cond("Serving", False, "EvaluationNotImproved", message)
        return draft.decision()
    return None


def _serve_refused(draft: _Draft, serving: Serving) -> Decision | None:
    """The main kind is not served by the cluster (KServe or KAITO missing), or the API server refused
    a serving object; None: neither."""
    snap = draft.snap
    main = serving.objects[0]
    kind, api_version = main["kind"], main["apiVersion"]
    failure = snap.apply_failure
    if snap.serving_served.get(kind) is False or (failure is not None and failure.status == 404):
        message = with_hint(
            "ServingKindNotInstalled",
            f"the cluster does not serve {kind} {api_version}: install the "
            f"{CONTROLLERS.get(kind, kind)}; retried when it appears",
        )
        draft.event_once("Serving", "Warning", "ServingKindNotInstalled", message)
        draft.cond("Serving", False, "ServingKindNotInstalled", message)
        return draft.decision(requeue=None if snap.serving_served.get(kind) is False else 60.0)
    if failure is not None:
        message = with_hint(
            "ServingRejected",
            f"the API server rejected a serving object: {failure.message} ({failure.status} {failure.reason})",
        )
        draft.event_once("Serving", "Warning", "ServingRejected", message)
        draft.cond("Serving", False, "ServingRejected", message)
        return draft.decision()
    return None


def _serve_prepare(
    draft: _Draft, serving: Serving, everything: list[dict[str, Any]], needed: bool
) -> tuple[list[dict[str, Any]], Decision | None]:
    """``serving.prepare`` (engine kaito: the adapter copied to its own volume by a Job) before the
    objects: (what to apply, a decision while the copy is not complete or failed, else None)."""
    snap = draft.snap
    kind = serving.objects[0]["kind"]
    before = draft.previous("Serving")
    copy_job = serving.prepare[-1]
    observed_copy = snap.serving.get(copy_job["kind"])
    conditions = (observed_copy or {}).get("status", {}).get("conditions")
    job_name = f"Job {copy_job['metadata']['name']}"
    if observed_copy is not None and any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in conditions or []
    ):
        message = with_hint("AdapterCopyFailed", f"{job_name} failed to copy the adapter from {serving.adapter_uri}")
        draft.event_once("Serving", "Warning", "AdapterCopyFailed", message)
        draft.cond("Serving", False, "AdapterCopyFailed", message)
        return everything, draft.decision()
    if observed_copy is not None:
        # A Job's pod template is immutable (the API server answers a changed one with 422; Kubernetes'
        # batch validation, not read at a tag here: issue 20 reports it): an existing copy Job is never re-applied.
        everything = [o for o in everything if o is not copy_job]
    if observed_copy is None or not any(
        c.get("type") == "Complete" and c.get("status") == "True" for c in conditions or []
    ):
        apply = needed or observed_copy is None
        message = with_hint(
            "ServingStarting",
            f"copying the adapter to {serving.prepare[0]['kind']} {serving.prepare[0]['metadata']['name']} "
            f"({job_name}); the {kind} follows",
        )
        if before is None or before.get("reason") != "ServingStarting":
            draft.events.append(EventSpec("Normal", "ServingStarting", message, with_children=apply))
        draft.cond("Serving", False, "ServingStarting", message)
        return everything, draft.decision(tuple(o for o in everything if o in serving.prepare) if apply else ())
    return everything, None


def _serve_objects(draft: _Draft, serving: Serving, everything: list[dict[str, Any]], needed: bool) -> Decision:
    """The serving objects themselves: applied when needed or when one was deleted; ready (and the
    URL) as the engine reads its main object."""
    snap, status = draft.snap, draft.status
    assert snap.job is not None
    before = draft.previous("Serving")
    observed = snap.serving.get(serving.objects[0]["kind"])
    # Any watched serving object deleted (the vLLM Service too) is applied again.
    apply = needed or any(o["kind"] in snap.serving and snap.serving[o["kind"]] is None for o in serving.objects)
    ready, url, state = observed_state(observed, engine_for(snap.job))
    url = serving.url or url
    names = " and ".join(f"{o['kind']} {o['metadata']['name']}" for o in serving.objects)
    status["serving"]["ready"] = ready
    if url:
        status["serving"]["url"] = url
    if ready:
        reason, holds = "ServingReady", True
        message = f"serving {serving.served_model} at {url} ({names}: {state})"
    else:
        reason, holds = "ServingStarting", False
        message = with_hint("ServingStarting", f"created {names}; waiting for them to become ready ({state})")
    if before is None or before.get("reason") != reason:
        draft.events.append(EventSpec("Normal", reason, message, with_children=apply and not ready))
    draft.cond("Serving", holds, reason, message)
    return draft.decision(tuple(everything) if apply else ())


def _sooner(requeue: float | None, at: float | None, now: float) -> float | None:
    if at is None:
        return requeue
    return min(requeue, at - now) if requeue is not None else at - now


def _retries(draft: _Draft) -> tuple[int, str]:
    """Count retryable pod failures not counted yet; returns (count, description of the newest)."""
    snap, status = draft.snap, draft.status
    retries = dict(status.get("retries") or {})
    counted = list(retries.get("countedPods") or [])
    limit = snap.job.spec.run_policy.backoff_limit if snap.job else 0
    for t in sorted(snap.terminations, key=lambda t: t.uid):
        if t.uid in counted or not retryable_exit_code(t.exit_code):
            continue
        counted.append(t.uid)
        retries["count"] = int(retries.get("count") or 0) + 1
        retries.update(lastExitCode=t.exit_code, lastPod=t.pod)
        if t.reason.startswith(
            EVICTED
        ):  # the kubelet's why (cache.eviction_reason); the final BackoffLimitExceeded repeats it
            retries["lastReason"] = t.reason[:1024]
        else:
            retries.pop("lastReason", None)
        draft.events.append(
            EventSpec(
                "Warning",
                "Restarting",
                f"pod {t.pod} exited with code {t.exit_code}{' (' + t.reason + ')' if t.reason else ''}, "
                f"which Kubeflow retries; retry {retries['count']} of {limit} (spec.runPolicy.backoffLimit)",
            )
        )
    if counted:
        retries["countedPods"] = counted[-MAX_COUNTED:]
        status["retries"] = retries
    last = (
        f"last: pod {retries.get('lastPod')} exited with code {retries.get('lastExitCode')}"
        if retries.get("lastPod")
        else ""
    )
    if last and retries.get("lastReason"):
        last += f" ({retries['lastReason']})"
    return int(retries.get("count") or 0), last


def _phase(draft: _Draft, rendered: Rendered, now: float) -> tuple[str, str, str, float | None]:
    snap = draft.snap
    assert snap.job is not None
    child = snap.child
    kind, name = rendered.workload["kind"], rendered.workload["metadata"]["name"]
    count, last = _retries(draft)
    limit = snap.job.spec.run_policy.backoff_limit
    if child is None:
        if snap.child_kind_served is False:
            message = with_hint(
                "KindNotInstalled", f"the cluster no longer serves {kind}: install the {CONTROLLERS[kind]}"
            )
            return "Pending", "KindNotInstalled", message, None
        if count > limit:  # deleted by us past the retry bound (a queued child), before the status said so
            message = with_hint(
                "BackoffLimitExceeded",
                f"{count} training pod failures with retryable exit codes ({last}), "
                f"more than spec.runPolicy.backoffLimit={limit}; the {kind} {name} was deleted to free its GPUs "
                "(Kueue would resume a suspended one)",
            )
            return "Failed", "BackoffLimitExceeded", message, None
        return "Failed", "JobDeleted", with_hint("JobDeleted", f"the {kind} {name} was deleted"), None
    state = snap.child_status  # the backend's reading of the child's status (cluster/backends)
    if state.state == "Succeeded":
        return "Succeeded", "JobSucceeded", state.message or "training finished", None
    if state.state == "Failed":
        # The child's and the pods' watches are separate streams: give the pod that explains the
        # failure (exit code, OOMKilled) a moment to arrive before the final, frozen status.
        since = parse_time(state.since)
        if not _pod_evidence(snap) and since is not None and now - since < FAILURE_SETTLE_S:
            return _settling(draft, since, now)
        text = state.message or f"the {kind} failed"
        problem = pod_problem(snap.pods)
        if problem is not None and problem[0] == "OOMKilled":
            return "Failed", "OOMKilled", f"{text}; {problem[1]}", None
        permanent = [t for t in snap.terminations if not retryable_exit_code(t.exit_code)]
        if permanent:
            t = permanent[-1]
            text += f"; pod {t.pod} exited with code {t.exit_code} (1-127: permanent, not retried)"
        return "Failed", "JobFailed", with_hint("JobFailed", text), None
    if count > limit:
        message = with_hint(
            "BackoffLimitExceeded",
            f"{count} training pod failures with retryable exit codes ({last}), "
            f"more than spec.runPolicy.backoffLimit={limit}; the {kind} {name} was suspended to free its GPUs",
        )
        return "Failed", "BackoffLimitExceeded", message, None
    if state.state == "Suspended":
        queue = ((child.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        if queue and not snap.job.spec.suspend:
            # Kueue keeps queued jobs suspended until it admits them: for the user that is "waiting".
            missing = [p for p in snap.prerequisites if p.kind == "LocalQueue" and p.found is False]
            text = f"queued in Kueue LocalQueue {queue}; waiting for admission"
            if missing:
                text += f" (LocalQueue {queue}: {missing[0].detail})"
            return "Pending", "WaitingForQueue", with_hint("WaitingForQueue", text), None
        return "Suspended", "JobSuspended", with_hint("JobSuspended", "the job is suspended"), None
    if state.state == "Restarting":
        # Kubeflow deletes the failed pod and sets Restarting (training-operator
        # pkg/controller.v1/common/pod.go); the pod's watch may deliver the failure after the
        # child's. Entering Restarting without that evidence, wait for it as for Failed above,
        # so the status never says "retry 0" while the retry it reports is still uncounted.
        # The evidence is a retryable termination this decision counts (uncounted in the stored
        # status), or one seen at most FAILURE_SETTLE_S before the child turned Restarting (the pod's
        # event came first). An older one explains an earlier restart: training-operator gives each
        # Running -> Restarting a new lastTransitionTime (pkg/util/status.go:116-133 @v1.8.1, the two
        # filter each other out), so a crash loop must not borrow the previous pod's evidence. Like
        # the Failed wait above, this compares this operator's clock with the API server's.
        since = parse_time(state.since)
        stored = set((snap.status.get("retries") or {}).get("countedPods") or [])
        fresh = any(
            retryable_exit_code(t.exit_code)
            and (t.uid not in stored or (since is not None and t.seen_at >= since - FAILURE_SETTLE_S))
            for t in snap.terminations
        )
        if (
            not fresh
            and _current_reason(draft) != "Restarting"
            and since is not None
            and now - since < FAILURE_SETTLE_S
        ):
            return _settling(draft, since, now)
        detail = f" ({last})" if last else ""
        return (
            "Running",
            "Restarting",
            with_hint(
                "Restarting",
                f"pods are restarting{detail}, retry {count} of {limit}; training resumes from the newest checkpoint",
            ),
            None,
        )
    if state.state == "Running":
        if snap.progress is not None and snap.progress.exporting:
            return "Exporting", "Exporting", "training finished; merging the adapter into the base model", None
        return "Running", "JobRunning", state.message or "training pods are running", None
    reason, message, requeue = _pending(draft, child, now)
    return "Pending", reason, message, requeue


def _settling(draft: _Draft, since: float, now: float) -> tuple[str, str, str, float | None]:
    """The phase, reason and message as stored, unchanged while the pods' watch may still bring the
    evidence of a child's failure or restart that happened at ``since``; decide again when
    FAILURE_SETTLE_S have passed."""
    old = draft.snap.status
    return (
        str(old.get("phase") or "Pending"),
        _current_reason(draft),
        str(old.get("message") or ""),
        since + FAILURE_SETTLE_S - now,
    )


def _pod_evidence(snap: Snapshot) -> bool:
    """A pod that can explain the child's failure: a termination or a terminated container not
    counted as a retry in the stored status. A counted one explains an earlier restart (its pod is
    deleted and replaced: training-operator pkg/controller.v1/common/pod.go:352-366 @v1.8.1), while
    Failed comes from another pod's permanent exit (lines 367-372)."""
    counted = set((snap.status.get("retries") or {}).get("countedPods") or [])
    if any(t.uid not in counted for t in snap.terminations):
        return True
    for pod in snap.pods:
        if str((pod.get("metadata") or {}).get("uid")) in counted:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated"):
                return True
    return False


def _current_reason(draft: _Draft) -> str:
    phase = str(draft.snap.status.get("phase") or "Pending")
    cond = draft.previous("Running" if phase in ("Pending", "Running", "Exporting") else phase)
    reason = str((cond or {}).get("reason") or "PodsPending")
    return reason if reason in REASONS else "PodsPending"


def _phase_conditions(draft: _Draft, phase: str, reason: str, message: str) -> None:
    """Running/Exporting/Succeeded/Failed/Suspended: the active one True with the phase's reason;
    the others that ever appeared False with the same reason; Running=False explains Pending."""
    for type_ in PHASE_CONDITIONS:
        active = phase == type_ or (type_ == "Running" and phase == "Exporting")
        present = get_condition(draft.status.get("conditions"), type_) is not None
        if active:
            draft.cond(type_, True, "JobRunning" if (type_ == "Running" and phase == "Exporting") else reason, message)
        elif present or (type_ == "Running" and phase == "Pending"):
            draft.cond(type_, False, reason, message)
