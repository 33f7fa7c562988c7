"""The real operator against the emulated API server: what a user sees with kubectl."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from conftest import CM, EVENTS, FTJ, MPI, PTJ, example_job, eventually, training_started
from emulator import Cluster
from kubeflow import progress_line, set_condition, stage_line, start_pod

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


async def test_create_makes_configmap_and_pytorchjob_owned_by_the_finetunejob(cluster: Cluster, operator: Any) -> None:
    await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")

    owner = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "qwen-lora", "uid": ftj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
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
    assert st["job"] == {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "qwen-lora", "selection": st["job"]["selection"]}
    assert "does not serve TrainJob" in st["job"]["selection"]
    assert st["configMap"] == "qwen-lora-kubetune"
    assert st["gpus"] == 8
    assert st["output"] == {"claimName": "finetune-outputs", "path": "team-a/qwen-lora", "mergedPath": "team-a/qwen-lora/merged"}
    assert st["observedGeneration"] == 1
    assert condition(cluster, "Validated")["status"] == "True"
    assert condition(cluster, "Created")["status"] == "True"
    await eventually(lambda: ("Normal", "Created", "created ConfigMap qwen-lora-kubetune and PyTorchJob qwen-lora") in events(cluster), what="the Created Event")

    stored = cluster.read(*FTJ, NS, "qwen-lora")
    assert stored is not None
    assert stored["spec"] == example_job()["spec"], "the operator must never write spec (GitOps drift)"
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

    cluster.append_log(NS, pod, "loading model...", progress_line(100, 1000, 1.61), "[rank0]: " + progress_line(120, 1000, 1.4213), "some other output")
    progress = await eventually(lambda: status(cluster).get("progress", {}).get("step") == 120 and status(cluster)["progress"], what="progress 120")
    assert progress["summary"] == "120/1000 (12%)"
    assert progress["loss"] == pytest.approx(1.4213)
    assert progress["totalSteps"] == 1000

    cluster.append_log(NS, pod, progress_line(1000, 1000, 0.9), stage_line("train", "end"), stage_line("export", "start"))
    await eventually(lambda: phase_is(cluster, "Exporting"), what="phase Exporting")
    assert status(cluster)["progress"]["summary"] == "1000/1000 (100%)"

    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
    await eventually(lambda: phase_is(cluster, "Succeeded"), what="phase Succeeded")
    st = status(cluster)
    FineTuneJobStatus.model_validate(st)
    assert st["completionTime"]
    assert condition(cluster, "Succeeded")["status"] == "True" and condition(cluster, "Succeeded")["reason"] == "JobSucceeded"
    assert condition(cluster, "Running")["status"] == "False"
    await eventually(lambda: len(events(cluster)) == 5, what="5 events")
    # BackendSelected: backend auto (the default) says which kind it chose and why, with the children.
    assert [reason for _, reason, _ in events(cluster)] == ["BackendSelected", "Created", "Running", "Exporting", "Succeeded"]


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
            {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]},
            "Unschedulable",
            "Insufficient nvidia.com/gpu",
        ),
        (
            {"containerStatuses": [{"name": "pytorch", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"ghcr.io/x:bad\""}}}]},
            "ImagePullBackOff",
            "ghcr.io/x:bad",
        ),
    ],
    ids=["no-gpu-fits", "image-pull"],
)
async def test_pending_explains_why_pods_do_not_start(cluster: Cluster, operator: Any, pod_status: dict[str, Any], reason: str, words: str) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **pod_status)
    running = await eventually(lambda: condition(cluster, "Running").get("reason") == reason and condition(cluster, "Running"), what=reason)
    assert running["status"] == "False"
    assert words in running["message"]
    assert status(cluster)["phase"] == "Pending"


async def test_failed_job_reports_oomkilled(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    oom = {"containerStatuses": [{"name": "pytorch", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Failed", **oom)
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Failed", "PyTorchJobFailed", "PyTorchJob qwen-lora has failed because 1 Master replica(s) failed.")
    await eventually(lambda: phase_is(cluster, "Failed"), what="phase Failed")
    failed = condition(cluster, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "OOMKilled"
    assert "1 Master replica(s) failed" in failed["message"] and "OOMKilled" in failed["message"]
    assert status(cluster)["completionTime"]
    await eventually(lambda: any(t == "Warning" and r == "Failed" and "OOMKilled" in m for t, r, m in events(cluster)), what="Failed event")


async def test_invalid_job_fails_validation_without_children_and_operator_keeps_serving(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job("broken", method="qlora"))  # qlora without spec.quantization
    await eventually(lambda: phase_is(cluster, "Failed", "broken"), what="phase Failed")
    validated = condition(cluster, "Validated", "broken")
    assert validated["status"] == "False" and validated["reason"] == "InvalidSpec"
    assert "spec.quantization" in validated["message"]
    assert any(t == "Warning" and r == "InvalidSpec" and "spec.quantization" in m for t, r, m in events(cluster, "broken"))
    assert cluster.objects(*PTJ) == [] and cluster.objects(*CM) == []

    await cluster.put_object(*FTJ, example_job("good"))
    await eventually(lambda: phase_is(cluster, "Pending", "good"), what="the next job is served")
    assert [p["metadata"]["name"] for p in cluster.objects(*PTJ)] == ["good"]

    # Fixing the spec starts the job.
    await cluster.mutate(*FTJ, NS, "broken", lambda o: o["spec"].update(method="lora"))
    await eventually(lambda: cluster.read(*PTJ, NS, "broken"), what="children after the fix")
    await eventually(lambda: condition(cluster, "Validated", "broken").get("status") == "True", what="Validated=True")
    assert status(cluster, "broken")["phase"] == "Pending"


async def test_a_job_that_cannot_fit_gets_feasible_false_and_no_children_and_autotune_makes_it_fit(cluster: Cluster, operator: Any, config: Any) -> None:
    # GPU memory from the chart's gpuMemoryByProduct table (KUBETUNE_GPU_MEMORY_BY_PRODUCT) and the nodeSelector
    await operator(dataclasses.replace(config, gpu_memory_by_product={"NVIDIA-Tiny-8GB": "8Gi"}))
    on_tiny = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-Tiny-8GB"}}
    await cluster.put_object(*FTJ, example_job("too-big", scheduling=on_tiny))
    await eventually(lambda: condition(cluster, "Feasible", "too-big").get("reason") == "InsufficientGPUMemory", what="Feasible=False")
    feasible = condition(cluster, "Feasible", "too-big")
    assert feasible["status"] == "False" and "exceeds 8.0 GiB" in feasible["message"] and "to fit:" in feasible["message"]
    assert phase_is(cluster, "Pending", "too-big") and status(cluster, "too-big")["message"] == feasible["message"]
    assert any(t == "Warning" and r == "InsufficientGPUMemory" for t, r, _ in events(cluster, "too-big"))
    FineTuneJobStatus.model_validate(status(cluster, "too-big"))

    await cluster.put_object(*FTJ, example_job("tuned", scheduling=on_tiny, autoTune=True))
    await eventually(lambda: cluster.read(*PTJ, NS, "tuned"), what="children of the auto-tuned job")
    feasible = condition(cluster, "Feasible", "tuned")
    assert (feasible["status"], feasible["reason"]) == ("True", "Fits")
    auto = status(cluster, "tuned")["autoTune"]
    assert auto["changed"] and auto["settings"]["zeroStage"] == 3
    cm = cluster.read(*CM, NS, "tuned-kubetune")
    assert cm is not None and '"zeroStage": 3' in cm["data"]["finetunejob.json"], "the run record says what autoTune chose"
    assert cluster.read(*PTJ, NS, "too-big") is None and cluster.read(*CM, NS, "too-big-kubetune") is None


async def test_a_job_built_on_another_waits_until_it_succeeded_then_starts(cluster: Cluster, operator: Any) -> None:
    await operator()
    from_base = {"fromJob": "base-sft", "template": "qwen"}
    # applied together (kubectl apply of a recipe): the second one arrives first here
    await cluster.put_object(*FTJ, example_job("then-sft", model=from_base))
    await cluster.put_object(*FTJ, example_job("base-sft"))
    await eventually(lambda: condition(cluster, "Created", "then-sft").get("reason") == "WaitingForJob", what="WaitingForJob")
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
    assert condition(cluster, "Created", "then-sft")["reason"] == "ChildrenCreated"
    FineTuneJobStatus.model_validate(status(cluster, "then-sft"))

    # references that can never work fail at once, with no children
    await cluster.put_object(*FTJ, example_job("orphan", model={"fromJob": "nowhere", "template": "qwen"}))
    await cluster.put_object(*FTJ, example_job("self-ref", model={"fromJob": "self-ref", "template": "qwen"}))
    await cluster.put_object(*FTJ, example_job("bad-base"))
    await cluster.put_object(*FTJ, example_job("on-bad", model={"fromJob": "bad-base", "template": "qwen"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "bad-base"), what="bad-base's PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "bad-base", "Failed")
    for name, reason in (("orphan", "FromJobNotFound"), ("self-ref", "FromJobUnusable"), ("on-bad", "FromJobFailed")):
        await eventually(lambda n=name, r=reason: condition(cluster, "Failed", n).get("reason") == r, what=f"{name}: {reason}")
        assert phase_is(cluster, "Failed", name) and cluster.read(*PTJ, NS, name) is None


async def test_a_failed_evaluation_is_reported_without_changing_the_phase(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: phase_is(cluster, "Running"), what="phase Running")
    evaluation = {"state": "Failed", "message": "the evaluation split is empty"}
    cluster.append_log(NS, pod, progress_line(30, 30, 0.9), stage_line("train", "end"),
                       STAGE_PREFIX + json.dumps({"stage": "evaluate", "event": "end", "evaluation": evaluation}))
    await eventually(lambda: condition(cluster, "EvaluationFailed").get("reason") == "EvaluationFailed", what="EvaluationFailed")
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
    rejected = await eventually(lambda: condition(cluster, "Validated").get("reason") == "ImmutableFieldChanged" and condition(cluster, "Validated"), what="rejection")
    assert rejected["status"] == "False" and "spec.training cannot change" in rejected["message"]
    assert rejected["observedGeneration"] == 2 and status(cluster)["observedGeneration"] == 2
    # Events follow the status patch that announces them (the executor's order).
    await eventually(lambda: any(r == "ImmutableFieldChanged" for _, r, _ in events(cluster)), what="the ImmutableFieldChanged Event")
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

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=True))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True, what="child suspended")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended")
    await eventually(lambda: phase_is(cluster, "Suspended"), what="phase Suspended")
    assert condition(cluster, "Suspended")["reason"] == "JobSuspended" and "spec.suspend: false" in condition(cluster, "Suspended")["message"]
    assert ("Normal", "Suspending", "suspending PyTorchJob qwen-lora") in events(cluster)

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is False, what="child resumed")


async def test_kueue_owns_suspend_of_a_queued_job(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job(scheduling={"queueName": "gpu-queue"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    ptj = cluster.read(*PTJ, NS, "qwen-lora")
    assert ptj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "suspend" not in ptj["spec"]["runPolicy"]

    # Kueue suspends the job (admission pending); the user toggles spec.suspend: Kueue's value stays.
    await cluster.mutate(*PTJ, NS, "qwen-lora", lambda o: o["spec"]["runPolicy"].update(suspend=True))
    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False, env=[{"name": "X", "value": "1"}]))
    await eventually(lambda: status(cluster).get("observedGeneration") == 2, what="generation 2 observed")
    await eventually(lambda: "X" in str(cluster.read(*PTJ, NS, "qwen-lora")["spec"]), what="env applied")
    assert cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True

    # While Kueue holds the job, the user sees a queued (Pending) job, not a suspended one.
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended", "JobSuspended")
    waiting = await eventually(lambda: condition(cluster, "Running").get("reason") == "WaitingForQueue" and condition(cluster, "Running"), what="queued")
    assert "gpu-queue" in waiting["message"] and status(cluster)["phase"] == "Pending"


async def test_mpijob_backend_creates_an_owned_mpijob_and_reads_the_launcher(cluster: Cluster, operator: Any) -> None:
    await operator()
    spec = example_job("mpi")["spec"]
    ftj = await cluster.put_object(*FTJ, example_job("mpi", distributed={**spec["distributed"], "backend": "mpijob"}, resources={**spec["resources"], "nodes": 2}))
    mpi = await eventually(lambda: cluster.read(*MPI, NS, "mpi"), what="the MPIJob")
    assert mpi["apiVersion"] == "kubeflow.org/v2beta1"
    assert mpi["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    assert cluster.objects(*PTJ) == []
    await eventually(lambda: status(cluster, "mpi").get("gpus") == 16, what="gpus = 2 nodes x 8")
    assert status(cluster, "mpi")["job"]["kind"] == "MPIJob"

    await set_condition(cluster, "MPIJob", NS, "mpi", "Running")
    pod = await start_pod(cluster, "MPIJob", NS, "mpi")
    cluster.append_log(NS, pod, progress_line(50, 200, 1.2))
    await eventually(lambda: status(cluster, "mpi").get("progress", {}).get("summary") == "50/200 (25%)", what="launcher progress")
    assert status(cluster, "mpi")["phase"] == "Running"


async def test_delete_is_not_blocked_and_children_are_left_to_the_garbage_collector(cluster: Cluster, operator: Any) -> None:
    await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="phase Pending")
    await cluster.remove(*FTJ, NS, "qwen-lora")
    assert cluster.read(*FTJ, NS, "qwen-lora") is None, "deletion must not wait for the operator"
    for child in (cluster.read(*PTJ, NS, "qwen-lora"), cluster.read(*CM, NS, "qwen-lora-kubetune")):
        assert child is not None
        refs = child["metadata"]["ownerReferences"]
        assert [(r["uid"], r["controller"], r["blockOwnerDeletion"]) for r in refs] == [(ftj["metadata"]["uid"], True, True)]

    # The operator keeps serving, and a new job with the same name gets fresh, correctly owned children.
    calls_before = len(cluster.calls)
    await cluster.remove(*PTJ, NS, "qwen-lora")
    await cluster.remove(*CM, NS, "qwen-lora-kubetune")  # what the garbage collector would do
    again = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: phase_is(cluster, "Pending"), what="the recreated job")
    assert cluster.read(*PTJ, NS, "qwen-lora")["metadata"]["ownerReferences"][0]["uid"] == again["metadata"]["uid"]
    assert not any(c.verb == "delete" for c in cluster.calls[calls_before:]), "the operator deletes nothing itself"


async def test_progress_follows_a_replaced_rank0_pod_and_steady_jobs_list_no_pods(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, progress_line(10, 100, 2.0))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 10, what="step 10")

    lists = sum(1 for c in cluster.calls if c.resource == "pods" and c.verb == "list")
    logs_before = sum(1 for c in cluster.calls if c.subresource == "log")
    await eventually(lambda: sum(1 for c in cluster.calls if c.subresource == "log") >= logs_before + 3, what="three more log reads")
    assert sum(1 for c in cluster.calls if c.resource == "pods" and c.verb == "list") == lists, "a steady running job needs no pod LIST"

    # The kubelet replaces the Master pod (node lost): progress continues from the new pod's log.
    await cluster.remove("v1", "pods", NS, pod)
    new_pod = "qwen-lora-master-0-b"
    await cluster.put_object(
        "v1",
        "pods",
        {
            "metadata": {"name": new_pod, "namespace": NS, "labels": {"training.kubeflow.org/job-name": "qwen-lora", "training.kubeflow.org/replica-type": "master"}},
            "spec": {"containers": [{"name": "pytorch"}]},
            "status": {"phase": "Running"},
        },
    )
    cluster.append_log(NS, new_pod, progress_line(40, 100, 1.5))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 40, what="progress from the new pod")
