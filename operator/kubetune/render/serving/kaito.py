"""Engine ``kaito``: a Workspace (``kaito.sh/v1beta1``) on the KAITO preset named in
``spec.serve.kaito.preset``, with the adapter in ``inference.adapters`` (``volumeSource``: a PVC of its
own, read-only, filled first by a copy Job: see :func:`render_adapter_copy`; no ``strength``, which
KAITO's vLLM runtime refuses).  KAITO serves the Workspace through a Service of the same name on port 80.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Final

from kubetune.api import FineTuneJob, KaitoSpec
from kubetune.cluster.serving.kaito import KaitoEngine

from ..podspec import container_security_context, placement, pod_security_context
from ..types import RenderOptions
from . import kserve
from .base import (
    Serving,
    EngineRenderer,
    Source,
    bnb_base,
    child_name,
    in_volume,
    labels,
    max_lora_rank,
    metadata,
)

ADAPTER_SUFFIX: Final = "-adapter"
ADAPTER_COPY_SUFFIX: Final = "-adapter-copy"
ADAPTER_FILES: Final = ("adapter_config.json", "adapter_model.safetensors")
"""What PEFT saves for a LoRA adapter (LLaMA-Factory saves safetensors) and what KAITO's vLLM loads."""


def render_adapter_copy(job: FineTuneJob, namespace: str, options: RenderOptions) -> list[dict[str, Any]]:
    """The adapter's own PersistentVolumeClaim and a Job that copies the adapter files into its root.

    Why: KAITO v0.12 mounts an adapter's ``volumeSource`` whole at ``/mnt/adapter/<name>``
    (pkg/workspace/inference/preset_inferences.go, ``SetAdapterPuller``: no subPath) and its vLLM
    launcher serves every folder of /mnt/adapter as one adapter
    (presets/workspace/inference/vllm/inference_api.py, ``load_lora_adapters``), so the adapter
    must be at the root of a volume; in the outputs volume it is in ``<namespace>/<job>/``.
    The copy runs the trainer image with a fixed command: the job's folder reaches it only as
    the outputs mount's subPath, never on a command line."""
    serve = job.spec.serve
    assert serve is not None
    kaito = serve.kaito or KaitoSpec()
    outputs = job.spec.storage.outputs
    claim = child_name(job.name, ADAPTER_SUFFIX)
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": kaito.adapter_volume_size}},
    }
    if kaito.adapter_storage_class_name:
        pvc_spec["storageClassName"] = kaito.adapter_storage_class_name
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(job, claim, namespace),
        "spec": pvc_spec,
    }
    source = in_volume(outputs, f"{namespace}/{job.name}")
    container: dict[str, Any] = {
        "name": "copy",
        "image": job.spec.image or options.image,
        "command": ["cp", "-v", *(f"/source/{f}" for f in ADAPTER_FILES), "/adapter/"],
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [
            {"name": "outputs", "mountPath": "/source", "readOnly": True, "subPath": source},
            {"name": "adapter", "mountPath": "/adapter"},
        ],
    }
    if job.spec.image_pull_policy:
        container["imagePullPolicy"] = job.spec.image_pull_policy
    pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [
            {"name": "outputs", "persistentVolumeClaim": {"claimName": outputs.claim_name, "readOnly": True}},
            {"name": "adapter", "persistentVolumeClaim": {"claimName": claim}},
        ],
    }
    # Placed like the training pods: a ReadWriteOnce outputs claim binds in their zone, so the copy runs there too.
    pod.update(placement(job))
    copy_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, child_name(job.name, ADAPTER_COPY_SUFFIX), namespace),
        "spec": {"backoffLimit": 3, "template": {"metadata": {"labels": labels(job)}, "spec": pod}},
    }
    return [pvc, copy_job]


