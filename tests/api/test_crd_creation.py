"""The CRD is accepted by the API server's creation-time checks (tests/support/apiserver/crd.py).

The first release's CRD passed every object-level test and was still refused by
a real v1.36 API server, because apiextensions evaluates each CEL rule on the
``default`` of its node when the CRD is created.  These tests run those checks on
the committed CRD and the chart's copy, and show that each check refuses what the
real server refuses.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.apiserver.crd import (
    PER_CRD_LIMIT,
    PER_RULE_LIMIT,
    CrdRefused,
    compile_and_cost,
    creation_errors,
    install,
    structural_errors,
)
from kubetune.api.crd import crd

REPO = Path(__file__).resolve().parents[2]
COMMITTED = {
    "crds/": REPO / "crds" / "kubetune.io_finetunejobs.yaml",
    "chart copy": REPO / "charts" / "kubetune" / "crds" / "kubetune.io_finetunejobs.yaml",
}


def schema_of(doc: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return node


def spec_props(doc: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema_of(doc)["properties"]["spec"]["properties"]
    return props


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(CrdRefused) as caught:
        install(doc)
    return "\n".join(caught.value.errors)


@pytest.mark.parametrize("where", list(COMMITTED))
def test_committed_crd_is_accepted(where: str) -> None:
    doc = yaml.safe_load(COMMITTED[where].read_text(encoding="utf-8"))
    assert creation_errors(doc) == []


def test_generated_crd_is_accepted_and_its_rules_are_costed() -> None:
    errors, costs = compile_and_cost(schema_of(crd()))
    assert errors == []
    rules = [e for _, node in _walk(schema_of(crd())) for e in node.get("x-kubernetes-validations", [])]
    assert len(costs) == len(rules) > 30  # every rule compiled and estimated, transition rules included
    assert max(c.total for c in costs) < PER_RULE_LIMIT
    assert sum(c.total for c in costs) < PER_CRD_LIMIT


def _walk(node: dict[str, Any], path: str = "") -> Any:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}[key]")


# --- the failure the real server reported ---------------------------------------------------


def test_empty_default_under_rules_that_read_fields_is_refused() -> None:
    """The first release's CRD: `distributed: {default: {}}` with rules reading self.offload/self.fsdp.

    The real v1.36 server said: `properties[spec].properties[distributed].default: Invalid value:
    "object": no such key: offload evaluating rule: spec.distributed.offload: optimizer needs zeroStage 2 or 3`
    (and the same for the `all` offload rule and for fsdp).
    """
    doc = crd()
    spec_props(doc)["distributed"]["default"] = {}
    errors = refused(doc)
    assert (
        'spec.validation.openAPIV3Schema.properties[spec].properties[distributed].default: Invalid value: "object":'
        " no such key: offload evaluating rule: spec.distributed.offload: optimizer needs zeroStage 2 or 3"
    ) in errors.splitlines()
    assert (
        "no such key: fsdp evaluating rule: spec.distributed.fsdp needs launcher: accelerate and zeroStage: 0" in errors
    )
    for message in (
        "spec.distributed.offload: optimizer needs zeroStage 2 or 3",
        "spec.distributed.offload: all (parameters too) needs zeroStage 3",
        "spec.distributed.fsdp needs launcher: accelerate",
    ):
        assert message in errors
    assert errors.count("\n") == 2  # exactly those three rules


def test_defaults_under_rules_are_written_complete() -> None:
    """The generator's fix: a node with rules gets its whole default, so a rule sees every field."""
    distributed = spec_props(crd())["distributed"]
    assert set(distributed["default"]) == {"backend", "zeroStage", "offload", "fsdp", "masterPort"}
    assert spec_props(crd())["export"]["default"] == {}  # no rules there: still stated once


# --- each emulated check refuses what it should --------------------------------------------


def test_default_with_an_unknown_field_is_refused() -> None:
    doc = crd()
    spec_props(doc)["resources"]["default"] = {"gpus": 2}
    assert "properties[resources].default: Invalid value: must not have unknown fields" in refused(doc)


