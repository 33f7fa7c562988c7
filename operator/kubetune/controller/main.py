"""``kubetune operator``: run the operator process.

Deployment shape (the Helm chart): one Deployment, ``replicas: 1``, ``strategy: Recreate``, so
an upgrade never runs two operators at once.  kopf *peering* (``--peering kubetune``, a
ClusterKopfPeering for ``--all-namespaces`` or a KopfPeering per namespace, both created by the
chart) is not leader election: every operator announces itself with a priority and the ones with
a lower or equal priority pause.  Started where the peering object (or its CRD) does not exist,
the operator runs standalone and says so in one log line; ``--peering ''`` always runs
standalone.  ``kubetune operator -A --priority 100`` on a laptop takes over from the in-cluster
one while it runs (the in-cluster one pauses and says so).

Namespaces: ``-n NS`` (repeatable) watches those; ``-A`` watches all.  With neither, a copy
running inside a cluster watches all namespaces, and a copy running outside (a laptop) watches
only the kubeconfig context's namespace, as kubectl does.  The scope is logged at start.

The process serves kopf's liveness endpoint on ``--health-port`` (``/healthz``), Prometheus
metrics on ``--metrics-port`` (``/metrics``), and JSON logs on stderr; with ``--progress-port`` also the
progress intake (``intake``: trainers POST their progress, verified by TokenReview; ``--progress-url``
tells the pods where).  A port already in use is
one error line and exit code 1.  Credentials as kubectl finds them: ``$KUBECONFIG`` (its files merged as
kubectl merges them, ``kubeconfig``), else ``~/.kube/config``; the in-cluster ServiceAccount when those
hold no cluster (the operator's pod has no kubeconfig).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from typing import Any

import kopf

from kubetune.plan.feasibility import product_table
from kubetune.render import RenderOptions

from .handlers import register
from .intake import IntakeServer, ProgressBoard, intake_for
from .kube import SA_TOKEN, Kube, load_connection
from .loop import Controller
from .metrics import Metrics
from .peering import live_clusterwide_peers, missing_peering
from .runtime import OperatorConfig, Runtime

log = logging.getLogger(__name__)


class PortBusy(Exception):
    """A port the operator must serve on is taken."""


class Refused(Exception):
    """Starting would make two operators act on the same jobs."""


def _check_port(port: int | None, what: str) -> None:
    if port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - the same address the server binds
        except OSError as exc:
            raise PortBusy(
                f"{what} port {port} is already in use ({exc.strerror}): stop what uses it, or pass --{what}-port"
            ) from exc


class _QuietHandlerSuccess(logging.Filter):
    """kopf logs "Handler 'index' succeeded." at info for every event of every job: debug only."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("Handler '") and text.endswith(" succeeded."):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.verbose
        return True


def quiet_kopf(verbose: bool = False) -> None:
    logger = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietHandlerSuccess) for f in logger.filters):
        logger.addFilter(_QuietHandlerSuccess(verbose))


