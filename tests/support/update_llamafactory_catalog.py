"""Regenerate ``operator/kubetune/render/llamafactory_args.json`` from the installed LLaMA-Factory.

Why a committed catalog: the renderer and ``kubetune validate`` must check
``spec.extraArgs`` and ``spec.model.template`` without importing LLaMA-Factory
(which pulls in torch).  The catalog is read from the very dataclasses
``llamafactory.hparams.get_train_args`` parses, so it cannot drift from the
pinned version; ``tests/render/test_llamafactory.py`` (test_catalog_is_current) fails when it is stale.

Usage: ``.venv/bin/python -m tests.support.update_llamafactory_catalog [--check]``
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).resolve().parents[2] / "operator" / "kubetune" / "render" / "llamafactory_args.json"


def _kind(tp: Any) -> tuple[str, list[Any] | None]:
    """Reduce a dataclass field type to one of bool/int/float/str/other (+ allowed choices)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        kinds = {_kind(a)[0] for a in args}
        if len(kinds) == 1:
            return kinds.pop(), None
        if kinds <= {"bool", "str"}:  # e.g. Union[bool, str] -> accepts both
            return "bool_or_str", None
        if kinds <= {"int", "float"}:
            return "float", None
        return "str" if "str" in kinds else "other", None
    if origin is typing.Literal:
        choices = list(typing.get_args(tp))
        first = type(choices[0]).__name__ if choices else "str"
        return first, choices
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "str", [m.value for m in tp]
    if tp is bool:
        return "bool", None
    if tp is int:
        return "int", None
    if tp is float:
        return "float", None
    if tp is str:
        return "str", None
    return "other", None


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None  # factories, objects: no scalar default worth recording


def build() -> dict[str, Any]:
    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import parser as lf_parser

    args: dict[str, Any] = {}
    for cls in lf_parser._TRAIN_ARGS:  # the exact dataclasses get_train_args parses
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in args:
                continue
            kind, choices = _kind(hints[f.name])
            default = None if f.default is dataclasses.MISSING else _json_default(f.default)
            entry: dict[str, Any] = {"type": kind, "group": cls.__name__}
            if choices is not None:
                entry["choices"] = [_json_default(c) for c in choices]
            if default is not None:
                entry["default"] = default
            args[f.name] = entry
    return {
        "llamafactory": llamafactory.__version__,
        "templates": sorted(TEMPLATES),
        "args": dict(sorted(args.items())),
    }


def render_text(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


def main() -> int:
    text = render_text(build())
    if "--check" in sys.argv:
        current = CATALOG.read_text(encoding="utf-8") if CATALOG.exists() else ""
        if current != text:
            print(f"{CATALOG} is stale: run python -m tests.support.update_llamafactory_catalog", file=sys.stderr)
            return 1
        return 0
    CATALOG.write_text(text, encoding="utf-8")
    print(f"wrote {CATALOG} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
