"""The emulated Trainer v2.3 / JobSet v0.12 / Kueue v0.19.2 (trainer_v2.py) refuse what the real ones
refuse, with the real answers: one test per behaviour it plays (the citations are in trainer_v2.py).

A TrainJob here is what kubetune renders (``--backend trainjob``); writes go through the emulator's
admission exactly as the operator's would (``Cluster._write``: an update by another client)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.harness import example_job
from tests.support.apiserver.emulator import ApiError, Cluster
from tests.support.trainer_v2 import (
    CTR,
    KUEUE_MANAGER,
    TJ,
    _update,
    install_trainer,
    kueue_admits,
    kueue_reconciles,
    pod_name,
    pod_template,
    trainer_reconciles,
)

from kubetune.render import RenderOptions, render, validate_object

NS = "team-a"
ROOT = Path(__file__).resolve().parents[2]


def rendered(name: str = "qwen-lora", **spec: Any) -> dict[str, Any]:
    base = example_job(name, NS)["spec"]
    job, problems = validate_object(
        example_job(name, NS, **{**spec, "distributed": {**base.get("distributed", {}), "backend": "trainjob"}})
    )
    assert job is not None, problems
    return render(job, RenderOptions(backend="trainjob")).workload


def pod_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """Our runtimePatches entry's pod template spec (mutable in place)."""
    patch = next(p for p in obj["spec"]["runtimePatches"] if p["manager"] == "kubetune.io/operator")
    return dict(
        patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    )


def set_pod_field(obj: dict[str, Any], field: str, value: Any) -> None:
    patch = next(p for p in obj["spec"]["runtimePatches"] if p["manager"] == "kubetune.io/operator")
    patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        field
    ] = value


async def test_runtime_patch_volumes_are_immutable_even_while_suspended(cluster: Cluster) -> None:
    """CRD rule ``self == oldSelf`` on PodSpecPatch.volumes, found on the list-map items paired by manager."""
    install_trainer(cluster)
    await cluster.put_object(*TJ, rendered())

    def suspend_and_add_volume(o: dict[str, Any]) -> None:
        o["spec"]["suspend"] = True
        set_pod_field(o, "volumes", [*pod_patch(o)["volumes"], {"name": "extra", "emptyDir": {}}])

    with pytest.raises(ApiError) as refused:
        await _update(cluster, NS, "qwen-lora", suspend_and_add_volume)
    assert refused.value.code == 422 and refused.value.reason == "Invalid"
    assert re.search(
        r'spec\.runtimePatches\[0\]\..*\.volumes: Invalid value: "array": field is immutable', refused.value.message
    ), refused.value.message


async def test_placement_changes_only_while_suspended_and_the_refusal_is_a_webhook_403(cluster: Cluster) -> None:
    install_trainer(cluster)
    await cluster.put_object(*TJ, rendered())
    with pytest.raises(ApiError) as refused:
        await _update(cluster, NS, "qwen-lora", lambda o: set_pod_field(o, "nodeSelector", {"pool": "a100"}))
    assert (refused.value.code, refused.value.reason) == (403, "Forbidden")
    assert refused.value.message == (
        'trainjobs.trainer.kubeflow.org "qwen-lora" is forbidden: '
        'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
        "spec.runtimePatches: Forbidden: RuntimePatches can only be modified when the TrainJob is suspended "
        "before or after the update"
    )

    def suspend_and_place(o: dict[str, Any]) -> None:
        o["spec"]["suspend"] = True
        set_pod_field(o, "nodeSelector", {"pool": "a100"})

    await _update(cluster, NS, "qwen-lora", suspend_and_place)
    assert pod_patch(cluster.read(*TJ, NS, "qwen-lora"))["nodeSelector"] == {"pool": "a100"}  # type: ignore[arg-type]