KAITO_LEGACY_PRESETS: Final = {
    "phi-4": "microsoft/phi-4",
    "phi-4-mini-instruct": "microsoft/phi-4-mini-instruct",
    "llama-3.1-8b-instruct": "meta-llama/llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct": "meta-llama/llama-3.3-70b-instruct",
    "deepseek-r1-distill-llama-8b": "deepseek-ai/deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b": "deepseek-ai/deepseek-r1-distill-qwen-14b",
    "deepseek-r1-0528": "deepseek-ai/deepseek-r1-0528",
    "deepseek-v3-0324": "deepseek-ai/deepseek-v3-0324",
    "phi-3-mini-4k-instruct": "microsoft/phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct": "microsoft/phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct": "microsoft/phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct": "microsoft/phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct": "microsoft/phi-3.5-mini-instruct",
    "qwen2.5-coder-7b-instruct": "qwen/qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct": "qwen/qwen2.5-coder-32b-instruct",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gemma-3-4b-instruct": "google/gemma-3-4b-it",
    "gemma-3-27b-instruct": "google/gemma-3-27b-it",
    "mistral-7b": "mistralai/mistral-7b-v0.3",
    "mistral-7b-instruct": "mistralai/mistral-7b-instruct-v0.3",
    "ministral-3-3b-instruct": "mistralai/ministral-3-3b-instruct-2512",
    "ministral-3-8b-instruct": "mistralai/ministral-3-8b-instruct-2512",
    "ministral-3-14b-instruct": "mistralai/ministral-3-14b-instruct-2512",
    "mistral-large-3-675b-instruct": "mistralai/mistral-large-3-675b-instruct-2512",
}
"""KAITO v0.12's legacy short preset names and the Hub ids they stand for (pkg/utils/plugin/plugin.go:47-73
@v0.12.0, LegacyBuiltinToCatalog).  IsValidPreset (plugin.go:111-129) accepts these (case-insensitively) or
any ``org/name``; ResolveHFModelID (plugin.go:132-138) maps a legacy name to its id."""

KAITO_ADAPTER_NAME_MAX: Final = 63 - len("adapter-volume-")
"""KAITO names an adapter's pod volume ``adapter-volume-<source.name>``
(pkg/workspace/inference/preset_inferences.go:931 @v0.12.0), and a volume name is a DNS label of at most 63
characters."""
KAITO_CONFIG_SUFFIX: Final = "-kaito-config"
KAITO_CONFIG_KEY: Final = "inference_config.yaml"
"""KAITO reads the Workspace's inference.config ConfigMap's ``inference_config.yaml`` (pkg/model/interface.go:55,
api/v1beta1/inference_config_validation.go:72-80 @v0.12.0); its ``vllm:`` map becomes ``--<key> <value>`` flags of
vLLM (presets/workspace/inference/vllm/inference_api.py:134-145)."""
KAITO_TOKEN_KEY: Final = "HF_TOKEN"
"""presetOptions.modelAccessSecret is read at key HF_TOKEN
(pkg/workspace/inference/preset_inferences.go:855-859 @v0.12.0)."""


def kaito_preset(job: FineTuneJob) -> str:
    """The Workspace's preset: spec.serve.kaito.preset, else spec.model.name."""
    serve = job.spec.serve
    preset = serve.kaito.preset if serve is not None and serve.kaito is not None else None
    return preset or job.spec.model.name or ""


def _kaito_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if kserve.reads_bucket(job):
        # The adapter reaches KAITO through the copy Job of this module, which reads the outputs volume;
        # no bucket download for it yet.
        problems.append(
            (
                kserve.MODEL_SOURCE_FIELD,
                "engine kaito reads the adapter from the outputs volume (copied to a claim KAITO mounts); "
                "bucket is not supported for it yet: use modelSource: volume, or engine vllm",
            )
        )
    preset, base = kaito_preset(job), job.spec.model.name
    if base is None:
        return problems  # the API rule serve-kaito-hub-base says it
    field = "spec.serve.kaito.preset"
    if "/" not in preset and preset.lower() not in KAITO_LEGACY_PRESETS:
        problems.append(
            (
                field,
                f"{preset!r} is not a KAITO v0.12 preset: use the base model's Hub id ({base}, "
                f"the default) or a legacy short name such as {', '.join(sorted(KAITO_LEGACY_PRESETS)[:3])}",
            )
        )
    elif KAITO_LEGACY_PRESETS.get(preset.lower(), preset).lower() != base.lower():
        problems.append(
            (
                field,
                f"{preset!r} is not the base the adapter was trained on ({base}): "
                "KAITO would serve the adapter on another model; remove the preset (it defaults to spec.model.name) "
                "or train on the preset's model",
            )
        )
    if job.spec.model.revision:
        problems.append(
            (
                "spec.model.revision",
                "engine kaito downloads its preset's model at the revision KAITO chooses: "
                "remove the revision or use engine vllm",
            )
        )
    ref = job.spec.hf_token_secret_ref
    if ref is not None and ref.key != KAITO_TOKEN_KEY:
        problems.append(
            (
                "spec.hfTokenSecretRef.key",
                f"engine kaito reads the Hub token of presetOptions.modelAccessSecret at key {KAITO_TOKEN_KEY}: "
                f"store the token under {KAITO_TOKEN_KEY} in Secret {ref.name} and set key: {KAITO_TOKEN_KEY}",
            )
        )
    return problems


