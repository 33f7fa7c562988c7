"""Engine ``kserve``, kind InferenceService (``serving.kserve.io/v1beta1``): KServe's Hugging Face
runtime serving one model (``storageUri: pvc://...``), a full or merged one.  KServe reports the
URL in ``status.url``; the OpenAI routes are under ``/openai/v1``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from kubetune.api import FineTuneJob

from ..backends.base import RbacRule
from . import kserve
from .base import ServedKind, Serving, ServingEngine, Source, condition_true, metadata, rbac_of, resources

if TYPE_CHECKING:
    from ..types import RenderOptions


def render_inferenceservice(job: FineTuneJob, namespace: str, served: str, source: Source) -> dict[str, Any]:
    serve = job.spec.serve
    assert serve is not None
    if source.adapter_uri:
        raise ValueError("spec.serve.kserve.kind InferenceService serves one model: merge the adapter (spec.export.enabled) or use LLMInferenceService")
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": source.model_uri,
        "args": [f"--model_name={served}"] + ([f"--max_model_len={serve.max_model_len}"] if serve.max_model_len else []),
        "resources": resources(job, defaults=kserve.KSERVE_DEFAULTS),
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(job, job.name, namespace),
        "spec": {"predictor": {"minReplicas": serve.replicas, "maxReplicas": serve.replicas, **kserve.pod_fields(job), "model": model}},
    }


class InferenceServiceEngine:
    name: ClassVar[str] = "kserve-inferenceservice"
    engine: ClassVar[str] = "kserve"
    kinds: ClassVar[tuple[ServedKind, ...]] = (ServedKind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices", watched=True),)
    controller: ClassVar[str | None] = "KServe (InferenceService serving.kserve.io/v1beta1; https://kserve.github.io/website/ install guide)"

    def selects(self, job: FineTuneJob) -> bool:
        return kserve.selects(job, "InferenceService")

    def render(self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions) -> Serving:
        return Serving(self.engine, [render_inferenceservice(job, namespace, served, source)], served, None, source.model_uri, source.adapter_uri)

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        return kserve.kserve_problems(job)

    def observed_state(self, obj: Mapping[str, Any]) -> tuple[bool, str | None, str]:
        """The ``Ready`` condition and ``status.url`` (KServe's knative-style status)."""
        status = obj.get("status") or {}
        url = status.get("url")
        ready = condition_true(status.get("conditions"), "Ready")
        return ready, (f"{str(url).rstrip('/')}/openai/v1" if url else None), "Ready" if ready else "not Ready yet"

    def rbac(self) -> tuple[RbacRule, ...]:
        return rbac_of(self.kinds)


_CONFORMS: ServingEngine = InferenceServiceEngine()