def test_default_invalid_against_its_schema_is_refused() -> None:
    doc = crd()
    spec_props(doc)["distributed"]["default"]["zeroStage"] = 7
    assert "properties[distributed].default.zeroStage" in refused(doc)


def test_default_is_checked_as_written_without_nested_defaults() -> None:
    """A default missing a field its node requires is refused even if that field has a default of its own."""
    doc = crd()
    quantization = spec_props(doc)["quantization"]
    quantization["default"] = {"type": "nf4"}
    assert "properties[quantization].default.bits" in refused(doc)


def test_rules_of_nested_nodes_run_on_a_default() -> None:
    doc = crd()
    spec_props(doc)["model"]["default"] = {"template": "qwen"}  # neither name nor path
    errors = refused(doc)
    assert "properties[model].default" in errors and "set exactly one of name" in errors
    doc = crd()
    # A default on a parent: the model's rule is evaluated inside it.
    spec_props(doc)["distributed"]["properties"]["nested"] = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.n > 1", "message": "n must exceed 1"}],
    }
    spec_props(doc)["distributed"]["default"]["nested"] = {"n": 1}
    assert (
        "properties[distributed].default: Invalid value: \"object\": n must exceed 1 (at nested inside the default)"
        in refused(doc)
    )


def test_transition_rules_run_on_a_default_with_old_self_bound_to_it() -> None:
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append(
        {"rule": "self.zeroStage != oldSelf.zeroStage", "message": "always changes"}
    )
    assert "always changes" in refused(doc)


def test_rule_naming_an_undeclared_field_does_not_compile() -> None:
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append({"rule": "self.zeroStages == 0", "message": "m"})
    assert "compilation failed: undefined field 'zeroStages'" in refused(doc)
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append({"rule": "has(self.offlaod)", "message": "m"})
    assert "undefined field 'offlaod'" in refused(doc)


def test_rule_reading_preserve_unknown_data_does_not_compile() -> None:
    """spec.extraArgs values are preserve-unknown: CEL has no type for them (why its immutability is Python-only)."""
    doc = crd()
    schema_of(doc)["properties"]["spec"]["x-kubernetes-validations"].append(
        {"rule": "self.extraArgs == oldSelf.extraArgs", "message": "m"}
    )
    assert "undefined field 'extraArgs'" in refused(doc)


def test_rule_that_is_not_a_bool_is_refused() -> None:
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append({"rule": "self.zeroStage + 1", "message": "m"})
    assert "rule must evaluate to a bool" in refused(doc)


def test_unparsable_rule_is_refused() -> None:
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append({"rule": "self.zeroStage ==", "message": "m"})
    assert "compilation failed" in refused(doc)


def test_unbounded_list_makes_a_quadratic_rule_too_expensive() -> None:
    """maxItems bounds the cost: without it the size comes from the 3 MiB request limit."""
    doc = crd()
    del spec_props(doc)["datasets"]["maxItems"]
    errors = refused(doc)
    assert "properties[spec].x-kubernetes-validations" in errors
    assert "estimated rule cost exceeds budget" in errors


def test_unbounded_string_in_matches_is_too_expensive_under_an_unbounded_list() -> None:
    doc = crd()
    items = spec_props(doc)["datasets"]
    del items["maxItems"]
    del items["items"]["properties"]["path"]["maxLength"]
    errors, _ = compile_and_cost(schema_of(doc))
    assert any("datasets].items.x-kubernetes-validations" in e and "exceeds budget" in e for e in errors)


def test_total_cost_over_the_crd_budget_is_refused_even_if_each_rule_fits() -> None:
    doc = crd()
    spec = schema_of(doc)["properties"]["spec"]
    spec["properties"]["env"]["maxItems"] = 280
    unique = next(r for r in spec["x-kubernetes-validations"] if "self.env.all" in r["rule"])
    _, costs = compile_and_cost(schema_of(doc))
    [one] = [c for c in costs if c.rule == unique["rule"]]
    assert PER_RULE_LIMIT / 2 < one.total < PER_RULE_LIMIT
    copies = PER_CRD_LIMIT // one.total + 1
    spec["x-kubernetes-validations"] += [copy.deepcopy(unique) for _ in range(copies)]
    errors = refused(doc)
    assert "estimated rule cost total for entire OpenAPIv3 schema exceeds budget" in errors
    assert "estimated rule cost exceeds budget" not in errors


