"""Scalar types and enums shared by the FineTuneJob spec's models.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from .k8s import (
    INT32_MAX,
    SAFE_INT_MAX,
)

MAX_NODES: Final = 1024
"""Most pods (nodes) one job may have; also bounds the pod name suffix (resource.MAX_NAME_LENGTH)."""

Steps = Annotated[int, Field(ge=1, le=INT32_MAX, json_schema_extra={"format": "int32"})]
Count64 = Annotated[int, Field(ge=1, le=SAFE_INT_MAX, json_schema_extra={"format": "int64"})]

Method = Literal["full", "freeze", "lora", "qlora"]
Backend = Literal["auto", "pytorchjob", "mpijob", "trainjob"]
(
    "spec.distributed.backend: the keys of kubetune.cluster.backends.BACKENDS, "
    "and auto (tests/render/test_backend_plugins.py keeps them equal)."
)
Launcher = Literal["torchrun", "deepspeed", "accelerate"]
Precision = Literal["bf16", "fp16", "fp32"]
Stage = Literal["pt", "sft", "rm", "ppo", "dpo", "kto"]
RANKING_STAGES = ("rm", "dpo")
"""Stages that train on preference pairs (ranking datasets); ORPO and SimPO are dpo losses."""
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
]
Offload = Literal["none", "optimizer", "all"]
AttentionImpl = Literal["auto", "disabled", "sdpa", "fa2", "fa3"]
Packing = Literal["none", "packing", "neat"]
Optimizer = Literal["adamw_torch_fused", "adamw_torch"]

_NO_DOTDOT = "!self.matches('(^|/)[.][.](/|$)')"


def _no_dotdot(path: str | None) -> bool:
    return path is None or ".." not in path.split("/")
