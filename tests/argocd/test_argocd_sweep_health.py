"""The Argo CD health check for FineTuneSweep, run by a real Lua 5.1 interpreter (Argo CD's Lua dialect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_argocd_health import ARGOCD, needs_lua, run_check

from kubetune.api import FineTuneSweepStatus

CHECK = ARGOCD / "health" / "finetunesweep.lua"
FIXTURES: list[dict[str, Any]] = yaml.safe_load(Path(__file__).with_name("sweep_fixtures.yaml").read_text(encoding="utf-8"))


def finetunesweep(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSweep",
        "metadata": {"name": "qwen-lr", "namespace": "ml-team-a", "generation": generation},
        "spec": {"objective": {"metric": "evalLoss", "goal": "minimize"}, "maxTrials": 6},
    }
    if status is not None:
        obj["status"] = status
    return obj


API_CASES = [c for c in FIXTURES if c["status"] is not None]


@pytest.mark.parametrize("case", API_CASES, ids=[c["name"] for c in API_CASES])
def test_fixture_is_a_status_the_operator_can_write(case: dict[str, Any]) -> None:
    FineTuneSweepStatus.model_validate(case["status"])


@needs_lua
@pytest.mark.parametrize("case", FIXTURES, ids=[c["name"] for c in FIXTURES])
def test_sweep_health(case: dict[str, Any], tmp_path: Path) -> None:
    status, message = run_check(CHECK, finetunesweep(case["generation"], case["status"]), tmp_path)
    assert (status, message) == (case["expect"]["status"], case["expect"]["message"])


def test_fixtures_cover_every_phase_and_health() -> None:
    phases = {(c["status"] or {}).get("phase") for c in FIXTURES}
    assert {"Pending", "Running", "Succeeded", "Failed", None} <= phases
    assert {c["expect"]["status"] for c in FIXTURES} >= {"Healthy", "Progressing", "Degraded"}


def test_argocd_cm_snippet_carries_the_same_lua() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text(encoding="utf-8"))
    assert cm["data"]["resource.customizations.health.kubetune.io_FineTuneSweep"] == CHECK.read_text(encoding="utf-8")
