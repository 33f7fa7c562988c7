"""The FineTuneJob spec: what a user writes.

Every attribute docstring below becomes the field's description in the CRD, so
``kubectl explain finetunejob.spec.<field>`` prints it.  Keep them short, say
what the field maps to in LLaMA-Factory, and say why a default is what it is.
Cross-field rules are declared next to the model they constrain (``rules``) and
are emitted both as CEL and as Python checks (see :class:`~kubetune.api.base.Rule`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from .base import (
    ApiModel,
    DNS1123Label,
    DNS1123Subdomain,
    HubId,
    Identifier,
    RelativePath,
    Rule,
    RuledModel,
)
from .k8s import INT32_MAX, SAFE_INT_MAX, Affinity, ExtendedResourceName, LabelValue, PositiveQuantity, QualifiedName, Toleration
from .posttrain import KtoSpec, PpoSpec, PreferenceSpec
from .serve import SPEC_RULES as SERVE_RULES
from .serve import ServeSpec

MAX_NODES: Final = 1024
"""Most pods (nodes) one job may have; also bounds the pod name suffix (resource.MAX_NAME_LENGTH)."""

Steps = Annotated[int, Field(ge=1, le=INT32_MAX, json_schema_extra={"format": "int32"})]
Count64 = Annotated[int, Field(ge=1, le=SAFE_INT_MAX, json_schema_extra={"format": "int64"})]

Method = Literal["full", "freeze", "lora", "qlora"]
Backend = Literal["pytorchjob", "mpijob"]
Launcher = Literal["torchrun", "deepspeed", "accelerate"]
Precision = Literal["bf16", "fp16", "fp32"]
Stage = Literal["pt", "sft", "rm", "ppo", "dpo", "kto"]
RANKING_STAGES = ("rm", "dpo")
"""Stages that train on preference pairs (ranking datasets); ORPO and SimPO are dpo losses."""
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]
Offload = Literal["none", "optimizer", "all"]
AttentionImpl = Literal["auto", "disabled", "sdpa", "fa2", "fa3"]
Packing = Literal["none", "packing", "neat"]

_NO_DOTDOT = "!self.matches('(^|/)[.][.](/|$)')"


def _no_dotdot(path: str | None) -> bool:
    return path is None or ".." not in path.split("/")


# --- model --------------------------------------------------------------------


class ModelSpec(RuledModel):
    """The base model to fine-tune: a Hub repository or a folder on the models volume."""

    name: HubId | None = None
    """Hugging Face Hub id, e.g. `Qwen/Qwen1.5-1.8B`. Downloaded once into the model cache (spec.storage.models). Exactly one of name, path or fromJob."""

    path: RelativePath | None = None
    """Folder of a model already on the models volume (spec.storage.models), relative to its subPath. Exactly one of name, path or fromJob."""

    from_job: DNS1123Subdomain | None = None
    """Train on top of another FineTuneJob's output in the same namespace (same outputs claim): its merged model when it exported one, else its base model plus its LoRA adapter. The job waits (phase Pending, reason WaitingForJob) until that job has Succeeded."""

    revision: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.\-/]+$")] | None = None
    """Hub revision (branch, tag or commit) to pin; only with name. LLaMA-Factory's `model_revision`."""

    template: Identifier
    """LLaMA-Factory chat template matching the model family, e.g. `qwen`, `llama3`, `mistral`, `default` (LLaMA-Factory's `template`)."""

    trust_remote_code: bool = False
    """Allow custom modelling code from the model repository to run. Off by default: it executes code from the Hub."""

    rules = (
        Rule(
            name="model-one-source",
            cel="(has(self.name) ? 1 : 0) + (has(self.path) ? 1 : 0) + (has(self.fromJob) ? 1 : 0) == 1",
            message="spec.model: set exactly one of name (a Hub id such as Qwen/Qwen1.5-1.8B), path (a folder on the models volume) or fromJob (another FineTuneJob's output)",
            check=lambda m: sum(x is not None for x in (m.name, m.path, m.from_job)) == 1,
        ),
        Rule(
            name="model-revision-needs-hub",
            cel="!has(self.revision) || has(self.name)",
            message="spec.model.revision pins a Hub revision and needs spec.model.name; remove it when loading from spec.model.path",
            field_path=".revision",
            check=lambda m: m.revision is None or m.name is not None,
        ),
        Rule(
            name="model-path-inside-volume",
            cel="!has(self.path) || " + _NO_DOTDOT.replace("self", "self.path"),
            message="spec.model.path must stay inside the models volume: remove '..' segments",
            field_path=".path",
            check=lambda m: _no_dotdot(m.path),
        ),
    )


# --- datasets -----------------------------------------------------------------


class DatasetColumns(ApiModel):
    """Which keys of each record hold what, as in LLaMA-Factory's `dataset_info.json` `columns`.

    ShareGPT uses messages/system/tools; Alpaca uses prompt/query/response/history/system.
    Unset keys take LLaMA-Factory's defaults (`conversations`, `instruction`, `input`, `output`).
    """

    messages: Identifier | None = None
    """ShareGPT: the list of turns (LLaMA-Factory default `conversations`)."""
    system: Identifier | None = None
    """System prompt column (both formats)."""
    tools: Identifier | None = None
    """ShareGPT: tool descriptions column."""
    prompt: Identifier | None = None
    """Alpaca: the instruction column (LLaMA-Factory default `instruction`). For stage pt: the text column."""
    query: Identifier | None = None
    """Alpaca: the optional input column (LLaMA-Factory default `input`)."""
    response: Identifier | None = None
    """Alpaca: the answer column (LLaMA-Factory default `output`)."""
    history: Identifier | None = None
    """Alpaca: earlier turns as [instruction, answer] pairs."""
    chosen: Identifier | None = None
    """Ranking datasets: the preferred answer (Alpaca: a string; ShareGPT: one turn object). Default `chosen` when ranking."""
    rejected: Identifier | None = None
    """Ranking datasets: the dispreferred answer (Alpaca: a string; ShareGPT: one turn object). Default `rejected` when ranking."""
    kto_tag: Identifier | None = None
    """Stage kto: the boolean label column, true for a desirable answer (LLaMA-Factory's `kto_tag`). Required for stage kto."""