def settings_for(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Only an on.event handler is registered (handlers.py), so kopf stores no handler progress and
    # no diff-base (those serve on.create/update/resume) and never adds a finalizer.  kopf still
    # removes this finalizer name from a job whenever no handler needs one: it must be ours, never
    # kopf's default, which another kopf operator could own.
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


STOP_GRACE_S = 5.0
"""At a stop, how long the reconciles under way may take to finish their writes before they are cancelled."""


async def _peering_to_use(rt: Runtime, config: OperatorConfig) -> str | None:
    """The peering object's name the operator runs with, None: standalone (``--peering ''``, or the
    object is missing); says which in the first log line.  Refuses a namespaced copy beside a live
    cluster-wide operator."""
    scope = "all namespaces" if not config.namespaces else "namespace(s) " + ", ".join(config.namespaces)
    peering = config.peering
    try:
        why = await missing_peering(rt.kube, peering, config.namespaces) if peering is not None else None
    except Exception as exc:  # noqa: BLE001 - the server is unreachable: kopf will say so and retry
        why = None
        log.debug("could not check the peering object: %s", exc)
    if peering is None:
        log.info("watching %s; running standalone (--peering '')", scope)
    elif why is not None:
        if config.namespaces:
            # A namespaced copy cannot pause a cluster-wide one (they peer on different objects):
            # never race it silently.
            others = await live_clusterwide_peers(rt.kube, config.peering or "")
            if others:
                await rt.kube.close()
                raise Refused(
                    f"an operator watching all namespaces runs ({', '.join(others)} on ClusterKopfPeering "
                    f"{config.peering!r}); this copy for {scope} would race it: "
                    "run `kubetune operator -A --priority 100` to take over instead, or stop it"
                )
        log.info("watching %s; running standalone, without peering: %s", scope, why)
        peering = None
    else:
        log.info("watching %s; peering %r with priority %d", scope, peering, config.priority)
    return peering


async def _start_intake(
    rt: Runtime, config: OperatorConfig, board: ProgressBoard, metrics: Metrics
) -> IntakeServer | None:
    """The progress push endpoint, listening (None without ``--progress-port``)."""
    if config.progress_port is None:
        return None
    intake = intake_for(
        rt.kube,
        board,
        host=config.progress_host,
        port=config.progress_port,
        tls=config.progress_tls,
        on_result=lambda code: metrics.progress_reports.labels(str(code)).inc(),
        namespaces=config.namespaces,
    )
    try:
        await intake.start()
    except OSError as exc:
        await rt.kube.close()
        raise PortBusy(
            f"progress port {config.progress_port} is already in use ({exc.strerror}): "
            "stop what uses it, or pass --progress-port"
        ) from exc
    return intake


async def serve(
    config: OperatorConfig,
    *,
    stop_flag: Any = None,
    ready_flag: Any = None,
    board: ProgressBoard | None = None,
) -> Runtime:
    """Run one operator until ``stop_flag`` (or a signal); returns its runtime for inspection.

    ``board``: where pushed progress reports land (a new one when not given)."""
    _check_port(config.metrics_port, "metrics")
    _check_port(config.health_port, "health")
    quiet_kopf()
    metrics = Metrics()
    board = board if board is not None else ProgressBoard()
    rt = Runtime(config, Kube(config.connection, on_request=metrics.on_request), metrics, board=board)
    peering = await _peering_to_use(rt, config)
    controller = Controller(rt, peering=peering)
    metrics.watch_phases(controller.phases)
    registry = kopf.OperatorRegistry()
    register(registry, rt, controller)
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_port)
        except OSError as exc:
            raise PortBusy(
                f"metrics port {config.metrics_port} is already in use ({exc.strerror}): "
                "stop what uses it, or pass --metrics-port"
            ) from exc
    metrics.up.set(1)
    intake = await _start_intake(rt, config, board, metrics)
    loop_task = asyncio.create_task(controller.run(), name="kubetune-controller")

    # kopf 1.45.2 kopf/_core/reactor/running.py:406-416 (run_tasks): once its root tasks are gone, it
    # takes every task created after it started as its own ("TODO: an assumption! the loop is not
    # fully ours!"), waits up to 5 s for them (line 413, `aiotasks.wait(hung_tasks, timeout=5)`), and
    # only then cancels them. The controller's informers and workers are such tasks and never end by
    # themselves, so every stop (SIGTERM in a pod, each operator stop in the tests) took 5 s more. The
    # cleanup activity runs inside kopf's root task, after the other root tasks exit and before that
    # wait (running.py:526-562, startup_cleanup_activities): stopping our own tasks there leaves
    # nothing to wait for. The reconciles under way first finish their writes (up to STOP_GRACE_S,
    # the grace kopf's wait gave them), so a SIGTERM does not cut one between its children and its
    # status patch; none starts after the stop.
    @kopf.on.cleanup(registry=registry)
    async def stop_own_tasks(**_: Any) -> None:
        await controller.drain(STOP_GRACE_S)
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
        if intake is not None:
            await intake.stop()

    try:
        await kopf.operator(
            registry=registry,
            settings=settings_for(config),
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=peering is None,
            peering_name=peering,
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


def in_cluster(connection: Any) -> bool:
    return getattr(connection, "token_file", None) == SA_TOKEN


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    connection = load_connection()
    namespaces: tuple[str, ...] = () if getattr(args, "all_namespaces", False) else tuple(args.namespace or ())
    if not namespaces and not getattr(args, "all_namespaces", False) and not in_cluster(connection):
        # Outside a cluster (a laptop) the default is the kubeconfig context's namespace, as for kubectl.
        namespaces = (getattr(connection, "default_namespace", None) or "default",)
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
        connection=connection,
        namespaces=namespaces,
        render_options=options,
        metrics_port=getattr(args, "metrics_port", 8080),
        health_port=getattr(args, "health_port", 8081),
        sync_interval_s=float(getattr(args, "sync_interval", 60.0)),
        peering=peering or None,
        priority=int(getattr(args, "priority", 0)),
        progress_port=getattr(args, "progress_port", None) or None,
        progress_tls=tls,
        gpu_memory_by_product=product_table(extra=getattr(args, "gpu_memory_by_product", None) or ()),
    )


def run_operator(args: argparse.Namespace) -> int:
    """Entry point of ``kubetune operator``; returns the process exit code."""
    verbose = bool(getattr(args, "verbose", False))
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=verbose)
    quiet_kopf(verbose)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # no kubeconfig, unreadable token: say so, do not trace back
        log.error("cannot load Kubernetes credentials: %s", exc)
        return 1
    try:
        asyncio.run(serve(config))
    except (PortBusy, Refused) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
