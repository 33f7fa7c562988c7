"""Engine ``kserve``, kind InferenceService (``serving.kserve.io/v1beta1``) as it runs: KServe reports
the URL in ``status.url``; the OpenAI routes are under ``/openai/v1`` (rendering:
:mod:`kubetune.render.serving.inferenceservice`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from kubetune.api import FineTuneJob

from ..rbac import RbacRule
from . import kserve
from .base import ServedKind, ServingEngine, condition_true, rbac_of


class InferenceServiceEngine:
    name: ClassVar[str] = "kserve-inferenceservice"
    engine: ClassVar[str] = "kserve"
    kinds: ClassVar[tuple[ServedKind, ...]] = (
        ServedKind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices", watched=True),
    )
    controller: ClassVar[str | None] = (
        "KServe (InferenceService serving.kserve.io/v1beta1; https://kserve.github.io/website/ install guide)"
    )

    def selects(self, job: FineTuneJob) -> bool:
        return kserve.selects(job, "InferenceService")

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """The ``Ready`` condition and ``status.url`` (KServe's knative-style status)."""
        status = obj.get("status") or {}
        url = status.get("url")
        ready = condition_true(status.get("conditions"), "Ready")
        return ready, (f"{str(url).rstrip('/')}/openai/v1" if url else None), "Ready" if ready else "not Ready yet"

    def rbac(self) -> tuple[RbacRule, ...]:
        return rbac_of(self.kinds)


_CONFORMS: ServingEngine = InferenceServiceEngine()
