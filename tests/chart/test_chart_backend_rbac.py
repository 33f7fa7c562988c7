"""The chart grants every rule each workload backend declares (operator/kubetune/render/backends,
``rbac()``): adding a backend without its RBAC fails here, not as a 403 in a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from chartlib import ci_objects, default_objects, find, needs_helm  # noqa: F401 (fixtures)
from kubetune.render.backends import BACKENDS

pytestmark = needs_helm


def grants(objects: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    out = set()
    for role in find(objects, kind):
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        out.add((group, resource, verb))
    return out


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_cluster_wide_chart_grants_every_backend_rule(backend: str, default_objects: list[dict[str, Any]]) -> None:
    granted = grants(default_objects, "ClusterRole")
    for rule in BACKENDS[backend].rbac():
        wanted = {(rule.api_group, r, v) for r in rule.resources for v in rule.verbs}
        assert wanted <= granted, f"{backend}: the chart's ClusterRole lacks {sorted(wanted - granted)}"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_namespaced_chart_grants_every_backend_rule(backend: str, ci_objects: list[dict[str, Any]]) -> None:
    roles = find(ci_objects, "Role")
    assert roles
    cluster = grants(ci_objects, "ClusterRole")
    for role in roles:
        granted = grants([role], "Role")
        for rule in BACKENDS[backend].rbac():
            wanted = {(rule.api_group, r, v) for r in rule.resources for v in rule.verbs}
            have = cluster if rule.cluster else granted
            assert wanted <= have, f"{backend} in {role['metadata'].get('namespace')}: missing {sorted(wanted - have)}"
