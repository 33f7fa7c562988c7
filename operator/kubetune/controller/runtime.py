"""What the controller's parts share: settings, the API client, metrics, the progress board."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubetune.render import RenderOptions

from .intake import ProgressBoard
from .kube import Connection, Kube
from .metrics import Metrics
from .peering import own_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    """Everything ``kubetune operator`` flags decide; tests build one directly."""

    connection: Connection
    namespaces: tuple[str, ...] = ()
    """Watch only these namespaces; empty means every namespace."""
    render_options: RenderOptions = field(default_factory=RenderOptions)
    metrics_port: int | None = 8080
    health_port: int | None = 8081
    sync_interval_s: float = 60.0
    """Seconds between rank-0 log tail reads of a running job that does not push its progress."""
    controller_grace_s: float = 120.0
    """A child that no Kubeflow controller touched for this long: ControllerNotRunning."""
    prereq_recheck_s: float = 30.0
    """First re-check of a missing PVC/LocalQueue (doubling up to 5 min)."""
    peering_check_s: float = 10.0
    """How often the workers re-read the peering object to pause together with kopf."""
    sync_concurrency: int = 64
    """Workers reconciling different jobs at once (each makes its few calls one after another)."""
    log_tail_lines: int = 300
    log_limit_bytes: int = 256 * 1024
    retry_delay_s: float = 10.0
    """First retry delay of a failed reconcile (doubling per failure) without a Retry-After."""
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
    gpu_memory_by_product: Mapping[str, str] = field(default_factory=dict)
    """Helm value gpuMemoryByProduct (KUBETUNE_GPU_MEMORY_BY_PRODUCT): GPU memory per nvidia.com/gpu.product."""


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    metrics: Metrics
    identity: str = field(default_factory=own_identity)
    """Peer id shared by kopf and the workers."""
    board: ProgressBoard | None = None
    """Progress pushed by trainers; None: progress comes from rank 0's log tail only."""
