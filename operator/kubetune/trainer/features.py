"""Before any stage: does this image have what the training arguments need?

LLaMA-Factory checks optional packages late (after the data and model stages)
or not at all: ``flash_attn: fa2`` without flash-attn falls back to SDPA with
one warning line.  The trainer refuses such a run at once, with the package
named, whichever image runs it (the renderer already refuses it for the
default image).  The run record states the attention implementation used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from kubetune.api.contract import ARG_PACKAGES, ATTENTION_PACKAGES

from .errors import ConfigError


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(train_args: Mapping[str, Any]) -> list[str]:
    """'<argument>: needs <package>' for every requested feature this image lacks."""
    out: list[str] = []
    attention = str(train_args.get("flash_attn", "auto"))
    if attention in ATTENTION_PACKAGES:
        module, package = ATTENTION_PACKAGES[attention]
        if not _has(module):
            out.append(f"flash_attn {attention} (spec.training.attention): needs {package}")
    for key, (module, package) in sorted(ARG_PACKAGES.items()):
        if train_args.get(key) and not _has(module):
            out.append(f"{key}: needs {package}")
    return out


def check(train_args: Mapping[str, Any]) -> None:
    problems = missing(train_args)
    if problems:
        raise ConfigError(
            "this training image lacks packages the job asks for (no silent fallback): "
            + "; ".join(problems)
            + ". Remove the setting, or set spec.image to an image that has them"
        )


def attention_used(train_args: Mapping[str, Any]) -> str:
    """The attention implementation the run uses (llamafactory/model/model_utils/attention.py):
    auto leaves transformers' default, which is SDPA for the supported model families."""
    return {
        "auto": "sdpa (transformers default)",
        "sdpa": "sdpa",
        "disabled": "eager",
        "fa2": "flash_attention_2",
        "fa3": "flash_attention_3",
    }.get(str(train_args.get("flash_attn", "auto")), str(train_args.get("flash_attn")))
