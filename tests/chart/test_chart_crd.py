"""The chart packages THE generated CRDs (crds/kubetune.io_finetunejobs.yaml, crds/kubetune.io_finetunesweeps.yaml)
in its crds/ folder.

Why crds/ and not a template: Helm creates a crds/ file only when the CRD is absent and never puts
ownership metadata on it, so a later `helm install` under any release name or namespace, or after
`kubectl apply -f crds/`, works (a template CRD kept on uninstall is refused by Helm's ownership
check, see test_chart_lifecycle.py). The cost, that `helm upgrade` does not upgrade it, is
documented in docs/install.md.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubetune.api import load_documents

from tests.support.chartlib import CHART, CHART_CRD, GENERATED_CRD, ROOT, default_objects, find, needs_helm, run_helm  # noqa: F401 (fixtures)

needs_generated = pytest.mark.skipif(
    not GENERATED_CRD.is_file(), reason=f"{GENERATED_CRD.relative_to(ROOT)} is not generated yet (`kubetune crd`)"
)


@needs_generated
def test_chart_copy_is_byte_identical_to_the_generated_crd() -> None:
    assert CHART_CRD.is_file(), "run `bash charts/sync-crds.sh`"
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), (
        "charts/kubetune/crds/ differs from crds/: run `bash charts/sync-crds.sh` after `kubetune crd`"
    )


def test_crds_folder_holds_the_finetunejob_and_kopf_crds() -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [
        "kopf.dev_clusterkopfpeerings.yaml",
        "kopf.dev_kopfpeerings.yaml",
        "kubetune.io_finetunejobs.yaml",
        "kubetune.io_finetunesweeps.yaml",
    ]


def test_chart_copy_of_the_sweep_crd_is_byte_identical_to_the_generated_one() -> None:
    name = "kubetune.io_finetunesweeps.yaml"
    assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
        "charts/kubetune/crds/ differs from crds/: run `bash .ci/regen` (or `bash charts/sync-crds.sh`)"
    )


@needs_helm
def test_no_crd_is_a_template(default_objects: list[dict[str, Any]]) -> None:
    """A templated CRD would carry the release's ownership metadata and break the next install."""
    assert find(default_objects, "CustomResourceDefinition") == []


@needs_helm
@needs_generated
def test_helm_show_crds_and_include_crds_give_the_generated_crd() -> None:
    """What Helm (and Argo CD, which renders with --include-crds) installs is the generated CRD."""
    [generated] = load_documents(GENERATED_CRD.read_text(encoding="utf-8"))
    proc = run_helm("show", "crds", str(CHART))
    assert proc.returncode == 0, proc.stderr
    shown = {d["metadata"]["name"]: d for d in load_documents(proc.stdout) if d}
    assert shown["finetunejobs.kubetune.io"] == generated
    [sweeps] = load_documents((ROOT / "crds" / "kubetune.io_finetunesweeps.yaml").read_text(encoding="utf-8"))
    assert shown["finetunesweeps.kubetune.io"] == sweeps
    proc = run_helm("template", "kt", str(CHART), "--include-crds")
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in load_documents(proc.stdout) if d and d.get("kind") == "CustomResourceDefinition"]
    assert generated in rendered
