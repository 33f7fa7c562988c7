"""The files of the job's ConfigMap besides train.yaml.

Each builder returns plain data; :func:`dump_json` / :func:`dump_yaml` make the
text stable (sorted JSON, insertion-ordered YAML) so the same FineTuneJob
always renders byte-identical ConfigMaps, and the operator sees no diff.
"""

from __future__ import annotations

import json
from typing import Any

from kubetune.api import DatasetSpec, FineTuneJob
from kubetune.api.contract import (
    DATA_SUBDIR,
    DEEPSPEED_FILE,
    EVAL_SUBDIR,
    LF_ALPACA_COLUMNS,
    LF_SHAREGPT_COLUMNS,
    LF_SHAREGPT_TAGS,
    MERGED_SUBDIR,
    Layout,
)
from kubetune.api.yamldump import dump

from .chain import ModelSource
from .lfargs import model_args, reference_args, stage_args, uses_reference_model


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def dump_yaml(data: Any) -> str:
    # allow_unicode=False: PyYAML's emitter writes some characters raw (NEL in
    # single quotes) that its own reader then folds; escaped ASCII always round-trips.
    # Type-ambiguous strings are quoted for OmegaConf (LLaMA-Factory's reader) and go-yaml.
    return dump(data)


# --- DeepSpeed --------------------------------------------------------------------

_BUCKET = 500_000_000  # the tutorial's 5e8


def deepspeed_config(job: FineTuneJob) -> dict[str, Any]:
    """ZeRO 0-3 (+ offload). "auto" values are filled in by the HF Trainer from train.yaml,
    so batch size, accumulation and precision have one source: the spec."""
    d = job.spec.distributed
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.zero_stage in (1, 2):
        # The tutorial's configs/deepspeed_stage2.json.
        zero.update(
            allgather_partitions=True,
            allgather_bucket_size=_BUCKET,
            reduce_scatter=True,
            reduce_bucket_size=_BUCKET,
            overlap_comm=False,
            contiguous_gradients=True,
        )
    elif d.zero_stage == 3:
        zero.update(
            overlap_comm=False,
            contiguous_gradients=True,
            sub_group_size=1_000_000_000,
            reduce_bucket_size="auto",
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_max_live_parameters=1_000_000_000,
            stage3_max_reuse_distance=1_000_000_000,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if d.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if d.offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


# --- Accelerate -------------------------------------------------------------------


def accelerate_config(job: FineTuneJob, layout: Layout) -> dict[str, Any]:
    """``accelerate launch --config_file`` content. machine_rank is 0 here: the trainer
    passes each node's rank on the command line (``--machine_rank``) at run time."""
    spec = job.spec
    gpus = spec.resources.gpus_per_node
    nodes = spec.resources.nodes
    d = spec.distributed
    cfg: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE"}
    if gpus == 0:
        cfg["distributed_type"] = "MULTI_CPU" if nodes > 1 else "NO"
    elif d.zero_stage > 0:
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "deepspeed_config_file": f"{layout.config_dir}/{DEEPSPEED_FILE}",
            "zero3_init_flag": d.zero_stage == 3,
        }
        if nodes > 1:
            # Every pod runs its own `accelerate launch --machine_rank N` (torchrun underneath).
            # Without this, accelerate's multi-node DeepSpeed default is pdsh over a hostfile,
            # and the pods have neither (accelerate/commands/launch.py, deepspeed_launcher).
            cfg["deepspeed_config"]["deepspeed_multinode_launcher"] = "standard"
    elif d.fsdp:
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_offload_params": d.offload == "all",
            "fsdp_sync_module_states": True,
            "fsdp_use_orig_params": True,
            "fsdp_cpu_ram_efficient_loading": True,
        }
    else:
        cfg["distributed_type"] = "MULTI_GPU"
    if "deepspeed_config" not in cfg:
        # With DeepSpeed, precision comes from ds_config.json ("auto" from train.yaml).
        cfg["mixed_precision"] = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[spec.training.precision]
    cfg.update(
        machine_rank=0,
        num_machines=nodes,
        num_processes=nodes * max(gpus, 1),
        main_training_function="main",
        rdzv_backend="static",
        same_network=True,
        use_cpu=gpus == 0,
        downcast_bf16="no",
    )
    return cfg


# --- datasets ---------------------------------------------------------------------

_COLUMN_KEYS = (
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "chosen",
    "rejected",
    "kto_tag",
)
_TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")

