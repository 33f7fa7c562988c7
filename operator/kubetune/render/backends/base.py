"""The one interface every backend's renderer implements.

A backend (see docs/adding-a-backend.md) is two halves with the same ``name``: what kubetune knows
about its kind in the cluster (:mod:`kubetune.cluster.backends`: apiVersion, kind, plural, status,
pods, RBAC, install hint, suspend, update rules; the registry ``BACKENDS`` is there) and, here, how
a spec becomes that kind:

* ``build``          - the child object, from a finished :class:`~kubetune.render.intermediate.Plan`;
* ``check``          - cross-field checks on the spec rendered for this backend.

Everything here is pure: no I/O, no cluster client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..intermediate import Plan

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob

    from ..types import Problem


class WorkloadRenderer(Protocol):
    """How one backend of :data:`kubetune.cluster.backends.BACKENDS` renders its child."""

    name: ClassVar[str]
    """The backend's name: the key of its entry in ``kubetune.cluster.backends.BACKENDS``."""

    def build(self, plan: Plan) -> dict[str, Any]: ...

    def check(self, job: FineTuneJob) -> list[Problem]:
        """Cross-field problems of ``job`` rendered with this backend (empty: none)."""
        ...