class ShareGPTTags(ApiModel):
    """How turns are labelled inside a ShareGPT record (LLaMA-Factory's `tags`)."""

    role_tag: Identifier | None = None
    """Key of a turn's role (LLaMA-Factory default `from`)."""
    content_tag: Identifier | None = None
    """Key of a turn's text (LLaMA-Factory default `value`)."""
    user_tag: Identifier | None = None
    """Role value of a user turn (default `human`)."""
    assistant_tag: Identifier | None = None
    """Role value of a model turn (default `gpt`)."""
    observation_tag: Identifier | None = None
    """Role value of a tool result (default `observation`)."""
    function_tag: Identifier | None = None
    """Role value of a tool call (default `function_call`)."""
    system_tag: Identifier | None = None
    """Role value of a system turn (default `system`)."""


_ALPACA_ONLY = ("prompt", "query", "response", "history")
_SHAREGPT_ONLY = ("messages", "tools")


class DatasetSpec(RuledModel):
    """One training dataset: where it comes from and how its records map to LLaMA-Factory's format."""

    name: Identifier
    """Key of the dataset in the generated dataset_info.json (LLaMA-Factory's `dataset`); unique within the job."""

    hub: HubId | None = None
    """Hugging Face Hub dataset id, e.g. `hkust-nlp/deita-10k-v0`. Exactly one of hub, path or url."""

    path: RelativePath | None = None
    """JSON/JSONL file or folder on the datasets volume (spec.storage.datasets), relative to its subPath."""

    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f'\"`$\\]+$")] | None = None
    """HTTP(S) address of a JSON/JSONL file, downloaded once per job by the trainer."""

    split: Identifier = "train"
    """Dataset split to train on (Hub datasets)."""

    subset: Identifier | None = None
    """Hub dataset configuration name, when it has several."""

    revision: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.\-/]+$")] | None = None
    """Hub revision to pin; only with hub."""

    format: Literal["sharegpt", "alpaca"] = "sharegpt"
    """Record layout: `sharegpt` (multi-turn conversations) or `alpaca` (instruction/input/output)."""

    columns: DatasetColumns | None = None
    """Column mapping; see DatasetColumns."""

    tags: ShareGPTTags | None = None
    """Turn labels for ShareGPT records, e.g. from/value/human/gpt as in the deita-10k data."""

    max_samples: Count64 | None = None
    """Use at most this many records of this dataset: a random subset when it has more, every record once when it has fewer (LLaMA-Factory's `num_samples`, which the trainer caps at the record count because LLaMA-Factory would otherwise repeat records to reach it)."""

    ranking: bool = False
    """Preference pairs (LLaMA-Factory's `ranking`): each record has a prompt plus a chosen and a rejected answer (columns.chosen / columns.rejected). For stages rm and dpo (including the orpo and simpo losses)."""

    rules = (
        Rule(
            name="dataset-one-source",
            cel="(has(self.hub) ? 1 : 0) + (has(self.path) ? 1 : 0) + (has(self.url) ? 1 : 0) == 1",
            message="spec.datasets[]: set exactly one of hub (a Hub dataset id), path (a file on the datasets volume) or url",
            check=lambda d: sum(x is not None for x in (d.hub, d.path, d.url)) == 1,
        ),
        Rule(
            name="dataset-revision-needs-hub",
            cel="!has(self.revision) || has(self.hub)",
            message="spec.datasets[].revision pins a Hub revision and needs hub; remove it for path or url datasets",
            field_path=".revision",
            check=lambda d: d.revision is None or d.hub is not None,
        ),
        Rule(
            name="dataset-path-inside-volume",
            cel="!has(self.path) || " + _NO_DOTDOT.replace("self", "self.path"),
            message="spec.datasets[].path must stay inside the datasets volume: remove '..' segments",
            field_path=".path",
            check=lambda d: _no_dotdot(d.path),
        ),
        Rule(
            name="alpaca-has-no-tags",
            cel="self.format != 'alpaca' || !has(self.tags)",
            message="spec.datasets[].tags only apply to format sharegpt; remove tags or set format: sharegpt",
            field_path=".tags",
            check=lambda d: d.format != "alpaca" or d.tags is None,
        ),
        Rule(
            name="alpaca-columns",
            cel="self.format != 'alpaca' || !has(self.columns) || (!has(self.columns.messages) && !has(self.columns.tools))",
            message="spec.datasets[].columns.messages/tools are ShareGPT columns; with format alpaca use prompt/query/response/history",
            field_path=".columns",
            check=lambda d: d.format != "alpaca"
            or d.columns is None
            or all(getattr(d.columns, c) is None for c in _SHAREGPT_ONLY),
        ),
        Rule(
            name="sharegpt-columns",
            cel="self.format != 'sharegpt' || !has(self.columns) || (!has(self.columns.prompt) && !has(self.columns.query) && !has(self.columns.response) && !has(self.columns.history))",
            message="spec.datasets[].columns.prompt/query/response/history are Alpaca columns; with format sharegpt use messages/system/tools",
            field_path=".columns",
            check=lambda d: d.format != "sharegpt"
            or d.columns is None
            or all(getattr(d.columns, c) is None for c in _ALPACA_ONLY),
        ),
        Rule(
            name="chosen-rejected-need-ranking",
            cel="self.ranking || !has(self.columns) || (!has(self.columns.chosen) && !has(self.columns.rejected))",
            message="spec.datasets[].columns.chosen/rejected name preference pairs: set ranking: true (stages rm, dpo) or remove them",
            field_path=".columns",
            check=lambda d: d.ranking or d.columns is None or (d.columns.chosen is None and d.columns.rejected is None),
        ),
    )


class EvaluationSpec(RuledModel):
    """Evaluate the trained model after training (and export): eval loss, perplexity, optionally BLEU-4/ROUGE."""

    val_size: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Hold out this fraction of the training data (never trained on; LLaMA-Factory's `val_size`, same seed). Exactly one of valSize or datasets."""
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=16)] | None = None
    """Held-out datasets, described like spec.datasets[] (LLaMA-Factory's `eval_dataset`); names unique across both lists."""
    max_samples: Annotated[int, Field(ge=1)] | None = None
    """Evaluate on at most this many records per dataset."""
    generation: bool = False
    """Also generate answers and score them against the references with BLEU-4 and ROUGE-1/2/L (LLaMA-Factory's predict mode; stage sft only)."""
    max_new_tokens: Annotated[int, Field(ge=1, le=65536)] = 128
    """Longest generated answer in generation mode (`max_new_tokens`)."""
    base_model: bool = False
    """Evaluate the base model the same way, so status shows the difference (not for dpo/kto with a reference model: there the starting model's loss is fixed by definition)."""

    rules = (
        Rule(
            name="evaluation-one-source",
            cel="has(self.valSize) != has(self.datasets)",
            message="spec.evaluation: set exactly one of valSize (a held-out fraction of the training data) or datasets (held-out datasets)",
            check=lambda e: (e.val_size is None) != (e.datasets is None),
        ),
    )


