"""Status that stays true, and retries that end: the real operator against the emulated cluster.

Kubeflow is played by ``kubeflow.py`` with the training-operator's ExitCode semantics
(pkg/controller.v1/common/pod.go: a retryable exit deletes and recreates the pod and sets
Restarting; job.go's PastBackoffLimit never counts ExitCode replicas).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
from tests.support.harness import EVENTS, FTJ, PTJ, example_job, eventually, training_started
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import job_failed, pod_exits, pod_runs_again, progress_line, set_condition, start_pod

from kubetune.api import FineTuneJobStatus
from kubetune.controller.reasons import REASONS

NS = "team-a"


def status(cluster: Cluster, name: str = "qwen-lora") -> dict[str, Any]:
    return (cluster.read(*FTJ, NS, name) or {}).get("status") or {}


def condition(cluster: Cluster, type_: str, name: str = "qwen-lora") -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


def reason_is(cluster: Cluster, reason: str, name: str = "qwen-lora") -> dict[str, Any] | bool:
    cond = condition(cluster, "Running", name)
    return cond if cond.get("reason") == reason else False


def events(cluster: Cluster, name: str = "qwen-lora") -> list[dict[str, Any]]:
    return [e for e in cluster.objects(*EVENTS, NS) if e["involvedObject"]["name"] == name]


async def pvc(cluster: Cluster, name: str, phase: str = "Bound") -> None:
    await cluster.put_object(
        "v1",
        "persistentvolumeclaims",
        {
            "metadata": {"name": name, "namespace": NS},
            "spec": {"accessModes": ["ReadWriteMany"]},
            "status": {"phase": phase},
        },
    )


async def claims(cluster: Cluster) -> None:
    """Every PVC the example job names (its prerequisites)."""
    for volume in example_job()["spec"]["storage"].values():
        await pvc(cluster, volume["claimName"])


async def nudge(cluster: Cluster, name: str = "qwen-lora") -> None:
    """Changes that make the operator reconcile again (the child's status is touched)."""
    for i in range(3):
        await cluster.mutate(
            *PTJ,
            NS,
            name,
            lambda o, i=i: o.setdefault("metadata", {}).setdefault("annotations", {}).update(nudge=str(i)),
        )
        await asyncio.sleep(0.3)


async def test_retryable_exits_end_in_backoff_limit_exceeded_and_the_count_survives_a_restart(
    cluster: Cluster, operator: Any
) -> None:
    first = await operator()
    await cluster.put_object(*FTJ, example_job(runPolicy={"backoffLimit": 2}))
    await training_started(cluster, NS)
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")

    await pod_exits(cluster, "PyTorchJob", NS, "qwen-lora", 130)  # NCCL / rendezvous: the trainer's retryable code
    restarting = await eventually(lambda: reason_is(cluster, "Restarting"), what="Restarting")
    assert (
        restarting["status"] == "True"
        and "exited with code 130" in restarting["message"]
        and "retry 1 of 2" in restarting["message"]
    )
    assert status(cluster)["phase"] == "Running"
    await pod_runs_again(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: reason_is(cluster, "JobRunning"), what="running again")

    await pod_exits(cluster, "PyTorchJob", NS, "qwen-lora", 137, "OOMKilled")  # host OOM kill: retryable too
    await eventually(lambda: (status(cluster).get("retries") or {}).get("count") == 2, what="2 retries")
    await first.stop()

    # A new operator (restart, or another replica) continues the count from status, not from zero.
    await operator()
    await pod_runs_again(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: reason_is(cluster, "JobRunning"), what="running again after the restart")
    assert status(cluster)["retries"]["count"] == 2
    await pod_exits(cluster, "PyTorchJob", NS, "qwen-lora", 130)
    await eventually(lambda: status(cluster).get("phase") == "Failed", what="Failed")
    failed = condition(cluster, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "3 training pod failures" in failed["message"] and "backoffLimit=2" in failed["message"]
    st = status(cluster)
    FineTuneJobStatus.model_validate(st)
    assert (
        st["retries"]["count"] == 3 and st["retries"]["lastExitCode"] == 130 and len(st["retries"]["countedPods"]) == 3
    )
    # The child is stopped, so the GPUs are freed (the training-operator deletes a suspended job's pods).
    assert cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True
    restarts = await eventually(
        lambda: (
            [e for e in events(cluster) if e["reason"] == "Restarting"]
            if len([e for e in events(cluster) if e["reason"] == "Restarting"]) >= 3
            else None
        ),
        what="3 Restarting Events",
    )
    assert len(restarts) == 3 and all(e["type"] == "Warning" for e in restarts)


async def test_a_permanent_exit_code_fails_at_once(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await training_started(cluster, NS)
    await pod_exits(cluster, "PyTorchJob", NS, "qwen-lora", 1)
    await eventually(lambda: status(cluster).get("phase") == "Failed", what="Failed")
    failed = condition(cluster, "Failed")
    assert failed["reason"] == "JobFailed"
    assert "exited with code 1 (1-127: permanent, not retried)" in failed["message"]
    assert not status(cluster).get("retries")


async def test_unschedulable_stays_until_a_pod_shows_the_cause_changed(cluster: Cluster, operator: Any) -> None:
    await operator()
    await claims(cluster)
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ]
    }
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **unschedulable)
    cond = await eventually(lambda: reason_is(cluster, "Unschedulable"), what="Unschedulable")
    assert REASONS["Unschedulable"].hint in cond["message"]

    await nudge(cluster)  # reconciles that see the same pods keep the reason
    await cluster.remove("v1", "pods", NS, pod)  # the pod is being recreated: no evidence either way
    await nudge(cluster)
    assert reason_is(cluster, "Unschedulable"), condition(cluster, "Running")
    assert status(cluster)["phase"] == "Pending"
    assert sum(1 for e in events(cluster) if e["reason"] == "Unschedulable") == 1, "one Warning, not one per reconcile"

    # The cause changes: the pod is scheduled and its container is being created.
    await start_pod(
        cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", conditions=[{"type": "PodScheduled", "status": "True"}]
    )
    await eventually(lambda: reason_is(cluster, "PodsPending"), what="PodsPending once scheduled")


