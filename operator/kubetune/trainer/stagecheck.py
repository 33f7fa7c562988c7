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


def _parse(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check(cfg: JobConfig) -> None:
    """Raise ConfigError when spec.training.stage cannot run with the installed packages."""
    if cfg.job.spec.training.stage != "ppo":
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