# --- method-specific settings ---------------------------------------------------


class LoraSpec(ApiModel):
    """LoRA adapter settings (methods lora and qlora)."""

    rank: Annotated[int, Field(ge=1, le=1024)] = 8
    """Rank of the low-rank update (LLaMA-Factory's `lora_rank`)."""
    alpha: Annotated[int, Field(ge=1, le=4096)] | None = None
    """Scaling numerator (`lora_alpha`); LLaMA-Factory uses 2 x rank when unset."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout on the adapter input (`lora_dropout`)."""
    target_modules: Annotated[list[Identifier], Field(min_length=1, max_length=64)] = ["all"]
    """Modules that get adapters (`lora_target`), e.g. [q_proj, v_proj] as in the tutorial; `all` means every linear layer."""


class FreezeSpec(ApiModel):
    """Partial-parameter training settings (method freeze)."""

    trainable_layers: Annotated[int, Field(ge=-1024, le=1024)] = 2
    """Number of trainable layers (`freeze_trainable_layers`): positive counts from the last layer, negative from the first."""
    trainable_modules: Annotated[list[Identifier], Field(min_length=1, max_length=64)] = ["all"]
    """Module names trained inside those layers (`freeze_trainable_modules`)."""


class QuantizationSpec(ApiModel):
    """Load the base model quantized with bitsandbytes (method qlora)."""

    bits: Literal[4, 8]
    """4 (QLoRA, NF4/FP4) or 8 (LLM.int8) bits (LLaMA-Factory's `quantization_bit`)."""
    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type (`quantization_type`); NF4 is the QLoRA paper's choice."""
    double_quant: bool = True
    """Quantize the quantization constants too (`double_quantization`); saves ~0.4 bit per parameter."""



# --- resources and distribution -------------------------------------------------


_RESOURCE_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$"
ResourceName = Annotated[str, Field(max_length=253, pattern=_RESOURCE_NAME)]
"""A domain-prefixed (extended) resource name such as `rdma/ib` or `nvidia.com/mlnxnics`."""

RDMA_PREFIX = "rdma/"


class ResourcesSpec(RuledModel):
    """How much hardware the job gets: nodes x GPUs, plus CPU, memory and shared memory per node."""

    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = 1
    """Number of pods (one per node). PyTorchJob: 1 Master + nodes-1 Workers; MPIJob: nodes Workers."""
    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs requested by each pod; also the number of training processes per pod. 0 trains on CPU (fp32 only)."""
    gpu_resource_name: ExtendedResourceName = "nvidia.com/gpu"
    """Extended resource name of the GPU, with its domain: e.g. `nvidia.com/gpu`, `amd.com/gpu`, or a MIG profile such as `nvidia.com/mig-1g.10gb`. Never cpu, memory or ephemeral-storage."""
    cpu: PositiveQuantity | None = None
    """CPU request and limit per pod, a Kubernetes quantity, e.g. `16` or `15500m`. Unset: no CPU limit."""
    memory: PositiveQuantity | None = None
    """Memory request and limit per pod, a Kubernetes quantity, e.g. `128Gi`. Unset: no memory limit."""
    shared_memory_size: PositiveQuantity = "16Gi"
    """Size of the in-memory /dev/shm (dataloader workers and NCCL need more than the container default 64Mi)."""
    gpu_memory: PositiveQuantity | None = None
    """Memory of one GPU, e.g. `80Gi` (H100) or `141Gi` (H200). When known (here, or from the operator's table for the nodeSelector's nvidia.com/gpu.product), kubetune predicts the peak memory per GPU before creating pods and refuses a job that cannot fit (condition Feasible=False with the numbers and the cheapest fix); `kubetune plan` prints the breakdown."""
    extra: Annotated[dict[ResourceName, Annotated[int, Field(ge=1, le=1000)]], Field(max_length=16)] | None = None
    """Other extended resources per training pod, e.g. `rdma/ib: 1` (RDMA device plugin) or a secondary network's device. A key starting with `rdma/` marks the job as RDMA: the training containers then get the IPC_LOCK capability that RDMA memory registration needs (see docs/networking.md)."""

    rules = (
        Rule(
            name="extra-resource-names",
            # The CRD cannot constrain map keys with a pattern; CEL can.
            cel=f"!has(self.extra) || self.extra.all(k, size(k) <= 253 && k.matches('{_RESOURCE_NAME}'))",
            message="spec.resources.extra keys must be domain-prefixed extended resource names such as rdma/ib or nvidia.com/mlnxnics",
            field_path=".extra",
            check=lambda r: r.extra is None or all(len(k) <= 253 and re.match(_RESOURCE_NAME, k) for k in r.extra),
        ),
        Rule(
            name="extra-not-the-gpu",
            cel="!has(self.extra) || !has(self.gpuResourceName) || !(self.gpuResourceName in self.extra)",
            message="spec.resources.extra must not repeat the GPU resource: set GPUs with spec.resources.gpusPerNode (and gpuResourceName)",
            field_path=".extra",
            check=lambda r: r.extra is None or r.gpu_resource_name not in r.extra,
        ),
    )

    @property
    def rdma(self) -> bool:
        """RDMA devices requested (spec.resources.extra has an `rdma/...` resource)."""
        return any(k.startswith(RDMA_PREFIX) for k in (self.extra or {}))


