"""The generated CRD: committed, structural, documented, and acceptable to the API server."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.apiserver.validation import (
    PRESERVE,
    RULES,
    apply_defaults,
    cel_visible,
    compile_rule,
    schema_errors,
    with_object_meta,
)
from kubetune.api import IMMUTABLE_FIELDS, FineTuneJob, FineTuneJobSpec, RuledModel
from kubetune.api import spec as spec_module
from kubetune.api.crd import crd, crd_yaml, openapi_schema

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "kubetune.io_finetunejobs.yaml"
REGENERATE = ".venv/bin/python -m kubetune crd > crds/kubetune.io_finetunejobs.yaml"

SCHEMA = openapi_schema()


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path (``.spec.datasets[*].name``)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}[key]")
    if "items" in node:
        yield from walk(node["items"], f"{path}[*]")


def properties() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in walk(SCHEMA):
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}", sub


def test_committed_crd_is_current() -> None:
    assert CRD_FILE.exists(), f"crds/ has no CRD; generate it with: {REGENERATE}"
    assert CRD_FILE.read_text() == crd_yaml(), (
        f"{CRD_FILE.relative_to(REPO)} is stale: the API models changed. Regenerate it with: {REGENERATE}"
    )


def test_regenerate_command_writes_the_committed_file() -> None:
    """The command the staleness message tells people to run really produces the file."""
    out = subprocess.run(
        [sys.executable, "-m", "kubetune", "crd"], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout == crd_yaml()


def test_committed_crd_says_it_is_generated() -> None:
    head = crd_yaml().splitlines()[:2]
    assert "kubetune crd" in head[0] and "Do not edit" in head[0]
    assert REGENERATE in head[1]


def test_crd_yaml_round_trips_to_crd() -> None:
    assert yaml.safe_load(crd_yaml()) == crd()


def test_names_scope_and_version() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "finetunejobs.kubetune.io"
    assert spec["group"] == "kubetune.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "FineTuneJob",
        "listKind": "FineTuneJobList",
        "plural": "finetunejobs",
        "singular": "finetunejob",
        "shortNames": ["ftj"],
        "categories": ["kubetune", "ml"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_of_kubectl_get() -> None:
    [version] = crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    default = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default == ["Phase", "Method", "GPUs", "Progress", "Loss", "Age"]
    assert (columns["Phase"]["jsonPath"], columns["Phase"]["type"]) == (".status.phase", "string")
    assert (columns["Method"]["jsonPath"], columns["Method"]["type"]) == (".spec.method", "string")
    assert (columns["GPUs"]["jsonPath"], columns["GPUs"]["type"]) == (".status.gpus", "integer")
    assert columns["Progress"]["jsonPath"] == ".status.progress.summary"
    assert (columns["Loss"]["jsonPath"], columns["Loss"]["type"]) == (".status.progress.loss", "number")
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (".metadata.creationTimestamp", "date")
    assert columns["Backend"]["priority"] == 1 and columns["Job"]["priority"] == 1
    # -o wide's BACKEND is the kind the operator created (backend auto: the one it chose), not the
    # spec's `auto`; the status field is the one the operator writes (ChildRef.kind)
    assert columns["Backend"]["jsonPath"] == ".status.job.kind"


@pytest.mark.parametrize("column", crd()["spec"]["versions"][0]["additionalPrinterColumns"], ids=lambda c: c["name"])
def test_printer_column_points_at_a_schema_field_of_its_type(column: dict[str, Any]) -> None:
    if column["jsonPath"].startswith(".metadata."):
        return
    node = SCHEMA
    for key in column["jsonPath"].lstrip(".").split("."):
        node = node["properties"][key]
    expected = {"string": "string", "integer": "integer", "number": "number"}[column["type"]]
    assert node["type"] == expected


# --- structural schema ----------------------------------------------------------------


def test_no_references_titles_or_json_schema_2020_leftovers() -> None:
    for path, node in walk(SCHEMA):
        leftovers = {"$ref", "$defs", "title", "const", "propertyNames", "patternProperties"} & set(node)
        assert not leftovers, f"{path}: {leftovers}"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false is not structural"
        assert not isinstance(node.get("exclusiveMinimum"), (int, float)) or isinstance(node["exclusiveMinimum"], bool)


def test_every_node_is_typed_or_explicitly_preserved() -> None:
    for path, node in walk(SCHEMA):
        assert node.get("type") or node.get(PRESERVE), f"{path} has no type"
        for combinator in ("anyOf", "oneOf", "allOf", "not"):
            assert combinator not in node, f"{path} uses {combinator}"


def test_unknown_fields_are_preserved_only_where_free_form() -> None:
    preserved = sorted(path for path, node in walk(SCHEMA) if node.get(PRESERVE))
    assert preserved == [".spec.extraArgs[key]"]


def test_metadata_is_left_to_the_api_server() -> None:
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}
    assert SCHEMA["properties"]["apiVersion"]["type"] == SCHEMA["properties"]["kind"]["type"] == "string"


def test_every_property_has_a_description_for_kubectl_explain() -> None:
    missing = [path for path, sub in properties() if path != ".metadata" and not sub.get("description", "").strip()]
    assert missing == []


def test_status_is_schema_d() -> None:
    status = SCHEMA["properties"]["status"]
    assert status["type"] == "object"
    assert status["properties"]["phase"]["enum"] == [
        "Pending",
        "Running",
        "Exporting",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    assert status["properties"]["progress"]["properties"]["loss"]["type"] == "number"


def test_enums_and_bounds_survive() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["method"]["enum"] == ["full", "freeze", "lora", "qlora"]
    assert spec["method"]["default"] == "lora"
    assert spec["quantization"]["properties"]["bits"] == {
        "description": spec["quantization"]["properties"]["bits"]["description"],
        "type": "integer",
        "enum": [4, 8],
    }
    lr = spec["training"]["properties"]["learningRate"]
    assert (lr["minimum"], lr["exclusiveMinimum"], lr["maximum"]) == (0, True, 1)
    assert spec["datasets"]["minItems"] == 1 and spec["datasets"]["maxItems"] == 32


@pytest.mark.parametrize(
    "path,node", [(p, n) for p, n in walk(SCHEMA) if "default" in n], ids=lambda x: x if isinstance(x, str) else ""
)
def test_default_is_valid_against_its_own_schema(path: str, node: dict[str, Any]) -> None:
    value = copy.deepcopy(node["default"])
    apply_defaults(value, node)
    assert schema_errors(value, node) == []


def test_object_defaults_give_the_models_defaults() -> None:
    """`resources: {}` etc. are written as `default: {}` and filled by nested defaults; a node with
    CEL rules gets its default written complete (rules see the default as written). Either way
    defaulting an absent field gives the model's default object."""
    spec = SCHEMA["properties"]["spec"]["properties"]
    compacted = complete = 0
    for name, field in FineTuneJobSpec.model_fields.items():
        alias = field.alias or name
        if isinstance(spec[alias].get("default"), dict):
            value: dict[str, Any] = {}
            apply_defaults(value, spec[alias])
            assert value == field.default.to_api(), alias
            written: dict[str, Any] = copy.deepcopy(spec[alias]["default"])
            apply_defaults(written, spec[alias])
            assert written == field.default.to_api(), alias
            if spec[alias]["default"] == {}:
                compacted += 1
            else:
                # Rules on the node, or on a node below it, see the default as written.
                assert any(RULES in node for _, node in walk(spec[alias])), (
                    f"{alias}: a complete default only where rules read it"
                )
                complete += 1
    assert compacted >= 2 and complete >= 3  # both forms stay exercised


