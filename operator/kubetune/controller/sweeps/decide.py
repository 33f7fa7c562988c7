"""Decide for one FineTuneSweep: a pure function from a ``SweepSnapshot`` (and the clock) to a
``SweepDecision``.  No API call, no clock read: the search itself is ``kubetune.sweep``'s
(Optuna, rebuilt from ``status.trials`` at every call).

The rules, in order:

1. An invalid spec (the CRD's rules, then ``kubetune.sweep.checks.validate_sweep``: the template's
   own checks, the parameter paths, the planner): ``Validated=False/InvalidSweep`` naming the field;
   phase Failed while no trial exists; no trial is ever created from it.
2. Each recorded trial that has not ended follows its FineTuneJob: Running while it runs; its
   evaluation losses during training (``status.progress.evalLoss`` at ``evalStep``) are appended to
   ``intermediate``; Succeeded with the objective read from ``status.evaluation.trained``; Failed
   when the job failed, succeeded without the metric, was deleted, or was refused by the API server.
3. Pruning: a Running trial with a new intermediate value that the pruner (``should_prune``) stops
   is Pruned and its FineTuneJob deleted (propagation Background: the Kubeflow job and its pods go
   with it, Kueue frees the quota; the outputs volume is the user's and stays).
4. Unless the study is finished (``finished``), new trials are asked (``next_trials``) up to
   ``parallelism`` running at once and ``maxTrials`` in all.  They enter the status as Pending, and
   their FineTuneJobs are applied only after that status is stored (``act``), so a restart in
   between creates them without asking again; a recorded Pending trial without a FineTuneJob is
   (re)created.
5. Finished: Succeeded with ``bestTrial``/``bestValue``, or Failed (more than ``maxFailedTrials``
   failed, or none succeeded); trials still running when it fails are stopped.  With
   ``promote: serve`` the best trial's FineTuneJob is applied again with ``winner_spec`` (the
   template's ``serve``): the FineTuneJob controller serves a Succeeded job whose spec.serve appears.
6. Events: what changed between the stored status and the decided one (``sweep_events``): each trial
   asked (TrialCreated, with its parameters), ended (TrialSucceeded/TrialPruned/TrialFailed, with its
   message), a new best trial (NewBestTrial), the sweep's new Validated/phase reason and the
   promotion.  Derived from the two statuses only, so a decision taken again after a 409 or a restart
   announces nothing twice.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubetune.api.contract import API_VERSION, KIND
from kubetune.api.sweep import (
    LABEL_SWEEP,
    MAX_INTERMEDIATE,
    SWEEP_KIND,
    FineTuneSweep,
    FineTuneSweepSpec,
    IntermediateValue,
    TrialRecord,
)
from kubetune.sweep.checks import validate_sweep
from kubetune.sweep import best, finished, next_trials, objective_value, should_prune, summary, trial_spec, winner_spec

from ..decide import EventSpec
from ..reasons import SWEEP_REASONS, with_hint
from ..conditions import get_condition, now_rfc3339, parse_time, set_condition
from .snapshot import SweepSnapshot

ACTIVE = ("Pending", "Running")
ENDED = ("Pruned", "Succeeded", "Failed")


@dataclass(frozen=True)
class SweepDecision:
    status: dict[str, Any]
    """The complete desired status (stored first)."""
    trials: tuple[dict[str, Any], ...] = ()
    """Trial FineTuneJobs to server-side apply, once the status naming them is stored."""
    deletions: tuple[str, ...] = ()
    """Trial FineTuneJobs to delete (pruned, or stopped when the sweep failed)."""
    winner: dict[str, Any] | None = None
    """The best trial's FineTuneJob with spec.serve (promote: serve), applied last."""
    requeue_after: float | None = None
    """When to look again without an event (a trial's evaluation deadline)."""
    events: tuple[EventSpec, ...] = ()
    """Events on the sweep, posted once ``status`` is stored (``sweep_events``)."""