# LLaMA-Factory's own defaults (src/llamafactory/data/parser.py:27-64 @v0.9.5, class DatasetAttr).
# DatasetAttr.join (parser.py:72-89 @v0.9.5) sets *every* column from "columns" and every tag from
# "tags" with default None: once either key exists, an unnamed column or tag is None, not its
# default (SFT then drops every Alpaca example, DPO loses `input`, KTO raises KeyError: None).
# So kubetune always writes the complete mapping, and the trainer's record check reads it as is.
ALPACA_COLUMNS = LF_ALPACA_COLUMNS
SHAREGPT_COLUMNS = LF_SHAREGPT_COLUMNS
SHAREGPT_TAGS = LF_SHAREGPT_TAGS
RANKING_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}
"""LLaMA-Factory has no default names for the pair; ours are those of its own demo data."""


def dataset_entry(dataset: DatasetSpec, layout: Layout) -> dict[str, Any]:
    """One dataset_info.json entry - the contract with the trainer (kubetune.trainer.data):
    ``path`` datasets have an absolute file_name and are read in place from the datasets
    volume (no copy of big data); ``hub``/``url`` datasets have the relative file_name
    ``<name>.jsonl``, which the trainer materialises in dataset_dir once per job from the
    source named in finetunejob.json.  Only LLaMA-Factory's own keys appear here: its
    loader may reject unknown ones.  ``columns`` is always complete (see ALPACA_COLUMNS)."""
    entry: dict[str, Any] = {
        "file_name": f"{layout.datasets_dir}/{dataset.path}" if dataset.path is not None else f"{dataset.name}.jsonl",
        "formatting": dataset.format,
    }
    if dataset.ranking:
        entry["ranking"] = True
    cols: dict[str, str] = dict(SHAREGPT_COLUMNS if dataset.format == "sharegpt" else ALPACA_COLUMNS)
    if dataset.ranking:
        cols.update(RANKING_COLUMNS)
    if dataset.columns is not None:
        cols.update({k: getattr(dataset.columns, k) for k in _COLUMN_KEYS if getattr(dataset.columns, k) is not None})
    entry["columns"] = dict(sorted(cols.items()))
    if dataset.format == "sharegpt":
        tags = dict(SHAREGPT_TAGS)
        if dataset.tags is not None:
            tags.update({k: getattr(dataset.tags, k) for k in _TAG_KEYS if getattr(dataset.tags, k) is not None})
        entry["tags"] = tags
    if dataset.max_samples is not None:
        entry["num_samples"] = dataset.max_samples
    return entry


def dataset_info(job: FineTuneJob, layout: Layout) -> dict[str, Any]:
    """Training datasets, then spec.evaluation.datasets (names are unique across both)."""
    held_out = job.spec.evaluation.datasets if job.spec.evaluation and job.spec.evaluation.datasets else []
    return {d.name: dataset_entry(d, layout) for d in [*job.spec.datasets, *held_out]}


# --- export and the spec itself -----------------------------------------------------


def export_args(job: FineTuneJob, layout: Layout, output_dir: str, source: ModelSource | None = None) -> dict[str, Any]:
    """The tutorial's merge step: base model + this job's adapter -> <output>/merged.
    No quantization: a merged model must be saved in full precision.  On top of a
    fromJob source with an adapter, LLaMA-Factory continued that adapter, so the
    job's own adapter is the only one to merge."""
    spec = job.spec
    args = {k: v for k, v in model_args(job, layout, source).items() if k != "adapter_name_or_path"}
    args.update(
        adapter_name_or_path=output_dir,
        template=spec.model.template,
        finetuning_type="lora",
        export_dir=f"{output_dir}/{MERGED_SUBDIR}",
        export_size=spec.export.shard_size_gb,
        export_legacy_format=False,
    )
    if spec.training.stage == "rm":
        # A reward model's value head lives in value_head.safetensors beside the adapter; export copies
        # it into export_dir only for stage rm (src/llamafactory/train/tuner.py:219-235 @v0.9.5),
        # without it the merged model would score with a freshly initialised head.
        args["stage"] = "rm"
    return args


AUTO_TUNE_ANNOTATION = "kubetune.io/auto-tune"


def spec_document(
    job: FineTuneJob, namespace: str, backend: str, auto_tune: dict[str, Any] | None = None
) -> dict[str, Any]:
    """finetunejob.json: what the trainer reads for everything train.yaml cannot say
    (dataset sources, export, resources).  ``distributed.backend`` is the one actually
    rendered (``kubetune render --backend`` may override the spec), so the trainer and
    the pods it runs in agree on the launcher."""
    spec = job.spec.to_api()
    spec["distributed"]["backend"] = backend
    metadata: dict[str, Any] = {"name": job.name, "namespace": namespace}
    if auto_tune is not None:  # what spec.autoTune chose and why (kubetune.plan.autotune)
        metadata["annotations"] = {AUTO_TUNE_ANNOTATION: json.dumps(auto_tune, sort_keys=True)}
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": metadata,
        "spec": spec,
    }


# --- evaluation ---------------------------------------------------------------------


