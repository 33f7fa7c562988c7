"""The FineTuneJob spec: what a user writes.

The models live in one module per concern (model, data, method, hardware, training,
storage, env, tracking, scheduling) and are re-exported here.  Every attribute docstring becomes the field's description
in the CRD, so ``kubectl explain finetunejob.spec.<field>`` prints it.  Keep them short, say what the field maps to in
LLaMA-Factory, and say why a default is what it is. Cross-field rules are declared next to the model they constrain
(``rules``) and are emitted both as CEL and as Python checks (see :class:`~kubetune.api.base.Rule`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import (
    DNS1123Subdomain,
    Rule,
    RuledModel,
)
from .data import (
    DatasetColumns,
    DatasetSpec,
    EvaluationSpec,
    ShareGPTTags,
)
from .env import (
    RESERVED_ENV,
    ConfigMapKeyRef,
    EnvSource,
    EnvVar,
    OptionalSecretKeyRef,
    SecretKeyRef,
)
from .fields import (
    MAX_NODES,
    RANKING_STAGES,
    AttentionImpl,
    Backend,
    Count64,
    Launcher,
    Method,
    Offload,
    Packing,
    Precision,
    Scheduler,
    Stage,
    Steps,
)
from .hardware import (
    RDMA_PREFIX,
    DistributedSpec,
    ResourcesSpec,
)
from .method import (
    FreezeSpec,
    LoraSpec,
    QuantizationSpec,
)
from .model import (
    ModelSpec,
)
from .scheduling import (
    ImagePullSecret,
    RunPolicySpec,
    SchedulingSpec,
)
from .serve import SPEC_RULES as SERVE_RULES
from .serve import ServeSpec
from .objectstore import ObjectStoreCredentials, ObjectStoreSpec
from .storage import (
    ExportSpec,
    OutputsVolumeSpec,
    StorageSpec,
    VolumeSpec,
)
from .tracking import (
    HttpUrl,
    MLflowSpec,
    TensorBoardSpec,
    TrackingSpec,
    WandbSpec,
)
from .training import (
    TrainingSpec,
)

ExtraArgValue = bool | int | float | Annotated[str, Field(max_length=4096)]


# --- the spec -------------------------------------------------------------------

IMMUTABLE_FIELDS = (
    "model",
    "datasets",
    "method",
    "lora",
    "freeze",
    "quantization",
    "training",
    "resources",
    "distributed",
    "storage",
    "extraArgs",
)
"""Fields that cannot change once the object exists: a running training cannot
take new hyperparameters, data or hardware without restarting from scratch,
which is a new FineTuneJob.  `suspend`, `scheduling`, `export`, `evaluation`, `env`, `image`
and `runPolicy` may change (they take effect on the next (re)start of pods)."""


def _field_value(spec: Any, camel_field: str) -> Any:
    python_name = next(n for n, f in type(spec).model_fields.items() if f.alias == camel_field)
    return getattr(spec, python_name)


def uses_object_store(spec: Any) -> list[str]:
    """Every s3://, gs:// or az:// URI of the spec (model, datasets, evaluation datasets, outputs)."""
    held_out = spec.evaluation.datasets if spec.evaluation is not None and spec.evaluation.datasets else []
    uris = [spec.model.uri, *(d.uri for d in [*spec.datasets, *held_out]), spec.storage.outputs.uri]
    return [u for u in uris if u is not None]


def _any_uri(scheme: str) -> str:
    """CEL: some uri of the spec starts with ``scheme``."""
    one = f"has(d.uri) && d.uri.startsWith('{scheme}')"
    return (
        f"(has(self.model.uri) && self.model.uri.startsWith('{scheme}'))"
        f" || self.datasets.exists(d, {one})"
        f" || (has(self.evaluation) && has(self.evaluation.datasets) && self.evaluation.datasets.exists(d, {one}))"
        f" || (has(self.storage.outputs.uri) && self.storage.outputs.uri.startsWith('{scheme}'))"
    )