@dataclass
class _Draft:
    snap: SweepSnapshot
    now: str
    status: dict[str, Any] = field(default_factory=dict)

    def cond(self, type_: str, holds: bool | None, reason: str, message: str) -> None:
        assert reason in SWEEP_REASONS, reason
        self.status["conditions"] = set_condition(
            self.status.get("conditions"), type_, holds, reason, message, self.snap.generation, self.now
        )


def validated(snap: SweepSnapshot) -> tuple[FineTuneSweep | None, str]:
    """The sweep, or why not with the fields named: ``kubetune.sweep.checks.validate_sweep`` (the
    CRD's rules in Python, the parameter paths, the template's own checks, the GPU planner on the
    range's extremes), the same checks as ``kubetune validate``; it never raises."""
    body = {k: v for k, v in snap.obj.items() if k != "status"}
    sweep, problems = validate_sweep(body, product_table=snap.gpu_memory_by_product or None)
    if sweep is None or problems:
        return None, "; ".join(str(p) for p in problems[:8]) or "the spec is invalid"
    return sweep, ""


def _field_error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc") or ())
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def decide_sweep(snap: SweepSnapshot, now: float) -> SweepDecision:
    decision = _decide(snap, now)
    return dataclasses.replace(decision, events=sweep_events(snap.status, decision.status))


def _decide(snap: SweepSnapshot, now: float) -> SweepDecision:
    draft = _Draft(snap, now_rfc3339(now), copy.deepcopy(dict(snap.status)))
    status = draft.status
    status["observedGeneration"] = snap.generation
    sweep, problems = validated(snap)
    if sweep is None:
        message = with_hint("InvalidSweep", problems or "the spec is invalid")
        draft.cond("Validated", False, "InvalidSweep", message)
        if not status.get("trials"):
            status.update(phase="Failed", message=message)
        return SweepDecision(status)
    spec = sweep.spec
    draft.cond("Validated", True, "SweepValid", "the spec and its template are valid")
    try:
        records = [TrialRecord.model_validate(t) for t in status.get("trials") or []]
    except ValidationError as exc:  # only the operator writes status; never crash on a hand-edited one
        message = with_hint(
            "InvalidSweep", f"status.trials cannot be read ({_field_error(exc.errors()[0])}); the study cannot go on"
        )
        draft.cond("Validated", False, "InvalidSweep", message)
        status.update(phase="Failed", message=message)
        return SweepDecision(status)

    deletions: list[str] = []
    records = [_follow(spec, snap, r, now) for r in records]
    for i, record in enumerate(records):
        if record.state == "Running" and _new_intermediate(snap.status, record) and should_prune(spec, records, record):
            last = record.intermediate[-1]
            records[i] = record.model_copy(
                update={
                    "state": "Pruned",
                    "value": last.value,
                    "message": f"pruned at step {last.step}: eval loss {last.value:.4g} ({spec.early_stopping} "
                    f"pruner); FineTuneJob {record.name} deleted",
                }
            )
            deletions.append(record.name)

    # A trial stopped earlier whose FineTuneJob is still there (the delete after the stored status failed,
    # or the operator restarted in between): delete it again, or it keeps its GPUs.
    deletions += [
        r.name
        for r in records
        if r.state == "Pruned"
        and r.name in snap.trials
        and r.name not in deletions
        and not (snap.trials[r.name].get("metadata") or {}).get("deletionTimestamp")
    ]

    done, why = finished(spec, records)
    failed = sum(r.state == "Failed" for r in records)
    if not done and failed > spec.max_failed_trials:
        done = True
    if not done:
        active = sum(r.state in ACTIVE for r in records)
        room = min(spec.parallelism - active, spec.max_trials - len(records))
        if room > 0:
            records.extend(next_trials(spec, records, room, snap.name))
        done, why = finished(spec, records)

    winner = best(spec, records)
    failed = sum(r.state == "Failed" for r in records)
    status["trials"] = [r.to_api() for r in records]
    if winner is not None:
        status.update(bestTrial=winner.name, bestValue=winner.value)
    status["summary"] = summary(spec, records)[:64]

    if failed > spec.max_failed_trials or (done and winner is None):
        return _failed(draft, spec, records, deletions, failed)
    if done and not any(r.state in ACTIVE for r in records):
        assert winner is not None
        return _succeeded(draft, spec, records, winner, deletions)
    return _running(draft, spec, records, deletions, why if done else "", now)


