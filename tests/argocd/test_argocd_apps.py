"""The Argo CD Applications point at real folders, sync in the right order, and carry valid content."""

from __future__ import annotations

import re

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import load_documents
from kubetune.render import validate_object
from tests.support.chartlib import CHART, HELM, run_helm

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "examples" / "argocd"


def app(path: str) -> dict[str, Any]:
    doc = yaml.safe_load((ARGOCD / path).read_text(encoding="utf-8"))
    assert (doc["apiVersion"], doc["kind"]) == ("argoproj.io/v1alpha1", "Application")
    return doc


def wave(doc: dict[str, Any]) -> int:
    return int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_root_app_manages_the_apps_folder() -> None:
    root = app("root.yaml")
    assert root["spec"]["source"]["path"] == "examples/argocd/apps"
    children = sorted(p.name for p in (ARGOCD / "apps").glob("*.yaml"))
    assert children == ["finetunejobs.yaml", "kubetune.yaml"]


def test_operator_syncs_before_the_jobs() -> None:
    operator, jobs = app("apps/kubetune.yaml"), app("apps/finetunejobs.yaml")
    assert wave(operator) < wave(jobs)
    assert operator["spec"]["source"]["path"] == "charts/kubetune"
    assert (ROOT / operator["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert "SkipDryRunOnMissingResource=true" in jobs["spec"]["syncPolicy"]["syncOptions"]
    assert (ROOT / jobs["spec"]["source"]["path"]).is_dir()


def test_jobs_folder_holds_valid_finetunejobs() -> None:
    jobs = app("apps/finetunejobs.yaml")
    folder = ROOT / jobs["spec"]["source"]["path"]
    files = sorted(folder.glob("*.yaml"))
    assert files
    for f in files:
        for doc in load_documents(f.read_text(encoding="utf-8")):
            assert doc["kind"] == "FineTuneJob", f"{f.name}: only FineTuneJobs belong in the jobs folder"
            job, problems = validate_object(doc)
            assert job is not None and not problems, f"{f.name}: {[str(p) for p in problems]}"
            assert doc["metadata"]["namespace"] == jobs["spec"]["destination"]["namespace"]


@pytest.mark.skipif(not HELM.is_file(), reason=f"{HELM} missing: run `bash .ci/install-tools` (CI always does)")
def test_operator_app_values_pass_the_chart_schema(tmp_path: Path) -> None:
    values = app("apps/kubetune.yaml")["spec"]["source"]["helm"]["valuesObject"]
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values), encoding="utf-8")
    # Argo CD renders Helm charts with --include-crds (unless the Application sets skipCrds).
    proc = run_helm("template", "kubetune", str(CHART), "-n", "kubetune-system", "-f", str(vf), "--include-crds")
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in load_documents(proc.stdout)]
    assert "CustomResourceDefinition" in kinds and "Pod" not in kinds  # no helm-test Pod under Argo CD


def test_docs_name_the_prerequisites_of_the_jobs_folder() -> None:
    """docs/argocd.md says which prerequisites file gives the jobs folder's claims, and that file has them."""
    jobs = app("apps/finetunejobs.yaml")
    namespace = jobs["spec"]["destination"]["namespace"]
    doc = (ROOT / "docs" / "argocd.md").read_text(encoding="utf-8")
    [prereqs] = set(re.findall(rf"kubectl apply -n {namespace} -f (examples/prerequisites/[\w-]+\.yaml)", doc))
    provided = {
        (d["kind"], d["metadata"]["name"]) for d in load_documents((ROOT / prereqs).read_text(encoding="utf-8")) if d
    }
    for f in sorted((ROOT / jobs["spec"]["source"]["path"]).glob("*.yaml")):
        for job in load_documents(f.read_text(encoding="utf-8")):
            claims = {v["claimName"] for v in job["spec"]["storage"].values() if v and v.get("claimName")}
            assert claims and {("PersistentVolumeClaim", c) for c in claims} <= provided, f"{f.name}: {claims}"
            assert all(c in doc for c in claims), f"docs/argocd.md does not name {claims}"
