"""A FineTuneJob on Kubeflow Trainer v2: the operator creates a TrainJob and follows it.

The emulator plays Trainer v2.3, JobSet and Kueue's TrainJob webhook (trainer_v2.py names the
upstream files); the TrainJob the operator applies is checked there against the upstream schema.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.harness import CM, FTJ, PTJ, eventually, example_job
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import progress_line
from kubetune.api import FineTuneJobStatus
from tests.support.trainer_v2 import (
    TJ,
    denial,
    install_trainer,
    kueue_admits,
    kueue_reconciles,
    node_pod_fails,
    pod_name,
    pod_template,
    trainer_reconciles,
    trainjob_finishes,
)

NS = "team-a"


def status(cluster: Cluster, name: str = "qwen-lora") -> dict[str, Any]:
    return (cluster.read(*FTJ, NS, name) or {}).get("status") or {}


def condition(cluster: Cluster, type_: str, name: str = "qwen-lora") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


async def created_condition(cluster: Cluster, reason: str) -> dict[str, Any]:
    """The job's Created condition, once its reason is ``reason``."""
    found: dict[str, Any] = await eventually(
        lambda: condition(cluster, "Created").get("reason") == reason and condition(cluster, "Created"), what=reason
    )
    return found


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
    assert status(cluster)["job"] == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "name": "qwen-lora",
    }

    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running from jobsStatus")
    assert condition(cluster, "Running")["reason"] == "JobRunning"
    # Rank 0 is node 0 (JobSet labels); its log carries the trainer's progress lines.
    cluster.append_log(NS, pod_name("qwen-lora", 0), progress_line(7, 20, 0.8))
    await eventually(
        lambda: (status(cluster).get("progress") or {}).get("step") == 7, what="progress from node 0's log"
    )

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
    await eventually(
        lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is True, what="TrainJob suspended"
    )  # type: ignore[index]
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Suspended", what="Suspended")
    assert cluster.read("v1", "pods", NS, pod_name("qwen-lora", 0)) is None

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=False))
    await eventually(
        lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is False, what="TrainJob resumed"
    )  # type: ignore[index]
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running again")


async def test_without_trainer_v2_the_job_waits_with_an_install_hint(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    message = (await created_condition(cluster, "KindNotInstalled"))["message"]
    assert "TrainJob trainer.kubeflow.org/v1alpha1" in message and "trainingRuntimes.enabled=true" in message


async def test_the_emulated_trainer_is_strict_where_the_real_one_is(cluster: Cluster) -> None:
    import copy

    import pytest
    from tests.support.apiserver.emulator import ApiError
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
    running_patch["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"
    ]["spec"]["template"]["spec"]["nodeSelector"] = {"a": "b"}
    with pytest.raises(ApiError, match="RuntimePatches can only be modified when the TrainJob is suspended"):
        await cluster._write(
            (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), NS, "qwen-lora"),
            lambda old: {**old, "spec": running_patch["spec"]},
            None,
            None,
        )
    with pytest.raises(ApiError, match='spec.trainer: Invalid value: "object": field is immutable'):
        await cluster._write(
            (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), NS, "qwen-lora"),
            lambda old: {**old, "spec": changed["spec"]},
            None,
            None,
        )


async def test_kubetune_logs_finds_node_pods_of_a_trainjob_by_jobset_labels(cluster: Cluster, tmp_path: Any) -> None:
    from kubetune.render import RenderOptions, render, validate_object
    from tests.support.cli import add_job, kubeconfig, run_cli

    install_trainer(cluster)
    job, _ = validate_object(
        example_job(
            "qwen",
            resources={"nodes": 2, "gpusPerNode": 1},
            **{k: v for k, v in trainjob_spec().items() if k != "resources"},
        )
    )
    assert job is not None
    await cluster.put_object(*TJ, render(job, RenderOptions(backend="trainjob")).workload)
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(
        cluster,
        "qwen",
        phase="Running",
        job={"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": "qwen"},
    )
    code, _, err = await run_cli(["logs", "qwen"], config)
    assert code == 1 and "no node pod (completion index 0) of TrainJob team-a/qwen" in err
    await trainer_reconciles(cluster, NS, "qwen")
    cluster.append_log(NS, pod_name("qwen", 0), "rank 0 line")
    cluster.append_log(NS, pod_name("qwen", 1), "node 1 line")
    code, out, err = await run_cli(["logs", "qwen"], config)
    assert code == 0 and out == "rank 0 line\n", err
    code, out, err = await run_cli(["logs", "qwen", "--rank", "1"], config)
    assert code == 0 and out == "node 1 line\n", err


