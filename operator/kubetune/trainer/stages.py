"""Stage markers: one ``kubetune.stage {json}`` line when a stage starts, ends or fails.

The operator reads them from the pod log (the export stage's start switches the
FineTuneJob to phase Exporting); people read them to see where time went.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubetune.api.progressline import stage_line

from . import console
from .errors import TrainerError


def emit(stage: str, event: str, **fields: Any) -> None:
    """Print one stage line; flushed at once because the pod log is the transport."""
    console.write_line(stage_line(stage, event, **fields))


@contextmanager
def stage(name: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Wrap a stage: start line, then end (with the seconds taken and whatever the body
    put into the yielded dict) or failed (with the exit code and the reason)."""
    started = time.monotonic()
    extra: dict[str, Any] = {}
    emit(name, "start", **fields)
    try:
        yield extra
    except TrainerError as exc:
        emit(name, "failed", seconds=round(time.monotonic() - started, 3), exitCode=exc.exit_code, message=str(exc))
        raise
    except BaseException as exc:
        emit(name, "failed", seconds=round(time.monotonic() - started, 3), message=f"{type(exc).__name__}: {exc}")
        raise
    emit(name, "end", seconds=round(time.monotonic() - started, 3), **extra)