def test_oldself_under_a_plain_list_is_refused() -> None:
    doc = crd()
    spec_props(doc)["datasets"]["items"]["x-kubernetes-validations"].append(
        {"rule": "self.name == oldSelf.name", "message": "m"}
    )
    assert "oldSelf cannot be used on the uncorrelatable portion of the schema" in refused(doc)


@pytest.mark.parametrize(
    "change,expected",
    [
        (
            lambda s: s["properties"]["spec"]["properties"]["method"].pop("type"),
            "type: Required value: must not be empty for specified object fields",
        ),
        (lambda s: s["properties"]["spec"]["properties"]["datasets"].pop("items"), "items: Required value"),
        (
            lambda s: s["properties"]["spec"]["properties"]["resources"].update(
                additionalProperties={"type": "string"}
            ),
            "mutual exclusive",
        ),
        (lambda s: s.update(additionalProperties={"type": "string"}), "must not be used at the root"),
        (
            lambda s: s["properties"]["metadata"].update(properties={"labels": {"type": "object"}}),
            "properties[metadata]: Forbidden",
        ),
        (
            lambda s: s["properties"]["kind"].update(type="integer"),
            "properties[kind].type: Invalid value: must be string",
        ),
        (lambda s: s["properties"]["spec"]["properties"]["datasets"].update(uniqueItems=True), "uniqueItems"),
        (lambda s: s["properties"]["spec"].update({"$ref": "#/x"}), "$ref is not supported"),
        (
            lambda s: s["properties"]["spec"]["properties"]["method"].update(exclusiveMinmum=1),
            "exclusiveMinmum: unknown field",
        ),
        (
            lambda s: s["properties"]["spec"]["properties"]["extraArgs"]["additionalProperties"].update(
                {"x-kubernetes-preserve-unknown-fields": False}
            ),
            "must be true or undefined",
        ),
    ],
    ids=[
        "untyped",
        "array-without-items",
        "props-and-additional",
        "root-additional",
        "metadata",
        "kind-type",
        "unique-items",
        "ref",
        "typo",
        "preserve-false",
    ],
)
def test_non_structural_schemas_are_refused(change: Any, expected: str) -> None:
    doc = crd()
    change(schema_of(doc))
    assert expected in refused(doc)


@pytest.mark.parametrize(
    "entry,expected",
    [
        ({"rule": "true", "message": "two\nlines"}, "must not contain line breaks"),
        ({"rule": "true", "message": "m", "reason": "FieldValueWrong"}, "reason: Unsupported value"),
        ({"rule": "true", "message": "m", "fieldPath": ".nope"}, "fieldPath: Invalid value: '.nope'"),
        ({"rule": "true", "message": "  "}, "must be non-empty"),
    ],
    ids=["message-newline", "reason", "field-path", "empty-message"],
)
def test_malformed_rule_entries_are_refused(entry: dict[str, str], expected: str) -> None:
    doc = crd()
    spec_props(doc)["distributed"]["x-kubernetes-validations"].append(entry)
    assert expected in refused(doc)


def test_field_paths_of_the_crd_resolve() -> None:
    """The CRD's own fieldPaths (e.g. `.quantization.bits` on spec) pass the check that refuses `.nope`."""
    doc = crd()
    paths = [
        e["fieldPath"]
        for _, n in _walk(schema_of(doc))
        for e in n.get("x-kubernetes-validations", [])
        if "fieldPath" in e
    ]
    assert ".quantization.bits" in paths and len(paths) > 20
    assert creation_errors(doc) == []


# --- the cost estimate agrees with upstream's own expectations ------------------------------------

_NUM, _STR, _BOOL = {"type": "number"}, {"type": "string"}, {"type": "boolean"}


