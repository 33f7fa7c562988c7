"""The pod log is a transport: protocol lines must start at the beginning of a line.

Training children print progress bars ending in ``\\r``, not ``\\n``; a
``kubetune.progress`` line written right after one would be glued to it and
the operator, which matches line prefixes, would miss it.  Everything the
trainer writes to stdout goes through here, under one lock, and a protocol
line is preceded by a newline whenever the last byte out was not one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

_lock = threading.Lock()
_at_line_start = True
_tap: Callable[[str], None] | None = None


def set_tap(tap: Callable[[str], None] | None) -> None:
    """Also hand every whole line to ``tap`` (rank 0's progress push, see ``push``); None: stop."""
    global _tap
    _tap = tap


def write_raw(data: bytes) -> None:
    """Pass a child's output through unchanged."""
    global _at_line_start
    if not data:
        return
    with _lock:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        _at_line_start = data.endswith(b"\n")


def write_line(text: str) -> None:
    """One whole line (a protocol line or a message), never glued to a partial line."""
    global _at_line_start
    with _lock:
        prefix = "" if _at_line_start else "\n"
        sys.stdout.write(prefix + text.rstrip("\n") + "\n")
        sys.stdout.flush()
        _at_line_start = True
    tap = _tap
    if tap is not None:
        try:
            tap(text.rstrip("\n"))
        except Exception:  # noqa: BLE001 - the push is best effort; stdout already has the line
            pass
