"""Prometheus metrics of the operator, served on ``--metrics-port``.

One ``CollectorRegistry`` per operator run (not the process-global one), so
tests and the benchmark can start several operators in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from kubetune.api.status import Phase

PHASES: tuple[Phase, ...] = ("Pending", "Running", "Exporting", "Succeeded", "Failed", "Suspended")


class _PhaseCollector:
    """``kubetune_finetunejobs{phase}`` computed at scrape time from the operator's index."""

    def __init__(self, phases: Callable[[], dict[str, int]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kubetune_finetunejobs", "FineTuneJobs seen by this operator, by status.phase", labels=["phase"]
        )
        counts = self._phases()
        for phase in (*PHASES, "Unknown"):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconcile_seconds = Histogram(
            "kubetune_reconcile_seconds", "Time spent in one reconcile (observe, decide, act)", ["handler"], registry=r
        )
        self.errors = Counter(
            "kubetune_reconcile_errors_total",
            "Failed reconciles by exception kind (retried with backoff)",
            ["handler", "kind"],
            registry=r,
        )
        self.api_requests = Counter(
            "kubetune_api_requests_total", "API requests made by kubetune itself", ["verb", "code"], registry=r
        )
        self.api_retries = Counter(
            "kubetune_api_retries_total",
            "Reconciles retried because of an API error, by HTTP status",
            ["reason"],
            registry=r,
        )
        self.events = Counter("kubetune_events_total", "Kubernetes Events posted", ["reason"], registry=r)
        self.progress_reports = Counter(
            "kubetune_progress_reports_total",
            "Progress reports pushed by trainers, by HTTP answer",
            ["code"],
            registry=r,
        )
        self.up = Gauge("kubetune_operator_up", "1 while the operator serves", registry=r)

    def watch_phases(self, phases: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_PhaseCollector(phases))

    def on_request(self, verb: str, _resource: str, status: int) -> None:
        self.api_requests.labels(verb, str(status)).inc()

    @contextmanager
    def timed(self, handler: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.errors.labels(handler, type(exc).__name__).inc()
            raise
        finally:
            self.reconcile_seconds.labels(handler).observe(time.perf_counter() - start)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
