"""What every handler and the status loop share: settings, the API client, metrics, Events."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf

from kubetune.api.contract import API_VERSION, KIND
from kubetune.render import RenderOptions

from .intake import ProgressBoard
from .kube import ApiError, Connection, Kube
from .metrics import Metrics
from .peering import own_identity
from .status import now_rfc3339

log = logging.getLogger("kubetune.operator")


@dataclass(frozen=True)
class OperatorConfig:
    """Everything ``kubetune operator`` flags decide; tests build one directly."""

    connection: Connection
    namespaces: tuple[str, ...] = ()
    """Watch only these namespaces; empty means every namespace."""
    render_options: RenderOptions = field(default_factory=RenderOptions)
    metrics_port: int | None = 8080
    health_port: int | None = 8081
    sync_interval_s: float = 15.0
    """How often Running jobs' children, pods and rank-0 log are read."""
    sync_concurrency: int = 16
    log_tail_lines: int = 300
    log_limit_bytes: int = 256 * 1024
    retry_delay_s: float = 10.0
    """TemporaryError delay for API failures that carry no Retry-After."""
    peering: str | None = "kubetune"
    """kopf peering name; None runs standalone (no KopfPeering object needed)."""
    priority: int = 0
    progress_port: int | None = None
    """Port of the progress intake (``intake``); None: no intake, the log tail only.
    The pods learn the URL from ``render_options.progress_url``."""
    progress_host: str = "0.0.0.0"
    progress_tls: tuple[str, str] | None = None
    """(certificate, key) files: serve the intake over TLS."""
    progress_fresh_s: float = 150.0
    """A pushed report younger than this replaces the log read (the trainer re-sends every 60 s)."""


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    metrics: Metrics
    identity: str = field(default_factory=own_identity)
    """Peer id shared by kopf and the status loop."""
    board: ProgressBoard = field(default_factory=ProgressBoard)
    """Reports pushed by the trainers (filled by the intake, read by the status loop)."""

    async def post_event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the FineTuneJob; a failure to post is logged, never raised."""
        meta = obj.get("metadata", {})
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubetune-operator"},
            "reportingComponent": "kubetune.io/operator",
            "reportingInstance": "kubetune-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create("v1", "events", event)
            self.metrics.events.labels(reason).inc()
        except ApiError as exc:
            log.warning("could not post Event %s on %s/%s: %s", reason, meta.get("namespace"), meta.get("name"), exc)

    @contextmanager
    def retrying(self, handler: str) -> Iterator[None]:
        """Turn API failures into kopf's retry semantics: transient -> TemporaryError(delay)."""
        try:
            yield
        except ApiError as exc:
            if exc.transient or exc.status in (401, 403, 404):
                # 403/404: RBAC or a CRD (Kubeflow) not installed yet; an admin can fix it without a new spec.
                delay = exc.retry_after or (self.config.retry_delay_s if exc.transient else 6 * self.config.retry_delay_s)
                self.metrics.api_retries.labels(str(exc.status)).inc()
                raise kopf.TemporaryError(f"{handler}: API {exc}", delay=delay) from exc
            raise
