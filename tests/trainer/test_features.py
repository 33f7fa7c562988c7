"""The trainer refuses, before any stage, settings whose package this image lacks."""

from __future__ import annotations

import pytest

from kubetune.trainer import features
from kubetune.trainer.errors import ConfigError


@pytest.mark.train  # imports torch
def test_flash_attention_without_flash_attn_is_refused_not_silently_replaced() -> None:
    pytest.importorskip("torch")
    if features._has("flash_attn"):
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError, match=r"flash_attn fa2 \(spec.training.attention\): needs flash-attn"):
        features.check({"flash_attn": "fa2"})
    assert features.missing({"flash_attn": "sdpa"}) == [] and features.missing({"flash_attn": "auto"}) == []


def test_extra_args_that_need_a_missing_package_are_named() -> None:
    if features._has("unsloth"):
        pytest.skip("unsloth is installed here")
    assert features.missing({"use_unsloth": True, "use_galore": False}) == ["use_unsloth: needs unsloth"]


@pytest.mark.parametrize(
    ("value", "used"), [("auto", "sdpa (transformers default)"), ("disabled", "eager"), ("fa2", "flash_attention_2")]
)
def test_run_record_names_the_attention_used(value: str, used: str) -> None:
    assert features.attention_used({"flash_attn": value}) == used