PREDECESSOR_RECHECK_S = 5.0
"""How soon a sweep whose trial names are held by an earlier sweep's trials (being collected) looks again."""

EVALUATION_GRACE_S = 600.0
"""How long after a trial's FineTuneJob Succeeded its evaluation may still arrive (the operator reads a
finished job's evaluation late when the log tail had not shown it yet: controller/decide.py _late_evaluation)."""
WAITING = "succeeded; waiting for its evaluation (status.evaluation)"


def _evaluation_deadline(job: Mapping[str, Any]) -> float | None:
    done = parse_time((job.get("status") or {}).get("completionTime"))
    return done + EVALUATION_GRACE_S if done is not None else None


def _follow(spec: FineTuneSweepSpec, snap: SweepSnapshot, record: TrialRecord, now: float) -> TrialRecord:
    """A trial that has not ended, as its FineTuneJob now says."""
    if record.state in ENDED:
        return record
    if record.name in snap.refused:
        return record.model_copy(
            update={
                "state": "Failed",
                "message": f"the API server refused FineTuneJob {record.name}: {snap.refused[record.name]}"[:1024],
            }
        )
    if record.name in snap.predecessor:
        return record.model_copy(
            update={
                "message": f"waiting for FineTuneJob {record.name} of an earlier sweep of this name to "
                "be deleted (garbage collector)"
            }
        )
    if record.name in snap.foreign:
        return record.model_copy(
            update={
                "state": "Failed",
                "message": f"a FineTuneJob {record.name} exists that this sweep does not "
                "own; the trial was not created",
            }
        )
    job = snap.trials.get(record.name)
    if job is None:
        if record.state == "Running":
            return record.model_copy(
                update={"state": "Failed", "message": f"FineTuneJob {record.name} was deleted while it ran"}
            )
        return record  # Pending: created (again) by this decision
    status = job.get("status") or {}
    record = _intermediate(spec, record, status)
    phase = status.get("phase")
    if phase in ("Running", "Exporting"):
        return record.model_copy(update={"state": "Running"})
    if phase == "Failed":
        return record.model_copy(
            update={
                "state": "Failed",
                "message": f"FineTuneJob {record.name} failed: {status.get('message') or 'no message'}"[:1024],
            }
        )
    if phase == "Succeeded":
        value, missing = _objective(spec, status)
        deadline = _evaluation_deadline(job)
        if value is None and not status.get("evaluation") and (deadline is None or now < deadline):
            return record.model_copy(update={"state": "Running", "message": f"FineTuneJob {record.name} {WAITING}"})
        if value is None:
            return record.model_copy(
                update={"state": "Failed", "message": f"FineTuneJob {record.name} succeeded but {missing}"[:1024]}
            )
        return record.model_copy(update={"state": "Succeeded", "value": value, "message": ""})
    return record  # Pending or Suspended (queued in Kueue, pods not started)


def _intermediate(spec: FineTuneSweepSpec, record: TrialRecord, status: Mapping[str, Any]) -> TrialRecord:
    """status.progress.evalLoss at evalStep appended once per step (the objective's scale: perplexity is exp(loss))."""
    progress = status.get("progress") or {}
    loss, step = progress.get("evalLoss"), progress.get("evalStep")
    if not isinstance(loss, (int, float)) or not isinstance(step, int) or not math.isfinite(loss):
        return record
    if spec.objective.metric == "evalLoss":
        value = float(loss)
    elif spec.objective.metric == "perplexity":
        value = math.exp(min(float(loss), 700.0))
    else:
        return record  # BLEU/ROUGE come from generation at the end only: nothing to prune on
    if any(v.step == step for v in record.intermediate) or (
        record.intermediate and step < record.intermediate[-1].step
    ):
        return record
    kept = [*record.intermediate, IntermediateValue(step=step, value=value)]
    return record.model_copy(
        update={"intermediate": kept[-MAX_INTERMEDIATE:]}
    )  # the newest ones: what the pruner compares


