"""A FineTuneJob on Kubeflow Trainer v2: the operator creates a TrainJob and follows it.

The emulator plays Trainer v2.3, JobSet and Kueue's TrainJob webhook (trainer_v2.py names the
upstream files); the TrainJob the operator applies is checked there against the upstream schema.
"""

from __future__ import annotations

from typing import Any

from conftest import CM, FTJ, PTJ, eventually, example_job
from emulator import Cluster
from kubeflow import progress_line
from kubetune.api import FineTuneJobStatus
from trainer_v2 import (
    TJ,
    install_trainer,
    kueue_admits,
    pod_name,
    trainer_reconciles,
    trainjob_finishes,
)

NS = "team-a"


def status(cluster: Cluster, name: str = "qwen-lora") -> dict[str, Any]:
    return (cluster.read(*FTJ, NS, name) or {}).get("status") or {}


def condition(cluster: Cluster, type_: str, name: str = "qwen-lora") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


def trainjob_spec(**changes: Any) -> dict[str, Any]:
    spec = example_job()["spec"]
    return {**spec, "distributed": {**spec.get("distributed", {}), "backend": "trainjob"}, **changes}


async def test_trainjob_lifecycle_running_progress_succeeded(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    child = await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    assert cluster.read(*PTJ, NS, "qwen-lora") is None
    assert child["spec"]["runtimeRef"]["name"] == "kubetune-llamafactory"
    assert child["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    assert cluster.read(*CM, NS, "qwen-lora-kubetune") is not None
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="Pending")
    assert status(cluster)["job"] == {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": "qwen-lora"}

    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running from jobsStatus")
    assert condition(cluster, "Running")["reason"] == "JobRunning"
    # Rank 0 is node 0 (JobSet labels); its log carries the trainer's progress lines.
    cluster.append_log(NS, pod_name("qwen-lora", 0), progress_line(7, 20, 0.8))
    await eventually(lambda: (status(cluster).get("progress") or {}).get("step") == 7, what="progress from node 0's log")

    await trainjob_finishes(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Succeeded", what="Succeeded from Complete")
    assert "jobset completed successfully" in status(cluster)["message"]
    FineTuneJobStatus.model_validate(status(cluster))


async def test_trainjob_failed_condition_fails_the_job_with_the_exit_code(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")
    await trainjob_finishes(cluster, NS, "qwen-lora", exit_code=1)
    await eventually(lambda: status(cluster).get("phase") == "Failed", what="Failed")
    assert condition(cluster, "Failed")["reason"] == "JobFailed"
    message = status(cluster)["message"]
    assert "jobset failed" in message and "exited with code 1" in message


async def test_kueue_suspends_the_trainjob_until_admission(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster, kueue=True)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec(scheduling={"queueName": "gpu-queue"})))
    child = await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    assert child["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert child["spec"]["suspend"] is True, "Kueue's webhook suspended it at creation"
    assert {p["manager"] for p in child["spec"]["runtimePatches"]} == {"kubetune.io/operator", "kueue.x-k8s.io/manager"}
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: condition(cluster, "Running").get("reason") == "WaitingForQueue", what="WaitingForQueue")
    assert status(cluster)["phase"] == "Pending" and "gpu-queue" in status(cluster)["message"]

    await kueue_admits(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running once admitted")
    resumed = next(c for c in cluster.read(*TJ, NS, "qwen-lora")["status"]["conditions"] if c["type"] == "Suspended")  # type: ignore[index]
    assert (resumed["status"], resumed["reason"]) == ("False", "Resumed")


async def test_user_suspend_reaches_the_trainjob_and_resume_restarts_it(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=True))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is True, what="TrainJob suspended")  # type: ignore[index]
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Suspended", what="Suspended")
    assert cluster.read("v1", "pods", NS, pod_name("qwen-lora", 0)) is None

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is False, what="TrainJob resumed")  # type: ignore[index]
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running again")


