"""The two reconcile paths: start a job (create/resume) and react to a spec change.

Each returns the status fields to merge (the handler hands them to kopf's
``patch``) and never touches ``spec``: GitOps tools must see no drift.

Spec changes after start (see ``IMMUTABLE_FIELDS`` in the API):
* immutable fields (model, data, method, hyperparameters, resources, storage,
  extraArgs) -> ``Validated=False`` / ``ImmutableFieldChanged`` naming the
  field, a Warning Event, and no change to the children;
* ``suspend`` -> re-applied to the child's ``runPolicy.suspend`` (the Kubeflow
  controller then deletes or recreates the pods) unless a Kueue queue is named,
  in which case Kueue owns suspension and the renderer leaves it out;
* ``scheduling``, ``export``, ``env``, ``image``, ``imagePullSecrets``,
  ``runPolicy`` -> re-applied to the ConfigMap and pod templates; running pods
  keep their settings, they apply from the next (re)start of pods.
* Nothing changes once the job has Succeeded or Failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubetune.api import TERMINAL_PHASES, FineTuneJob, broken_transition_rules
from kubetune.render import Problem, Rendered, render, validate_object

from .children import applied_spec, apply_children, child_ref, gpus, output_location, strip_status
from .kube import ApiError
from .runtime import Runtime
from .status import get_condition, now_rfc3339, set_condition

Status = dict[str, Any]


def _generation(obj: Mapping[str, Any]) -> int | None:
    gen = obj.get("metadata", {}).get("generation")
    return int(gen) if gen is not None else None


def _problems_text(problems: list[Problem]) -> str:
    return "; ".join(str(p) for p in problems)


def _matching(status: Mapping[str, Any], message: str) -> Mapping[str, Any] | None:
    """The Validated condition if it already reports exactly ``message`` as False."""
    cond = get_condition(status.get("conditions"), "Validated")
    return cond if cond is not None and cond.get("status") == "False" and cond.get("message") == message else None


def started(status: Mapping[str, Any]) -> bool:
    """Children were created for this job at some point."""
    return bool(status.get("job"))


async def _reject(rt: Runtime, obj: Mapping[str, Any], status: Mapping[str, Any], problems: list[Problem]) -> Status:
    """Invalid spec: phase Failed (if never started), Validated=False naming the fields, a Warning Event."""
    gen, now = _generation(obj), now_rfc3339()
    message = _problems_text(problems)
    conditions = set_condition(status.get("conditions"), "Validated", False, "InvalidSpec", message, gen, now)
    out: Status = {"observedGeneration": gen, "conditions": conditions, "message": message}
    if not started(status):
        out.update(phase="Failed", completionTime=status.get("completionTime") or now)
    if _matching(status, message) is None:  # once per distinct problem, not per retry or restart
        await rt.post_event(obj, "Warning", "InvalidSpec", message)
    return out


async def _validate_and_render(rt: Runtime, obj: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[FineTuneJob, Rendered]:
    """The same checks as ``kubetune validate``; an invalid spec is rejected (Failed, Event, no children)."""
    job, problems = validate_object(strip_status(obj))
    if job is None or problems:
        raise Rejected(await _reject(rt, obj, status, problems), _problems_text(problems))
    return job, render(job, rt.config.render_options)


async def start(rt: Runtime, obj: Mapping[str, Any]) -> Status:
    """Validate, render, apply the children (create or adopt), report Pending with the child refs."""
    status: Mapping[str, Any] = obj.get("status") or {}
    if status.get("phase") in TERMINAL_PHASES and started(status):
        return {}  # a finished job is never run again, even if its children were cleaned up
    if started(status):
        # Resumed after an operator restart: the spec may have changed while nobody watched,
        # so take the path that checks immutable fields against the running children.
        return await spec_changed(rt, obj)
    job, rendered = await _validate_and_render(rt, obj, status)
    with rt.retrying("start"):
        try:
            await apply_children(rt.kube, rendered)
        except ApiError as exc:
            if exc.status == 404:
                await _kind_missing(rt, obj, status, rendered.workload, exc)
            if exc.transient or exc.status in (401, 403):
                raise
            return await _child_rejected(rt, obj, status, exc)
    gen, now = _generation(obj), now_rfc3339()
    conditions = set_condition(status.get("conditions"), "Validated", True, "Valid", "the spec is valid", gen, now)
    kinds = f"ConfigMap {rendered.config_map['metadata']['name']} and {rendered.workload['kind']} {rendered.workload['metadata']['name']}"
    conditions = set_condition(conditions, "Created", True, "ChildrenCreated", f"created {kinds}", gen, now)
    out: Status = {
        "observedGeneration": gen,
        "conditions": conditions,
        "job": child_ref(rendered),
        "configMap": rendered.config_map["metadata"]["name"],
        "output": output_location(job),
        "gpus": gpus(job),
    }
    out.update(phase="Pending", message=f"created {kinds}; waiting for the training pods")
    await rt.post_event(obj, "Normal", "Created", f"created {kinds}")
    return out


async def _kind_missing(rt: Runtime, obj: Mapping[str, Any], status: Mapping[str, Any], workload: Mapping[str, Any], exc: ApiError) -> None:
    """The cluster does not serve the child's kind (Kubeflow not installed): say so, retry later."""
    gen, now = _generation(obj), now_rfc3339()
    kind, api_version = workload["kind"], workload["apiVersion"]
    operator_name = "mpi-operator (MPIJob v2beta1)" if kind == "MPIJob" else "Kubeflow training-operator (PyTorchJob v1)"
    message = f"the cluster does not serve {kind} {api_version}: install the {operator_name}; retrying ({exc.message})"
    conditions = set_condition(status.get("conditions"), "Created", False, "KindNotInstalled", message, gen, now)
    previous = get_condition(status.get("conditions"), "Created")
    if previous is None or previous.get("reason") != "KindNotInstalled":  # one Event, not one per retry
        await rt.post_event(obj, "Warning", "KindNotInstalled", message)
    out: Status = {"observedGeneration": gen, "conditions": conditions, "phase": "Pending", "message": message}
    rt.metrics.api_retries.labels("404").inc()
    raise Deferred(out, message, delay=6 * rt.config.retry_delay_s)


