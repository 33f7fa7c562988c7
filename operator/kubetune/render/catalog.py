"""The pinned LLaMA-Factory's argument names, types and templates, read from a committed JSON file.

Why not import LLaMA-Factory: it pulls in torch and transformers (seconds of
import, gigabytes of wheels) and the renderer must stay pure and fast.  The
file is generated from the very dataclasses ``get_train_args`` parses by
``tests/support/update_llamafactory_catalog.py``; a test fails when it is stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

CATALOG_FILE = "llamafactory_args.json"


@dataclass(frozen=True)
class ArgInfo:
    """One LLaMA-Factory training argument."""

    name: str
    type: str
    """``bool``, ``int``, ``float``, ``str``, ``bool_or_str`` or ``other`` (not settable from a scalar)."""
    choices: tuple[Any, ...] | None
    default: Any

    def accepts(self, value: object) -> bool:
        """Whether a scalar ``value`` has a type LLaMA-Factory's parser takes for this argument."""
        if self.choices is not None and value not in self.choices:
            return False
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.type == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.type == "str":
            return isinstance(value, str)
        if self.type == "bool_or_str":
            return isinstance(value, (bool, str))
        return False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        return {
            "bool": "true or false",
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool_or_str": "true, false or a string",
        }.get(self.type, "a value kubetune cannot pass as a scalar")


@dataclass(frozen=True)
class Catalog:
    version: str
    templates: tuple[str, ...]
    args: dict[str, ArgInfo]


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The catalog, parsed once per process."""
    raw: dict[str, Any] = json.loads(resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8"))
    args = {
        name: ArgInfo(
            name=name,
            type=str(info["type"]),
            choices=tuple(info["choices"]) if "choices" in info else None,
            default=info.get("default"),
        )
        for name, info in raw["args"].items()
    }
    return Catalog(version=str(raw["llamafactory"]), templates=tuple(raw["templates"]), args=args)
