"""What a restart resumes is a compatibility contract: pinned here so that changing it is a decision.

A checkpoint carries its configuration's hash (``kubetune-config.json``); a restart whose hash differs
refuses the checkpoints (trainer.fingerprint.check_and_record).  A tokenised cache is found by a key
over the data-changing arguments (trainer.train.tokenized_path).  So a change of what either leaves
out, or of how the hash is made, makes every running job's restart refuse its checkpoints or tokenise
again.  When one of these tests fails, say so in the release notes, then update the pin."""

from __future__ import annotations

from kubetune.trainer import fingerprint, train

ARGS = {
    "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct",
    "template": "qwen",
    "stage": "sft",
    "finetuning_type": "lora",
    "lora_rank": 8,
    "learning_rate": 1e-4,
    "max_steps": 10,
    "dataset": "d",
    "cutoff_len": 512,
}
BOOKKEEPING = {
    "output_dir": "/outputs/default/j",
    "logging_dir": "/outputs/default/j/logs",
    "logging_steps": 1,
    "report_to": "tensorboard",
    "run_name": "j",
    "plot_loss": True,
    "save_steps": 5,
    "save_total_limit": 3,
    "preprocessing_num_workers": 4,
    "dataloader_num_workers": 2,
    "ddp_timeout": 1800,
    "overwrite_cache": True,
    "tokenized_path": "/outputs/default/j/.kubetune-data/tokenized-x",
    "resume_from_checkpoint": "/outputs/default/j/checkpoint-5",
    "dataset_dir": "/outputs/default/j/.kubetune-data",
}


def test_the_configuration_hash_of_a_fixed_job_is_the_one_earlier_releases_wrote() -> None:
    plain = fingerprint.effective_config(ARGS, data_digest="sha256:abc", world_size=2)
    with_bookkeeping = fingerprint.effective_config({**ARGS, **BOOKKEEPING}, data_digest="sha256:abc", world_size=2)
    assert plain == with_bookkeeping  # where outputs go, logging, cadence and retention change nothing learned
    assert fingerprint.config_hash(plain) == "3d317b93ab9cc86e019899a4dc3e2b3b136c450d6f3f3ed93d8ecb76a7cb1dd0"
    changed = fingerprint.effective_config({**ARGS, "lora_rank": 16}, data_digest="sha256:abc", world_size=2)
    assert fingerprint.config_hash(changed) != fingerprint.config_hash(plain)


def test_what_the_cache_key_and_the_configuration_hash_leave_out_is_pinned() -> None:
    assert fingerprint.NOT_TRAINING_STATE == set(BOOKKEEPING)
    assert train.NOT_DATA - fingerprint.BOOKKEEPING_ARGS == {
        # arguments that change how the data is trained on, not the tokenised data
        "bf16",
        "deepspeed",
        "disable_gradient_checkpointing",
        "double_quantization",
        "enable_liger_kernel",
        "eval_steps",
        "eval_strategy",
        "finetuning_type",
        "flash_attn",
        "fp16",
        "freeze_trainable_layers",
        "freeze_trainable_modules",
        "gradient_accumulation_steps",
        "learning_rate",
        "lora_alpha",
        "lora_dropout",
        "lora_rank",
        "lora_target",
        "lr_scheduler_type",
        "max_grad_norm",
        "max_steps",
        "num_train_epochs",
        "per_device_eval_batch_size",
        "per_device_train_batch_size",
        "quantization_bit",
        "quantization_type",
        "warmup_ratio",
        "warmup_steps",
        "weight_decay",
    }
    assert "dataset_dir" not in train.NOT_DATA  # the cache key includes the data folder; the hash its digest
