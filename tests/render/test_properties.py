"""Properties over generated FineTuneJobs: whatever the models accept renders, its children
validate, and no spec string can change the shape of a manifest or reach a command line."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings

from kubetune.api.contract import SPEC_FILE
from kubetune.render import render, validate_object
from kubetune.render.catalog import catalog
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import JobBuilder, pod_templates, schema_errors
from tests.support.strategies import FREE_TEXT, finetune_jobs

PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


RENDERED_WORKLOADS: list[dict[str, Any]] = []
"""The workloads test_accepted_jobs_render_valid_children rendered (the test after it checks them upstream)."""

_USER_TEXT_KEYS = {
    "value",
    "name",
    "path",
    "hub",
    "url",
    "claimName",
    "subPath",
    "run_name",
    "messages",
    "prompt",
    "response",
    "queueName",
    "revision",
}
"""Keys whose values the user writes freely (enum values such as offload: none are kubetune's words, not the user's)."""


def _user_strings(value: Any, key: str = "") -> list[str]:
    if isinstance(value, str):
        return [value] if key in _USER_TEXT_KEYS else []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _user_strings(v, k)]
    if isinstance(value, list):
        return [s for v in value for s in _user_strings(v, key)]
    return []


def _commands(workload: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for template in pod_templates(workload).values():
        for c in template["spec"]["containers"]:
            out += c.get("command", []) + c.get("args", [])
    return out


# xdist_group: the property and the upstream check after it share RENDERED_WORKLOADS, so one worker runs both
# (pytest -n with --dist loadgroup); the check still fills the list itself when it runs alone.
@pytest.mark.slow
@pytest.mark.xdist_group("render-properties")
@PROPERTY_SETTINGS
@given(doc=finetune_jobs())
def test_accepted_jobs_render_valid_children(doc: dict[str, Any]) -> None:
    job, problems = validate_object(doc)
    assume(job is not None)
    assert not problems
    rendered = render(job)

    # train.yaml is exactly the arguments, and every key is one LLaMA-Factory knows.
    assert yaml.safe_load(rendered.files["train.yaml"]) == rendered.train_args
    assert set(rendered.train_args) <= set(catalog().args)
    # The trainer's copy of the spec is the spec.
    assert json.loads(rendered.files[SPEC_FILE])["spec"] == job.spec.to_api()

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(rendered.config_map, version, strict=True)
    for role, template in pod_templates(rendered.workload).items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": role.lower(), **template["metadata"]},
            "spec": template["spec"],
        }
        kubernetes_validate.validate(pod, version, strict=True)
    RENDERED_WORKLOADS.append(rendered.workload)  # checked against the upstream CRDs by the next test

    # No string written by the user reaches a command line.
    spec_strings = {s for s in _user_strings(doc["spec"]) if len(s) > 2}
    assert not spec_strings & set(_commands(rendered.workload))


@pytest.mark.slow  # as the property it checks after
@pytest.mark.xdist_group("render-properties")
def test_the_rendered_workloads_pass_the_upstream_crds() -> None:
    """The Kubeflow jobs the property above rendered, against the upstream CRDs (strict). A separate
    test so that the property runs without the CRDs and this part skips visibly. Where the property did not
    run in this process (selected alone, or on another worker), it runs here first."""
    require_upstream_crds()
    if not RENDERED_WORKLOADS:
        test_accepted_jobs_render_valid_children()
    assert RENDERED_WORKLOADS, "the property accepted no job: nothing rendered to check"
    for workload in RENDERED_WORKLOADS:
        assert schema_errors(workload) == [], f"{workload['kind']} {workload['metadata']['name']}"


@PROPERTY_SETTINGS
@given(value=FREE_TEXT)
def test_hostile_strings_round_trip_or_are_rejected(value: str) -> None:
    """Free-text fields keep their exact value through Jinja + YAML; structured fields refuse it."""
    env_job = (
        JobBuilder().set("spec.env", [{"name": "NOTE", "value": value}]).set("spec.extraArgs", {"run_name": value})
    )
    job, problems = validate_object(env_job.doc_copy())
    assert job is not None, problems
    rendered = render(job)
    for template in pod_templates(rendered.workload).values():
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["NOTE"] == value
    assert yaml.safe_load(rendered.files["train.yaml"])["run_name"] == value
    assert yaml.safe_load(yaml.safe_dump(rendered.config_map))["data"] == rendered.files
    assert value not in _commands(rendered.workload) or value in ("python", "-m")

    # Fields that end up in paths, names or argv only take their patterns.
    for path in (
        "spec.datasets",
        "spec.model.template",
        "spec.image",
        "metadata.name",
        "spec.storage.outputs.claimName",
    ):
        if re.fullmatch(r"[A-Za-z0-9._/@+=-]+", value):
            continue  # no quote, space or shell/YAML/Jinja character: may be a legitimate value
        b = JobBuilder()
        if path == "spec.datasets":
            b.set(path, [{"name": "d", "path": value}])
        else:
            b.set(path, value)
        bad, found = validate_object(b.doc_copy())
        assert bad is None and found, f"{path}={value!r} was accepted"


def test_template_syntax_in_values_is_not_evaluated() -> None:
    job = JobBuilder().set("spec.env", [{"name": "T", "value": "{{ plan.name }}{% if true %}x{% endif %}"}]).build()
    env = pod_templates(render(job).workload)["Master"]["spec"]["containers"][0]["env"]
    assert {"name": "T", "value": "{{ plan.name }}{% if true %}x{% endif %}"} in env


def test_typed_affinity_passes_through_unchanged() -> None:
    """spec.scheduling.affinity is a core/v1 Affinity: a valid one reaches every pod exactly as written."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "example.com/pool", "operator": "In", "values": ["a-1", "b_2.c"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {"matchExpressions": [{"key": "gpu-mem", "operator": "Gt", "values": ["40"]}]},
                }
            ],
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "other"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    }
    job = JobBuilder().set("spec.scheduling", {"affinity": affinity}).set("spec.resources", {"nodes": 2}).build()
    for template in pod_templates(render(job).workload).values():
        assert template["spec"]["affinity"] == affinity
