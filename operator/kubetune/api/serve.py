"""``spec.serve``: serve the trained model through an OpenAI-compatible API after the job Succeeded.

The operator creates the serving objects (rendered by
:func:`kubetune.render.serving.render_serving`) once the FineTuneJob has
Succeeded; they are owned by the FineTuneJob, so deleting the job deletes them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, DNS1123Label, HubId, Rule, RuledModel
from .k8s import PositiveQuantity

Engine = Literal["vllm", "kserve", "kaito"]
ServeWhen = Literal["succeeded", "evaluationImproves"]


class KServeSpec(ApiModel):
    """KServe settings (engine kserve)."""

    kind: Literal["InferenceService", "LLMInferenceService"] | None = None
    (
        "Which KServe resource to create. Unset: an LLMInferenceService (spec.model.lora.adapters) for a LoRA adapter "
        "that was not merged, an InferenceService (Hugging Face runtime) for a full or merged model."
    )


class KaitoSpec(ApiModel):
    """KAITO settings (engine kaito): the adapter is handed to a Workspace's inference.adapters."""

    preset: HubId | None = None
    (
        "KAITO preset of the base model the adapter was trained on (Workspace inference.preset.name): "
        "a Hugging Face id such as `Qwen/Qwen2.5-7B-Instruct`, or one of KAITO v0.12's legacy short names such as "
        "`phi-4` or `qwen2.5-coder-7b-instruct`. It must name spec.model.name. Unset: spec.model.name."
    )
    instance_type: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    (
        "GPU node SKU for KAITO's node auto-provisioning (Workspace resource.instanceType); "
        "leave unset for your own GPU nodes."
    )
    node_labels: Annotated[
        dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63)]], Field(max_length=16)
    ] = {"apps": "kubetune"}
    """Labels of the GPU nodes the Workspace may use (resource.labelSelector.matchLabels; KAITO requires a selector)."""
    adapter_volume_size: PositiveQuantity = "2Gi"
    (
        "Size of the PersistentVolumeClaim the adapter is copied to before the Workspace starts (KAITO mounts an "
        "adapter volume's root as the adapter folder, so the adapter cannot stay in the outputs volume's job folder)."
    )
    adapter_storage_class_name: (
        Annotated[str, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")] | None
    ) = None
    """StorageClass of that claim. Unset: the cluster's default StorageClass."""


class ServeSpec(RuledModel):
    """Serve the result through an OpenAI-compatible API once the job has Succeeded (the serving objects are
    owned by the FineTuneJob)."""

    engine: Engine = "vllm"
    (
        "`vllm`: a Deployment + Service running vLLM's OpenAI server; `kserve`: "
        "a KServe InferenceService or LLMInferenceService; `kaito`: "
        "a KAITO Workspace with the adapter in inference.adapters."
    )
    when: ServeWhen = "succeeded"
    (
        "`succeeded`: serve as soon as the job Succeeded. `evaluationImproves`: "
        "serve only if the post-training evaluation (spec.evaluation with baseModel: "
        "true) shows the trained model beating the base model: a lower eval loss, "
        "and in generation mode also a ROUGE-L no lower than the base's; "
        "otherwise the Serving condition says why nothing is served."
    )
    image: Annotated[str, Field(max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")] | None = None
    """Serving image (engine vllm). Unset: the vLLM OpenAI server image kubetune is tested against."""
    gpus: Annotated[int, Field(ge=0, le=16)] = 1
    (
        "GPUs per replica (same resource name as spec.resources.gpuResourceName); "
        "more than one shards the model with tensor parallelism. Engine kaito: "
        "KAITO sizes the GPUs from the preset and the node, so leave it at 1."
    )
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    """Serving replicas. Engine kaito: one Workspace serves one replica, so leave it at 1."""
    served_model_name: DNS1123Label | None = None
    """The name clients send as `model`. Unset: the FineTuneJob's name."""
    max_model_len: Annotated[int, Field(ge=16, le=10485760)] | None = None
    """Context length the server allows (vLLM --max-model-len). Unset: the model's own."""
    cpu: PositiveQuantity | None = None
    (
        "CPU request per replica (engine kserve: also the limit). Unset: none for vllm; 4 for kserve, "
        "whose Hugging Face runtime would otherwise keep its limit of 1 CPU."
    )
    memory: PositiveQuantity | None = None
    (
        "Memory request and limit per replica. Unset: none for vllm; 32Gi for kserve, "
        "whose Hugging Face runtime would otherwise keep its limit of 2Gi."
    )
    model_source: Literal["volume", "bucket"] | None = None
    (
        "Where the serving pods read the trained model: `volume` (unset) mounts the outputs volume; "
        "`bucket` reads the copy uploaded to spec.storage.outputs.uri (engine vllm: "
        "an init container of the trainer image downloads the files the job's completion marker lists into an "
        "emptyDir; engine kserve, kind InferenceService: storageUri s3://, "
        "downloaded by KServe's storage initializer with the S3 credentials of spec.serviceAccountName). Not for "
        "engine kaito nor kind LLMInferenceService. See docs/object-storage.md."
    )
    kserve: KServeSpec | None = None
    """Settings for engine kserve."""
    kaito: KaitoSpec | None = None
    """Settings for engine kaito (required with it)."""

    rules = (
        Rule(
            name="serve-engine-settings-match",
            cel="(self.engine == 'kserve' || !has(self.kserve)) && (self.engine == 'kaito' || !has(self.kaito))",
            message="spec.serve.kserve / spec.serve.kaito only apply to engine kserve / kaito: "
            "remove them or change spec.serve.engine",
            field_path=".engine",
            check=lambda s: (s.engine == "kserve" or s.kserve is None) and (s.engine == "kaito" or s.kaito is None),
        ),
        Rule(
            name="serve-kaito-sizes-itself",
            # KAITO v0.12's Workspace has no replica count and takes its GPU count from the preset and
            # the node (api/v1beta1/workspace_types.go: ResourceSpec.Count is the deprecated node count).
            cel="self.engine != 'kaito' || (self.gpus == 1 && self.replicas == 1)",
            message="spec.serve.gpus and spec.serve.replicas do not apply to engine kaito (KAITO chooses the GPUs "
            "from the preset and the node, one Workspace is one replica): remove them",
            field_path=".engine",
            check=lambda s: s.engine != "kaito" or (s.gpus == 1 and s.replicas == 1),
        ),
        Rule(
            name="serve-image-only-vllm",
            cel="self.engine == 'vllm' || !has(self.image)",
            message="spec.serve.image applies to engine vllm; KServe and KAITO choose their runtime images themselves",
            field_path=".image",
            check=lambda s: s.engine == "vllm" or s.image is None,
        ),
    )


SPEC_RULES = (
    Rule(
        name="serve-when-evaluation-needs-base",
        cel="!has(self.serve) || self.serve.when != 'evaluationImproves' || "
        "(has(self.evaluation) && self.evaluation.baseModel)",
        message="spec.serve.when: evaluationImproves compares the trained model with the base model: "
        "set spec.evaluation (valSize or datasets) with baseModel: true, or use when: succeeded",
        field_path=".serve.when",
        check=lambda s: (
            s.serve is None
            or s.serve.when != "evaluationImproves"
            or (s.evaluation is not None and s.evaluation.base_model)
        ),
    ),
    Rule(
        name="serve-kaito-serves-adapters",
        cel="!has(self.serve) || self.serve.engine != 'kaito' || (self.method in ['lora', "
        "'qlora'] && !self.export.enabled)",
        message="spec.serve.engine kaito serves a LoRA adapter on a KAITO preset: "
        "it needs method lora or qlora with export.enabled false; "
        "use engine vllm or kserve for a full or merged model",
        field_path=".serve.engine",
        check=lambda s: (
            s.serve is None or s.serve.engine != "kaito" or (s.method in ("lora", "qlora") and not s.export.enabled)
        ),
    ),
    Rule(
        name="serve-inferenceservice-one-model",
        cel="!has(self.serve) || !has(self.serve.kserve) || !has(self.serve.kserve.kind) || "
        "self.serve.kserve.kind != 'InferenceService' || self.method in ['full', 'freeze'] || self.export.enabled",
        message="spec.serve.kserve.kind InferenceService serves one model: set spec.export.enabled to merge the LoRA "
        "adapter, or use kind LLMInferenceService (base + adapter)",
        field_path=".serve.kserve.kind",
        check=lambda s: (
            s.serve is None
            or s.serve.kserve is None
            or s.serve.kserve.kind != "InferenceService"
            or s.method in ("full", "freeze")
            or s.export.enabled
        ),
    ),
    Rule(
        name="serve-kaito-hub-base",
        cel="!has(self.serve) || self.serve.engine != 'kaito' || has(self.model.name)",
        message="spec.serve.engine kaito serves the adapter on a KAITO preset, which downloads the base from the Hub: "
        "it needs spec.model.name (not model.path or model.fromJob); use engine vllm or kserve for another base",
        field_path=".serve.engine",
        check=lambda s: s.serve is None or s.serve.engine != "kaito" or s.model.name is not None,
    ),
    Rule(
        name="serve-bucket-needs-outputs-uri",
        cel="!has(self.serve) || !has(self.serve.modelSource) || self.serve.modelSource != 'bucket' "
        "|| has(self.storage.outputs.uri)",
        message="spec.serve.modelSource bucket serves the copy uploaded to spec.storage.outputs.uri, which is unset: "
        "set spec.storage.outputs.uri or modelSource: volume",
        field_path=".serve.modelSource",
        check=lambda s: s.serve is None or s.serve.model_source != "bucket" or s.storage.outputs.uri is not None,
    ),
    Rule(
        name="serve-without-claim-from-bucket",
        cel="!has(self.serve) || has(self.storage.outputs.claimName) || (has(self.serve.modelSource) && "
        "self.serve.modelSource == 'bucket')",
        message="spec.serve: spec.storage.outputs has no claimName, so there is no outputs volume for the serving "
        "pods to mount: set spec.serve.modelSource: bucket (engine vllm, "
        "or engine kserve with kind InferenceService), or set spec.storage.outputs.claimName",
        field_path=".serve.modelSource",
        check=lambda s: s.serve is None or s.storage.outputs.claim_name is not None or s.serve.model_source == "bucket",
    ),
    Rule(
        name="serve-bucket-not-kaito",
        cel="!has(self.serve) || !has(self.serve.modelSource) || self.serve.modelSource != 'bucket' "
        "|| self.serve.engine != 'kaito'",
        message="spec.serve.modelSource bucket is not supported for engine kaito, "
        "which reads the adapter from the outputs volume: use modelSource: volume, or engine vllm",
        field_path=".serve.modelSource",
        check=lambda s: s.serve is None or s.serve.model_source != "bucket" or s.serve.engine != "kaito",
    ),
    Rule(
        name="serve-base-on-a-volume",
        cel="!has(self.serve) || !has(self.model.path) || has(self.storage.models)",
        message="spec.serve with spec.model.path reads the base model from the models volume: "
        "set spec.storage.models (the volume the path is on)",
        field_path=".storage.models",
        check=lambda s: s.serve is None or s.model.path is None or s.storage.models is not None,
    ),
)
"""Rules across spec.serve and the rest of the spec (added to FineTuneJobSpec.rules)."""