def url_datasets(spec: Any) -> list[str]:
    """Every url of the spec's datasets and evaluation datasets."""
    held_out = spec.evaluation.datasets if spec.evaluation is not None and spec.evaluation.datasets else []
    return [d.url for d in [*spec.datasets, *held_out] if d.url is not None]


_CA_ONLY_CEL = (
    "!has(self.storage.objectStore.endpoint) && !has(self.storage.objectStore.region) && "
    "!has(self.storage.objectStore.credentialsSecretRef)"
)


def _ca_only(store: Any) -> bool:
    return store.endpoint is None and store.region is None and store.credentials_secret_ref is None


def _immutable_rule(field: str) -> str:
    return f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"


class FineTuneJobSpec(RuledModel):
    """A whole LLaMA-Factory fine-tune: model, data, method, hardware, hyperparameters and outputs."""

    model: ModelSpec
    """Base model and chat template."""
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=32)]
    """Training datasets, mixed by LLaMA-Factory in the order given. Names must be unique."""
    method: Method = "lora"
    (
        "`full` (all weights), `freeze` (last layers only), `lora` (adapters), "
        "`qlora` (adapters on a 4/8-bit quantized base)."
    )
    lora: LoraSpec | None = None
    """LoRA settings for methods lora and qlora (defaults apply when unset)."""
    freeze: FreezeSpec | None = None
    """Settings for method freeze (defaults apply when unset)."""
    quantization: QuantizationSpec | None = None
    """Required for method qlora, forbidden otherwise."""
    resources: ResourcesSpec = ResourcesSpec()
    """Nodes, GPUs, CPU, memory and /dev/shm."""
    distributed: DistributedSpec = DistributedSpec()
    """Job kind, launcher and ZeRO sharding."""
    training: TrainingSpec = TrainingSpec()
    """Hyperparameters."""
    storage: StorageSpec
    """Volumes for datasets, model cache and outputs."""
    export: ExportSpec = ExportSpec()
    """Merge the LoRA adapter into the base model after training."""
    evaluation: EvaluationSpec | None = None
    (
        "Evaluate the trained model after training and export; results go to status.evaluation, "
        "kubetune-eval.json and the run record."
    )
    tracking: TrackingSpec = TrackingSpec()
    """Experiment tracking: TensorBoard (default), MLflow, Weights & Biases."""
    env: Annotated[list[EnvVar], Field(max_length=64)] | None = None
    (
        "Extra environment for the training containers (e.g. NCCL_DEBUG); secrets via valueFrom.secretKeyRef only. "
        "Tracking settings go in spec.tracking."
    )
    hf_token_secret_ref: OptionalSecretKeyRef | None = None
    (
        "Secret key holding a Hugging Face token for gated/private models and datasets; "
        "exposed to the trainer as HF_TOKEN. Unset: no HF_TOKEN (public models and datasets; "
        "the Hub answers an invalid token with 401 even for those). optional: "
        "true lets the pods start without it when the Secret is missing."
    )
    image: Annotated[str, Field(max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")] | None = None
    """Training image override. Unset: the operator's default trainer image (Helm value trainer.image)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Pull policy of the training image."""
    image_pull_secrets: Annotated[list[ImagePullSecret], Field(max_length=16)] | None = None
    """Registry credentials for the training image."""
    service_account_name: DNS1123Subdomain | None = None
    """ServiceAccount of the training pods (e.g. for workload identity to a bucket). Unset: the namespace default."""
    scheduling: SchedulingSpec | None = None
    """Node selection, tolerations, priority and Kueue queue."""
    run_policy: RunPolicySpec = RunPolicySpec()
    """Restart and lifetime limits."""
    auto_tune: bool = False
    (
        "Let kubetune choose distributed.zeroStage, distributed.offload and the micro-batch (keeping the global batch) "
        "so the job fits the GPU memory (resources.gpuMemory or the operator's GPU table); "
        "the choice and why are recorded in status and in the run record. Off: the spec is used as written."
    )
    suspend: bool = False
    (
        "Suspend the training (pods are deleted, outputs and checkpoints stay); "
        "set back to false to resume from the newest checkpoint."
    )
    extra_args: (
        Annotated[
            dict[Annotated[str, Field(max_length=128, pattern=r"^[a-z][a-z0-9_]*$")], ExtraArgValue],
            Field(max_length=64),
        ]
        | None
    ) = None
    (
        "Additional LLaMA-Factory arguments (snake_case keys, scalar values), e.g. `neftune_noise_alpha: "
        "5`. Checked against the pinned LLaMA-Factory's argument list; keys that the spec already controls are refused."
    )
    serve: ServeSpec | None = None
    (
        "Serve the trained model through an OpenAI-compatible API after the job Succeeded (vLLM, "
        "KServe or KAITO); unset: no serving."
    )

    rules = (
        (
            Rule(
                name="qlora-needs-quantization",
                cel="self.method != 'qlora' || has(self.quantization)",
                message="spec.method qlora needs spec.quantization.bits (4 or 8); "
                "or use method: lora for unquantized adapters",
                field_path=".quantization",
                check=lambda s: s.method != "qlora" or s.quantization is not None,
            ),
            Rule(
                name="quantization-only-with-qlora",
                cel="self.method == 'qlora' || !has(self.quantization)",
                message="spec.quantization only applies to method qlora (LLaMA-Factory quantizes the base model for "
                "adapter training only); set method: qlora or remove spec.quantization",
                field_path=".quantization",
                check=lambda s: s.method == "qlora" or s.quantization is None,
            ),
            Rule(
                name="lora-settings-need-adapters",
                cel="self.method in ['lora', 'qlora'] || !has(self.lora)",
                message="spec.lora only applies to methods lora and qlora; remove spec.lora or change spec.method",
                field_path=".lora",
                check=lambda s: s.method in ("lora", "qlora") or s.lora is None,
            ),
            Rule(
                name="freeze-settings-need-freeze",
                cel="self.method == 'freeze' || !has(self.freeze)",
                message="spec.freeze only applies to method freeze; remove spec.freeze or set method: freeze",
                field_path=".freeze",
                check=lambda s: s.method == "freeze" or s.freeze is None,
            ),
            Rule(
                name="int8-not-with-zero3",
                cel="!has(self.quantization) || self.quantization.bits != 8 || "
                "(self.distributed.zeroStage != 3 && !self.distributed.fsdp)",
                message="spec.quantization.bits 8 cannot be sharded by ZeRO-3 or FSDP (LLaMA-Factory rejects it): "
                "use bits: 4, or zeroStage 2 or lower",
                field_path=".quantization.bits",
                check=lambda s: (
                    s.quantization is None
                    or s.quantization.bits != 8
                    or (s.distributed.zero_stage != 3 and not s.distributed.fsdp)
                ),
            ),
            Rule(
                name="cpu-needs-fp32",
                cel="self.resources.gpusPerNode > 0 || self.training.precision == 'fp32'",
                message="spec.training.precision bf16/fp16 needs GPUs: set spec.resources.gpusPerNode >= 1, "
                "or precision: fp32 for CPU training",
                field_path=".training.precision",
                check=lambda s: s.resources.gpus_per_node > 0 or s.training.precision == "fp32",
            ),
            Rule(
                name="deepspeed-needs-gpus",
                cel="self.resources.gpusPerNode > 0 || self.distributed.zeroStage == 0",
                message="spec.distributed.zeroStage > 0 needs GPUs (spec.resources.gpusPerNode >= 1); "
                "use zeroStage: 0 for CPU training",
                field_path=".distributed.zeroStage",
                check=lambda s: s.resources.gpus_per_node > 0 or s.distributed.zero_stage == 0,
            ),
            Rule(
                name="export-merges-adapters",
                cel="!self.export.enabled || self.method in ['lora', 'qlora']",
                message="spec.export.enabled merges a LoRA adapter; methods full and freeze already write a complete "
                "model to the outputs volume: set export.enabled: false",
                field_path=".export.enabled",
                check=lambda s: not s.export.enabled or s.method in ("lora", "qlora"),
            ),
            Rule(
                name="dataset-names-unique",
                cel="self.datasets.all(d, self.datasets.exists_one(e, e.name == d.name))",
                message="spec.datasets[].name must be unique within the job: rename the duplicate dataset",
                field_path=".datasets",
                check=lambda s: len({d.name for d in s.datasets}) == len(s.datasets),
            ),
            Rule(
                name="env-names-unique",
                cel="!has(self.env) || self.env.all(v, self.env.exists_one(w, w.name == v.name))",
                message="spec.env[].name must be unique: remove the duplicate variable",
                field_path=".env",
                check=lambda s: s.env is None or len({e.name for e in s.env}) == len(s.env),
            ),
            Rule(
                name="tracking-env-from-tracking",
                cel="!has(self.env) || !has(self.tracking) || ((!has(self.tracking.mlflow) || !self.env.exists(e, "
                "e.name.startsWith('MLFLOW_'))) && (!has(self.tracking.wandb) || !self.env.exists(e, "
                "e.name.startsWith('WANDB_'))))",
                message="spec.env: MLFLOW_*/WANDB_* variables are set from spec.tracking.mlflow/wandb; "
                "remove them from spec.env (secrets go in the tracking secretKeyRefs)",
                field_path=".env",
                check=lambda s: (
                    s.env is None
                    or (
                        (s.tracking.mlflow is None or not any(e.name.startswith("MLFLOW_") for e in s.env))
                        and (s.tracking.wandb is None or not any(e.name.startswith("WANDB_") for e in s.env))
                    )
                ),
            ),
            Rule(
                name="pt-uses-text-column",
                cel="self.training.stage != 'pt' || self.datasets.all(d, d.format == 'alpaca')",
                message="spec.training.stage pt trains on raw text: give each dataset format: "
                "alpaca with columns.prompt naming the text column",
                field_path=".datasets",
                check=lambda s: s.training.stage != "pt" or all(d.format == "alpaca" for d in s.datasets),
            ),
            Rule(
                name="ranking-stage-needs-ranking-data",
                cel="!(self.training.stage in ['rm', 'dpo']) || self.datasets.all(d, d.ranking)",
                message="spec.training.stage rm/dpo trains on preference pairs: set ranking: "
                "true on every dataset (columns.chosen/rejected name the answers)",
                field_path=".datasets",
                check=lambda s: s.training.stage not in RANKING_STAGES or all(d.ranking for d in s.datasets),
            ),
            Rule(
                name="ranking-data-needs-ranking-stage",
                cel="self.training.stage in ['rm', 'dpo'] || self.datasets.all(d, !d.ranking)",
                message="spec.datasets[].ranking: preference pairs are only for stages rm and dpo (losses "
                "sigmoid/orpo/simpo/...); set stage: dpo or rm, or remove ranking",
                field_path=".datasets",
                check=lambda s: s.training.stage in RANKING_STAGES or not any(d.ranking for d in s.datasets),
            ),
            Rule(
                name="kto-needs-label-column",
                cel="self.training.stage != 'kto' || self.datasets.all(d, has(d.columns) && has(d.columns.ktoTag))",
                message="spec.training.stage kto needs the boolean label column of every dataset: "
                "set columns.ktoTag (e.g. label)",
                field_path=".datasets",
                check=lambda s: (
                    s.training.stage != "kto"
                    or all(d.columns is not None and d.columns.kto_tag is not None for d in s.datasets)
                ),
            ),
            Rule(
                name="kto-evaluation-needs-label-column",
                cel="self.training.stage != 'kto' || !has(self.evaluation) || !has(self.evaluation.datasets) || "
                "self.evaluation.datasets.all(d, has(d.columns) && has(d.columns.ktoTag))",
                message="spec.evaluation.datasets: stage kto scores labelled examples (LLaMA-Factory drops records "
                "without the label): set columns.ktoTag on every evaluation dataset",
                field_path=".evaluation.datasets",
                check=lambda s: (
                    s.training.stage != "kto"
                    or s.evaluation is None
                    or s.evaluation.datasets is None
                    or all(d.columns is not None and d.columns.kto_tag is not None for d in s.evaluation.datasets)
                ),
            ),
            Rule(
                name="kto-label-needs-kto",
                cel="self.training.stage == 'kto' || self.datasets.all(d, !has(d.columns) || !has(d.columns.ktoTag))",
                message="spec.datasets[].columns.ktoTag is the KTO label and applies to stage kto only; "
                "set stage: kto or remove ktoTag",
                field_path=".datasets",
                check=lambda s: (
                    s.training.stage == "kto" or all(d.columns is None or d.columns.kto_tag is None for d in s.datasets)
                ),
            ),
            Rule(
                name="evaluation-not-for-ppo",
                cel="!has(self.evaluation) || self.training.stage != 'ppo'",
                message="spec.evaluation: LLaMA-Factory cannot evaluate in stage ppo; "
                "evaluate the PPO model in a later job (spec.model.fromJob) with stage sft",
                field_path=".evaluation",
                check=lambda s: s.evaluation is None or s.training.stage != "ppo",
            ),
            Rule(
                name="evaluation-generation-needs-sft",
                cel="!has(self.evaluation) || !self.evaluation.generation || self.training.stage == 'sft'",
                message="spec.evaluation.generation (BLEU/ROUGE through predict mode) needs stage sft (LLaMA-Factory "
                "refuses predict_with_generate otherwise)",
                field_path=".evaluation.generation",
                check=lambda s: s.evaluation is None or not s.evaluation.generation or s.training.stage == "sft",
            ),
            Rule(
                name="evaluation-split-not-twice",
                cel="!has(self.evaluation) || !has(self.evaluation.valSize) || !has(self.training.valSize)",
                message="spec.evaluation.valSize and spec.training.valSize both hold data out: "
                "keep one (evaluation.valSize also holds it out of training)",
                field_path=".evaluation.valSize",
                check=lambda s: s.evaluation is None or s.evaluation.val_size is None or s.training.val_size is None,
            ),
            Rule(
                name="evaluation-dataset-names-unique",
                cel="!has(self.evaluation) || !has(self.evaluation.datasets) || "
                "self.evaluation.datasets.all(e, !self.datasets.exists(d, d.name == e.name) && "
                "self.evaluation.datasets.exists_one(f, f.name == e.name))",
                message="spec.evaluation.datasets[].name must differ from every other dataset name "
                "(training and evaluation): rename it",
                field_path=".evaluation.datasets",
                check=lambda s: (
                    s.evaluation is None
                    or s.evaluation.datasets is None
                    or len({d.name for d in s.datasets} | {e.name for e in s.evaluation.datasets})
                    == len(s.datasets) + len(s.evaluation.datasets)
                ),
            ),
            Rule(
                name="evaluation-datasets-match-stage",
                cel="!has(self.evaluation) || !has(self.evaluation.datasets) || self.evaluation.datasets.all(e, "
                "e.ranking == (self.training.stage in ['rm', 'dpo']))",
                message="spec.evaluation.datasets[].ranking must match the stage: preference pairs (ranking: "
                "true) for rm/dpo, none otherwise",
                field_path=".evaluation.datasets",
                check=lambda s: (
                    s.evaluation is None
                    or s.evaluation.datasets is None
                    or all(e.ranking == (s.training.stage in RANKING_STAGES) for e in s.evaluation.datasets)
                ),
            ),
            Rule(
                name="from-job-not-self",
                cel="!has(self.model.fromJob) || !has(self.training.ppo) || "
                "!has(self.training.ppo.rewardModel.fromJob) || "
                "self.training.ppo.rewardModel.fromJob != self.model.fromJob",
                message="spec.training.ppo.rewardModel.fromJob must name a reward-modelling job, "
                "not the policy's own spec.model.fromJob",
                field_path=".training.ppo.rewardModel.fromJob",
                check=lambda s: (
                    s.model.from_job is None
                    or s.training.ppo is None
                    or s.training.ppo.reward_model.from_job != s.model.from_job
                ),
            ),
            Rule(
                name="object-uri-one-store",
                cel="(!("
                + _any_uri("gs://")
                + ") || !("
                + _any_uri("s3://")
                + ")) && (!("
                + _any_uri("az://")
                + ") || !("
                + _any_uri("s3://")
                + " || "
                + _any_uri("gs://")
                + "))",
                message="spec: s3://, gs:// and az:// URIs in one job: a job reaches one object store "
                "(spec.storage.objectStore); copy the files into one store",
                field_path=".storage",
                check=lambda s: len({u.split("://", 1)[0] for u in uses_object_store(s)}) <= 1,
            ),
            Rule(
                name="gcs-needs-hmac-key",
                cel="!("
                + _any_uri("gs://")
                + ") || (has(self.storage.objectStore) && has(self.storage.objectStore.credentialsSecretRef))",
                message="spec.storage.objectStore.credentialsSecretRef: gs:// URIs are read through Cloud Storage's "
                "S3-compatible XML API, which takes an HMAC key: create one for a service account and give its access "
                "id and secret in a Secret (keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY by default); "
                "GKE Workload Identity cannot sign these requests",
                field_path=".storage.objectStore",
                check=lambda s: (
                    not any(u.startswith("gs://") for u in uses_object_store(s))
                    or (
                        s.storage.object_store is not None and s.storage.object_store.credentials_secret_ref is not None
                    )
                ),
            ),
            Rule(
                name="azure-needs-account",
                cel="!("
                + _any_uri("az://")
                + ") || (has(self.storage.objectStore) && (has(self.storage.objectStore.endpoint) || "
                "(has(self.storage.objectStore.credentialsSecretRef) && "
                "!has(self.storage.objectStore.credentialsSecretRef.accountKeyKey))))",
                message="spec.storage.objectStore: az:// URIs name the container only (az://<container>/<path>); "
                "the storage account comes from the connection string in the Secret of credentialsSecretRef (key "
                "AZURE_STORAGE_CONNECTION_STRING by default) or from endpoint: "
                "https://<account>.blob.core.windows.net, which accountKeyKey and Azure Workload Identity (no "
                "credentialsSecretRef, spec.serviceAccountName) need: set one",
                field_path=".storage.objectStore",
                check=lambda s: (
                    not any(u.startswith("az://") for u in uses_object_store(s))
                    or (
                        s.storage.object_store is not None
                        and (
                            s.storage.object_store.endpoint is not None
                            or (
                                s.storage.object_store.credentials_secret_ref is not None
                                and s.storage.object_store.credentials_secret_ref.account_key_key is None
                            )
                        )
                    )
                ),
            ),
            Rule(
                name="object-store-needs-uri",
                cel="!has(self.storage.objectStore) || has(self.model.uri) || has(self.model.fromJob) || "
                "has(self.storage.outputs.uri) || self.datasets.exists(d, has(d.uri)) || (has(self.evaluation) && "
                "has(self.evaluation.datasets) && self.evaluation.datasets.exists(d, has(d.uri))) || ("
                + _CA_ONLY_CEL
                + " && (self.datasets.exists(d, has(d.url)) || (has(self.evaluation) && "
                "has(self.evaluation.datasets) && self.evaluation.datasets.exists(d, has(d.url)))))",
                message="spec.storage.objectStore configures s3://, gs:// or az:// access but no spec.model.uri, "
                "spec.model.fromJob (a source job's results in a bucket), spec.datasets[].uri, "
                "spec.evaluation.datasets[].uri or spec.storage.outputs.uri uses it: "
                "remove it or add a uri (with only url datasets, objectStore may hold caBundle alone, "
                "the CA their https:// servers are verified against)",
                field_path=".storage.objectStore",
                check=lambda s: (
                    s.storage.object_store is None
                    or bool(uses_object_store(s))
                    or s.model.from_job is not None
                    or (_ca_only(s.storage.object_store) and bool(url_datasets(s)))
                ),
            ),
            Rule(
                name="serve-not-from-bucket-model",
                cel="!has(self.serve) || !has(self.model.uri)",
                message="spec.serve with spec.model.uri is not supported yet: "
                "the serving pods cannot read a base model from a bucket; "
                "copy the model to the models volume (spec.model.path) or use a Hub id (spec.model.name)",
                field_path=".serve",
                check=lambda s: s.serve is None or s.model.uri is None,
            ),
            Rule(
                # The trainer writes the staged model into the models volume (kubetune.trainer.model:
                # _stage_from_bucket); a read-only mount fails there with EROFS, after the pod got its GPUs.
                name="model-uri-needs-writable-models-volume",
                cel="!has(self.model.uri) || !has(self.storage.models) || !has(self.storage.models.readOnly) "
                "|| !self.storage.models.readOnly",
                message="spec.model.uri is staged (downloaded) into the models volume, "
                "which spec.storage.models.readOnly makes read-only: set readOnly: false, "
                "or leave spec.storage.models out (an emptyDir)",
                field_path=".storage.models.readOnly",
                check=lambda s: s.model.uri is None or s.storage.models is None or not s.storage.models.read_only,
            ),
            Rule(
                name="outputs-uri-single-node",
                cel="!has(self.storage.outputs.uri) || self.resources.nodes == 1",
                # Not only a matter of who uploads: without a shared (ReadWriteMany) outputs folder each node
                # writes its own part of a ZeRO checkpoint locally: transformers' Trainer calls DeepSpeed's
                # save_checkpoint on every process (_save_optimizer_and_scheduler, transformers/trainer.py:3228-3237
                # @5.6.0), which has every rank write its own optimizer-state shard, named by its data-parallel
                # rank (deepspeed/runtime/engine.py:3672-3674 _save_zero_checkpoint, :3198-3202 @0.18.4), and the
                # outputs emptyDir of a job without outputs.claimName is per pod.
                message="spec.storage.outputs.uri is supported for single-node jobs only for now (rank 0 uploads what "
                "is on its own outputs volume; with ZeRO every node writes its own checkpoint shards, "
                "which would be missing): set resources.nodes: 1, or remove outputs.uri and set "
                "spec.storage.outputs.claimName to a ReadWriteMany claim",
                field_path=".storage.outputs.uri",
                check=lambda s: s.storage.outputs.uri is None or s.resources.nodes == 1,
            ),
        )
        + SERVE_RULES
        + tuple(
            Rule(
                name=f"immutable-{field}",
                cel=_immutable_rule(field),
                message=f"spec.{field} cannot change after the job is created; create a new FineTuneJob (a new "
                "name) to train with other settings",
                field_path=f".{field}",
                reason="FieldValueForbidden",
                transition=True,
                check=lambda new, old, f=field: _field_value(new, f) == _field_value(old, f),
                # extraArgs values are preserve-unknown in the CRD (mixed scalars), which CEL cannot read.
                in_crd=field != "extraArgs",
            )
            for field in IMMUTABLE_FIELDS
        )
    )


# kubetune.api.spec is the public path of every spec model (they live in the modules above).
__all__ = [
    "AttentionImpl",
    "Backend",
    "ConfigMapKeyRef",
    "Count64",
    "DatasetColumns",
    "DatasetSpec",
    "DistributedSpec",
    "EnvSource",
    "EnvVar",
    "EvaluationSpec",
    "ExportSpec",
    "ExtraArgValue",
    "FineTuneJobSpec",
    "FreezeSpec",
    "HttpUrl",
    "IMMUTABLE_FIELDS",
    "ImagePullSecret",
    "Launcher",
    "LoraSpec",
    "MAX_NODES",
    "MLflowSpec",
    "Method",
    "ModelSpec",
    "Offload",
    "Packing",
    "Precision",
    "QuantizationSpec",
    "RANKING_STAGES",
    "RDMA_PREFIX",
    "RESERVED_ENV",
    "ResourcesSpec",
    "RunPolicySpec",
    "Scheduler",
    "SchedulingSpec",
    "ObjectStoreCredentials",
    "ObjectStoreSpec",
    "OptionalSecretKeyRef",
    "OutputsVolumeSpec",
    "SecretKeyRef",
    "ServeSpec",
    "ShareGPTTags",
    "Stage",
    "Steps",
    "StorageSpec",
    "TensorBoardSpec",
    "TrackingSpec",
    "TrainingSpec",
    "VolumeSpec",
    "WandbSpec",
]
