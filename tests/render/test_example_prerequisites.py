"""Every example applies into any namespace, together with its prerequisites file.

examples/prerequisites/<example>.yaml (seed.yaml for examples/seed/) holds the PVCs, Secret
placeholders, Kueue queue and PriorityClass the job names; `kubectl apply -n NS -f` installs it in
one step. Checked here: nothing names a namespace, every object passes its schema (core objects:
kubernetes-validate, strict; Kueue objects: the upstream Kueue v0.19 CRD schema), and everything
the job references is in its prerequisites file.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import load_documents
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import EXAMPLES, _strict, crd_schema, example_files, example_id

PREREQS = EXAMPLES / "prerequisites"
KUEUE_CRDS = {
    "LocalQueue": "kueue/kueue.x-k8s.io_localqueues.yaml",
    "ClusterQueue": "kueue/kueue.x-k8s.io_clusterqueues.yaml",
    "ResourceFlavor": "kueue/kueue.x-k8s.io_resourceflavors.yaml",
}
CLUSTER_SCOPED = {"ClusterQueue", "ResourceFlavor", "PriorityClass"}


def prerequisites_of(example: Path) -> Path:
    rel = example.relative_to(EXAMPLES)
    return PREREQS / ("seed.yaml" if rel.parts[0] == "seed" else rel.name)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in load_documents(path.read_text(encoding="utf-8")) if d]


def needs(job: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every object the job references by name."""
    spec = job["spec"]
    out = {
        ("PersistentVolumeClaim", v["claimName"]) for v in spec.get("storage", {}).values() if v and v.get("claimName")
    }
    out |= {("Secret", name) for name in required_secrets(job)}
    scheduling = spec.get("scheduling", {})
    if scheduling.get("queueName"):
        out.add(("LocalQueue", scheduling["queueName"]))
    if scheduling.get("priorityClassName"):
        out.add(("PriorityClass", scheduling["priorityClassName"]))
    return out