async def test_a_trainjob_pod_that_cannot_be_scheduled_explains_the_pending_job(
    cluster: Cluster, operator: Any
) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await trainer_reconciles(cluster, NS, "qwen-lora")

    def unschedulable(pod: dict[str, Any]) -> None:
        pod["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                }
            ],
        }

    def not_ready(obj: dict[str, Any]) -> None:
        # The Job is active (its pod is pending) but not ready: JobSet's counts (jobset_types.go ReplicatedJobStatus).
        obj["status"]["jobsStatus"] = [
            {"name": "node", "ready": 0, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}
        ]

    await cluster.mutate(*TJ, NS, "qwen-lora", not_ready)
    await cluster.mutate("v1", "pods", NS, pod_name("qwen-lora", 0), unschedulable)
    await eventually(
        lambda: condition(cluster, "Running").get("reason") == "Unschedulable", what="Unschedulable from the JobSet pod"
    )
    assert "Insufficient nvidia.com/gpu" in status(cluster)["message"] and status(cluster)["phase"] == "Pending"


# --- issue 20: what a real Trainer v2.3 / JobSet / Kueue refuse ------------------------------------


def trainjob_calls(cluster: Cluster, verb: str = "patch") -> list[int]:
    """HTTP statuses of the operator's writes of TrainJobs (the emulator's call log)."""
    return [code for v, plural, code in cluster.call_log if v == verb and plural == "trainjobs"]


async def running_trainjob(cluster: Cluster, operator: Any, *, kueue: bool = False, **spec: Any) -> None:
    install_trainer(cluster, kueue=kueue)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec(**spec)))
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")


async def test_an_env_edit_of_a_running_trainjob_is_refused_up_front_and_the_job_keeps_running(
    cluster: Cluster, operator: Any
) -> None:
    """spec.trainer is immutable (trainjob_types.go:114): the edit is reported, never sent (it hot-looped)."""
    await running_trainjob(cluster, operator)
    config = cluster.read(*CM, NS, "qwen-lora-kubetune")
    writes = len(trainjob_calls(cluster))
    await cluster.mutate(
        *FTJ, NS, "qwen-lora", lambda o: o["spec"].setdefault("env", []).append({"name": "EXTRA", "value": "1"})
    )
    refused = await eventually(
        lambda: (
            condition(cluster, "Validated").get("reason") == "ImmutableFieldChanged" and condition(cluster, "Validated")
        ),
        what="ImmutableFieldChanged",
    )
    assert "spec.env" in refused["message"] and "TrainJob spec.trainer is immutable" in refused["message"]
    assert status(cluster)["observedGeneration"] == 2 and status(cluster)["phase"] == "Running"
    assert len(trainjob_calls(cluster)) == writes, "nothing was sent to the TrainJob"
    assert cluster.read(*CM, NS, "qwen-lora-kubetune")["data"] == config["data"]  # type: ignore[index]
    # the Event is posted after the status patch (two writes): wait for it rather than race it
    await eventually(
        lambda: any(e["reason"] == "ImmutableFieldChanged" for e in cluster.objects("v1", "events", NS)),
        what="the ImmutableFieldChanged Event",
    )


