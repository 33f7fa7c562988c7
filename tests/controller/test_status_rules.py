"""Pure status rules: what phase and conditions a child job implies, how progress lines read."""

from __future__ import annotations

from typing import Any

from tests.support.kubeflow import progress_line, stage_line

from kubetune.api import Condition
from kubetune.api.status import progress_summary as summary
from kubetune.controller.progress import read_log
from kubetune.controller.conditions import rank0_pod, set_condition


def test_transition_time_changes_only_when_status_flips() -> None:
    conds = set_condition(None, "Running", False, "PodsPending", "waiting", 1, "T1")
    conds = set_condition(conds, "Running", False, "Unschedulable", "no GPU", 2, "T2")
    assert conds[0]["lastTransitionTime"] == "T1" and conds[0]["reason"] == "Unschedulable"
    assert conds[0]["observedGeneration"] == 2
    conds = set_condition(conds, "Running", True, "JobRunning", "running", 2, "T3")
    assert conds[0]["lastTransitionTime"] == "T3" and conds[0]["status"] == "True"
    for c in conds:
        Condition.model_validate(c)


def test_rank0_is_master_or_launcher_newest_first() -> None:
    def pod(name: str, replica: str, created: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "creationTimestamp": created,
                "labels": {"training.kubeflow.org/replica-type": replica},
            }
        }

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


def test_at_99_6_percent_status_and_watch_both_say_99_never_100() -> None:
    """One rounding rule (down) for the status summary, the trainer's report, ``kubetune get`` and ``watch``."""
    import io

    from kubetune.controller.progress import parse_progress
    from kubetune.terminal import _Screen, job_rows, status_line
    from kubetune.trainer.progress import progress_from_record

    status = parse_progress({"step": 996, "totalSteps": 1000, "percent": 99.6})
    assert status is not None and status["summary"] == "996/1000 (99%)"
    job = {"metadata": {"name": "qwen"}, "status": {"phase": "Running", "progress": status}}
    watched = io.StringIO()
    _Screen(watched).status(job, [])
    assert watched.getvalue() == "progress 996/1000 (99%)\n"
    assert job_rows([job], False)[1][3].endswith(" 99% 996/1000")
    # The terminal's status line shows one decimal, rounded down too: 99.96 % is 99.9 %, not 100.0 %.
    almost = {**job, "status": {"phase": "Running", "progress": {**status, "percent": 99.96}}}
    line = status_line(almost, [], 120)
    assert " 99.9% " in line and "100.0%" not in line, line
    assert line.startswith("█" * 29 + "▉ "), "the bar is full only at 100 %"
    # The trainer's own summary: 99999 of 100000 steps (99.999 %) is not done.
    record = progress_from_record({"current_steps": 99999, "total_steps": 100000})
    assert record is not None and record.summary == "99999/100000 (99%)"
    # ...and its percent, which the bar and the status line draw (round() made it 100.0).
    reported = {**job, "status": {"phase": "Running", "progress": record.to_api()}}
    line = status_line(reported, [], 120)
    assert record.percent is not None and record.percent < 100 and "100.0%" not in line and "█" * 30 not in line, line
    computed = parse_progress({"step": 99999, "totalSteps": 100000})
    assert computed is not None and computed["percent"] < 100


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