async def test_waiting_for_queue_stays_and_names_a_missing_local_queue(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job(scheduling={"queueName": "gpu-queue"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    prereq = await eventually(lambda: condition(cluster, "PrerequisitesReady"), what="PrerequisitesReady")
    assert prereq["status"] == "False" and prereq["reason"] == "PrerequisiteMissing"
    assert "LocalQueue gpu-queue in namespace team-a: not found" in prereq["message"]
    assert "PersistentVolumeClaim finetune-outputs in namespace team-a: not found" in prereq["message"]

    await cluster.mutate(*PTJ, NS, "qwen-lora", lambda o: o["spec"]["runPolicy"].update(suspend=True))  # Kueue
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended", "JobSuspended")
    waiting = await eventually(lambda: reason_is(cluster, "WaitingForQueue"), what="WaitingForQueue")
    assert "LocalQueue gpu-queue: not found" in waiting["message"] and "kubectl get workloads" in waiting["message"]
    await nudge(cluster)
    assert reason_is(cluster, "WaitingForQueue") and status(cluster)["phase"] == "Pending"

    # The user creates the prerequisites: the condition follows (a missing one is re-checked).
    await cluster.put_object(
        "kueue.x-k8s.io/v1beta1",
        "localqueues",
        {"metadata": {"name": "gpu-queue", "namespace": NS}, "spec": {"clusterQueue": "gpus"}},
    )
    await claims(cluster)  # nothing else changes: the operator re-checks by itself (backoff from 0.2 s here)
    await eventually(
        lambda: condition(cluster, "PrerequisitesReady").get("status") == "True", timeout=40, what="prerequisites found"
    )
    assert "LocalQueue gpu-queue" in condition(cluster, "PrerequisitesReady")["message"]


async def test_missing_secret_and_missing_pvc_get_their_own_reasons(cluster: Cluster, operator: Any) -> None:
    await operator()
    await claims(cluster)
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    found = await eventually(
        lambda: (
            condition(cluster, "PrerequisitesReady").get("status") == "True"
            and condition(cluster, "PrerequisitesReady")
        ),
        what="PVC found",
    )
    assert found["reason"] == "PrerequisitesFound" and "PersistentVolumeClaim finetune-outputs" in found["message"]
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    # The kubelet's message for an env var whose Secret does not exist (kubelet_pods.go).
    waiting = {
        "containerStatuses": [
            {
                "name": "pytorch",
                "state": {
                    "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'}
                },
            }
        ]
    }
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **waiting)
    secret = await eventually(lambda: reason_is(cluster, "SecretMissing"), what="SecretMissing")
    assert "Secret hf-token does not exist" in secret["message"] and "create the Secret" in secret["message"]
    assert "spec.image" not in secret["message"], "a missing Secret is not an image problem"

    # The scheduler's volume-binding message: not a GPU shortage.
    volume = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": '0/4 nodes are available: persistentvolumeclaim "datasets" not found.',
            }
        ]
    }
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **volume)
    vol = await eventually(lambda: reason_is(cluster, "VolumeNotReady"), what="VolumeNotReady")
    assert "GPUs" not in vol["message"] and "create the PVC" in vol["message"]


async def test_controller_not_running_after_the_grace_period(cluster: Cluster, operator: Any, config: Any) -> None:
    await operator(dataclasses.replace(config, controller_grace_s=1.0))
    await claims(cluster)
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    cond = await eventually(lambda: reason_is(cluster, "ControllerNotRunning"), what="ControllerNotRunning")
    assert "Kubeflow training-operator" in cond["message"] and status(cluster)["phase"] == "Pending"
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")  # the controller shows up
    await eventually(lambda: reason_is(cluster, "PodsPending"), what="PodsPending once the controller acts")


