"""How each workload backend renders its child: one module per backend, under the backend's name.

The backends themselves, and their registry ``BACKENDS``, are :mod:`kubetune.cluster.backends`
(what the controller, the CLI, ``kubetune logs`` and the chart's RBAC read).  Here each registered
backend has its renderer (:class:`.base.WorkloadRenderer`: ``build`` and ``check``), found by the
backend's name; a backend registered there without a renderer here fails at import.  Adding a
backend means (docs/adding-a-backend.md) its module and registry line there, its module, template,
golden files and line below here.
"""

from __future__ import annotations

from kubetune.cluster.backends import BACKENDS, get_backend

from .base import WorkloadRenderer
from .mpijob import MPIJobRenderer
from .pytorchjob import PyTorchJobRenderer
from .trainjob import TrainJobRenderer

RENDERERS: dict[str, WorkloadRenderer] = {
    r.name: r for r in (PyTorchJobRenderer(), MPIJobRenderer(), TrainJobRenderer())
}
"""The renderer of every backend of ``kubetune.cluster.backends.BACKENDS``, by the backend's name."""

if RENDERERS.keys() != BACKENDS.keys():
    raise ImportError(f"every backend has one renderer: registered {sorted(BACKENDS)}, rendered {sorted(RENDERERS)}")


def renderer_for(name: str) -> WorkloadRenderer:
    """The renderer of backend ``name`` (``auto`` without a cluster: the offline default)."""
    return RENDERERS[get_backend(name).name]


__all__ = ["RENDERERS", "WorkloadRenderer", "renderer_for"]