async def test_a_placement_edit_is_carried_only_once_the_trainjob_is_suspended(cluster: Cluster, operator: Any) -> None:
    """Placement in runtimePatches may change only while the TrainJob is suspended and its JobSet has no
    active Job (jobset.go:214-251): refused up front while running, even together with suspend."""
    await running_trainjob(cluster, operator)
    selector = {"pool": "a100"}
    for step, change in enumerate(
        ({"scheduling": {"nodeSelector": selector}}, {"scheduling": {"nodeSelector": selector}, "suspend": True}), 2
    ):
        await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o, change=change: o["spec"].update(change))
        refused = await eventually(
            lambda step=step: status(cluster).get("observedGeneration") == step and condition(cluster, "Validated"),
            what="reported",
        )
        assert refused["reason"] == "ImmutableFieldChanged" and "nodeSelector" in refused["message"], refused
        assert "set spec.suspend: true alone first" in refused["message"] and "active: node" in refused["message"]
    assert all(code < 400 for code in trainjob_calls(cluster)), "nothing the webhook refuses was sent"

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].pop("scheduling"))  # suspend alone
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is True, what="suspended")  # type: ignore[index]
    await trainer_reconciles(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Suspended", what="Suspended")
    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(scheduling={"nodeSelector": selector}))
    await eventually(
        lambda: pod_template(cluster, NS, "qwen-lora")["spec"].get("nodeSelector") == selector, what="placement applied"
    )
    await eventually(
        lambda: (
            status(cluster).get("observedGeneration") == 5 and condition(cluster, "Validated").get("reason") == "Valid"
        ),
        what="Valid",
    )
    assert all(code < 400 for code in trainjob_calls(cluster))
    # the record of what runs, written after the TrainJob took it
    assert '"pool"' in cluster.read(*CM, NS, "qwen-lora-kubetune")["data"]["finetunejob.json"]  # type: ignore[index]


async def test_a_webhook_denial_of_the_trainjob_is_child_rejected_with_its_message(
    cluster: Cluster, operator: Any
) -> None:
    """A 403 from an admission webhook is the webhook's verdict, not RBAC: ChildRejected, not retried forever."""
    install_trainer(cluster)

    def policy(new: dict[str, Any], old: dict[str, Any] | None) -> None:
        raise denial(
            "trainjobs.trainer.kubeflow.org",
            new["metadata"]["name"],
            "gpu-policy.example.com",
            ["team-a may not use GPUs"],
        )

    cluster.admission[("trainer.kubeflow.org", "v1alpha1", "trainjobs")].append(policy)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    rejected = await created_condition(cluster, "ChildRejected")
    assert (
        'admission webhook "gpu-policy.example.com" denied the request: team-a may not use GPUs' in rejected["message"]
    )
    assert "403 Forbidden" in rejected["message"] and status(cluster)["phase"] == "Failed"
    assert trainjob_calls(cluster) == [403]


