"""Running a training child process, streaming its output, and classifying how it ended.

The child (``llamafactory-cli train`` -> torchrun -> workers, or ``accelerate
launch``) runs in its own process group so that a SIGTERM to the pod
(preemption, node drain, ``kubectl delete``) reaches every worker, and a
worker that hangs is killed after a grace period.  Its output is copied to
ours line by line (the pod log) while the last part is kept to decide the
exit code: the same ``exit 1`` means "out of memory, do not retry" or "peer
lost, retry" depending on what the workers printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from kubetune.api import contract

from . import console
from .errors import ConfigError, DataError, Retryable, TrainerError, TrainingFailed

TAIL_BYTES = 64 * 1024
TERM_GRACE_SECONDS = 30.0
"""Default wait for the stop checkpoint (the pod's grace period is rendered into the environment)."""
KILL_AFTER_TERM_SECONDS = 10.0

# Order matters: the first match decides.  A crash that is certain to repeat
# wins over network noise printed while the other ranks go down.
_PATTERNS: tuple[tuple[re.Pattern[str], type[TrainerError], str], ...] = (
    (
        re.compile(r"out of memory|OutOfMemoryError", re.I),
        TrainingFailed,
        "out of memory: lower perDeviceBatchSize or cutoffLength, or use more GPUs/ZeRO",
    ),
    (
        re.compile(r"Cannot find valid samples|Dropped invalid example|File .* not found", re.I),
        DataError,
        "LLaMA-Factory rejected the data",
    ),
    (
        re.compile(
            r"keys are not used by the HfArgumentParser|Please use "
            r"`FORCE_TORCHRUN|ValueError: (Please|Cannot|Only|Unknown)",
            re.I,
        ),
        ConfigError,
        "LLaMA-Factory rejected the arguments",
    ),
    (
        re.compile(
            r"NCCL|DistNetworkError|DistStoreError|rendezvous|RendezvousError|TCPStore|Connection "
            r"(reset|refused|closed)|Broken pipe|Gloo|timed out|Timeout|Signal "
            r"15|SIGTERM|Signal 9|SIGKILL|exitcode\s*:\s*-\d+",
            re.I,
        ),
        Retryable,
        "distributed communication failed or a worker was killed",
    ),
)


def classify(returncode: int, output_tail: str) -> TrainerError:
    """The error a failed training child stands for (see :mod:`kubetune.trainer` for codes)."""
    if returncode < 0:
        return Retryable(f"training process killed by signal {-returncode}")
    for pattern, kind, summary in _PATTERNS:
        match = pattern.search(output_tail)
        if match:
            line = next((ln for ln in output_tail.splitlines() if match.group(0) in ln), match.group(0))
            return kind(f"{summary} (exit {returncode}): {line.strip()[:500]}")
    last = [ln for ln in output_tail.splitlines() if ln.strip()][-1:] or [""]
    return TrainingFailed(f"training exited with {returncode}: {last[0].strip()[:500]}")


def stop_grace(env: Mapping[str, str]) -> float:
    """Seconds to wait for the stop checkpoint after a SIGTERM (rendered from terminationGracePeriodSeconds)."""
    try:
        return max(5.0, float(env.get(contract.ENV_STOP_GRACE, "")))
    except ValueError:
        return TERM_GRACE_SECONDS


UPLOAD_SPLIT_MIN_WINDOW_S = 20.0
"""The smallest stop window W that is split between the stop checkpoint and its upload."""


def stop_budgets(env: Mapping[str, str], *, uploading: bool) -> tuple[float, float]:
    """(seconds the training child gets to save its stop checkpoint, seconds after the SIGTERM by
    which everything before the run record must be done).

    The renderer sets KUBETUNE_STOP_GRACE_SECONDS to W = terminationGracePeriodSeconds - 15
    (kubetune.render.podspec.environment, contract.STOP_GRACE_MARGIN_SECONDS): the last 15 s of
    the grace period belong to the run record and the final progress report (push.TIMEOUT_S + 1).
    Without spec.storage.outputs.uri the child gets all of W.  With it, the stop checkpoint must
    also reach the bucket (kubetune.trainer.objectstore.CheckpointUploader.stop) before W ends,
    so the child gets C = max(5, (W - KILL_AFTER_TERM_SECONDS) / 2): a child still running after
    C gets SIGTERM, and SIGKILL KILL_AFTER_TERM_SECONDS later, so it is gone by C + 10 <= W - C
    (for W >= 20), and the final upload has at least W - C - 10 s, and all of what the
    checkpoint did not use: its deadline is SIGTERM + W, counted from the signal, not from the
    child's end.  Default grace 300 s: W = 285, C = 137.5, the upload gets >= 137.5 s.

    Below W = 20 (a grace period under 35 s) the split would leave the child 5 s, often less than
    one step: the stop checkpoint on the volume, which the restart resumes from, matters more than
    a copy in the bucket (the restarted job uploads its checkpoints again), so the child gets all
    of W and the final upload only what the child leaves."""
    window = stop_grace(env)
    if not uploading or window < UPLOAD_SPLIT_MIN_WINDOW_S:
        return window, window
    return max(5.0, (window - KILL_AFTER_TERM_SECONDS) / 2), window


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A stop request the trainer already ignores, caught only while a child starts (see Child.run)."""


class Child:
    """One training child in its own session; a SIGTERM becomes a checkpoint, then a stop.

    On SIGTERM the child is not signalled at once: the stop file appears, every
    training process saves a checkpoint at the end of its current step and exits
    (kubetune.trainer.worker).  Only a child still running ``stop_grace``
    seconds later gets SIGTERM, and SIGKILL after that.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stop_file: Path | None = None,
        stop_grace: float = TERM_GRACE_SECONDS,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.stop_file = stop_file
        self.stop_grace = stop_grace
        if stop_file is not None:
            from .worker import ENV_STOP_FILE  # noqa: PLC0415 - light module, no heavy imports at top

            self.env[ENV_STOP_FILE] = str(stop_file)
        self.terminated = False
        self.stopped_at: float | None = None
        self.aborted = False
        self.tail = b""
        self._proc: subprocess.Popen[bytes] | None = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if self.terminated:
            return
        self.terminated = True
        self.stopped_at = time.monotonic()
        self._request_stop()

    def abort(self) -> None:
        """Stop the training as a SIGTERM would (a checkpoint at the end of the current step, then
        exit), from any thread, because something else failed for good (a permanent upload error:
        kubetune.trainer.objectstore.CheckpointUploader).  The caller raises that failure."""
        if self.terminated or self.aborted:
            return
        self.aborted = True
        self._request_stop()

    def _watch(self, abort: threading.Event) -> None:
        while self._proc is not None and self._proc.poll() is None:
            if abort.wait(0.5):
                self.abort()
                return

    def _request_stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        grace = self.stop_grace
        if self.stop_file is not None:
            try:
                self.stop_file.write_text("stop\n", encoding="utf-8")
            except OSError:
                grace = 0.0
        else:
            grace = 0.0
        threading.Thread(target=self._stop, args=(grace,), daemon=True).start()

    def _wait(self, seconds: float) -> bool:
        proc = self._proc
        deadline = time.monotonic() + seconds
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return proc is None or proc.poll() is not None

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def _stop(self, grace: float) -> None:
        if self._wait(grace):
            return
        self._signal(signal.SIGTERM)
        if not self._wait(KILL_AFTER_TERM_SECONDS):
            self._signal(signal.SIGKILL)

    def run(self, abort: threading.Event | None = None) -> None:
        """Run to the end; raise the classified TrainerError unless it exits 0.  ``abort``, once
        set, stops the training as :meth:`abort` does."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
        # A stop request the trainer ignores (trainer.main.ignore_stop_requests: one was taken already)
        # must not stay ignored in the child: SIG_IGN survives fork and exec, and Python's subprocess
        # resets only SIGPIPE, SIGXFZ and SIGXFSZ (restore_signals: the list at Lib/subprocess.py:1710-1713,
        # CPython 3.11 here; the fork path's C code was not read: tests/trainer/test_launch.py shows it), so the child
        # would ignore the SIGTERM of _stop and live on until the SIGKILL. While it starts, those signals get a Python
        # handler that does nothing (exec sets a caught signal back to its default action); then they are ignored again.
        ignored = (
            [s for s in (signal.SIGTERM, signal.SIGUSR1) if signal.getsignal(s) == signal.SIG_IGN] if in_main else []
        )
        for s in ignored:
            signal.signal(s, _ignore)
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ConfigError(f"cannot start {self.argv[0]!r}: not installed in this image") from None
        finally:
            for s in ignored:
                signal.signal(s, signal.SIG_IGN)
        for s in previous:
            signal.signal(s, self._forward)
        if abort is not None:
            threading.Thread(target=self._watch, args=(abort,), name="kubetune-abort-watch", daemon=True).start()
        try:
            assert self._proc.stdout is not None
            fd = self._proc.stdout.fileno()
            for chunk in iter(lambda: os.read(fd, 65536), b""):
                console.write_raw(chunk)
                self.tail = (self.tail + chunk)[-TAIL_BYTES:]
            code = self._proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.terminated:
            err = Retryable(
                "received SIGTERM (preemption or deletion): stopped training; "
                "a restart resumes from the newest checkpoint"
            )
            err.stopped_at = self.stopped_at
            raise err
        if self.aborted:
            raise Retryable("training stopped at the caller's request")  # the caller raises the reason instead
        if code != 0:
            raise classify(code, self.tail.decode("utf-8", "replace"))
