"""``decide``: snapshot in, decision out. One row per documented reason (``reasons.REASONS``)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.support.harness import example_job

from kubetune.api import Condition, FineTuneJob, FineTuneJobStatus
from kubetune.controller.cache import Termination
from kubetune.controller.decide import Decision, decide
from kubetune.controller.progress import LogReading, read_log
from kubetune.controller.reasons import REASONS
from kubetune.controller.snapshot import ApplyFailure, Prerequisite, Snapshot
from kubetune.controller.conditions import merge_diff
from kubetune.render import RenderOptions, validate_object

NOW = 1_800_000_000.0
NS, NAME = "team-a", "qwen-lora"
REF = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": NAME}
STARTED = {
    "phase": "Pending",
    "observedGeneration": 1,
    "job": REF,
    "configMap": f"{NAME}-kubetune",
    "conditions": [
        {
            "type": "Validated",
            "status": "True",
            "reason": "Valid",
            "message": "the spec is valid",
            "observedGeneration": 1,
            "lastTransitionTime": "T0",
        },
        {
            "type": "Created",
            "status": "True",
            "reason": "ChildrenCreated",
            "message": "created",
            "observedGeneration": 1,
            "lastTransitionTime": "T0",
        },
    ],
}


def child(*conditions: str, labels: dict[str, str] | None = None, created: float = NOW - 10) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "labels": labels or {},
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        },
        "spec": {"runPolicy": {}},
        "status": {
            "conditions": [
                {
                    "type": c,
                    "status": "True",
                    "reason": f"PyTorchJob{c}",
                    "message": f"PyTorchJob {NAME} is {c.lower()}.",
                }
                for c in conditions
            ]
        },
    }


def pod(phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{NAME}-master-0",
            "namespace": NS,
            "uid": "u1",
            "labels": {"training.kubeflow.org/job-name": NAME, "training.kubeflow.org/replica-type": "master"},
        },
        "spec": {"containers": [{"name": "pytorch"}]},
        "status": {"phase": phase, **status},
    }


def waiting(reason: str, message: str) -> dict[str, Any]:
    return pod(containerStatuses=[{"name": "pytorch", "state": {"waiting": {"reason": reason, "message": message}}}])


def unschedulable(message: str) -> dict[str, Any]:
    return pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}])


def snap(
    *, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1, **fields: Any
) -> Snapshot:
    obj = example_job(NAME, NS, **(spec or {}))
    obj["metadata"].update(generation=generation, resourceVersion="7", uid="uid-1")
    obj["status"] = copy.deepcopy(status if status is not None else STARTED)
    job, problems = validate_object({k: v for k, v in obj.items() if k != "status"})
    base: dict[str, Any] = dict(
        namespace=NS,
        name=NAME,
        obj=obj,
        generation=generation,
        resource_version="7",
        status=obj["status"],
        job=job,
        problems=tuple(problems),
        render_options=RenderOptions(),
        child_kind="PyTorchJob",
        child=None,
        child_kind_served=True,
    )
    base.update(fields)
    return Snapshot(**base)


def applied(**changes: Any) -> Any:
    doc = example_job(NAME, NS)
    doc["spec"].update(changes)
    return FineTuneJob.from_api(doc).spec


def terminations(*codes: int) -> tuple[Termination, ...]:
    return tuple(Termination(f"{NAME}-master-0", f"uid-{i}", code, "Error") for i, code in enumerate(codes))


def cond(decision: Decision, type_: str) -> dict[str, Any]:
    return next((c for c in decision.status.get("conditions") or [] if c["type"] == type_), {})


RES_8GI = {**example_job()["spec"]["resources"], "gpuMemory": "8Gi"}
RES_80GI = {**example_job()["spec"]["resources"], "gpuMemory": "80Gi"}


EVAL_FAILED = (
    'kubetune.stage {"stage": "evaluate", "event": "end", "evaluation": {"state": '
    '"Failed", "message": "no eval split"}}'
)
FROM_BASE = {"fromJob": "base-sft", "template": "qwen"}


def source(phase: str | None, name: str = "base-sft", **spec: Any) -> dict[str, Any]:
    obj = example_job(name, NS, **spec)
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "message": "exit code 1" if phase == "Failed" else "",
            "conditions": [{"type": phase, "status": "True", "reason": "JobFailed", "message": "exit code 1"}]
            if phase == "Failed"
            else [],
        }
    return obj


SUCCEEDED = {**STARTED, "phase": "Succeeded", "completionTime": "T1"}
SERVE = {"serve": {}}
EVAL_SPEC = {"evaluation": {"valSize": 0.1, "baseModel": True}, "serve": {"when": "evaluationImproves"}}
DEPLOYMENT = f"{NAME}-serve"
STARTING = {
    **SUCCEEDED,
    "conditions": [
        *SUCCEEDED["conditions"],
        {
            "type": "Serving",
            "status": "False",
            "reason": "ServingStarting",
            "message": "created",
            "observedGeneration": 1,
            "lastTransitionTime": "T1",
        },
    ],
}


def evaluated(trained: dict[str, float], base: dict[str, float] | None) -> dict[str, Any]:
    evaluation: dict[str, Any] = {"state": "Succeeded", "trained": trained, "summary": "x"}
    if base is not None:
        evaluation["base"] = base
    return {**SUCCEEDED, "evaluation": evaluation}


def deployment(ready: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "generation": generation},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": observed, "readyReplicas": ready},
    }


def serving_snap(observed: dict[str, Any] | None = None, **fields: Any) -> Snapshot:
    fields.setdefault("serving", {"Deployment": observed})
    fields.setdefault("serving_served", {"Deployment": True})
    return snap(
        spec=fields.pop("spec", SERVE), status=fields.pop("status", SUCCEEDED), child=child("Succeeded"), **fields
    )


KAITO = {
    "serve": {"engine": "kaito"},
    "export": {"enabled": False},
    "hfTokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"},
}


def copy_job(condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{NAME}-adapter-copy", "namespace": NS},
        "status": {"conditions": conditions},
    }


def kaito_snap(job: dict[str, Any] | None, workspace: dict[str, Any] | None = None, **fields: Any) -> Snapshot:
    return serving_snap(
        spec=fields.pop("spec", KAITO),
        serving={"Job": job, "Workspace": workspace},
        serving_served={"Job": True, "Workspace": True},
        **fields,
    )


def kinds(decision: Decision) -> list[str]:
    return [c["kind"] for c in decision.children]


# reason -> (snapshot, expected phase, condition type, condition status, extra check)
ROWS: dict[str, tuple[Callable[[], Snapshot], str | None, str, str, Callable[[Decision], Any] | None]] = {
    "Valid": (lambda: snap(status={}), "Pending", "Validated", "True", lambda d: len(d.children) == 2),
    "InvalidSpec": (
        lambda: snap(status={}, spec={"method": "qlora"}),
        "Failed",
        "Validated",
        "False",
        lambda d: not d.children and "spec.quantization" in d.status["message"],
    ),
    "ImmutableFieldChanged": (
        lambda: snap(
            generation=2,
            child=child("Running"),
            applied_spec=applied(training={**example_job()["spec"]["training"], "epochs": 9}),
        ),
        None,
        "Validated",
        "False",
        lambda d: not d.children and "spec.training" in cond(d, "Validated")["message"],
    ),
    # A refused re-apply of a running job: reported, not re-sent before its backoff (5 s after the first refusal).
    "UpdateRejected": (
        lambda: snap(
            generation=2,
            child=child("Running"),
            applied_spec=applied(env=[{"name": "A", "value": "1"}]),
            apply_failure=ApplyFailure(
                2, 403, "Forbidden", 'admission webhook "v.example.com" denied the request: no', at=NOW - 1
            ),
        ),
        None,
        "Validated",
        "False",
        lambda d: (
            not d.children and d.requeue_after == 4.0 and "denied the request: no" in cond(d, "Validated")["message"]
        ),
    ),
    "Fits": (
        lambda: snap(status={}, spec={"resources": RES_80GI}),
        "Pending",
        "Feasible",
        "True",
        lambda d: len(d.children) == 2 and "80.0 GiB" in cond(d, "Feasible")["message"],
    ),
    "InsufficientGPUMemory": (
        lambda: snap(status={}, spec={"resources": RES_8GI}),
        "Pending",
        "Feasible",
        "False",
        lambda d: (
            not d.children
            and "job" not in d.status
            and "exceeds 8.0 GiB" in d.status["message"]
            and "to fit:" in d.status["message"]
            and [e.reason for e in d.events] == ["InsufficientGPUMemory"]
        ),
    ),
    "GPUMemoryUnknown": (
        lambda: snap(status={}),
        "Pending",
        "Feasible",
        "Unknown",
        lambda d: (
            len(d.children) == 2
            and d.status["job"] == REF
            and "spec.resources.gpuMemory is not set and spec.scheduling.nodeSelector names no nvidia.com/gpu.product"
            in cond(d, "Feasible")["message"]
            and "predicted peak" in cond(d, "Feasible")["message"]
            and [e.reason for e in d.events] == ["Created"]
        ),
    ),
    "UnknownArchitecture": (
        lambda: snap(status={}, spec={"resources": RES_80GI, "model": {"name": "acme/private-7b", "template": "qwen"}}),
        "Pending",
        "Feasible",
        "Unknown",
        lambda d: len(d.children) == 2 and "spec.model.name 'acme/private-7b'" in cond(d, "Feasible")["message"],
    ),
    "WaitingForJob": (
        lambda: snap(status={}, spec={"model": FROM_BASE}, sources={"base-sft": source("Running")}),
        "Pending",
        "Created",
        "False",
        lambda d: (
            not d.children
            and "job" not in d.status
            and "base-sft" in d.status["message"]
            and "Running" in d.status["message"]
        ),
    ),
    "FromJobNotFound": (
        lambda: snap(status={}, spec={"model": FROM_BASE}, sources={"base-sft": None}),
        "Failed",
        "Failed",
        "True",
        lambda d: not d.children and "base-sft does not exist" in d.status["message"],
    ),
    "FromJobFailed": (
        lambda: snap(status={}, spec={"model": FROM_BASE}, sources={"base-sft": source("Failed")}),
        "Failed",
        "Failed",
        "True",
        lambda d: not d.children and "exit code 1" in d.status["message"],
    ),
    "FromJobUnusable": (
        lambda: snap(
            status={},
            spec={"model": FROM_BASE},
            sources={"base-sft": source("Succeeded", storage={"outputs": {"claimName": "elsewhere"}})},
        ),
        "Failed",
        "Failed",
        "True",
        lambda d: not d.children and "'elsewhere'" in d.status["message"],
    ),
    "EvaluationFailed": (
        lambda: snap(child=child("Running"), progress=read_log(EVAL_FAILED)),
        "Running",
        "EvaluationFailed",
        "True",
        lambda d: (
            d.status["evaluation"]["state"] == "Failed" and "no eval split" in cond(d, "EvaluationFailed")["message"]
        ),
    ),
    "ChildrenCreated": (
        lambda: snap(status={}),
        "Pending",
        "Created",
        "True",
        lambda d: d.status["job"] == REF and [e.reason for e in d.events] == ["Created"],
    ),
    "KindNotInstalled": (
        lambda: snap(status={}, child_kind_served=False),
        "Pending",
        "Created",
        "False",
        lambda d: not d.children and "Kubeflow training-operator" in d.status["message"],
    ),
    "ChildRejected": (
        lambda: snap(status={}, apply_failure=ApplyFailure(1, 422, "Invalid", "denied by policy")),
        "Failed",
        "Created",
        "False",
        lambda d: "denied by policy" in d.status["message"],
    ),
    "PrerequisitesFound": (
        lambda: snap(status={}, prerequisites=(Prerequisite("PersistentVolumeClaim", "finetune-outputs", True),)),
        "Pending",
        "PrerequisitesReady",
        "True",
        None,
    ),
    "PrerequisiteMissing": (
        lambda: snap(
            status={}, prerequisites=(Prerequisite("PersistentVolumeClaim", "finetune-outputs", False, "not found"),)
        ),
        "Pending",
        "PrerequisitesReady",
        "False",
        lambda d: (
            len(d.children) == 2
            and cond(d, "Running")["reason"] == "PrerequisiteMissing"
            and "PersistentVolumeClaim finetune-outputs in namespace team-a: not found" in d.status["message"]
        ),
    ),
    "PodsPending": (lambda: snap(child=child("Created")), "Pending", "Running", "False", None),
    "Unschedulable": (
        lambda: snap(
            child=child("Created"), pods=(unschedulable("0/4 nodes are available: 4 Insufficient nvidia.com/gpu."),)
        ),
        "Pending",
        "Running",
        "False",
        lambda d: "Insufficient nvidia.com/gpu" in d.status["message"],
    ),
    "VolumeNotReady": (
        lambda: snap(
            child=child("Created"),
            pods=(unschedulable("0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."),),
        ),
        "Pending",
        "Running",
        "False",
        lambda d: "GPUs" not in d.status["message"],
    ),
    "SecretMissing": (
        lambda: snap(
            child=child("Created"), pods=(waiting("CreateContainerConfigError", 'secret "hf-token" not found'),)
        ),
        "Pending",
        "Running",
        "False",
        lambda d: "Secret hf-token does not exist" in d.status["message"] and "spec.image" not in d.status["message"],
    ),
    "CreateContainerConfigError": (
        lambda: snap(
            child=child("Created"), pods=(waiting("CreateContainerConfigError", 'configmap "extra" not found'),)
        ),
        "Pending",
        "Running",
        "False",
        None,
    ),
    "ImagePullBackOff": (
        lambda: snap(child=child("Created"), pods=(waiting("ImagePullBackOff", 'Back-off pulling image "x:bad"'),)),
        "Pending",
        "Running",
        "False",
        None,
    ),
    "ErrImagePull": (
        lambda: snap(child=child("Created"), pods=(waiting("ErrImagePull", "manifest unknown"),)),
        "Pending",
        "Running",
        "False",
        None,
    ),
    "InvalidImageName": (
        lambda: snap(child=child("Created"), pods=(waiting("InvalidImageName", "bad ref"),)),
        "Pending",
        "Running",
        "False",
        None,
    ),
    "WaitingForQueue": (
        lambda: snap(child=child("Created", "Suspended", labels={"kueue.x-k8s.io/queue-name": "gpus"})),
        "Pending",
        "Running",
        "False",
        lambda d: "LocalQueue gpus" in d.status["message"],
    ),
    "ControllerNotRunning": (
        lambda: snap(child={**child(), "status": {}} | {"metadata": child(created=NOW - 300)["metadata"]}),
        "Pending",
        "Running",
        "False",
        lambda d: (
            "PyTorchJob is run by Kubeflow training-operator" in d.status["message"]
            and "?" not in d.status["message"]
            and d.status["message"].count("check that") == 1
        ),
    ),
    "JobRunning": (
        lambda: snap(child=child("Created", "Running")),
        "Running",
        "Running",
        "True",
        lambda d: d.status["startTime"],
    ),
    "Restarting": (
        lambda: snap(child=child("Restarting"), terminations=terminations(130)),
        "Running",
        "Running",
        "True",
        lambda d: d.status["retries"]["count"] == 1 and [e.reason for e in d.events] == ["Restarting", "Running"],
    ),
    "Exporting": (
        lambda: snap(child=child("Running"), progress=read_log('kubetune.stage {"stage": "export", "event": "start"}')),
        "Exporting",
        "Exporting",
        "True",
        lambda d: cond(d, "Running")["status"] == "True",
    ),
    "JobSucceeded": (
        lambda: snap(child=child("Succeeded")),
        "Succeeded",
        "Succeeded",
        "True",
        lambda d: d.status["completionTime"],
    ),
    "JobFailed": (
        lambda: snap(child=child("Failed"), terminations=terminations(1)),
        "Failed",
        "Failed",
        "True",
        lambda d: "exited with code 1 (1-127: permanent, not retried)" in d.status["message"],
    ),
    "OOMKilled": (
        lambda: snap(
            child=child("Failed"),
            pods=(
                pod(
                    "Failed",
                    containerStatuses=[
                        {"name": "pytorch", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
                    ],
                ),
            ),
        ),
        "Failed",
        "Failed",
        "True",
        None,
    ),
    "BackoffLimitExceeded": (
        lambda: snap(
            spec={"runPolicy": {"backoffLimit": 2}}, child=child("Restarting"), terminations=terminations(130, 137, 130)
        ),
        "Failed",
        "Failed",
        "True",
        lambda d: (
            [c["spec"]["runPolicy"]["suspend"] for c in d.children] == [True] and d.status["retries"]["count"] == 3
        ),
    ),
    "JobDeleted": (lambda: snap(child=None), "Failed", "Failed", "True", None),
    "JobSuspended": (
        lambda: snap(spec={"suspend": True}, child=child("Suspended")),
        "Suspended",
        "Suspended",
        "True",
        None,
    ),
    "ServingStarting": (
        lambda: serving_snap(),
        "Succeeded",
        "Serving",
        "False",
        lambda d: (
            kinds(d) == ["Deployment", "Service"]
            and d.status["serving"]["url"] == f"http://{DEPLOYMENT}.{NS}.svc:8000/v1"
            and d.status["serving"]["servedModel"] == NAME
            and not d.status["serving"]["ready"]
            and all(c["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for c in d.children)
        ),
    ),
    "ServingReady": (
        lambda: serving_snap(deployment(1), status=STARTING),
        "Succeeded",
        "Serving",
        "True",
        lambda d: (
            not d.children and d.status["serving"]["ready"] and "1/1 replicas ready" in cond(d, "Serving")["message"]
        ),
    ),
    "ServingKindNotInstalled": (
        lambda: serving_snap(
            spec={"serve": {"engine": "kserve"}},
            serving={"InferenceService": None},
            serving_served={"InferenceService": False},
        ),
        "Succeeded",
        "Serving",
        "False",
        lambda d: (
            not d.children
            and "InferenceService serving.kserve.io/v1beta1" in cond(d, "Serving")["message"]
            and "KServe" in cond(d, "Serving")["message"]
            and "serving" not in d.status
        ),
    ),
    "ServingRejected": (
        lambda: serving_snap(apply_failure=ApplyFailure(1, 403, "Forbidden", "exceeded quota: gpu")),
        "Succeeded",
        "Serving",
        "False",
        lambda d: not d.children and "exceeded quota: gpu" in cond(d, "Serving")["message"],
    ),
    "AdapterCopyFailed": (
        lambda: kaito_snap(copy_job("Failed")),
        "Succeeded",
        "Serving",
        "False",
        lambda d: not d.children and "qwen-lora-adapter-copy failed" in cond(d, "Serving")["message"],
    ),
    "WaitingForEvaluation": (
        lambda: serving_snap(spec=EVAL_SPEC),
        "Succeeded",
        "Serving",
        "False",
        lambda d: not d.children and "serving" not in d.status,
    ),
    "EvaluationNotImproved": (
        lambda: serving_snap(spec=EVAL_SPEC, status=evaluated({"evalLoss": 2.5}, {"evalLoss": 2.1})),
        "Succeeded",
        "Serving",
        "False",
        lambda d: (
            not d.children
            and "eval loss 2.5 >= base 2.1" in cond(d, "Serving")["message"]
            and [e.reason for e in d.events] == ["EvaluationNotImproved"]
        ),
    ),
}


def test_every_documented_reason_has_a_row() -> None:
    assert sorted(ROWS) == sorted(REASONS)


@pytest.mark.parametrize("reason", list(ROWS))
def test_decide(reason: str) -> None:
    make, phase, type_, holds, check = ROWS[reason]
    snapshot = make()
    decision = decide(snapshot, NOW)
    c = cond(decision, type_)
    assert (c.get("reason"), c.get("status")) == (reason, holds), decision.status
    documented = REASONS[reason]
    assert (
        documented.condition,
        "Unknown" if documented.holds is None else "True" if documented.holds else "False",
    ) == (type_, holds)
    if phase is not None:
        assert decision.status["phase"] == phase
        assert documented.phase in (None, phase)
    if documented.hint and reason not in ("PrerequisitesFound",):
        assert documented.hint in c["message"], "the message carries the reason's hint"
    if check is not None:
        assert check(decision), decision
    FineTuneJobStatus.model_validate(decision.status)
    for condition in decision.status.get("conditions") or []:
        Condition.model_validate(condition)
    json.dumps(decision.status)  # plain JSON: what the executor sends


def test_restarting_waits_for_the_failed_pod_before_it_reports_a_retry() -> None:
    """Kubeflow's Restarting can arrive before the failed pod's watch event: the status keeps saying
    Running until the pod explains the restart, and never reports "retry 0"."""
    running = decide(snap(child=child("Created", "Running")), NOW)
    restarting = child("Restarting")
    restarting["status"]["conditions"][0]["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    early = decide(snap(child=restarting, status=running.status), NOW + 1)
    assert (
        cond(early, "Running")["reason"] == "JobRunning"
        and early.requeue_after is not None
        and 0 < early.requeue_after <= 2
    )
    assert not early.events
    pod_seen = tuple(dataclasses.replace(t, seen_at=NOW + 1.5) for t in terminations(130))
    counted = decide(snap(child=restarting, status=running.status, terminations=pod_seen), NOW + 1.5)
    assert cond(counted, "Running")["reason"] == "Restarting" and "retry 1 of" in cond(counted, "Running")["message"]
    # No pod ever explains it (a watch gap): after the settle time the child's word is shown anyway.
    late = decide(snap(child=restarting, status=running.status), NOW + 5)
    assert cond(late, "Running")["reason"] == "Restarting"


def test_a_second_restart_waits_for_its_own_pod_not_the_first_ones() -> None:
    """training-operator sets a new Restarting (fresh lastTransitionTime) each time a Running job's pod
    fails (pkg/util/status.go:116-123 @v1.8.1: Running and Restarting filter each other out); the
    first restart's pod, already counted and shown, must not stand in for the second's, or the status
    says "retry 1" while retry 2 is uncounted (a crash loop restarts within the evidence window)."""
    first = dataclasses.replace(terminations(130)[0], seen_at=NOW - 20)
    running = decide(snap(child=child("Created", "Running"), terminations=(first,)), NOW - 19)
    assert running.status["retries"]["count"] == 1 and cond(running, "Running")["reason"] == "JobRunning"
    restarting = child("Restarting")
    restarting["status"]["conditions"][0]["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    early = decide(snap(child=restarting, status=running.status, terminations=(first,)), NOW + 1)
    assert cond(early, "Running")["reason"] == "JobRunning" and early.requeue_after is not None, cond(early, "Running")
    second = Termination(f"{NAME}-master-0", "uid-second", 137, "OOMKilled", NOW + 1.5)
    counted = decide(snap(child=restarting, status=running.status, terminations=(first, second)), NOW + 1.5)
    assert cond(counted, "Running")["reason"] == "Restarting" and "retry 2 of" in cond(counted, "Running")["message"]


def test_a_restart_whose_pod_came_first_is_shown_at_once() -> None:
    """The pod's failure arrived (and was counted) before the child's Restarting: no wait."""
    pod_first = dataclasses.replace(terminations(130)[0], seen_at=NOW - 0.5)
    running = decide(snap(child=child("Created", "Running"), terminations=(pod_first,)), NOW - 0.4)
    assert running.status["retries"]["count"] == 1
    restarting = child("Restarting")
    restarting["status"]["conditions"][0]["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    shown = decide(snap(child=restarting, status=running.status, terminations=(pod_first,)), NOW + 0.5)
    assert cond(shown, "Running")["reason"] == "Restarting" and "retry 1 of" in cond(shown, "Running")["message"]


def test_a_failure_after_a_restart_waits_for_its_own_pod_before_the_final_status() -> None:
    """With ExitCode, Kubeflow fails a job only on a permanent exit (training-operator
    pkg/controller.v1/common/pod.go:367-372 @v1.8.1). The retried pod of an earlier restart, counted
    already, does not explain it: without the wait the final (frozen) status lacked the exit code."""
    earlier = dataclasses.replace(terminations(130)[0], seen_at=NOW - 60)
    running = decide(snap(child=child("Created", "Running"), terminations=(earlier,)), NOW - 59)
    assert running.status["retries"]["count"] == 1
    failed = child("Failed")
    failed["status"]["conditions"][0]["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    early = decide(snap(child=failed, status=running.status, terminations=(earlier,)), NOW + 1)
    assert early.status["phase"] == "Running" and early.requeue_after is not None, early.status.get("message")
    permanent = Termination(f"{NAME}-master-0", "uid-permanent", 1, "Error", NOW + 1.5)
    final = decide(snap(child=failed, status=running.status, terminations=(earlier, permanent)), NOW + 1.5)
    assert final.status["phase"] == "Failed" and "exited with code 1 (1-127: permanent" in final.status["message"]


def test_a_decision_applied_twice_changes_nothing() -> None:
    """Once the status is stored, the same observation produces no patch and no Event."""
    for make, *_ in ROWS.values():
        first = make()
        once = decide(first, NOW)
        observed = first.child
        if once.children and not first.status.get("job"):  # the executor created the child
            observed = {**once.children[-1], "status": {}}
            observed["metadata"] = {
                **observed["metadata"],
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
            }
        again = decide(dataclasses.replace(first, status=once.status, first_seen=False, child=observed), NOW + 60)
        assert merge_diff(once.status, again.status) == {}, once.status
        assert not again.events, again.events


def test_unschedulable_is_kept_while_no_pod_shows_otherwise() -> None:
    first = decide(snap(child=child("Created"), pods=(unschedulable("0/4 nodes: Insufficient nvidia.com/gpu"),)), NOW)
    # The pod is being recreated: nothing shows that the cause changed.
    kept = decide(snap(child=child("Created"), pods=(), status=first.status), NOW + 15)
    assert cond(kept, "Running")["reason"] == "Unschedulable" and kept.status["phase"] == "Pending"
    # A scheduled pod shows it did.
    scheduled = decide(
        snap(
            child=child("Created"),
            pods=(pod(conditions=[{"type": "PodScheduled", "status": "True"}]),),
            status=first.status,
        ),
        NOW + 30,
    )
    assert cond(scheduled, "Running")["reason"] == "PodsPending"


def test_a_failed_log_read_never_blocks_the_phase() -> None:
    progress = read_log('kubetune.progress {"step": 10, "totalSteps": 100}')
    d = decide(
        snap(
            child=child("Failed"), progress=progress, progress_error="406 NotAcceptable", terminations=terminations(1)
        ),
        NOW,
    )
    assert d.status["phase"] == "Failed" and d.status["progress"]["step"] == 10


def test_progress_keys_the_trainer_stopped_sending_are_cleared() -> None:
    before = {
        **STARTED,
        "phase": "Running",
        "progress": {"step": 9, "totalSteps": 10, "loss": 1.0, "summary": "9/10 (90%)"},
    }
    d = decide(
        snap(
            status=before, child=child("Running"), progress=read_log('kubetune.progress {"step": 10, "totalSteps": 10}')
        ),
        NOW,
    )
    patch = merge_diff(before, d.status)
    assert patch["progress"]["loss"] is None and patch["progress"]["step"] == 10


def test_finished_jobs_never_change() -> None:
    done = {**STARTED, "phase": "Succeeded"}
    d = decide(snap(status=done, generation=3, child=None), NOW)
    assert merge_diff(done, d.status) == {"observedGeneration": 3} and not d.children and not d.events


def test_a_failed_child_waits_briefly_for_the_pod_that_explains_it() -> None:
    failing = child("Failed")
    failing["status"]["conditions"][0]["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 1))
    d = decide(snap(child=failing), NOW)
    assert d.status["phase"] == "Pending" and d.requeue_after is not None and 0 < d.requeue_after <= 3
    later = decide(snap(child=failing), NOW + 5)
    assert later.status["phase"] == "Failed"


def test_a_pushed_progress_report_reaches_status() -> None:
    reading = LogReading({"step": 3, "totalSteps": 30, "percent": 10.0, "summary": "3/30 (10%)"}, False)
    d = decide(snap(child=child("Running"), progress=reading, progress_at=NOW - 1), NOW)
    assert d.status["progress"]["summary"] == "3/30 (10%)"


def test_a_fixed_spec_starts_a_job_that_failed_validation() -> None:
    failed = decide(snap(status={}, spec={"method": "qlora"}), NOW).status
    assert failed["phase"] == "Failed" and failed["completionTime"]
    started = decide(snap(status=failed, generation=2), NOW + 10)
    assert started.status["phase"] == "Pending" and "completionTime" not in started.status
    assert len(started.children) == 2 and cond(started, "Validated")["status"] == "True"
    assert merge_diff(failed, started.status)["completionTime"] is None


def test_auto_tune_renders_the_adjusted_job_and_records_it() -> None:
    """spec.autoTune on a job that does not fit 8 GiB: ZeRO/micro-batch chosen, recorded in
    status and the run record."""
    decision = decide(snap(status={}, spec={"resources": RES_8GI, "autoTune": True}), NOW)
    assert cond(decision, "Feasible")["status"] == "True" and len(decision.children) == 2
    settings = decision.status["autoTune"]["settings"]
    assert decision.status["autoTune"]["changed"] and settings["zeroStage"] == 3
    config_map = json.dumps(decision.children[0])
    assert "kubetune.io/auto-tune" in config_map and '\\"zeroStage\\": 3' in config_map
    FineTuneJobStatus.model_validate(decision.status)
    # once started, the same adjusted children are re-rendered (no Feasible re-check)
    started = {**decision.status, "conditions": decision.status["conditions"]}
    again = decide(
        snap(status=started, spec={"resources": RES_8GI, "autoTune": True}, child=child("Running"), first_seen=True),
        NOW,
    )
    # a re-apply writes the ConfigMap (the record of what runs) last, once the workload took the change
    assert [c["kind"] for c in again.children] == ["PyTorchJob", "ConfigMap"] and json.dumps(
        again.children[-1]
    ) == config_map


def test_gpu_memory_from_the_product_table() -> None:
    spec = {"scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "Tiny-GPU"}}}
    decision = decide(snap(status={}, spec=spec, gpu_memory_by_product={"Tiny-GPU": "8Gi"}), NOW)
    assert cond(decision, "Feasible")["reason"] == "InsufficientGPUMemory" and not decision.children
    # The product is selected but the operator's table does not list it: Unknown, saying so, and the job starts.
    unknown = decide(snap(status={}, spec=spec, gpu_memory_by_product={"NVIDIA-H100-80GB-HBM3": "80Gi"}), NOW)
    feasible = cond(unknown, "Feasible")
    assert (feasible["status"], feasible["reason"]) == ("Unknown", "GPUMemoryUnknown") and len(unknown.children) == 2
    assert (
        "nvidia.com/gpu.product='Tiny-GPU' is not in the operator's GPU table (built in, "
        "extended by the chart's gpuMemoryByProduct" in feasible["message"]
    )
    assert "it lists NVIDIA-H100-80GB-HBM3)" in feasible["message"]
    assert "gpuMemoryByProduct value" in feasible["message"]  # the hint: how to supply it
    no_table = cond(decide(snap(status={}, spec=spec), NOW), "Feasible")["message"]
    assert "the operator has no gpuMemoryByProduct table to look up nvidia.com/gpu.product='Tiny-GPU'" in no_table


def test_a_cpu_job_gets_no_feasible_condition() -> None:
    cpu = {**example_job()["spec"]["resources"], "gpusPerNode": 0}
    training = {**example_job()["spec"]["training"], "precision": "fp32"}
    decision = decide(
        snap(status={}, spec={"resources": cpu, "distributed": {"zeroStage": 0}, "training": training}), NOW
    )
    assert len(decision.children) == 2 and not cond(decision, "Feasible"), decision.status


def test_feasibility_of_a_job_built_on_another_uses_the_source_architecture() -> None:
    """fromJob trains on the source's merged model, so the source's (catalogued) base model is planned."""
    decision = decide(
        snap(status={}, spec={"model": FROM_BASE, "resources": RES_80GI}, sources={"base-sft": source("Succeeded")}),
        NOW,
    )
    feasible = cond(decision, "Feasible")
    assert (feasible["status"], feasible["reason"]) == ("True", "Fits") and len(decision.children) == 2
    private = source("Succeeded", model={"name": "acme/private-7b", "template": "qwen"})
    decision = decide(
        snap(status={}, spec={"model": FROM_BASE, "resources": RES_80GI}, sources={"base-sft": private}), NOW
    )
    feasible = cond(decision, "Feasible")
    assert (feasible["status"], feasible["reason"]) == ("Unknown", "UnknownArchitecture") and len(
        decision.children
    ) == 2
    assert "spec.model.name 'acme/private-7b'" in feasible["message"]


def test_a_job_built_on_a_succeeded_job_loads_its_merged_model() -> None:
    decision = decide(snap(status={}, spec={"model": FROM_BASE}, sources={"base-sft": source("Succeeded")}), NOW)
    assert len(decision.children) == 2 and decision.status["phase"] == "Pending"
    train_yaml = decision.children[0]["data"]["train.yaml"]
    assert "team-a/base-sft/merged" in train_yaml, train_yaml
    # once started, the source's later deletion does not stop following the running child (no re-apply)
    started = dict(decision.status)
    again = decide(
        snap(
            status=started,
            spec={"model": FROM_BASE},
            sources={"base-sft": None},
            child=child("Running"),
            first_seen=True,
        ),
        NOW,
    )
    assert again.status["phase"] == "Running" and not again.children


def test_a_succeeded_evaluation_is_mirrored_without_a_condition() -> None:
    line = EVAL_FAILED.replace('"Failed", "message": "no eval split"', '"Succeeded", "summary": "ppl 12.1 (base 40.3)"')
    decision = decide(snap(child=child("Running"), progress=read_log("noise\n" + line)), NOW)
    assert decision.status["evaluation"]["summary"] == "ppl 12.1 (base 40.3)" and decision.status["phase"] == "Running"
    assert not cond(decision, "EvaluationFailed")


def test_serving_is_applied_once_then_only_on_a_spec_change_or_a_deleted_object() -> None:
    first = decide(serving_snap(), NOW)
    assert kinds(first) == ["Deployment", "Service"]
    steady = decide(serving_snap(deployment(0), status=first.status, first_seen=False), NOW + 1)
    assert not steady.children and cond(steady, "Serving")["reason"] == "ServingStarting"
    deleted = decide(serving_snap(None, status=first.status, first_seen=False), NOW + 2)
    assert kinds(deleted) == ["Deployment", "Service"], "a deleted serving Deployment is created again"
    service = first.children[1]
    kept = decide(
        serving_snap(
            deployment(0),
            status=first.status,
            first_seen=False,
            serving={"Deployment": deployment(0), "Service": service},
        ),
        NOW + 2,
    )
    assert not kept.children
    gone = decide(
        serving_snap(
            deployment(0), status=first.status, first_seen=False, serving={"Deployment": deployment(0), "Service": None}
        ),
        NOW + 2,
    )
    assert kinds(gone) == ["Deployment", "Service"], "a deleted vLLM Service is created again"
    edited = decide(
        serving_snap(
            deployment(1), status=first.status, first_seen=False, generation=2, spec={"serve": {"replicas": 2}}
        ),
        NOW + 3,
    )
    assert kinds(edited) == ["Deployment", "Service"] and edited.children[0]["spec"]["replicas"] == 2


@pytest.mark.parametrize("phase", ["Running", "Failed"])
def test_no_serving_objects_before_success(phase: str) -> None:
    status = {**STARTED, "phase": phase}
    d = decide(
        snap(
            spec=SERVE,
            status=status,
            child=child("Running" if phase == "Running" else "Failed"),
            terminations=terminations(1),
        ),
        NOW,
    )
    assert (
        not any(c["kind"] in ("Deployment", "Service") for c in d.children)
        and "serving" not in d.status
        and not cond(d, "Serving")
    )


def test_the_reconcile_that_sees_success_asks_for_the_next_one_to_serve() -> None:
    d = decide(snap(spec=SERVE, child=child("Succeeded")), NOW)
    assert d.status["phase"] == "Succeeded" and d.requeue_after == 0.0 and not d.children


def test_a_better_evaluation_serves_and_an_evaluation_read_after_success_counts() -> None:
    better = decide(serving_snap(spec=EVAL_SPEC, status=evaluated({"evalLoss": 1.2}, {"evalLoss": 2.1})), NOW)
    assert kinds(better) == ["Deployment", "Service"] and "serving" in better.status
    line = (
        'kubetune.stage {"stage": "evaluate", "event": "end", "evaluation": {"state": "Succeeded", "trained": '
        '{"evalLoss": 1.0}, "base": {"evalLoss": 3.0}}}'
    )
    late = decide(serving_snap(spec=EVAL_SPEC, progress=read_log(line)), NOW)
    assert kinds(late) == ["Deployment", "Service"] and late.status["evaluation"]["base"] == {"evalLoss": 3.0}


@pytest.mark.parametrize(
    ("evaluation", "improved", "words"),
    [
        (None, None, "no evaluation result yet"),
        ({"state": "Failed", "message": "no eval split"}, False, "no eval split"),
        ({"state": "Succeeded", "trained": {"evalLoss": 1.0}}, False, "baseModel"),
        (
            {"state": "Succeeded", "trained": {"evalLoss": 1.0}, "base": {"evalLoss": 1.0}},
            False,
            "eval loss 1 >= base 1",
        ),
        (
            {
                "state": "Succeeded",
                "trained": {"evalLoss": 0.9, "rougeL": 20.0},
                "base": {"evalLoss": 1.0, "rougeL": 25.0},
            },
            False,
            "ROUGE-L 20 < base 25",
        ),
        (
            {
                "state": "Succeeded",
                "trained": {"evalLoss": 0.9, "rougeL": 30.0},
                "base": {"evalLoss": 1.0, "rougeL": 25.0},
            },
            True,
            "ROUGE-L 30 >= base 25",
        ),
        ({"state": "Succeeded", "trained": {"bleu4": 12.0}, "base": {"bleu4": 10.0}}, True, "BLEU-4 12 >= base 10"),
        (
            {"state": "Succeeded", "trained": {"perplexity": 3.0}, "base": {"bleu4": 10.0}},
            False,
            "no metric measured on both",
        ),
    ],
    ids=[
        "none",
        "failed",
        "no-base",
        "equal-loss",
        "loss-better-rouge-worse",
        "both-better",
        "bleu-only",
        "nothing-shared",
    ],
)
def test_evaluation_verdict(evaluation: dict[str, Any] | None, improved: bool | None, words: str) -> None:
    from kubetune.render.serving import evaluation_verdict

    got, why = evaluation_verdict(evaluation)
    assert got is improved and words in why, why


def test_a_serving_object_read_from_a_list_is_read_by_its_engine() -> None:
    """The API server leaves kind and apiVersion off the items of a LIST of built-in kinds
    (kubernetes/kubernetes issues 63676, 98925), so after an operator restart the informer's
    Deployment has no kind: it is still read as the vLLM Deployment it is, and a ready one stays ServingReady."""
    listed = {k: v for k, v in deployment(1).items() if k not in ("kind", "apiVersion")}
    decision = decide(serving_snap(listed, status=STARTING), NOW)
    assert cond(decision, "Serving")["reason"] == "ServingReady", cond(decision, "Serving")["message"]
    assert "1/1 replicas ready" in cond(decision, "Serving")["message"]


def test_kserve_and_kaito_report_the_url_of_their_objects() -> None:
    from kubetune.cluster.serving import observed_state

    isvc = {
        "kind": "LLMInferenceService",
        "metadata": {"name": NAME, "namespace": NS},
        "status": {"url": "http://qwen-lora.team-a.example.com", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert observed_state(isvc) == (True, "http://qwen-lora.team-a.example.com/v1", "Ready")
    # Without spec.router KServe v0.20 fills only status.addresses (pkg/controller/v1alpha2/llmisvc/router.go:354-370).
    routerless = {
        **isvc,
        "status": {
            "addresses": [{"url": f"http://{NAME}-kserve-workload-svc.{NS}.svc.cluster.local"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    # That URL has no port, but the workload Service listens on 8000 only (llmisvc/workload.go:139-148 @v0.20.0):
    # port 80 would refuse the client, so the URL reported is the one that answers.
    assert observed_state(routerless)[:2] == (True, f"http://{NAME}-kserve-workload-svc.{NS}.svc.cluster.local:8000/v1")
    tls = {**isvc, "status": {"addresses": [{"url": f"https://{NAME}-kserve-workload-svc.{NS}.svc.cluster.local"}]}}
    assert observed_state(tls)[1] == f"https://{NAME}-kserve-workload-svc.{NS}.svc.cluster.local:8000/v1"
    workspace = {
        "kind": "Workspace",
        "metadata": {"name": NAME, "namespace": NS},
        "status": {"conditions": [{"type": "InferenceReady", "status": "False"}]},
    }
    assert observed_state(workspace)[:2] == (False, f"http://{NAME}.{NS}.svc:80/v1")
    stale = deployment(1, generation=2, observed=1)
    assert observed_state(stale)[0] is False, "a ready replica of the previous generation is not the new spec serving"


def test_kaito_copies_the_adapter_to_its_own_volume_before_the_workspace() -> None:
    first = decide(kaito_snap(None), NOW)
    assert (
        kinds(first) == ["PersistentVolumeClaim", "ConfigMap", "Job"]
        and cond(first, "Serving")["reason"] == "ServingStarting"
    )
    assert "copying the adapter" in cond(first, "Serving")["message"]
    copying = decide(kaito_snap(copy_job(None), status=first.status, first_seen=False), NOW + 1)
    assert not copying.children, "a running copy is left alone"
    copied = decide(kaito_snap(copy_job("Complete"), status=copying.status, first_seen=False), NOW + 2)
    # The finished copy Job is not applied again: its pod template is immutable (a 422, ServingRejected).
    assert kinds(copied) == ["PersistentVolumeClaim", "ConfigMap", "Workspace"]
    workspace = copied.children[-1]
    (adapter,) = workspace["inference"]["adapters"]
    assert adapter == {
        "source": {
            "name": NAME,
            "volumeSource": {"persistentVolumeClaim": {"claimName": f"{NAME}-adapter", "readOnly": True}},
        }
    }
    ready = {**workspace, "status": {"conditions": [{"type": "InferenceReady", "status": "True"}]}}
    served = decide(kaito_snap(copy_job("Complete"), ready, status=copied.status, first_seen=False), NOW + 3)
    assert not served.children and cond(served, "Serving")["reason"] == "ServingReady"
    assert served.status["serving"]["url"] == f"http://{NAME}.{NS}.svc:80/v1"
    edited = decide(
        kaito_snap(
            copy_job("Complete"),
            ready,
            status=served.status,
            first_seen=False,
            generation=2,
            spec={**KAITO, "env": [{"name": "X", "value": "1"}]},
        ),
        NOW + 4,
    )
    assert "Job" not in kinds(edited) and "Workspace" in kinds(edited), (
        "a spec edit re-applies the Workspace, never the finished copy Job"
    )
    restarted = decide(kaito_snap(copy_job("Complete"), ready, status=served.status, first_seen=True), NOW + 5)
    assert "Job" not in kinds(restarted), "nor does the operator's first look after a restart"


def test_a_lora_reward_adapter_of_another_base_fails_a_ppo_job_on_a_from_job_policy() -> None:
    # Issue 21 item 9: LLaMA-Factory loads the reward adapter onto the policy's base model.
    pairs = [{"name": "pairs", "hub": "o/pairs", "ranking": True}]
    ppo = {"model": FROM_BASE, "training": {"stage": "ppo", "ppo": {"rewardModel": {"fromJob": "rm"}}}}
    adapter_only = {"export": {"enabled": False}}
    other = source(
        "Succeeded",
        name="rm",
        model={"name": "meta-llama/Llama-3.1-8B", "template": "llama3"},
        training={"stage": "rm"},
        datasets=pairs,
        **adapter_only,
    )
    decision = decide(snap(status={}, spec=ppo, sources={"base-sft": source("Succeeded"), "rm": other}), NOW)
    assert decision.status["phase"] == "Failed" and not decision.children
    assert "Llama-3.1-8B" in decision.status["message"] and "policy's base" in decision.status["message"]
    same = source("Succeeded", name="rm", training={"stage": "rm"}, datasets=pairs, **adapter_only)
    policy = source("Succeeded", **adapter_only)  # the policy continues base-sft's adapter on the same base
    assert decide(snap(status={}, spec=ppo, sources={"base-sft": policy, "rm": same}), NOW).status["phase"] != "Failed"


def test_past_the_retry_bound_a_queued_child_is_deleted_not_suspended_and_never_recreated() -> None:
    """Kueue resumes an admitted job it finds suspended (kueue reconciler.go:621-635 @ v0.19.2)."""
    queued = child("Restarting", labels={"kueue.x-k8s.io/queue-name": "gpu"})
    decision = decide(snap(spec={"runPolicy": {"backoffLimit": 0}}, child=queued, terminations=terminations(137)), NOW)
    assert decision.children == () and [(d["kind"], d["metadata"]["name"]) for d in decision.deletions] == [
        ("PyTorchJob", NAME)
    ]
    assert decision.status["phase"] == "Failed" and "was deleted to free its GPUs" in decision.status["message"]
    # the status patch lost a race (409): decided again with the child gone, it is still the retry
    # bound, nothing recreated
    again = decide(snap(spec={"runPolicy": {"backoffLimit": 0}}, child=None, terminations=terminations(137)), NOW)
    assert again.children == () and again.deletions == () and cond(again, "Failed")["reason"] == "BackoffLimitExceeded"


def test_an_env_edit_of_a_running_trainjob_is_immutable_field_changed_and_nothing_is_applied() -> None:
    from kubetune.render import render as render_job

    tj_spec = {"distributed": {**example_job()["spec"].get("distributed", {}), "backend": "trainjob"}}
    job, _ = validate_object(example_job(NAME, NS, **tj_spec))
    assert job is not None
    running = render_job(job, RenderOptions(backend="trainjob")).workload
    running["status"] = {"jobsStatus": [{"name": "node", "active": 1, "ready": 1}]}
    ref = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": NAME}
    edited = snap(
        generation=2,
        spec={**tj_spec, "env": [{"name": "EXTRA", "value": "1"}]},
        status={**STARTED, "job": ref},
        child=running,
        child_kind="TrainJob",
        applied_spec=applied(**tj_spec),
    )
    decision = decide(edited, NOW)
    assert decision.children == ()
    validated = cond(decision, "Validated")
    assert (
        validated["reason"] == "ImmutableFieldChanged"
        and "spec.env" in validated["message"]
        and "spec.trainer is immutable" in validated["message"]
    )


def test_a_refused_update_retried_with_backoff_posts_one_event_not_one_per_retry() -> None:
    """Each retry of a refused re-apply updates the condition's count, but the Event is posted once
    for the refusal (a webhook refusing for hours would otherwise leave one Warning per retry)."""
    message = 'admission webhook "v.example.com" denied the request: no'
    first = decide(
        snap(
            generation=2,
            child=child("Running"),
            applied_spec=applied(env=[{"name": "A", "value": "1"}]),
            apply_failure=ApplyFailure(2, 403, "Forbidden", message, at=NOW - 1),
        ),
        NOW,
    )
    assert [e.reason for e in first.events if e.reason == "UpdateRejected"] == ["UpdateRejected"]
    again = decide(
        snap(
            generation=2,
            status=first.status,
            child=child("Running"),
            applied_spec=applied(env=[{"name": "A", "value": "1"}]),
            apply_failure=ApplyFailure(2, 403, "Forbidden", message, attempts=2, at=NOW - 1),
        ),
        NOW,
    )
    assert "(2 time(s))" in cond(again, "Validated")["message"], "the condition still counts the refusals"
    assert [e.reason for e in again.events if e.reason == "UpdateRejected"] == []


def test_a_failed_job_whose_queued_child_outlived_the_delete_is_deleted_again() -> None:
    """The status saying BackoffLimitExceeded is stored before the delete (act.py); a delete that
    failed then (or an operator restart in between) must not leave Kueue running the child of a
    job that says Failed: the terminal job deletes it again, and nothing else."""
    queued = child("Restarting", labels={"kueue.x-k8s.io/queue-name": "gpu"})
    failed = decide(snap(spec={"runPolicy": {"backoffLimit": 0}}, child=queued, terminations=terminations(137)), NOW)
    assert failed.status["phase"] == "Failed" and failed.deletions
    again = decide(
        snap(
            spec={"runPolicy": {"backoffLimit": 0}}, status=failed.status, child=queued, terminations=terminations(137)
        ),
        NOW + 1,
    )
    assert again.children == () and [(d["kind"], d["metadata"]["name"]) for d in again.deletions] == [
        ("PyTorchJob", NAME)
    ]
    assert again.status["phase"] == "Failed" and cond(again, "Failed")["reason"] == "BackoffLimitExceeded"
    # a Failed job for another reason, or once the child is gone: nothing to delete
    assert not decide(
        snap(spec={"runPolicy": {"backoffLimit": 0}}, status=failed.status, child=None), NOW + 1
    ).deletions
    unqueued = child("Restarting")
    assert not decide(snap(status=failed.status, child=unqueued), NOW + 1).deletions


async def test_a_pod_evicted_for_its_outputs_emptydir_says_which_field_to_raise_in_the_restarting_event() -> None:
    """A job without spec.storage.outputs.claimName writes to an emptyDir with sizeLimit; past it the
    kubelet evicts the pod (phase Failed, reason Evicted, its emptyDirMessageFmt message:
    pkg/kubelet/eviction/eviction_manager.go:534-556, helpers.go:44,57-58 in openshift/microshift's
    1.36 copy of kubernetes), and the killed container says only "Error".  The Restarting Event must
    say why and name the field, or every restarted pod overflows again with no clue."""
    from kubetune.controller.cache import Caches
    from kubetune.controller.kube import Connection, Kube

    kube = Kube(Connection(server="http://127.0.0.1:9", token="unused"))  # never contacted: no informer runs
    try:
        caches = Caches(kube, (NS,), lambda ns, name: None)
        caches.store_job({**example_job(NAME, NS), "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"}})
        evicted = pod(
            "Failed",
            reason="Evicted",
            message='Usage of EmptyDir volume "outputs" exceeds the limit "50Gi". ',
            containerStatuses=[{"name": "pytorch", "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}],
        )
        caches._pod_event("MODIFIED", evicted)
        seen = tuple(caches.terminations[(NS, NAME)].values())
    finally:
        await kube.close()
    decision = decide(snap(child=child("Restarting"), terminations=seen), NOW)
    restarting = next(e for e in decision.events if e.reason == "Restarting")
    assert 'Evicted: Usage of EmptyDir volume "outputs" exceeds the limit "50Gi".' in restarting.message
    assert "raise spec.storage.outputs.sizeLimit" in restarting.message
    assert decision.status["retries"]["count"] == 1  # still a retry (exit code 137), resumed from the bucket
    assert (
        "raise spec.storage.outputs.sizeLimit" in cond(decision, "Running")["message"]
    )  # the Restarting condition too

    # Evicted again past spec.runPolicy.backoffLimit: the final message (what stays once Events expire) says why.
    again = tuple(dataclasses.replace(seen[0], uid=f"uid-{i}") for i in range(3))
    final = decide(snap(spec={"runPolicy": {"backoffLimit": 2}}, child=child("Restarting"), terminations=again), NOW)
    assert final.status["phase"] == "Failed" and cond(final, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "raise spec.storage.outputs.sizeLimit" in final.status["message"], final.status["message"]
    # A later failure of another kind does not keep the old eviction's text.
    crash = decide(
        snap(
            spec={"runPolicy": {"backoffLimit": 5}},
            child=child("Restarting"),
            status={**STARTED, "retries": final.status["retries"]},
            terminations=(*again, Termination(f"{NAME}-master-0", "uid-crash", 130, "Error")),
        ),
        NOW,
    )
    assert "lastReason" not in crash.status["retries"] and "sizeLimit" not in cond(crash, "Running")["message"]
