"""Workload backends: one module per Kubeflow job kind, registered by name.

A backend only *builds* the child job from a finished :class:`~kubetune.render.plan.Plan`;
everything before (training files, scheduling, pod spec) is shared.  Adding
Trainer v2's TrainJob means one new module and one line in ``BACKENDS``.
"""

from __future__ import annotations

from .base import WorkloadBackend
from .mpijob import MPIJobBackend
from .pytorchjob import PyTorchJobBackend


BACKENDS: dict[str, WorkloadBackend] = {
    PyTorchJobBackend.name: PyTorchJobBackend(),
    MPIJobBackend.name: MPIJobBackend(),
}


def get_backend(name: str) -> WorkloadBackend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


__all__ = ["BACKENDS", "WorkloadBackend", "get_backend"]
