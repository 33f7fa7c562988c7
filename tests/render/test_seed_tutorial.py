"""The seed tutorial's five training commands, transcribed flag by flag, against examples/seed/.

Each example must render to the same *effective* LLaMA-Factory arguments as
its command: every flag of the command with the same value, and every other
argument kubetune renders equal to LLaMA-Factory's own default (taken from the
committed catalog of the pinned version) - so nothing changes the training
behind the user's back.  Paths differ by design (volumes instead of ./output).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune.render import render
from kubetune.render.catalog import catalog
from tests.support.renderlib import EXAMPLES, load_example

# Flags common to all five commands (train_bash.py is today's `llamafactory-cli train`).
_COMMON: dict[str, Any] = {
    "stage": "sft",
    "do_train": True,
    "model_name_or_path": "Qwen/Qwen1.5-1.8B",
    "dataset": "deita_10k",
    "template": "qwen",
    "overwrite_cache": True,
    "lr_scheduler_type": "cosine",
    "logging_steps": 10,
    "num_train_epochs": 5.0,
    "plot_loss": True,
    "fp16": True,
}
_TUTORIAL_EXTRA = {"use_fast_tokenizer": True}
"""Flags some commands pass that equal LLaMA-Factory's default (so kubetune need not render them)."""

# name: (flags of the command, GPUs, ZeRO stage, launcher)
TUTORIAL: dict[str, tuple[dict[str, Any], int, int, str]] = {
    "full-single-gpu": (
        {
            "finetuning_type": "full",
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 16,
            "learning_rate": 1e-5,
        },
        1,
        0,
        "torchrun",
    ),
    "full-deepspeed": (
        {
            "finetuning_type": "full",
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 8,
            "learning_rate": 5e-5,
            **_TUTORIAL_EXTRA,
        },
        8,
        2,
        "deepspeed",
    ),
    "full-accelerate": (
        {
            "finetuning_type": "full",
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 8,
            "learning_rate": 5e-5,
            **_TUTORIAL_EXTRA,
        },
        8,
        0,
        "accelerate",
    ),
    "lora-deepspeed": (
        {
            "finetuning_type": "lora",
            "lora_target": "q_proj,v_proj",
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5e-5,
            **_TUTORIAL_EXTRA,
        },
        8,
        2,
        "deepspeed",
    ),
    "qlora-deepspeed": (
        {
            "finetuning_type": "lora",
            "lora_target": "q_proj,v_proj",
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5e-5,
            "quantization_bit": 4,
            **_TUTORIAL_EXTRA,
        },
        8,
        2,
        "deepspeed",
    ),
}

PATH_KEYS = {"dataset_dir", "output_dir", "deepspeed", "logging_dir"}
"""Where things live: volumes in a pod instead of the tutorial's ./LLaMA-Factory/data and ./output."""

DELIBERATE: dict[str, tuple[Any, str]] = {
    "report_to": (["tensorboard"], "spec.tracking: TensorBoard event files on the outputs volume by default"),
    "run_name": (None, "the job's name, so a tracking UI shows it; checked separately"),
    "save_steps": (
        0.1,
        "the tutorial's --save_steps 1000 exceeds its ~390-step run: no checkpoint would ever be written",
    ),
    "save_total_limit": (3, "checkpoints (14-16 bytes per parameter) would otherwise fill the outputs volume"),
    "ddp_timeout": (10800, "the first run tokenises inside a barrier; 30 min is too short for large datasets"),
}
"""Defaults kubetune renders on purpose where the tutorial (a single laptop-sized run) relied on
LLaMA-Factory's: each changes how the run is observed or survives at cluster scale, never the
model it trains."""


def _launcher(rendered_files: dict[str, str], train_args: dict[str, Any]) -> str:
    if "accelerate.yaml" in rendered_files:
        return "accelerate"
    if "deepspeed" in train_args:
        return "deepspeed"
    return "torchrun"


@pytest.mark.parametrize("name", sorted(TUTORIAL), ids=str)
def test_seed_example_matches_tutorial_command(name: str) -> None:
    flags, gpus, zero, launcher = TUTORIAL[name]
    command = {**_COMMON, **flags}
    rendered = render(load_example(EXAMPLES / "seed" / f"{name}.yaml"))
    args = rendered.train_args
    defaults = catalog().args

    for key, value in command.items():
        if key in args:
            assert args[key] == value, f"{name}: --{key} is {value!r} in the tutorial, rendered {args[key]!r}"
        else:
            assert defaults[key].default == value, (
                f"{name}: --{key} {value!r} is neither rendered nor LLaMA-Factory's default"
            )
    assert args["run_name"] == rendered.job.name
    for key, (value, _why) in DELIBERATE.items():
        if value is None:
            continue
        assert args.get(key) == value, f"{name}: {key} should be kubetune's {value!r}, rendered {args.get(key)!r}"
    for key, value in args.items():
        if key in command or key in PATH_KEYS or key in DELIBERATE:
            continue
        assert defaults[key].default == value, (
            f"{name}: kubetune renders {key}={value!r}, which the tutorial leaves at LLaMA-Factory's "
            f"default {defaults[key].default!r}"
        )

    assert rendered.job.spec.resources.gpus_per_node * rendered.job.spec.resources.nodes == gpus
    assert _launcher(rendered.files, args) == launcher
    if zero:
        assert json.loads(rendered.files["ds_config.json"])["zero_optimization"]["stage"] == zero
    else:
        assert "ds_config.json" not in rendered.files
    if launcher == "accelerate":
        import yaml

        acc = yaml.safe_load(rendered.files["accelerate.yaml"])
        assert (acc["distributed_type"], acc["num_processes"], acc["mixed_precision"]) == ("MULTI_GPU", 8, "fp16")


def test_stage2_config_is_the_tutorials() -> None:
    """The tutorial's configs/deepspeed_stage2.json, with kubetune's one addition (a bf16 block, 'auto')."""
    tutorial = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "zero_optimization": {
            "stage": 2,
            "allgather_partitions": True,
            "allgather_bucket_size": 5e8,
            "reduce_scatter": True,
            "reduce_bucket_size": 5e8,
            "overlap_comm": False,
            "contiguous_gradients": True,
        },
    }
    rendered = json.loads(render(load_example(EXAMPLES / "seed" / "full-deepspeed.yaml")).files["ds_config.json"])
    assert rendered.pop("bf16") == {"enabled": "auto"}
    assert rendered == tutorial
