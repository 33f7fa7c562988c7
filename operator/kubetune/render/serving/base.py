"""The one interface every serving engine's renderer implements, and what the renderers share.

A serving engine (see docs/adding-a-serving-engine.md) is two halves with the same ``name``: what
kubetune knows about its objects in the cluster (:mod:`kubetune.cluster.serving`: the registry
``ENGINES``, ``selects``, the kinds it writes, install hint, status, RBAC) and, here, its renderer
(one module each: :mod:`.vllm`, :mod:`.inferenceservice`, :mod:`.llminferenceservice`, :mod:`.kaito`):

* ``render``            - the objects, from the job and the shared :class:`Source`;
* ``check``             - what the engine would refuse at serving time (``validate_object``).

Everything here is pure: no I/O, no cluster client.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from kubetune.api import FineTuneJob, OutputsVolumeSpec, VolumeSpec
from kubetune.api.contract import MERGED_SUBDIR

from ..ownership import job_labels, owner_references

if TYPE_CHECKING:
    from ..types import RenderOptions

COMPONENT: Final = "serving"
SERVE_SUFFIX: Final = "-serve"
MODELS_MOUNT: Final = "/models"
OUTPUTS_MOUNT: Final = "/outputs"
LORA_RANKS: Final = (8, 16, 32, 64, 128, 256, 320, 512)
"""Values vLLM accepts for --max-lora-rank (vllm/config/lora.py:104-109 @0.11.0)."""
CHAT_TEMPLATE_FILE: Final = "chat_template.jinja"
"""Where a tokenizer's save_pretrained writes its chat template (transformers 5.6.0 utils/hub.py:69)."""


@dataclass(frozen=True)
class Serving:
    """What ``spec.serve`` becomes."""

    engine: str
    objects: list[dict[str, Any]]
    served_model: str
    """The name clients send as ``model``."""
    url: str | None
    """The OpenAI base URL inside the cluster (vllm); None where the engine reports it in its own status."""
    model_uri: str
    """What is served: the model (merged, full, or the base)."""
    adapter_uri: str | None = None
    """The LoRA adapter served on top of the base, if any."""
    notes: list[str] = field(default_factory=list)
    prepare: list[dict[str, Any]] = field(default_factory=list)
    """Objects to create first, ending with a batch/v1 Job that must succeed before ``objects`` are
    created (engine kaito: the adapter's own PersistentVolumeClaim and the Job that copies the adapter into it)."""


@dataclass(frozen=True)
class Source:
    """What is served, as each engine names it."""

    model_path: str
    """Path inside the vLLM container (a mounted PVC) or a Hub id."""
    model_uri: str
    """The same as a KServe storage URI: pvc://claim/path or hf://id."""
    adapter_path: str | None
    adapter_uri: str | None
    hub_base: bool
    """The base is a Hub id (spec.model.name), not a folder."""


class EngineRenderer(Protocol):
    """How one engine of :data:`kubetune.cluster.serving.ENGINES` renders its objects."""

    name: ClassVar[str]
    """The engine's name: the key of its entry in ``kubetune.cluster.serving.ENGINES``."""

    def render(
        self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions
    ) -> Serving: ...

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        """What this engine would refuse at serving time, as (field, message) pairs."""
        ...


def child_name(name: str, suffix: str = SERVE_SUFFIX) -> str:
    """``<name><suffix>``, shortened with a stable hash to stay a DNS-1035 label (Service names: 63 characters)."""
    full = name + suffix
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def in_volume(volume: VolumeSpec | OutputsVolumeSpec | None, relative: str) -> str:
    parts = [p for p in ((volume.sub_path if volume else None), relative) if p]
    return "/".join(p.strip("/") for p in parts)


def source_of(job: FineTuneJob, namespace: str) -> Source:
    """What is served (the same choice as ``kubetune serve --local``): see the package docstring."""
    spec = job.spec
    outputs = spec.storage.outputs
    job_rel = f"{namespace}/{job.name}"
    if spec.method in ("full", "freeze") or spec.export.enabled:
        rel = job_rel if spec.method in ("full", "freeze") else f"{job_rel}/{MERGED_SUBDIR}"
        return Source(
            f"{OUTPUTS_MOUNT}/{rel}", f"pvc://{outputs.claim_name}/{in_volume(outputs, rel)}", None, None, False
        )
    adapter_path = f"{OUTPUTS_MOUNT}/{job_rel}"
    adapter_uri = f"pvc://{outputs.claim_name}/{in_volume(outputs, job_rel)}"
    if spec.model.path:
        models = spec.storage.models
        if models is None:
            raise ValueError("spec.model.path with spec.serve needs spec.storage.models (the volume the base is on)")
        base_path = f"{MODELS_MOUNT}/{spec.model.path}"
        base_uri = f"pvc://{models.claim_name}/{in_volume(models, spec.model.path)}"
        return Source(base_path, base_uri, adapter_path, adapter_uri, False)
    if spec.model.name is None:  # fromJob: refused by serving_problems (the base is only known after that job ran)
        raise ValueError(
            "spec.serve of a LoRA adapter trained on spec.model.fromJob: "
            "set spec.export.enabled to serve the merged model"
        )
    # hf://owner/model[:revision] as KServe's storage initializer reads it
    # (python/storage/kserve_storage/kserve_storage.py:629-658 @v0.20.0).
    hub_uri = f"hf://{spec.model.name}" + (f":{spec.model.revision}" if spec.model.revision else "")
    return Source(spec.model.name, hub_uri, adapter_path, adapter_uri, True)


def labels(job: FineTuneJob) -> dict[str, str]:
    return {**job_labels(job), "app.kubernetes.io/component": COMPONENT}


def metadata(job: FineTuneJob, name: str, namespace: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(job)}
    owners = owner_references(job)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def resources(job: FineTuneJob, *, defaults: tuple[str, str] | None = None) -> dict[str, Any]:
    """The serving container's resources; with ``defaults`` (cpu, memory: KServe) cpu and memory
    requests and limits are always set."""
    serve = job.spec.serve
    assert serve is not None
    explicit = defaults is not None
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if serve.gpus:
        requests[job.spec.resources.gpu_resource_name] = limits[job.spec.resources.gpu_resource_name] = str(serve.gpus)
    cpu = serve.cpu or (defaults[0] if defaults else None)
    memory = serve.memory or (defaults[1] if defaults else None)
    if cpu:
        requests["cpu"] = cpu
        if explicit:
            limits["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


VLLM_MAX_LORA_RANK: Final = LORA_RANKS[-1]
"""vLLM 0.11 allows --max-lora-rank only from LORA_RANKS (vllm/config/lora.py:104-109) and refuses an
adapter whose rank is above it (vllm/lora/peft_helper.py:119-122); its default is 16 (config/lora.py:33).
Every engine runs vLLM (KServe's LLMInferenceService and KAITO's runtime too)."""


def max_lora_rank(job: FineTuneJob) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds the job's LoRA rank (serving_problems refuses > 512)."""
    rank = job.spec.lora.rank if job.spec.lora else 8
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])


def bnb_base(job: FineTuneJob) -> bool:
    """The adapter was trained on a 4-bit bitsandbytes base: serve the base quantized the same way.
    vLLM's in-flight bitsandbytes quantization is NF4 only
    (model_executor/model_loader/bitsandbytes_loader.py:414,651,660
    @0.11.0: quant_type="nf4"); serving_problems refuses fp4."""
    q = job.spec.quantization
    return job.spec.method == "qlora" and q is not None and q.bits == 4
