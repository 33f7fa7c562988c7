"""What KServe's two engines share as they run (:mod:`.inferenceservice`, :mod:`.llminferenceservice`):
engine ``kserve`` picks one of them by :func:`kserve_kind`.  KServe reports the URL in the object's
``status.url``."""

from __future__ import annotations

from kubetune.api import FineTuneJob

from .base import adapter_served


def kserve_kind(job: FineTuneJob) -> str:
    """spec.serve.kserve.kind, else an LLMInferenceService for an adapter and an InferenceService for one model."""
    serve = job.spec.serve
    if serve is not None and serve.kserve and serve.kserve.kind:
        return serve.kserve.kind
    return "LLMInferenceService" if adapter_served(job) else "InferenceService"


def selects(job: FineTuneJob, kind: str) -> bool:
    return job.spec.serve is not None and job.spec.serve.engine == "kserve" and kserve_kind(job) == kind
