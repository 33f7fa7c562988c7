"""FineTuneJob -> LLaMA-Factory training arguments (the content of train.yaml).

Why one table of spec-controlled keys: ``spec.extraArgs`` may add any
argument of the pinned LLaMA-Factory, but never one the spec already sets -
two sources for one value is how configs silently diverge.  The same table
tells the user which spec field to use instead.
"""

from __future__ import annotations

from typing import Any, Final

from kubetune.api import FineTuneJob, FreezeSpec, LoraSpec
from kubetune.api.contract import DATA_SUBDIR, DEEPSPEED_FILE, TENSORBOARD_SUBDIR, Layout
from kubetune.api.objectstore import model_cache_subdir
from kubetune.api.spec import Launcher

from .chain import ModelSource, reward_args

SPEC_CONTROLLED: Final[dict[str, str]] = {
    "stage": "spec.training.stage",
    "do_train": "spec (kubetune always trains)",
    "model_name_or_path": "spec.model.name, spec.model.path, spec.model.uri or spec.model.fromJob",
    "model_revision": "spec.model.revision",
    "trust_remote_code": "spec.model.trustRemoteCode",
    "template": "spec.model.template",
    "dataset": "spec.datasets[].name",
    "dataset_dir": "spec.datasets (kubetune writes dataset_info.json itself)",
    "max_samples": "spec.training.maxSamples",
    "finetuning_type": "spec.method",
    "lora_rank": "spec.lora.rank",
    "lora_alpha": "spec.lora.alpha",
    "lora_dropout": "spec.lora.dropout",
    "lora_target": "spec.lora.targetModules",
    "freeze_trainable_layers": "spec.freeze.trainableLayers",
    "freeze_trainable_modules": "spec.freeze.trainableModules",
    "quantization_bit": "spec.quantization.bits",
    "quantization_type": "spec.quantization.type",
    "double_quantization": "spec.quantization.doubleQuant",
    "quantization_method": "spec.quantization (kubetune quantizes with bitsandbytes)",
    "output_dir": "spec.storage.outputs (outputs go to <outputs>/<namespace>/<name>)",
    "overwrite_output_dir": "spec.storage.outputs (a restarted job resumes from its checkpoints; "
    "use a new job name for a fresh run)",
    "resume_from_checkpoint": "spec.runPolicy (the trainer resumes from the newest checkpoint itself)",
    "per_device_train_batch_size": "spec.training.perDeviceBatchSize",
    "gradient_accumulation_steps": "spec.training.gradientAccumulationSteps",
    "lr_scheduler_type": "spec.training.scheduler",
    "warmup_ratio": "spec.training.warmupRatio",
    "warmup_steps": "spec.training.warmupSteps",
    "logging_steps": "spec.training.loggingSteps",
    "save_steps": "spec.training.saveSteps",
    "save_total_limit": "spec.training.saveTotalLimit",
    "learning_rate": "spec.training.learningRate",
    "num_train_epochs": "spec.training.epochs",
    "max_steps": "spec.training.maxSteps",
    "cutoff_len": "spec.training.cutoffLength",
    "bf16": "spec.training.precision",
    "fp16": "spec.training.precision",
    "pure_bf16": "spec.training.precision",
    "disable_gradient_checkpointing": "spec.training.gradientCheckpointing",
    "seed": "spec.training.seed",
    "weight_decay": "spec.training.weightDecay",
    "max_grad_norm": "spec.training.maxGradNorm",
    "val_size": "spec.training.valSize",
    "eval_strategy": "spec.training.evalSteps",
    "eval_steps": "spec.training.evalSteps",
    "flash_attn": "spec.training.attention",
    "enable_liger_kernel": "spec.training.ligerKernel",
    "packing": "spec.training.packing",
    "neat_packing": "spec.training.packing",
    "preprocessing_num_workers": "spec.training.preprocessingWorkers",
    "deepspeed": "spec.distributed.zeroStage",
    "fsdp": "spec.distributed.fsdp",
    "fsdp_config": "spec.distributed.fsdp",
    "local_rank": "spec.resources (ranks come from the launcher)",
    "hub_token": "spec.hfTokenSecretRef (never put a token in the spec)",
    "export_dir": "spec.export",
    "export_size": "spec.export.shardSizeGB",
    "adapter_name_or_path": "spec.model (kubetune trains a fresh adapter per job; "
    "spec.model.fromJob continues another job's)",
    "pref_beta": "spec.training.preference.beta",
    "pref_loss": "spec.training.preference.loss",
    "pref_ftx": "spec.training.preference.ftx",
    "simpo_gamma": "spec.training.preference.simpoGamma",
    "dpo_label_smoothing": "spec.training.preference.labelSmoothing",
    "kto_chosen_weight": "spec.training.kto.desirableWeight",
    "kto_rejected_weight": "spec.training.kto.undesirableWeight",
    "reward_model": "spec.training.ppo.rewardModel",
    "reward_model_type": "spec.training.ppo.rewardModel",
    "reward_model_adapters": "spec.training.ppo.rewardModel",
    "ppo_buffer_size": "spec.training.ppo.bufferSize",
    "ppo_epochs": "spec.training.ppo.epochs",
    "ppo_score_norm": "spec.training.ppo.scoreNorm",
    "ppo_target": "spec.training.ppo.targetKl",
    "ppo_whiten_rewards": "spec.training.ppo.whitenRewards",
    "max_new_tokens": "spec.training.ppo.maxNewTokens",
    "ref_model": "spec.model (the reference is the job's starting model)",
    "ref_model_adapters": "spec.model.fromJob",
    "ref_model_quantization_bit": "spec.quantization.bits (the reference model is quantized as the policy)",
    "report_to": "spec.tracking (tensorboard, mlflow, wandb)",
    "tokenized_path": "spec.datasets (the trainer caches the tokenised data itself under <outputs>/data/tokenized-*)",
    "logging_dir": "spec.tracking.tensorboard (event files go to <outputs>/runs)",
}
"""LLaMA-Factory key -> the FineTuneJob field that controls it."""