def _trained_model_args(
    job: FineTuneJob, layout: Layout, output_dir: str, source: ModelSource | None
) -> dict[str, Any]:
    """How LLaMA-Factory loads what this job produced."""
    spec = job.spec
    if spec.export.enabled:
        return {"model_name_or_path": f"{output_dir}/{MERGED_SUBDIR}", "finetuning_type": "full"}
    if spec.method in ("full", "freeze"):
        return {"model_name_or_path": output_dir, "finetuning_type": "full"}
    args = {k: v for k, v in model_args(job, layout, source).items() if k != "adapter_name_or_path"}
    args.update(adapter_name_or_path=output_dir, finetuning_type="lora")
    args.update(quantization_args(job))
    return args


def quantization_args(job: FineTuneJob) -> dict[str, Any]:
    """QLoRA: load a model as training did (bits, and for 4 bit the type nf4/fp4 and double
    quantization - LLaMA-Factory's defaults nf4/true otherwise; model/model_utils/quantization.py
    configure_quantization @v0.9.5 reads all three), so evaluation scores what was trained."""
    q = job.spec.quantization
    if job.spec.method != "qlora" or q is None:
        return {}
    out: dict[str, Any] = {"quantization_bit": q.bits}
    if q.bits == 4:
        out["quantization_type"] = q.type
        out["double_quantization"] = q.double_quant
    return out


def evaluation_config(
    job: FineTuneJob, layout: Layout, output_dir: str, source: ModelSource | None = None
) -> dict[str, Any] | None:
    """evaluate.json: the LLaMA-Factory runs of the trainer's evaluate stage (None without spec.evaluation).

    Held-out split (valSize): the same datasets, val_size, seed and max_samples as
    train.yaml, so LLaMA-Factory's split (``train_test_split(seed=...)``) gives the
    very records training never saw.  Named datasets: ``eval_dataset``.
    ``mode: eval`` scores the loss (perplexity = exp(loss) for pt/sft);
    ``mode: predict`` generates greedily and scores BLEU-4/ROUGE (stage sft).
    DPO/KTO are scored against the job's starting model as reference (``ref_model``)."""
    ev = job.spec.evaluation
    if ev is None:
        return None
    t = job.spec.training
    common: dict[str, Any] = {"stage": t.stage, "do_train": False, "template": job.spec.model.template}
    common["dataset_dir"] = f"{output_dir}/{DATA_SUBDIR}"
    if ev.val_size is not None:
        common["dataset"] = ",".join(d.name for d in job.spec.datasets)
        common["val_size"] = ev.val_size
        if t.max_samples is not None:
            common["max_samples"] = t.max_samples
    else:
        assert ev.datasets is not None
        common["eval_dataset"] = ",".join(d.name for d in ev.datasets)
        if ev.max_samples is not None:
            common["max_samples"] = ev.max_samples
    common.update(
        cutoff_len=t.cutoff_length,
        overwrite_cache=True,
        seed=t.seed,
        per_device_eval_batch_size=t.per_device_batch_size,
        flash_attn=t.attention,
        report_to="none",
    )
    if t.precision == "bf16":
        common["bf16"] = True
    elif t.precision == "fp16":
        common["fp16"] = True
    common.update(stage_args(job, layout, None) if t.stage != "ppo" else {})
    common.update(reference_args(job, layout, source, evaluating=True))
    models: list[tuple[str, dict[str, Any]]] = [("trained", _trained_model_args(job, layout, output_dir, source))]
    # Against its own reference the starting model's DPO/KTO loss is ln 2 / 0.5 by definition: no base run.
    # Stage rm: the base model has no value head; LLaMA-Factory would score with a random one
    # (model/model_utils/valuehead.py load_valuehead_params finds none) - no comparison either.
    if ev.base_model and not uses_reference_model(job) and t.stage != "rm":
        base = model_args(job, layout, source)
        base["finetuning_type"] = "lora" if "adapter_name_or_path" in base else "full"
        # QLoRA: the base in the same 4/8-bit form as the trained model, or the comparison
        # measures quantization error as well as training (exported: both full precision).
        if not job.spec.export.enabled:
            base.update(quantization_args(job))
        models.append(("base", base))
    runs: list[dict[str, Any]] = []
    for label, margs in models:
        runs.append(
            {
                "model": label,
                "mode": "eval",
                "args": {**margs, **common, "do_eval": True, "output_dir": f"{output_dir}/{EVAL_SUBDIR}/{label}"},
            }
        )
        if ev.generation:
            runs.append(
                {
                    "model": label,
                    "mode": "predict",
                    "args": {
                        **margs,
                        **common,
                        "do_predict": True,
                        "predict_with_generate": True,
                        "do_sample": False,
                        "max_new_tokens": ev.max_new_tokens,
                        "output_dir": f"{output_dir}/{EVAL_SUBDIR}/{label}-predict",
                    },
                }
            )
    return {"runs": runs, "perplexity": t.stage in ("pt", "sft")}
