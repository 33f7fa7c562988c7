"""spec.distributed.backend: auto - which child kind this cluster can run, from API discovery.

The rule (docs/trainjob.md): TrainJob when the cluster serves ``trainer.kubeflow.org/v1alpha1``
TrainJob (Kubeflow Trainer v2) *and* kubetune's ClusterTrainingRuntime exists *and* the job has
nothing a TrainJob cannot carry; otherwise PyTorchJob.  MPIJob is never chosen: only asked for.

Discovery answers (``GET /apis/<group>/<version>``, an APIResourceList) and the runtime's presence
are cached: a found answer for ``ttl_s``, a missing one for ``missing_ttl_s``, and both are dropped
at once when an informer sees a child kind appear (``invalidate``, wired to the informers'
``on_served``), so a job created right after Trainer is installed is not stuck on the old answer.
The choice is made once per job, before its child exists; afterwards the child's kind decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubetune.api import FineTuneJob
from kubetune.cluster.backends import AUTO, BACKENDS, OFFLINE_DEFAULT
from kubetune.cluster.backends.trainjob import ENABLE_RUNTIME, RUNTIME_NAME, TrainJobBackend
from kubetune.render.backends import RENDERERS

from .kube import ApiError, Kube

RUNTIMES_PLURAL = "clustertrainingruntimes"


@dataclass(frozen=True)
class Choice:
    backend: str
    """A key of BACKENDS."""
    why: str
    """What discovery found, as a sentence (status.job.selection and the BackendSelected Event)."""


@dataclass
class Discovery:
    kube: Kube
    ttl_s: float = 300.0
    missing_ttl_s: float = 30.0
    _kinds: dict[str, tuple[frozenset[str], float]] = field(default_factory=dict)
    _runtime: tuple[bool | None, float] | None = None

    def invalidate(self) -> None:
        """Forget every answer (a child kind just appeared)."""
        self._kinds.clear()
        self._runtime = None

    async def served_kinds(self, api_version: str, now: float | None = None) -> frozenset[str]:
        """The kinds the cluster serves in ``api_version`` (empty: the group/version is not served)."""
        now = time.time() if now is None else now
        cached = self._kinds.get(api_version)
        if cached is not None and now - cached[1] < (self.ttl_s if cached[0] else self.missing_ttl_s):
            return cached[0]
        try:
            listing = await self.kube.request("discovery", "GET", f"/apis/{api_version}")
        except ApiError as exc:
            if exc.status != 404:
                raise  # unknown: the work queue retries; never decide on a guess
            listing = {}
        kinds = frozenset(
            str(r.get("kind")) for r in (listing or {}).get("resources") or [] if "/" not in str(r.get("name", ""))
        )
        self._kinds[api_version] = (kinds, now)
        return kinds

    async def runtime_present(self, now: float | None = None) -> bool | None:
        """Whether kubetune's ClusterTrainingRuntime exists (the chart's trainingRuntimes.enabled);
        None when the operator may not read it (403: RBAC left to the platform team without that grant)."""
        now = time.time() if now is None else now
        if self._runtime is not None and now - self._runtime[1] < (
            self.ttl_s if self._runtime[0] else self.missing_ttl_s
        ):
            return self._runtime[0]
        found: bool | None
        try:
            found = await self.kube.get(TrainJobBackend.api_version, RUNTIMES_PLURAL, "", RUNTIME_NAME) is not None
        except ApiError as exc:
            if exc.status != 403:
                raise
            found = None
        self._runtime = (found, now)
        return found

    async def choose(self, job: FineTuneJob, now: float | None = None) -> Choice:
        """The backend for ``job`` (whose spec says auto), and why."""
        tj = BACKENDS[TrainJobBackend.name]
        if tj.kind not in await self.served_kinds(tj.api_version, now):
            return Choice(
                OFFLINE_DEFAULT,
                f"the cluster does not serve {tj.kind} {tj.api_version} (Kubeflow Trainer v2 is "
                "not installed): using PyTorchJob",
            )
        present = await self.runtime_present(now)
        if present is None:
            return Choice(
                OFFLINE_DEFAULT,
                f"the cluster serves {tj.kind} {tj.api_version} but the operator may not read "
                f"ClusterTrainingRuntime {RUNTIME_NAME} (grant get on trainer.kubeflow.org clustertrainingruntimes, "
                "as the chart does): using PyTorchJob",
            )
        if not present:
            return Choice(
                OFFLINE_DEFAULT,
                f"the cluster serves {tj.kind} {tj.api_version} but has no ClusterTrainingRuntime {RUNTIME_NAME} "
                f"({ENABLE_RUNTIME}): using PyTorchJob",
            )
        problems = RENDERERS[tj.name].check(job)  # what a TrainJob rendered from this spec cannot carry
        if problems:
            return Choice(
                OFFLINE_DEFAULT,
                f"a TrainJob cannot carry {', '.join(p.path for p in problems)} "
                f"({'; '.join(p.message for p in problems)}): using PyTorchJob",
            )
        return Choice(
            tj.name,
            f"the cluster serves {tj.kind} {tj.api_version} (Kubeflow Trainer v2) and has ClusterTrainingRuntime "
            f"{RUNTIME_NAME}: using TrainJob",
        )


def wants_auto(job: FineTuneJob | None) -> bool:
    return job is not None and job.spec.distributed.backend == AUTO


__all__ = ["Choice", "Discovery", "wants_auto"]