OVERRIDABLE: Final = frozenset({"overwrite_cache", "plot_loss", "run_name", "ddp_timeout", "dataloader_num_workers"})

DDP_TIMEOUT_SECONDS: Final = 10800
"""torch.distributed's collective timeout (transformers' ``ddp_timeout``, default 1800 s): the
first run tokenises inside a barrier (LLaMA-Factory's main_process_first), which takes longer
than 30 min for millions of records; 3 h still turns a real hang into a retryable failure."""


def cpu_cores(quantity: str | None) -> int | None:
    """Whole cores of a CPU quantity (``16``, ``2.5``, ``500m``), at least 1; None when unset."""
    if quantity is None:
        return None
    try:
        cores = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    except ValueError:
        return None
    return max(1, int(cores))


"""kubetune's own choices that spec.extraArgs may override (no spec field controls them)."""


def model_location(job: FineTuneJob, layout: Layout, source: ModelSource | None = None) -> str:
    """A Hub id, the model's folder on the models volume, or (spec.model.fromJob) the resolved source's model."""
    model = job.spec.model
    if model.from_job is not None:
        if source is None:
            raise ValueError(
                f"spec.model.fromJob {model.from_job}: the source job is not resolved; render it together with "
                f"FineTuneJob {model.from_job} (one file), or let the operator resolve it"
            )
        return source.model
    if model.uri is not None:
        # The trainer stages the prefix into this folder before training (kubetune.trainer.objectstore).
        return f"{layout.models_dir}/{model_cache_subdir(model.uri)}"
    return model.name if model.name is not None else f"{layout.models_dir}/{model.path}"


def model_args(job: FineTuneJob, layout: Layout, source: ModelSource | None = None) -> dict[str, Any]:
    """model_name_or_path (+ revision, trust_remote_code, the source's adapter) in a stable order."""
    model = job.spec.model
    args: dict[str, Any] = {"model_name_or_path": model_location(job, layout, source)}
    revision = source.revision if model.from_job is not None and source is not None else model.revision
    if revision is not None:
        args["model_revision"] = revision
    if model.trust_remote_code or (source is not None and model.from_job is not None and source.trust_remote_code):
        args["trust_remote_code"] = True
    if model.from_job is not None and source is not None and source.adapter is not None:
        args["adapter_name_or_path"] = source.adapter
    return args


DEFAULT_SAVE_FRACTION: Final = 0.1
"""spec.training.saveSteps unset: checkpoint every 10% of the run. transformers reads a
save_steps below 1 as a fraction of the total steps, which only the trainer knows."""


def save_interval(job: FineTuneJob) -> int | float:
    steps = job.spec.training.save_steps
    return steps if steps is not None else DEFAULT_SAVE_FRACTION


