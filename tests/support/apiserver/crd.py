"""What the Kubernetes API server checks when a CustomResourceDefinition is created.

A CRD the API server refuses installs nothing, whatever the tests of its
objects say; the first release learnt this on a real v1.36 server.  This
module reproduces the creation-time checks of apiextensions-apiserver, in its
order, so the test double refuses what the real server refuses.  Upstream
files followed (k8s.io/apiextensions-apiserver unless noted):

1. ``pkg/apis/apiextensions/validation/validation.go``
   (``ValidateCustomResourceDefinitionOpenAPISchema``): unknown and forbidden
   schema keywords (``$ref``, ``id``, ``definitions``, ``dependencies``,
   ``additionalItems``, ``patternProperties``, ``uniqueItems: true``, a list of
   ``items``, ``type: null``), ``properties`` with ``additionalProperties``,
   ``nullable`` at the root, the ``x-kubernetes-validations`` entries'
   ``rule``/``message``/``reason``/``fieldPath``;
2. ``pkg/apiserver/schema/validation.go`` (``ValidateStructural``): every node
   typed unless preserve-unknown or int-or-string, arrays have ``items``, no
   ``additionalProperties`` at the root, the root is an object whose ``kind``
   and ``apiVersion`` are strings and whose ``metadata`` says no more than
   ``type: object`` (and name/generateName);
3. ``pkg/apiserver/schema/defaulting/validation.go`` (``ValidateDefaults``):
   every ``default`` *as written* (nested defaults are NOT applied first) must be
   pruned (no unknown fields), valid against its node's schema, and then every
   CEL rule of the node and of the nodes inside the default is evaluated on
   it, with ``oldSelf`` bound to the default too (so transition rules run);
4. ``pkg/apiserver/schema/cel/compilation.go``: each rule compiles and type
   checks against the schema's CEL types (``k8s.io/apiserver pkg/cel/common/
   schemas.go`` ``SchemaDeclType``): a field the schema does not declare, or
   that CEL cannot see (untyped preserve-unknown data), is a compile error; a
   rule must return a bool; ``oldSelf`` is refused under a list that is not a
   ``map`` list;
5. the static cost estimate (``cel-go checker/cost.go`` with the size
   estimator of ``compilation.go``, cardinality from
   ``validation/cel_validation.go``): a rule's estimated cost times the number
   of times its node can occur must stay within ``StaticEstimatedCostLimit``
   (10,000,000) and the sum over the CRD within ``StaticEstimatedCRDCostLimit``
   (100,000,000).

How the cost estimate differs from upstream: cel-python gives a parse tree,
not cel-go's checked AST, so this walks the parse tree and applies cel-go's
cost formulas (``functionCost``, ``costComprehension``, ``costSelect``,
``sizeEstimator.EstimateSize``) for the constructs it knows, and gets the
same MaxCost as upstream on the cases of upstream's ``TestCostEstimation``
(compilation_test.go) that use them (tests/api/test_crd_creation.py):
literals, identifiers, field selection, ``has()``, ``!``, ``&&``/``||``,
``?:``, comparisons and ``==``/``!=`` (size-based, factor 0.1), ``in`` (list
size), ``+`` (numbers 1; strings by result size), ``size()``, ``startsWith``/
``endsWith``/``contains``/``matches`` (cel-go's string and regex factors) and
the ``all``/``exists``/``exists_one`` macros (their expansion into
comprehensions, counted as cel-go counts them).  Types are inferred only as
far as these need (e.g. ``<`` on two non-strings costs 1, as cel-go's int and
double overloads do).  Any other construct (other functions, ``map``/
``filter``, indexing, map literals, messageExpression) is reported as "not
emulated" and the CRD is refused here, so an estimate is never silently low.  Sizes follow ``SchemaDeclType``:
``maxLength`` x 4, the longest enum value, else the 3 MiB request limit; lists and maps use
``maxItems``/``maxProperties``, else 3 MiB divided by the element's minimum serialized size.

What is NOT emulated: names/group/versions/conversion/printer-column checks
(``ValidateCustomResourceDefinitionSpec``), ``x-kubernetes-list-type`` and
``list-map-keys`` rules beyond the oldSelf correlation, ``x-kubernetes-embedded-
resource`` defaults inside metadata, ``format`` warnings, ratcheting,
messageExpression, the runtime per-call CEL cost limit while defaults are
evaluated, and Go RE2 compilation of ``pattern`` (validation.py translates RE2's
``$``; look-arounds are refused by tests/api/test_crd.py).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

import celpy
from lark import Token, Tree

from celpy import celtypes

from tests.support.apiserver.validation import (
    PRESERVE,
    RULES,
    compile_rule,
    is_transition,
    nodes,
    pruned,
    schema_errors,
    to_cel,
)

Schema = dict[str, Any]

MAX_REQUEST_SIZE = 3 * 1024 * 1024
"""k8s.io/apiserver pkg/apis/cel/config.go MaxRequestSizeBytes."""
PER_RULE_LIMIT = 10_000_000
"""validation.go StaticEstimatedCostLimit."""
PER_CRD_LIMIT = 100_000_000
"""validation.go StaticEstimatedCRDCostLimit."""
UNKNOWN = 2**64 - 1
"""cel-go's unknown size/cost (math.MaxUint64): saturates every product."""

