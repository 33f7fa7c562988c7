"""Engine ``kserve``, kind LLMInferenceService (``serving.kserve.io/v1alpha1``): KServe's vLLM
serving the base with ``model.lora.adapters`` for an adapter (or one model, when asked for by
``spec.serve.kserve.kind``).  KServe reports the URL in ``status.url`` (with a router) or
``status.addresses``; the OpenAI routes are under ``/v1``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

from kubetune.api import FineTuneJob

from ..backends.base import RbacRule
from . import kserve
from .base import (
    CHAT_TEMPLATE_FILE,
    ServedKind,
    Serving,
    ServingEngine,
    Source,
    bnb_base,
    condition_true,
    max_lora_rank,
    metadata,
    rbac_of,
    resources,
)

if TYPE_CHECKING:
    from ..types import RenderOptions

KSERVE_LORA_MOUNT_ROOT: Final = "/mnt/lora"
"""Where KServe's LLMInferenceService mounts a LoRA adapter: /mnt/lora/<adapter name, [^a-zA-Z0-9._-] -> '-'>
(pkg/controller/v1alpha2/llmisvc/workload_lora.go:41,48,95 @v0.20.0); served names are DNS labels, so unchanged."""
KSERVE_WORKLOAD_PORT: Final = 8000
"""The LLMInferenceService workload Service's only port
(pkg/controller/v1alpha2/llmisvc/workload.go:139-148 @v0.20.0)."""


def render_llminferenceservice(job: FineTuneJob, namespace: str, served: str, source: Source) -> dict[str, Any]:
    serve = job.spec.serve
    assert serve is not None
    llm_model: dict[str, Any] = {"uri": source.model_uri, "name": f"{served}-base" if source.adapter_uri else served}
    # vLLM flags go in VLLM_ADDITIONAL_ARGS, which KServe's vLLM config passes to `vllm serve`
    # (config/llmisvcconfig/config-llm-template.yaml:166-179 @v0.20.0); container args would replace the
    # config's own (a strategic merge replaces a list without a patch strategy).  Every value here is an
    # integer, a fixed word or a path built from a DNS label: nothing the shell there could expand.
    extra: list[str] = []
    if source.adapter_uri:
        llm_model["lora"] = {"adapters": [{"name": served, "uri": source.adapter_uri}], "maxRank": max_lora_rank(job)}
        extra += [
            "--chat-template",
            f"{KSERVE_LORA_MOUNT_ROOT}/{served}/{CHAT_TEMPLATE_FILE}",
        ]  # the adapter's chat template (see vllm.vllm_args)
        if bnb_base(job):
            extra += ["--quantization", "bitsandbytes"]
    if serve.max_model_len:
        extra += ["--max-model-len", str(serve.max_model_len)]
    main: dict[str, Any] = {"name": "main", "resources": resources(job, defaults=kserve.KSERVE_DEFAULTS)}
    if extra:
        main["env"] = [{"name": "VLLM_ADDITIONAL_ARGS", "value": " ".join(extra)}]
    spec: dict[str, Any] = {"model": llm_model, "replicas": serve.replicas}
    if serve.gpus > 1:
        spec["parallelism"] = {"tensor": serve.gpus}  # llm_inference_service_types.go:530-534, --tensor-parallel-size
    spec["template"] = {**kserve.pod_fields(job), "containers": [main]}
    if source.hub_base and job.spec.hf_token_secret_ref is not None:
        # The base is downloaded by KServe's storage initializer.  The template may set env on the init
        # container named storage-initializer (pkg/apis/serving/v1alpha2/llm_inference_service_types.go:166-170
        # @v0.20.0), which KServe strategic-merges into the one it builds (pkg/controller/v1alpha2/llmisvc/
        # workload_storage.go:398,432-445); huggingface_hub reads HF_TOKEN.  No ServiceAccount secret needed.
        token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": job.spec.hf_token_secret_ref.selector()}}
        spec["template"]["initContainers"] = [{"name": "storage-initializer", "env": [token]}]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": metadata(job, job.name, namespace),
        "spec": spec,
    }


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

    def render(self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions) -> Serving:
        return Serving(
            self.engine,
            [render_llminferenceservice(job, namespace, served, source)],
            served,
            None,
            source.model_uri,
            source.adapter_uri,
        )

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        return kserve.kserve_problems(job)

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