async def test_spec_trainer_is_immutable_and_a_trainjob_name_is_rfc_1035(cluster: Cluster) -> None:
    install_trainer(cluster)
    await cluster.put_object(*TJ, rendered())
    with pytest.raises(ApiError, match=r'spec\.trainer: Invalid value: "object": field is immutable') as refused:
        await _update(
            cluster, NS, "qwen-lora", lambda o: o["spec"]["trainer"]["env"].append({"name": "X", "value": "1"})
        )
    assert refused.value.code == 422
    digit = rendered("other")
    digit["metadata"]["name"] = "7b-lora"  # kubetune itself refuses it for a TrainJob (backends/trainjob.py check)
    with pytest.raises(ApiError, match="metadata.name must match RFC 1035 DNS label format") as named:
        await cluster.put_object(*TJ, digit)
    assert named.value.code == 422


async def test_a_missing_runtime_is_the_webhooks_403(cluster: Cluster) -> None:
    install_trainer(cluster, runtime=False)
    with pytest.raises(ApiError) as refused:
        await cluster.put_object(*TJ, rendered())
    assert refused.value.code == 403
    assert (
        'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: spec.RuntimeRef'
        in refused.value.message
    )
    assert "specified clusterTrainingRuntime must be created before the TrainJob is created" in refused.value.message


async def test_runtime_patch_time_is_set_on_create_and_kept_while_the_entry_is_unchanged(cluster: Cluster) -> None:
    install_trainer(cluster)
    await cluster.put_object(*TJ, rendered())
    stored = cluster.read(*TJ, NS, "qwen-lora")
    assert stored is not None and stored["spec"]["runtimePatches"][0]["time"]

    def age(o: dict[str, Any]) -> None:
        o["spec"]["runtimePatches"][0]["time"] = "2020-01-01T00:00:00Z"

    key = (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), NS, "qwen-lora")
    cluster.store[key]["spec"]["runtimePatches"][0]["time"] = "2020-01-01T00:00:00Z"  # as if written long ago
    await _update(
        cluster, NS, "qwen-lora", lambda o: o["spec"]["runtimePatches"][0].pop("time")
    )  # a client re-sends the entry without time
    assert cluster.read(*TJ, NS, "qwen-lora")["spec"]["runtimePatches"][0]["time"] == "2020-01-01T00:00:00Z"  # type: ignore[index]

    def suspend_and_label(o: dict[str, Any]) -> None:
        o["spec"]["suspend"] = True
        patch = o["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
            "template"
        ]["spec"]["template"]
        patch["metadata"]["labels"]["team"] = "a"

    await _update(cluster, NS, "qwen-lora", suspend_and_label)
    assert cluster.read(*TJ, NS, "qwen-lora")["spec"]["runtimePatches"][0]["time"] != "2020-01-01T00:00:00Z"  # type: ignore[index]


async def test_kueue_appends_its_runtime_patch_to_every_trainjob_and_suspends_queued_ones(cluster: Cluster) -> None:
    install_trainer(cluster, kueue=True)
    await cluster.put_object(*TJ, rendered("plain"))
    plain = cluster.read(*TJ, NS, "plain")
    assert plain is not None and [p["manager"] for p in plain["spec"]["runtimePatches"]] == [
        "kubetune.io/operator",
        KUEUE_MANAGER,
    ]
    assert plain["spec"]["suspend"] is False, "no queue name: not suspended (the schema's default)"
    await cluster.put_object(*TJ, rendered("queued", scheduling={"queueName": "gpu"}))
    assert cluster.read(*TJ, NS, "queued")["spec"]["suspend"] is True  # type: ignore[index]


