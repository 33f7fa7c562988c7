"""Workload backends: one module per job kind, registered by name.

A backend owns everything specific to its kind (see :mod:`.base` and docs/adding-a-backend.md):
how it renders, its apiVersion/kind/plural, how its status becomes a phase, how rank 0's pod is
found, its install hint, its cross-field checks and its RBAC rules.  The controller, the CLI,
``kubetune logs`` and the chart's RBAC test read them from ``BACKENDS``; adding a backend means one
module, its template, its golden files and one line below.
"""

from __future__ import annotations

from .base import ChildState, ChildStatus, PodRef, RbacRule, WorkloadBackend
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
    "RbacRule",
    "WorkloadBackend",
    "backend_for_kind",
    "get_backend",
]