def all_patterns() -> Iterator[tuple[str, str]]:
    for path, node in walk(SCHEMA):
        if "pattern" in node:
            yield path, node["pattern"]
        for entry in node.get(RULES, []):
            for found in re.findall(r"matches\('((?:[^'\\]|\\.)*)'\)", entry["rule"]):
                yield f"{path} (CEL)", found


def test_there_are_patterns_to_check() -> None:
    assert len(list(all_patterns())) > 20


@pytest.mark.parametrize("path,pattern", list(all_patterns()), ids=lambda x: x)
def test_pattern_is_re2_compatible(path: str, pattern: str) -> None:
    re.compile(pattern)
    for construct in ("(?=", "(?!", "(?<=", "(?<!", "\\1", "(?P="):
        assert construct not in pattern, f"{path}: {construct} is not RE2"


# --- CEL ------------------------------------------------------------------------------


def all_rules() -> list[tuple[str, dict[str, str]]]:
    return [(path or ".", entry) for path, node in walk(SCHEMA) for entry in node.get(RULES, [])]


@pytest.mark.parametrize("path,entry", all_rules(), ids=lambda x: x if isinstance(x, str) else x["rule"][:60])
def test_cel_rule_compiles_and_is_well_formed(path: str, entry: dict[str, str]) -> None:
    compile_rule(entry["rule"])
    assert entry["message"] and "\n" not in entry["message"]
    assert entry.get("reason", "FieldValueInvalid") in {
        "FieldValueInvalid",
        "FieldValueForbidden",
        "FieldValueRequired",
        "FieldValueDuplicate",
    }
    if "fieldPath" in entry:
        node = SCHEMA if path == "." else dict(walk(SCHEMA))[path]
        for key in entry["fieldPath"].lstrip(".").split("."):
            node = node["properties"][key]  # fieldPath must name an existing field