_INT_OR_STRING = "x-kubernetes-int-or-string"
_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
_KNOWN_KEYS = {
    "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "allOf", "oneOf", "anyOf",
    "not", "properties", "additionalProperties", "patternProperties", "dependencies", "additionalItems",
    "definitions", "externalDocs", "example", "nullable", "id", "$schema", "$ref",
    PRESERVE, _INT_OR_STRING, "x-kubernetes-embedded-resource", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-map-type", RULES,
}  # fmt: skip
_FORBIDDEN = {
    "id": "id is not supported",
    "additionalItems": "additionalItems is not supported",
    "patternProperties": "patternProperties is not supported",
    "definitions": "definitions is not supported",
    "dependencies": "dependencies is not supported",
    "$ref": "$ref is not supported",
}


class CrdRefused(Exception):
    """The API server would answer 422 Invalid to the CRD's create."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("CustomResourceDefinition is invalid:\n* " + "\n* ".join(errors))
        self.errors = errors


def _mul(a: int, b: int) -> int:
    return min(a * b, UNKNOWN)


def _add(a: int, b: int) -> int:
    return min(a + b, UNKNOWN)


def _factor(size: int, factor: float) -> int:
    """cel-go multiplyByCostFactor: ceil(size x factor), saturating."""
    return UNKNOWN if size >= UNKNOWN else min(math.ceil(size * factor), UNKNOWN)


# --- 1-2: schema keywords and structural invariants -----------------------------------


def _children(node: Schema, path: str) -> list[tuple[Schema, str, str]]:
    out = [(sub, f"{path}.properties[{k}]", "field") for k, sub in node.get("properties", {}).items()]
    if isinstance(node.get("items"), dict):
        out.append((node["items"], f"{path}.items", "item"))
    if isinstance(node.get("additionalProperties"), dict):
        out.append((node["additionalProperties"], f"{path}.additionalProperties", "field"))
    return out


# apiextensions-apiserver pkg/apiserver/schema/validation.go (validateValueValidation,
# validateNestedValueValidation, validateStructuralCompleteness): inside allOf/anyOf/oneOf/not a
# structural schema may only carry value validations: no type, description, default, nullable,
# additionalProperties or x-kubernetes-* extensions, and every property or items it names must
# also be specified outside the value validation.  The validation of objects against these
# combinators is not emulated (jsonschema checks them where objects are validated).
_VV_FORBIDDEN = ("type", "description", "default", "nullable", "additionalProperties", "title")


_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def _skip_int_or_string(node: Schema, combinator: str) -> Any:
    """validation.go isIntOrStringAnyOfPattern / isIntOrStringAllOfPattern: with
    x-kubernetes-int-or-string, ``anyOf: [{type: integer}, {type: string}]`` (alone, or as the
    first element of ``allOf``) is the one place a type may stand inside a value validation."""
    value = node[combinator]
    if not node.get(_INT_OR_STRING):
        return value
    if combinator == "anyOf" and value == _INT_OR_STRING_ANY_OF:
        return []
    if combinator == "allOf" and isinstance(value, list) and value and value[0] == {"anyOf": _INT_OR_STRING_ANY_OF}:
        return value[1:]
    return value


def _value_validation_errors(vv: Any, path: str, outer: Schema) -> list[str]:
    errors: list[str] = []
    for i, sub in enumerate(vv if isinstance(vv, list) else [vv]):
        at = f"{path}[{i}]" if isinstance(vv, list) else path
        if not isinstance(sub, dict):
            errors.append(f"{at}: Invalid value: must be a schema object")
            continue
        errors += [f"{at}.{k}: Forbidden: must be empty to be structural" for k in _VV_FORBIDDEN if k in sub]
        errors += [f"{at}.{k}: Forbidden: must be false to be structural" for k in sub if k.startswith("x-kubernetes-")]
        for name, prop in (sub.get("properties") or {}).items():
            if name not in (outer.get("properties") or {}):
                errors.append(f"{at}.properties[{name}]: Required value: because it is defined in {path}")
            else:
                errors += _value_validation_errors(prop, f"{at}.properties[{name}]", outer["properties"][name])
        if isinstance(sub.get("items"), dict):
            if not isinstance(outer.get("items"), dict):
                errors.append(f"{at}.items: Required value: because it is defined in {path}")
            else:
                errors += _value_validation_errors(sub["items"], f"{at}.items", outer["items"])
        for combinator in ("allOf", "anyOf", "oneOf", "not"):
            if combinator in sub:
                errors += _value_validation_errors(sub[combinator], f"{at}.{combinator}", outer)
    return errors


def structural_errors(node: Schema, path: str = "openAPIV3Schema", level: str = "root") -> list[str]:
    errors = [f"{path}.{k}: unknown field" for k in node if k not in _KNOWN_KEYS]
    errors += [f"{path}.{k}: Forbidden: {msg}" for k, msg in _FORBIDDEN.items() if k in node]
    if node.get("uniqueItems") is True:
        errors.append(f"{path}.uniqueItems: Forbidden: uniqueItems cannot be set to true")
    if isinstance(node.get("items"), list):
        errors.append(f"{path}.items: Forbidden: items must be a schema object and not an array")
    if node.get("type") == "null":
        errors.append(f"{path}.type: Forbidden: type cannot be set to null, use nullable as an alternative")
    extra = node.get("additionalProperties")
    if extra is not None and node.get("properties") and (extra is False or isinstance(extra, dict)):
        errors.append(
            f"{path}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
        )
    if PRESERVE in node and node[PRESERVE] is not True:
        errors.append(f"{path}.{PRESERVE}: Invalid value: must be true or undefined")
    for combinator in ("allOf", "anyOf", "oneOf", "not"):
        if combinator in node:
            errors += _value_validation_errors(_skip_int_or_string(node, combinator), f"{path}.{combinator}", node)
    if node.get("type") == "array" and "items" not in node:
        errors.append(f"{path}.items: Required value: must be specified")
    if not node.get("type") and not node.get(PRESERVE) and not node.get(_INT_OR_STRING):
        where = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}[
            level
        ]
        errors.append(f"{path}.type: Required value: must not be empty {where}")
    if level == "root":
        if extra is not None:
            errors.append(f"{path}.additionalProperties: Forbidden: must not be used at the root")
        if node.get("type") not in (None, "object"):
            errors.append(f"{path}.type: Invalid value: must be object at the root")
        if node.get("nullable"):
            errors.append(f"{path}.nullable: Forbidden: nullable cannot be true at the root")
        props = node.get("properties", {})
        for key in ("kind", "apiVersion"):
            if key in props and props[key].get("type") != "string":
                errors.append(f"{path}.properties[{key}].type: Invalid value: must be string")
        if "metadata" in props:
            meta = dict(props["metadata"])
            if meta.get("type") != "object":
                errors.append(f"{path}.properties[metadata].type: Invalid value: must be object")
            meta.pop("type", None)
            meta.pop("default", None)
            names = set(meta.get("properties", {}))
            if names and names <= {"name", "generateName"}:
                meta.pop("properties")
            if meta:
                errors.append(
                    f"{path}.properties[metadata]: Forbidden: must not specify anything other than name and"
                    " generateName, but metadata is implicitly specified"
                )
    for sub, sub_path, sub_level in _children(node, path):
        errors += structural_errors(sub, sub_path, sub_level)
    return errors


def _field_path_ok(field_path: str, node: Schema) -> bool:
    """validation.go validFieldPath -> cel.ValidFieldPath: ``.a.b`` and ``['a']`` through properties."""
    parts = re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']*)'\]|(.)", field_path)
    for dotted, quoted, junk in parts:
        if junk:
            return False
        name = dotted or quoted
        if name not in node.get("properties", {}):
            if not isinstance(node.get("additionalProperties"), dict):
                return False
            node = node["additionalProperties"]
        else:
            node = node["properties"][name]
    return bool(parts)


def rule_entry_errors(schema: Schema, path: str = "openAPIV3Schema") -> list[str]:
    errors = []
    for i, entry in enumerate(schema.get(RULES, [])):
        at = f"{path}.x-kubernetes-validations[{i}]"
        if not entry.get("rule"):
            errors.append(f"{at}.rule: Required value: rule is not specified")
        if "message" in entry and not entry["message"].strip():
            errors.append(f"{at}.message: Invalid value: must be non-empty if specified")
        if re.search(r"[\n\r]", entry.get("message", "")):
            errors.append(f"{at}.message: Invalid value: must not contain line breaks")
        if "message" not in entry and re.search(r"[\n\r]", entry.get("rule", "")):
            errors.append(f"{at}.message: Required value: message must be specified if rule contains line breaks")
        if "messageExpression" in entry:
            errors.append(f"{at}.messageExpression: not emulated by tests/support/apiserver/crd.py")
        if "reason" in entry and entry["reason"] not in _REASONS:
            errors.append(f"{at}.reason: Unsupported value: {entry['reason']!r}")
        if "fieldPath" in entry:
            fp = entry["fieldPath"]
            if not fp or re.search(r"[\n\r]", fp) or not _field_path_ok(fp, schema):
                errors.append(f"{at}.fieldPath: Invalid value: {fp!r}: must be a valid path")
    for sub, sub_path, _ in _children(schema, path):
        errors += rule_entry_errors(sub, sub_path)
    return errors


# --- 3: defaults -------------------------------------------------------------------------


def _cel_on_value(value: Any, schema: Schema, at: str) -> list[str]:
    """Every rule of ``schema`` and of the nodes inside ``value``, with oldSelf = self (cel/validation.go).

    Messages follow the API server's: ``<path>.default: Invalid value: "object": <rule message>``,
    and for a rule that fails to evaluate ``no such key: offload evaluating rule: <rule message>``.
    """
    errors = []
    kind = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
    for path, node, sub in nodes(value, schema):
        for entry in sub.get(RULES, []):
            activation = {"self": to_cel(node, sub)}
            if is_transition(entry["rule"]):
                activation["oldSelf"] = activation["self"]
            detail = entry["message"]
            try:
                result = compile_rule(entry["rule"]).evaluate(activation)
                holds = isinstance(result, celtypes.BoolType) and bool(result)
            except celpy.CELEvalError as exc:
                text = str(exc.args[0]) if exc.args else str(exc)
                found = re.match(r"no such member in mapping: '([^']*)'", text)
                # cel-python folds the first error of `a || b` into an overload error; name the
                # first field the rule reads (outside has()) that the value lacks, as cel-go does.
                absent = [
                    f
                    for f in re.findall(r"(?<!has\()\bself\.(\w+)", entry["rule"])
                    if isinstance(node, dict) and f not in node
                ]
                key = found[1] if found else (absent[0] if absent else None)
                cause = f"no such key: {key}" if key else text
                detail, holds = f"{cause} evaluating rule: {entry['message']}", False
            if not holds:
                where = f" (at {path.lstrip('.')} inside the default)" if path else ""
                errors.append(f'{at}.default: Invalid value: "{kind}": {detail}{where}')
    return errors


def default_errors(schema: Schema, path: str = "openAPIV3Schema", *, run_cel: bool = True) -> list[str]:
    errors = []
    if "default" in schema:
        default = schema["default"]
        at = path
        if pruned(copy.deepcopy(default), schema) != default:
            errors.append(f"{at}.default: Invalid value: must not have unknown fields")
        invalid = schema_errors(default, schema)
        if invalid:
            errors += [f"{at}.default{e}" for e in invalid]
        elif run_cel:
            errors += _cel_on_value(default, schema, at)
    # "do not follow additionalProperties because defaults are forbidden there"
    if isinstance(schema.get("items"), dict):
        errors += default_errors(schema["items"], f"{path}.items", run_cel=run_cel)
    for key, sub in schema.get("properties", {}).items():
        errors += default_errors(sub, f"{path}.properties[{key}]", run_cel=run_cel)
    return errors


# --- 4-5: CEL types, compilation and cost ----------------------------------------------


@dataclass
class Decl:
    """k8s.io/apiserver pkg/cel/types.go DeclType, reduced to what type checking and cost need."""

    kind: str  # object, map, list, string, int, double, bool, dyn
    max_elements: int = 0
    min_size: int = 1
    fields: dict[str, Decl] = field(default_factory=dict)
    elem: Decl | None = None
    map_list: bool = False


def _string_max(schema: Schema) -> int:
    if "maxLength" in schema:
        return max(schema["maxLength"], 0) * 4
    if schema.get("enum"):
        return max(len(v) for v in schema["enum"] if isinstance(v, str))
    return {"duration": 32, "date": 12, "date-time": 32}.get(schema.get("format", ""), MAX_REQUEST_SIZE - 2)


def decl_of(schema: Schema, root: bool = False) -> Decl | None:
    """common/schemas.go SchemaDeclType (None: CEL declares no type, so rules cannot see it)."""
    if schema.get(_INT_OR_STRING):
        return Decl("dyn", _string_max(schema), 1)
    if root:
        # model/schemas.go WithTypeAndObjectMeta (name capped at 253, generateName at 252).
        props = dict(schema.get("properties", {}))
        props["kind"] = props["apiVersion"] = {"type": "string"}
        props["metadata"] = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 253},
                "generateName": {"type": "string", "maxLength": 252},
            },
        }
        schema = {**schema, "properties": props}
    kind = schema.get("type")
    if kind == "array":
        items = decl_of(schema["items"]) if isinstance(schema.get("items"), dict) else None
        if items is None:
            return None
        n = schema.get("maxItems", (MAX_REQUEST_SIZE - 2) // (items.min_size + 1))
        return Decl("list", max(n, 0), 2, elem=items, map_list=schema.get("x-kubernetes-list-type") == "map")
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            value = decl_of(extra)
            if value is None:
                return None
            n = schema.get("maxProperties", (MAX_REQUEST_SIZE - 2) // (value.min_size + 6))
            return Decl("map", max(n, 0), 2, elem=value)
        required = set(schema.get("required", []))
        fields, min_size = {}, 2
        for name, sub in schema.get("properties", {}).items():
            sub_decl = decl_of(sub)
            if sub_decl is not None:
                fields[name] = sub_decl
                if name in required and "default" not in sub:
                    min_size += len(name) + sub_decl.min_size + 4
        return Decl("object", 0, min_size, fields=fields)
    if kind == "string":
        return Decl("string", _string_max(schema), 2)
    if kind == "boolean":
        return Decl("bool", 0, 4)
    if kind == "number":
        return Decl("double", 0, 1)
    if kind == "integer":
        return Decl("int", 0, 1)
    return None


class NotEmulated(Exception):
    pass


class CompileError(Exception):
    pass


@dataclass
class Est:
    """One parse-tree node: cel-go's cost upper bound, size estimate and type."""

    cost: int
    size: int | None  # None: unknown (cel-go MaxUint64)
    kind: str
    decl: Decl | None = None


