"""Jinja2 manifests where no value can inject structure.

Why: a FineTuneJob carries user strings (env values, affinity, extraArgs) that
end up in Kubernetes manifests.  The templates are JSON documents (JSON is
YAML, and the API server's own wire format), and every ``{{ expression }}`` is
passed through ``json.dumps`` by the environment's ``finalize``: a value with
quotes, newlines, ``: `` or ``{{ }}`` can only ever become that same string
again.  Undefined names raise (StrictUndefined) instead of rendering as empty.
JSON also parses in C, which keeps a render well under a few milliseconds.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def to_json(value: Any) -> str:
    """The finalize hook: every interpolated value becomes one JSON value."""
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Built on first use: importing Jinja2 costs ~0.1 s that ``kubetune validate`` / ``--help`` never need."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kubetune.render", "templates"),
        undefined=jinja2.StrictUndefined,
        finalize=to_json,
        autoescape=False,  # noqa: S701 - output is JSON, escaped by finalize, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates ship with the package: no stat() per render
    )


def render_manifest(template: str, **context: Any) -> dict[str, Any]:
    """Render ``templates/<template>`` and parse it back into one object."""
    text = environment().get_template(template).render(**context)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:  # a template bug, never a value: values are JSON-encoded
        raise ValueError(f"template {template} produced invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"template {template} did not produce an object")
    return obj