async def test_kueue_admission_replaces_the_users_tolerations_with_the_flavors(cluster: Cluster) -> None:
    """Kueue's entry comes after ours; Trainer strategic-merges the entries in order; tolerations are
    replaced, node selectors merged.  (Why kubetune refuses tolerations with a queue on a TrainJob.)"""
    install_trainer(cluster, kueue=True)
    mine = {"key": "team-a", "operator": "Exists", "effect": "NoSchedule"}
    flavor = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    job = rendered()
    job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "gpu"  # rendered by hand: kubetune refuses this pair
    set_pod_field(job, "tolerations", [mine])
    set_pod_field(job, "nodeSelector", {"zone": "a"})
    await cluster.put_object(*TJ, job)
    assert pod_template(cluster, NS, "qwen-lora")["spec"]["tolerations"] == [mine]
    await kueue_admits(cluster, NS, "qwen-lora", tolerations=[flavor], node_labels={"gpu": "a100"})
    spec = pod_template(cluster, NS, "qwen-lora")["spec"]
    assert spec["tolerations"] == [flavor], "the user's toleration is gone"
    assert spec["nodeSelector"] == {"zone": "a", "gpu": "a100"}
    assert cluster.read("v1", "pods", NS, pod_name("qwen-lora"))["spec"]["tolerations"] == [flavor]  # type: ignore[index]


async def test_kueue_unsuspends_an_admitted_trainjob_but_not_a_deleted_one(cluster: Cluster) -> None:
    install_trainer(cluster, kueue=True)
    await cluster.put_object(*TJ, rendered(scheduling={"queueName": "gpu"}))
    await kueue_admits(cluster, NS, "qwen-lora")

    def stop(o: dict[str, Any]) -> None:
        o["spec"]["suspend"] = True

    await _update(cluster, NS, "qwen-lora", stop)
    await trainer_reconciles(cluster, NS, "qwen-lora")
    assert cluster.read("v1", "pods", NS, pod_name("qwen-lora")) is None
    assert await kueue_reconciles(cluster, NS, "qwen-lora"), "Kueue starts an admitted job it finds suspended"
    assert cluster.read(*TJ, NS, "qwen-lora")["spec"]["suspend"] is False  # type: ignore[index]
    assert cluster.read("v1", "pods", NS, pod_name("qwen-lora")) is not None, "the pods are back"
    await cluster.remove(*TJ, NS, "qwen-lora")
    assert not await kueue_reconciles(cluster, NS, "qwen-lora")
    assert cluster.read(*TJ, NS, "qwen-lora") is None


async def test_jobset_refuses_pod_names_over_63_characters_and_trainer_only_records_an_event(cluster: Cluster) -> None:
    install_trainer(cluster)
    name = "a" * 49  # <name>-node-0-1-abcde is 64 characters with 2 nodes
    two_nodes = rendered("x", resources={**example_job()["spec"]["resources"], "nodes": 2})
    too_long = copy.deepcopy(two_nodes)
    too_long["metadata"]["name"] = name  # kubetune itself refuses it for a TrainJob (backends/trainjob.py check)
    await cluster.put_object(*TJ, too_long)
    await trainer_reconciles(cluster, NS, name)
    assert cluster.read("v1", "pods", NS, pod_name(name, 0)) is None
    (event,) = [e for e in cluster.objects("v1", "events", NS) if e["involvedObject"]["name"] == name]
    assert event["reason"] == "TrainJobResourcesCreationFailed"
    assert "pod names generated for this JobSet will exceed 63 characters" in event["message"]
    assert 'admission webhook "vjobset.kb.io" denied the request' in event["message"]
    fits = copy.deepcopy(two_nodes)
    fits["metadata"]["name"] = "b" * 48
    await cluster.put_object(*TJ, fits)
    await trainer_reconciles(cluster, NS, "b" * 48)
    assert cluster.read("v1", "pods", NS, pod_name("b" * 48, 1)) is not None, "63 characters fit"


async def test_the_trainjob_written_by_hand_in_the_docs_is_admitted(cluster: Cluster) -> None:
    """docs/trainjob.md's TrainJob passes the CRD and Trainer's webhook (a domain-prefixed manager)."""
    install_trainer(cluster)
    text = (ROOT / "docs" / "trainjob.md").read_text(encoding="utf-8")
    (doc,) = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "kind: TrainJob" in b]
    assert cluster.read(*CTR, None, doc["spec"]["runtimeRef"]["name"]) is not None
    await cluster.put_object(*TJ, copy.deepcopy(doc))
