"""Every example applies into any namespace, together with its prerequisites file.

examples/prerequisites/<example>.yaml (seed.yaml for examples/seed/) holds the PVCs, Secret
placeholders, Kueue queue and PriorityClass the job names; `kubectl apply -n NS -f` installs it in
one step. Checked here: nothing names a namespace, every object passes its schema (core objects:
kubernetes-validate, strict; Kueue objects: the upstream Kueue v0.19 CRD schema), and everything
the job references is in its prerequisites file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune.api import load_documents
from kt_upstream import require_upstream_crds
from renderlib import EXAMPLES, _strict, crd_schema, example_files, example_id

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
    out = {("PersistentVolumeClaim", v["claimName"]) for v in spec.get("storage", {}).values() if v and v.get("claimName")}
    if spec.get("hfTokenSecretRef"):
        out.add(("Secret", spec["hfTokenSecretRef"]["name"]))
    for env in spec.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            out.add(("Secret", ref["name"]))
    scheduling = spec.get("scheduling", {})
    if scheduling.get("queueName"):
        out.add(("LocalQueue", scheduling["queueName"]))
    if scheduling.get("priorityClassName"):
        out.add(("PriorityClass", scheduling["priorityClassName"]))
    return out


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
        if d["kind"] == "Secret":  # placeholders only: never a real credential in the repository
            assert all(v.startswith("REPLACE-WITH-") for v in d.get("stringData", {}).values()) and "data" not in d
        if d["kind"] in KUEUE_CRDS:
            require_upstream_crds()
            group_version = d["apiVersion"].split("/")[1]
            schema = _strict(crd_schema(KUEUE_CRDS[d["kind"]], group_version))
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(d)]
            assert errors == [], f"{path.name}: {d['kind']}: {errors}"
        else:
            kubernetes_validate.validate(d, version, strict=True)
    assert {d["kind"] for d in docs(path)} - CLUSTER_SCOPED - {"PersistentVolumeClaim", "Secret", "LocalQueue"} == set()
