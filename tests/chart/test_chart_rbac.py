"""The chart grants exactly the API calls the operator makes: no more, no less.

tests/controller/expected_api_calls.json is the record of every call the operator makes in
its integration tests (group, version, resource, verb, namespaced, subresource). A verb the
operator needs but the chart does not grant fails here instead of as a 403 in a cluster; a verb
the chart grants but the operator never uses fails here as excess privilege.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import pytest

from tests.support.chartlib import NAMESPACE, ROOT, ci_objects, default_objects, find, needs_helm, template  # noqa: F401 (fixtures)

pytestmark = needs_helm

EXPECTED = ROOT / "tests" / "controller" / "expected_api_calls.json"
WATCHED = ["ml-team-a", "ml-team-b"]  # ci/namespaced-values.yaml
Grant = tuple[str, str, str]  # apiGroup, resource[/subresource], verb

# Resources that exist outside namespaces. Anything else the operator touches is namespaced and
# must be granted per namespace in namespaced mode.
CLUSTER_SCOPED = {
    ("", "namespaces"),
    ("", "nodes"),
    ("authentication.k8s.io", "tokenreviews"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "storageclasses"),
    ("kueue.x-k8s.io", "clusterqueues"),
    ("kueue.x-k8s.io", "resourceflavors"),
    ("trainer.kubeflow.org", "clustertrainingruntimes"),
}
READ = {"get", "list", "watch"}

# kopf peering (the operator runs with peering "kubetune"; the controller's integration tests run
# standalone, so expected_api_calls.json may not record these). From kopf 1.45.2's source:
# the peering watcher lists then watches the peering resource, and keepalive/clean PATCH the
# peering object's status on the main resource (the CRD has no status subresource).
# The operator also GETs the peering object: at start (does it exist?) and from its workers, to
# pause together with kopf.
PEERING_CLUSTER: set[Grant] = {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")}
PEERING_NAMESPACED: set[Grant] = {("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}


def expected_calls() -> list[dict[str, Any]]:
    if not EXPECTED.is_file():
        pytest.skip(f"{EXPECTED.relative_to(ROOT)} is not recorded yet (written by the operator's integration tests)")
    calls = json.loads(EXPECTED.read_text(encoding="utf-8"))
    assert isinstance(calls, list) and calls, "expected_api_calls.json must be a non-empty list"
    return calls


# Objects the operator patches but never creates: the chart creates the peering objects. (FineTuneJobs
# are created by server-side apply: a FineTuneSweep's trials.)
PATCHED_NOT_CREATED = {("kopf.dev", "clusterkopfpeerings"), ("kopf.dev", "kopfpeerings")}


def _workloads() -> set[tuple[str, str]]:
    from kubetune.cluster.backends import BACKENDS

    return {(b.api_version.split("/")[0], b.plural) for b in BACKENDS.values()}


WORKLOADS = _workloads()


def admission_only_grants() -> set[Grant]:
    """Permissions checked by admission, not by an API call the operator makes.

    A child whose ownerReference sets blockOwnerDeletion=true may only be written by someone who
    can `update` the owner's `finalizers` subresource when the OwnerReferencesPermissionEnforcement
    admission plugin is on (OpenShift enables it). The renderer's real output decides.
    """
    from kubetune.api import load_documents
    from kubetune.render import render, validate_object

    doc = next(load_documents((ROOT / "examples" / "argocd" / "jobs" / "lora-qwen.yaml").read_text(encoding="utf-8")))
    doc["metadata"]["uid"] = "0f6a1c2e-0000-4000-8000-000000000000"
    job, problems = validate_object(doc)
    assert job is not None and not problems, problems
    refs = [r for o in render(job).objects for r in o["metadata"].get("ownerReferences", [])]
    if any(r.get("blockOwnerDeletion") for r in refs):
        return {("kubetune.io", "finetunejobs/finalizers", "update")}
    return set()


def needed(calls: list[dict[str, Any]]) -> tuple[set[Grant], set[Grant]]:
    """(grants on namespaced resources, grants on cluster-scoped resources)."""
    namespaced: set[Grant] = set()
    cluster: set[Grant] = set()
    for c in calls:
        resource = c["resource"] + (f"/{c['subresource']}" if c.get("subresource") else "")
        grants = {(c["group"], resource, c["verb"])}
        # The operator writes its children (ConfigMap, PyTorchJob/MPIJob) with server-side apply,
        # an HTTP PATCH that the API server authorizes as `create` when the object does not exist
        # yet (kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply); the
        # emulator records it as `patch` only.
        if c["verb"] == "patch" and not c.get("subresource") and (c["group"], c["resource"]) not in PATCHED_NOT_CREATED:
            grants.add((c["group"], resource, "create"))
        # The operator's one delete (a queued child past its retry bound, decide.py) is the same code
        # path for every backend; the recording plays it on a PyTorchJob, so each workload kind needs it.
        if c["verb"] == "delete" and (c["group"], c["resource"]) in WORKLOADS:
            grants |= {(group, plural, "delete") for group, plural in WORKLOADS}
        (cluster if (c["group"], c["resource"]) in CLUSTER_SCOPED else namespaced).update(grants)
    return namespaced | admission_only_grants(), cluster


def expand(rules: list[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule, rule
        # resourceNames narrows a rule to named objects (the operator GETs only kubetune's runtime);
        # only get is meaningful with it (list/watch/create ignore names).
        assert "resourceNames" not in rule or set(rule["verbs"]) == {"get"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def bound_roles(objects: list[dict[str, Any]], sa: str) -> dict[str | None, set[Grant]]:
    """Grants of the operator's ServiceAccount, keyed by namespace (None: cluster-wide)."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in {"ClusterRole", "Role"}
    }
    grants: dict[str | None, set[Grant]] = defaultdict(set)
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        ns = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, (
            f"{binding['kind']} {binding['metadata']['name']} points at a missing {ref['kind']} {ref['name']}"
        )
        grants[ns] |= expand(role["rules"])
    return grants