async def test_a_refused_update_is_reported_retried_with_backoff_and_recorded_only_once_taken(
    cluster: Cluster,
    operator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An update a webhook refuses: UpdateRejected with its message, a few retries (not hundreds), the
    ConfigMap untouched; once the webhook lets it through, the change is applied and recorded."""
    from kubetune.controller import snapshot

    monkeypatch.setattr(snapshot, "RETRY_FIRST_S", 0.4)
    await running_trainjob(cluster, operator)
    config = cluster.read(*CM, NS, "qwen-lora-kubetune")
    key = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")

    def freeze(new: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is not None and new["spec"].get("suspend") != old["spec"].get("suspend"):
            raise denial(
                "trainjobs.trainer.kubeflow.org", new["metadata"]["name"], "freeze.example.com", ["changes are frozen"]
            )

    cluster.admission[key].append(freeze)
    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"].update(suspend=True))
    rejected = await eventually(
        lambda: condition(cluster, "Validated").get("reason") == "UpdateRejected" and condition(cluster, "Validated"),
        what="UpdateRejected",
    )
    assert "changes are frozen" in rejected["message"] and status(cluster)["phase"] == "Running"
    # the Event is posted after the status patch (two writes): wait for it rather than race it
    await eventually(
        lambda: any(e["reason"] == "UpdateRejected" for e in cluster.objects("v1", "events", NS)),
        what="the UpdateRejected Event",
    )
    await eventually(lambda: trainjob_calls(cluster).count(403) >= 3, what="retries")
    assert trainjob_calls(cluster).count(403) <= 6, "retried with backoff, not at once"
    assert cluster.read(*CM, NS, "qwen-lora-kubetune")["data"] == config["data"]  # type: ignore[index]

    cluster.admission[key].remove(freeze)
    await eventually(
        lambda: cluster.read(*TJ, NS, "qwen-lora")["spec"].get("suspend") is True,
        what="applied once allowed",
        timeout=30,
    )  # type: ignore[index]
    await eventually(lambda: condition(cluster, "Validated").get("reason") == "Valid", what="Valid again")
    assert '"suspend": true' in cluster.read(*CM, NS, "qwen-lora-kubetune")["data"]["finetunejob.json"]  # type: ignore[index]


async def test_an_explicit_trainjob_without_our_runtime_waits_saying_so_and_sends_nothing(
    cluster: Cluster, operator: Any
) -> None:
    install_trainer(cluster, runtime=False)
    await operator()
    await cluster.put_object(*FTJ, example_job(**trainjob_spec()))
    waiting = await created_condition(cluster, "KindNotInstalled")
    assert (
        "kubetune-llamafactory" in waiting["message"]
        and "Trainer's webhook would refuse the TrainJob" in waiting["message"]
    )
    assert status(cluster)["phase"] == "Pending" and trainjob_calls(cluster) == []


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 49, "may have at most 48 characters"),  # <name>-node-0-0-abcde would be 64 (jobset_webhook.go:243-255)
        ("7b-lora", "starts with a digit"),  # RFC 1035 (trainjob_types.go:36)
    ],
)
async def test_a_name_a_trainjob_cannot_carry_falls_back_to_pytorchjob_with_auto_and_is_refused_when_named(
    cluster: Cluster,
    operator: Any,
    name: str,
    why: str,
) -> None:
    install_trainer(cluster)
    await operator()
    auto = example_job(name, NS)
    auto["spec"]["distributed"] = {**auto["spec"].get("distributed", {}), "backend": "auto"}
    await cluster.put_object(*FTJ, auto)
    ref = await eventually(lambda: status(cluster, name).get("job"), what="status.job")
    assert ref["kind"] == "PyTorchJob" and "metadata.name" in ref["selection"] and why in ref["selection"]

    named = ("b" if name[0] == "a" else "8") + name[1:]
    await cluster.put_object(*FTJ, example_job(named, NS, **trainjob_spec()))
    refused = await eventually(
        lambda: (
            condition(cluster, "Validated", named).get("reason") == "InvalidSpec"
            and condition(cluster, "Validated", named)
        ),
        what="InvalidSpec",
    )
    assert "metadata.name" in refused["message"] and why in refused["message"]
    assert cluster.read(*TJ, NS, named) is None and trainjob_calls(cluster) == []


async def test_tolerations_with_a_queue_take_a_pytorchjob_with_auto(cluster: Cluster, operator: Any) -> None:
    """Kueue would replace them on a TrainJob (see test_trainer_emulator): auto picks PyTorchJob,
    where Kueue adds the flavor's."""
    install_trainer(cluster, kueue=True)
    await operator()
    job = example_job(
        scheduling={
            "queueName": "gpu",
            "tolerations": [{"key": "team-a", "operator": "Exists", "effect": "NoSchedule"}],
        }
    )
    job["spec"]["distributed"] = {**job["spec"].get("distributed", {}), "backend": "auto"}
    await cluster.put_object(*FTJ, job)
    ref = await eventually(lambda: status(cluster).get("job"), what="status.job")
    assert ref["kind"] == "PyTorchJob" and "spec.scheduling.tolerations" in ref["selection"]
    assert (
        cluster.read(*PTJ, NS, "qwen-lora")["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["tolerations"][
            0
        ]["key"]
        == "team-a"
    )  # type: ignore[index]


async def test_past_the_retry_bound_a_queued_trainjob_is_deleted_so_kueue_cannot_resume_it(
    cluster: Cluster, operator: Any
) -> None:
    """Kueue unsuspends an admitted job it finds suspended (reconciler.go:621-635): suspending frees nothing."""
    install_trainer(cluster, kueue=True)
    await operator()
    await cluster.put_object(
        *FTJ, example_job(**trainjob_spec(scheduling={"queueName": "gpu"}, runPolicy={"backoffLimit": 0}))
    )
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora"), what="the TrainJob")
    await kueue_admits(cluster, NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")
    await node_pod_fails(cluster, NS, "qwen-lora", 137)
    await eventually(lambda: status(cluster).get("phase") == "Failed", what="Failed")
    failed = condition(cluster, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded" and "was deleted to free its GPUs" in failed["message"]
    await eventually(lambda: cluster.read(*TJ, NS, "qwen-lora") is None, what="the TrainJob deleted")
    assert not await kueue_reconciles(cluster, NS, "qwen-lora")
    assert cluster.read(*TJ, NS, "qwen-lora") is None and status(cluster)["phase"] == "Failed"
