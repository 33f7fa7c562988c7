"""Engine ``kserve``, kind InferenceService (``serving.kserve.io/v1beta1``): KServe's Hugging Face
runtime serving one model (``storageUri: pvc://...``), a full or merged one.  KServe reports the
URL in ``status.url``; the OpenAI routes are under ``/openai/v1``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from kubetune.api import FineTuneJob
from kubetune.api.contract import MERGED_SUBDIR
from kubetune.cluster.serving.inferenceservice import InferenceServiceEngine

from . import kserve
from .base import EngineRenderer, Serving, Source, metadata, resources

if TYPE_CHECKING:
    from ..types import RenderOptions


def render_inferenceservice(job: FineTuneJob, namespace: str, served: str, source: Source) -> dict[str, Any]:
    serve = job.spec.serve
    assert serve is not None
    if source.adapter_uri:
        raise ValueError(
            "spec.serve.kserve.kind InferenceService serves one model: "
            "merge the adapter (spec.export.enabled) or use LLMInferenceService"
        )
    storage_uri = source.model_uri
    if kserve.reads_bucket(job):
        if problems := kserve.bucket_problems(job):
            raise ValueError("; ".join(f"{f}: {m}" for f, m in problems))
        uri = job.spec.storage.outputs.uri
        assert uri is not None
        # The trainer uploads the merged model to <outputs.uri><namespace>/<job>/merged/ and writes the job's
        # _KUBETUNE_COMPLETE last (trainer/objectstore.py job_prefix); serving starts after the job Succeeded.
        # KServe downloads s3://bucket/key-prefix recursively with boto3 (kserve_storage.py:504-560 @v0.20.0);
        # endpoint and region come from the Secret's serving.kserve.io/s3-* annotations or data
        # (pkg/credentials/s3/utils.go:36-116 @v0.20.0), the user's step (docs/object-storage.md).
        storage_uri = f"{uri}{namespace}/{job.name}/{MERGED_SUBDIR}/"
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": storage_uri,
        "args": [f"--model_name={served}"]
        + ([f"--max_model_len={serve.max_model_len}"] if serve.max_model_len else []),
        "resources": resources(job, defaults=kserve.KSERVE_DEFAULTS),
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(job, job.name, namespace),
        "spec": {
            "predictor": {
                "minReplicas": serve.replicas,
                "maxReplicas": serve.replicas,
                **kserve.pod_fields(job),
                "model": model,
            }
        },
    }


class InferenceServiceRenderer:
    name: ClassVar[str] = InferenceServiceEngine.name
    engine: ClassVar[str] = InferenceServiceEngine.engine

    def render(self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions) -> Serving:
        isvc = render_inferenceservice(job, namespace, served, source)
        return Serving(
            self.engine, [isvc], served, None, isvc["spec"]["predictor"]["model"]["storageUri"], source.adapter_uri
        )

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        return kserve.kserve_problems(job)


_CONFORMS: EngineRenderer = InferenceServiceRenderer()
