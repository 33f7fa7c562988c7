"""Keep the status loop as quiet as kopf's handlers when peering pauses this operator.

kopf pauses its own handlers when a live peer with a higher (or the same)
priority announces itself in the peering object, but the status loop is ours,
so it must make the same decision: it reads the peering object (one GET per
interval per peering object, whatever the number of jobs) and applies kopf's
rule to the peers kopf records in its ``status`` (``{identity: {priority,
lifetime, lastseen}}``).  A peering object that cannot be read leaves the loop
running: peering protects against a second operator, and an RBAC or CRD
problem must not silently stop status updates.
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

log = logging.getLogger("kubetune.operator.peering")

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


async def paused(kube: Kube, name: str | None, namespaces: tuple[str, ...], identity: str, priority: int) -> bool:
    """Whether kopf's peering rule pauses this operator now."""
    if name is None:
        return False
    now = datetime.datetime.now(datetime.UTC)
    targets = [("clusterkopfpeerings", None)] if not namespaces else [("kopfpeerings", ns) for ns in namespaces]
    for plural, namespace in targets:
        try:
            obj = await kube.request("get", "GET", path(PEERING_API, plural, namespace, name))
        except ApiError as exc:
            log.debug("peering object %s unreadable (%s): status loop stays active", name, exc)
            continue
        if blocking_peers(obj.get("status") or {}, identity, priority, now):
            return True
    return False