def test_rules_land_on_the_node_of_their_model() -> None:
    by_path = {path or ".": [e["rule"] for e in node.get(RULES, [])] for path, node in walk(SCHEMA)}
    assert (
        "(has(self.name) ? 1 : 0) + (has(self.path) ? 1 : 0) + (has(self.uri) ? 1 : 0) + "
        "(has(self.fromJob) ? 1 : 0) == 1" in by_path[".spec.model"]
    )
    assert (
        "!has(self.uri) || self.uri.startsWith('s3://') || self.uri.startsWith('gs://') || self.uri.startsWith('az://')"
        in by_path[".spec.storage.outputs"]
    )
    assert any("self.preference" in r for r in by_path[".spec.training"])
    assert "has(self.secretKeyRef) != has(self.configMapKeyRef)" in by_path[".spec.env[*].valueFrom"]
    assert any("self.offload" in r for r in by_path[".spec.distributed"])
    assert any("exists_one" in r for r in by_path[".spec"])
    assert any("self.metadata.name" in r for r in by_path["."])


def test_immutable_fields_have_transition_rules() -> None:
    spec_rules = [e for e in SCHEMA["properties"]["spec"][RULES] if "oldSelf" in e["rule"]]
    assert sorted(e["fieldPath"].lstrip(".") for e in spec_rules) == sorted(set(IMMUTABLE_FIELDS) - {"extraArgs"})
    assert all(e["reason"] == "FieldValueForbidden" for e in spec_rules)


def python_only_rules() -> list[str]:
    models = [
        FineTuneJob,
        FineTuneJobSpec,
        *(m for m in vars(spec_module).values() if isinstance(m, type) and issubclass(m, RuledModel)),
    ]
    return sorted({r.name for m in models for r in m.rules if not r.in_crd})


def test_only_extra_args_immutability_is_left_out_of_the_crd() -> None:
    """CEL cannot read spec.extraArgs (preserve-unknown values), so the API server cannot
    compare it; the operator's broken_transition_rules still refuses the change."""
    assert python_only_rules() == ["immutable-extraArgs"]


_CEL_METHODS = {"all", "exists", "exists_one", "map", "filter", "matches", "startsWith", "endsWith", "contains", "size"}


def field_chains(rule: str) -> Iterator[list[str]]:
    for match in re.finditer(r"\b(?:self|oldSelf)((?:\.\w+)+)", rule):
        yield match.group(1).lstrip(".").split(".")


@pytest.mark.parametrize("path,entry", all_rules(), ids=lambda x: x if isinstance(x, str) else x["rule"][:60])
def test_cel_rule_names_only_fields_cel_can_see(path: str, entry: dict[str, str]) -> None:
    """The API server refuses a CRD whose rule names a field without a CEL type (untyped
    preserve-unknown data, or a map of it); cel-python would not notice, so check here."""
    start = with_object_meta(SCHEMA) if path == "." else dict(walk(SCHEMA))[path]
    for chain in field_chains(entry["rule"]):
        node = start
        for name in chain:
            if name in _CEL_METHODS and name not in node.get("properties", {}):
                break
            assert name in node.get("properties", {}), f"{path}: {'.'.join(chain)} is not a declared field"
            node = node["properties"][name]
            assert cel_visible(node), f"{path}: CEL cannot see {'.'.join(chain)}"


def test_cel_cost_is_bounded_by_schema_limits() -> None:
    """The API server estimates a rule's worst-case cost from maxItems/maxLength/maxProperties;
    every list, map and string a rule iterates or matches must therefore be bounded."""
    for path, node in walk(SCHEMA):
        rules = " ".join(e["rule"] for e in node.get(RULES, []))
        if re.search(r"\bself\.(all|exists|exists_one|map|filter)\(", rules):
            assert "maxItems" in node or "maxProperties" in node, path
        for name in re.findall(r"\bself\.(\w+)\.matches\(", rules):
            assert "maxLength" in node["properties"][name], f"{path}.{name}"
        for name, sub in node.get("properties", {}).items():
            iterated = re.search(rf"self\.{name}\.(all|exists|exists_one|map|filter)\(", rules)
            if iterated and sub.get("type") == "array":
                assert "maxItems" in sub, f"{path}.{name}"
            if iterated and sub.get("type") == "object":
                assert "maxProperties" in sub, f"{path}.{name}"
    assert SCHEMA["properties"]["spec"]["properties"]["extraArgs"]["maxProperties"] == 64


@pytest.mark.parametrize("version", ["1.31", "latest"])
def test_crd_is_a_valid_apiextensions_v1_object(version: str) -> None:
    """Every key is one the API server knows (strict: a typo such as `exclusiveMinmum` fails)."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    kubernetes_validate.validate(crd(), latest_version() if version == "latest" else version, strict=True)
