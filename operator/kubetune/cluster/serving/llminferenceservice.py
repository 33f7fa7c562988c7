"""Engine ``kserve``, kind LLMInferenceService (``serving.kserve.io/v1alpha1``) as it runs: KServe
reports the URL in ``status.url`` (with a router) or ``status.addresses``; the OpenAI routes are
under ``/v1`` (rendering: :mod:`kubetune.render.serving.llminferenceservice`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

from kubetune.api import FineTuneJob

from ..rbac import RbacRule
from . import kserve
from .base import ServedKind, ServingEngine, condition_true, rbac_of

KSERVE_WORKLOAD_PORT: Final = 8000
"""The LLMInferenceService workload Service's only port
(pkg/controller/v1alpha2/llmisvc/workload.go:139-148 @v0.20.0)."""


def _with_port(url: str, port: int) -> str:
    """``url`` with ``port`` when it names none."""
    parts = urlsplit(url)
    if parts.port is not None or not parts.hostname:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


class LLMInferenceServiceEngine:
    name: ClassVar[str] = "kserve-llminferenceservice"
    engine: ClassVar[str] = "kserve"
    kinds: ClassVar[tuple[ServedKind, ...]] = (
        ServedKind("serving.kserve.io/v1alpha1", "LLMInferenceService", "llminferenceservices", watched=True),
    )
    controller: ClassVar[str | None] = (
        "KServe with its LLM controller (LLMInferenceService serving.kserve.io/v1alpha1, KServe v0.16 or later)"
    )

    def selects(self, job: FineTuneJob) -> bool:
        return kserve.selects(job, "LLMInferenceService")

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """The ``Ready`` condition and ``status.url``, else the first of ``status.addresses``."""
        status = obj.get("status") or {}
        url = status.get("url")
        if not url:
            # Without spec.router, KServe fills only status.addresses, with the workload Service's
            # in-cluster URL (pkg/controller/v1alpha2/llmisvc/router.go:354-370 @v0.20.0).
            # That URL carries no port, but the workload Service listens on 8000 only (llmisvc/workload.go:139-148
            # @v0.20.0), so the port is added: the URL reported is one that answers.
            addresses = [
                str(a.get("url")) for a in status.get("addresses") or [] if isinstance(a, Mapping) and a.get("url")
            ]
            url = _with_port(addresses[0], KSERVE_WORKLOAD_PORT) if addresses else None
        ready = condition_true(status.get("conditions"), "Ready")
        return ready, (f"{str(url).rstrip('/')}/v1" if url else None), "Ready" if ready else "not Ready yet"

    def rbac(self) -> tuple[RbacRule, ...]:
        return rbac_of(self.kinds)


_CONFORMS: ServingEngine = LLMInferenceServiceEngine()
