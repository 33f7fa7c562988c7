"""Small filesystem helpers shared by the stages: atomic writes and cross-pod markers.

Outputs live on a shared volume that other pods read while this one writes,
and a pod can be killed at any instant, so nothing is ever written in place:
files go to a temporary name in the same folder and are renamed (atomic on
POSIX filesystems, including NFS-backed ReadWriteMany volumes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import Retryable


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[str]]:
    """Open a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text)


def wait_for(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 1.0,
) -> None:
    """Poll until ``ready()``; raise Retryable on timeout.

    Used by the processes that are not rank 0: a peer that never finishes is
    most likely gone (preempted), and a restart of the whole job is the cure.
    """
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if time.monotonic() >= deadline:
            raise Retryable(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