async def test_without_trainer_v2_the_job_waits_with_an_install_hint(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    await eventually(lambda: condition(cluster, "Created").get("reason") == "KindNotInstalled", what="KindNotInstalled")
    message = condition(cluster, "Created")["message"]
    assert "TrainJob trainer.kubeflow.org/v1alpha1" in message and "trainingRuntimes.enabled=true" in message


async def test_the_emulated_trainer_is_strict_where_the_real_one_is(cluster: Cluster) -> None:
    import copy

    import pytest
    from emulator import ApiError
    from kubetune.render import RenderOptions, render, validate_object

    install_trainer(cluster)
    job, _ = validate_object(example_job(**trainjob_spec()))
    assert job is not None
    good = render(job, RenderOptions(backend="trainjob")).workload
    bad_field = copy.deepcopy(good)
    bad_field["spec"]["trainer"]["nprocPerNode"] = 8  # a PyTorchJob field: not in the TrainJob schema
    reserved = copy.deepcopy(good)
    reserved["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"})
    for obj, fragment in ((bad_field, "nprocPerNode"), (reserved, "PET_NNODES")):
        with pytest.raises(ApiError, match=fragment):
            await cluster.put_object(*TJ, obj)
    await cluster.put_object(*TJ, good)
    changed = copy.deepcopy(good)
    changed["spec"]["trainer"]["numNodes"] = 3
    running_patch = copy.deepcopy(good)
    running_patch["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["nodeSelector"] = {"a": "b"}
    with pytest.raises(ApiError, match="RuntimePatches can only be modified when the TrainJob is suspended"):
        await cluster._write(
            (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), NS, "qwen-lora"), lambda old: {**old, "spec": running_patch["spec"]}, None, None
        )
    with pytest.raises(ApiError, match="spec.trainer: Invalid value: field is immutable"):
        await cluster._write(
            (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), NS, "qwen-lora"), lambda old: {**old, "spec": changed["spec"]}, None, None
        )


async def test_kubetune_logs_finds_node_pods_of_a_trainjob_by_jobset_labels(cluster: Cluster, tmp_path: Any) -> None:
    from kubetune.render import RenderOptions, render, validate_object
    from test_terminal import add_job, kubeconfig, run_cli

    install_trainer(cluster)
    job, _ = validate_object(example_job("qwen", resources={"nodes": 2, "gpusPerNode": 1}, **{k: v for k, v in trainjob_spec().items() if k != "resources"}))
    assert job is not None
    await cluster.put_object(*TJ, render(job, RenderOptions(backend="trainjob")).workload)
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "qwen", phase="Running", job={"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": "qwen"})
    code, _, err = await run_cli(["logs", "qwen"], config)
    assert code == 1 and "no node pod (completion index 0) of TrainJob team-a/qwen" in err
    await trainer_reconciles(cluster, NS, "qwen")
    cluster.append_log(NS, pod_name("qwen", 0), "rank 0 line")
    cluster.append_log(NS, pod_name("qwen", 1), "node 1 line")
    code, out, err = await run_cli(["logs", "qwen"], config)
    assert code == 0 and out == "rank 0 line\n", err
    code, out, err = await run_cli(["logs", "qwen", "--rank", "1"], config)
    assert code == 0 and out == "node 1 line\n", err


async def test_a_trainjob_pod_that_cannot_be_scheduled_explains_the_pending_job(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await trainer_reconciles(cluster, NS, "qwen-lora")

    def unschedulable(pod: dict[str, Any]) -> None:
        pod["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}

    def not_ready(obj: dict[str, Any]) -> None:
        # The Job is active (its pod is pending) but not ready: JobSet's counts (jobset_types.go ReplicatedJobStatus).
        obj["status"]["jobsStatus"] = [{"name": "node", "ready": 0, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}]

    await cluster.mutate(*TJ, NS, "qwen-lora", not_ready)
    await cluster.mutate("v1", "pods", NS, pod_name("qwen-lora", 0), unschedulable)
    await eventually(lambda: condition(cluster, "Running").get("reason") == "Unschedulable", what="Unschedulable from the JobSet pod")
    assert "Insufficient nvidia.com/gpu" in status(cluster)["message"] and status(cluster)["phase"] == "Pending"