async def _child_rejected(rt: Runtime, obj: Mapping[str, Any], status: Mapping[str, Any], exc: ApiError) -> Status:
    """The API server (or an admission webhook) refused a rendered child: no retry will help."""
    gen, now = _generation(obj), now_rfc3339()
    message = f"the API server rejected a child object: {exc.message} ({exc.status} {exc.reason})"
    conditions = set_condition(status.get("conditions"), "Created", False, "ChildRejected", message, gen, now)
    await rt.post_event(obj, "Warning", "ChildRejected", message)
    out: Status = {"observedGeneration": gen, "conditions": conditions, "message": message}
    if not started(status):
        out.update(phase="Failed", completionTime=now)
    raise Rejected(out, message)


async def spec_changed(rt: Runtime, obj: Mapping[str, Any]) -> Status:
    """A spec edit on a started job: reject immutable changes, apply mutable ones."""
    status: Mapping[str, Any] = obj.get("status") or {}
    if not started(status):
        return await start(rt, obj)  # e.g. an invalid job fixed by the user: start it now
    gen = _generation(obj)
    if status.get("phase") in TERMINAL_PHASES:
        return {"observedGeneration": gen}
    job, rendered = await _validate_and_render(rt, obj, status)
    with rt.retrying("update"):
        running_spec = await applied_spec(rt.kube, rendered)
        broken = broken_transition_rules(job.spec, running_spec) if running_spec is not None else []
        now = now_rfc3339()
        if broken:
            message = " | ".join(rule.message for rule in broken) + "; the running job keeps its original settings"
            if _matching(status, message) is None:
                await rt.post_event(obj, "Warning", "ImmutableFieldChanged", message)  # once, not per restart
            conditions = set_condition(status.get("conditions"), "Validated", False, "ImmutableFieldChanged", message, gen, now)
            return {"observedGeneration": gen, "conditions": conditions, "message": message}
        await apply_children(rt.kube, rendered)
    conditions = set_condition(status.get("conditions"), "Validated", True, "Valid", "the spec is valid", gen, now)
    if running_spec is not None and running_spec.suspend != job.spec.suspend:
        verb = "Suspending" if job.spec.suspend else "Resuming"
        await rt.post_event(obj, "Normal", verb, f"{verb.lower()} {rendered.workload['kind']} {rendered.workload['metadata']['name']}")
    return {"observedGeneration": gen, "conditions": conditions}


class Rejected(kopf.PermanentError):
    """Bad input: kopf must not retry; the status to report travels with the error."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status



class Deferred(kopf.TemporaryError):
    """Retry later; the status to report meanwhile travels with the error."""

    def __init__(self, status: Status, message: str, delay: float) -> None:
        super().__init__(message, delay=delay)
        self.status = status