def uses_deepspeed_config(job: FineTuneJob, launcher: Launcher) -> bool:
    """Whether LLaMA-Factory gets ``deepspeed: ds_config.json``.

    The DeepSpeed launcher always does; Accelerate does when ZeRO shards
    (its own config then points at the same file).
    """
    return launcher == "deepspeed" or (launcher == "accelerate" and job.spec.distributed.zero_stage > 0)


def train_args(
    job: FineTuneJob,
    layout: Layout,
    output_dir: str,
    launcher: Launcher,
    source: ModelSource | None = None,
    reward: ModelSource | None = None,
) -> dict[str, Any]:
    """The LLaMA-Factory arguments, in a stable, readable order; extraArgs last.

    Built in named groups, in this order (a later group may set a key an earlier one set: the key
    keeps its first place, the later value wins): model, data, method, stage, reference model,
    schedule, trainer runtime, evaluation, outputs.

    LLaMA-Factory itself splits these arguments into typed groups (``_TRAIN_ARGS = [ModelArguments,
    DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments]``,
    llamafactory/hparams/parser.py:50-56 @v0.9.5): ``ModelArguments`` (model_args.py:542, its
    quantization part :276), ``DataArguments`` (data_args.py:23), ``FinetuningArguments``
    (finetuning_args.py:444: ``stage``/``finetuning_type`` :460-464, LoRA :56, ``ref_model`` in
    ``RLHFArguments`` :168-223) and ``TrainingArguments`` (training_args.py:143, on transformers'
    ``Seq2SeqTrainingArguments``).  Ours are by concern of the spec, so they mostly but not wholly
    match: model is ``ModelArguments``, data is ``DataArguments``, method, stage and reference are
    ``FinetuningArguments`` (but QLoRA's ``quantization_bit`` is ``ModelArguments``, model_args.py:283,
    and PPO's ``max_new_tokens`` ``GeneratingArguments``, generating_args.py:53), schedule is
    ``TrainingArguments``; runtime mixes them as the spec's
    training section does (``flash_attn``, ``enable_liger_kernel``, ``disable_gradient_checkpointing``:
    model_args.py:117-145; ``val_size``, ``packing``: data_args.py:100-112; the rest
    ``TrainingArguments``), and outputs sets ``plot_loss`` (finetuning_args.py:551) beside the
    Trainer's ``deepspeed``/``report_to``.

    ``source`` / ``reward``: the resolved spec.model.fromJob and
    spec.training.ppo.rewardModel.fromJob (:mod:`kubetune.render.chain`)."""
    cores = cpu_cores(job.spec.resources.cpu)
    args: dict[str, Any] = {"stage": job.spec.training.stage, "do_train": True}
    args.update(model_args(job, layout, source))
    args.update(_data_args(job, output_dir, cores))
    args.update(_method_args(job))
    args.update(stage_args(job, layout, reward))
    args.update(reference_args(job, layout, source))
    args.update(_schedule_args(job, output_dir))
    args.update(_runtime_args(job, cores))
    args.update(_evaluation_args(job))
    args.update(_output_args(job, output_dir, layout, launcher))
    for key, value in sorted((job.spec.extra_args or {}).items()):
        args[key] = value
    return args


def _data_args(job: FineTuneJob, output_dir: str, cores: int | None) -> dict[str, Any]:
    """Template, datasets (dataset_info.json beside them) and tokenisation."""
    spec, t = job.spec, job.spec.training
    args: dict[str, Any] = {"template": spec.model.template}
    args["dataset"] = ",".join(d.name for d in spec.datasets)
    args["dataset_dir"] = f"{output_dir}/{DATA_SUBDIR}"
    if t.max_samples is not None:
        args["max_samples"] = t.max_samples
    args["cutoff_len"] = t.cutoff_length
    args["overwrite_cache"] = True
    if t.preprocessing_workers is not None:
        args["preprocessing_num_workers"] = t.preprocessing_workers
    elif cores is not None and cores > 1:
        # Tokenisation runs once per job (then cached): use the pod's CPUs, not one process.
        args["preprocessing_num_workers"] = min(cores, 64)
    return args