def _new_intermediate(before: Mapping[str, Any], record: TrialRecord) -> bool:
    """Whether ``record`` got an intermediate value since the stored status (the pruner judges each once)."""
    if not record.intermediate:
        return False
    stored = next(
        (t for t in before.get("trials") or [] if isinstance(t, Mapping) and t.get("name") == record.name), {}
    )
    steps = {v.get("step") for v in stored.get("intermediate") or [] if isinstance(v, Mapping)}
    return record.intermediate[-1].step not in steps


def _objective(spec: FineTuneSweepSpec, status: Mapping[str, Any]) -> tuple[float | None, str]:
    metric = spec.objective.metric
    evaluation = status.get("evaluation") or {}
    if evaluation.get("state") == "Failed":
        return None, f"its evaluation failed: {evaluation.get('message') or 'no message'}"
    value = objective_value(spec, evaluation.get("trained") or {})
    if value is None:
        return None, f"its status.evaluation.trained has no {metric}"
    return value, ""


def _counts(records: list[TrialRecord]) -> dict[str, int]:
    counts = {s: 0 for s in (*ACTIVE, *ENDED)}
    for r in records:
        counts[r.state] += 1
    counts["ended"] = sum(counts[s] for s in ENDED)
    return counts


def trial_object(snap: SweepSnapshot, record: TrialRecord, spec: dict[str, Any]) -> dict[str, Any]:
    """A trial FineTuneJob as applied: labelled with the sweep, controlled by it (deleting the sweep
    deletes its trials through the garbage collector)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": record.name,
            "namespace": snap.namespace,
            "labels": {LABEL_SWEEP: snap.name, "app.kubernetes.io/managed-by": "kubetune"},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": SWEEP_KIND, "name": snap.name, "uid": snap.uid, "controller": True}
            ],
        },
        "spec": spec,
    }


def _to_create(snap: SweepSnapshot, spec: FineTuneSweepSpec, records: list[TrialRecord]) -> tuple[dict[str, Any], ...]:
    return tuple(
        trial_object(snap, r, trial_spec(spec, r))
        for r in records
        if r.state == "Pending"
        and r.name not in snap.trials
        and r.name not in snap.foreign
        and r.name not in snap.refused
        and r.name not in snap.predecessor
    )


def _running(
    draft: _Draft, spec: FineTuneSweepSpec, records: list[TrialRecord], deletions: list[str], why: str, now: float
) -> SweepDecision:
    status, snap = draft.status, draft.snap
    counts = _counts(records)
    running, pending = counts["Running"], counts["Pending"]
    asked = f"{len(records)} of {spec.max_trials} trials asked, {counts['ended']} ended"
    waiting = [r for r in records if r.state == "Running" and r.message.endswith(WAITING)]
    if waiting and len(waiting) == running:
        reason, holds = "WaitingForTrialEvaluation", True
        message = f"{', '.join(r.name for r in waiting)} succeeded; waiting for the evaluation result; {asked}"
    elif running == 0 and pending > 0:
        reason, holds = "TrialsQueued", False
        message = with_hint("TrialsQueued", f"{pending} trial(s) Pending; {asked}")
    elif running + pending >= spec.parallelism and len(records) < spec.max_trials:
        reason, holds = "ParallelismReached", True
        message = f"{running} running, {pending} pending: spec.parallelism is {spec.parallelism}; {asked}"
    else:
        reason, holds = "TrialsRunning", True
        message = f"{running} running, {pending} pending; {asked}" + (f" ({why})" if why else "")
    draft.cond("Running", holds, reason, message)
    status.update(phase="Running" if records and (running or counts["ended"]) else "Pending", message=message)
    deadlines = [d for r in waiting if (d := _evaluation_deadline(snap.trials.get(r.name) or {})) is not None]
    requeue = max(0.0, min(deadlines) - now) if deadlines else None
    if any(r.name in snap.predecessor for r in records if r.state == "Pending"):
        # The collector's delete reaches the trials' informer and kopf's cache of every FineTuneJob at
        # different times; look again rather than wait for an event that may have come first.
        requeue = min(requeue, PREDECESSOR_RECHECK_S) if requeue is not None else PREDECESSOR_RECHECK_S
    return SweepDecision(status, _to_create(snap, spec, records), tuple(deletions), requeue_after=requeue)


def _failed(
    draft: _Draft, spec: FineTuneSweepSpec, records: list[TrialRecord], deletions: list[str], failed: int
) -> SweepDecision:
    status, snap = draft.status, draft.snap
    stopped = list(deletions)
    for i, r in enumerate(records):
        if r.state in ACTIVE:
            records[i] = r.model_copy(update={"state": "Pruned", "message": "stopped: the sweep failed"})
            if r.name in snap.trials:
                stopped.append(r.name)
    status["trials"] = [r.to_api() for r in records]
    status["summary"] = summary(spec, records)[:64]
    if failed > spec.max_failed_trials:
        reason = "MaxFailedTrialsReached"
        message = with_hint(reason, f"{failed} trials failed, more than spec.maxFailedTrials={spec.max_failed_trials}")
    else:
        reason = "NoTrialSucceeded"
        message = with_hint(reason, f"all {len(records)} trials ended and none reported {spec.objective.metric}")
    draft.cond("Running", False, reason, message)
    draft.cond("Failed", True, reason, message)
    status.update(phase="Failed", message=message)
    return SweepDecision(status, (), tuple(stopped))


def _succeeded(
    draft: _Draft, spec: FineTuneSweepSpec, records: list[TrialRecord], winner: TrialRecord, deletions: list[str]
) -> SweepDecision:
    status, snap = draft.status, draft.snap
    message = f"{len(records)} trials ended; best trial {winner.name}: {spec.objective.metric} {winner.value:.6g}"
    draft.cond("Running", False, "SweepSucceeded", message)
    draft.cond("Succeeded", True, "SweepSucceeded", message)
    status.update(phase="Succeeded", message=message)
    promoted: dict[str, Any] | None = None
    if spec.promote == "serve":
        before = get_condition(snap.status.get("conditions"), "Promoted") or {}
        if winner.name not in snap.trials:
            draft.cond(
                "Promoted",
                False,
                "WinnerMissing",
                with_hint("WinnerMissing", f"FineTuneJob {winner.name} (the best trial) does not exist"),
            )
            status["conditions"] = [
                c for c in status.get("conditions") or [] if c.get("type") != "Serving"
            ]  # nothing serves
        else:
            draft.cond(
                "Promoted",
                True,
                "WinnerPromoted",
                f"FineTuneJob {winner.name} (the best trial) serves as spec.template.serve says; "
                "its status.serving says where",
            )
            # Once per sweep generation (and at the operator's first look): the winner's FineTuneJob
            # then owns spec.serve, and the FineTuneJob controller creates the serving objects.
            served = ((snap.trials[winner.name].get("spec") or {}).get("serve")) is not None
            if (
                snap.first_seen
                or not served
                or before.get("reason") != "WinnerPromoted"
                or before.get("observedGeneration") != snap.generation
            ):
                promoted = trial_object(snap, winner, winner_spec(spec, winner))
            draft.cond("Serving", *_winner_serving(snap.trials[winner.name], winner.name, fresh=promoted is None))
    return SweepDecision(status, (), tuple(deletions), promoted)


def _winner_serving(job: Mapping[str, Any], name: str, fresh: bool) -> tuple[bool | None, str, str]:
    """The sweep's Serving condition: the winner FineTuneJob's own (the FineTuneJob controller's
    ``Serving``, reasons ServingReady/ServingStarting/...), so that ``kubectl get fts`` and Argo CD's
    health check (examples/argocd/health/finetunesweep.lua) say whether the model is really served.
    Until that job reports Serving for its current spec (the promotion just applied, or its
    controller has not acted on it yet: the condition's observedGeneration is older than the job's
    metadata.generation), Serving=False/ServingStarting."""
    generation = (job.get("metadata") or {}).get("generation")
    cond = get_condition((job.get("status") or {}).get("conditions"), "Serving")
    current = cond is not None and (generation is None or cond.get("observedGeneration") in (None, generation))
    if (
        fresh
        and current
        and cond is not None
        and cond.get("reason") in SWEEP_REASONS
        and SWEEP_REASONS[str(cond["reason"])].condition == "Serving"
    ):
        holds = {"True": True, "False": False}.get(str(cond.get("status")))
        return holds, str(cond["reason"]), f"FineTuneJob {name}: {cond.get('message') or cond['reason']}"
    return (
        False,
        "ServingStarting",
        f"FineTuneJob {name} (the best trial) got spec.serve; its controller has not reported serving it yet",
    )


def _trial_states(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(t["name"]): t for t in status.get("trials") or [] if isinstance(t, Mapping) and t.get("name")}


def _parameters_text(trial: Mapping[str, Any]) -> str:
    params = trial.get("parameters") or {}
    return (
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        if isinstance(params, Mapping)
        else ""
    )


def _reason_of(status: Mapping[str, Any], type_: str) -> tuple[str | None, str | None, str | None]:
    cond = get_condition(status.get("conditions"), type_) or {}
    return cond.get("reason"), cond.get("status"), cond.get("message")


def sweep_events(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[EventSpec, ...]:
    """The Events that announce the change from the stored status ``before`` to the decided ``after``:
    one per trial asked or ended, one for a new best trial, and one per new reason of the sweep's
    Validated, Failed, Succeeded and Promoted conditions (a Warning where the sweep cannot go on)."""
    events: list[EventSpec] = []
    old = _trial_states(before)
    for name, trial in _trial_states(after).items():
        state, was = trial.get("state"), (old.get(name) or {}).get("state")
        if state == was:
            continue
        if name not in old:
            events.append(
                EventSpec("Normal", "TrialCreated", f"trial {name} asked: {_parameters_text(trial) or 'no parameters'}")
            )
        if state == "Succeeded":
            events.append(EventSpec("Normal", "TrialSucceeded", f"trial {name} succeeded: {trial.get('value')}"))
        elif state == "Pruned":
            events.append(
                EventSpec("Normal", "TrialPruned", f"trial {name}: {trial.get('message') or 'pruned'}"[:1024])
            )
        elif state == "Failed":
            events.append(
                EventSpec("Warning", "TrialFailed", f"trial {name}: {trial.get('message') or 'failed'}"[:1024])
            )
    best = after.get("bestTrial")
    if best and best != before.get("bestTrial"):
        events.append(EventSpec("Normal", "NewBestTrial", f"best trial so far: {best} ({after.get('bestValue')})"))
    for type_ in ("Validated", "Failed", "Succeeded", "Promoted"):
        reason, holds, message = _reason_of(after, type_)
        if reason is None or (reason, message) == _reason_of(before, type_)[::2]:
            continue
        if type_ == "Validated" and holds == "True":
            continue  # a valid spec is the normal case: no Event (an InvalidSweep is one)
        warning = holds == "False" if type_ in ("Validated", "Promoted") else type_ == "Failed"
        events.append(EventSpec("Warning" if warning else "Normal", str(reason), str(message or reason)))
    return tuple(events)
