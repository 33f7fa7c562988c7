"""spec.distributed.backend: auto (the default) - the operator asks API discovery which kinds the
cluster serves: TrainJob with Trainer v2 and kubetune's runtime, else PyTorchJob; the choice and why
go into status.job.selection and a BackendSelected Event.  Both ways, and the refresh when Trainer
appears after the operator started (trainer_v2.py plays Trainer v2.3)."""

from __future__ import annotations

from typing import Any

from tests.support.harness import EVENTS, FTJ, PTJ, eventually, example_job
from tests.support.apiserver.emulator import Cluster
from tests.support.trainer_v2 import TJ, install_trainer

NS = "team-a"


def job_ref(cluster: Cluster, name: str) -> dict[str, Any]:
    return ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("job") or {}


def selected_events(cluster: Cluster, name: str) -> list[str]:
    return [
        e["message"]
        for e in cluster.objects(*EVENTS, NS)
        if e["reason"] == "BackendSelected" and e["involvedObject"]["name"] == name
    ]


def auto_job(name: str, **changes: Any) -> dict[str, Any]:
    doc = example_job(name, **changes)
    doc["spec"].get("distributed", {}).pop("backend", None)  # the default: auto
    return doc


async def test_trainer_v2_and_our_runtime_give_a_trainjob(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    await cluster.put_object(*FTJ, auto_job("a"))
    await eventually(lambda: cluster.read(*TJ, NS, "a"), what="a TrainJob")
    assert cluster.read(*PTJ, NS, "a") is None
    ref = await eventually(
        lambda: job_ref(cluster, "a").get("kind") == "TrainJob" and job_ref(cluster, "a"), what="status.job"
    )
    assert "Kubeflow Trainer v2" in ref["selection"] and "kubetune-llamafactory" in ref["selection"]
    await eventually(lambda: selected_events(cluster, "a"), what="BackendSelected Event")
    assert "using TrainJob" in selected_events(cluster, "a")[0]

    # A field a TrainJob cannot carry keeps the job on PyTorchJob, saying which.
    await cluster.put_object(*FTJ, auto_job("a2", scheduling={"priorityClassName": "high"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "a2"), what="a PyTorchJob for a2")
    sel = await eventually(lambda: job_ref(cluster, "a2").get("selection"), what="selection")
    assert "cannot carry spec.scheduling.priorityClassName" in sel


async def test_only_v1_crds_give_a_pytorchjob(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, auto_job("b"))
    await eventually(lambda: cluster.read(*PTJ, NS, "b"), what="a PyTorchJob")
    ref = await eventually(
        lambda: job_ref(cluster, "b").get("selection") and job_ref(cluster, "b"), what="status.job.selection"
    )
    assert ref["kind"] == "PyTorchJob" and "does not serve TrainJob" in ref["selection"]
    await eventually(lambda: selected_events(cluster, "b"), what="BackendSelected Event")


async def test_trainer_without_our_runtime_gives_a_pytorchjob(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster, runtime=False)
    await operator()
    await cluster.put_object(*FTJ, auto_job("c"))
    await eventually(lambda: cluster.read(*PTJ, NS, "c"), what="a PyTorchJob")
    sel = await eventually(lambda: job_ref(cluster, "c").get("selection"), what="selection")
    assert "no ClusterTrainingRuntime kubetune-llamafactory" in sel
    # a command that works as written: the chart path, the release's namespace, the other values kept
    assert (
        "helm upgrade kubetune charts/kubetune -n kubetune-system --reuse-values --set trainingRuntimes.enabled=true"
        in sel
    )
    assert cluster.read(*TJ, NS, "c") is None


async def test_a_named_backend_is_not_second_guessed(cluster: Cluster, operator: Any) -> None:
    install_trainer(cluster)
    await operator()
    spec = example_job("d")["spec"]
    await cluster.put_object(*FTJ, example_job("d", distributed={**spec["distributed"], "backend": "pytorchjob"}))
    await eventually(lambda: cluster.read(*PTJ, NS, "d"), what="a PyTorchJob")
    await eventually(lambda: job_ref(cluster, "d").get("kind") == "PyTorchJob", what="status.job")
    assert "selection" not in job_ref(cluster, "d") and not selected_events(cluster, "d")


async def test_discovery_is_refreshed_when_trainer_appears(cluster: Cluster, operator: Any) -> None:
    await operator()
    await cluster.put_object(*FTJ, auto_job("before"))
    await eventually(lambda: cluster.read(*PTJ, NS, "before"), what="a PyTorchJob before Trainer")
    install_trainer(cluster)  # Trainer v2 and the runtime are installed while the operator runs
    await eventually(lambda: cluster.watching.get("trainjobs"), timeout=20, what="the TrainJob informer sees the kind")
    await cluster.put_object(*FTJ, auto_job("after"))
    await eventually(lambda: cluster.read(*TJ, NS, "after"), what="a TrainJob after Trainer appeared")
    # The first job keeps its child: a choice is made once, before the child exists.
    assert job_ref(cluster, "before")["kind"] == "PyTorchJob" and cluster.read(*TJ, NS, "before") is None


async def test_editing_an_auto_job_is_not_a_backend_change(cluster: Cluster, operator: Any) -> None:
    # The ConfigMap records the kind auto chose; the spec still says auto: suspending the running job
    # is a suspend, not ImmutableFieldChanged on spec.distributed.
    await operator()
    await cluster.put_object(*FTJ, auto_job("e"))
    await eventually(lambda: cluster.read(*PTJ, NS, "e"), what="a PyTorchJob")
    # the edit comes after the operator recorded the running job (its status lands after the children)
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, "e") or {}).get("status") or {}).get("configMap"), what="status.configMap"
    )
    await cluster.mutate(*FTJ, NS, "e", lambda o: o["spec"].update(suspend=True))
    await eventually(
        lambda: (cluster.read(*PTJ, NS, "e") or {})["spec"]["runPolicy"].get("suspend") is True,
        what="the child suspended",
    )
    # the child is suspended first, then the Event is posted (two writes): wait for the Event too
    await eventually(
        lambda: (
            "Suspending" in {e["reason"] for e in cluster.objects(*EVENTS, NS) if e["involvedObject"]["name"] == "e"}
        ),
        what="the Suspending Event",
    )
    reasons = {e["reason"] for e in cluster.objects(*EVENTS, NS) if e["involvedObject"]["name"] == "e"}
    assert "ImmutableFieldChanged" not in reasons


async def test_no_permission_to_read_the_runtime_falls_back_to_pytorchjob_saying_so(
    cluster: Cluster, operator: Any
) -> None:
    install_trainer(cluster)
    cluster.inject("get", "clustertrainingruntimes", 403, times=1000)  # RBAC left to a platform team without that grant
    await operator()
    await cluster.put_object(*FTJ, auto_job("f"))
    await eventually(lambda: cluster.read(*PTJ, NS, "f"), what="a PyTorchJob")
    sel = await eventually(lambda: job_ref(cluster, "f").get("selection"), what="selection")
    assert "may not read ClusterTrainingRuntime" in sel
