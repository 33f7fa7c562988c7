"""Engine ``kaito`` as it runs: a KAITO Workspace (``kaito.sh/v1beta1``), served through a Service of
the same name on port 80, after a Job copied the adapter to a claim of its own (rendering:
:mod:`kubetune.render.serving.kaito`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from kubetune.api import FineTuneJob

from ..rbac import RbacRule
from .base import ServedKind, ServingEngine, condition_true, rbac_of

KAITO_SERVICE_PORT: Final = 80
"""The port of the Service KAITO creates for a Workspace (named like it)."""


class KaitoEngine:
    name: ClassVar[str] = "kaito"
    engine: ClassVar[str] = "kaito"
    kinds: ClassVar[tuple[ServedKind, ...]] = (
        ServedKind("kaito.sh/v1beta1", "Workspace", "workspaces", watched=True),
        # The Job that copies the adapter is watched (the Workspace is created once it completed);
        # the adapter's PersistentVolumeClaim and the inference ConfigMap are written, not watched.
        ServedKind("batch/v1", "Job", "jobs", watched=True),
        ServedKind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", watched=False),
        ServedKind("v1", "ConfigMap", "configmaps", watched=False),
    )
    controller: ClassVar[str | None] = (
        "KAITO workspace controller (Workspace kaito.sh/v1beta1; helm chart kaito-project/kaito workspace)"
    )

    def selects(self, job: FineTuneJob) -> bool:
        return job.spec.serve is not None and job.spec.serve.engine == self.engine

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """The ``InferenceReady`` condition (api/v1beta1/condition_types.go:30 @v0.12.0); the URL is
        the Service KAITO creates for the Workspace."""
        status = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        ready = condition_true(status.get("conditions"), "InferenceReady")
        name, namespace = meta.get("name"), meta.get("namespace")
        return (
            ready,
            f"http://{name}.{namespace}.svc:{KAITO_SERVICE_PORT}/v1",
            "InferenceReady" if ready else "inference not ready yet",
        )

    def rbac(self) -> tuple[RbacRule, ...]:
        return rbac_of(self.kinds)


_CONFORMS: ServingEngine = KaitoEngine()
