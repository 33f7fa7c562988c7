"""Work that the pytest-xdist workers of one run do once between them (.ci/test runs two).

A session fixture runs once per worker process.  Where its result is a folder that the first worker
can build and the others can copy or reuse, :func:`run_shared` gives every worker the same folder
of this run, one worker at a time: pytest-xdist makes each worker's basetemp ``<run basetemp>/<gw
name>`` (xdist/workermanage.py:340-341 @3.8.0), so the parent of a worker's basetemp is this run's,
and a later run gets a new one.  Without xdist it is this session's own basetemp.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def run_shared(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """``<run basetemp>/<name>``, created on first use, held under an exclusive lock until the block ends."""
    base = factory.getbasetemp()
    # An xdist worker's basetemp is named after it (popen-gw0 ...); a nested pytest that merely inherits
    # PYTEST_XDIST_WORKER has its own, whose parent outlives the run: it shares nothing.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = base.parent if worker and base.name == f"popen-{worker}" else base
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        folder = root / name
        folder.mkdir(exist_ok=True)
        yield folder
