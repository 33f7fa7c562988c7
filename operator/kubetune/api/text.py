"""Text that is safe to print: control characters escaped, long values cut.

Every message kubetune prints may quote what a user (or an attacker) wrote: an
unknown key, an enum value, a file name.  Printed raw, an ESC sequence or a
newline in such a value can repaint the terminal or forge a whole line of
output (``job.yaml: FineTuneJob x is valid``).  So every message goes through
:func:`escape`, and every quoted value through :func:`show`, which also cuts a
100 KB value down to a few hundred characters and says how long it really was.
"""

from __future__ import annotations

import re
from typing import Any, Final

VALUE_LIMIT: Final = 200
"""Characters of a quoted value kept in a message."""
MESSAGE_LIMIT: Final = 2000
"""Characters of a whole message line kept."""

# C0 and C1 controls, DEL, and the format characters that reorder or hide text
# (bidi overrides, zero-width joiners, line/paragraph separators, BOM).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control or invisible formatting character written as an escape (``\\x1b``)."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape_char, text)


def clip(text: str, limit: int = VALUE_LIMIT) -> str:
    """Escaped ``text``, cut to ``limit`` characters with a note of its full length."""
    safe = escape(text)
    if len(safe) <= limit:
        return safe
    return f"{safe[:limit]}... ({len(text)} characters in all)"


def show(value: Any, limit: int = VALUE_LIMIT) -> str:
    """A value as a message quotes it: repr-like, escaped, bounded; containers summarised."""
    if isinstance(value, str):
        return "'" + clip(value, limit).replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else f"a number of {len(text)} digits"
    return clip(type(value).__name__, limit)


def line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One printable line: escaped (so no newline survives) and bounded."""
    return clip(text, limit)


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,59}")


def segment(key: str) -> str:
    """A mapping key as one segment of a field path: ``name``, or ``["odd key"]`` (escaped,
    bounded) when it is empty, long or holds characters that would blur the path."""
    if _PLAIN_SEGMENT.fullmatch(key):
        return key
    return '["' + clip(key.replace("\\", "\\\\").replace('"', '\\"'), 60) + '"]'


def join(path: str, key: str) -> str:
    """``path`` extended by the mapping key ``key``."""
    part = segment(key)
    if part.startswith("["):
        return path + part
    return f"{path}.{part}" if path else part
