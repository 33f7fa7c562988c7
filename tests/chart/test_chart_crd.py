"""The chart packages THE generated CRD (crds/kubetune.io_finetunejobs.yaml), not a copy that drifts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubetune.api import load_documents

from chartlib import CHART_CRD, GENERATED_CRD, ROOT, ci_objects, default_objects, find, needs_helm, one, template  # noqa: F401 (fixtures)

needs_generated = pytest.mark.skipif(
    not GENERATED_CRD.is_file(), reason=f"{GENERATED_CRD.relative_to(ROOT)} is not generated yet (`kubetune crd`)"
)


@needs_generated
def test_chart_copy_is_byte_identical_to_the_generated_crd() -> None:
    assert CHART_CRD.is_file(), "run `bash charts/sync-crds.sh`"
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), (
        "charts/kubetune/files/crds/ differs from crds/: run `bash charts/sync-crds.sh` after `kubetune crd`"
    )


def _without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    crd = copy.deepcopy(crd)
    crd["metadata"].pop("labels", None)
    crd["metadata"].pop("annotations", None)
    return crd


@needs_helm
@needs_generated
def test_rendered_crd_is_the_generated_crd_plus_chart_metadata(default_objects: list[dict[str, Any]]) -> None:
    [generated] = load_documents(GENERATED_CRD.read_text(encoding="utf-8"))
    rendered = one(default_objects, "CustomResourceDefinition")
    # Every field of the schema, CEL rules and printer columns survive the template unchanged.
    assert _without_chart_metadata(rendered) == _without_chart_metadata(generated)
    # The generator's own labels are kept; the chart only adds to them.
    assert generated["metadata"].get("labels", {}).items() <= rendered["metadata"]["labels"].items()
    assert rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


@needs_helm
def test_crd_is_kept_on_uninstall_by_default(default_objects: list[dict[str, Any]]) -> None:
    annotations = one(default_objects, "CustomResourceDefinition")["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    # Argo CD applies it before the Deployment and before any FineTuneJob.
    assert annotations["argocd.argoproj.io/sync-wave"] == "-1"


@needs_helm
def test_crd_keep_can_be_turned_off(ci_objects: list[dict[str, Any]]) -> None:
    annotations = one(ci_objects, "CustomResourceDefinition")["metadata"]["annotations"]
    assert "helm.sh/resource-policy" not in annotations


@needs_helm
def test_crd_can_be_left_out() -> None:
    objects = template("--set", "crds.enabled=false")
    assert find(objects, "CustomResourceDefinition") == []
    assert one(objects, "Deployment")  # the operator is still installed


def test_finetunejob_crd_is_not_in_the_crds_folder() -> None:
    """Helm installs a chart's crds/ folder once and never upgrades it: the FineTuneJob CRD is a
    template instead. Only kopf's peering CRDs (kopf.dev/v1, which never change) live there."""
    crds_folder = CHART_CRD.parents[2] / "crds"
    assert sorted(p.name for p in crds_folder.iterdir()) == ["kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"]