class DistributedSpec(RuledModel):
    """How training processes are launched and how state is sharded."""

    backend: Backend = "pytorchjob"
    """Kubeflow job kind: `pytorchjob` (kubeflow.org/v1, torchrun) or `mpijob` (kubeflow.org/v2beta1, mpirun + DeepSpeed)."""
    launcher: Launcher | None = None
    """Process launcher: `torchrun` (DDP), `deepspeed` (DeepSpeed engine via LLaMA-Factory's `deepspeed` config) or `accelerate` (accelerate launch with a generated config). Unset: deepspeed when zeroStage > 0 or backend is mpijob, else torchrun."""
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 0
    """DeepSpeed ZeRO stage: 0 off, 1 optimizer states, 2 + gradients (the tutorial's choice), 3 + parameters."""
    offload: Offload = "none"
    """ZeRO-Offload to CPU memory: `optimizer` (stage >= 2) or `all` = optimizer and parameters (stage 3)."""
    fsdp: bool = False
    """With launcher accelerate: shard with PyTorch FSDP instead of DDP (zeroStage must be 0)."""
    master_port: Annotated[int, Field(ge=1024, le=65535)] = 23456
    """Rendezvous port of the master pod (PyTorchJob's `pytorchjob-port`)."""

    rules = (
        Rule(
            name="torchrun-has-no-zero",
            cel="!has(self.launcher) || self.launcher != 'torchrun' || self.zeroStage == 0",
            message="spec.distributed.zeroStage > 0 needs DeepSpeed: set launcher: deepspeed (or accelerate), or zeroStage: 0 for plain DDP",
            field_path=".zeroStage",
            check=lambda d: d.launcher != "torchrun" or d.zero_stage == 0,
        ),
        Rule(
            name="mpijob-needs-deepspeed",
            cel="self.backend != 'mpijob' || !has(self.launcher) || self.launcher == 'deepspeed'",
            message="spec.distributed.backend mpijob starts one process per GPU with mpirun, which only the DeepSpeed launcher understands: set launcher: deepspeed (or backend: pytorchjob for torchrun/accelerate)",
            field_path=".launcher",
            check=lambda d: d.backend != "mpijob" or d.launcher in (None, "deepspeed"),
        ),
        Rule(
            name="offload-optimizer-needs-zero2",
            cel="self.offload != 'optimizer' || self.zeroStage >= 2",
            message="spec.distributed.offload: optimizer needs zeroStage 2 or 3",
            field_path=".offload",
            check=lambda d: d.offload != "optimizer" or d.zero_stage >= 2,
        ),
        Rule(
            name="offload-all-needs-zero3",
            cel="self.offload != 'all' || self.zeroStage == 3",
            message="spec.distributed.offload: all (parameters too) needs zeroStage 3; use offload: optimizer with stage 2",
            field_path=".offload",
            check=lambda d: d.offload != "all" or d.zero_stage == 3,
        ),
        Rule(
            name="fsdp-needs-accelerate",
            cel="!self.fsdp || (has(self.launcher) && self.launcher == 'accelerate' && self.zeroStage == 0)",
            message="spec.distributed.fsdp needs launcher: accelerate and zeroStage: 0 (FSDP and ZeRO both shard; pick one)",
            field_path=".fsdp",
            check=lambda d: not d.fsdp or (d.launcher == "accelerate" and d.zero_stage == 0),
        ),
    )

    @property
    def effective_launcher(self) -> Launcher:
        """The launcher actually used once the unset default is resolved."""
        return self.launcher_for(self.backend)

    def launcher_for(self, backend: Backend) -> Launcher:
        """The launcher on ``backend``, which may differ from spec.backend (``kubetune render --backend``)."""
        if self.launcher is not None:
            return self.launcher
        if self.zero_stage > 0 or backend == "mpijob":
            return "deepspeed"
        return "torchrun"


# --- training hyperparameters ---------------------------------------------------


