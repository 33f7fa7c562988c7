"""``kubetune operator``: run the operator process.

Deployment shape (the Helm chart): one Deployment, ``replicas: 1``,
``strategy: Recreate``, so an upgrade never runs two operators at once.  kopf
*peering* (``--peering kubetune``, a ClusterKopfPeering for ``--all-namespaces``
or a KopfPeering per namespace, both CRDs shipped by the chart) is not leader
election: every operator announces itself with a priority and the ones with a
lower priority pause their handlers.  It makes an accidental second operator
(say, ``kubetune operator --priority 100`` on a laptop against the cluster,
for debugging) take over safely instead of racing the in-cluster one.
``--peering ''`` runs standalone.  The status loop (not a kopf handler) applies
kopf's pause rule itself from the same peering object (see ``peering``).

The process serves: kopf's liveness endpoint on ``--health-port``
(``/healthz``), Prometheus metrics on ``--metrics-port`` (``/metrics``: jobs
by phase, reconcile latency, errors, API requests and retries), and JSON logs
on stderr; with ``--progress-port`` also the progress intake (``intake``: trainers
POST their progress, verified by TokenReview; ``--progress-url`` tells the pods
where).  Credentials: ``$KUBECONFIG`` (first file), else the in-cluster
ServiceAccount, else ``~/.kube/config``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
from typing import Any

import kopf

from kubetune.render import RenderOptions

from .handlers import register
from .intake import intake_for
from .kube import Kube, load_connection
from .metrics import Metrics
from .runtime import OperatorConfig, Runtime
from .sync import StatusSync


MAX_DIFFBASE_BYTES = 128 * 1024
"""Largest spec copy kopf may keep in an annotation: all annotations of an object share
256 KiB (apimachinery ValidateAnnotations, TotalAnnotationSizeLimitB), and kubectl's
last-applied-configuration holds another copy."""


class BoundedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, with an oversized spec kept as its digest.

    Such a spec is refused by validation anyway (kubetune.render.checks.MAX_SPEC_BYTES),
    but copying it into an annotation would make kopf's status patch fail (413/422): the
    job would never show why, and kopf would retry forever.  The digest still changes when
    the spec does, so an edit is noticed (and re-validated) as usual."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        encoded = json.dumps(essence, separators=(",", ":"), sort_keys=True)
        if len(encoded) > MAX_DIFFBASE_BYTES:
            spec = json.dumps(essence.get("spec"), separators=(",", ":"), sort_keys=True)
            essence = {**essence, "spec": {"sha256": hashlib.sha256(spec.encode("utf-8", "surrogatepass")).hexdigest()}}
        return essence


def settings_for(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's own bookkeeping goes into kubetune.io/ annotations (never spec, never a finalizer).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = BoundedDiffBaseStorage(prefix="kubetune.io", key="last-handled-configuration")
    settings.persistence.finalizer = "kubetune.io/finalizer"
    # Only failures become Events from kopf; the operator posts its own Events for transitions.
    settings.posting.level = logging.WARNING
    # Watch only the resources known at start: no CRD/namespace observers, so no cluster-wide
    # list/watch on customresourcedefinitions or namespaces is needed (smaller RBAC).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


async def serve(
    config: OperatorConfig,
    *,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> Runtime:
    """Run one operator until ``stop_flag`` (or a signal); returns its runtime for inspection."""
    metrics = Metrics()
    rt = Runtime(config, Kube(config.connection, on_request=metrics.on_request), metrics)
    sync = StatusSync(rt)
    metrics.watch_phases(sync.phases)
    registry = kopf.OperatorRegistry()
    register(registry, rt, sync)
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    metrics.up.set(1)
    intake = None
    if config.progress_port is not None:
        intake = intake_for(
            rt.kube, rt.board, host=config.progress_host, port=config.progress_port, tls=config.progress_tls,
            on_result=lambda code: metrics.progress_reports.labels(str(code)).inc(), namespaces=config.namespaces,
        )
        await intake.start()
    loop_task = asyncio.create_task(sync.run(), name="kubetune-status-sync")
    try:
        await kopf.operator(
            registry=registry,
            settings=settings_for(config),
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=config.priority,
            identity=rt.identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        metrics.up.set(0)
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        if intake is not None:
            await intake.stop()
        await rt.kube.close()
    return rt


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    namespaces: tuple[str, ...] = () if getattr(args, "all_namespaces", False) else tuple(args.namespace or ())
    options = RenderOptions(
        **({"image": args.trainer_image} if getattr(args, "trainer_image", None) else {}),
        default_queue=getattr(args, "default_queue", None),
        progress_url=getattr(args, "progress_url", None) or None,
    )
    if options.progress_url and not options.progress_url.startswith(("http://", "https://")):
        raise ValueError(f"--progress-url must be an http:// or https:// URL, not {options.progress_url!r}")
    tls = (args.progress_tls_cert, args.progress_tls_key) if getattr(args, "progress_tls_cert", None) else None
    if tls and not tls[1]:
        raise ValueError("--progress-tls-cert needs --progress-tls-key")
    peering = getattr(args, "peering", "kubetune")
    return OperatorConfig(
        connection=load_connection(),
        namespaces=namespaces,
        render_options=options,
        metrics_port=getattr(args, "metrics_port", 8080),
        health_port=getattr(args, "health_port", 8081),
        sync_interval_s=float(getattr(args, "sync_interval", 15.0)),
        peering=peering or None,
        priority=int(getattr(args, "priority", 0)),
        progress_port=getattr(args, "progress_port", None) or None,
        progress_tls=tls,
    )


def run_operator(args: argparse.Namespace) -> int:
    """Entry point of ``kubetune operator``; returns the process exit code."""
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=bool(getattr(args, "verbose", False)))
    try:
        config = config_from_args(args)
    except ValueError as exc:
        logging.getLogger("kubetune.operator").error("%s", exc)
        return 2
    except Exception as exc:  # no kubeconfig, unreadable token: say so, do not trace back
        logging.getLogger("kubetune.operator").error("cannot load Kubernetes credentials: %s", exc)
        return 1
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
    return 0
