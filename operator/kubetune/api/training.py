"""spec.training: hyperparameters.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    Rule,
    RuledModel,
)
from .fields import (
    AttentionImpl,
    Count64,
    Optimizer,
    Packing,
    Precision,
    Scheduler,
    Stage,
    Steps,
)
from .k8s import INT32_MAX
from .posttrain import KtoSpec, PpoSpec, PreferenceSpec

# --- training hyperparameters ---------------------------------------------------


class TrainingSpec(RuledModel):
    """Hyperparameters, mapped one-to-one onto LLaMA-Factory / transformers training arguments."""

    stage: Stage = "sft"
    (
        "Training stage (`stage`): `sft` supervised fine-tuning on conversations, "
        "`pt` continued pre-training on raw text."
    )
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
    (
        "Checkpoint every N optimizer steps (`save_steps`); a restarted job resumes from the newest checkpoint. Unset: "
        "every 10% of the run (transformers' fractional `save_steps: 0.1`), "
        "so a run of any length writes checkpoints. A SIGTERM (preemption, "
        "drain) also writes one (see runPolicy.terminationGracePeriodSeconds)."
    )
    save_total_limit: Steps = 3
    (
        "Keep only the newest N checkpoints (`save_total_limit`). A full fine-tune checkpoint with "
        "optimizer state takes about 14-16 bytes per parameter; unbounded, "
        "checkpoints fill the outputs volume and the job fails for good."
    )
    gradient_checkpointing: bool = True
    (
        "Recompute activations in the backward pass to save memory (inverse of LLaMA-Factory's "
        "`disable_gradient_checkpointing`)."
    )
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
    (
        "Attention kernel (`flash_attn`): `auto` and `sdpa` use PyTorch SDPA (FlashAttention kernels inside PyTorch on "
        "Ampere and newer), `disabled` eager attention, `fa2`/`fa3` the flash-attn packages, "
        "which the default trainer image does not ship: they are refused unless spec.image names an image that has "
        "them (checked again by the trainer before any GPU time is spent; no silent fallback)."
    )
    liger_kernel: bool = False
    (
        "Liger Kernel's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) for supported model "
        "families: less memory, higher throughput (`enable_liger_kernel`). In the default trainer image."
    )
    packing: Packing = "none"
    (
        "Pack several examples into one cutoffLength sequence: `none`, `packing` (plain concatenation; "
        "attention crosses example boundaries) or `neat` (no cross-example attention; "
        "LLaMA-Factory's `neat_packing`). Fewer padding tokens, faster epochs on short examples."
    )
    optimizer: Optimizer | None = None
    (
        "Optimizer (`optim`): `adamw_torch_fused` (fused AdamW: one kernel per step, "
        "no per-parameter temporaries) or `adamw_torch` (foreach AdamW: a temporary the size of the trainable "
        "parameters during the step). Unset: transformers' default, which is `adamw_torch_fused` in the default "
        "trainer image (transformers 5.6 with torch 2.13). Other optimizers (e.g. `adamw_8bit`) can be given as "
        "spec.extraArgs.optim; `kubetune plan` accounts for those it knows."
    )
    preprocessing_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    """Processes for tokenising the dataset (`preprocessing_num_workers`)."""
    preference: PreferenceSpec | None = None
    (
        "Stages dpo and kto: beta, loss (sigmoid/hinge/ipo/kto_pair/orpo/simpo), SFT mix-in, "
        "SimPO gamma (LLaMA-Factory defaults when unset)."
    )
    kto: KtoSpec | None = None
    """Stage kto: weights of desirable and undesirable examples."""
    ppo: PpoSpec | None = None
    """Stage ppo (required there): the reward model and PPO settings."""

    rules = (
        Rule(
            name="eval-steps-need-val-size",
            cel="!has(self.evalSteps) || has(self.valSize)",
            message="spec.training.evalSteps needs spec.training.valSize (the fraction "
            "of data held out for evaluation)",
            field_path=".evalSteps",
            check=lambda t: t.eval_steps is None or t.val_size is not None,
        ),
        Rule(
            name="preference-needs-dpo-or-kto",
            cel="!has(self.preference) || self.stage in ['dpo', 'kto']",
            message="spec.training.preference applies to stages dpo and kto; set stage: "
            "dpo (or kto) or remove preference",
            field_path=".preference",
            check=lambda t: t.preference is None or t.stage in ("dpo", "kto"),
        ),
        Rule(
            name="preference-loss-is-dpo",
            cel="self.stage != 'kto' || !has(self.preference) || self.preference.loss == 'sigmoid'",
            message="spec.training.preference.loss selects a DPO-family loss and applies to stage dpo only; "
            "KTO has its own loss: remove loss",
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
            message="spec.training.stage ppo needs spec.training.ppo.rewardModel (a reward "
            "model or a FineTuneJob of stage rm)",
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