def _schedule_args(job: FineTuneJob, output_dir: str) -> dict[str, Any]:
    """Where the Trainer writes, batch sizes, learning rate and its schedule, logging."""
    t = job.spec.training
    args: dict[str, Any] = {"output_dir": output_dir}
    args["per_device_train_batch_size"] = t.per_device_batch_size
    args["gradient_accumulation_steps"] = t.gradient_accumulation_steps
    args["learning_rate"] = t.learning_rate
    if t.max_steps is not None:
        args["max_steps"] = t.max_steps
    else:
        args["num_train_epochs"] = t.epochs
    args["lr_scheduler_type"] = t.scheduler
    if t.warmup_steps is not None:
        args["warmup_steps"] = t.warmup_steps
    elif t.warmup_ratio > 0:  # 0 is transformers' default; the key itself is deprecated there
        args["warmup_ratio"] = t.warmup_ratio
    args["weight_decay"] = t.weight_decay
    args["max_grad_norm"] = t.max_grad_norm
    args["seed"] = t.seed
    args["logging_steps"] = t.logging_steps
    args["ddp_timeout"] = DDP_TIMEOUT_SECONDS
    return args


def _runtime_args(job: FineTuneJob, cores: int | None) -> dict[str, Any]:
    """How the Trainer runs: data loading, checkpoints, precision, attention and kernels, the
    held-out split of spec.evaluation, the optimizer, packing."""
    spec, t = job.spec, job.spec.training
    args: dict[str, Any] = {}
    if cores is not None:
        # Per training process; one core each stays with the training loop itself.
        procs = max(spec.resources.gpus_per_node, 1)
        workers = min(4, cores // procs - 1)
        if workers > 0:
            args["dataloader_num_workers"] = workers
    args["save_steps"] = save_interval(job)
    args["save_total_limit"] = t.save_total_limit
    if t.precision == "bf16":
        args["bf16"] = True
    elif t.precision == "fp16":
        args["fp16"] = True
    if not t.gradient_checkpointing:
        args["disable_gradient_checkpointing"] = True
    args["flash_attn"] = t.attention
    ev = spec.evaluation
    if ev is not None and ev.val_size is not None:
        # Held out of training; the evaluate stage splits the same way (same seed) and scores it.
        args["val_size"] = ev.val_size
    if t.liger_kernel:
        args["enable_liger_kernel"] = True
    if t.optimizer is not None:
        args["optim"] = t.optimizer
    if t.packing != "none":
        args["packing"] = True
        if t.packing == "neat":
            args["neat_packing"] = True
    return args


def _evaluation_args(job: FineTuneJob) -> dict[str, Any]:
    """spec.training.valSize: evaluation during training, at the checkpoint interval unless evalSteps says otherwise."""
    t = job.spec.training
    if t.val_size is None:
        return {}
    return {
        "val_size": t.val_size,
        "eval_strategy": "steps",
        "eval_steps": t.eval_steps if t.eval_steps is not None else save_interval(job),
        "per_device_eval_batch_size": t.per_device_batch_size,
    }


def _output_args(job: FineTuneJob, output_dir: str, layout: Layout, launcher: Launcher) -> dict[str, Any]:
    """The DeepSpeed config, the loss plot and the trackers (spec.tracking)."""
    spec = job.spec
    args: dict[str, Any] = {}
    if uses_deepspeed_config(job, launcher):
        args["deepspeed"] = f"{layout.config_dir}/{DEEPSPEED_FILE}"
    args["plot_loss"] = True
    report_to = spec.tracking.report_to()
    args["report_to"] = report_to or "none"
    if spec.tracking.tensorboard.enabled:
        args["logging_dir"] = f"{output_dir}/{TENSORBOARD_SUBDIR}"
    if report_to:
        args["run_name"] = job.name
    return args


def uses_reference_model(job: FineTuneJob) -> bool:
    """DPO (except the reference-free orpo/simpo losses) and KTO compare against a reference model."""
    t = job.spec.training
    loss = t.preference.loss if t.preference is not None else "sigmoid"
    return t.stage == "kto" or (t.stage == "dpo" and loss not in ("orpo", "simpo"))


def reference_args(
    job: FineTuneJob, layout: Layout, source: ModelSource | None, *, evaluating: bool = False
) -> dict[str, Any]:
    """``ref_model`` (+ ``ref_model_adapters``): the model the preference loss compares with.

    Training: LLaMA-Factory's default is right (the starting model: a LoRA policy with its
    adapter disabled, or a frozen copy), except on top of a fromJob adapter, where
    "adapter disabled" would be the bare base: the reference is then base + that adapter.
    Evaluating (``do_train: false``) LLaMA-Factory would compare the model with itself
    (loss ln 2 always), so the starting model is named explicitly."""
    ppo = job.spec.training.stage == "ppo"
    if not (uses_reference_model(job) or ppo):
        return {}
    if job.spec.model.from_job is not None and source is not None and source.adapter is not None:
        # PPO too: its KL reference is create_ref_model(...) (train/ppo/workflow.py:52 @v0.9.5), which
        # for a LoRA policy without ref_model is None, i.e. TRL's adapter-disabled model: the bare base.
        out: dict[str, Any] = {"ref_model": source.model, "ref_model_adapters": source.adapter}
        if not (evaluating and job.spec.export.enabled):  # evaluated exported: a full-precision merged model
            out.update(_reference_quantization(job))
        return out
    if evaluating and not ppo:
        out = {"ref_model": model_location(job, layout, source)}
        if not job.spec.export.enabled:  # the evaluated model is then the 4/8-bit base + adapter too
            out.update(_reference_quantization(job))
        return out
    return {}


def _reference_quantization(job: FineTuneJob) -> dict[str, Any]:
    """A named ``ref_model`` is loaded with ``quantization_bit=ref_model_quantization_bit``
    (train/trainer_utils.py:123-129 @v0.9.5, ModelArguments.copyfrom keeps the policy's
    quantization_type and double_quantization): unset, a QLoRA job's reference would load in
    bf16 (~2 bytes per parameter more than the 4-bit policy). Quantize it as the policy is."""
    q = job.spec.quantization
    if job.spec.method == "qlora" and q is not None:
        return {"ref_model_quantization_bit": q.bits}
    return {}


def stage_args(job: FineTuneJob, layout: Layout, reward: ModelSource | None = None) -> dict[str, Any]:
    """The post-training stage's own arguments (LLaMA-Factory 0.9.5 ``RLHFArguments``)."""
    t = job.spec.training
    out: dict[str, Any] = {}
    if t.preference is not None:
        p = t.preference
        out["pref_beta"] = p.beta
        if t.stage == "dpo":
            out["pref_loss"] = p.loss
        out["pref_ftx"] = p.ftx
        if p.simpo_gamma is not None:
            out["simpo_gamma"] = p.simpo_gamma
        if p.label_smoothing is not None:
            out["dpo_label_smoothing"] = p.label_smoothing
    if t.kto is not None:
        out["kto_chosen_weight"] = t.kto.desirable_weight
        out["kto_rejected_weight"] = t.kto.undesirable_weight
    if t.ppo is not None:
        ppo = t.ppo
        rm = ppo.reward_model
        if rm.from_job is not None:
            if reward is None:
                raise ValueError(
                    f"spec.training.ppo.rewardModel.fromJob {rm.from_job}: the reward job is not resolved; "
                    f"render it together with FineTuneJob {rm.from_job} (one file), or let the operator resolve it"
                )
            out.update(reward_args(reward))
        else:
            out["reward_model"] = rm.name if rm.name is not None else f"{layout.models_dir}/{rm.path}"
            out["reward_model_type"] = "full"
        out["ppo_buffer_size"] = ppo.buffer_size
        out["ppo_epochs"] = ppo.epochs
        out["ppo_score_norm"] = ppo.score_norm
        out["ppo_target"] = ppo.target_kl
        out["ppo_whiten_rewards"] = ppo.whiten_rewards
        if ppo.max_new_tokens is not None:
            out["max_new_tokens"] = ppo.max_new_tokens
    return out


def _method_args(job: FineTuneJob) -> dict[str, Any]:
    spec = job.spec
    if spec.method == "full":
        return {"finetuning_type": "full"}
    if spec.method == "freeze":
        freeze = spec.freeze or FreezeSpec()
        return {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": freeze.trainable_layers,
            "freeze_trainable_modules": ",".join(freeze.trainable_modules),
        }
    lora = spec.lora or LoraSpec()
    out: dict[str, Any] = {"finetuning_type": "lora", "lora_rank": lora.rank}
    if lora.alpha is not None:
        out["lora_alpha"] = lora.alpha
    out["lora_dropout"] = lora.dropout
    out["lora_target"] = ",".join(lora.target_modules)
    if spec.method == "qlora" and spec.quantization is not None:
        q = spec.quantization
        out["quantization_bit"] = q.bits
        if q.bits == 4:
            out["quantization_type"] = q.type
            out["double_quantization"] = q.double_quant
    return out
