"""Parameter paths: what a dotted ``SweepParameter.path`` names in the FineTuneJob spec, and applying values.

Pure: reads the pydantic models of :mod:`kubetune.api.spec` (their API names, types and bounds), no I/O.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from kubetune.api.spec import IMMUTABLE_FIELDS, FineTuneJobSpec

SWEEPABLE_ROOTS: tuple[str, ...] = tuple(f for f in IMMUTABLE_FIELDS if f not in ("storage", "extraArgs", "datasets"))
"""Top-level spec fields whose scalars a sweep may vary.

A FineTuneJob's IMMUTABLE_FIELDS (kubetune.api.spec) are the settings fixed when a job is created:
each trial is a new FineTuneJob created with its values, so they are what a trial can vary.  Every
other field can change on a running FineTuneJob (suspend, scheduling, evaluation, env, image,
runPolicy, serve, ...): the operator (suspend a pruned trial) or a user may change them while the
trial runs, so the recorded value would not be the one the trial ran with, and evaluation must stay
the same for the trials' objective values to be comparable.  Out of the fixed fields, storage
(volumes), datasets (a list) and extraArgs (free-form, no schema) name no searchable scalar."""

ScalarKind = Literal["float", "int", "bool", "str"]


@dataclass(frozen=True)
class Leaf:
    """What a path names: a scalar field, its kind, bounds and allowed values."""

    path: str
    kind: ScalarKind
    choices: tuple[Any, ...] | None = None
    """The allowed values of a Literal field (e.g. training.scheduler)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


class PathError(ValueError):
    """A path that names no sweepable scalar; the message says why and what to do."""


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Optional/Annotated, with the Annotated metadata collected on the way."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            args = typing.get_args(annotation)
            annotation, metadata = args[0], metadata + list(args[1:])
            continue
        if origin in (Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) == 1:
                annotation = options[0]
                continue
        return annotation, metadata


def _leaf(path: str, annotation: Any, metadata: list[Any]) -> Leaf:
    origin = typing.get_origin(annotation)
    bounds: dict[str, Any] = {}
    for m in metadata + list(getattr(annotation, "__metadata__", ())):
        for item in getattr(m, "metadata", [m]):
            if isinstance(item, Ge):
                bounds["low"] = float(item.ge)  # type: ignore[arg-type]
            elif isinstance(item, Gt):
                bounds["low"], bounds["low_open"] = float(item.gt), True  # type: ignore[arg-type]
            elif isinstance(item, Le):
                bounds["high"] = float(item.le)  # type: ignore[arg-type]
            elif isinstance(item, Lt):
                bounds["high"], bounds["high_open"] = float(item.lt), True  # type: ignore[arg-type]
    if origin is Literal:
        choices = typing.get_args(annotation)
        kinds = {type(c) for c in choices}
        kind: ScalarKind = (
            "str" if kinds == {str} else "int" if kinds == {int} else "bool" if kinds == {bool} else "str"
        )
        return Leaf(path, kind, choices=choices)
    if annotation is bool:
        return Leaf(path, "bool", choices=(False, True))
    if annotation is int:
        return Leaf(path, "int", **bounds)
    if annotation is float:
        return Leaf(path, "float", **bounds)
    if annotation is str:
        return Leaf(path, "str")
    raise PathError(
        f"{path} is not a single value (a list, a map or a mix of types): "
        "a sweep varies one scalar field; name a field inside it"
    )


def resolve(path: str) -> Leaf:
    """The scalar field a dotted API path (``training.learningRate``) names in FineTuneJobSpec.

    Raises :class:`PathError` for an unknown path, a non-scalar one, or a field outside
    :data:`SWEEPABLE_ROOTS`."""
    parts = path.split(".")
    model: type[BaseModel] = FineTuneJobSpec
    walked: list[str] = []
    for i, part in enumerate(parts):
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        if part not in fields:
            where = ".".join(walked) or "the FineTuneJob spec"
            known = ", ".join(sorted(fields))
            raise PathError(f"{path}: {where} has no field {part!r} (fields: {known})")
        if i == 0 and part not in SWEEPABLE_ROOTS:
            raise PathError(
                f"{path}: spec.{part} can change on a running FineTuneJob (it is not fixed when the job is created), "
                "so a trial could run with another value than the one recorded; "
                f"search fields under {', '.join(SWEEPABLE_ROOTS)}"
            )
        walked.append(part)
        field = fields[part]
        inner, metadata = _unwrap(field.annotation)
        metadata += list(field.metadata)
        if i == len(parts) - 1:
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                raise PathError(
                    f"{path} is an object, not a value: name one of its fields "
                    f"({', '.join(sorted((f.alias or n) for n, f in inner.model_fields.items()))})"
                )
            return _leaf(path, inner, metadata)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            raise PathError(
                f"{path}: spec.{'.'.join(walked)} is a value, not an object: it has no field {parts[i + 1]!r}"
            )
        model = inner
    raise PathError(f"{path}: empty path")  # pragma: no cover - the pattern forbids it


def apply(spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a FineTuneJob spec dict (camelCase) with each ``path: value`` set, creating objects on the way."""
    out = copy.deepcopy(spec)
    for path, value in values.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return out
