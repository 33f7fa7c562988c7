"""The chart grants every rule each workload backend declares (operator/kubetune/cluster/backends,
``rbac()``), and exactly the rules the serving engines declare (operator/kubetune/cluster/serving):
adding a backend or an engine without its RBAC fails here, not as a 403 in a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.chartlib import ci_objects, default_objects, find, needs_helm  # noqa: F401 (fixtures)
from kubetune.cluster.backends import BACKENDS
from kubetune.cluster.serving import ENGINES

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


OTHER_USES: dict[tuple[str, str], set[str]] = {
    ("", "configmaps"): {"get", "create", "patch"},  # the training ConfigMap (server-side apply, read back)
    ("", "persistentvolumeclaims"): {
        "list",
        "watch",
    },  # the informer of the prerequisite PVCs the specs name (controller/cache.py)
}
"""What the operator does, besides serving, with a resource a serving engine also writes."""


def engine_grants() -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, over every rule of every serving engine."""
    out: dict[tuple[str, str], set[str]] = {}
    for engine in ENGINES.values():
        for rule in engine.rbac():
            assert not rule.cluster, f"{engine.name}: serving objects are namespaced"
            for resource in rule.resources:
                out.setdefault((rule.api_group, resource), set()).update(rule.verbs)
    return out


def by_resource(granted: set[tuple[str, str, str]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in granted:
        out.setdefault((group, resource), set()).add(verb)
    return out


def assert_serving_rules_equal(granted: set[tuple[str, str, str]], where: str) -> None:
    have = by_resource(granted)
    wanted = engine_grants()
    for key, verbs in wanted.items():
        assert have.get(key, set()) == verbs | OTHER_USES.get(key, set()), (
            f"{where}: {key} granted {sorted(have.get(key, set()))}, engines need {sorted(verbs)}"
        )
    # Nothing else in the serving kinds' own API groups (apps, batch, serving.kserve.io, kaito.sh).
    groups = {group for group, _ in wanted if group}
    extra = {key for key in have if key[0] in groups} - set(wanted)
    assert not extra, f"{where}: the chart grants serving groups' resources no engine writes: {sorted(extra)}"


def test_cluster_wide_chart_grants_exactly_the_serving_engines_rules(default_objects: list[dict[str, Any]]) -> None:
    assert_serving_rules_equal(grants(default_objects, "ClusterRole"), "ClusterRole")


def test_namespaced_chart_grants_exactly_the_serving_engines_rules(ci_objects: list[dict[str, Any]]) -> None:
    roles = find(ci_objects, "Role")
    assert roles
    for role in roles:
        assert_serving_rules_equal(grants([role], "Role"), f"Role in {role['metadata'].get('namespace')}")