def kaito_adapter_name(served: str) -> str:
    """The adapter's source.name (what clients send as model), short enough for KAITO's volume name."""
    if len(served) <= KAITO_ADAPTER_NAME_MAX:
        return served
    digest = hashlib.sha256(served.encode()).hexdigest()[:8]
    return f"{served[: KAITO_ADAPTER_NAME_MAX - 9].rstrip('-')}-{digest}"


def render_kaito_config(job: FineTuneJob, namespace: str) -> dict[str, Any]:
    """The Workspace's inference.config ConfigMap: vLLM flags KAITO does not set itself.  KAITO enables LoRA
    (pkg/model/interface.go:448-450) but leaves --max-lora-rank at vLLM's 16 (vllm/config/lora.py:33), which
    refuses any larger adapter (vllm/lora/peft_helper.py:119-122)."""
    serve = job.spec.serve
    assert serve is not None
    flags: dict[str, str] = {"max-lora-rank": str(max_lora_rank(job))}
    if serve.max_model_len:
        flags["max-model-len"] = str(serve.max_model_len)
    if bnb_base(job):
        flags["quantization"] = "bitsandbytes"
    text = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in flags.items())
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(job, child_name(job.name, KAITO_CONFIG_SUFFIX), namespace),
        "data": {KAITO_CONFIG_KEY: f"vllm:\n{text}"},
    }


def render_kaito(job: FineTuneJob, namespace: str, served: str, source: Source) -> list[dict[str, Any]]:
    serve = job.spec.serve
    assert serve is not None
    kaito = serve.kaito or KaitoSpec()
    resource: dict[str, Any] = {"labelSelector": {"matchLabels": dict(kaito.node_labels)}}
    if kaito.instance_type:
        resource["instanceType"] = kaito.instance_type
    preset: dict[str, Any] = {"name": kaito_preset(job)}
    if job.spec.hf_token_secret_ref is not None:
        preset["presetOptions"] = {"modelAccessSecret": job.spec.hf_token_secret_ref.name}  # gated presets need it
    inference: dict[str, Any] = {"preset": preset, "config": child_name(job.name, KAITO_CONFIG_SUFFIX)}
    if source.adapter_uri:
        # No `strength`: KAITO's default vLLM runtime refuses Workspaces that set it
        # (pkg/model/interface.go, PresetParam.Validate: "vLLM does not support adapter strength").
        # The adapter is served under the folder's name, source.name (load_lora_adapters).
        claim = child_name(job.name, ADAPTER_SUFFIX)
        inference["adapters"] = [
            {
                "source": {
                    "name": served,
                    "volumeSource": {"persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
                }
            }
        ]
    return [
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": metadata(job, job.name, namespace),
            "resource": resource,
            "inference": inference,
        }
    ]


class KaitoRenderer:
    name: ClassVar[str] = KaitoEngine.name
    engine: ClassVar[str] = KaitoEngine.engine

    def render(self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions) -> Serving:
        served = kaito_adapter_name(served)
        objects = render_kaito(job, namespace, served, source)
        pvc, copy_job = render_adapter_copy(job, namespace, options)
        # KAITO's webhook refuses a Workspace whose inference.config ConfigMap is missing
        # (api/v1beta1/inference_config_validation.go:64-70 @v0.12.0): it is written first.
        prepare = [pvc, render_kaito_config(job, namespace), copy_job]
        notes = [
            f"the adapter ({', '.join(ADAPTER_FILES)} from {source.adapter_uri}) is copied to PersistentVolumeClaim "
            f"{prepare[0]['metadata']['name']} before the Workspace is created"
        ]
        return Serving(self.engine, objects, served, None, source.model_uri, source.adapter_uri, notes, prepare)

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        return _kaito_problems(job)


_CONFORMS: EngineRenderer = KaitoRenderer()