async def test_an_unreadable_log_degrades_progress_only(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, progress_line(10, 100, 2.0))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 10, what="step 10")

    # The node is gone: the API server answers the log read with an error Status.
    cluster.log_errors[(NS, pod)] = (404, "NotFound", 'nodes "gpu-7" not found')
    await asyncio.sleep(0.6)
    await job_failed(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Failed", what="the child's phase despite the log")
    assert status(cluster)["progress"]["step"] == 10, "the last known progress stays"
    logs = [code for verb, res, code in cluster.call_log if res == "pods/log" or (verb == "get" and res == "pods")]
    assert 406 not in logs, "the log read accepts JSON, so errors come back as their real Status"


async def test_a_text_plain_only_log_read_gets_406_from_the_emulated_server(cluster: Cluster) -> None:
    """The emulator is as strict as a real v1.36 server (environment-facts.md)."""
    await start_pod(cluster, "PyTorchJob", NS, "x")
    cluster.log_errors[(NS, "x-master-0")] = (404, "NotFound", 'nodes "gpu-7" not found')
    url = f"{str(cluster.url).rstrip('/')}/api/v1/namespaces/{NS}/pods/x-master-0/log"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": "text/plain", "Authorization": "Bearer test-token"}) as resp:
            assert resp.status == 406
        async with session.get(
            url, headers={"Accept": "application/json, */*", "Authorization": "Bearer test-token"}
        ) as resp:
            assert resp.status == 404


async def test_repeated_identical_events_are_counted_not_duplicated(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="Pending")
    for suspend in (True, False, True, False):
        await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o, s=suspend: o["spec"].update(suspend=s))
        await eventually(
            lambda s=suspend: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is s,
            what=f"suspend={suspend}",
        )
    await eventually(
        lambda: (
            {e["reason"]: e.get("count") for e in events(cluster) if e["reason"] in ("Suspending", "Resuming")}
            == {"Suspending": 2, "Resuming": 2}
        ),
        what="counted events",
    )
    assert sum(1 for e in events(cluster) if e["reason"] == "Suspending") == 1
    suspending = next(e for e in events(cluster) if e["reason"] == "Suspending")
    assert suspending["lastTimestamp"] >= suspending["firstTimestamp"]


async def test_every_pod_reason_and_the_remaining_child_reasons(cluster: Cluster, operator: Any) -> None:
    """The rest of the documented reasons, end to end (docs/status.md's table)."""
    await operator()
    await claims(cluster)
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await eventually(
        lambda: (
            condition(cluster, "Validated")["reason"] == "Valid"
            and condition(cluster, "Created")["reason"] == "ChildrenCreated"
        ),
        what="Valid, ChildrenCreated",
    )
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Created")
    for reason, message in [
        ("ErrImagePull", "manifest unknown"),
        ("InvalidImageName", 'couldn\'t parse image reference "x::y"'),
        ("CreateContainerConfigError", 'configmap "extra-env" not found'),
        ("ImagePullBackOff", 'Back-off pulling image "x"'),
    ]:
        state = {
            "containerStatuses": [{"name": "pytorch", "state": {"waiting": {"reason": reason, "message": message}}}]
        }
        await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Pending", **state)
        cond = await eventually(lambda r=reason: reason_is(cluster, r), what=reason)
        assert message in cond["message"] and REASONS[reason].hint in cond["message"]
    await cluster.remove(*PTJ, NS, "qwen-lora")  # someone deletes the child
    await eventually(lambda: condition(cluster, "Failed").get("reason") == "JobDeleted", what="JobDeleted")
    assert status(cluster)["phase"] == "Failed"

    cluster.inject("patch", "pytorchjobs", 422, times=1)  # an admission webhook refuses the child
    await cluster.put_object(*FTJ, example_job("refused"))
    rejected = await eventually(
        lambda: (
            condition(cluster, "Created", "refused").get("reason") == "ChildRejected"
            and condition(cluster, "Created", "refused")
        ),
        what="ChildRejected",
    )
    assert (
        rejected["status"] == "False"
        and "422" in rejected["message"]
        and status(cluster, "refused")["phase"] == "Failed"
    )


async def test_pushed_progress_reaches_status_without_reading_the_log(
    cluster: Cluster, operator: Any, config: Any
) -> None:
    """A report on the progress board (the push transport) is in status at once; no log reads."""
    import time

    from kubetune.controller.progress import read_log

    op = await operator(dataclasses.replace(config, sync_interval_s=3600))  # the log fallback would take an hour
    await cluster.put_object(*FTJ, example_job())
    await training_started(cluster, NS)
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")
    reads = sum(1 for c in cluster.calls if c.subresource == "log")
    assert reads <= 1, "at most one log read before the trainer's first report"
    op.board.record(NS, "qwen-lora", read_log(progress_line(42, 100, 1.1)), time.time())
    await eventually(
        lambda: status(cluster).get("progress", {}).get("summary") == "42/100 (42%)", timeout=5, what="pushed progress"
    )
    op.board.record(NS, "qwen-lora", read_log(progress_line(43, 100, 1.0)), time.time())
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 43, timeout=5, what="the next report")
    await asyncio.sleep(0.5)
    assert sum(1 for c in cluster.calls if c.subresource == "log") == reads, "a pushing trainer costs no log reads"