_SCALARS = {"bool", "int", "double", "uint"}
# has() counts 1 in the API server (cel.PresenceTestHasCost(true) in k8s.io/apiserver's environment).
_PRESENCE_COST = 1


class _Coster:
    """cel-go checker/cost.go over cel-python's parse tree (see the module docstring)."""

    def __init__(self, self_decl: Decl) -> None:
        self.vars: dict[str, Est] = {"self": Est(1, self_decl.max_elements, self_decl.kind, self_decl)}
        self.vars["oldSelf"] = self.vars["self"]

    def sz(self, e: Est) -> int:
        if e.size is not None:
            return e.size
        return 1 if e.kind in _SCALARS else UNKNOWN

    def visit(self, t: Tree | Token) -> Est:
        if isinstance(t, Token):
            raise NotEmulated(f"token {t!r}")
        kids = [c for c in t.children if c is not None]
        method = getattr(self, f"v_{t.data}", None)
        if method is None:
            raise NotEmulated(f"CEL construct {t.data!r}")
        return method(kids)

    def _pass(self, kids: list[Any]) -> Est:
        if len(kids) != 1:
            raise NotEmulated("unexpected parse tree")
        return self.visit(kids[0])

    v_primary = v_paren_expr = _pass

    def v_expr(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        cond, yes, no = (self.visit(k) for k in kids)
        size = max(self.sz(yes), self.sz(no))
        return Est(_add(cond.cost, max(yes.cost, no.cost)), size, yes.kind if yes.kind == no.kind else "dyn")

    def _logical(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        lhs, rhs = self.visit(kids[0]), self.visit(kids[1])
        return Est(_add(lhs.cost, rhs.cost), None, "bool")

    v_conditionalor = v_conditionaland = _logical

    def v_relation(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        op, rhs_tree = kids
        lhs, rhs = self.visit(op.children[0]), self.visit(rhs_tree)
        args = _add(lhs.cost, rhs.cost)
        if op.data == "relation_in":
            return Est(_add(args, self.sz(rhs)), None, "bool")
        if op.data in ("relation_eq", "relation_ne") or "string" in (lhs.kind, rhs.kind):
            # Equals/NotEquals and string comparisons: min(size) x 0.1 (cost.go functionCost).
            return Est(_add(args, _factor(min(self.sz(lhs), self.sz(rhs)), 0.1)), None, "bool")
        return Est(_add(args, 1), None, "bool")

    def v_addition(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        op, rhs_tree = kids
        if op.data != "addition_add":
            lhs, rhs = self.visit(op.children[0]), self.visit(rhs_tree)
            return Est(_add(_add(lhs.cost, rhs.cost), 1), None, lhs.kind)
        lhs, rhs = self.visit(op.children[0]), self.visit(rhs_tree)
        args = _add(lhs.cost, rhs.cost)
        if lhs.kind == "string" or lhs.kind == "list":
            size = _add(self.sz(lhs), self.sz(rhs))
            extra = _factor(size, 0.1) if lhs.kind == "string" else 1
            return Est(_add(args, extra), size, lhs.kind)
        return Est(_add(args, 1), None, lhs.kind)

    def v_multiplication(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        op, rhs_tree = kids
        lhs, rhs = self.visit(op.children[0]), self.visit(rhs_tree)
        return Est(_add(_add(lhs.cost, rhs.cost), 1), None, lhs.kind)

    def v_unary(self, kids: list[Any]) -> Est:
        if len(kids) == 1:
            return self.visit(kids[0])
        inner = self.visit(kids[1])
        return Est(_add(inner.cost, 1), None, "bool" if kids[0].data == "unary_not" else inner.kind)

    def v_member(self, kids: list[Any]) -> Est:
        return self._pass(kids)

    def _select(self, operand: Est, name: str) -> Est:
        d = operand.decl
        if d is not None and d.kind == "object":
            if name not in d.fields:
                raise CompileError(f"undefined field '{name}'")
            sub = d.fields[name]
            return Est(_add(operand.cost, 1), sub.max_elements, sub.kind, sub)
        if d is not None and d.kind == "map":
            sub = d.elem
            assert sub is not None
            return Est(_add(operand.cost, 1), sub.max_elements, sub.kind, sub)
        if operand.kind in ("dyn", "map", "object"):
            return Est(_add(operand.cost, 1), None, "dyn")
        raise CompileError(f"type '{operand.kind}' does not support field selection")

    def v_member_dot(self, kids: list[Any]) -> Est:
        return self._select(self.visit(kids[0]), str(kids[1]))

    def v_ident(self, kids: list[Any]) -> Est:
        name = str(kids[0])
        if name not in self.vars:
            raise CompileError(f"undeclared reference to '{name}'")
        v = self.vars[name]
        return Est(1, v.size, v.kind, v.decl)

    def v_literal(self, kids: list[Any]) -> Est:
        tok = kids[0]
        kind = {"STRING_LIT": "string", "MLSTRING_LIT": "string", "BYTES_LIT": "bytes", "BOOL_LIT": "bool",
                "NULL_LIT": "null", "INT_LIT": "int", "UINT_LIT": "uint", "FLOAT_LIT": "double"}[tok.type]  # fmt: skip
        size = len(_unquote(str(tok))) if kind == "string" else 1
        return Est(0, size, kind)

    def v_list_lit(self, kids: list[Any]) -> Est:
        items = [self.visit(e) for e in kids[0].children] if kids else []
        cost = 10
        for item in items:
            cost = _add(cost, item.cost)
        return Est(cost, len(items), "list")

    def v_ident_arg(self, kids: list[Any]) -> Est:
        name = str(kids[0])
        args = list(kids[1].children) if len(kids) > 1 else []
        if name == "has":
            [arg] = args
            sel = _unwrap_select(arg)
            if sel is None:
                raise CompileError("invalid argument to has() macro")
            operand = self.visit(sel.children[0])
            self._select(operand, str(sel.children[1]))  # type-checks the field
            return Est(_add(operand.cost, _PRESENCE_COST), None, "bool")
        if name == "size" and len(args) == 1:
            arg = self.visit(args[0])
            return Est(_add(arg.cost, 1), None, "int")
        raise NotEmulated(f"function {name}()")

    def v_member_dot_arg(self, kids: list[Any]) -> Est:
        method = str(kids[1])
        args = list(kids[2].children) if len(kids) > 2 else []
        if method in ("all", "exists", "exists_one"):
            return self._quantifier(method, kids[0], args)
        target = self.visit(kids[0])
        values = [self.visit(a) for a in args]
        cost = target.cost
        for v in values:
            cost = _add(cost, v.cost)
        if method in ("startsWith", "endsWith") and len(values) == 1:
            return Est(_add(cost, _factor(self.sz(values[0]), 0.1)), None, "bool")
        if method == "matches" and len(values) == 1:
            str_cost = _factor(_add(self.sz(target), 1), 0.1)
            regex_cost = _factor(self.sz(values[0]), 0.25)
            return Est(_add(cost, _mul(str_cost, regex_cost)), None, "bool")
        if method == "contains" and len(values) == 1:
            return Est(_add(cost, _mul(_factor(self.sz(target), 0.1), _factor(self.sz(values[0]), 0.1))), None, "bool")
        if method == "size" and not values:
            return Est(_add(cost, 1), None, "int")
        raise NotEmulated(f"method .{method}()")

    def _quantifier(self, method: str, range_tree: Any, args: list[Any]) -> Est:
        """parser/macro.go makeQuantifier + cost.go costComprehension."""
        rng = self.visit(range_tree)
        var_tree, pred_tree = args
        var = str(_unwrap_ident(var_tree))
        if rng.kind == "list":
            elem = rng.decl.elem if rng.decl is not None else None
        elif rng.kind == "map":
            elem = Decl("string", rng.decl.elem.max_elements if rng.decl and rng.decl.elem else 0, 2)
        else:
            elem = None
        saved = self.vars.get(var)
        self.vars[var] = Est(1, elem.max_elements if elem else None, elem.kind if elem else "dyn", elem)
        pred = self.visit(pred_tree)
        if saved is None:
            del self.vars[var]
        else:
            self.vars[var] = saved
        if method == "all":  # init true; cond @not_strictly_false(accu); step accu && pred; result accu
            loop, step, result = 2, _add(1, pred.cost), 1
        elif method == "exists":  # cond @not_strictly_false(!accu); step accu || pred
            loop, step, result = 3, _add(1, pred.cost), 1
        else:  # exists_one: init 0; cond true; step pred ? accu + 1 : accu; result accu == 1
            loop, step, result = 0, _add(pred.cost, 2), 2
        count = self.sz(rng)
        return Est(_add(_add(rng.cost, result), _mul(count, _add(step, loop))), None, "bool")


def _unquote(text: str) -> str:
    body = text[1:] if text[:1] in "rR" else text
    quote = body[:3] if body[:3] in ("'''", '"""') else body[:1]
    return body[len(quote) : -len(quote)]


def _descend(t: Any, names: tuple[str, ...]) -> Any:
    while isinstance(t, Tree) and t.data in names and len([c for c in t.children if c is not None]) == 1:
        t = [c for c in t.children if c is not None][0]
    return t


_WRAPPERS = (
    "expr",
    "conditionalor",
    "conditionaland",
    "relation",
    "addition",
    "multiplication",
    "unary",
    "member",
    "primary",
)


def _unwrap_select(t: Any) -> Tree | None:
    t = _descend(t, _WRAPPERS)
    return t if isinstance(t, Tree) and t.data == "member_dot" else None


def _unwrap_ident(t: Any) -> Token:
    t = _descend(t, _WRAPPERS)
    if not (isinstance(t, Tree) and t.data == "ident"):
        raise CompileError("argument must be a simple name")
    return t.children[0]


@dataclass
class RuleCost:
    path: str
    rule: str
    cost: int  # per evaluation (cel-go MaxCost)
    cardinality: int
    total: int  # what the API server compares with the per-rule limit


_ENV = celpy.Environment()


def rule_cost(schema: Schema, rule: str, *, root: bool = False) -> int:
    """cel-go's MaxCost of one rule on ``schema`` (one evaluation, before cardinality)."""
    decl = decl_of(schema, root=root)
    if decl is None:
        raise CompileError("CEL has no type for this node")
    return _Coster(decl).visit(_ENV.compile(rule)).cost


def compile_and_cost(schema: Schema) -> tuple[list[str], list[RuleCost]]:
    """Compile every rule against the schema's CEL types and estimate its cost (steps 4-5)."""
    errors: list[str] = []
    costs: list[RuleCost] = []

    def walk(node: Schema, path: str, cardinality: int | None, root: bool, correlatable: bool) -> None:
        rules = node.get(RULES, [])
        if rules:
            decl = decl_of(node, root=root)
            if decl is None:
                errors.append(f"{path}.x-kubernetes-validations: Invalid value: CEL has no type for this node")
            for i, entry in enumerate(rules if decl is not None else []):
                at = f"{path}.x-kubernetes-validations[{i}].rule"
                assert decl is not None
                try:
                    tree = _ENV.compile(entry["rule"])
                except celpy.CELParseError as exc:
                    errors.append(f"{at}: Invalid value: compilation failed: {exc}")
                    continue
                if is_transition(entry["rule"]) and not correlatable:
                    errors.append(
                        f"{at}: Invalid value: oldSelf cannot be used on the uncorrelatable portion of the schema"
                    )
                try:
                    est = _Coster(decl).visit(tree)
                except CompileError as exc:
                    errors.append(f"{at}: Invalid value: compilation failed: {exc}")
                    continue
                except NotEmulated as exc:
                    errors.append(
                        f"{at}: {exc} is not emulated by tests/support/apiserver/crd.py's "
                        "type checker and cost estimate"
                    )
                    continue
                if est.kind not in ("bool", "dyn"):
                    errors.append(
                        f"{at}: Invalid value: compilation failed: rule must evaluate to a bool, not {est.kind}"
                    )
                times = cardinality if cardinality is not None else MAX_REQUEST_SIZE // (decl.min_size + 1)
                total = _mul(est.cost, times)
                costs.append(RuleCost(path, entry["rule"], est.cost, times, total))
                if total > PER_RULE_LIMIT:
                    errors.append(
                        f"{at}: Forbidden: estimated rule cost exceeds budget by factor of "
                        f"{total / PER_RULE_LIMIT:.1f}x"
                        " (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays,"
                        " maps, and strings are declared)"
                    )

        # cel_validation.go childContext: cardinality x maxElements of this node.
        kind = node.get("type")
        extra = node.get("additionalProperties")
        if kind == "array":
            n = node.get("maxItems")
        elif kind == "object" and isinstance(extra, dict):
            n = node.get("maxProperties")
        else:
            n = 1
        child = None if cardinality is None or n is None else cardinality * max(n, 0)
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.properties[{key}]", child, False, correlatable)
        if isinstance(node.get("items"), dict):
            walk(
                node["items"],
                f"{path}.items",
                child,
                False,
                correlatable and node.get("x-kubernetes-list-type") == "map",
            )
        if isinstance(extra, dict):
            walk(extra, f"{path}.additionalProperties", child, False, correlatable)

    walk(schema, "openAPIV3Schema", 1, True, True)
    total = 0
    for c in costs:
        total = _add(total, c.total)
    if total > PER_CRD_LIMIT:
        errors.append(
            "openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3"
            f" schema exceeds budget by factor of {total / PER_CRD_LIMIT:.1f}x"
        )
    return errors, costs


# --- the whole check ---------------------------------------------------------------------


def creation_errors(crd: dict[str, Any]) -> list[str]:
    """The API server's errors for creating ``crd`` (empty: it would be created)."""
    errors: list[str] = []
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        return ["not an apiextensions.k8s.io/v1 CustomResourceDefinition"]
    versions = crd["spec"]["versions"]
    for i, version in enumerate(versions):
        # The internal API hoists a schema shared by every version to spec.validation, so that
        # is where the real server's messages point for a one-version CRD.
        prefix = "spec.validation." if len(versions) == 1 else f"spec.versions[{i}].schema."
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            errors.append(f"spec.versions[{i}].schema.openAPIV3Schema: Required value: schemas are required")
            continue
        structural = structural_errors(schema) + rule_entry_errors(schema)
        errors += [prefix + e for e in structural]
        if structural:
            continue  # upstream validates defaults and CEL only on a valid structural schema
        cel_errors, _ = compile_and_cost(schema)
        # A rule that does not compile has no program to run on the defaults.
        errors += [prefix + e for e in default_errors(schema, run_cel=not cel_errors)]
        errors += [prefix + e for e in cel_errors]
    return errors


def install(crd: dict[str, Any]) -> Schema:
    """The served version's schema, as if ``kubectl apply`` of ``crd`` succeeded; raises :class:`CrdRefused`."""
    errors = creation_errors(crd)
    if errors:
        raise CrdRefused(errors)
    [version] = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema
