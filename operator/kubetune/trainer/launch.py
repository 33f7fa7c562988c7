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
from types import FrameType

from . import console
from .errors import ConfigError, DataError, Retryable, TrainerError, TrainingFailed

TAIL_BYTES = 64 * 1024
TERM_GRACE_SECONDS = 30.0

# Order matters: the first match decides.  A crash that is certain to repeat
# wins over network noise printed while the other ranks go down.
_PATTERNS: tuple[tuple[re.Pattern[str], type[TrainerError], str], ...] = (
    (re.compile(r"out of memory|OutOfMemoryError", re.I), TrainingFailed, "out of memory: lower perDeviceBatchSize or cutoffLength, or use more GPUs/ZeRO"),
    (re.compile(r"Cannot find valid samples|Dropped invalid example|File .* not found", re.I), DataError, "LLaMA-Factory rejected the data"),
    (re.compile(r"keys are not used by the HfArgumentParser|Please use `FORCE_TORCHRUN|ValueError: (Please|Cannot|Only|Unknown)", re.I), ConfigError, "LLaMA-Factory rejected the arguments"),
    (
        re.compile(
            r"NCCL|DistNetworkError|DistStoreError|rendezvous|RendezvousError|TCPStore|Connection (reset|refused|closed)|"
            r"Broken pipe|Gloo|timed out|Timeout|Signal 15|SIGTERM|Signal 9|SIGKILL|exitcode\s*:\s*-\d+",
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


class Child:
    """One training child in its own session, with SIGTERM forwarding."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.terminated = False
        self.tail = b""
        self._proc: subprocess.Popen[bytes] | None = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.terminated = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            threading.Thread(target=self._kill_after_grace, daemon=True).start()

    def _kill_after_grace(self) -> None:
        proc = self._proc
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        """Run to the end; raise the classified TrainerError unless it exits 0."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
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
        for s in previous:
            signal.signal(s, self._forward)
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
            raise Retryable("received SIGTERM (preemption or deletion): stopped training; a restart resumes from the newest checkpoint")
        if code != 0:
            raise classify(code, self.tail.decode("utf-8", "replace"))
