"""values.schema.json turns bad values into a clear `helm template` error; every value is used."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.chartlib import CHART, load_yaml, needs_helm, template_error


@needs_helm
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "replicas=2"], "at '/replicas': value must be 1"),
        (
            ["--set", "image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        (["--set", "replica=1"], "additional properties 'replica' not allowed"),
        (["--set", "metrics.serviceMonitor.enable=true"], "additional properties 'enable' not allowed"),
        (["--set", "watchNamespaces[0]=Team_A"], "at '/watchNamespaces/0'"),
        (["--set", "kueue.defaultQueue=GPU Queue"], "at '/kueue/defaultQueue'"),
        (["--set", "metrics.port=70000"], "at '/metrics/port'"),
        (["--set", "securityContext.runAsNonRoot=false"], "at '/securityContext/runAsNonRoot'"),
        (["--set", "service.type=ExternalName"], "at '/service/type'"),
        (["--set", "registry=https://Registry.example.com"], "at '/registry'"),
        (["--set", "crds.enabled=false"], "crds.enabled and crds.keep were removed"),
        (["--set", "health.port=8080"], "metrics.port and health.port must differ"),
        (["--set", "progress.port=8081"], "progress.port must differ from metrics.port and health.port"),
        (["--set", "progress.push=yes"], "at '/progress/push'"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "=" not in v else None,
)
def test_bad_values_fail_with_a_clear_message(args: list[str], expected: str) -> None:
    assert expected in template_error(*args)


def _leaves(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [leaf for k, v in values.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_is_described_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    for leaf in _leaves(load_yaml(CHART / "values.yaml")):
        node = schema
        for part in leaf.split("."):
            if part not in node.get("properties", {}) and node.get("additionalProperties", True) is not False:
                break  # a free-form map or a pass-through Kubernetes object (resources, securityContext)
            assert part in node.get("properties", {}), f"values.yaml key {leaf} is not in values.schema.json"
            node = node["properties"][part]
        assert node.get("description") or node.get("type") == "object", f"{leaf} has no description"


def test_every_value_is_used_by_a_template() -> None:
    """An unused value is a promise the chart does not keep (cert-manager's unused-values lint)."""
    templates = "\n".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").rglob("*") if p.is_file())
    for leaf in _leaves(load_yaml(CHART / "values.yaml")):
        parts = leaf.split(".")
        # a value is used when the template reads it or a parent block (toYaml of a whole block)
        used = any(f".Values.{'.'.join(parts[:n])}" in templates for n in range(len(parts), 0, -1))
        assert used, f"values.yaml key {leaf} is never read by charts/kubetune/templates"
