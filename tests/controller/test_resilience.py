"""Crashes, restarts and API failures: the operator converges, never duplicates, never orphans."""

from __future__ import annotations

from typing import Any

from tests.support.harness import CM, EVENTS, FTJ, PTJ, example_job, eventually, training_started
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import progress_line, set_condition, start_pod

NS = "team-a"


def status(cluster: Cluster, name: str = "qwen-lora") -> dict[str, Any]:
    return (cluster.read(*FTJ, NS, name) or {}).get("status") or {}


def failed_calls(cluster: Cluster, verb: str, resource: str) -> int:
    return sum(1 for v, r, code in cluster.call_log if v == verb and r == resource and code >= 400)


def created_events(cluster: Cluster, name: str = "qwen-lora") -> int:
    return sum(
        1 for e in cluster.objects(*EVENTS, NS) if e["involvedObject"]["name"] == name and e["reason"] == "Created"
    )


def assert_one_owned_child_each(cluster: Cluster, uid: str) -> None:
    ptjs, cms = cluster.objects(*PTJ), cluster.objects(*CM)
    assert [p["metadata"]["name"] for p in ptjs] == ["qwen-lora"]
    assert [c["metadata"]["name"] for c in cms] == ["qwen-lora-kubetune"]
    for child in (*ptjs, *cms):
        assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == [uid]


async def test_restart_between_configmap_and_workload_leaves_no_duplicate_or_orphan(
    cluster: Cluster, operator: Any
) -> None:
    fault = cluster.inject("patch", "pytorchjobs", 500, times=10_000)
    first = await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(
        lambda: cluster.read(*CM, NS, "qwen-lora-kubetune") and failed_calls(cluster, "patch", "pytorchjobs") >= 2,
        what="a half-done reconcile",
    )
    assert cluster.read(*PTJ, NS, "qwen-lora") is None
    await first.stop()

    fault.times = 0
    await operator()
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="converged after restart")
    assert_one_owned_child_each(cluster, ftj["metadata"]["uid"])
    assert status(cluster)["job"]["name"] == "qwen-lora"
    await eventually(lambda: created_events(cluster) == 1, what="one Created event")


async def test_restart_after_children_but_before_status_converges(cluster: Cluster, operator: Any) -> None:
    fault = cluster.inject("patch", "finetunejobs", 500, times=10_000, subresource="status")
    first = await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora") and failed_calls(cluster, "patch", "finetunejobs") >= 1,
        what="children without status",
    )
    await first.stop()
    assert not status(cluster).get("job")

    fault.times = 0
    await operator()
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="status after restart")
    assert_one_owned_child_each(cluster, ftj["metadata"]["uid"])


async def test_restart_of_a_running_job_changes_nothing(cluster: Cluster, operator: Any) -> None:
    first = await operator()
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")
    ptj_before = cluster.read(*PTJ, NS, "qwen-lora")
    await first.stop()

    await operator()
    await eventually(
        lambda: any(v == "patch" and r == "pytorchjobs" for v, r, _ in cluster.call_log[-20:]),
        what="the resume handler's apply",
    )
    await eventually(lambda: status(cluster).get("phase") == "Running", what="still Running")
    assert cluster.read(*PTJ, NS, "qwen-lora") == ptj_before, "re-applying identical children is a no-op"
    assert_one_owned_child_each(cluster, ftj["metadata"]["uid"])
    assert created_events(cluster) == 1


async def test_injected_api_failures_and_dropped_watches_converge(cluster: Cluster, operator: Any) -> None:
    cluster.inject("patch", "configmaps", 429, times=2)
    cluster.inject("patch", "pytorchjobs", 409, times=1)
    cluster.inject("patch", "pytorchjobs", 500, times=1)
    cluster.inject("list", "pytorchjobs", 500, times=2)  # the child informer's LIST (status follows a watch, no GETs)
    cluster.inject("list", "pods", 503, times=2)  # the pod informer's LIST
    cluster.inject("create", "events", 500, times=1)
    await operator()
    await cluster.drop_watches()  # an API server restart right after start
    ftj = await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="Pending despite failures")
    assert_one_owned_child_each(cluster, ftj["metadata"]["uid"])

    await cluster.drop_watches(compact=True)  # and history expires: a resumed watch would get 410 Gone
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    cluster.append_log(NS, pod, progress_line(7, 70, 3.0))
    await eventually(
        lambda: status(cluster).get("progress", {}).get("summary") == "7/70 (10%)", what="progress after failures"
    )

    await cluster.put_object(*FTJ, example_job("second"))  # events after the relist still arrive
    await eventually(
        lambda: status(cluster, "second").get("phase") == "Pending", what="a job created after the watch expired"
    )
    assert [f.times for f in cluster.faults] == [0] * 6, "every injected failure was hit"
    # kopf resumed from its last resourceVersion, got 410 Gone, and re-listed.
    assert cluster.expired_watches >= 1
    assert sum(1 for c in cluster.calls if c.resource == "finetunejobs" and c.verb == "list") >= 2


