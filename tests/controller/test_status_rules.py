"""Pure status rules: what phase and conditions a child job implies, how progress lines read."""

from __future__ import annotations

from typing import Any

import pytest
from kubeflow import progress_line, stage_line

from kubetune.api import Condition
from kubetune.controller.progress import read_log, summary
from kubetune.controller.status import observe, phase_conditions, rank0_pod, set_condition
from kubetune.controller.sync import desired_status


def job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": s, "reason": "R", "message": f"{t} message"} for t, s in conditions]}}


@pytest.mark.parametrize(
    ("child", "exporting", "phase"),
    [
        (job(), False, "Pending"),
        (job(("Created", "True")), False, "Pending"),
        (job(("Created", "True"), ("Running", "True")), False, "Running"),
        (job(("Created", "True"), ("Running", "True")), True, "Exporting"),
        (job(("Running", "False"), ("Restarting", "True")), False, "Running"),
        (job(("Running", "False"), ("Succeeded", "True")), True, "Succeeded"),
        (job(("Running", "False"), ("Failed", "True")), False, "Failed"),
        (job(("Created", "True"), ("Suspended", "True")), False, "Suspended"),
    ],
    ids=["no-conditions", "created", "running", "exporting", "restarting", "succeeded", "failed", "suspended"],
)
def test_child_conditions_map_to_phases(child: dict[str, Any], exporting: bool, phase: str) -> None:
    assert observe(child, [], exporting).phase == phase


def test_transition_time_changes_only_when_status_flips() -> None:
    conds = set_condition(None, "Running", False, "PodsPending", "waiting", 1, "T1")
    conds = set_condition(conds, "Running", False, "Unschedulable", "no GPU", 2, "T2")
    assert conds[0]["lastTransitionTime"] == "T1" and conds[0]["reason"] == "Unschedulable"
    assert conds[0]["observedGeneration"] == 2
    conds = set_condition(conds, "Running", True, "JobRunning", "running", 2, "T3")
    assert conds[0]["lastTransitionTime"] == "T3" and conds[0]["status"] == "True"
    for c in conds:
        Condition.model_validate(c)


def test_terminal_phase_flips_running_false_and_adds_succeeded() -> None:
    running = phase_conditions(None, observe(job(("Running", "True")), [], False), 1, "T1")
    done = phase_conditions(running, observe(job(("Succeeded", "True")), [], False), 1, "T2")
    by_type = {c["type"]: c for c in done}
    assert by_type["Running"]["status"] == "False" and by_type["Running"]["lastTransitionTime"] == "T2"
    assert by_type["Succeeded"]["status"] == "True"
    assert "Failed" not in by_type


def test_rank0_is_master_or_launcher_newest_first() -> None:
    def pod(name: str, replica: str, created: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "creationTimestamp": created, "labels": {"training.kubeflow.org/replica-type": replica}}}

    pods = [pod("w", "worker", "3"), pod("m-old", "Master", "1"), pod("m-new", "master", "2")]
    assert rank0_pod(pods)["metadata"]["name"] == "m-new"  # type: ignore[index]
    assert rank0_pod([pod("l", "launcher", "1")])["metadata"]["name"] == "l"  # type: ignore[index]
    assert rank0_pod([pod("w", "worker", "1")]) is None


def test_log_reading_takes_the_newest_progress_and_tracks_export() -> None:
    text = "\n".join(
        [
            progress_line(10, 1000, 2.0),
            "noise kubetune.progress {not json",
            "[rank0]: " + progress_line(120, 1000, 1.4213),
            stage_line("export", "start"),
        ]
    )
    reading = read_log(text)
    assert reading.progress is not None
    assert reading.progress["step"] == 120 and reading.progress["summary"] == "120/1000 (12%)"
    assert reading.progress["percent"] == 12.0
    assert reading.exporting
    assert not read_log(text + "\n" + stage_line("export", "end")).exporting
    assert read_log("nothing here").progress is None


def test_summary_without_total() -> None:
    assert summary(5, 0) == "5"
    assert summary(999, 1000) == "999/1000 (99%)"


def test_desired_status_is_empty_when_nothing_changed() -> None:
    obs = observe(job(("Running", "True")), [], False)
    first = desired_status({}, obs, None, 1, "T1")
    assert first["phase"] == "Running" and first["startTime"] == "T1"
    assert desired_status(first, obs, None, 1, "T2") == {}


def test_progress_keys_the_trainer_stopped_sending_are_cleared() -> None:
    obs = observe(job(("Running", "True")), [], False)
    before = {**desired_status({}, obs, None, 1, "T1"), "progress": {"step": 9, "totalSteps": 10, "loss": 1.0}}
    reading = read_log('kubetune.progress {"step": 10, "totalSteps": 10}')
    change = desired_status(before, obs, reading, 1, "T2")
    assert change["progress"]["loss"] is None and change["progress"]["step"] == 10


def test_a_job_kueue_has_not_admitted_is_pending_not_suspended() -> None:
    queued = {**job(("Created", "True"), ("Suspended", "True")), "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpus"}}}
    waiting = observe(queued, [], False, suspend_requested=False)
    assert (waiting.phase, waiting.reason) == ("Pending", "WaitingForQueue") and "gpus" in waiting.message
    assert observe(queued, [], False, suspend_requested=True).phase == "Suspended"


def test_peering_pauses_for_live_peers_of_higher_or_equal_priority() -> None:
    import datetime

    from kubetune.controller.peering import blocking_peers

    now = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
    fresh, stale = "2026-11-28T11:59:50+00:00", "2026-11-28T11:00:00+00:00"
    peers = {
        "me": {"priority": 0, "lifetime": 60, "lastseen": fresh},
        "laptop": {"priority": 100, "lifetime": 60, "lastseen": fresh},
        "crashed": {"priority": 100, "lifetime": 60, "lastseen": stale},
        "twin": {"priority": 0, "lifetime": 60, "lastseen": fresh},
        "lower": {"priority": -5, "lifetime": 60, "lastseen": fresh},
    }
    assert sorted(blocking_peers(peers, "me", 0, now)) == ["laptop", "twin"]
    assert blocking_peers(peers, "laptop", 100, now) == []
