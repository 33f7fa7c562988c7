"""The files of the job's ConfigMap besides train.yaml.

Each builder returns plain data; :func:`dump_json` / :func:`dump_yaml` make the
text stable (sorted JSON, insertion-ordered YAML) so the same FineTuneJob
always renders byte-identical ConfigMaps, and the operator sees no diff.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kubetune.api import DatasetSpec, FineTuneJob
from kubetune.api.contract import DEEPSPEED_FILE, MERGED_SUBDIR, Layout

from .lfargs import model_location


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_Dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> str:
    # allow_unicode=False: PyYAML's emitter writes some characters raw (NEL in
    # single quotes) that its own reader then folds; escaped ASCII always round-trips.
    return str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=False, default_flow_style=False))


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

_COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools")
_TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")


def dataset_entry(dataset: DatasetSpec, layout: Layout) -> dict[str, Any]:
    """One dataset_info.json entry - the contract with the trainer (kubetune.trainer.data):
    ``path`` datasets have an absolute file_name and are read in place from the datasets
    volume (no copy of big data); ``hub``/``url`` datasets have the relative file_name
    ``<name>.jsonl``, which the trainer materialises in dataset_dir once per job from the
    source named in finetunejob.json.  Only LLaMA-Factory's own keys appear here: its
    loader may reject unknown ones."""
    entry: dict[str, Any] = {
        "file_name": f"{layout.datasets_dir}/{dataset.path}" if dataset.path is not None else f"{dataset.name}.jsonl",
        "formatting": dataset.format,
    }
    if dataset.columns is not None:
        cols = {k: getattr(dataset.columns, k) for k in _COLUMN_KEYS if getattr(dataset.columns, k) is not None}
        if cols:
            entry["columns"] = cols
    if dataset.tags is not None:
        tags = {k: getattr(dataset.tags, k) for k in _TAG_KEYS if getattr(dataset.tags, k) is not None}
        if tags:
            entry["tags"] = tags
    if dataset.max_samples is not None:
        entry["num_samples"] = dataset.max_samples
    return entry


def dataset_info(job: FineTuneJob, layout: Layout) -> dict[str, Any]:
    return {d.name: dataset_entry(d, layout) for d in job.spec.datasets}


# --- export and the spec itself -----------------------------------------------------


def export_args(job: FineTuneJob, layout: Layout, output_dir: str) -> dict[str, Any]:
    """The tutorial's merge step: base model + this job's adapter -> <output>/merged.
    No quantization: a merged model must be saved in full precision."""
    spec = job.spec
    args: dict[str, Any] = {"model_name_or_path": model_location(job, layout)}
    if spec.model.revision is not None:
        args["model_revision"] = spec.model.revision
    if spec.model.trust_remote_code:
        args["trust_remote_code"] = True
    args.update(
        adapter_name_or_path=output_dir,
        template=spec.model.template,
        finetuning_type="lora",
        export_dir=f"{output_dir}/{MERGED_SUBDIR}",
        export_size=spec.export.shard_size_gb,
        export_legacy_format=False,
    )
    return args


def spec_document(job: FineTuneJob, namespace: str, backend: str) -> dict[str, Any]:
    """finetunejob.json: what the trainer reads for everything train.yaml cannot say
    (dataset sources, export, resources).  ``distributed.backend`` is the one actually
    rendered (``kubetune render --backend`` may override the spec), so the trainer and
    the pods it runs in agree on the launcher."""
    spec = job.spec.to_api()
    spec["distributed"]["backend"] = backend
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": {"name": job.name, "namespace": namespace},
        "spec": spec,
    }