def secret_refs(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Secret key reference of the job: Hub token, env, tracking keys."""
    spec = job["spec"]
    refs = [spec["hfTokenSecretRef"]] if spec.get("hfTokenSecretRef") else []
    refs += [e["valueFrom"]["secretKeyRef"] for e in spec.get("env", []) if e.get("valueFrom", {}).get("secretKeyRef")]
    tracking = spec.get("tracking") or {}
    refs += [t[k] for t in tracking.values() if isinstance(t, dict) for k in t if k.endswith("SecretRef")]
    creds = (spec.get("storage", {}).get("objectStore") or {}).get("credentialsSecretRef")
    if creds:
        refs.append(creds)
    return refs


def required_secrets(job: dict[str, Any]) -> set[str]:
    """Secrets without which the pods do not start (not ``optional: true``)."""
    return {ref["name"] for ref in secret_refs(job) if not ref.get("optional")}


EXAMPLE_FILES = example_files()


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=example_id)
def test_example_names_no_namespace(example: Path) -> None:
    [job] = docs(example)
    assert "namespace" not in job["metadata"], "`kubectl apply -n NS -f` would fail: drop metadata.namespace"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=example_id)
def test_prerequisites_provide_everything_the_example_names(example: Path) -> None:
    prereqs = prerequisites_of(example)
    assert prereqs.is_file(), f"{example_id(example)} has no {prereqs.relative_to(EXAMPLES.parent)}"
    [job] = docs(example)
    provided = {(d["kind"], d["metadata"]["name"]) for d in docs(prereqs)}
    # Secrets are never in the file (a placeholder would be used as a real credential): a required
    # one is named by the command that creates it, in the file's comments.
    text = prereqs.read_text(encoding="utf-8")
    provided |= {("Secret", name) for name in required_secrets(job) if f"kubectl create secret generic {name} " in text}
    assert needs(job) <= provided, f"missing from {prereqs.name}: {needs(job) - provided}"
    # a LocalQueue is useless without its ClusterQueue and flavor
    for d in docs(prereqs):
        if d["kind"] == "LocalQueue":
            assert ("ClusterQueue", d["spec"]["clusterQueue"]) in provided
        if d["kind"] == "ClusterQueue":
            flavors = {f["name"] for g in d["spec"]["resourceGroups"] for f in g["flavors"]}
            assert {("ResourceFlavor", f) for f in flavors} <= provided


@pytest.mark.parametrize("path", sorted(PREREQS.glob("*.yaml")), ids=lambda p: p.name)
def test_prerequisites_are_valid_and_namespace_free(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import jsonschema

    version = kubernetes_validate.latest_version()
    for d in docs(path):
        assert "namespace" not in d["metadata"], f"{path.name}: {d['kind']} {d['metadata']['name']} names a namespace"
        # `kubectl apply -f` of a placeholder Secret makes it a credential: the Hub answers an
        # invalid token with 401 even for public models, W&B's login fails. Secrets are created by
        # the user (the file's comments give the command), never applied from here.
        assert d["kind"] != "Secret", (
            f"{path.name}: Secret {d['metadata']['name']}: no placeholder Secrets in files kubectl applies"
        )
        if d["kind"] in KUEUE_CRDS:
            require_upstream_crds()
            group_version = d["apiVersion"].split("/")[1]
            schema = _strict(crd_schema(KUEUE_CRDS[d["kind"]], group_version))
            errors = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(d)
            ]
            assert errors == [], f"{path.name}: {d['kind']}: {errors}"
        else:
            kubernetes_validate.validate(d, version, strict=True)
    assert {d["kind"] for d in docs(path)} - CLUSTER_SCOPED - {"PersistentVolumeClaim", "Secret", "LocalQueue"} == set()


def test_docs_secret_notes_match_the_examples() -> None:
    """docs/examples.md's "Secret `X` (gated models only)": the job starts without X (optional:
    true) and no prerequisites file creates it; a Secret named without that note is required, and
    its prerequisites file gives the command that creates it."""
    table = (EXAMPLES.parent / "docs" / "examples.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w./-]+\.yaml)` \| ([^|]*) \|", table, re.M)}
    checked = 0
    for example in EXAMPLE_FILES:
        rel = example.relative_to(EXAMPLES).as_posix()
        if rel not in rows:
            continue
        [job] = docs(example)
        for name, note in re.findall(r"Secret `([\w-]+)`( \(gated models only\))?", rows[rel]):
            checked += 1
            refs = [r for r in secret_refs(job) if r["name"] == name]
            assert refs, f"docs/examples.md names Secret {name} for {rel}, which does not reference it"
            if note:
                assert all(r.get("optional") is True for r in refs), (
                    f"{rel}: Secret {name} is 'gated models only' but the pods wait for it"
                )
            else:
                assert name in required_secrets(job)
                assert f"kubectl create secret generic {name} " in prerequisites_of(example).read_text(encoding="utf-8")
    assert checked >= 3


# Kubernetes' PVC update validation: ValidatePersistentVolumeClaimUpdate in
# pkg/apis/core/validation/validation.go:2532-2611 (read in the vendored copy of
# openshift/microshift deps/github.com/openshift/kubernetes @ 8e16b12, Kubernetes 1.36): the spec
# is immutable ("spec is immutable after creation except resources.requests and
# volumeAttributesClassName for bound claims"); the storage request may change only once the
# claim is Bound, and never shrink. A freshly applied example claim is Pending (not yet bound,
# e.g. WaitForFirstConsumer), so a second apply must carry the same spec.
def pvc_update_errors(old: dict[str, Any], new: dict[str, Any], *, bound: bool = False) -> list[str]:
    errors = []
    old_spec, new_spec = dict(old["spec"]), dict(new["spec"])
    if bound:
        old_spec["resources"] = new_spec.get("resources")
        old_size, new_size = (parse_quantity(d["spec"]["resources"]["requests"]["storage"]) for d in (old, new))
        if new_size < old_size:
            errors.append("spec.resources.requests.storage: Forbidden: field can not be less than previous value")
    if old_spec != new_spec:
        errors.append(
            "spec: Forbidden: spec is immutable after creation except resources.requests and "
            "volumeAttributesClassName for bound claims"
        )
    return errors


def parse_quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(value[:-2]) * units[value[-2:]] if value[-2:] in units else float(value)


def apply_all(order: tuple[Path, ...]) -> list[str]:
    """`kubectl apply -n NS -f` of each file in ``order`` into one namespace: the refusals."""
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    refused = []
    for path in order:
        for d in docs(path):
            key = (d["kind"], d["metadata"]["name"])
            if key in stored and d["kind"] == "PersistentVolumeClaim":
                refused += [f"{path.name}: PVC {key[1]}: {e}" for e in pvc_update_errors(stored[key], d)]
                continue
            stored[key] = d
    return refused


def test_the_strict_pvc_check_refuses_what_the_api_server_refuses() -> None:
    pvc = {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "200Gi"}}}}
    rwx = {"spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "500Gi"}}}}
    grown = {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "300Gi"}}}}
    assert pvc_update_errors(pvc, pvc) == []
    assert pvc_update_errors(pvc, rwx) and pvc_update_errors(pvc, rwx, bound=True)
    assert pvc_update_errors(pvc, grown) and pvc_update_errors(pvc, grown, bound=True) == []
    assert pvc_update_errors(grown, pvc, bound=True)


def test_every_prerequisites_file_applies_in_any_order_into_one_namespace() -> None:
    files = tuple(sorted(PREREQS.glob("*.yaml")))
    assert len(files) >= 5
    # A claim is refused only against the one stored first (apply_all keeps the first definition), so
    # every ordered pair covers every order of all the files (8 files: 56 pairs instead of 40,320 orders).
    for order in itertools.permutations(files, 2):
        assert apply_all(order) == [], f"applying {[p.name for p in order]} into one namespace"
    assert apply_all(files) == [] and apply_all(files[::-1]) == []


def test_docs_say_that_examples_sharing_a_readwriteonce_claim_run_one_node_at_a_time() -> None:
    """A ReadWriteOnce claim attaches to one node (Kubernetes' access modes): two examples that share
    it, running at once on different nodes, leave the second one's pods in ContainerCreating
    (Multi-Attach error). A user who runs several examples in one namespace must read it."""
    users: dict[str, set[str]] = {}
    for example in example_files():
        for job in docs(example):
            if job.get("kind") != "FineTuneJob":
                continue
            for kind, name in needs(job):
                if kind == "PersistentVolumeClaim":
                    users.setdefault(name, set()).add(example.name)
    modes = {
        d["metadata"]["name"]: d["spec"]["accessModes"]
        for p in PREREQS.glob("*.yaml")
        for d in docs(p)
        if d["kind"] == "PersistentVolumeClaim"
    }
    shared_rwo = sorted(n for n, who in users.items() if len(who) > 1 and modes.get(n) == ["ReadWriteOnce"])
    assert shared_rwo, "no ReadWriteOnce claim is shared any more: drop this test"
    text = " ".join((EXAMPLES.parent / "docs" / "examples.md").read_text(encoding="utf-8").split())
    assert "Multi-Attach" in text and "one node at a time" in text, (
        "docs/examples.md does not say what sharing a ReadWriteOnce claim means"
    )
    for name in shared_rwo:
        assert f"`{name}`" in text, f"docs/examples.md does not name the shared ReadWriteOnce claim {name}"