class TrainingSpec(RuledModel):
    """Hyperparameters, mapped one-to-one onto LLaMA-Factory / transformers training arguments."""

    stage: Stage = "sft"
    """Training stage (`stage`): `sft` supervised fine-tuning on conversations, `pt` continued pre-training on raw text."""
    epochs: Annotated[float, Field(gt=0, le=1000)] = 3.0
    """Passes over the data (`num_train_epochs`); ignored when maxSteps is set."""
    max_steps: Steps | None = None
    """Stop after this many optimizer steps (`max_steps`); overrides epochs."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5.0e-5
    """Peak learning rate (`learning_rate`). Full fine-tuning wants ~1e-5, LoRA ~1e-4."""
    per_device_batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    """Micro-batch per GPU (`per_device_train_batch_size`)."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = 8
    """Micro-batches per optimizer step (`gradient_accumulation_steps`). Global batch = this x batch x GPUs."""
    scheduler: Scheduler = "cosine"
    """Learning-rate schedule (`lr_scheduler_type`)."""
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Fraction of steps spent warming up (`warmup_ratio`)."""
    warmup_steps: Annotated[int, Field(ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"})] | None = None
    """Warm-up steps (`warmup_steps`); overrides warmupRatio."""
    cutoff_length: Annotated[int, Field(ge=8, le=1048576)] = 2048
    """Maximum tokens per example after tokenisation (`cutoff_len`)."""
    precision: Precision = "bf16"
    """Mixed precision: `bf16` (A100/H100 and newer), `fp16` (V100 and older), `fp32` (CPU)."""
    logging_steps: Steps = 10
    """Log loss and learning rate every N steps (`logging_steps`); also the progress update rate."""
    save_steps: Steps | None = None
    """Checkpoint every N optimizer steps (`save_steps`); a restarted job resumes from the newest checkpoint. Unset: every 10% of the run (transformers' fractional `save_steps: 0.1`), so a run of any length writes checkpoints. A SIGTERM (preemption, drain) also writes one (see runPolicy.terminationGracePeriodSeconds)."""
    save_total_limit: Steps = 3
    """Keep only the newest N checkpoints (`save_total_limit`). A full fine-tune checkpoint with optimizer state takes about 14-16 bytes per parameter; unbounded, checkpoints fill the outputs volume and the job fails for good."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass to save memory (inverse of LLaMA-Factory's `disable_gradient_checkpointing`)."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
    """Random seed (`seed`)."""
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    """AdamW weight decay (`weight_decay`)."""
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    """Gradient clipping norm (`max_grad_norm`)."""
    max_samples: Count64 | None = None
    """Use at most this many examples from each dataset (`max_samples`), e.g. for a smoke run."""
    val_size: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Hold out this fraction of the data for evaluation (`val_size`); evaluated every evalSteps."""
    eval_steps: Steps | None = None
    """Evaluate every N steps (`eval_steps`); needs valSize."""
    attention: AttentionImpl = "auto"
    """Attention kernel (`flash_attn`): `auto` and `sdpa` use PyTorch SDPA (FlashAttention kernels inside PyTorch on Ampere and newer), `disabled` eager attention, `fa2`/`fa3` the flash-attn packages, which the default trainer image does not ship: they are refused unless spec.image names an image that has them (checked again by the trainer before any GPU time is spent; no silent fallback)."""
    liger_kernel: bool = False
    """Liger Kernel's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) for supported model families: less memory, higher throughput (`enable_liger_kernel`). In the default trainer image."""
    packing: Packing = "none"
    """Pack several examples into one cutoffLength sequence: `none`, `packing` (plain concatenation; attention crosses example boundaries) or `neat` (no cross-example attention; LLaMA-Factory's `neat_packing`). Fewer padding tokens, faster epochs on short examples."""
    preprocessing_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    """Processes for tokenising the dataset (`preprocessing_num_workers`)."""
    preference: PreferenceSpec | None = None
    """Stages dpo and kto: beta, loss (sigmoid/hinge/ipo/kto_pair/orpo/simpo), SFT mix-in, SimPO gamma (LLaMA-Factory defaults when unset)."""
    kto: KtoSpec | None = None
    """Stage kto: weights of desirable and undesirable examples."""
    ppo: PpoSpec | None = None
    """Stage ppo (required there): the reward model and PPO settings."""

    rules = (
        Rule(
            name="eval-steps-need-val-size",
            cel="!has(self.evalSteps) || has(self.valSize)",
            message="spec.training.evalSteps needs spec.training.valSize (the fraction of data held out for evaluation)",
            field_path=".evalSteps",
            check=lambda t: t.eval_steps is None or t.val_size is not None,
        ),
        Rule(
            name="preference-needs-dpo-or-kto",
            cel="!has(self.preference) || self.stage in ['dpo', 'kto']",
            message="spec.training.preference applies to stages dpo and kto; set stage: dpo (or kto) or remove preference",
            field_path=".preference",
            check=lambda t: t.preference is None or t.stage in ("dpo", "kto"),
        ),
        Rule(
            name="preference-loss-is-dpo",
            cel="self.stage != 'kto' || !has(self.preference) || self.preference.loss == 'sigmoid'",
            message="spec.training.preference.loss selects a DPO-family loss and applies to stage dpo only; KTO has its own loss: remove loss",
            field_path=".preference.loss",
            check=lambda t: t.stage != "kto" or t.preference is None or t.preference.loss == "sigmoid",
        ),
        Rule(
            name="kto-settings-need-kto",
            cel="!has(self.kto) || self.stage == 'kto'",
            message="spec.training.kto applies to stage kto; set stage: kto or remove kto",
            field_path=".kto",
            check=lambda t: t.kto is None or t.stage == "kto",
        ),
        Rule(
            name="ppo-needs-reward-model",
            cel="self.stage != 'ppo' || has(self.ppo)",
            message="spec.training.stage ppo needs spec.training.ppo.rewardModel (a reward model or a FineTuneJob of stage rm)",
            field_path=".ppo",
            check=lambda t: t.stage != "ppo" or t.ppo is not None,
        ),
        Rule(
            name="ppo-settings-need-ppo",
            cel="!has(self.ppo) || self.stage == 'ppo'",
            message="spec.training.ppo applies to stage ppo; set stage: ppo or remove ppo",
            field_path=".ppo",
            check=lambda t: t.ppo is None or t.stage == "ppo",
        ),
    )


# --- storage, export, environment, scheduling ------------------------------------


class VolumeSpec(RuledModel):
    """A PersistentVolumeClaim and an optional sub-path inside it."""

    claim_name: DNS1123Subdomain
    """Name of an existing PersistentVolumeClaim in the job's namespace. Multi-node jobs need ReadWriteMany."""
    sub_path: RelativePath | None = None
    """Folder inside the claim to mount instead of its root."""
    read_only: bool = False
    """Mount read-only (datasets and shared model stores)."""

    rules = (
        Rule(
            name="subpath-inside-volume",
            cel="!has(self.subPath) || " + _NO_DOTDOT.replace("self", "self.subPath"),
            message="subPath must stay inside the claim: remove '..' segments",
            field_path=".subPath",
            check=lambda v: _no_dotdot(v.sub_path),
        ),
    )


class StorageSpec(ApiModel):
    """Where data, models and results live. kubetune never deletes anything on these volumes."""

    datasets: VolumeSpec | None = None
    """Volume holding dataset files (spec.datasets[].path) and converted data. Unset: an emptyDir (hub/url datasets only)."""
    models: VolumeSpec | None = None
    """Model cache (HF_HOME) and local models (spec.model.path). Unset: an emptyDir, so every run downloads the model again."""
    outputs: VolumeSpec
    """Checkpoints, adapters, merged models, logs and the run record go to <outputs>/<namespace>/<job name>/."""


class ExportSpec(ApiModel):
    """After training, merge the LoRA adapter into the base model (the tutorial's export step)."""

    enabled: bool = False
    """Run `llamafactory-cli export` after a successful LoRA/QLoRA training; the merged model lands in <outputs>/merged."""
    shard_size_gb: Annotated[int, Field(ge=1, le=100, alias="shardSizeGB")] = 5
    """Maximum safetensors shard size in GB (`export_size`)."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: DNS1123Subdomain
    """Secret name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "token"
    """Key inside the Secret."""


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the job's namespace."""

    name: DNS1123Subdomain
    """ConfigMap name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside the ConfigMap."""


class EnvSource(RuledModel):
    """Where an environment variable's value comes from: a Secret or ConfigMap key, never inline."""

    secret_key_ref: SecretKeyRef | None = None
    """Value of a Secret key (API keys, tokens)."""
    config_map_key_ref: ConfigMapKeyRef | None = None
    """Value of a ConfigMap key."""

    rules = (
        Rule(
            name="env-one-source",
            cel="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            message="spec.env[].valueFrom: set exactly one of secretKeyRef or configMapKeyRef",
            check=lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None),
        ),
    )


HttpUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f'\"`$\\]+$")]
"""An http(s) address; no whitespace, quotes or shell metacharacters."""


