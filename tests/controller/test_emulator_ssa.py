"""Server-side apply in the emulated API server is the real one (tests/support/apiserver/ssa.py cites
structured-merge-diff v6.3.3 and k8s.io/apimachinery v0.36.3): field ownership, pruning of what an
applier stopped sending, conflicts and force, list-map / atomic merges.  Each of these passed as a
plain JSON merge before (issue 22), so an operator that dropped a field or fought Kueue looked fine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.apiserver.emulator import Cluster

DEPLOY = "/apis/apps/v1/namespaces/ns/deployments"
PTJ = "/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs"
APPLY = {"Content-Type": "application/apply-patch+yaml"}


@pytest.fixture(autouse=True)
def anonymous(cluster: Cluster) -> Iterator[Cluster]:
    checker, cluster.authenticate = cluster.authenticate, None
    yield cluster
    cluster.authenticate = checker


async def apply(
    cluster: Cluster, url: str, body: dict[str, Any], manager: str = "kubetune", force: bool = False
) -> tuple[int, Any]:
    params = {"fieldManager": manager, **({"force": "true"} if force else {})}
    async with cluster.request(
        "PATCH", f"{url}/{body['metadata']['name']}", params=params, data=json.dumps(body), headers=APPLY
    ) as resp:
        return resp.status, await resp.json()


def deployment(labels: dict[str, str], containers: list[dict[str, Any]], **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers, **pod_spec}},
        },
    }


def ptj(**run_policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "j"},
        "spec": {"runPolicy": run_policy},
    }


def owners(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f'{e["manager"]}/{e["operation"]}': e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


async def test_a_field_the_renderer_stops_sending_is_removed_from_the_child(cluster: Cluster) -> None:
    trainer = {"name": "trainer", "image": "img:1", "env": [{"name": "A", "value": "1"}, {"name": "OLD", "value": "x"}]}
    assert (
        await apply(cluster, DEPLOY, deployment({"app": "d", "old": "x"}, [trainer], nodeSelector={"gpu": "a100"}))
    )[0] == 201
    trainer = {"name": "trainer", "image": "img:1", "env": [{"name": "A", "value": "1"}]}
    code, obj = await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer]))
    assert code == 200, obj
    assert obj["metadata"]["labels"] == {"app": "d"}
    pod = obj["spec"]["template"]["spec"]
    assert pod["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert "nodeSelector" not in pod
    fields = owners(obj)["kubetune/Apply"]
    # An applier owns leaves and list items (typed/tofieldset.go 90-171), not the maps around them.
    assert fields["f:metadata"]["f:labels"] == {"f:app": {}}
    env = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"trainer"}']["f:env"]
    assert env == {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}}


async def test_a_field_kueue_set_survives_our_apply_and_sending_it_conflicts_without_force(cluster: Cluster) -> None:
    assert (await apply(cluster, PTJ, ptj(suspend=True, backoffLimit=3)))[0] == 201

    def kueue_admits(obj: dict[str, Any]) -> None:
        obj["spec"]["runPolicy"]["suspend"] = False

    await cluster.mutate("kubeflow.org/v1", "pytorchjobs", "ns", "j", kueue_admits, manager="kueue")
    stored = cluster.read("kubeflow.org/v1", "pytorchjobs", "ns", "j")
    assert stored is not None
    assert owners(stored)["kueue/Update"] == {"f:spec": {"f:runPolicy": {"f:suspend": {}}}}

    # Our next apply no longer sends suspend (Kueue owns it): Kueue's value stays, our dropped field goes.
    code, obj = await apply(cluster, PTJ, ptj(cleanPodPolicy="None"))
    assert code == 200, obj
    assert obj["spec"]["runPolicy"] == {"suspend": False, "cleanPodPolicy": "None"}

    # Sending it again without force: 409 naming Kueue and the field, nothing written.
    code, status = await apply(cluster, PTJ, ptj(suspend=True, cleanPodPolicy="None"))
    assert code == 409 and status["reason"] == "Conflict"
    assert (
        status["message"]
        == 'Apply failed with 1 conflict: conflict with "kueue" using kubeflow.org/v1: .spec.runPolicy.suspend'
    )
    assert status["details"]["causes"] == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kueue" using kubeflow.org/v1',
            "field": ".spec.runPolicy.suspend",
        }
    ]
    assert cluster.read("kubeflow.org/v1", "pytorchjobs", "ns", "j")["spec"]["runPolicy"]["suspend"] is False  # type: ignore[index]

    # With force the applier takes the field; Kueue's entry, left empty, is dropped.
    code, obj = await apply(cluster, PTJ, ptj(suspend=True, cleanPodPolicy="None"), force=True)
    assert code == 200 and obj["spec"]["runPolicy"]["suspend"] is True
    assert "kueue/Update" not in owners(obj)
    assert "f:suspend" in owners(obj)["kubetune/Apply"]["f:spec"]["f:runPolicy"]


async def test_a_conflict_lists_every_manager_and_field(cluster: Cluster) -> None:
    assert (await apply(cluster, PTJ, ptj(suspend=True, backoffLimit=1), manager="alice"))[0] == 201
    code, status = await apply(cluster, PTJ, ptj(suspend=False, backoffLimit=2), manager="bob")
    assert code == 409
    assert (
        status["message"] == 'Apply failed with 2 conflicts: conflicts with "alice":\n'
        '- .spec.runPolicy.backoffLimit\n- .spec.runPolicy.suspend'
    )
    # Two appliers agreeing on a value share it without a conflict.
    code, obj = await apply(cluster, PTJ, ptj(suspend=True), manager="bob")
    assert code == 200
    assert (
        "f:suspend" in owners(obj)["alice/Apply"]["f:spec"]["f:runPolicy"]
        and "f:suspend" in owners(obj)["bob/Apply"]["f:spec"]["f:runPolicy"]
    )


async def test_list_map_merge_keeps_another_managers_entries(cluster: Cluster) -> None:
    trainer = {"name": "trainer", "image": "img:1", "env": [{"name": "A", "value": "1"}]}
    assert (await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer])))[0] == 201

    def injector(obj: dict[str, Any]) -> None:  # a webhook-like controller adds an env var and a sidecar
        pod = obj["spec"]["template"]["spec"]
        pod["containers"][0]["env"].append({"name": "INJECTED", "value": "yes"})
        pod["containers"].append({"name": "sidecar", "image": "proxy:1"})

    await cluster.mutate("apps/v1", "deployments", "ns", "d", injector, manager="injector")
    trainer = {"name": "trainer", "image": "img:2", "env": [{"name": "A", "value": "2"}]}
    code, obj = await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer]))
    assert code == 200, obj
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["trainer", "sidecar"]
    assert containers[0]["image"] == "img:2"
    assert containers[0]["env"] == [{"name": "A", "value": "2"}, {"name": "INJECTED", "value": "yes"}]


async def test_an_atomic_list_is_replaced_whole_and_owned_whole(cluster: Cluster) -> None:
    trainer = {"name": "trainer", "image": "img:1", "args": ["--a", "--b"]}
    toleration = {"key": "gpu", "operator": "Exists"}
    assert (await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer], tolerations=[toleration])))[0] == 201

    def scheduler(obj: dict[str, Any]) -> None:  # Kueue writes its flavor's tolerations into the pod template
        obj["spec"]["template"]["spec"]["tolerations"].append({"key": "flavor", "operator": "Exists"})

    await cluster.mutate("apps/v1", "deployments", "ns", "d", scheduler, manager="kueue")
    # tolerations is atomic in the Kubernetes OpenAPI: Kueue's change made the whole list Kueue's.
    code, status = await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer], tolerations=[toleration]))
    assert code == 409
    assert status["details"]["causes"][0]["field"] == ".spec.template.spec.tolerations"
    # Args are atomic too: a new list replaces the old one, no element merge.
    trainer = {"name": "trainer", "image": "img:1", "args": ["--c"]}
    code, obj = await apply(cluster, DEPLOY, deployment({"app": "d"}, [trainer]))
    assert code == 200, obj
    pod = obj["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["--c"]
    assert len(pod["tolerations"]) == 2  # no longer sent by us, owned by Kueue: kept


async def test_a_set_list_keeps_each_appliers_values(cluster: Cluster) -> None:
    """metadata.finalizers is x-kubernetes-list-type: set (ObjectMeta in the v1.36 OpenAPI): items by value."""

    def with_finalizers(*names: str) -> dict[str, Any]:
        return {**ptj(), "metadata": {"name": "j", "finalizers": list(names)}}

    assert (await apply(cluster, PTJ, with_finalizers("a.io/x"), manager="a"))[0] == 201
    code, obj = await apply(cluster, PTJ, with_finalizers("b.io/y"), manager="b")
    assert code == 200 and obj["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]
    assert owners(obj)["b/Apply"]["f:metadata"]["f:finalizers"] == {'v:"b.io/y"': {}}
    code, obj = await apply(cluster, PTJ, with_finalizers(), manager="a")
    assert code == 200 and obj["metadata"]["finalizers"] == ["b.io/y"]


async def test_updates_are_tracked_under_the_field_manager_or_user_agent(cluster: Cluster) -> None:
    body = ptj(suspend=True)
    async with cluster.request(
        "POST",
        PTJ,
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "User-Agent": "kubectl/v1.36.0 (linux/amd64)"},
    ) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert owners(created) == {"kubectl/Update": {"f:spec": {".": {}, "f:runPolicy": {".": {}, "f:suspend": {}}}}}
    patch = {"spec": {"runPolicy": {"backoffLimit": 2}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.request(
        "PATCH", f"{PTJ}/j", params={"fieldManager": "ops"}, data=json.dumps(patch), headers=headers
    ) as resp:
        patched = await resp.json()
    assert owners(patched)["ops/Update"] == {"f:spec": {"f:runPolicy": {"f:backoffLimit": {}}}}
    # The first apply to an object others wrote conflicts with their fields.
    code, status = await apply(cluster, PTJ, ptj(backoffLimit=5))
    assert code == 409 and 'conflict with "ops" using kubeflow.org/v1' in status["message"]


# --- FineTuneJob writes go through the generated CRD's structural schema -------------------------

FTJS = "/apis/kubetune.io/v1alpha1/namespaces/ns/finetunejobs"


async def install_crd(cluster: Cluster) -> None:
    """Installed through the API, as helm does (the conftest cluster has it in store already)."""
    from kubetune.api.crd import crd

    cluster.store.pop((("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "finetunejobs.kubetune.io"))
    async with cluster.request(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        data=json.dumps(crd()),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 201, await resp.text()


def ftj(name: str = "f", **spec: Any) -> dict[str, Any]:
    from tests.support.harness import example_job

    doc = example_job(name, "ns")
    doc["spec"].update(spec)
    return doc


async def post(cluster: Cluster, body: dict[str, Any], strict: bool = False) -> tuple[int, Any]:
    params = {"fieldValidation": "Strict"} if strict else {}
    async with cluster.request(
        "POST", FTJS, params=params, data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as resp:
        return resp.status, await resp.json()


async def test_finetunejob_unknown_fields_are_pruned_or_refused_under_strict(cluster: Cluster) -> None:
    await install_crd(cluster)
    job = ftj(bogus=1)
    job["spec"]["training"] = {"epochs": 1, "typo": True}
    code, status = await post(cluster, job, strict=True)
    assert code == 400 and status["reason"] == "BadRequest"
    assert (
        status["message"]
        == 'FineTuneJob in version "v1alpha1" cannot be handled as a FineTuneJob: strict decoding error: '
        'unknown field "spec.bogus", unknown field "spec.training.typo"'
    )
    assert cluster.objects("kubetune.io/v1alpha1", "finetunejobs") == []
    code, created = await post(cluster, job)
    assert code == 201, created
    assert "bogus" not in created["spec"] and "typo" not in created["spec"]["training"]
    # defaults apply inside what was sent (structural defaulting)
    assert created["spec"]["training"]["epochs"] == 1 and created["spec"]["training"]["stage"] == "sft"
    # a merge patch under Strict is 422 (handlers/patch.go), without Strict the field is pruned
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.request(
        "PATCH",
        f"{FTJS}/f",
        params={"fieldValidation": "Strict"},
        data=json.dumps({"spec": {"nope": 1}}),
        headers=headers,
    ) as resp:
        assert resp.status == 422 and 'unknown field "spec.nope"' in (await resp.json())["message"]
    # an apply under Strict is 400; without it the unknown field is pruned and owned by no one
    body = {**ftj(), "spec": {**created["spec"], "other": 2}}  # spec.training is immutable (a CEL transition rule)
    code, status = await apply(cluster, FTJS, {**body, "metadata": {"name": "f"}}, manager="kubectl", force=True)
    assert code == 200 and "other" not in status["spec"], status["message"]
    async with cluster.request(
        "PATCH",
        f"{FTJS}/f",
        params={"fieldManager": "kubectl", "fieldValidation": "Strict"},
        data=json.dumps({**body, "metadata": {"name": "f"}}),
        headers=APPLY,
    ) as resp:
        assert (
            resp.status == 400
            and (await resp.json())["message"]
            == 'error strict decoding YAML: strict decoding error: unknown field "spec.other"'
        )


async def test_finetunejob_values_the_schema_refuses_are_422_on_create_update_and_status(cluster: Cluster) -> None:
    await install_crd(cluster)
    code, status = await post(cluster, ftj(method="sgd"))
    assert code == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('FineTuneJob.kubetune.io "f" is invalid: spec.method')
    assert (await post(cluster, ftj()))[0] == 201
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.request(
        "PATCH", f"{FTJS}/f", data=json.dumps({"spec": {"method": "sgd"}}), headers=headers
    ) as resp:
        assert resp.status == 422
    async with cluster.request(
        "PATCH", f"{FTJS}/f/status", data=json.dumps({"status": {"phase": 7}}), headers=headers
    ) as resp:
        assert resp.status == 422 and "status.phase" in (await resp.json())["message"]
    stored = cluster.read("kubetune.io/v1alpha1", "finetunejobs", "ns", "f")
    assert stored is not None and stored["spec"]["method"] == "lora" and "status" not in stored
