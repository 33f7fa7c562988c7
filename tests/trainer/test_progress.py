"""trainer_log.jsonl -> kubetune.progress lines (the operator's transport)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.api import Progress, contract
from kubetune.trainer.progress import (
    LogFollower,
    ProgressTracker,
    StdoutProgressSink,
    parse_duration,
    progress_from_record,
)

# Written by LLaMA-Factory 0.9.5's LogCallback (the last line of a run has no loss).
LOG = [
    {
        "current_steps": 10,
        "total_steps": 40,
        "loss": 5.21,
        "lr": 5e-05,
        "epoch": 0.25,
        "percentage": 25.0,
        "elapsed_time": "0:00:10",
        "remaining_time": "0:00:30",
    },
    {
        "current_steps": 20,
        "total_steps": 40,
        "loss": 3.1,
        "lr": 4e-05,
        "epoch": 0.5,
        "percentage": 50.0,
        "elapsed_time": "0:00:20",
        "remaining_time": "0:00:20",
    },
    {
        "current_steps": 40,
        "total_steps": 40,
        "epoch": 1.0,
        "percentage": 100.0,
        "elapsed_time": "0:00:40",
        "remaining_time": "0:00:00",
    },
]


class ListSink:
    def __init__(self) -> None:
        self.updates: list[Progress] = []

    def publish(self, progress: Progress) -> None:
        self.updates.append(progress)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0:00:30", 30), ("1:02:03", 3723), ("1 day, 0:00:01", 86401), ("3 days, 2:00:00", 266400), ("soon", None)],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_record_becomes_progress_with_camel_case_wire_format() -> None:
    progress = progress_from_record(LOG[0], now="2026-01-01T00:00:00Z")
    assert progress is not None
    assert progress.to_api() == {
        "step": 10,
        "totalSteps": 40,
        "percent": 25.0,
        "epoch": 0.25,
        "loss": 5.21,
        "learningRate": 5e-05,
        "etaSeconds": 30,
        "summary": "10/40 (25%)",
        "updatedAt": "2026-01-01T00:00:00Z",
    }


def test_records_without_steps_are_ignored() -> None:
    assert progress_from_record({"loss": 1.0}) is None
    assert progress_from_record({"current_steps": 1, "total_steps": 0}) is None


def test_stdout_sink_prints_one_prefixed_json_line_the_operator_can_parse() -> None:
    lines: list[str] = []
    progress = progress_from_record(LOG[1])
    assert progress is not None
    StdoutProgressSink(lines.append).publish(progress)
    assert len(lines) == 1 and lines[0].startswith(contract.PROGRESS_PREFIX)
    parsed = Progress.model_validate(json.loads(lines[0][len(contract.PROGRESS_PREFIX) :]), by_alias=True)
    assert parsed.step == 20 and parsed.total_steps == 40 and parsed.loss == 3.1


def test_tracker_keeps_the_last_loss_and_measures_its_own_eta() -> None:
    clock = iter([100.0, 110.0, 130.0])
    sink = ListSink()
    tracker = ProgressTracker(sink, clock=lambda: next(clock))
    for record in LOG:
        tracker.feed(record)
    assert [u.step for u in sink.updates] == [10, 20, 40]
    assert sink.updates[-1].loss == 3.1  # the final record has no loss
    assert sink.updates[-1].percent == 100.0
    # 10 steps in 10 s after the first sighting -> 20 steps left take 20 s.
    assert sink.updates[1].eta_seconds == 20


def test_evaluations_during_training_are_published_and_kept_in_later_updates() -> None:
    """LLaMA-Factory writes an evaluation as its own record at a step already logged (eval_loss, no
    loss); it used to be dropped as a repeat of that step, so no reader (a FineTuneSweep's pruner)
    ever saw an evaluation loss during training."""
    sink = ListSink()
    tracker = ProgressTracker(sink, clock=lambda: 0.0)
    tracker.feed({"current_steps": 2, "total_steps": 6, "loss": 6.3, "lr": 1e-3})
    tracker.feed({"current_steps": 2, "total_steps": 6, "eval_loss": 6.25})
    tracker.feed({"current_steps": 3, "total_steps": 6, "loss": 6.1, "lr": 1e-3})
    assert [(u.step, u.loss, u.eval_loss, u.eval_step) for u in sink.updates] == [
        (2, 6.3, None, None),
        (2, 6.3, 6.25, 2),
        (3, 6.1, 6.25, 2),
    ]
    assert sink.updates[1].to_api()["evalLoss"] == 6.25 and sink.updates[1].to_api()["evalStep"] == 2
    tracker.feed({"current_steps": 4, "total_steps": 6, "eval_loss": float("nan")})  # never published as a value
    assert sink.updates[-1].eval_loss == 6.25


def test_eta_after_resume_uses_observed_rate_not_llamafactorys_optimistic_one() -> None:
    # After resuming at step 30 of 100, LLaMA-Factory divides by its own short
    # elapsed time and claims a near end; we measure the rate ourselves.
    clock = iter([0.0, 10.0])
    sink = ListSink()
    tracker = ProgressTracker(sink, clock=lambda: next(clock))
    tracker.feed({"current_steps": 31, "total_steps": 100, "loss": 1.0, "remaining_time": "0:00:01"})
    tracker.feed({"current_steps": 32, "total_steps": 100, "loss": 1.0, "remaining_time": "0:00:01"})
    assert sink.updates[-1].eta_seconds == 680


def test_follower_reads_only_complete_lines_and_restarts_when_the_log_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    sink = ListSink()
    follower = LogFollower(path, ProgressTracker(sink))
    follower.poll()  # no file yet: nothing, no error
    line0, line1 = json.dumps(LOG[0]) + "\n", json.dumps(LOG[1])
    path.write_text(line0 + line1[:25])  # second line half-written
    follower.poll()
    assert [u.step for u in sink.updates] == [10]
    with open(path, "a") as fh:
        fh.write(line1[25:] + "\n")
    follower.poll()
    assert [u.step for u in sink.updates] == [10, 20]
    path.write_text(json.dumps({**LOG[0], "current_steps": 2, "loss": 6.0}) + "\n")  # a fresh run replaced the file
    follower.poll()
    assert sink.updates[-1].step == 2 and sink.updates[-1].loss == 6.0


def test_follower_thread_publishes_while_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    sink = ListSink()
    follower = LogFollower(path, ProgressTracker(sink), interval=0.05).start()
    try:
        path.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    finally:
        follower.stop()
    assert [u.step for u in sink.updates] == [10, 20, 40]


def test_a_resumed_run_does_not_republish_the_previous_attempts_lines(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    path.write_text(json.dumps(LOG[0]) + "\n")  # written before the pod was preempted
    sink = ListSink()
    follower = LogFollower(path, ProgressTracker(sink), interval=0.05).start()
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(LOG[1]) + "\n")
    finally:
        follower.stop()
    assert [u.step for u in sink.updates] == [20]
