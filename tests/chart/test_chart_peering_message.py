"""The operator's "running standalone" line names the peering object the chart really creates.

Installed for all namespaces the chart creates a ClusterKopfPeering, with watchNamespaces one
KopfPeering per namespace (templates/peering.yaml, rendered here by the real helm). A local
`kubetune operator -n NS` next to an all-namespaces install must not be told that the chart
creates a KopfPeering in NS.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.chartlib import find, needs_helm, template
from kubetune.controller.kube import ApiError
from kubetune.controller.peering import missing_peering

pytestmark = needs_helm


class NoPeerings:
    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise ApiError(404, "NotFound", "not found")


def why(namespaces: tuple[str, ...]) -> str:
    result = asyncio.run(missing_peering(NoPeerings(), "kubetune", namespaces))  # type: ignore[arg-type]
    assert result is not None
    return result


def test_all_namespaces_line_names_the_cluster_peering_the_chart_creates() -> None:
    [peering] = find(template(), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "kubetune" and not find(template(), "KopfPeering")
    line = why(())
    assert line.startswith("no ClusterKopfPeering 'kubetune'") and "when installed for all namespaces" in line


def test_namespaced_line_says_an_all_namespaces_install_has_a_cluster_peering() -> None:
    namespaced = template("--set", "watchNamespaces={team-a}")
    assert [p["metadata"]["namespace"] for p in find(namespaced, "KopfPeering")] == ["team-a"]
    assert not find(namespaced, "ClusterKopfPeering")
    line = why(("team-b",))
    assert line.startswith("no KopfPeering 'kubetune' in namespace team-b")
    assert "only in its watchNamespaces" in line and "ClusterKopfPeering 'kubetune' instead" in line and "-A" in line
