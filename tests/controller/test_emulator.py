"""The emulated API server keeps the API server's promises the operator relies on.

If the emulator were wrong, the operator tests would prove nothing; these pin
down, over real HTTP, the behaviours kmock alone lacks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest

from tests.support.apiserver import validation
from tests.support.apiserver.emulator import Cluster, Tokens
from tests.support.apiserver.helm import HelmCluster

BASE = "/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def call(
    cluster: Cluster, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else None
    async with cluster.request(method, url, data=data, headers=headers or {"Content-Type": "application/json"}) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


def job(name: str = "j", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


@pytest.fixture(autouse=True)
def anonymous(cluster: Cluster) -> Iterator[Cluster]:
    """These tests speak raw HTTP without credentials; authentication has its own test below."""
    checker, cluster.authenticate = cluster.authenticate, None
    yield cluster
    cluster.authenticate = checker


async def test_unknown_missing_or_expired_tokens_get_401(cluster: Cluster, tmp_path: Any) -> None:
    cluster.authenticate = Tokens(static=("test-token",))
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdA=="}):
        async with cluster.request("GET", BASE, headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["reason"] == "Unauthorized"
    issued = tmp_path / "issued.jsonl"
    issued.write_text('{"token": "old", "expires": 1}\n{"token": "new", "expires": 4102444800}\n', encoding="utf-8")
    cluster.authenticate = Tokens(issued=str(issued))
    assert (await call(cluster, "GET", BASE, headers={"Authorization": "Bearer test-token"}))[0] == 401
    assert (await call(cluster, "GET", BASE, headers={"Authorization": "Bearer old"}))[0] == 401
    assert (await call(cluster, "GET", BASE, headers={"Authorization": "Bearer new"}))[0] == 200
    assert [(a.token, a.accepted) for a in cluster.auth_log][-2:] == [("old", False), ("new", True)]


async def test_create_sets_server_fields_and_duplicates_conflict(cluster: Cluster) -> None:
    code, obj = await call(cluster, "POST", BASE, job(a=1))
    assert code == 201
    meta = obj["metadata"]
    assert meta["namespace"] == "ns" and meta["uid"] and meta["generation"] == 1 and meta["creationTimestamp"]
    assert int(meta["resourceVersion"]) > 0
    code, err = await call(cluster, "POST", BASE, job(a=2))
    assert code == 409 and err["reason"] == "AlreadyExists"


async def test_status_is_a_subresource_and_generation_tracks_spec_only(cluster: Cluster) -> None:
    await call(cluster, "POST", BASE, job(a=1))
    code, obj = await call(
        cluster, "PATCH", f"{BASE}/j", {"status": {"x": 1}, "metadata": {"labels": {"l": "v"}}}, MERGE
    )
    assert code == 200 and "status" not in obj and obj["metadata"]["generation"] == 1
    code, obj = await call(cluster, "PATCH", f"{BASE}/j/status", {"status": {"x": 1}, "spec": {"a": 9}}, MERGE)
    assert obj["status"] == {"x": 1} and obj["spec"] == {"a": 1} and obj["metadata"]["generation"] == 1
    _, obj = await call(cluster, "PATCH", f"{BASE}/j", {"spec": {"a": 2}}, MERGE)
    assert obj["metadata"]["generation"] == 2


async def test_optimistic_locking_and_json_patch_test_failure(cluster: Cluster) -> None:
    _, obj = await call(cluster, "POST", BASE, job(a=1))
    stale = obj["metadata"]["resourceVersion"]
    await call(cluster, "PATCH", f"{BASE}/j", {"spec": {"a": 2}}, MERGE)
    code, err = await call(
        cluster, "PATCH", f"{BASE}/j", {"metadata": {"resourceVersion": stale}, "spec": {"a": 3}}, MERGE
    )
    assert code == 409 and err["reason"] == "Conflict"
    ops = [{"op": "test", "path": "/spec/a", "value": 1}, {"op": "replace", "path": "/spec/a", "value": 5}]
    code, err = await call(cluster, "PATCH", f"{BASE}/j", ops, {"Content-Type": "application/json-patch+json"})
    assert code == 422


async def test_server_side_apply_creates_then_merges(cluster: Cluster) -> None:
    apply = {"Content-Type": "application/apply-patch+yaml"}
    code, obj = await call(cluster, "PATCH", f"{BASE}/j?fieldManager=kubetune&force=true", job(a=1), apply)
    assert code == 201 and obj["metadata"]["managedFields"][0]["manager"] == "kubetune"
    code, obj = await call(cluster, "PATCH", f"{BASE}/j?fieldManager=kubetune&force=true", job(a=1, b=2), apply)
    assert code == 200 and obj["spec"] == {"a": 1, "b": 2}
    code, err = await call(cluster, "PATCH", f"{BASE}/j", job(), apply)
    assert code == 422 and "fieldManager: Required value" in err["message"], "apply needs a field manager"


async def test_list_filters_by_label_selector(cluster: Cluster) -> None:
    for name in ("a", "b"):
        await call(cluster, "POST", BASE, job(name))
    _, listing = await call(cluster, "GET", f"{BASE}?labelSelector=app%3Db")
    assert [o["metadata"]["name"] for o in listing["items"]] == ["b"]
    _, listing = await call(cluster, "GET", f"{BASE}?labelSelector=app%20in%20(a,b),app!%3Da")
    assert [o["metadata"]["name"] for o in listing["items"]] == ["b"]


async def _watch_after_a_list(cluster: Cluster, watch: str) -> list[tuple[str, str]]:
    """POST "old", LIST, POST "new", then ``?watch=WATCH`` from the LIST's resourceVersion (a second's
    worth): the type and object name of every event the watch sent."""
    await call(cluster, "POST", BASE, job("old"))
    _, listing = await call(cluster, "GET", BASE)
    since = listing["metadata"]["resourceVersion"]
    await call(cluster, "POST", BASE, job("new"))
    async with cluster.get(f"{BASE}?watch={watch}&resourceVersion={since}&timeoutSeconds=1") as resp:
        lines = [json.loads(line) for line in (await resp.read()).splitlines() if line]
    return [(e["type"], e["object"]["metadata"]["name"]) for e in lines]


async def test_watch_from_a_resource_version_sends_only_newer_events(cluster: Cluster) -> None:
    assert await _watch_after_a_list(cluster, "true") == [("ADDED", "new")]


async def test_boolean_query_parameters_read_as_the_api_server_reads_them(cluster: Cluster) -> None:
    """watch=True (kubernetes_asyncio's spelling) opens a watch and force=True forces an apply, as on a real
    server (apimachinery conversion.go:83-116 @ v0.36.3); watch=false and watch=0 are a LIST."""
    assert await _watch_after_a_list(cluster, "True") == [("ADDED", "new")]
    for off in ("false", "False", "0"):
        code, body = await call(cluster, "GET", f"{BASE}?watch={off}")
        assert code == 200 and body["kind"] == "PyTorchJobList", off
    apply = {"Content-Type": "application/apply-patch+yaml"}
    await call(cluster, "PATCH", f"{BASE}/j?fieldManager=other", job(a=1), apply)
    code, _ = await call(cluster, "PATCH", f"{BASE}/j?fieldManager=kubetune", job(a=2), apply)
    assert code == 409, "a conflicting apply without force"
    code, obj = await call(cluster, "PATCH", f"{BASE}/j?fieldManager=kubetune&force=True", job(a=2), apply)
    assert code == 200 and obj["spec"] == {"a": 2}


async def test_dropped_watch_ends_the_stream_and_expired_version_gets_410(cluster: Cluster) -> None:
    async def watch(url: str) -> list[dict[str, Any]]:
        async with cluster.get(url) as resp:
            return [json.loads(line) for line in (await resp.read()).splitlines() if line]

    task = asyncio.create_task(watch(f"{BASE}?watch=true&resourceVersion=1"))
    await asyncio.sleep(0.2)
    await cluster.drop_watches(compact=True)
    assert await asyncio.wait_for(task, 5) == []
    events = await watch(f"{BASE}?watch=true&resourceVersion=1")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_pod_log_tail(cluster: Cluster) -> None:
    await cluster.put_object("v1", "pods", {"metadata": {"name": "p", "namespace": "ns"}})
    cluster.append_log("ns", "p", "one", "two", "three")
    code, text = await call(cluster, "GET", "/api/v1/namespaces/ns/pods/p/log?tailLines=2")
    assert code == 200 and text == "two\nthree\n"
    code, _ = await call(cluster, "GET", "/api/v1/namespaces/ns/pods/missing/log")
    assert code == 404


async def test_injected_fault_answers_instead_of_serving(cluster: Cluster) -> None:
    cluster.inject("create", "pytorchjobs", 500, times=1)
    code, _ = await call(cluster, "POST", BASE, job())
    assert code == 500 and cluster.read("kubeflow.org/v1", "pytorchjobs", "ns", "j") is None
    code, _ = await call(cluster, "POST", BASE, job())
    assert code == 201


async def test_garbage_collection_deletes_dependents_whose_owners_are_all_gone(cluster: Cluster) -> None:
    """kube-controller-manager's background cascading deletion (opt-in: ``garbage_collect``)."""
    cluster.garbage_collect = True
    owner = (await call(cluster, "POST", BASE, job("owner")))[1]
    other = (await call(cluster, "POST", BASE, job("other")))[1]

    def ref(o: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "name": o["metadata"]["name"],
            "uid": o["metadata"]["uid"],
            "controller": False,
        }

    def owned(name: str, *owners: dict[str, Any], finalizers: list[str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "ownerReferences": [ref(o) for o in owners]}
        if finalizers:
            meta["finalizers"] = finalizers
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}

    cms = "/api/v1/namespaces/ns/configmaps"
    child = (await call(cluster, "POST", cms, owned("child", owner)))[1]
    await call(cluster, "POST", cms, owned("grandchild", child))
    await call(cluster, "POST", cms, owned("shared", owner, other))
    await call(cluster, "POST", cms, owned("held", owner, finalizers=["example.com/hold"]))
    assert (await call(cluster, "DELETE", f"{BASE}/owner"))[0] == 200
    assert (await call(cluster, "GET", f"{cms}/child"))[0] == 404
    assert (await call(cluster, "GET", f"{cms}/grandchild"))[0] == 404, "dependents of dependents go too"
    assert (await call(cluster, "GET", f"{cms}/shared"))[0] == 200, "a dependent with a live owner left is kept"
    held = (await call(cluster, "GET", f"{cms}/held"))[1]
    assert held["metadata"]["deletionTimestamp"], "a finalizer holds the dependent in deletion"


async def test_force_on_a_non_apply_patch_is_invalid_whatever_its_value(cluster: Cluster) -> None:
    """force is a *bool in PatchOptions: present on a merge, strategic or JSON patch, even as force=false,
    the server answers 422 (apimachinery pkg/apis/meta/v1/validation/validation.go:198-201 @ v0.36.3)."""
    await call(cluster, "POST", BASE, job(a=1))
    json_patch = [{"op": "replace", "path": "/spec/a", "value": 2}]
    for ctype, body in (
        ("application/merge-patch+json", {"spec": {"a": 2}}),
        ("application/strategic-merge-patch+json", {"spec": {"a": 2}}),
        ("application/json-patch+json", json_patch),
    ):
        for force in ("true", "false"):
            code, err = await call(cluster, "PATCH", f"{BASE}/j?force={force}", body, {"Content-Type": ctype})
            assert code == 422, (ctype, force)
            assert "force: Forbidden: may not be specified for non-apply patch" in err["message"]
    _, obj = await call(cluster, "GET", f"{BASE}/j")
    assert obj["spec"] == {"a": 1}, "a refused patch changed nothing"


async def test_send_initial_events_is_refused_on_a_list_and_on_a_watch_without_not_older_than(
    cluster: Cluster,
) -> None:
    """apimachinery pkg/apis/meta/internalversion/validation/validation.go:47-49 and 56-59 @ v0.36.3."""
    await call(cluster, "POST", BASE, job("a"))
    for value in ("true", "false"):
        code, err = await call(cluster, "GET", f"{BASE}?sendInitialEvents={value}")
        assert code == 422 and "sendInitialEvents is forbidden for list" in err["message"], value
        code, err = await call(cluster, "GET", f"{BASE}?watch=1&sendInitialEvents={value}&timeoutSeconds=1")
        assert code == 422 and "requires setting resourceVersionMatch to NotOlderThan" in err["message"], value
    code, err = await call(cluster, "GET", f"{BASE}?watch=1&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    assert code == 422 and "unless sendInitialEvents is provided" in err["message"]


async def test_send_initial_events_false_sends_no_initial_state_and_true_ends_it_with_a_bookmark(
    cluster: Cluster,
) -> None:
    """false: only changes from now; true: the state as ADDED events, ended by the initial-events-end
    bookmark only where bookmarks are allowed (apiserver pkg/storage/cacher/cacher.go:1280-1282 @ v0.36.3)."""
    await call(cluster, "POST", BASE, job("old"))
    stream = f"{BASE}?watch=1&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"

    async def events(query: str) -> list[tuple[str, str | None]]:
        async with cluster.get(f"{stream}&{query}") as resp:
            assert resp.status == 200
            lines = [json.loads(line) for line in (await resp.read()).splitlines() if line]
        return [(e["type"], e["object"]["metadata"].get("name")) for e in lines]

    watching = asyncio.ensure_future(events("sendInitialEvents=false"))
    while not cluster.watching.get("pytorchjobs"):
        await asyncio.sleep(0.01)
    await call(cluster, "POST", BASE, job("new"))
    assert await watching == [("ADDED", "new")]
    names = [("ADDED", "new"), ("ADDED", "old")]
    assert await events("sendInitialEvents=true") == names
    assert await events("sendInitialEvents=true&allowWatchBookmarks=true") == [*names, ("BOOKMARK", None)]


async def test_a_watch_parameter_is_false_as_go_folds_it(cluster: Cluster) -> None:
    """strings.EqualFold folds U+017F to "s": watch=falſe is false, a LIST (conversion.go:89 @ v0.36.3)."""
    code, body = await call(cluster, "GET", f"{BASE}?watch=fal%C5%BFe")
    assert code == 200 and body["kind"] == "PyTorchJobList"


async def test_a_named_get_with_watch_true_is_a_get(cluster: Cluster) -> None:
    """Only a GET without a name turns into a watch (requestinfo.go:223-245 @ v0.36.3): with a name, the object."""
    await call(cluster, "POST", BASE, job("a"))
    code, body = await call(cluster, "GET", f"{BASE}/a?watch=true")
    assert code == 200 and body["metadata"]["name"] == "a"
    assert cluster.calls[-1].verb == "get"


async def test_a_watch_sends_only_what_its_field_selector_selects(cluster: Cluster) -> None:
    await call(cluster, "POST", BASE, job("a"))
    await call(cluster, "POST", BASE, job("b"))
    url = f"{BASE}?watch=true&fieldSelector=metadata.name%3Db&timeoutSeconds=1"
    async with cluster.request("GET", url) as resp:
        events = [json.loads(line) async for line in resp.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


async def replay(cluster: Cluster, url: str, since: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every event a watch from ``since`` sends for the changes already made: (type, resourceVersion, object)."""
    async with cluster.get(f"{url}&watch=true&resourceVersion={since}&timeoutSeconds=1") as resp:
        lines = [json.loads(line) for line in (await resp.read()).splitlines() if line]
    return [(e["type"], e["object"]["metadata"]["resourceVersion"], e["object"]) for e in lines]


async def test_a_label_change_moves_an_object_into_and_out_of_a_label_selector_watch(cluster: Cluster) -> None:
    """An object that starts matching a watch's selector is ADDED, one that stops is DELETED with its previous
    state at the change's resourceVersion, as the watch cache sends them (k8s.io/apiserver
    pkg/storage/cacher/cache_watcher.go:374-398 @ v0.36.3): an informer on the selector drops it then."""
    _, listing = await call(cluster, "GET", BASE)
    since = listing["metadata"]["resourceVersion"]

    async def labels(tier: str | None) -> str:
        _, obj = await call(cluster, "PATCH", f"{BASE}/j", {"metadata": {"labels": {"tier": tier}}}, MERGE)
        return str(obj["metadata"]["resourceVersion"])

    async def spec(a: int) -> str:
        _, obj = await call(cluster, "PATCH", f"{BASE}/j", {"spec": {"a": a}}, MERGE)
        return str(obj["metadata"]["resourceVersion"])

    await call(cluster, "POST", BASE, job(a=1))  # no tier: not selected
    joined = await labels("gpu")
    changed = await spec(2)
    left = await labels("cpu")
    await spec(3)  # changes while not selected are not sent
    back = await labels("gpu")
    code, gone = await call(cluster, "DELETE", f"{BASE}/j")
    assert code == 200
    events = await replay(cluster, f"{BASE}?labelSelector=tier%3Dgpu", since)
    assert [(kind, rv) for kind, rv, _ in events] == [
        ("ADDED", joined),
        ("MODIFIED", changed),
        ("DELETED", left),
        ("ADDED", back),
        ("DELETED", gone["metadata"]["resourceVersion"]),
    ]
    assert events[2][2]["metadata"]["labels"]["tier"] == "gpu", "DELETED carries the object as it was selected"
    assert events[2][2]["spec"] == {"a": 2}
    assert events[3][2]["spec"] == {"a": 3}, "ADDED carries the object as it is now"
    everything = await replay(cluster, BASE + "?", since)
    assert [kind for kind, _, _ in everything] == ["ADDED", *["MODIFIED"] * 5, "DELETED"], "no selector: as stored"


async def test_a_status_change_moves_a_pod_into_and_out_of_a_field_selector_watch(cluster: Cluster) -> None:
    """A pod's status.phase is one of its selectable fields (kubernetes pkg/registry/core/pod/strategy.go
    ToSelectableFields): a watch on status.phase=Running gets the pod ADDED when it starts running and
    DELETED, as it was while running, when it succeeds (cache_watcher.go:374-398 @ v0.36.3)."""
    pods = "/api/v1/namespaces/ns/pods"
    _, listing = await call(cluster, "GET", pods)
    since = listing["metadata"]["resourceVersion"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "status": {}}
    await cluster.put_object("v1", "pods", {**pod, "status": {"phase": "Pending"}})

    def phase(value: str) -> Callable[[dict[str, Any]], None]:
        return lambda obj: obj["status"].update(phase=value)

    running = await cluster.mutate("v1", "pods", "ns", "p", phase("Running"))
    done = await cluster.mutate("v1", "pods", "ns", "p", phase("Succeeded"))
    await cluster.remove("v1", "pods", "ns", "p")
    events = await replay(cluster, f"{pods}?fieldSelector=status.phase%3DRunning", since)
    assert [(kind, rv, obj["status"]["phase"]) for kind, rv, obj in events] == [
        ("ADDED", running["metadata"]["resourceVersion"], "Running"),
        ("DELETED", done["metadata"]["resourceVersion"], "Running"),
    ]
    not_running = await replay(cluster, f"{pods}?fieldSelector=status.phase%21%3DRunning", since)
    assert [(kind, obj["status"]["phase"]) for kind, _, obj in not_running] == [
        ("ADDED", "Pending"),
        ("DELETED", "Pending"),
        ("ADDED", "Succeeded"),
        ("DELETED", "Succeeded"),
    ]


async def test_the_helm_emulators_namespace_watch_follows_its_label_selector() -> None:
    """HelmCluster serves /api/v1/namespaces itself (kmock cannot parse it): a POST creates (kubectl create
    namespace), and its watch sends a namespace that gains the selected label as ADDED and one that loses it as
    DELETED, as any other watch."""
    helm = HelmCluster()
    async with helm, kmock.Server(helm):
        url = "/api/v1/namespaces"
        _, listing = await call(helm, "GET", url)
        code, created = await call(
            helm, "POST", url, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
        )
        assert code == 201 and created["status"] == {"phase": "Active"}, "a POSTed namespace is created"
        for value in ("a", None):
            await helm.mutate(
                "v1", "namespaces", None, "team", lambda o, v=value: o["metadata"].update(labels={"t": v})
            )
        events = await replay(helm, f"{url}?labelSelector=t%3Da", listing["metadata"]["resourceVersion"])
    assert [(kind, obj["metadata"]["name"], obj["metadata"]["labels"]) for kind, _, obj in events] == [
        ("ADDED", "team", {"t": "a"}),
        ("DELETED", "team", {"t": "a"}),
    ]


async def test_the_delete_that_empties_the_finalizers_is_sent_with_the_stored_object(cluster: Cluster) -> None:
    """The write that removes the last finalizer of an object being deleted is not stored: the stored object is
    deleted (apiserver pkg/registry/generic/registry/store.go:780-784, 598-619 @ v0.36.3), and the watch's DELETED
    carries it as it was stored (etcd3/watcher.go:595-602, 722-733), finalizer included."""
    obj = job(a=1)
    obj["metadata"]["finalizers"] = ["example.com/keep"]
    _, created = await call(cluster, "POST", BASE, obj)
    since = created["metadata"]["resourceVersion"]
    await call(cluster, "DELETE", f"{BASE}/j")
    code, answer = await call(cluster, "PATCH", f"{BASE}/j", {"metadata": {"finalizers": None}}, MERGE)
    assert code == 200 and not answer["metadata"].get("finalizers")
    assert (await call(cluster, "GET", f"{BASE}/j"))[0] == 404
    events = await replay(cluster, BASE + "?", since)
    assert [kind for kind, _, _ in events] == ["MODIFIED", "DELETED"]
    assert events[1][2]["metadata"]["finalizers"] == ["example.com/keep"]
    assert events[1][2]["metadata"]["deletionTimestamp"]


def test_ratcheting_correlates_map_keys_that_hold_dots() -> None:
    """An unchanged invalid value under a map key such as "example.com/x" is ratcheted like any other."""
    rule = {"rule": "self.size() < 3", "message": "too long"}
    entry = {"type": "string", "x-kubernetes-validations": [rule]}
    spec = {"m": {"type": "object", "additionalProperties": entry}, "other": {"type": "string"}}
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": spec}}}
    for key in ("ab", "example.com/x"):
        old = {"spec": {"m": {key: "long"}, "other": "x"}}
        assert validation.cel_errors({"spec": {"m": {key: "long"}, "other": "y"}}, schema, old=old) == [], key
        assert validation.cel_errors({"spec": {"m": {key: "longer"}}}, schema, old=old) == [f".spec.m.{key}: too long"]


def test_admitted_stores_the_object_pruned_and_reports_unknown_fields() -> None:
    string = {"type": "string"}
    spec = {"type": "object", "properties": {"a": string}}
    schema = {"type": "object", "properties": {"apiVersion": string, "kind": string, "metadata": {"type": "object"}}}
    schema["properties"]["spec"] = spec
    obj = {"apiVersion": "v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"a": "x", "typo": 1}}
    stored, errors = validation.admitted(obj, schema)
    assert stored == {"apiVersion": "v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"a": "x"}}
    assert errors == [".spec.typo: unknown field"]
