"""Jinja2 manifests where no value can inject YAML.

Why: a FineTuneJob carries user strings (env values, affinity, extraArgs) that
end up in Kubernetes manifests.  Every ``{{ expression }}`` in a template is
passed through :func:`to_flow`, which writes it as one JSON-style flow node
(strings double-quoted and escaped), so a value with quotes, newlines, ``: ``
or ``{{ }}`` can only ever become that same string again.  Undefined names
raise (StrictUndefined) instead of rendering as empty.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import jinja2
import yaml

# Characters PyYAML's reader refuses in a stream, plus the ones YAML treats as
# line breaks (NEL, LS, PS) and would fold; JSON leaves all of them raw.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _string(value: str) -> str:
    # ensure_ascii=False keeps astral characters whole (PyYAML does not join
    # JSON surrogate pairs); the remaining non-printables get YAML escapes.
    return _NON_PRINTABLE.sub(_escape_char, json.dumps(value, ensure_ascii=False))


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    # YAML 1.1 (PyYAML) reads 1e-05 as a string; 1.0e-05 is a float.
    if "e" in text and "." not in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def to_flow(value: Any) -> str:
    """Serialise a JSON-like value as a single YAML flow node that parses back to itself."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))}: {to_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_flow(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__} into a manifest")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kubetune.render", "templates"),
        undefined=jinja2.StrictUndefined,
        finalize=to_flow,
        autoescape=False,  # noqa: S701 - output is YAML, escaped by finalize, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render_manifest(template: str, **context: Any) -> dict[str, Any]:
    """Render ``templates/<template>`` and parse it back into one object."""
    text = environment().get_template(template).render(**context)
    obj = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    if not isinstance(obj, dict):
        raise ValueError(f"template {template} did not produce a mapping")
    return obj
