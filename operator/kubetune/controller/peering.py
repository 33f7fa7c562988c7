"""Peering: who else runs, so the workers pause exactly when kopf pauses its watch.

kopf pauses its own handlers when a live peer with a higher (or the same) priority announces
itself in the peering object; the controller's workers are ours, so they make the same decision:
they read the peering object (one GET per ``peering_check_s``, whatever the number of jobs) and
apply kopf's rule to the peers kopf records in its ``status`` (``{identity: {priority, lifetime,
lastseen}}``).  A peering object that cannot be read leaves the workers running: peering protects
against a second operator, and an RBAC or CRD problem must not silently stop status updates.
At start, ``missing_peering`` tells whether the peering object exists at all (else the operator
runs standalone and says so), and ``live_clusterwide_peers`` whether a cluster-wide operator runs.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from .kube import ApiError, Kube, path

log = logging.getLogger(__name__)

PEERING_API = "kopf.dev/v1"


def own_identity() -> str:
    """This operator's peer id (also handed to kopf, so both halves are one peer)."""
    pod = os.environ.get("POD_ID") or socket.gethostname()
    return f"kubetune-{pod}-{uuid.uuid4().hex[:8]}"


def _parse_time(value: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def blocking_peers(status: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime) -> list[str]:
    """Live peers other than us whose priority is not lower than ours (kopf pauses for both)."""
    blockers = []
    for peer, info in status.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(str(info.get("lastseen", "")))
        alive = seen is not None and seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            blockers.append(peer)
    return blockers


async def pause_state(
    kube: Kube, name: str | None, namespaces: tuple[str, ...], identity: str, priority: int
) -> dict[str, int]:
    """The live peers that pause this operator now (kopf's rule), with their priorities."""
    if name is None:
        return {}
    now = datetime.datetime.now(datetime.UTC)
    blockers: dict[str, int] = {}
    for plural, namespace in _targets(namespaces):
        try:
            obj = await kube.request("get", "GET", path(PEERING_API, plural, namespace, name))
        except ApiError as exc:
            log.debug("peering object %s unreadable (%s): the workers stay active", name, exc)
            continue
        status = obj.get("status") or {}
        for peer in blocking_peers(status, identity, priority, now):
            blockers[peer] = int(status[peer].get("priority", 0))
    return blockers


def _targets(namespaces: tuple[str, ...]) -> list[tuple[str, str | None]]:
    return [("clusterkopfpeerings", None)] if not namespaces else [("kopfpeerings", ns) for ns in namespaces]


def _who_creates(kind: str, name: str) -> str:
    """Which chart install creates the peering object (charts/kubetune/templates/peering.yaml):
    a ClusterKopfPeering when it watches every namespace, a KopfPeering per watched namespace."""
    if kind == "ClusterKopfPeering":
        return "the Helm chart creates it when installed for all namespaces, with watchNamespaces empty"
    return (
        f"the Helm chart creates it only in its watchNamespaces; installed for all namespaces it creates "
        f"ClusterKopfPeering {name!r} instead: run with -A to peer with that operator"
    )


async def missing_peering(kube: Kube, name: str, namespaces: tuple[str, ...]) -> str | None:
    """Why peering ``name`` cannot be used (no CRD, no object in a namespace), or None when it can.

    kopf with a peering name but no peering object (or CRD) stays paused without a word; the
    operator checks first and runs standalone instead, saying so.
    """
    for plural, namespace in _targets(namespaces):
        kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
        where = "" if namespace is None else f" in namespace {namespace}"
        try:
            await kube.request("get", "GET", path(PEERING_API, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return f"no {kind} {name!r}{where} ({_who_creates(kind, name)}; its CRD comes with the chart's crds/)"
            if exc.status == 403:
                return f"not allowed to read {kind} {name!r}{where} ({exc.reason})"
            raise
    return None


async def live_clusterwide_peers(kube: Kube, name: str) -> list[str]:
    """Live operators announced in the ClusterKopfPeering ``name`` (an in-cluster, all-namespaces operator)."""
    try:
        obj = await kube.request("get", "GET", path(PEERING_API, "clusterkopfpeerings", None, name))
    except ApiError:
        return []
    now = datetime.datetime.now(datetime.UTC)
    return blocking_peers(obj.get("status") or {}, "", -(10**9), now)
