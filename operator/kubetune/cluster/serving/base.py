"""What kubetune knows about one serving engine's objects in the cluster, and what the engines share.

A serving engine (see docs/adding-a-serving-engine.md) is two halves with the same ``name``: this
one, registered in :mod:`kubetune.cluster.serving`, and its renderer in
:mod:`kubetune.render.serving` (``render``, the objects; ``check``, what it would refuse at serving
time).  This half owns:

* ``engine``            - the value of ``spec.serve.engine`` it answers to, and ``selects(job)``:
  whether it serves this job (engine kserve has two: InferenceService and LLMInferenceService);
* ``kinds``             - the kinds it writes (apiVersion, kind, plural, watched or only written), the
  main object first: the operator applies them (``controller/act.py``), watches the watched ones
  (``controller/cache.py``) and is granted them (``rbac``, compared with the chart's rules);
* ``controller``        - who acts on the main kind, as an install hint (None: a core kind);
* ``observed_state``    - what its watched main object says: (ready, URL, a short description);
* ``rbac``              - the RBAC rules the operator needs for it.

Everything here is pure: no I/O, no cluster client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from kubetune.api import FineTuneJob

from ..rbac import RbacRule


@dataclass(frozen=True)
class ServedKind:
    """One kind an engine writes."""

    api_version: str
    kind: str
    plural: str
    watched: bool
    """Watched by the operator (readiness, URL, a deleted object applied again); else only written."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


class ServingEngine(Protocol):
    """One way of serving the trained model as it runs: kinds, selection, status, RBAC, install hint."""

    name: ClassVar[str]
    """Registry key."""
    engine: ClassVar[str]
    """The value of spec.serve.engine this engine answers to (several engines may share one)."""
    kinds: ClassVar[tuple[ServedKind, ...]]
    """Every kind it writes, its main object (whose state ``status.serving`` reports) first."""
    controller: ClassVar[str | None]
    """Who acts on the main kind, as the install hint names it (ServingKindNotInstalled); None: a core kind."""

    def selects(self, job: FineTuneJob) -> bool:
        """Whether this engine serves ``job`` (exactly one engine of the registry does)."""
        ...

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """What the watched main object says: (ready, URL it reports, a short description)."""
        ...

    def rbac(self) -> tuple[RbacRule, ...]: ...


def rbac_of(kinds: tuple[ServedKind, ...]) -> tuple[RbacRule, ...]:
    """The rules for ``kinds``: server-side apply (a PATCH, authorized as create when new) and,
    when watched, list and watch."""
    return tuple(
        RbacRule(k.group, (k.plural,), ("list", "watch", "create", "patch") if k.watched else ("create", "patch"))
        for k in kinds
    )


def adapter_served(job: FineTuneJob) -> bool:
    """Whether the base plus a LoRA adapter is served (lora/qlora without export), not one model."""
    return job.spec.method not in ("full", "freeze") and not job.spec.export.enabled


def condition_true(conditions: Any, type_: str) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("type") == type_ and c.get("status") == "True" for c in conditions or []
    )
