"""Refuse, before any GPU time, a post-training stage the installed stack cannot run.

LLaMA-Factory 0.9.5's PPO trainer (``llamafactory/train/ppo/trainer.py``) is
written against the old TRL ``PPOTrainer`` and calls
``require_version("trl>=0.8.6,<=0.9.6")`` when it starts, while the package
itself requires ``trl>=0.18,<=0.24`` (the trainer image pins what
LLaMA-Factory asks for).  With the stock image a PPO job would load the model
and the reward model and only then fail; we fail first, with the reason.
An image built with TRL 0.8.6-0.9.6 (spec.image) passes this check.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import JobConfig
from .errors import ConfigError

PPO_TRL_RANGE = ((0, 8, 6), (0, 9, 6))
LOSS_TYPE_PARAMETER_TRL = (0, 20, 0)
"""From TRL 0.20.0 ``DPOTrainer.dpo_loss`` takes ``loss_type: str = "sigmoid"`` as a parameter
(trl/trainer/dpo_trainer.py:998-999 @v0.20.0; 1020-1028 @v0.24.0; v0.19.1 has no such
parameter and reads ``self.loss_type``). LLaMA-Factory 0.9.5 calls it with four arguments
(src/llamafactory/train/dpo/trainer.py:206-208), so hinge/ipo/kto_pair run as sigmoid."""
IGNORED_LOSSES = ("hinge", "ipo", "kto_pair")


def _parse(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check(cfg: JobConfig) -> None:
    """Raise ConfigError when spec.training.stage cannot run with the installed packages."""
    t = cfg.job.spec.training
    if t.stage == "dpo" and t.preference is not None and t.preference.loss in IGNORED_LOSSES:
        _check_loss(t.preference.loss)
    if t.stage != "ppo":
        return
    try:
        trl = version("trl")
    except PackageNotFoundError:
        raise ConfigError("spec.training.stage ppo needs the trl package, which this trainer image lacks") from None
    low, high = PPO_TRL_RANGE
    if not low <= _parse(trl) <= high:
        raise ConfigError(
            f"spec.training.stage ppo: LLaMA-Factory's PPO trainer needs trl 0.8.6-0.9.6, this image has trl {trl} "
            "(LLaMA-Factory 0.9.5 itself requires trl>=0.18, so its PPO cannot run with its own dependencies). "
            "Use stage dpo/kto (or the orpo/simpo losses) for preference training, or a spec.image built with trl 0.9.6"
        )


def _check_loss(loss: str) -> None:
    try:
        trl = version("trl")
    except PackageNotFoundError:
        raise ConfigError("spec.training.stage dpo needs the trl package, which this trainer image lacks") from None
    if _parse(trl) >= LOSS_TYPE_PARAMETER_TRL:
        raise ConfigError(
            f"spec.training.preference.loss {loss}: with trl {trl} (>= 0.20) LLaMA-Factory's DPO trainer would train "
            "sigmoid DPO instead (TRL's dpo_loss defaults loss_type to sigmoid and LLaMA-Factory does not pass it). "
            "Use loss sigmoid, orpo or simpo, or a spec.image with trl older than 0.20"
        )
