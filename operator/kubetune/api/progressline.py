"""The progress-line format: how the trainer reports, and how everyone else reads it.

The trainer (rank 0 only) prints one line per update on stdout:

* ``kubetune.progress {json}``: a JSON object whose keys are those of
  :class:`kubetune.api.Progress` (camelCase: step, totalSteps, percent, epoch, loss,
  learningRate, evalLoss, evalStep, etaSeconds, updatedAt), compact;
* ``kubetune.stage {json}``: ``{"stage": "data", "event": "start"|"end"|"failed", ...}``,
  one line at the start and at the end of every trainer stage (the export stage's start is
  phase Exporting; the evaluate stage's end carries status.evaluation).

The operator reads the newest such lines from the rank-0 pod's log (pods/log) or receives
them pushed to its intake; ``kubetune run --local`` turns them into a progress display and
``kubetune plot`` into a loss curve.  Training pods hold no credential the API server
accepts, so a line can never change another job.

This module is the only place that writes (:func:`progress_line`, :func:`stage_line`) or
reads (:func:`parse_line`) the format; ``kubetune.api.contract`` re-exports the prefixes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

PROGRESS_PREFIX: Final = "kubetune.progress "
STAGE_PREFIX: Final = "kubetune.stage "
STAGE_EVENTS: Final = ("start", "end", "failed")

LineKind = Literal["progress", "stage"]
_PREFIXES: Final[tuple[tuple[LineKind, str], ...]] = (("progress", PROGRESS_PREFIX), ("stage", STAGE_PREFIX))


@dataclass(frozen=True)
class ProtocolLine:
    """One parsed line: which kind, and its JSON object (not yet validated as Progress)."""

    kind: LineKind
    data: dict[str, Any]


def progress_line(progress: Mapping[str, Any]) -> str:
    """The line for one progress update (``Progress.to_api()``), compact JSON."""
    return PROGRESS_PREFIX + json.dumps(dict(progress), separators=(",", ":"))


def stage_line(stage: str, event: str, **fields: Any) -> str:
    """The line for one stage event; extra fields (seconds, exitCode, message, evaluation) follow."""
    return STAGE_PREFIX + json.dumps({"stage": stage, "event": event, **fields}, default=str)


def line_kind(line: str) -> LineKind | None:
    """Which kind of protocol line ``line`` is (prefix at its start), without parsing the JSON."""
    for kind, prefix in _PREFIXES:
        if line.startswith(prefix):
            return kind
    return None


def parse_line(line: str, *, anywhere: bool = False) -> ProtocolLine | None:
    """The kind and JSON object of a protocol line, or None for any other line.

    ``anywhere``: the prefix may follow other text on the line (a log tail, where a runtime
    can put a tag such as mpirun's ``[1,0]<stdout>:`` in front); otherwise it must start the
    line (the trainer's own stdout, pushed reports).  A line whose JSON is broken or not an
    object is not a protocol line.
    """
    for kind, prefix in _PREFIXES:
        at = line.find(prefix) if anywhere else (0 if line.startswith(prefix) else -1)
        if at < 0:
            continue
        try:
            data = json.loads(line[at + len(prefix) :])
        except ValueError:
            continue
        if isinstance(data, dict):
            return ProtocolLine(kind, data)
    return None