class TensorBoardSpec(ApiModel):
    """TensorBoard event files written next to the checkpoints."""

    enabled: bool = True
    """Write TensorBoard event files to <outputs>/<namespace>/<name>/runs (point `tensorboard --logdir` at the outputs volume). On by default: it costs a few KB per logging step and needs no server."""


class MLflowSpec(RuledModel):
    """Log metrics and parameters to an MLflow tracking server (transformers' MLflowCallback)."""

    tracking_uri: HttpUrl
    """MLflow tracking server address, e.g. `http://mlflow.mlflow.svc:5000` (`MLFLOW_TRACKING_URI`)."""
    experiment: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-/ ]+$")] | None = None
    """Experiment name (`MLFLOW_EXPERIMENT_NAME`). Unset: the job's namespace."""
    username_secret_ref: SecretKeyRef | None = None
    """Secret key holding the basic-auth user name (`MLFLOW_TRACKING_USERNAME`); needs passwordSecretRef."""
    password_secret_ref: SecretKeyRef | None = None
    """Secret key holding the basic-auth password (`MLFLOW_TRACKING_PASSWORD`); needs usernameSecretRef."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token (`MLFLOW_TRACKING_TOKEN`), instead of user name and password."""

    rules = (
        Rule(
            name="mlflow-basic-auth-pair",
            cel="has(self.usernameSecretRef) == has(self.passwordSecretRef)",
            message="spec.tracking.mlflow: set both usernameSecretRef and passwordSecretRef (basic auth), or neither",
            field_path=".passwordSecretRef",
            check=lambda m: (m.username_secret_ref is None) == (m.password_secret_ref is None),
        ),
        Rule(
            name="mlflow-one-auth",
            cel="!has(self.tokenSecretRef) || !has(self.usernameSecretRef)",
            message="spec.tracking.mlflow: use either tokenSecretRef or usernameSecretRef/passwordSecretRef, not both",
            field_path=".tokenSecretRef",
            check=lambda m: m.token_secret_ref is None or m.username_secret_ref is None,
        ),
    )


class WandbSpec(ApiModel):
    """Log to Weights & Biases (transformers' WandbCallback)."""

    project: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
    """W&B project (`WANDB_PROJECT`)."""
    entity: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    """W&B team or user (`WANDB_ENTITY`). Unset: the API key's default entity."""
    api_key_secret_ref: SecretKeyRef
    """Secret key holding the W&B API key (`WANDB_API_KEY`); never inline."""
    base_url: HttpUrl | None = None
    """Self-hosted W&B server (`WANDB_BASE_URL`). Unset: the W&B cloud."""


class TrackingSpec(ApiModel):
    """Experiment tracking: where loss, learning rate and evaluation metrics go besides the FineTuneJob status. Sets LLaMA-Factory's `report_to`."""

    tensorboard: TensorBoardSpec = TensorBoardSpec()
    """TensorBoard event files on the outputs volume (on by default)."""
    mlflow: MLflowSpec | None = None
    """An MLflow tracking server."""
    wandb: WandbSpec | None = None
    """Weights & Biases."""

    def report_to(self) -> list[str]:
        """transformers' `report_to` integrations, in a stable order."""
        out = []
        if self.tensorboard.enabled:
            out.append("tensorboard")
        if self.mlflow is not None:
            out.append("mlflow")
        if self.wandb is not None:
            out.append("wandb")
        return out


RESERVED_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "FORCE_TORCHRUN",
    "HF_TOKEN",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "KUBETUNE_CONFIG_DIR",
    "KUBETUNE_JOB",
    "KUBETUNE_NAMESPACE",
    "KUBETUNE_OUTPUT_DIR",
    "KUBETUNE_DATASETS_DIR",
    "KUBETUNE_MODELS_DIR",
    "KUBETUNE_PROGRESS_URL",
    "KUBETUNE_PROGRESS_TOKEN_FILE",
    "KUBETUNE_METRICS_PORT",
    "KUBETUNE_STOP_GRACE_SECONDS",
    # The root filesystem is read-only: caches and temp files are pointed at scratch.
    "HOME",
    "TMPDIR",
    "TRITON_CACHE_DIR",
    "TORCH_EXTENSIONS_DIR",
    "MPLCONFIGDIR",
    "PYTHONUNBUFFERED",
)
"""Variables the renderer sets itself; a user value would be a duplicate entry that silently
breaks distribution or the read-only root filesystem.  tests/render/test_hostile_render.py
renders every backend and launcher and fails when a container gets a name missing here."""

_RESERVED_CEL = "[" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]"


class EnvVar(RuledModel):
    """An environment variable for the training containers."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Variable name."""
    value: Annotated[str, Field(max_length=4096, pattern=r"^[^\x00]*$")] | None = None
    """Literal value (never put secrets here: use valueFrom.secretKeyRef)."""
    value_from: EnvSource | None = None
    """Take the value from a Secret or ConfigMap key."""

    rules = (
        Rule(
            name="env-one-value",
            cel="has(self.value) != has(self.valueFrom)",
            message="spec.env[]: set exactly one of value or valueFrom",
            check=lambda e: (e.value is None) != (e.value_from is None),
        ),
        Rule(
            name="env-not-reserved",
            cel=f"!(self.name in {_RESERVED_CEL}) && !self.name.startsWith('PET_') && !self.name.startsWith('OMPI_')",
            message="spec.env[].name is set by kubetune itself (distribution, caches, HF token); use spec.hfTokenSecretRef for the Hub token and drop the variable",
            field_path=".name",
            check=lambda e: e.name not in RESERVED_ENV and not e.name.startswith(("PET_", "OMPI_")),
        ),
    )


class SchedulingSpec(ApiModel):
    """Placement and queueing of the training pods."""

    node_selector: Annotated[dict[QualifiedName, LabelValue], Field(max_length=64)] | None = None
    """Node labels the pods must match (label keys and values), e.g. `nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = None
    """Tolerations for tainted (GPU) nodes."""
    affinity: Affinity | None = None
    """core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), checked like the API server checks a pod's and copied into every pod."""
    priority_class_name: DNS1123Subdomain | None = None
    """PriorityClass of the pods (and of the Kubeflow job for gang scheduling)."""
    queue_name: DNS1123Label | None = None
    """Kueue LocalQueue: sets the `kueue.x-k8s.io/queue-name` label on the child job and lets Kueue admit (and suspend) it."""
    pod_annotations: Annotated[
        dict[QualifiedName, Annotated[str, Field(max_length=4096)]],
        Field(max_length=32),
    ] | None = None
    """Annotations on every training pod, e.g. `k8s.v1.cni.cncf.io/networks: rdma-net` to attach Multus secondary (RDMA/InfiniBand) networks."""


