"""Training progress: LLaMA-Factory's ``trainer_log.jsonl`` in, ``kubetune.progress`` lines out.

LLaMA-Factory appends one JSON object per logging step to
``<output_dir>/trainer_log.jsonl`` (``current_steps``, ``total_steps``,
``loss``, ``lr``, ``epoch``, ``percentage``, ``remaining_time``).  A
:class:`LogFollower` thread tails that file while training runs and hands each
update to a :class:`ProgressSink`.  The real sink prints
``kubetune.progress {json}`` (``api.progressline``) on rank 0: the operator reads that stdout
line from the pod log, and when the pod was rendered with an intake URL
``push`` also POSTs it to the operator (with a token the API server refuses).
``kubetune run --local`` feeds the same lines to a progress bar.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kubetune.api import Progress
from kubetune.api.status import percent_of, progress_summary
from kubetune.api.progressline import progress_line

from . import console
from .record import now as utc_now

TRAINER_LOG = "trainer_log.jsonl"

_TIMEDELTA = re.compile(r"^(?:(?P<days>\d+) days?, )?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)(?:\.\d+)?$")


class ProgressSink(Protocol):
    """Where progress updates go (stdout on rank 0, a progress bar, a list in tests)."""

    def publish(self, progress: Progress) -> None: ...


class StdoutProgressSink:
    """Prints ``kubetune.progress {json}``: the line the operator reads from the pod log."""

    def __init__(self, write: Callable[[str], object] | None = None) -> None:
        self._write = write or console.write_line

    def publish(self, progress: Progress) -> None:
        self._write(progress_line(progress.to_api()))


def parse_duration(text: str) -> int | None:
    """Seconds in ``str(timedelta)`` form (``0:01:05``, ``1 day, 2:00:00``); None if unreadable."""
    match = _TIMEDELTA.match(text.strip())
    if not match:
        return None
    days = int(match["days"] or 0)
    return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"])


def progress_from_record(
    record: dict[str, Any], *, eta_seconds: int | None = None, now: str | None = None
) -> Progress | None:
    """One trainer_log.jsonl record as a Progress; None for records without a step count."""
    step = record.get("current_steps")
    total = record.get("total_steps")
    if not isinstance(step, int) or not isinstance(total, int) or total <= 0:
        return None
    step = min(max(step, 0), total)
    percent = percent_of(step, total)
    if eta_seconds is None and isinstance(record.get("remaining_time"), str):
        eta_seconds = parse_duration(record["remaining_time"])
    loss = record.get("loss")
    lr = record.get("lr")
    epoch = record.get("epoch")
    # LLaMA-Factory logs an evaluation during training as a record with eval_loss and no loss
    # (llamafactory/train/callbacks.py:270-300 @v0.9.5, LogCallback.on_log reads log_history[-1]).
    raw_eval = record.get("eval_loss")
    eval_loss = (
        float(raw_eval)
        if isinstance(raw_eval, (int, float)) and not isinstance(raw_eval, bool) and math.isfinite(raw_eval)
        else None
    )
    evaluated = eval_loss is not None
    return Progress(
        step=step,
        total_steps=total,
        percent=percent,
        epoch=float(epoch) if isinstance(epoch, (int, float)) and epoch >= 0 else None,
        loss=float(loss) if isinstance(loss, (int, float)) else None,
        learning_rate=float(lr) if isinstance(lr, (int, float)) else None,
        eval_loss=eval_loss,
        eval_step=step if evaluated else None,
        eta_seconds=max(eta_seconds, 0) if eta_seconds is not None else None,
        summary=progress_summary(step, total),
        updated_at=now or utc_now(),
    )


class ProgressTracker:
    """Turns a stream of log records into Progress updates.

    The ETA is our own: steps per second measured since this process first saw
    a step.  LLaMA-Factory's ``remaining_time`` divides by the time since *its*
    start, which after a resume counts the steps of the previous run as free
    and promises far too early an end; it is used only until two steps are seen.
    The last record of a run carries no loss; the last known loss is kept.  An evaluation during
    training (a record with eval_loss) is published even at a step already published, and the
    last evaluation is kept in later updates (evalLoss, evalStep), so a reader that sees only the
    newest line still has it.
    """

    def __init__(self, sink: ProgressSink, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._clock = clock
        self._first: tuple[int, float] | None = None
        self._loss: float | None = None
        self._lr: float | None = None
        self._eval: tuple[float | None, int | None] = (None, None)
        self.last: Progress | None = None

    def feed(self, record: dict[str, Any]) -> Progress | None:
        step = record.get("current_steps")
        total = record.get("total_steps")
        if not isinstance(step, int) or not isinstance(total, int):
            return None
        now = self._clock()
        eta: int | None = None
        if self._first is None:
            self._first = (step, now)
        elif step > self._first[0]:
            rate = (step - self._first[0]) / max(now - self._first[1], 1e-9)
            eta = int(round((total - step) / rate))
        progress = progress_from_record(record, eta_seconds=eta)
        if progress is None:
            return None
        if progress.loss is None and self._loss is not None:
            progress = progress.model_copy(update={"loss": self._loss})
        if progress.learning_rate is None and self._lr is not None:
            progress = progress.model_copy(update={"learning_rate": self._lr})
        if progress.eval_loss is None and self._eval[0] is not None:
            progress = progress.model_copy(update={"eval_loss": self._eval[0], "eval_step": self._eval[1]})
        self._loss, self._lr = progress.loss, progress.learning_rate
        self._eval = (progress.eval_loss, progress.eval_step)
        if (
            self.last is not None
            and progress.step == self.last.step
            and progress.loss == self.last.loss
            and progress.eval_step == self.last.eval_step
        ):
            return None
        self.last = progress
        self._sink.publish(progress)
        return progress


class LogFollower:
    """Tails ``trainer_log.jsonl`` in a background thread while training runs.

    Only complete lines are read (a half-written last line waits for the next
    poll); a file that shrinks (LLaMA-Factory deletes it when it starts over)
    is read again from the top.  Lines already there when following starts
    belong to an earlier attempt (a resumed run appends to the same file) and
    are skipped: they were published back then.
    """

    def __init__(self, path: Path, tracker: ProgressTracker, interval: float = 1.0) -> None:
        self.path = path
        self.tracker = tracker
        self.interval = interval
        self._offset = 0
        self._buffer = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubetune-progress", daemon=True)

    def start(self) -> LogFollower:
        try:
            self._offset = os.path.getsize(self.path)
        except OSError:
            self._offset = 0
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and read whatever the training wrote last."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return
        if size < self._offset:
            self._offset, self._buffer = 0, b""
        if size == self._offset:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read(size - self._offset)
        self._offset += len(chunk)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.tracker.feed(record)
