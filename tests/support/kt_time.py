"""Convergence deadlines that scale with the machine.

A test waits for something to converge (an operator to react, a server to start, a training to
report) up to a deadline; the deadline is generous on an idle 2-core machine, never a performance
assertion. On a slower or busier machine, set ``KUBETUNE_TEST_TIME_FACTOR`` (default 1; e.g. 3 when
another CPU-heavy job shares the cores): every deadline written with :func:`scaled`, every
``eventually`` of the controller tests, and every pytest-timeout limit (tests/conftest.py) is
multiplied by it. docs/CONTRIBUTING.md says the same.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

ENV = "KUBETUNE_TEST_TIME_FACTOR"


def time_factor() -> float:
    raw = os.environ.get(ENV, "1")
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: give a number >= 1 (e.g. 3 on a busy machine)") from None
    if not factor >= 1:
        raise ValueError(f"{ENV}={raw!r}: give a number >= 1 (deadlines only grow)")
    return factor


def scaled(seconds: float) -> float:
    """A convergence deadline of ``seconds`` on an idle CI machine, scaled by KUBETUNE_TEST_TIME_FACTOR."""
    return seconds * time_factor()


class ForwardClock:
    """Wall-clock time (epoch seconds) that a test moves forward instead of sleeping: pass it where
    the code under test takes a clock (kubetune.controller.kube.load_connection's ``clock``, the
    emulator's ``Tokens``), then ``advance`` past an expiry.  A process that shares it (the tests'
    exec plugin, the token issuer) reads the offset from ``offset_file``.  Code that reads its own
    clock (kopf's credentials vault) still sees real time."""

    def __init__(self, offset_file: Path | None = None) -> None:
        self.offset = 0.0
        self.offset_file = offset_file
        self._write()

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self._write()

    def _write(self) -> None:
        if self.offset_file is not None:
            self.offset_file.write_text(repr(self.offset), encoding="utf-8")


def stop_process(process: "subprocess.Popen[Any]") -> None:
    """Stop a test server (moto, Azurite): SIGTERM, a scaled 10 s to exit, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
