"""The progress-line format round-trips: what the trainer prints is what the operator, the intake,
``kubetune run --local`` and ``kubetune plot`` read (one module owns it: kubetune.api.progressline)."""

from __future__ import annotations

import json

import pytest

from kubetune.api import Progress, contract
from kubetune.api.progressline import PROGRESS_PREFIX, STAGE_PREFIX, parse_line, progress_line, stage_line
from kubetune.controller.intake import Refused, parse_report
from kubetune.controller.progress import read_log
from kubetune.trainer import stages
from kubetune.trainer.errors import TrainerError
from kubetune.trainer.progress import StdoutProgressSink

PROGRESS = Progress(
    step=120,
    total_steps=1000,
    epoch=0.4,
    loss=1.25,
    learning_rate=2e-5,
    eta_seconds=600,
    updated_at="2026-11-30T12:00:00Z",
)


def trainer_progress_lines(*updates: Progress) -> list[str]:
    """What the trainer's real sink prints on rank 0."""
    out: list[str] = []
    sink = StdoutProgressSink(write=out.append)
    for update in updates:
        sink.publish(update)
    return out


def trainer_stage_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the trainer's real stage wrapper prints: start/end of one stage, start/failed of another."""
    with stages.stage("data"):
        pass
    with pytest.raises(TrainerError), stages.stage("train"):
        raise TrainerError("out of memory")
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_contract_reexports_the_prefixes() -> None:
    assert (contract.PROGRESS_PREFIX, contract.STAGE_PREFIX) == (PROGRESS_PREFIX, STAGE_PREFIX)


def test_progress_round_trips_from_the_trainer_to_the_operator() -> None:
    [line] = trainer_progress_lines(PROGRESS)
    assert line == progress_line(PROGRESS.to_api())
    parsed = parse_line(line)
    assert parsed is not None and parsed.kind == "progress"
    assert Progress.model_validate(parsed.data, by_alias=True) == PROGRESS
    # The operator's reading (log tail or pushed report) is the same progress, with its summary.
    expected = {**PROGRESS.to_api(), "percent": 12.0, "summary": "120/1000 (12%)"}
    assert read_log(line).progress == expected
    assert (
        parse_report(json.dumps({"namespace": "ml", "name": "job", "lines": [line]}).encode(), 10)[2].progress
        == expected
    )


def test_stage_lines_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    lines = trainer_stage_lines(capsys)
    parsed = [parse_line(line) for line in lines]
    assert all(p is not None and p.kind == "stage" for p in parsed)
    events = [(p.data["stage"], p.data["event"]) for p in parsed if p is not None]
    assert events == [("data", "start"), ("data", "end"), ("train", "start"), ("train", "failed")]
    failed = parsed[-1]
    assert (
        failed is not None and failed.data["message"] == "out of memory" and isinstance(failed.data["seconds"], float)
    )
    assert lines[0] == stage_line("data", "start")
    # Every one of them is a line the intake accepts.
    parse_report(json.dumps({"namespace": "ml", "name": "job", "lines": lines}).encode(), 10)


def test_export_and_evaluation_stages_reach_the_operator() -> None:
    evaluation = {"state": "Succeeded", "trained": {"evalLoss": 0.5}}
    text = "\n".join([stage_line("export", "start"), stage_line("evaluate", "end", evaluation=evaluation)])
    reading = read_log(text)
    assert reading.exporting
    assert reading.evaluation is not None and reading.evaluation["trained"]["evalLoss"] == 0.5
    assert not read_log(text + "\n" + stage_line("export", "end")).exporting


def test_a_log_tail_finds_lines_behind_a_runtime_tag_and_the_strict_readers_do_not() -> None:
    [line] = trainer_progress_lines(PROGRESS)
    tagged = "[1,0]<stdout>:" + line  # mpirun --tag-output
    assert parse_line(tagged) is None
    assert parse_line(tagged, anywhere=True) == parse_line(line)
    assert read_log(tagged).progress is not None
    with pytest.raises(Refused):
        parse_report(json.dumps({"namespace": "ml", "name": "job", "lines": [tagged]}).encode(), 10)


@pytest.mark.parametrize(
    "line",
    [
        "kubetune.progress {not json",
        "kubetune.progress [1, 2]",
        'kubetune.stage "export"',
        "kubetune.progress",
        "Epoch 1/3: loss 1.2",
        "",
    ],
)
def test_anything_else_is_not_a_protocol_line(line: str) -> None:
    assert parse_line(line) is None and parse_line(line, anywhere=True) is None
    assert read_log(line).progress is None


def test_the_newest_valid_progress_wins_and_broken_lines_are_skipped() -> None:
    older, newer = trainer_progress_lines(PROGRESS, PROGRESS.model_copy(update={"step": 130}))
    reading = read_log("\n".join([older, "kubetune.progress {broken", newer, "some other output"]))
    assert reading.progress is not None and reading.progress["step"] == 130
