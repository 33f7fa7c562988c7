"""The Argo CD health check for FineTuneSweep, run by a real Lua 5.1 interpreter (Argo CD's Lua dialect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.argocd import ARGOCD, needs_lua, run_check
from tests.support.sweeplib import promoted_snapshot, record, serving_condition, snapshot

from kubetune.api import FineTuneSweepStatus
from kubetune.controller.sweeps.decide import decide_sweep

CHECK = ARGOCD / "health" / "finetunesweep.lua"
FIXTURES: list[dict[str, Any]] = yaml.safe_load(
    Path(__file__).with_name("sweep_fixtures.yaml").read_text(encoding="utf-8")
)


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


OPERATOR_CASES = [
    # (the winner FineTuneJob's Serving condition, Argo CD health of the sweep the operator then writes)
    (("ServingReady", "True", 2), "Healthy"),
    (("ServingStarting", "False", 2), "Progressing"),
    (("WaitingForEvaluation", "False", 2), "Progressing"),
    (("EvaluationNotImproved", "False", 2), "Healthy"),
    (("ServingRejected", "False", 2), "Degraded"),
    (("ServingKindNotInstalled", "False", 2), "Degraded"),
    (("ServingReady", "True", 1), "Progressing"),  # stale: written before spec.serve came
    (None, "Progressing"),  # promoted; the FineTuneJob controller has not acted yet
]


@needs_lua
@pytest.mark.parametrize(("winner_serving", "health"), OPERATOR_CASES, ids=[str(c[0]) for c in OPERATOR_CASES])
def test_a_promoted_sweep_is_healthy_only_once_its_winner_serves(
    winner_serving: tuple[str, str, int] | None, health: str, tmp_path: Path
) -> None:
    """The status is the operator's own (decide_sweep on a finished promote: serve sweep),
    not a hand-written fixture."""
    condition = serving_condition(*winner_serving) if winner_serving else None
    status = decide_sweep(promoted_snapshot(condition), 0).status
    FineTuneSweepStatus.model_validate(status)
    got, message = run_check(CHECK, finetunesweep(1, status), tmp_path)
    assert got == health, message
    assert message.startswith(
        "Succeeded: 1/1 (0 pruned, 0 failed) trials; best lr-0 (evalLoss 0.5000); serving: FineTuneJob lr-0"
    )


@needs_lua
def test_a_promoted_sweep_whose_winner_is_gone_is_degraded(tmp_path: Path) -> None:
    status = decide_sweep(
        snapshot(
            {"trials": [record(0, "Succeeded", 0.5)]}, {}, maxTrials=1, promote="serve", template_changes={"serve": {}}
        ),
        0,
    ).status
    got, message = run_check(CHECK, finetunesweep(1, status), tmp_path)
    assert got == "Degraded" and "not served: FineTuneJob lr-0 (the best trial) does not exist" in message, message
