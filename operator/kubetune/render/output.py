"""Rendered objects as text, the way ``kubetune render`` prints them for GitOps repositories.

Why a custom dumper: the ConfigMap carries whole files (train.yaml, ds_config.json,
...). Dumped as quoted one-line strings they are unreadable in a pull request;
as literal blocks (``|``) they read like the files themselves, and review diffs
stay line by line.  The golden files in tests/ use this same function, so what a
user commits is exactly what the tests pin.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class _ReadableDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, one ``---`` document per object."""
    text: str = yaml.dump_all(
        objects, Dumper=_ReadableDumper, sort_keys=False, explicit_start=True, allow_unicode=True, width=120
    )
    return text


def to_json(objects: list[dict[str, Any]]) -> str:
    """One object as a JSON document, several as a JSON list (``kubectl apply -f`` reads both)."""
    return json.dumps(objects[0] if len(objects) == 1 else objects, indent=2) + "\n"
