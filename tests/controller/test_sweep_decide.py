"""``decide_sweep``: snapshot in, decision out (pure; no cluster). The end-to-end behaviour is in
test_sweep_operator.py; these are the branches an emulator run reaches only with contrived timing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tests.support.sweeplib import job, promoted_snapshot, record, serving_condition, snapshot

from kubetune.controller.reasons import SWEEP_REASONS
from kubetune.controller.sweeps.decide import decide_sweep
from kubetune.controller.sweeps.snapshot import SweepSnapshot


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_new_trials_are_in_the_status_and_applied_in_the_same_decision_after_it() -> None:
    decision = decide_sweep(snapshot(maxTrials=3, parallelism=2), 0)
    assert [t["name"] for t in decision.status["trials"]] == ["lr-0", "lr-1"]
    assert [t["state"] for t in decision.status["trials"]] == ["Pending", "Pending"]
    assert [o["metadata"]["name"] for o in decision.trials] == ["lr-0", "lr-1"]
    assert condition(decision.status, "Running")["reason"] == "TrialsQueued"
    assert condition(decision.status, "Validated")["reason"] == "SweepValid"


def test_recorded_pending_trials_are_created_without_asking_again() -> None:
    status = {"trials": [record(0, "Pending")]}
    decision = decide_sweep(snapshot(status, maxTrials=3, parallelism=1), 0)
    assert [(t["name"], t["parameters"], t["state"]) for t in decision.status["trials"]] == [
        ("lr-0", {"training.learningRate": 1e-4}, "Pending")
    ]
    assert [o["spec"]["training"]["learningRate"] for o in decision.trials] == [1e-4]


def test_a_trial_succeeded_without_the_metric_waits_for_its_evaluation_then_fails_and_is_counted() -> None:
    status = {"trials": [record(0, "Running")]}
    succeeded = {"lr-0": job("lr-0", "Succeeded", completionTime="1970-01-01T00:00:00Z")}
    waiting = decide_sweep(snapshot(status, succeeded, maxTrials=2, parallelism=1), 100)
    assert (
        waiting.status["trials"][0]["state"] == "Running"
        and "waiting for its evaluation" in waiting.status["trials"][0]["message"]
    )
    assert condition(waiting.status, "Running")["reason"] == "WaitingForTrialEvaluation"
    assert waiting.requeue_after == 500  # the deadline: 600 s after the job's completionTime
    late = decide_sweep(snapshot(waiting.status, succeeded, maxTrials=2, parallelism=1), 601)
    first = late.status["trials"][0]
    assert first["state"] == "Failed" and "has no evalLoss" in first["message"]
    assert late.status["trials"][1]["name"] == "lr-1"  # the study goes on


def test_a_running_trial_deleted_by_someone_fails() -> None:
    decision = decide_sweep(snapshot({"trials": [record(0, "Running")]}, maxTrials=1), 0)
    assert (
        decision.status["trials"][0]["state"] == "Failed" and "was deleted" in decision.status["trials"][0]["message"]
    )


def test_a_job_of_the_trials_name_that_the_sweep_does_not_own_is_never_adopted() -> None:
    snap = snapshot({"trials": [record(0, "Pending")]}, maxTrials=1)
    snap = SweepSnapshot(**{**snap.__dict__, "foreign": frozenset({"lr-0"})})
    decision = decide_sweep(snap, 0)
    assert decision.trials == () and "does not own" in decision.status["trials"][0]["message"]


def test_a_trial_the_api_server_refused_fails_with_its_message() -> None:
    snap = snapshot({"trials": [record(0, "Pending")]}, maxTrials=1)
    snap = SweepSnapshot(**{**snap.__dict__, "refused": {"lr-0": "denied by policy (403 Forbidden)"}})
    decision = decide_sweep(snap, 0)
    assert decision.trials == () and "denied by policy" in decision.status["trials"][0]["message"]
    assert decision.status["phase"] == "Failed" and condition(decision.status, "Failed")["reason"] == "NoTrialSucceeded"


def test_a_winner_deleted_before_promotion_is_reported_and_nothing_is_applied() -> None:
    status = {"trials": [record(0, "Succeeded", 0.5)]}
    decision = decide_sweep(snapshot(status, maxTrials=1, promote="serve", template_changes={"serve": {}}), 0)
    assert decision.status["phase"] == "Succeeded" and decision.winner is None
    assert condition(decision.status, "Promoted")["reason"] == "WinnerMissing"


def test_promotion_is_applied_once_then_left_alone() -> None:
    status = {"trials": [record(0, "Succeeded", 0.5)]}
    changes = {"maxTrials": 1, "promote": "serve", "template_changes": {"serve": {}}}
    first = decide_sweep(snapshot(status, {"lr-0": job("lr-0", "Succeeded")}, **changes), 0)
    assert (
        first.winner is not None
        and first.winner["spec"]["serve"] == {}
        and condition(first.status, "Promoted")["reason"] == "WinnerPromoted"
    )
    served = job("lr-0", "Succeeded")
    served["spec"] = {"serve": {}}
    again = decide_sweep(snapshot(first.status, {"lr-0": served}, **changes), 0)
    assert again.winner is None


def test_a_pruned_trial_whose_job_is_still_there_is_deleted_again() -> None:
    """The delete follows the stored status: when it failed (or the operator restarted in between), the
    next decision deletes the job again instead of leaving it training on its GPUs."""
    status = {"trials": [record(0, "Succeeded", 1.0), {**record(1, "Pruned", 4.0), "message": "pruned at step 10"}]}
    decision = decide_sweep(snapshot(status, {"lr-1": job("lr-1", "Running")}, maxTrials=3), 0)
    assert decision.deletions == ("lr-1",)
    assert decide_sweep(snapshot(status, {}, maxTrials=3), 0).deletions == ()


def test_an_unreadable_trials_list_is_a_condition_not_a_crash() -> None:
    decision = decide_sweep(snapshot({"trials": [{"name": 5}]}, maxTrials=1), 0)
    assert (
        decision.status["phase"] == "Failed"
        and "status.trials cannot be read" in condition(decision.status, "Validated")["message"]
    )
    assert decision.trials == ()


def test_every_sweep_reason_is_asserted_by_a_test() -> None:
    here = Path(__file__).parent
    source = "\n".join(
        (here / f).read_text(encoding="utf-8") for f in ("test_sweep_operator.py", "test_sweep_decide.py")
    )
    quoted = set(re.findall(r'"([A-Za-z]+)"', source))
    assert not sorted(r for r in SWEEP_REASONS if r not in quoted), "a sweep reason no test asserts"


MIRRORED = [
    ("ServingReady", "True"),
    ("ServingStarting", "False"),
    ("ServingKindNotInstalled", "False"),
    ("ServingRejected", "False"),
    ("AdapterCopyFailed", "False"),
    ("WaitingForEvaluation", "False"),
    ("EvaluationNotImproved", "False"),
]


@pytest.mark.parametrize(("reason", "holds"), MIRRORED)
def test_a_promoted_sweep_carries_its_winners_serving_condition(reason: str, holds: str) -> None:
    """The FineTuneJob controller's Serving condition on the winner is what says whether the model
    serves; the sweep mirrors it (Argo CD's sweep health check and `kubectl get fts` read the sweep)."""
    decision = decide_sweep(promoted_snapshot(serving_condition(reason, holds)), 0)
    assert decision.winner is None  # already promoted: only mirrored
    serving = condition(decision.status, "Serving")
    assert (serving["status"], serving["reason"], serving["message"]) == (
        holds,
        reason,
        f"FineTuneJob lr-0: {reason} here",
    )


def test_a_winner_not_yet_reporting_serving_for_its_current_spec_is_serving_starting() -> None:
    for snap in (promoted_snapshot(None), promoted_snapshot(serving_condition("ServingReady", "True", generation=1))):
        serving = condition(decide_sweep(snap, 0).status, "Serving")
        assert (serving["status"], serving["reason"]) == ("False", "ServingStarting"), serving


def test_a_deleted_winner_drops_the_serving_condition() -> None:
    status = {"trials": [record(0, "Succeeded", 0.5)], "conditions": [serving_condition("ServingReady", "True", 1)]}
    decision = decide_sweep(snapshot(status, {}, maxTrials=1, promote="serve", template_changes={"serve": {}}), 0)
    assert condition(decision.status, "Promoted")["reason"] == "WinnerMissing"
    assert "Serving" not in [c["type"] for c in decision.status["conditions"]]


def test_events_announce_each_change_once_and_a_decision_taken_again_announces_nothing() -> None:
    """The first decision asks trials (one TrialCreated each, with its parameters); deciding again from
    the stored result (a 409's retry, a restart) posts nothing; a trial that ends gets one Event."""
    first = decide_sweep(snapshot(maxTrials=2, parallelism=2), 0.0)
    created = [e for e in first.events if e.reason == "TrialCreated"]
    assert [e.message.split(" asked")[0] for e in created] == ["trial lr-0", "trial lr-1"]
    assert all("training.learningRate=" in e.message for e in created)
    stored = first.status
    again = decide_sweep(snapshot(stored, maxTrials=2, parallelism=2), 1.0)
    assert again.events == ()
    running = {n: job(n, "Running") for n in ("lr-0", "lr-1")}
    failed = {**running, "lr-1": job("lr-1", "Failed", message="OOMKilled")}
    after = decide_sweep(snapshot(stored, trials=failed, maxTrials=2, parallelism=2), 2.0)
    assert [(e.type, e.reason) for e in after.events] == [("Warning", "TrialFailed")]
    assert "lr-1" in after.events[0].message and "OOMKilled" in after.events[0].message