class RunPolicySpec(ApiModel):
    """Restart and lifetime limits, mapped onto the Kubeflow job's runPolicy."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Pod restarts on retryable failures (preemption, NCCL errors) before the job fails; training resumes from the newest checkpoint."""
    active_deadline_seconds: Count64 | None = None
    """Fail the job after this many seconds of running."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"})] | None = None
    """Delete the finished Kubeflow job (not the FineTuneJob, not the outputs) after this many seconds."""
    termination_grace_period_seconds: Annotated[int, Field(ge=30, le=86400)] = 300
    """The training pods' terminationGracePeriodSeconds. On SIGTERM (preemption, node drain, suspend) the trainer finishes the current step and writes a checkpoint within this time, so a restart loses no progress; raise it for models whose checkpoint takes longer to write. Spot/preemptible nodes may give less notice than this."""


class ImagePullSecret(ApiModel):
    """A reference to a docker-registry Secret."""

    name: DNS1123Subdomain
    """Secret name."""


# A value LLaMA-Factory accepts on its command line: scalar only.
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


def _immutable_rule(field: str) -> str:
    return f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"


class FineTuneJobSpec(RuledModel):
    """A whole LLaMA-Factory fine-tune: model, data, method, hardware, hyperparameters and outputs."""

    model: ModelSpec
    """Base model and chat template."""
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=32)]
    """Training datasets, mixed by LLaMA-Factory in the order given. Names must be unique."""
    method: Method = "lora"
    """`full` (all weights), `freeze` (last layers only), `lora` (adapters), `qlora` (adapters on a 4/8-bit quantized base)."""
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
    """Evaluate the trained model after training and export; results go to status.evaluation, kubetune-eval.json and the run record."""
    tracking: TrackingSpec = TrackingSpec()
    """Experiment tracking: TensorBoard (default), MLflow, Weights & Biases."""
    env: Annotated[list[EnvVar], Field(max_length=64)] | None = None
    """Extra environment for the training containers (e.g. NCCL_DEBUG); secrets via valueFrom.secretKeyRef only. Tracking settings go in spec.tracking."""
    hf_token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a Hugging Face token for gated/private models and datasets; exposed to the trainer as HF_TOKEN."""
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
    """Let kubetune choose distributed.zeroStage, distributed.offload and the micro-batch (keeping the global batch) so the job fits the GPU memory (resources.gpuMemory or the operator's GPU table); the choice and why are recorded in status and in the run record. Off: the spec is used as written."""
    suspend: bool = False
    """Suspend the training (pods are deleted, outputs and checkpoints stay); set back to false to resume from the newest checkpoint."""
    extra_args: Annotated[
        dict[Annotated[str, Field(max_length=128, pattern=r"^[a-z][a-z0-9_]*$")], ExtraArgValue], Field(max_length=64)
    ] | None = None
    """Additional LLaMA-Factory arguments (snake_case keys, scalar values), e.g. `neftune_noise_alpha: 5`. Checked against the pinned LLaMA-Factory's argument list; keys that the spec already controls are refused."""
    serve: ServeSpec | None = None
    """Serve the trained model through an OpenAI-compatible API after the job Succeeded (vLLM, KServe or KAITO); unset: no serving."""

    rules = (
        Rule(
            name="qlora-needs-quantization",
            cel="self.method != 'qlora' || has(self.quantization)",
            message="spec.method qlora needs spec.quantization.bits (4 or 8); or use method: lora for unquantized adapters",
            field_path=".quantization",
            check=lambda s: s.method != "qlora" or s.quantization is not None,
        ),
        Rule(
            name="quantization-only-with-qlora",
            cel="self.method == 'qlora' || !has(self.quantization)",
            message="spec.quantization only applies to method qlora (LLaMA-Factory quantizes the base model for adapter training only); set method: qlora or remove spec.quantization",
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
            cel="!has(self.quantization) || self.quantization.bits != 8 || (self.distributed.zeroStage != 3 && !self.distributed.fsdp)",
            message="spec.quantization.bits 8 cannot be sharded by ZeRO-3 or FSDP (LLaMA-Factory rejects it): use bits: 4, or zeroStage 2 or lower",
            field_path=".quantization.bits",
            check=lambda s: s.quantization is None
            or s.quantization.bits != 8
            or (s.distributed.zero_stage != 3 and not s.distributed.fsdp),
        ),
        Rule(
            name="cpu-needs-fp32",
            cel="self.resources.gpusPerNode > 0 || self.training.precision == 'fp32'",
            message="spec.training.precision bf16/fp16 needs GPUs: set spec.resources.gpusPerNode >= 1, or precision: fp32 for CPU training",
            field_path=".training.precision",
            check=lambda s: s.resources.gpus_per_node > 0 or s.training.precision == "fp32",
        ),
        Rule(
            name="deepspeed-needs-gpus",
            cel="self.resources.gpusPerNode > 0 || self.distributed.zeroStage == 0",
            message="spec.distributed.zeroStage > 0 needs GPUs (spec.resources.gpusPerNode >= 1); use zeroStage: 0 for CPU training",
            field_path=".distributed.zeroStage",
            check=lambda s: s.resources.gpus_per_node > 0 or s.distributed.zero_stage == 0,
        ),
        Rule(
            name="export-merges-adapters",
            cel="!self.export.enabled || self.method in ['lora', 'qlora']",
            message="spec.export.enabled merges a LoRA adapter; methods full and freeze already write a complete model to the outputs volume: set export.enabled: false",
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
            cel="!has(self.env) || !has(self.tracking) || ((!has(self.tracking.mlflow) || !self.env.exists(e, e.name.startsWith('MLFLOW_'))) && (!has(self.tracking.wandb) || !self.env.exists(e, e.name.startsWith('WANDB_'))))",
            message="spec.env: MLFLOW_*/WANDB_* variables are set from spec.tracking.mlflow/wandb; remove them from spec.env (secrets go in the tracking secretKeyRefs)",
            field_path=".env",
            check=lambda s: s.env is None
            or (
                (s.tracking.mlflow is None or not any(e.name.startswith("MLFLOW_") for e in s.env))
                and (s.tracking.wandb is None or not any(e.name.startswith("WANDB_") for e in s.env))
            ),
        ),
        Rule(
            name="pt-uses-text-column",
            cel="self.training.stage != 'pt' || self.datasets.all(d, d.format == 'alpaca')",
            message="spec.training.stage pt trains on raw text: give each dataset format: alpaca with columns.prompt naming the text column",
            field_path=".datasets",
            check=lambda s: s.training.stage != "pt" or all(d.format == "alpaca" for d in s.datasets),
        ),
        Rule(
            name="ranking-stage-needs-ranking-data",
            cel="!(self.training.stage in ['rm', 'dpo']) || self.datasets.all(d, d.ranking)",
            message="spec.training.stage rm/dpo trains on preference pairs: set ranking: true on every dataset (columns.chosen/rejected name the answers)",
            field_path=".datasets",
            check=lambda s: s.training.stage not in RANKING_STAGES or all(d.ranking for d in s.datasets),
        ),
        Rule(
            name="ranking-data-needs-ranking-stage",
            cel="self.training.stage in ['rm', 'dpo'] || self.datasets.all(d, !d.ranking)",
            message="spec.datasets[].ranking: preference pairs are only for stages rm and dpo (losses sigmoid/orpo/simpo/...); set stage: dpo or rm, or remove ranking",
            field_path=".datasets",
            check=lambda s: s.training.stage in RANKING_STAGES or not any(d.ranking for d in s.datasets),
        ),
        Rule(
            name="kto-needs-label-column",
            cel="self.training.stage != 'kto' || self.datasets.all(d, has(d.columns) && has(d.columns.ktoTag))",
            message="spec.training.stage kto needs the boolean label column of every dataset: set columns.ktoTag (e.g. label)",
            field_path=".datasets",
            check=lambda s: s.training.stage != "kto" or all(d.columns is not None and d.columns.kto_tag is not None for d in s.datasets),
        ),
        Rule(
            name="kto-label-needs-kto",
            cel="self.training.stage == 'kto' || self.datasets.all(d, !has(d.columns) || !has(d.columns.ktoTag))",
            message="spec.datasets[].columns.ktoTag is the KTO label and applies to stage kto only; set stage: kto or remove ktoTag",
            field_path=".datasets",
            check=lambda s: s.training.stage == "kto" or all(d.columns is None or d.columns.kto_tag is None for d in s.datasets),
        ),
        Rule(
            name="evaluation-not-for-ppo",
            cel="!has(self.evaluation) || self.training.stage != 'ppo'",
            message="spec.evaluation: LLaMA-Factory cannot evaluate in stage ppo; evaluate the PPO model in a later job (spec.model.fromJob) with stage sft",
            field_path=".evaluation",
            check=lambda s: s.evaluation is None or s.training.stage != "ppo",
        ),
        Rule(
            name="evaluation-generation-needs-sft",
            cel="!has(self.evaluation) || !self.evaluation.generation || self.training.stage == 'sft'",
            message="spec.evaluation.generation (BLEU/ROUGE through predict mode) needs stage sft (LLaMA-Factory refuses predict_with_generate otherwise)",
            field_path=".evaluation.generation",
            check=lambda s: s.evaluation is None or not s.evaluation.generation or s.training.stage == "sft",
        ),
        Rule(
            name="evaluation-split-not-twice",
            cel="!has(self.evaluation) || !has(self.evaluation.valSize) || !has(self.training.valSize)",
            message="spec.evaluation.valSize and spec.training.valSize both hold data out: keep one (evaluation.valSize also holds it out of training)",
            field_path=".evaluation.valSize",
            check=lambda s: s.evaluation is None or s.evaluation.val_size is None or s.training.val_size is None,
        ),
        Rule(
            name="evaluation-dataset-names-unique",
            cel="!has(self.evaluation) || !has(self.evaluation.datasets) || self.evaluation.datasets.all(e, !self.datasets.exists(d, d.name == e.name) && self.evaluation.datasets.exists_one(f, f.name == e.name))",
            message="spec.evaluation.datasets[].name must differ from every other dataset name (training and evaluation): rename it",
            field_path=".evaluation.datasets",
            check=lambda s: s.evaluation is None
            or s.evaluation.datasets is None
            or len({d.name for d in s.datasets} | {e.name for e in s.evaluation.datasets}) == len(s.datasets) + len(s.evaluation.datasets),
        ),
        Rule(
            name="evaluation-datasets-match-stage",
            cel="!has(self.evaluation) || !has(self.evaluation.datasets) || self.evaluation.datasets.all(e, e.ranking == (self.training.stage in ['rm', 'dpo']))",
            message="spec.evaluation.datasets[].ranking must match the stage: preference pairs (ranking: true) for rm/dpo, none otherwise",
            field_path=".evaluation.datasets",
            check=lambda s: s.evaluation is None
            or s.evaluation.datasets is None
            or all(e.ranking == (s.training.stage in RANKING_STAGES) for e in s.evaluation.datasets),
        ),
        Rule(
            name="from-job-not-self",
            cel="!has(self.model.fromJob) || !has(self.training.ppo) || !has(self.training.ppo.rewardModel.fromJob) || self.training.ppo.rewardModel.fromJob != self.model.fromJob",
            message="spec.training.ppo.rewardModel.fromJob must name a reward-modelling job, not the policy's own spec.model.fromJob",
            field_path=".training.ppo.rewardModel.fromJob",
            check=lambda s: s.model.from_job is None
            or s.training.ppo is None
            or s.training.ppo.reward_model.from_job != s.model.from_job,
        ),
    ) + SERVE_RULES + tuple(
        Rule(
            name=f"immutable-{field}",
            cel=_immutable_rule(field),
            message=f"spec.{field} cannot change after the job is created; create a new FineTuneJob (a new name) to train with other settings",
            field_path=f".{field}",
            reason="FieldValueForbidden",
            transition=True,
            check=lambda new, old, f=field: _field_value(new, f) == _field_value(old, f),
            # extraArgs values are preserve-unknown in the CRD (mixed scalars), which CEL cannot read.
            in_crd=field != "extraArgs",
        )
        for field in IMMUTABLE_FIELDS
    )