def describe(grants: set[Grant]) -> str:
    return ", ".join(f"{v} {g or 'core'}/{r}" for g, r, v in sorted(grants))


def test_cluster_wide_mode_grants_exactly_what_the_operator_uses(default_objects: list[dict[str, Any]]) -> None:
    namespaced, cluster = needed(expected_calls())
    grants = bound_roles(default_objects, "kt-kubetune")
    assert set(grants) == {None}, "cluster-wide mode binds one ClusterRole and no Roles"
    want = namespaced - PEERING_NAMESPACED | cluster | PEERING_CLUSTER
    assert not want - grants[None], f"the operator needs, the chart does not grant: {describe(want - grants[None])}"
    assert not grants[None] - want, f"the chart grants, the operator never uses: {describe(grants[None] - want)}"


def test_namespaced_mode_grants_exactly_what_the_operator_uses_in_each_namespace(
    ci_objects: list[dict[str, Any]],
) -> None:
    namespaced, cluster = needed(expected_calls())
    # namespaced mode peers through a KopfPeering per namespace, never the ClusterKopfPeering
    namespaced = namespaced | PEERING_NAMESPACED
    cluster = cluster - PEERING_CLUSTER
    grants = bound_roles(ci_objects, "kt-kubetune")
    assert set(grants) == set(WATCHED) | ({None} if cluster else set())
    for ns in WATCHED:
        assert not namespaced - grants[ns], f"{ns}: missing {describe(namespaced - grants[ns])}"
        assert not grants[ns] - namespaced, f"{ns}: excess {describe(grants[ns] - namespaced)}"
    # Nothing namespaced is granted cluster-wide in namespaced mode.
    assert grants.get(None, set()) == cluster


@pytest.mark.parametrize("fixture", ["default_objects", "ci_objects"])
def test_no_wildcards_no_escalation_no_cluster_wide_secret_read(fixture: str, request: pytest.FixtureRequest) -> None:
    objects = request.getfixturevalue(fixture)
    roles = find(objects, "ClusterRole") + find(objects, "Role")
    assert roles
    for role in roles:
        for g, r, v in expand(role["rules"]):
            assert "*" not in (g, r, v), f"{role['kind']} {role['metadata']['name']} uses a wildcard"
            assert v not in {"escalate", "bind", "impersonate"}, f"{role['kind']} grants {v}"
            assert not (g == "" and r == "secrets" and role["kind"] == "ClusterRole" and v in READ), (
                f"ClusterRole {role['metadata']['name']} can read every Secret in the cluster"
            )
            assert not (g == "" and r == "pods" and v in {"create", "update", "patch"}), (
                "the operator never writes pods directly: the Kubeflow operators do"
            )


def test_rbac_can_be_left_to_the_platform_team() -> None:
    objects = template("--set", "rbac.create=false")
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {o["kind"] for o in objects}


def test_without_the_push_transport_there_is_no_tokenreviews_grant(default_objects: list[dict[str, Any]]) -> None:
    """progress.push=false: the operator makes no TokenReview, so the chart grants none."""
    review = ("authentication.k8s.io", "tokenreviews", "create")
    assert review in bound_roles(default_objects, "kt-kubetune")[None]
    for extra in ([], ["--values", str(ROOT / "charts" / "kubetune" / "ci" / "namespaced-values.yaml")]):
        objects = template("--set", "progress.push=false", *extra)
        grants = set().union(*bound_roles(objects, "kt-kubetune").values())
        assert review not in grants


def install_doc_rows() -> list[tuple[set[str], set[str]]]:
    """docs/install.md "What the operator may do": (the backticked resources, the verbs) of each row."""
    text = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    table = text.split("### What the operator may do", 1)[1].split("\n\n", 3)
    rows = [line for part in table for line in part.splitlines() if line.startswith("| `")]
    out = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out.append(({r for r in re.findall(r"`([a-z/]+)`", cells[0])}, {v.strip() for v in cells[1].split(",")}))
    return out


def test_the_install_page_names_every_grant(default_objects: list[dict[str, Any]]) -> None:
    """A cluster admin reviews the operator's rights on docs/install.md: each grant must be there, with its reason."""
    rows = install_doc_rows()
    grants = bound_roles(default_objects, "kt-kubetune")[None]
    missing = {(g, r, v) for g, r, v in grants if not any(r in names and v in verbs for names, verbs in rows)}
    assert not missing, f"docs/install.md does not name: {describe(missing)}"
