"""Rendered output reads back exactly, fits Kubernetes, and leaves nothing to the user's env (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.api import RESERVED_ENV
from kubetune.api.resource import MAX_NAME_LENGTH
from kubetune.api.safeyaml import load_documents
from kubetune.api.spec import MAX_NODES
from kubetune.render import RenderOptions, checks, render, validate_object
from kubetune.render.output import to_yaml

from tests.support.renderlib import JobBuilder, pod_templates

# --- a YAML 1.1 reader with go-yaml v2's implicit types (gopkg.in/yaml.v2 resolve.go) ------------


class GoYamlV2Loader(yaml.SafeLoader):
    """Resolves plain scalars the way go-yaml v2 does (kubectl, Argo CD, Helm via sigs.k8s.io/yaml).

    Values are built as Go would (a timestamp as a tagged tuple), so a string
    read back as anything else fails the comparison.
    """


GoYamlV2Loader.yaml_implicit_resolvers = {}
_GO_RULES = [
    ("tag:yaml.org,2002:bool", r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|"),
    # resolve.go strips '_' and calls strconv.ParseInt(plain, 0, 64): 0b, 0o, 0x and leading-0 octal.
    ("tag:yaml.org,2002:int", r"[-+]?(0b[01_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)"),
    # yamlStyleFloat plus the special values.
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
    ),
    ("tag:yaml.org,2002:timestamp", r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?"),
]
for _tag, _rx in _GO_RULES:
    GoYamlV2Loader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_rx})$"), None)


def _go_int(text: str) -> int:
    plain = text.replace("_", "")
    sign, digits = (-1, plain[1:]) if plain.startswith("-") else (1, plain.lstrip("+"))
    if re.fullmatch(r"0[0-7]+", digits):
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _go_float(text: str) -> float:
    plain = text.replace("_", "").lower()
    return float(plain.replace(".inf", "inf").replace(".nan", "nan"))


_GO_VALUES = {
    "tag:yaml.org,2002:bool": lambda v: v.lower() in ("y", "yes", "true", "on"),
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:int": _go_int,
    "tag:yaml.org,2002:float": _go_float,
    "tag:yaml.org,2002:timestamp": lambda v: ("timestamp", v),
}
for _tag, _make in _GO_VALUES.items():
    GoYamlV2Loader.add_constructor(_tag, lambda loader, node, make=_make: make(loader.construct_scalar(node)))


def _go_load_all(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=GoYamlV2Loader) if d is not None]  # noqa: S506 - SafeLoader subclass


# --- round trips -------------------------------------------------------------------------

AMBIGUOUS_NAMES = [
    "1e5",
    "y",
    "n",
    "on",
    "off",
    "no",
    "yes",
    "null",
    "0x1f",
    "017",
    "1-2",
    "2001-01-01",
    "123",
    "1_0",
    "inf",
    "nan",
]


def _job(name: str, namespace: str = "ml", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    b = JobBuilder().set("metadata.name", name).set("metadata.namespace", namespace)
    b.set("spec.datasets", [{"name": name, "hub": "o/d"}])
    if extra:
        b.set("spec.extraArgs", extra)
    return b.doc_copy()


def _round_trip(doc: dict[str, Any], tmp_path: Path) -> None:
    job, problems = validate_object(doc)
    assert job is not None, problems
    rendered = render(job)
    text = to_yaml(rendered.objects)
    assert list(yaml.safe_load_all(text)) == rendered.objects, "PyYAML (YAML 1.1) reads something else"
    assert list(load_documents(text)) == rendered.objects, "kubetune's loader (kubectl's rules) reads something else"
    assert _go_load_all(text) == rendered.objects, "a go-yaml v2 reader (kubectl, Argo CD) reads something else"
    omegaconf = pytest.importorskip("omegaconf")
    for name, body in rendered.files.items():
        if name.endswith(".yaml"):
            assert _go_load_all(body) == [yaml.safe_load(body)], name
            # LLaMA-Factory reads train.yaml (and export.yaml) with OmegaConf.load.
            path = tmp_path / name
            path.write_text(body, encoding="utf-8")
            loaded = omegaconf.OmegaConf.to_container(omegaconf.OmegaConf.load(path), resolve=True)
            assert loaded == yaml.safe_load(body), f"OmegaConf reads {name} differently"
    assert yaml.safe_load(rendered.files["train.yaml"]) == rendered.train_args


@pytest.mark.parametrize("name", AMBIGUOUS_NAMES)
def test_type_ambiguous_names_read_back_as_strings(name: str, tmp_path: Path) -> None:
    """A job, namespace and dataset named `1e5` / `y` / `on` stay strings for every reader."""
    label = re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None
    doc = _job(name if label else "rt", namespace=name if label else "ml")
    doc["spec"]["datasets"][0]["name"] = name  # dataset names also reach train.yaml (`dataset:`)
    _round_trip(doc, tmp_path)


@given(value=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_extra_args_strings_read_back_exactly(value: str, tmp_path: Path) -> None:
    """Any string a user may give an extraArgs key reaches LLaMA-Factory (via OmegaConf) unchanged."""
    doc = _job("rt", extra={"run_name": value})
    job, problems = validate_object(doc)
    if "${" in value:
        assert job is None and any("OmegaConf" in p.message for p in problems)
        return
    _round_trip(doc, tmp_path)


def test_interpolation_in_extra_args_is_refused_with_the_field() -> None:
    job, problems = validate_object(_job("rt", extra={"run_name": "a${b"}))
    assert job is None
    assert [p.path for p in problems] == ["spec.extraArgs.run_name"]


# --- env names the renderer sets -----------------------------------------------------------

MATRIX = [
    {"spec.resources": {"nodes": 2}},
    {"spec.resources": {"nodes": 3}, "spec.distributed": {"backend": "mpijob"}},
    {"spec.distributed": {"launcher": "accelerate"}},
    {"spec.distributed": {"zeroStage": 2}, "spec.hfTokenSecretRef": {"name": "hf"}},
    {"spec.resources": {"gpusPerNode": 0}, "spec.training": {"precision": "fp32"}},
    {"spec.export": {"enabled": True}},
]


@pytest.mark.parametrize("patch", MATRIX, ids=lambda p: ",".join(p))
def test_every_variable_the_renderer_sets_is_reserved(patch: dict[str, Any]) -> None:
    """Derived from the renderer: any name it puts in a container is one spec.env must refuse."""
    b = JobBuilder().set("spec.env", [{"name": "USER_VAR", "value": "1"}])
    for k, v in patch.items():
        b.set(k, v)
    job = b.build()
    for template in pod_templates(render(job).workload).values():
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            for var in container.get("env", []):
                name = var["name"]
                if name == "USER_VAR":
                    continue
                assert name in RESERVED_ENV or name.startswith(("PET_", "OMPI_")), (
                    f"{name} is set by the renderer but not reserved"
                )
                refused, problems = validate_object(
                    JobBuilder().set("spec.env", [{"name": name, "value": "x"}]).doc_copy()
                )
                assert refused is None and any(p.path == "spec.env[0].name" for p in problems), name


# --- names and sizes ---------------------------------------------------------------------


def _names(obj: Any) -> list[str]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("name", "claimName", "serviceName") and isinstance(v, str):
                out.append(v)
            out.extend(_names(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_names(v))
    return out


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob"])
def test_longest_name_and_most_nodes_give_names_of_at_most_63(backend: str) -> None:
    name = "a" * MAX_NAME_LENGTH
    job = JobBuilder().set("metadata.name", name).set("spec.resources", {"nodes": MAX_NODES}).build()
    rendered = render(job, RenderOptions(backend=backend))  # type: ignore[arg-type]
    # Kubeflow names the pods <job>-<replica type>-<index> (also their host names).
    pods = [f"{name}-master-0"] + [f"{name}-worker-{i}" for i in range(MAX_NODES)] + [f"{name}-launcher"]
    for derived in pods + _names(rendered.objects):
        assert len(derived) <= 63, derived
    too_long, problems = validate_object(JobBuilder().set("metadata.name", "a" * (MAX_NAME_LENGTH + 1)).doc_copy())
    assert too_long is None and problems[0].path == "metadata.name"


def test_objects_larger_than_kubernetes_stores_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 env values of 4 KiB that JSON escapes sixfold: the spec itself is over its 128 KiB limit,
    and (with that limit lifted) the ConfigMap it renders is over the 1 MiB Kubernetes stores."""
    doc = JobBuilder().set("spec.env", [{"name": f"V{i}", "value": "\x01" * 4096} for i in range(64)]).doc_copy()
    job, problems = validate_object(doc)
    assert job is None and [p.path for p in problems] == ["spec"] and "131072" in problems[0].message
    monkeypatch.setattr(checks, "MAX_SPEC_BYTES", 10 * 1024 * 1024)
    job, problems = validate_object(doc)
    assert job is None
    assert any("ConfigMap" in p.message and "1048576" in p.message for p in problems), problems
    assert any("PyTorchJob" in p.message and "1572864" in p.message for p in problems), problems
