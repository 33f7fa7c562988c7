"""The one interface every workload backend implements."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from ..plan import Plan


class WorkloadBackend(Protocol):
    """Builds one Kubeflow job object from a finished plan (phase ``build``)."""

    name: ClassVar[str]
    """Registry key, the value of spec.distributed.backend."""
    api_version: ClassVar[str]
    kind: ClassVar[str]

    def build(self, plan: Plan) -> dict[str, Any]: ...
