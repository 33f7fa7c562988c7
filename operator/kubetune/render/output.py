"""Rendered objects as text, the way ``kubetune render`` prints them for GitOps repositories.

Why a custom dumper: the ConfigMap carries whole files (train.yaml, ds_config.json,
...). Dumped as quoted one-line strings they are unreadable in a pull request;
as literal blocks (``|``) they read like the files themselves, and review diffs
stay line by line.  Strings that a YAML 1.1 reader (go-yaml v2 in kubectl
and Argo CD) would take for a number, boolean or null - a job named ``1e5``,
``y`` or ``on`` - are quoted (:mod:`kubetune.api.yamldump`).  The golden files in tests/ use this same function, so what
a user commits is exactly what the tests pin.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kubetune.api.yamldump import ReadableDumper


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, one ``---`` document per object."""
    text: str = yaml.dump_all(
        objects, Dumper=ReadableDumper, sort_keys=False, explicit_start=True, allow_unicode=True, width=120
    )
    return text


def to_json(objects: list[dict[str, Any]]) -> str:
    """One object as a JSON document, several as a JSON list (``kubectl apply -f`` reads both)."""
    return json.dumps(objects[0] if len(objects) == 1 else objects, indent=2) + "\n"
