"""The real operator against the emulated API server: what a user sees with kubectl."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from tests.support.harness import (
    CM,
    EVENTS,
    FTJ,
    MPI,
    PTJ,
    example_job,
    eventually,
    training_started,
    uninstall_finetunejob_crd,
)
from tests.support.apiserver.emulator import ApiError, Cluster
from tests.support.kubeflow import oom_killed, progress_line, set_condition, stage_line, start_pod

from kubetune.api import FineTuneJobStatus
from kubetune.api.contract import STAGE_PREFIX

NS = "team-a"


def status(cluster: Cluster, name: str = "qwen-lora", ns: str = NS) -> dict[str, Any]:
    return (cluster.read(*FTJ, ns, name) or {}).get("status") or {}


def condition(cluster: Cluster, type_: str, name: str = "qwen-lora") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


def events(cluster: Cluster, name: str = "qwen-lora") -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in sorted(cluster.objects(*EVENTS, NS), key=lambda e: int(e["metadata"]["resourceVersion"]))
        if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "FineTuneJob"
    ]


def phase_is(cluster: Cluster, phase: str, name: str = "qwen-lora") -> bool:
    return status(cluster, name).get("phase") == phase


def _controller_reference(ftj: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference of a child the operator creates for the FineTuneJob ``ftj``."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "name": ftj["metadata"]["name"],
        "uid": ftj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def test_create_makes_configmap_and_pytorchjob_owned_by_the_finetunejob(cluster: Cluster, operator: Any) -> None:
    await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")

    owner = _controller_reference(ftj)
    ptj = cluster.read(*PTJ, NS, "qwen-lora")
    cm = cluster.read(*CM, NS, "qwen-lora-kubetune")
    assert ptj is not None and cm is not None
    assert ptj["metadata"]["ownerReferences"] == [owner]
    assert cm["metadata"]["ownerReferences"] == [owner]
    assert ptj["metadata"]["managedFields"][0]["manager"] == "kubetune"
    assert "train.yaml" in cm["data"]

    st = status(cluster)
    FineTuneJobStatus.model_validate(st)  # the status matches the published schema
    # backend auto (the default) on a cluster without Trainer v2: a PyTorchJob, and why (status.job.selection).
    assert st["job"] == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "name": "qwen-lora",
        "selection": st["job"]["selection"],
    }
    assert "does not serve TrainJob" in st["job"]["selection"]
    assert st["configMap"] == "qwen-lora-kubetune"
    assert st["gpus"] == 8
    assert st["output"] == {
        "claimName": "finetune-outputs",
        "path": "team-a/qwen-lora",
        "mergedPath": "team-a/qwen-lora/merged",
    }
    assert st["observedGeneration"] == 1
    assert condition(cluster, "Validated")["status"] == "True"
    assert condition(cluster, "Created")["status"] == "True"
    await eventually(
        lambda: (
            ("Normal", "Created", "created ConfigMap qwen-lora-kubetune and PyTorchJob qwen-lora") in events(cluster)
        ),
        what="the Created Event",
    )

    stored = cluster.read(*FTJ, NS, "qwen-lora")
    assert stored is not None
    # the API server defaulted the spec at create (the CRD's defaults); after that no one may touch it
    assert stored["spec"] == ftj["spec"], "the operator must never write spec (GitOps drift)"
    spec_owners = {e["manager"] for e in stored["metadata"]["managedFields"] if "f:spec" in e["fieldsV1"]}
    assert spec_owners == {"test-client"}, "only the job's author owns spec fields (managedFields)"
    assert not stored["metadata"].get("finalizers"), "no finalizer may block deletion"
    assert len(cluster.objects(*PTJ)) == 1 and len(cluster.objects(*CM)) == 1


async def test_full_lifecycle_running_progress_exporting_succeeded(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")

    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: phase_is(cluster, "Running"), what="phase Running")
    assert status(cluster)["startTime"]
    assert condition(cluster, "Running")["status"] == "True"

    cluster.append_log(
        NS,
        pod,
        "loading model...",
        progress_line(100, 1000, 1.61),
        "[rank0]: " + progress_line(120, 1000, 1.4213),
        "some other output",
    )
    progress = await eventually(
        lambda: status(cluster).get("progress", {}).get("step") == 120 and status(cluster)["progress"],
        what="progress 120",
    )
    assert progress["summary"] == "120/1000 (12%)"
    assert progress["loss"] == pytest.approx(1.4213)
    assert progress["totalSteps"] == 1000

    cluster.append_log(
        NS, pod, progress_line(1000, 1000, 0.9), stage_line("train", "end"), stage_line("export", "start")
    )
    await eventually(lambda: phase_is(cluster, "Exporting"), what="phase Exporting")
    assert status(cluster)["progress"]["summary"] == "1000/1000 (100%)"

    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
    await eventually(lambda: phase_is(cluster, "Succeeded"), what="phase Succeeded")
    st = status(cluster)
    FineTuneJobStatus.model_validate(st)
    assert st["completionTime"]
    assert (
        condition(cluster, "Succeeded")["status"] == "True"
        and condition(cluster, "Succeeded")["reason"] == "JobSucceeded"
    )
    assert condition(cluster, "Running")["status"] == "False"
    await eventually(lambda: len(events(cluster)) == 5, what="5 events")
    # BackendSelected: backend auto (the default) says which kind it chose and why, with the children.
    assert [reason for _, reason, _ in events(cluster)] == [
        "BackendSelected",
        "Created",
        "Running",
        "Exporting",
        "Succeeded",
    ]


async def test_condition_transition_time_changes_only_when_status_flips(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    pod = await training_started(cluster, NS)
    await eventually(lambda: phase_is(cluster, "Running"), what="phase Running")
    first = condition(cluster, "Running")["lastTransitionTime"]
    validated = condition(cluster, "Validated")["lastTransitionTime"]
    for step in (10, 20, 30):
        cluster.append_log(NS, pod, progress_line(step, 100, 2.0))
        await eventually(lambda: status(cluster).get("progress", {}).get("step") == step, what=f"step {step}")
    assert condition(cluster, "Running")["lastTransitionTime"] == first
    assert condition(cluster, "Validated")["lastTransitionTime"] == validated


@pytest.mark.parametrize(
    ("pod_status", "reason", "words"),
    [
        (
            {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                    }
                ]
            },
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
        (
            {
                "containerStatuses": [
                    {
                        "name": "pytorch",
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": "Back-off pulling image \"ghcr.io/x:bad\"",
                            }
                        },
                    }
                ]
            },
            "ImagePullBackOff",
            "ghcr.io/x:bad",
        ),
    ],
    ids=["no-gpu-fits", "image-pull"],
)
async def test_pending_explains_why_pods_do_not_start(
    cluster: Cluster, operator: Any, pod_status: dict[str, Any], reason: str, words: str
) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **pod_status)
    running = await eventually(
        lambda: condition(cluster, "Running").get("reason") == reason and condition(cluster, "Running"), what=reason
    )
    assert running["status"] == "False"
    assert words in running["message"]
    assert status(cluster)["phase"] == "Pending"


async def test_failed_job_reports_oomkilled(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    await oom_killed(cluster, NS, "qwen-lora")
    await eventually(lambda: phase_is(cluster, "Failed"), what="phase Failed")
    failed = condition(cluster, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "OOMKilled"
    assert "1 Master replica(s) failed" in failed["message"] and "OOMKilled" in failed["message"]
    assert status(cluster)["completionTime"]
    await eventually(
        lambda: any(t == "Warning" and r == "Failed" and "OOMKilled" in m for t, r, m in events(cluster)),
        what="Failed event",
    )


async def test_invalid_job_fails_validation_without_children_and_operator_keeps_serving(
    cluster: Cluster, operator: Any
) -> None:
    await operator()
    with pytest.raises(ApiError, match="spec.quantization"):  # today's CRD refuses it at the API server
        await cluster.put_object(*FTJ, example_job("broken", method="qlora"))
    uninstall_finetunejob_crd(cluster)  # stored under an older CRD: the operator's validation refuses it
    await cluster.put_object(*FTJ, example_job("broken", method="qlora"))  # qlora without spec.quantization
    await eventually(lambda: phase_is(cluster, "Failed", "broken"), what="phase Failed")
    validated = condition(cluster, "Validated", "broken")
    assert validated["status"] == "False" and validated["reason"] == "InvalidSpec"
    assert "spec.quantization" in validated["message"]
    # The Event is posted once the status that announces it is stored: after the phase, not with it.
    await eventually(
        lambda: any(
            t == "Warning" and r == "InvalidSpec" and "spec.quantization" in m for t, r, m in events(cluster, "broken")
        ),
        what="the InvalidSpec Event",
    )
    assert cluster.objects(*PTJ) == [] and cluster.objects(*CM) == []

    await cluster.put_object(*FTJ, example_job("good"))
    await eventually(lambda: phase_is(cluster, "Pending", "good"), what="the next job is served")
    assert [p["metadata"]["name"] for p in cluster.objects(*PTJ)] == ["good"]

    # Fixing the spec starts the job.
    await cluster.mutate(*FTJ, NS, "broken", lambda o: o["spec"].update(method="lora"))
    await eventually(lambda: cluster.read(*PTJ, NS, "broken"), what="children after the fix")
    await eventually(lambda: condition(cluster, "Validated", "broken").get("status") == "True", what="Validated=True")
    assert status(cluster, "broken")["phase"] == "Pending"


async def test_a_job_that_cannot_fit_gets_feasible_false_and_no_children_and_autotune_makes_it_fit(
    cluster: Cluster, operator: Any, config: Any
) -> None:
    # GPU memory from the chart's gpuMemoryByProduct table (KUBETUNE_GPU_MEMORY_BY_PRODUCT) and the nodeSelector
    await operator(dataclasses.replace(config, gpu_memory_by_product={"NVIDIA-Tiny-8GB": "8Gi"}))
    on_tiny = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-Tiny-8GB"}}
    await cluster.put_object(*FTJ, example_job("too-big", scheduling=on_tiny))
    await eventually(
        lambda: condition(cluster, "Feasible", "too-big").get("reason") == "InsufficientGPUMemory",
        what="Feasible=False",
    )
    feasible = condition(cluster, "Feasible", "too-big")
    assert (
        feasible["status"] == "False" and "exceeds 8.0 GiB" in feasible["message"] and "to fit:" in feasible["message"]
    )
    assert phase_is(cluster, "Pending", "too-big") and status(cluster, "too-big")["message"] == feasible["message"]
    await eventually(
        lambda: any(t == "Warning" and r == "InsufficientGPUMemory" for t, r, _ in events(cluster, "too-big")),
        what="the Event",
    )
    FineTuneJobStatus.model_validate(status(cluster, "too-big"))

    await cluster.put_object(*FTJ, example_job("tuned", scheduling=on_tiny, autoTune=True))
    await eventually(lambda: cluster.read(*PTJ, NS, "tuned"), what="children of the auto-tuned job")
    # The children are applied before the status patch that reports them.
    feasible = await eventually(
        lambda: condition(cluster, "Feasible", "tuned"), what="the Feasible condition of the auto-tuned job"
    )
    assert (feasible["status"], feasible["reason"]) == ("True", "Fits")
    auto = status(cluster, "tuned")["autoTune"]
    assert auto["changed"] and auto["settings"]["zeroStage"] == 3
    cm = cluster.read(*CM, NS, "tuned-kubetune")
    assert cm is not None and '"zeroStage": 3' in cm["data"]["finetunejob.json"], (
        "the run record says what autoTune chose"
    )
    assert cluster.read(*PTJ, NS, "too-big") is None and cluster.read(*CM, NS, "too-big-kubetune") is None


async def test_an_unknown_verdict_says_what_is_missing_and_never_blocks(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job("no-gpu-memory"))  # no spec.resources.gpuMemory, no product table
    private = {"name": "acme/private-7b", "template": "qwen"}
    resources = {**example_job()["spec"]["resources"], "gpuMemory": "80Gi"}
    await cluster.put_object(*FTJ, example_job("private-model", model=private, resources=resources))
    for name in ("no-gpu-memory", "private-model"):
        await eventually(
            lambda name=name: cluster.read(*PTJ, NS, name), what=f"children of {name} despite the unknown verdict"
        )
        # the children first, then the status that says so (two writes): wait for the second too
        await eventually(
            lambda name=name: condition(cluster, "Feasible", name).get("status"),
            what=f"the Feasible condition of {name}",
        )
    feasible = condition(cluster, "Feasible", "no-gpu-memory")
    assert (feasible["status"], feasible["reason"]) == ("Unknown", "GPUMemoryUnknown")
    assert "spec.resources.gpuMemory is not set" in feasible["message"] and "gpuMemoryByProduct" in feasible["message"]
    feasible = condition(cluster, "Feasible", "private-model")
    assert (feasible["status"], feasible["reason"]) == ("Unknown", "UnknownArchitecture")
    assert "acme/private-7b" in feasible["message"] and "--model-config" in feasible["message"]
    for name in ("no-gpu-memory", "private-model"):
        assert phase_is(cluster, "Pending", name) and not any(t == "Warning" for t, _, _ in events(cluster, name))
        FineTuneJobStatus.model_validate(status(cluster, name))


async def test_a_job_built_on_another_waits_until_it_succeeded_then_starts(cluster: Cluster, operator: Any) -> None:
    await operator()
    from_base = {"fromJob": "base-sft", "template": "qwen"}
    # applied together (kubectl apply of a recipe): the second one arrives first here
    await cluster.put_object(*FTJ, example_job("then-sft", model=from_base))
    await cluster.put_object(*FTJ, example_job("base-sft"))
    await eventually(
        lambda: condition(cluster, "Created", "then-sft").get("reason") == "WaitingForJob", what="WaitingForJob"
    )
    assert phase_is(cluster, "Pending", "then-sft") and "base-sft" in status(cluster, "then-sft")["message"]
    await eventually(lambda: cluster.read(*PTJ, NS, "base-sft"), what="the source's PyTorchJob")
    assert cluster.read(*PTJ, NS, "then-sft") is None and cluster.read(*CM, NS, "then-sft-kubetune") is None

    await set_condition(cluster, "PyTorchJob", NS, "base-sft", "Running")
    await eventually(lambda: phase_is(cluster, "Running", "base-sft"), what="source Running")
    assert cluster.read(*PTJ, NS, "then-sft") is None, "a Running source is not enough"
    await set_condition(cluster, "PyTorchJob", NS, "base-sft", "Succeeded")
    await eventually(lambda: cluster.read(*PTJ, NS, "then-sft"), what="children once the source Succeeded")
    cm = cluster.read(*CM, NS, "then-sft-kubetune")
    assert cm is not None and "team-a/base-sft/merged" in cm["data"]["train.yaml"], "it loads the source's merged model"
    # the children first, then the status that says so (two writes): wait for the second too
    await eventually(
        lambda: condition(cluster, "Created", "then-sft").get("reason") == "ChildrenCreated",
        what="Created ChildrenCreated",
    )
    FineTuneJobStatus.model_validate(status(cluster, "then-sft"))

    # references that can never work fail at once, with no children
    await cluster.put_object(*FTJ, example_job("orphan", model={"fromJob": "nowhere", "template": "qwen"}))
    await cluster.put_object(*FTJ, example_job("self-ref", model={"fromJob": "self-ref", "template": "qwen"}))
    await cluster.put_object(*FTJ, example_job("bad-base"))
    await cluster.put_object(*FTJ, example_job("on-bad", model={"fromJob": "bad-base", "template": "qwen"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "bad-base"), what="bad-base's PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "bad-base", "Failed")
    for name, reason in (("orphan", "FromJobNotFound"), ("self-ref", "FromJobUnusable"), ("on-bad", "FromJobFailed")):
        await eventually(
            lambda n=name, r=reason: condition(cluster, "Failed", n).get("reason") == r, what=f"{name}: {reason}"
        )
        assert phase_is(cluster, "Failed", name) and cluster.read(*PTJ, NS, name) is None


async def test_a_failed_evaluation_is_reported_without_changing_the_phase(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: phase_is(cluster, "Running"), what="phase Running")
    evaluation = {"state": "Failed", "message": "the evaluation split is empty"}
    cluster.append_log(
        NS,
        pod,
        progress_line(30, 30, 0.9),
        stage_line("train", "end"),
        STAGE_PREFIX + json.dumps({"stage": "evaluate", "event": "end", "evaluation": evaluation}),
    )
    await eventually(
        lambda: condition(cluster, "EvaluationFailed").get("reason") == "EvaluationFailed", what="EvaluationFailed"
    )
    assert "the evaluation split is empty" in condition(cluster, "EvaluationFailed")["message"]
    assert status(cluster)["evaluation"]["state"] == "Failed" and phase_is(cluster, "Running")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
    await eventually(lambda: phase_is(cluster, "Succeeded"), what="Succeeded: the model is kept")
    assert status(cluster)["evaluation"]["state"] == "Failed"
    FineTuneJobStatus.model_validate(status(cluster))


async def test_immutable_change_is_rejected_and_children_keep_their_settings(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")
    cm_before = cluster.read(*CM, NS, "qwen-lora-kubetune")
    ptj_before = cluster.read(*PTJ, NS, "qwen-lora")

    def more_epochs(obj: dict[str, Any]) -> None:
        obj["spec"]["training"]["epochs"] = 5

    await cluster.mutate(*FTJ, NS, "qwen-lora", more_epochs)
    rejected = await eventually(
        lambda: (
            condition(cluster, "Validated").get("reason") == "ImmutableFieldChanged" and condition(cluster, "Validated")
        ),
        what="rejection",
    )
    assert rejected["status"] == "False" and "spec.training cannot change" in rejected["message"]
    assert rejected["observedGeneration"] == 2 and status(cluster)["observedGeneration"] == 2
    # Events follow the status patch that announces them (the executor's order).
    await eventually(
        lambda: any(r == "ImmutableFieldChanged" for _, r, _ in events(cluster)), what="the ImmutableFieldChanged Event"
    )
    assert cluster.read(*CM, NS, "qwen-lora-kubetune") == cm_before
    assert cluster.read(*PTJ, NS, "qwen-lora") == ptj_before

    # A later mutable change (suspend) still must not smuggle the rejected hyperparameters in.
    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=True))
    await eventually(lambda: status(cluster).get("observedGeneration") == 3, what="generation 3 observed")
    assert cluster.read(*CM, NS, "qwen-lora-kubetune") == cm_before


async def test_suspend_toggles_the_child_run_policy(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    assert cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is False
    # the edit comes after the operator recorded the running job (its status lands after the children;
    # an edit before that is a job created suspended, with no Suspending Event)
    await eventually(lambda: status(cluster).get("configMap"), what="status.configMap")

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=True))
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True, what="child suspended"
    )
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended")
    await eventually(lambda: phase_is(cluster, "Suspended"), what="phase Suspended")
    assert (
        condition(cluster, "Suspended")["reason"] == "JobSuspended"
        and "spec.suspend: false" in condition(cluster, "Suspended")["message"]
    )
    assert ("Normal", "Suspending", "suspending PyTorchJob qwen-lora") in events(cluster)

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False))
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is False, what="child resumed"
    )


async def test_kueue_owns_suspend_of_a_queued_job(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job(scheduling={"queueName": "gpu-queue"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    ptj = cluster.read(*PTJ, NS, "qwen-lora")
    assert ptj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "suspend" not in ptj["spec"]["runPolicy"]

    # Kueue suspends the job (admission pending); the user toggles spec.suspend: Kueue's value stays.
    await cluster.mutate(*PTJ, NS, "qwen-lora", lambda o: o["spec"]["runPolicy"].update(suspend=True))
    await cluster.mutate(
        *FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False, env=[{"name": "X", "value": "1"}])
    )
    await eventually(lambda: status(cluster).get("observedGeneration") == 2, what="generation 2 observed")
    await eventually(lambda: "X" in str(cluster.read(*PTJ, NS, "qwen-lora")["spec"]), what="env applied")
    assert cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True

    # While Kueue holds the job, the user sees a queued (Pending) job, not a suspended one.
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended", "JobSuspended")
    waiting = await eventually(
        lambda: condition(cluster, "Running").get("reason") == "WaitingForQueue" and condition(cluster, "Running"),
        what="queued",
    )
    assert "gpu-queue" in waiting["message"] and status(cluster)["phase"] == "Pending"


async def test_mpijob_backend_creates_an_owned_mpijob_and_reads_the_launcher(cluster: Cluster, operator: Any) -> None:
    await operator()
    spec = example_job("mpi")["spec"]
    ftj = await cluster.put_object(
        *FTJ,
        example_job(
            "mpi", distributed={**spec["distributed"], "backend": "mpijob"}, resources={**spec["resources"], "nodes": 2}
        ),
    )
    mpi = await eventually(lambda: cluster.read(*MPI, NS, "mpi"), what="the MPIJob")
    assert mpi["apiVersion"] == "kubeflow.org/v2beta1"
    assert mpi["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    assert cluster.objects(*PTJ) == []
    await eventually(lambda: status(cluster, "mpi").get("gpus") == 16, what="gpus = 2 nodes x 8")
    assert status(cluster, "mpi")["job"]["kind"] == "MPIJob"

    await set_condition(cluster, "MPIJob", NS, "mpi", "Running")
    pod = await start_pod(cluster, "MPIJob", NS, "mpi")
    cluster.append_log(NS, pod, progress_line(50, 200, 1.2))
    await eventually(
        lambda: status(cluster, "mpi").get("progress", {}).get("summary") == "50/200 (25%)", what="launcher progress"
    )
    assert status(cluster, "mpi")["phase"] == "Running"


async def test_delete_is_not_blocked_and_children_are_left_to_the_garbage_collector(
    cluster: Cluster, operator: Any
) -> None:
    await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")
    await cluster.remove(*FTJ, NS, "qwen-lora")
    assert cluster.read(*FTJ, NS, "qwen-lora") is None, "deletion must not wait for the operator"
    for child in (cluster.read(*PTJ, NS, "qwen-lora"), cluster.read(*CM, NS, "qwen-lora-kubetune")):
        assert child is not None
        refs = child["metadata"]["ownerReferences"]
        assert [(r["uid"], r["controller"], r["blockOwnerDeletion"]) for r in refs] == [
            (ftj["metadata"]["uid"], True, True)
        ]

    # The operator keeps serving, and a new job with the same name gets fresh, correctly owned children.
    calls_before = len(cluster.calls)
    await cluster.remove(*PTJ, NS, "qwen-lora")
    await cluster.remove(*CM, NS, "qwen-lora-kubetune")  # what the garbage collector would do
    again = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="the recreated job")
    assert cluster.read(*PTJ, NS, "qwen-lora")["metadata"]["ownerReferences"][0]["uid"] == again["metadata"]["uid"]
    assert not any(c.verb == "delete" for c in cluster.calls[calls_before:]), "the operator deletes nothing itself"


async def test_progress_follows_a_replaced_rank0_pod_and_steady_jobs_list_no_pods(
    cluster: Cluster, operator: Any
) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, progress_line(10, 100, 2.0))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 10, what="step 10")

    lists = sum(1 for c in cluster.calls if c.resource == "pods" and c.verb == "list")
    logs_before = sum(1 for c in cluster.calls if c.subresource == "log")
    await eventually(
        lambda: sum(1 for c in cluster.calls if c.subresource == "log") >= logs_before + 3, what="three more log reads"
    )
    assert sum(1 for c in cluster.calls if c.resource == "pods" and c.verb == "list") == lists, (
        "a steady running job needs no pod LIST"
    )

    # The kubelet replaces the Master pod (node lost): progress continues from the new pod's log.
    await cluster.remove("v1", "pods", NS, pod)
    new_pod = "qwen-lora-master-0-b"
    await cluster.put_object(
        "v1",
        "pods",
        {
            "metadata": {
                "name": new_pod,
                "namespace": NS,
                "labels": {
                    "training.kubeflow.org/job-name": "qwen-lora",
                    "training.kubeflow.org/replica-type": "master",
                },
            },
            "spec": {"containers": [{"name": "pytorch"}]},
            "status": {"phase": "Running"},
        },
    )
    cluster.append_log(NS, new_pod, progress_line(40, 100, 1.5))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 40, what="progress from the new pod")


# --- spec.serve (issue 13): serving objects once the job has Succeeded --------------------------

DEPLOY = ("apps/v1", "deployments")
SVC = ("v1", "services")
LLMISVC = ("serving.kserve.io/v1alpha1", "llminferenceservices")
ISVC = ("serving.kserve.io/v1beta1", "inferenceservices")


def serving(cluster: Cluster, name: str = "qwen-lora") -> dict[str, Any]:
    return status(cluster, name).get("serving") or {}


async def succeed(cluster: Cluster, name: str, *log_lines: str) -> None:
    """Play Kubeflow through a whole run: Running with a rank-0 pod (its log gets ``log_lines``), then Succeeded."""
    await eventually(lambda: cluster.read(*PTJ, NS, name), what=f"the PyTorchJob {name}")
    await set_condition(cluster, "PyTorchJob", NS, name, "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, name)
    if log_lines:
        cluster.append_log(NS, pod, *log_lines)
    await set_condition(cluster, "PyTorchJob", NS, name, "Succeeded")


async def test_a_succeeded_job_with_serve_gets_an_owned_deployment_service_and_url(
    cluster: Cluster, operator: Any
) -> None:
    cluster.garbage_collect = True
    await operator()
    ftj = await cluster.put_object(*FTJ, example_job(serve={"gpus": 2}))
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")
    assert cluster.read(*DEPLOY, NS, "qwen-lora-serve") is None, "nothing is served before the job Succeeded"
    await succeed(cluster, "qwen-lora")
    await eventually(
        lambda: condition(cluster, "Serving").get("reason") == "ServingStarting", what="Serving=False ServingStarting"
    )

    owner = _controller_reference(ftj)
    deployment, service = cluster.read(*DEPLOY, NS, "qwen-lora-serve"), cluster.read(*SVC, NS, "qwen-lora-serve")
    assert deployment is not None and service is not None
    assert deployment["metadata"]["ownerReferences"] == [owner] and service["metadata"]["ownerReferences"] == [owner]
    assert deployment["metadata"]["managedFields"][0]["manager"] == "kubetune"
    pod = deployment["spec"]["template"]["spec"]
    assert {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    } == {"finetune-outputs": True, "model-cache": True}
    args = pod["containers"][0]["args"]
    assert (
        args[args.index("--model") + 1] == "/outputs/team-a/qwen-lora/merged"
        and args[args.index("--tensor-parallel-size") + 1] == "2"
    )
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    st = status(cluster)
    FineTuneJobStatus.model_validate(st)
    assert st["phase"] == "Succeeded"
    assert (
        st["serving"]["url"] == "http://qwen-lora-serve.team-a.svc:8000/v1"
        and st["serving"]["servedModel"] == "qwen-lora"
    )
    assert st["serving"]["objects"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen-lora-serve"},
        {"apiVersion": "v1", "kind": "Service", "name": "qwen-lora-serve"},
    ]

    # The Deployment controller reports a ready replica: Serving=True.
    await cluster.mutate(
        *DEPLOY,
        NS,
        "qwen-lora-serve",
        lambda o: o.update(status={"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}),
    )
    await eventually(
        lambda: condition(cluster, "Serving").get("reason") == "ServingReady", what="Serving=True ServingReady"
    )
    assert condition(cluster, "Serving")["status"] == "True" and serving(cluster)["ready"] is True
    await eventually(
        lambda: ("Normal", "ServingReady") in [(t, r) for t, r, _ in events(cluster)], what="the ServingReady Event"
    )

    # spec.serve may change after success: the Deployment follows.
    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"]["serve"].update(replicas=3))
    await eventually(
        lambda: (cluster.read(*DEPLOY, NS, "qwen-lora-serve") or {})["spec"]["replicas"] == 3, what="3 replicas"
    )
    await eventually(
        lambda: condition(cluster, "Serving").get("observedGeneration") == 2, what="Serving at generation 2"
    )

    # Someone deletes the Deployment: it is created again.
    await cluster.remove(*DEPLOY, NS, "qwen-lora-serve")
    await eventually(lambda: cluster.read(*DEPLOY, NS, "qwen-lora-serve"), what="the Deployment recreated")
    # ... and the Service (watched since issue 20: it was only written, so a deleted one stayed gone).
    await cluster.remove(*SVC, NS, "qwen-lora-serve")
    await eventually(lambda: cluster.read(*SVC, NS, "qwen-lora-serve"), what="the Service recreated")

    # Deleting the FineTuneJob garbage-collects everything it owns (emulated kube-controller-manager GC).
    calls_before = len(cluster.calls)
    await cluster.remove(*FTJ, NS, "qwen-lora")
    for res, name in (
        (DEPLOY, "qwen-lora-serve"),
        (SVC, "qwen-lora-serve"),
        (PTJ, "qwen-lora"),
        (CM, "qwen-lora-kubetune"),
    ):
        assert cluster.read(*res, NS, name) is None, f"{res} {name} left behind"
    assert not any(c.verb == "delete" for c in cluster.calls[calls_before:]), "the operator deletes nothing itself"


async def test_running_and_failed_jobs_get_no_serving_objects(cluster: Cluster, operator: Any) -> None:
    await operator()
    for name in ("running", "failed", "done"):
        await cluster.put_object(*FTJ, example_job(name, serve={}))
        await eventually(lambda n=name: cluster.read(*PTJ, NS, n), what=f"the PyTorchJob {name}")
    await set_condition(cluster, "PyTorchJob", NS, "running", "Running")
    await set_condition(cluster, "PyTorchJob", NS, "failed", "Failed")
    await eventually(
        lambda: phase_is(cluster, "Running", "running") and phase_is(cluster, "Failed", "failed"),
        timeout=20,
        what="Running and Failed",
    )
    await succeed(cluster, "done")
    await eventually(
        lambda: cluster.read(*DEPLOY, NS, "done-serve") and cluster.read(*SVC, NS, "done-serve"),
        what="the succeeded job's Deployment and Service",
    )
    assert [d["metadata"]["name"] for d in cluster.objects(*DEPLOY, NS)] == ["done-serve"]
    assert [s["metadata"]["name"] for s in cluster.objects(*SVC, NS)] == ["done-serve"]
    assert not serving(cluster, "running") and not serving(cluster, "failed")


async def test_kserve_not_installed_is_a_condition_then_served_when_it_appears(cluster: Cluster, operator: Any) -> None:
    await operator()
    # With the example's hfTokenSecretRef KServe needs a ServiceAccount listing the token (the storage
    # initializer reads it there).
    await cluster.put_object(
        *FTJ,
        example_job(
            serve={"engine": "kserve", "kserve": {"kind": "LLMInferenceService"}},
            export={"enabled": False},
            serviceAccountName="hub-reader",
        ),
    )
    await succeed(cluster, "qwen-lora")
    await eventually(
        lambda: condition(cluster, "Serving").get("reason") == "ServingKindNotInstalled", what="ServingKindNotInstalled"
    )
    message = condition(cluster, "Serving")["message"]
    assert "LLMInferenceService serving.kserve.io/v1alpha1" in message and "install" in message
    assert phase_is(cluster, "Succeeded"), "a missing serving engine never changes the training's phase"

    cluster.declare("serving.kserve.io/v1alpha1", "llminferenceservices", "LLMInferenceService")  # KServe is installed
    llm = await eventually(lambda: cluster.read(*LLMISVC, NS, "qwen-lora"), timeout=20, what="the LLMInferenceService")
    assert llm["spec"]["model"]["lora"]["adapters"] == [
        {"name": "qwen-lora", "uri": "pvc://finetune-outputs/team-a/qwen-lora"}
    ]
    await cluster.mutate(
        *LLMISVC,
        NS,
        "qwen-lora",
        lambda o: o.update(
            status={"url": "http://qwen-lora.team-a.example.com", "conditions": [{"type": "Ready", "status": "True"}]}
        ),
    )
    await eventually(lambda: condition(cluster, "Serving").get("reason") == "ServingReady", what="ServingReady")
    assert (
        serving(cluster)["url"] == "http://qwen-lora.team-a.example.com/v1"
        and serving(cluster)["adapter"] == "pvc://finetune-outputs/team-a/qwen-lora"
    )


async def test_a_refused_serving_object_is_a_condition(cluster: Cluster, operator: Any) -> None:
    await operator()
    cluster.inject("patch", "deployments", 422, times=1)
    await cluster.put_object(*FTJ, example_job(serve={}))
    await succeed(cluster, "qwen-lora")
    await eventually(lambda: condition(cluster, "Serving").get("reason") == "ServingRejected", what="ServingRejected")
    assert "injected failure 422" in condition(cluster, "Serving")["message"] and phase_is(cluster, "Succeeded")
    assert cluster.read(*DEPLOY, NS, "qwen-lora-serve") is None


EVALUATE = {"evaluation": {"valSize": 0.1, "baseModel": True}, "serve": {"when": "evaluationImproves"}}


def evaluate_line(trained_loss: float, base_loss: float) -> str:
    evaluation = {
        "state": "Succeeded",
        "trained": {"evalLoss": trained_loss},
        "base": {"evalLoss": base_loss},
        "summary": f"loss {trained_loss}",
    }
    return STAGE_PREFIX + json.dumps({"stage": "evaluate", "event": "end", "evaluation": evaluation})


async def test_evaluation_improves_serves_only_a_better_model(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job("worse", **EVALUATE))
    await cluster.put_object(*FTJ, example_job("better", **EVALUATE))
    await succeed(cluster, "worse", progress_line(10, 10, 1.0), evaluate_line(2.5, 2.1))
    await eventually(
        lambda: condition(cluster, "Serving", "worse").get("reason") == "EvaluationNotImproved",
        what="EvaluationNotImproved",
    )
    assert "eval loss 2.5 >= base 2.1" in condition(cluster, "Serving", "worse")["message"]

    # No evaluation line yet when the job Succeeded: the operator waits for it, then serves.
    await succeed(cluster, "better", progress_line(10, 10, 1.0))
    await eventually(
        lambda: condition(cluster, "Serving", "better").get("reason") == "WaitingForEvaluation",
        what="WaitingForEvaluation",
    )
    assert cluster.read(*DEPLOY, NS, "better-serve") is None
    cluster.append_log(NS, "better-master-0", evaluate_line(1.2, 2.1))
    await eventually(lambda: cluster.read(*DEPLOY, NS, "better-serve"), what="the better model's Deployment")
    # The status patch follows the apply: wait for it rather than race it.
    await eventually(
        lambda: (status(cluster, "better").get("evaluation") or {}).get("base") == {"evalLoss": 2.1},
        what="status.evaluation",
    )
    assert cluster.read(*DEPLOY, NS, "worse-serve") is None


WORKSPACES = ("kaito.sh/v1beta1", "workspaces")
JOBS = ("batch/v1", "jobs")
KAITO = {
    "serve": {"engine": "kaito"},
    "export": {"enabled": False},
    "hfTokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"},
}


def job_condition(type_: str) -> Any:
    return lambda o: o.update(status={"conditions": [{"type": type_, "status": "True", "reason": type_}]})


async def test_kaito_gets_the_adapter_copied_to_its_own_claim_then_a_workspace(cluster: Cluster, operator: Any) -> None:
    cluster.declare("kaito.sh/v1beta1", "workspaces", "Workspace")  # KAITO is installed
    await operator()
    await cluster.put_object(*FTJ, example_job(**KAITO))
    await cluster.put_object(*FTJ, example_job("broken-copy", **KAITO))
    await succeed(cluster, "qwen-lora")
    await succeed(cluster, "broken-copy")

    copy = await eventually(lambda: cluster.read(*JOBS, NS, "qwen-lora-adapter-copy"), what="the adapter copy Job")
    pvc = cluster.read("v1", "persistentvolumeclaims", NS, "qwen-lora-adapter")
    assert pvc is not None and pvc["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    assert copy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "finetune-outputs",
        "readOnly": True,
    }
    await eventually(lambda: condition(cluster, "Serving").get("reason") == "ServingStarting", what="ServingStarting")
    assert "copying the adapter" in condition(cluster, "Serving")["message"]
    assert cluster.read(*WORKSPACES, NS, "qwen-lora") is None, "no Workspace before the adapter is on its claim"

    await cluster.mutate(*JOBS, NS, "qwen-lora-adapter-copy", job_condition("Complete"))  # the Job controller: copied
    ws = await eventually(lambda: cluster.read(*WORKSPACES, NS, "qwen-lora"), what="the Workspace")
    assert ws["inference"]["adapters"] == [
        {
            "source": {
                "name": "qwen-lora",
                "volumeSource": {"persistentVolumeClaim": {"claimName": "qwen-lora-adapter", "readOnly": True}},
            }
        }
    ]
    await cluster.mutate(*WORKSPACES, NS, "qwen-lora", job_condition("InferenceReady"))  # KAITO: inference ready
    await eventually(lambda: condition(cluster, "Serving").get("reason") == "ServingReady", what="ServingReady")
    assert serving(cluster)["url"] == "http://qwen-lora.team-a.svc:80/v1"

    await eventually(lambda: cluster.read(*JOBS, NS, "broken-copy-adapter-copy"), what="the second copy Job")
    await cluster.mutate(*JOBS, NS, "broken-copy-adapter-copy", job_condition("Failed"))
    await eventually(
        lambda: condition(cluster, "Serving", "broken-copy").get("reason") == "AdapterCopyFailed",
        what="AdapterCopyFailed",
    )
    assert cluster.read(*WORKSPACES, NS, "broken-copy") is None
    # The user deletes the failed Job (the reason's hint): the adapter is copied again.
    await cluster.remove(*JOBS, NS, "broken-copy-adapter-copy")
    await eventually(
        lambda: condition(cluster, "Serving", "broken-copy").get("reason") == "ServingStarting", what="copying again"
    )
    assert cluster.read(*JOBS, NS, "broken-copy-adapter-copy") is not None


async def test_stopping_leaves_kopf_no_task_of_ours_to_wait_for(
    cluster: Cluster, operator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """kopf 1.45.2 waits up to 5 s for every task created after it started before cancelling them
    (kopf/_core/reactor/running.py:411-413): the controller's informers and workers were such tasks,
    so each stop (a SIGTERM in the pod) took 5 s more. main.serve's cleanup handler stops them first;
    kopf then logs that it had no hung task to stop, instead of stopping ours after the wait."""
    caplog.set_level("DEBUG", logger="kopf")
    op = await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await op.stop()
    hung = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Hung tasks")]
    assert hung == ["Hung tasks stopping is skipped: no tasks given."], hung
