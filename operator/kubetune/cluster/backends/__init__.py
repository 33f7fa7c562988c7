"""Workload backends: one module per training child's kind, registered by name in ``BACKENDS``.

This is the one registry of backends: the API's enum (kept equal by a test), the renderer, the
controller, the CLI, ``kubetune get/watch/logs`` and the chart's RBAC test read it.  An entry owns
what kubetune knows about its kind as it runs (see :mod:`.base` and docs/adding-a-backend.md): its
apiVersion/kind/plural, how its status becomes a phase, how rank 0's pod is found, its install
hint, its RBAC rules, how it is suspended and which changes its API refuses.  How a spec becomes
the kind is the backend's renderer in :mod:`kubetune.render.backends`, under the same name.
"""

from __future__ import annotations

from .base import ChildState, ChildStatus, PodRef, WorkloadBackend
from .mpijob import MPIJobBackend
from .pytorchjob import PyTorchJobBackend
from .trainjob import TrainJobBackend

BACKENDS: dict[str, WorkloadBackend] = {
    PyTorchJobBackend.name: PyTorchJobBackend(),
    MPIJobBackend.name: MPIJobBackend(),
    TrainJobBackend.name: TrainJobBackend(),
}

AUTO = "auto"
"""spec.distributed.backend: auto - the operator chooses from what the cluster serves (controller/discovery.py)."""
OFFLINE_DEFAULT = "pytorchjob"
"""What ``auto`` renders to without a cluster (``kubetune render``, ``run --local``)."""


def get_backend(name: str) -> WorkloadBackend:
    try:
        return BACKENDS[OFFLINE_DEFAULT if name == AUTO else name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


def backend_for_kind(kind: str) -> WorkloadBackend | None:
    """The backend whose child kind is ``kind`` (status.job.kind), or None."""
    return next((b for b in BACKENDS.values() if b.kind == kind), None)


__all__ = [
    "AUTO",
    "BACKENDS",
    "OFFLINE_DEFAULT",
    "ChildState",
    "ChildStatus",
    "PodRef",
    "WorkloadBackend",
    "backend_for_kind",
    "get_backend",
]
