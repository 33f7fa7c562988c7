"""The Argo CD health check for FineTuneJob, run by a real Lua 5.1 interpreter (Argo CD's Lua dialect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.argocd import ARGOCD, needs_lua, run_check
import yaml

from kubetune.api import FineTuneJobStatus

CHECK = ARGOCD / "health" / "finetunejob.lua"
APP_CHECK = ARGOCD / "health" / "application.lua"
FIXTURES = yaml.safe_load(Path(__file__).with_name("fixtures.yaml").read_text(encoding="utf-8"))


def finetunejob(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "qwen-qlora", "namespace": "default", "generation": generation},
        "spec": {"method": "qlora"},
    }
    if status is not None:
        obj["status"] = status
    return obj


API_CASES = [c for c in FIXTURES if c["status"] is not None and c.get("validate", True)]


@pytest.mark.parametrize("case", API_CASES, ids=[c["name"] for c in API_CASES])
def test_fixture_is_a_status_the_operator_can_write(case: dict[str, Any]) -> None:
    FineTuneJobStatus.model_validate(case["status"])


@needs_lua
@pytest.mark.parametrize("case", FIXTURES, ids=[c["name"] for c in FIXTURES])
def test_health(case: dict[str, Any], tmp_path: Path) -> None:
    status, message = run_check(CHECK, finetunejob(case["generation"], case["status"]), tmp_path)
    assert (status, message) == (case["expect"]["status"], case["expect"]["message"])


def test_fixtures_cover_every_phase_and_health() -> None:
    phases = {(c["status"] or {}).get("phase") for c in FIXTURES}
    assert {"Pending", "Running", "Exporting", "Succeeded", "Failed", "Suspended", None} <= phases
    assert {c["expect"]["status"] for c in FIXTURES} >= {"Healthy", "Progressing", "Degraded", "Suspended"}


@needs_lua
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, ("Progressing", "")),
        ({"health": {"status": "Healthy"}}, ("Healthy", "")),
        ({"health": {"status": "Degraded", "message": "CrashLoopBackOff"}}, ("Degraded", "CrashLoopBackOff")),
    ],
)
def test_application_health(status: dict[str, Any] | None, expected: tuple[str, str], tmp_path: Path) -> None:
    app: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "kubetune"},
    }
    if status is not None:
        app["status"] = status
    assert run_check(APP_CHECK, app, tmp_path) == expected


def test_argocd_cm_snippet_carries_the_same_lua() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text(encoding="utf-8"))
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    data = cm["data"]
    assert data["resource.customizations.health.kubetune.io_FineTuneJob"] == CHECK.read_text(encoding="utf-8")
    assert data["resource.customizations.health.argoproj.io_Application"] == APP_CHECK.read_text(encoding="utf-8")