def _array(items: dict[str, Any], n: int | None) -> dict[str, Any]:
    return {"type": "array", "items": items, **({"maxItems": n} if n is not None else {})}


def _map(value: dict[str, Any], n: int | None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": value, **({"maxProperties": n} if n is not None else {})}


def _string(n: int | None) -> dict[str, Any]:
    return {"type": "string", **({"maxLength": n} if n is not None else {})}


_OBJECT_ITEM = {"type": "object", "required": ["required"], "properties": {"required": _STR, "optional": _STR}}

# (schema for a limit n or None, rule, cost without limits, limit, cost with it): cases of
# TestCostEstimation in k8s.io/apiextensions-apiserver pkg/apiserver/schema/cel/compilation_test.go,
# with the MaxCost figures upstream asserts.
UPSTREAM_COSTS = [
    (lambda n: _array(_NUM, n), "self.all(x, true)", 4718591, 10, 32),
    (lambda n: _array(_STR, n), "self.all(x, true)", 3145727, 20, 62),
    (lambda n: _array(_BOOL, n), "self.all(x, true)", 1887437, 5, 17),
    (lambda n: _array(_array(_NUM, None), n), "self.all(x, true)", 3145727, 100, 302),
    (lambda n: _array(_OBJECT_ITEM, n), "self.all(x, true)", 555128, 50, 152),
    (lambda n: _map(_NUM, n), "self.all(x, true)", 1348169, 10, 32),
    (lambda n: _map(_STR, n), "self.all(x, true)", 1179647, 3, 11),
    (lambda n: _map(_BOOL, n), "self.all(x, true)", 943718, 100, 302),
    (_string, "self.contains('test')", 314574, 10, 5),
    (_string, "self.startsWith('test')", 2, 15, 2),
    (_string, "self.endsWith('test')", 2, 30, 2),
    (_string, 'size(self + "hello") > size("hello")', 314578, 4, 7),
    (lambda n: _array(_NUM, n), "self.all(x, self.all(y, true))", None, 10, 352),
    (lambda n: _array(_NUM, n), "self.all(x, self.all(y, self.all(z, true)))", None, 10, 3552),
    (_string, 'self.matches("x")', 314574, 50, 22),
    (_string, '"".matches("(((((((((())))))))))[0-9]")', 7, 10, 7),
    (_string, 'self.matches("")', 1, 100, 1),
    (_string, 'self == "x"', 2, 0, 1),
]


@pytest.mark.parametrize(
    "make,rule,unbounded,limit,bounded", UPSTREAM_COSTS, ids=[f"{i}:{c[1]}" for i, c in enumerate(UPSTREAM_COSTS)]
)
def test_cost_estimate_matches_upstream_figures(
    make: Any, rule: str, unbounded: int | None, limit: int, bounded: int
) -> None:
    from tests.support.apiserver.crd import rule_cost

    if unbounded is None:
        assert rule_cost(make(None), rule) > PER_RULE_LIMIT
    else:
        assert rule_cost(make(None), rule) == unbounded
    assert rule_cost(make(limit), rule) == bounded


def test_value_validations_follow_the_structural_rules() -> None:
    """allOf/anyOf/oneOf/not may carry only value validations (apiextensions validation.go):
    the int-or-string anyOf pattern passes, a type or default inside anyOf does not."""
    int_or_string = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": "^[0-9]+$",
    }
    ok = {
        "type": "object",
        "properties": {"q": int_or_string, "s": {"type": "string", "anyOf": [{"maxLength": 3}, {"pattern": "^a"}]}},
    }
    assert structural_errors(ok) == []
    bad = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "anyOf": [{"type": "string", "default": "x"}], "not": {"properties": {"z": {}}}}
        },
    }
    errors = structural_errors(bad)
    assert any("anyOf[0].type: Forbidden" in e for e in errors), errors
    assert any("anyOf[0].default: Forbidden" in e for e in errors), errors
    assert any("not.properties[z]: Required value" in e for e in errors), errors