async def test_immutable_change_while_the_operator_was_down_is_still_rejected(cluster: Cluster, operator: Any) -> None:
    first = await operator()
    await cluster.put_object(*FTJ, example_job())
    await eventually(lambda: status(cluster).get("phase") == "Pending", what="Pending")
    cm_before = cluster.read(*CM, NS, "qwen-lora-kubetune")
    await first.stop()

    await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["spec"]["resources"].update(nodes=4))
    await operator()
    await eventually(lambda: status(cluster).get("observedGeneration") == 2, what="generation 2 handled")
    validated = next(c for c in status(cluster)["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "ImmutableFieldChanged" and "spec.resources" in validated["message"]
    assert cluster.read(*CM, NS, "qwen-lora-kubetune") == cm_before
    assert status(cluster)["gpus"] == 8


async def test_missing_kubeflow_crd_is_reported_and_the_job_starts_once_installed(
    cluster: Cluster, operator: Any, config: Any
) -> None:
    import dataclasses

    pytorchjobs = cluster.kinds.pop(("kubeflow.org", "v1", "pytorchjobs"))
    await operator(dataclasses.replace(config, retry_delay_s=0.1))
    await cluster.put_object(*FTJ, example_job())
    created = await eventually(
        lambda: next((c for c in status(cluster).get("conditions") or [] if c["type"] == "Created"), None),
        what="Created condition",
    )
    assert created["status"] == "False" and created["reason"] == "KindNotInstalled"
    assert "Kubeflow training-operator" in created["message"] and status(cluster)["phase"] == "Pending"

    cluster.kinds[("kubeflow.org", "v1", "pytorchjobs")] = pytorchjobs  # the admin installs Kubeflow
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora"), timeout=20, what="the PyTorchJob once Kubeflow is installed"
    )
    await eventually(lambda: status(cluster).get("job"), what="status.job")
    kinds = sum(1 for e in cluster.objects(*EVENTS, NS) if e["reason"] == "KindNotInstalled")
    assert kinds == 1, "one Warning, not one per retry"


async def test_status_loop_pauses_while_a_higher_priority_peer_runs(
    cluster: Cluster, operator: Any, config: Any
) -> None:
    import asyncio
    import dataclasses
    import datetime

    cluster.declare("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False, has_status=False)
    await cluster.put_object("kopf.dev/v1", "clusterkopfpeerings", {"metadata": {"name": "kubetune"}})
    await operator(dataclasses.replace(config, peering="kubetune"))
    await cluster.put_object(*FTJ, example_job())
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, progress_line(10, 100, 2.0))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 10, what="step 10")

    now = datetime.datetime.now(datetime.UTC).isoformat()
    laptop = {"priority": 100, "lifetime": 60, "lastseen": now}
    await cluster.mutate(
        "kopf.dev/v1",
        "clusterkopfpeerings",
        None,
        "kubetune",
        lambda o: o.setdefault("status", {}).update(laptop=laptop),
    )
    await asyncio.sleep(0.5)  # let both kopf and the loop see the peer
    cluster.append_log(NS, pod, progress_line(20, 100, 1.8))
    await asyncio.sleep(1.5)  # several sync intervals (0.2 s)
    assert status(cluster)["progress"]["step"] == 10, "a paused operator must not write status"

    await cluster.mutate("kopf.dev/v1", "clusterkopfpeerings", None, "kubetune", lambda o: o["status"].pop("laptop"))
    await eventually(lambda: status(cluster).get("progress", {}).get("step") == 20, what="resumed after the peer left")


async def test_a_webhook_refusing_an_edit_is_reported_and_retried_with_backoff_not_at_once(
    cluster: Cluster,
    operator: Any,
    monkeypatch: Any,
) -> None:
    """A policy webhook refuses the re-applied PyTorchJob (403, controller-runtime's denial): the job
    keeps running, Validated=False "UpdateRejected" carries the webhook's message, the apply is retried
    with backoff (it was re-sent at once, ~30 times a second), and the ConfigMap, the record of what
    the children run, is not rewritten until the child took the change."""
    from kubetune.controller import snapshot
    from tests.support.trainer_v2 import denial

    monkeypatch.setattr(snapshot, "RETRY_FIRST_S", 0.5)
    await operator()
    await cluster.put_object(*FTJ, example_job())
    await training_started(cluster, NS)
    await eventually(lambda: status(cluster).get("phase") == "Running", what="Running")
    config = cluster.read(*CM, NS, "qwen-lora-kubetune")

    def freeze(new: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is not None:
            raise denial(
                "pytorchjobs.kubeflow.org",
                new["metadata"]["name"],
                "freeze.example.com",
                ["changes are frozen this week"],
            )

    cluster.admission[("kubeflow.org", "v1", "pytorchjobs")] = [freeze]
    await cluster.mutate(
        *FTJ, NS, "qwen-lora", lambda o: o["spec"].setdefault("env", []).append({"name": "EXTRA", "value": "1"})
    )
    cond = await eventually(
        lambda: (
            (c := next((c for c in status(cluster).get("conditions") or [] if c["type"] == "Validated"), {})).get(
                "reason"
            )
            == "UpdateRejected"
            and c
        ),
        what="UpdateRejected",
    )
    assert 'admission webhook "freeze.example.com" denied the request: changes are frozen this week' in cond["message"]
    assert status(cluster)["phase"] == "Running" and status(cluster)["observedGeneration"] == 2
    await eventually(lambda: failed_calls(cluster, "patch", "pytorchjobs") >= 3, what="retried")
    assert failed_calls(cluster, "patch", "pytorchjobs") <= 6, "backoff: 0.5, 1, 2, 4 s"
    assert cluster.read(*CM, NS, "qwen-lora-kubetune")["data"] == config["data"]  # type: ignore[index]

    del cluster.admission[("kubeflow.org", "v1", "pytorchjobs")]
    await eventually(
        lambda: any(
            e.get("name") == "EXTRA"
            for e in cluster.read(*PTJ, NS, "qwen-lora")["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
                "containers"
            ][0].get("env")
            or []
        ),  # type: ignore[index]
        what="applied once the webhook allows it",
        timeout=30,
    )
    await eventually(
        lambda: next(c for c in status(cluster)["conditions"] if c["type"] == "Validated")["reason"] == "Valid",
        what="Valid again",
    )
    await eventually(
        lambda: '"EXTRA"' in cluster.read(*CM, NS, "qwen-lora-kubetune")["data"]["finetunejob.json"], what="recorded"
    )  # type: ignore[index]
