"""`helm package` ships what an install needs, and the install notes tell the user what they got."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.support.chartlib import CHART, CI_VALUES, NAMESPACE, needs_helm, run_helm

pytestmark = needs_helm


def test_package_contains_the_crds_and_not_the_ci_values(tmp_path: Path) -> None:
    proc = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    [archive] = tmp_path.glob("kubetune-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {
        "kubetune/crds/kubetune.io_finetunejobs.yaml",
        "kubetune/crds/kubetune.io_finetunesweeps.yaml",
        "kubetune/crds/kopf.dev_clusterkopfpeerings.yaml",
        "kubetune/crds/kopf.dev_kopfpeerings.yaml",
    } <= names
    assert "kubetune/values.schema.json" in names
    assert not any(n.startswith("kubetune/ci/") for n in names)


def notes(*args: str) -> str:
    proc = run_helm("install", "kt", str(CHART), "--dry-run=client", "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_default() -> None:
    text = notes()
    assert "watches FineTuneJobs in every namespace" in text
    assert "helm test kt -n kubetune-system" in text
    # a client-side dry run has no cluster: the notes say how to get the CRD
    assert "kubectl apply --server-side -f crds/kubetune.io_finetunejobs.yaml" in text


def test_notes_namespaced() -> None:
    text = notes("--values", str(CI_VALUES))
    assert "watches only: ml-team-a, ml-team-b" in text
    assert "LocalQueue named gpu-queue" in text
    assert ":9090/metrics (scraped by the ServiceMonitor kt-kubetune)" in text
