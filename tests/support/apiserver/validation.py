"""What the Kubernetes API server would say about a FineTuneJob, from the CRD alone.

There is no cluster in CI, so this reproduces the API server's steps for a
custom resource, in its order, using only the generated CRD:

1. strict field validation (kubectl's default ``--validate=strict``): a field
   the schema does not declare is an error, except under
   ``x-kubernetes-preserve-unknown-fields``;
2. nulls in non-nullable fields are pruned (then defaulted like absent ones);
3. structural defaulting, top-down, recursing into defaulted values;
4. OpenAPI (draft 4) validation, with Go/RE2 regular-expression semantics;
5. every ``x-kubernetes-validations`` rule, evaluated with cel-python at its
   node with ``self`` bound there (only when the schema checks passed, as the
   values CEL sees are typed by the schema).  Transition rules (``oldSelf``)
   run only in :func:`transition_errors`.

It deliberately imports nothing from ``kubetune.api`` except the CRD, so the
agreement tests compare two independent verdicts.  The tests take the schema
from ``crd.install(crd())`` (tests/support/apiserver/crd.py), which first makes the checks the API server
makes when the CRD itself is created (a refused CRD serves no objects at all).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

Schema = dict[str, Any]
PRESERVE = "x-kubernetes-preserve-unknown-fields"
RULES = "x-kubernetes-validations"


def re2(pattern: str) -> str:
    """Translate a Go/RE2 pattern to Python: ``$`` outside a class means end of text (``\\Z``).

    Python's ``$`` also matches before a trailing newline, so ``"qwen\\n"``
    would pass ``^[a-z]+$`` in Python but not in the API server.
    """
    out, in_class, escaped = [], False, False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif ch == "$" and not in_class:
            out.append(r"\Z")
        else:
            out.append(ch)
    return "".join(out)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Schema) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not re.search(re2(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _pattern})


# --- steps 1-3 ------------------------------------------------------------------


def unknown_fields(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Paths of fields the schema does not declare (strict field validation)."""
    if schema.get(PRESERVE) or path == ".metadata":
        return []
    found: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                found += unknown_fields(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(sub, extra, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def pruned(value: Any, schema: Schema) -> Any:
    """pkg/apiserver/schema/pruning/algorithm.go: drop fields the schema does not declare (what the
    API server stores of a custom resource, and what crd.py requires of every default)."""
    if schema.get(PRESERVE) and "properties" not in schema and not isinstance(schema.get("additionalProperties"), dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if key in props:
                out[key] = pruned(item, props[key])
            elif isinstance(extra, dict):
                out[key] = pruned(item, extra)
            elif extra is True or schema.get(PRESERVE):
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [pruned(v, schema["items"]) for v in value]
    return value


def prune_nulls(value: Any, schema: Schema) -> None:
    """Drop nulls of non-nullable fields in place (the server's PruneNonNullableNullsWithoutDefaults + defaulting)."""
    if schema.get(PRESERVE):
        return
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is None:
                continue
            if value[key] is None and not sub.get("nullable") and not sub.get(PRESERVE):
                del value[key]
            else:
                prune_nulls(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            prune_nulls(item, schema["items"])


def apply_defaults(value: Any, schema: Schema) -> None:
    """Structural defaulting in place: absent fields take their default, then defaults recurse into them."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                apply_defaults(item, props[key])
            elif isinstance(extra, dict):
                apply_defaults(item, extra)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])


def schema_errors(value: Any, schema: Schema) -> list[str]:
    """OpenAPI errors as "path: message"; a missing required field is reported at its own path."""
    errors = []
    for e in _Validator(schema).iter_errors(value):
        path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in e.absolute_path)
        missing = re.match(r"'([^']+)' is a required property", e.message) if e.validator == "required" else None
        errors.append(f"{path}.{missing[1]}: {e.message}" if missing else f"{path}: {e.message}")
    return errors


# --- step 5: CEL ------------------------------------------------------------------

_ENV = celpy.Environment()


def _matches(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.BoolType:
    """CEL ``matches`` with RE2 semantics (partial match, ``$`` = end of text)."""
    return celtypes.BoolType(re.search(re2(str(pattern)), str(text)) is not None)


def is_transition(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


@functools.lru_cache(maxsize=None)
def compile_rule(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule), functions={"matches": _matches})


def cel_visible(schema: Schema) -> bool:
    """Whether CEL can see a field at all: the API server declares no CEL type for
    untyped preserve-unknown data, nor for a map of such values."""
    if not schema.get("type"):
        return False
    extra = schema.get("additionalProperties")
    return not isinstance(extra, dict) or cel_visible(extra)


def to_cel(value: Any, schema: Schema) -> Any:
    """A JSON value as the API server hands it to CEL: typed by the schema (a ``number`` is a double)."""
    kind = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        fields = {k: props.get(k, extra if isinstance(extra, dict) else {}) for k in value}
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(value[k], sub) for k, sub in fields.items() if cel_visible(sub)}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    return celpy.json_to_cel(value)


def holds(rule: str, activation: dict[str, Any]) -> bool:
    try:
        result = compile_rule(rule).evaluate(activation)
    except celpy.CELEvalError:
        return False  # an evaluation error rejects the object, as in the API server
    return isinstance(result, celtypes.BoolType) and bool(result)


def nodes(value: Any, schema: Schema, path: str = "") -> Iterator[tuple[str, Any, Schema]]:
    """Every (path, value, schema) pair, top-down, skipping unknown and preserved subtrees."""
    for keys, node, sub in keyed_nodes(value, schema):
        yield path + _path(keys), node, sub


def keyed_nodes(
    value: Any, schema: Schema, keys: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, Schema]]:
    """``nodes`` with each node's location as its keys (a map key may hold dots, "example.com/x":
    a dotted string cannot be split back into keys)."""
    yield keys, value, schema
    if schema.get(PRESERVE) and "properties" not in schema:
        return
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from keyed_nodes(item, sub, (*keys, key))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from keyed_nodes(item, schema["items"], (*keys, i))


def _path(keys: tuple[str | int, ...]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)


def with_object_meta(schema: Schema) -> Schema:
    """The root as CEL sees it: apiVersion, kind, metadata.name and metadata.generateName are
    always declared (the API server's WithTypeAndObjectMeta), whatever the schema says."""
    string = {"type": "string"}
    meta = {"type": "object", "properties": {"name": string, "generateName": string}}
    return {**schema, "properties": {**schema.get("properties", {}), "metadata": meta}}


def cel_errors(value: Any, schema: Schema, old: Any = None) -> list[str]:
    """Errors of every ``x-kubernetes-validations`` rule without ``oldSelf``, each at its node.

    With ``old`` (an update), validation ratcheting, GA since 1.33 (apiextensions-apiserver
    pkg/features/kube_features.go 70-74, pkg/apiserver/schema/cel/validation.go 237-242 and 468): a
    rule on a node equal to the old object's is not held against the update, so it is not evaluated
    (the stored object passed it).  Nodes are correlated through object fields only; list items are
    always evaluated.
    """
    errors = []
    for keys, node, sub in keyed_nodes(value, with_object_meta(schema)):
        path = _path(keys)
        rules = [r for r in sub.get(RULES, []) if not is_transition(r["rule"])]
        if not rules:
            continue
        if old is not None and keys:
            # walked key by key: a map key such as "example.com/x" is one key, and ratcheting
            # correlates a map's entries by key (the correlation cited above)
            previous: Any = old
            for key in keys:
                previous = previous.get(key) if isinstance(previous, dict) and isinstance(key, str) else None
            if previous == node:
                continue
        activation = {"self": to_cel(node, sub)}
        for entry in rules:
            if not holds(entry["rule"], activation):
                errors.append(f"{path}{entry.get('fieldPath', '')}: {entry['message']}")
    return errors


def admitted(obj: dict[str, Any], schema: Schema) -> tuple[dict[str, Any], list[str]]:
    """The object as stored (unknown fields pruned, nulls dropped, defaulted) and the API server's errors
    for a create with ``fieldValidation=Strict`` (unknown fields are errors; without Strict the server
    prunes them and only warns)."""
    errors = [f"{p}: unknown field" for p in unknown_fields(obj, schema)]
    # apiVersion, kind and metadata at the root are never pruned (pruning/algorithm.go isResourceRoot,
    # as emulator._admit_cr keeps them)
    root = ("apiVersion", "kind", "metadata")
    stored = pruned({k: v for k, v in copy.deepcopy(obj).items() if k not in root}, schema)
    stored.update({k: copy.deepcopy(obj[k]) for k in root if k in obj})
    prune_nulls(stored, schema)
    apply_defaults(stored, schema)
    structural = schema_errors(stored, schema)
    errors += structural
    if not structural:
        errors += cel_errors(stored, schema)
    return stored, errors


def transition_errors(new: dict[str, Any], old: dict[str, Any], schema: Schema) -> list[str]:
    """Transition-rule errors of an update from ``old`` to ``new`` (both already admitted).

    A transition rule runs where the node exists in both objects; this walks
    ``new`` and finds the same path in ``old`` (objects only, which is all the
    FineTuneJob's transition rules need).
    """
    errors = []
    for keys, node, sub in keyed_nodes(new, with_object_meta(schema)):
        path = _path(keys)
        rules = [r for r in sub.get(RULES, []) if is_transition(r["rule"])]
        if not rules:
            continue
        old_node: Any = old
        for key in keys:
            old_node = old_node.get(key) if isinstance(old_node, dict) and isinstance(key, str) else None
        if old_node is None:
            continue
        activation = {"self": to_cel(node, sub), "oldSelf": to_cel(old_node, sub)}
        for entry in rules:
            if not holds(entry["rule"], activation):
                errors.append(f"{path}{entry.get('fieldPath', '')}: {entry['message']}")
    return errors
