"""The ConfigMap's files: train.yaml, ds_config.json, accelerate.yaml, dataset_info.json,
export.yaml and finetunejob.json - what LLaMA-Factory and the trainer will read."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubetune.api import FineTuneJob
from kubetune.render import render
from tests.support.renderlib import JobBuilder


def _files(b: JobBuilder) -> dict[str, str]:
    return render(b.build()).files


# --- train.yaml ------------------------------------------------------------------------------

METHODS: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("full", {"method": "full"}, {"finetuning_type": "full"}, ("lora_rank", "quantization_bit")),
    (
        "freeze",
        {"method": "freeze", "freeze": {"trainableLayers": -4, "trainableModules": ["mlp", "self_attn"]}},
        {"finetuning_type": "freeze", "freeze_trainable_layers": -4, "freeze_trainable_modules": "mlp,self_attn"},
        ("lora_rank",),
    ),
    (
        "lora",
        {"method": "lora", "lora": {"rank": 16, "alpha": 32, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}},
        {
            "finetuning_type": "lora",
            "lora_rank": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.1,
            "lora_target": "q_proj,v_proj",
        },
        ("quantization_bit",),
    ),
    (
        "qlora-4",
        {"method": "qlora", "quantization": {"bits": 4, "type": "fp4", "doubleQuant": False}},
        {
            "finetuning_type": "lora",
            "quantization_bit": 4,
            "quantization_type": "fp4",
            "double_quantization": False,
            "lora_target": "all",
        },
        (),
    ),
    (
        "qlora-8",
        {"method": "qlora", "quantization": {"bits": 8}},
        {"finetuning_type": "lora", "quantization_bit": 8},
        ("quantization_type",),
    ),
]


@pytest.mark.parametrize(("spec", "expected", "absent"), [m[1:] for m in METHODS], ids=[m[0] for m in METHODS])
def test_method_arguments(spec: dict[str, Any], expected: dict[str, Any], absent: tuple[str, ...]) -> None:
    b = JobBuilder()
    for k, v in spec.items():
        b.set(f"spec.{k}", v)
    args = yaml.safe_load(_files(b)["train.yaml"])
    assert {k: args.get(k) for k in expected} == expected
    assert not set(absent) & set(args)


TRAINING: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "defaults",
        {},
        {
            "stage": "sft",
            "do_train": True,
            "bf16": True,
            "num_train_epochs": 3.0,
            "plot_loss": True,
            "report_to": ["tensorboard"],
        },
        ("fp16", "max_steps", "warmup_ratio"),
    ),
    ("fp16", {"precision": "fp16"}, {"fp16": True}, ("bf16",)),
    ("fp32-cpu", {"precision": "fp32"}, {}, ("bf16", "fp16")),
    ("max-steps", {"maxSteps": 100}, {"max_steps": 100}, ("num_train_epochs",)),
    ("warmup-steps", {"warmupSteps": 10, "warmupRatio": 0.1}, {"warmup_steps": 10}, ("warmup_ratio",)),
    ("warmup-ratio", {"warmupRatio": 0.1}, {"warmup_ratio": 0.1}, ("warmup_steps",)),
    ("no-checkpointing", {"gradientCheckpointing": False}, {"disable_gradient_checkpointing": True}, ()),
    ("eval", {"valSize": 0.1, "evalSteps": 50}, {"val_size": 0.1, "eval_strategy": "steps", "eval_steps": 50}, ()),
    ("pt", {"stage": "pt"}, {"stage": "pt"}, ()),
    (
        "hyper",
        {
            "learningRate": 2.0e-4,
            "perDeviceBatchSize": 4,
            "gradientAccumulationSteps": 3,
            "scheduler": "linear",
            "cutoffLength": 512,
            "loggingSteps": 5,
            "saveSteps": 50,
            "saveTotalLimit": 2,
            "seed": 7,
            "weightDecay": 0.01,
            "maxGradNorm": 0.5,
            "maxSamples": 99,
            "attention": "sdpa",
            "preprocessingWorkers": 4,
        },
        {
            "learning_rate": 2.0e-4,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 3,
            "lr_scheduler_type": "linear",
            "cutoff_len": 512,
            "logging_steps": 5,
            "save_steps": 50,
            "save_total_limit": 2,
            "seed": 7,
            "weight_decay": 0.01,
            "max_grad_norm": 0.5,
            "max_samples": 99,
            "flash_attn": "sdpa",
            "preprocessing_num_workers": 4,
        },
        (),
    ),
]


@pytest.mark.parametrize(("training", "expected", "absent"), [t[1:] for t in TRAINING], ids=[t[0] for t in TRAINING])
def test_training_arguments(training: dict[str, Any], expected: dict[str, Any], absent: tuple[str, ...]) -> None:
    b = JobBuilder().set("spec.training", training)
    if training.get("precision") == "fp32":
        b.set("spec.resources", {"gpusPerNode": 0})
    if training.get("stage") == "pt":
        b.set("spec.datasets", [{"name": "text", "path": "t.jsonl", "format": "alpaca", "columns": {"prompt": "text"}}])
    rendered = render(b.build())
    args = yaml.safe_load(rendered.files["train.yaml"])
    assert args == rendered.train_args, "train.yaml is exactly Rendered.train_args"
    assert {k: args.get(k) for k in expected} == expected
    assert not set(absent) & set(args)


def test_model_and_paths() -> None:
    args = render(
        JobBuilder().set("spec.model", {"path": "org/llama", "template": "llama3", "trustRemoteCode": True}).build()
    ).train_args
    assert args["model_name_or_path"] == "/data/models/org/llama"
    assert args["trust_remote_code"] is True and args["template"] == "llama3"
    assert args["output_dir"] == "/data/outputs/team-a/demo"
    assert args["dataset_dir"] == "/data/outputs/team-a/demo/data"
    hub = render(
        JobBuilder().set("spec.model", {"name": "Qwen/Qwen2-7B", "revision": "v1.0", "template": "qwen"}).build()
    ).train_args
    assert hub["model_name_or_path"] == "Qwen/Qwen2-7B" and hub["model_revision"] == "v1.0"
    assert "trust_remote_code" not in hub


def test_datasets_are_comma_joined_in_order() -> None:
    b = JobBuilder().set("spec.datasets", [{"name": "b", "path": "b.json"}, {"name": "a", "hub": "o/a"}])
    assert render(b.build()).train_args["dataset"] == "b,a"


def test_extra_args_merge_last_and_may_override_kubetune_choices() -> None:
    args = render(
        JobBuilder().set("spec.extraArgs", {"run_name": "exp-1", "neftune_noise_alpha": 5, "plot_loss": False}).build()
    ).train_args
    assert args["run_name"] == "exp-1" and args["neftune_noise_alpha"] == 5 and args["plot_loss"] is False


# --- DeepSpeed / Accelerate ---------------------------------------------------------------------

ZERO = [
    ("zero1", 1, "none", {"stage": 1}, ()),
    (
        "zero2",
        2,
        "none",
        {"stage": 2, "overlap_comm": False, "reduce_bucket_size": 500_000_000},
        ("offload_optimizer",),
    ),
    (
        "zero2-offload",
        2,
        "optimizer",
        {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True}},
        ("offload_param",),
    ),
    ("zero3", 3, "none", {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}, ("offload_param",)),
    (
        "zero3-offload-all",
        3,
        "all",
        {
            "stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": True},
            "offload_param": {"device": "cpu", "pin_memory": True},
        },
        (),
    ),
]


@pytest.mark.parametrize(("stage", "offload", "expected", "absent"), [z[1:] for z in ZERO], ids=[z[0] for z in ZERO])
def test_deepspeed_config(stage: int, offload: str, expected: dict[str, Any], absent: tuple[str, ...]) -> None:
    rendered = render(JobBuilder().set("spec.distributed", {"zeroStage": stage, "offload": offload}).build())
    ds = json.loads(rendered.files["ds_config.json"])
    assert {k: ds["zero_optimization"].get(k) for k in expected} == expected
    assert not set(absent) & set(ds["zero_optimization"])
    assert (
        ds["train_micro_batch_size_per_gpu"] == "auto"
        and ds["fp16"]["enabled"] == "auto"
        and ds["bf16"]["enabled"] == "auto"
    )
    assert rendered.train_args["deepspeed"] == "/etc/kubetune/ds_config.json"


def test_plain_ddp_has_no_deepspeed() -> None:
    rendered = render(JobBuilder().build())
    assert (
        "deepspeed" not in rendered.train_args
        and "ds_config.json" not in rendered.files
        and "accelerate.yaml" not in rendered.files
    )


ACCELERATE = [
    ("multi-gpu", {"launcher": "accelerate"}, {"distributed_type": "MULTI_GPU", "mixed_precision": "bf16"}, False),
    ("fsdp", {"launcher": "accelerate", "fsdp": True}, {"distributed_type": "FSDP"}, False),
    ("deepspeed", {"launcher": "accelerate", "zeroStage": 3}, {"distributed_type": "DEEPSPEED"}, True),
]


@pytest.mark.parametrize(
    ("distributed", "expected", "uses_ds"), [a[1:] for a in ACCELERATE], ids=[a[0] for a in ACCELERATE]
)
def test_accelerate_config(distributed: dict[str, Any], expected: dict[str, Any], uses_ds: bool) -> None:
    rendered = render(
        JobBuilder().set("spec.distributed", distributed).set("spec.resources", {"nodes": 2, "gpusPerNode": 4}).build()
    )
    acc = yaml.safe_load(rendered.files["accelerate.yaml"])
    assert {k: acc.get(k) for k in expected} == expected
    assert (acc["num_machines"], acc["num_processes"], acc["machine_rank"]) == (2, 8, 0)
    assert ("deepspeed" in rendered.train_args) == uses_ds == ("ds_config.json" in rendered.files)
    if uses_ds:
        assert acc["deepspeed_config"]["deepspeed_config_file"] == "/etc/kubetune/ds_config.json"
        assert acc["deepspeed_config"]["zero3_init_flag"] is True
    if acc["distributed_type"] == "FSDP":
        assert acc["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD"


# --- dataset_info.json contract ----------------------------------------------------------------


def test_dataset_info_contract() -> None:
    b = JobBuilder().set(
        "spec.datasets",
        [
            {"name": "local", "path": "dir/chats.jsonl", "maxSamples": 10},
            {
                "name": "hubset",
                "hub": "o/d",
                "columns": {"messages": "conversations", "system": "sys"},
                "tags": {"roleTag": "from", "contentTag": "value", "userTag": "human", "assistantTag": "gpt"},
            },
            {
                "name": "web",
                "url": "https://example.com/a.jsonl",
                "format": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "hist"},
            },
        ],
    )
    info = json.loads(_files(b)["dataset_info.json"])
    # Every column and tag is written: LLaMA-Factory's DatasetAttr.join reads an unnamed one as None.
    all_tags = {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    }
    assert info == {
        "local": {
            "file_name": "/data/datasets/dir/chats.jsonl",
            "formatting": "sharegpt",
            "num_samples": 10,
            "columns": {"messages": "conversations"},
            "tags": all_tags,
        },
        "hubset": {
            "file_name": "hubset.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "sys"},
            "tags": all_tags,
        },
        "web": {
            "file_name": "web.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "hist"},
        },
    }
    assert "kubetune_source" not in json.dumps(info)


# --- export.yaml and finetunejob.json -------------------------------------------------------------


def test_export_args() -> None:
    files = _files(
        JobBuilder()
        .set("spec.export", {"enabled": True, "shardSizeGB": 2})
        .set("spec.method", "qlora")
        .set("spec.quantization", {"bits": 4})
    )
    export = yaml.safe_load(files["export.yaml"])
    assert export == {
        "model_name_or_path": "Qwen/Qwen1.5-1.8B",
        "adapter_name_or_path": "/data/outputs/team-a/demo",
        "template": "qwen",
        "finetuning_type": "lora",
        "export_dir": "/data/outputs/team-a/demo/merged",
        "export_size": 2,
        "export_legacy_format": False,
    }
    assert "export.yaml" not in _files(JobBuilder())


def test_spec_file_round_trips_to_the_same_job() -> None:
    b = JobBuilder().set("spec.extraArgs", {"neftune_noise_alpha": 5}).set("spec.env", [{"name": "A", "value": "b"}])
    job = b.build()
    doc = json.loads(render(job).files["finetunejob.json"])
    assert doc["metadata"] == {"name": "demo", "namespace": "team-a"}
    again = FineTuneJob.from_api(doc)
    # The file records the kind actually rendered: backend auto (the default) renders as pytorchjob.
    assert job.spec.distributed.backend == "auto" and again.spec.distributed.backend == "pytorchjob"
    rendered = job.spec.model_copy(
        update={"distributed": job.spec.distributed.model_copy(update={"backend": "pytorchjob"})}
    )
    assert again.spec == rendered


@pytest.mark.parametrize(
    ("resources", "preprocessing", "dataloader"),
    [
        ({"cpu": "32", "gpusPerNode": 8}, 32, 3),
        ({"cpu": "96", "gpusPerNode": 8}, 64, 4),
        ({"cpu": "2", "gpusPerNode": 8}, 2, None),
        ({"cpu": "500m", "gpusPerNode": 1}, None, None),
        ({"gpusPerNode": 8}, None, None),
    ],
    ids=["32-cores", "96-cores-capped", "too-few-for-loader-workers", "half-a-core", "no-cpu-request"],
)
def test_worker_counts_follow_the_cpu_request(
    resources: dict[str, object], preprocessing: int | None, dataloader: int | None
) -> None:
    args = render(JobBuilder().set("spec.resources", resources).build()).train_args
    assert args.get("preprocessing_num_workers") == preprocessing
    assert args.get("dataloader_num_workers") == dataloader
    assert args["ddp_timeout"] == 10800
