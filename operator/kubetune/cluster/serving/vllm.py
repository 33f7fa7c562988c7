"""Engine ``vllm`` as it runs: a Deployment running vLLM's OpenAI server and a ClusterIP Service on
port 8000 (rendering: :mod:`kubetune.render.serving.vllm`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from kubetune.api import FineTuneJob

from ..rbac import RbacRule
from .base import ServedKind, ServingEngine, rbac_of


class VllmEngine:
    name: ClassVar[str] = "vllm"
    engine: ClassVar[str] = "vllm"
    kinds: ClassVar[tuple[ServedKind, ...]] = (
        ServedKind("apps/v1", "Deployment", "deployments", watched=True),
        # Watched too: a deleted Service is created again.
        ServedKind("v1", "Service", "services", watched=True),
    )
    controller: ClassVar[str | None] = None

    def selects(self, job: FineTuneJob) -> bool:
        return job.spec.serve is not None and job.spec.serve.engine == self.engine

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """Ready when at least one replica of its current generation is ready (``status.observedGeneration``,
        ``readyReplicas``; apps/v1 DeploymentStatus).  The URL is the Service's, known when rendered."""
        status = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        ready = int(status.get("readyReplicas") or 0)
        wanted = int((obj.get("spec") or {}).get("replicas") or 1)
        return current and ready >= 1, None, f"{ready}/{wanted} replicas ready"

    def rbac(self) -> tuple[RbacRule, ...]:
        return rbac_of(self.kinds)


_CONFORMS: ServingEngine = VllmEngine()
