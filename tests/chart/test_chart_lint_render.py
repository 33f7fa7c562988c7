"""`helm lint` and `helm template` with the real helm; every core object passes the Kubernetes schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from kubetune.api import load_documents

from tests.support.chartlib import CHART, CI_VALUES, NAMESPACE, ci_objects, default_objects, needs_helm, run_helm  # noqa: F401 (fixtures)

pytestmark = needs_helm

K8S_VERSION = kubernetes_validate.latest_version()
# Prometheus Operator's ServiceMonitor is itself a CRD type: kubernetes-validate has no schema for it.
# kopf's peering objects are custom resources too (their CRDs are in the chart's crds/ folder).
NOT_CORE = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}


@pytest.mark.parametrize("values", [None, CI_VALUES], ids=["default", "namespaced-metrics"])
def test_helm_lint_strict(values: Any) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def _validate_all(objects: list[dict[str, Any]]) -> list[str]:
    checked = []
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in NOT_CORE:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the failure message
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} is not a valid {key}: {exc.message} at {list(exc.path)}"
            )
        checked.append(obj["kind"])
    return checked


def test_default_objects_pass_kubernetes_schema(default_objects: list[dict[str, Any]]) -> None:
    kinds = _validate_all(default_objects)
    assert sorted(set(kinds)) == sorted(
        {
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "Pod",  # the helm test hook
        }
    )
    assert "ServiceMonitor" not in {o["kind"] for o in default_objects}, "ServiceMonitor must be opt-in"
    assert [o["kind"] for o in default_objects].count("ClusterKopfPeering") == 1


def test_ci_objects_pass_kubernetes_schema(ci_objects: list[dict[str, Any]]) -> None:
    kinds = _validate_all(ci_objects)
    assert {"Role", "RoleBinding", "Deployment", "Service"} <= set(kinds)
    assert [o["kind"] for o in ci_objects].count("ServiceMonitor") == 1
    assert sorted(o["metadata"]["namespace"] for o in ci_objects if o["kind"] == "KopfPeering") == [
        "ml-team-a",
        "ml-team-b",
    ]
    assert "ClusterKopfPeering" not in {o["kind"] for o in ci_objects}


def test_kopf_peering_crds_pass_kubernetes_schema() -> None:
    """crds/ (kopf.dev peering) is installed by `helm install` before the templates; --include-crds shows it."""
    proc = run_helm("template", "kt", str(CHART), "--namespace", NAMESPACE, "--include-crds")
    assert proc.returncode == 0, proc.stderr
    crds = {d["metadata"]["name"]: d for d in load_documents(proc.stdout) if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {
        "finetunejobs.kubetune.io",
        "finetunesweeps.kubetune.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        kubernetes_validate.validate(crds[name], K8S_VERSION, strict=True)
        # kopf patches status on the main resource: a status subresource would need other RBAC.
        assert "subresources" not in crds[name]["spec"]["versions"][0]
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"


@pytest.mark.parametrize("fixture", ["default_objects", "ci_objects"])
def test_objects_land_in_the_release_namespace(fixture: str, request: pytest.FixtureRequest) -> None:
    objects: list[dict[str, Any]] = request.getfixturevalue(fixture)
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{obj['kind']} {meta['name']} is cluster-scoped"
        elif obj["kind"] in {"Role", "RoleBinding", "KopfPeering"}:
            assert meta["namespace"] in {"ml-team-a", "ml-team-b"}
        else:
            assert meta["namespace"] == NAMESPACE, f"{obj['kind']} {meta['name']}"
