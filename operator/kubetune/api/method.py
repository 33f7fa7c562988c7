"""Method-specific settings: spec.lora, spec.freeze and spec.quantization.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import (
    ApiModel,
    Identifier,
)

# --- method-specific settings ---------------------------------------------------


class LoraSpec(ApiModel):
    """LoRA adapter settings (methods lora and qlora)."""

    rank: Annotated[int, Field(ge=1, le=1024)] = 8
    """Rank of the low-rank update (LLaMA-Factory's `lora_rank`)."""
    alpha: Annotated[int, Field(ge=1, le=4096)] | None = None
    """Scaling numerator (`lora_alpha`); LLaMA-Factory uses 2 x rank when unset."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout on the adapter input (`lora_dropout`)."""
    target_modules: Annotated[list[Identifier], Field(min_length=1, max_length=64)] = ["all"]
    (
        "Modules that get adapters (`lora_target`), by the model's own names: e.g. [q_proj, "
        "v_proj] as in the tutorial (Phi-3/4 fuse them: qkv_proj, gate_up_proj); "
        "embed_tokens and lm_head only where the model does not tie them (merging would change both) and, "
        "for a served adapter, only on Llama, Mistral and Phi-3 (vLLM loads no other); "
        "`all` alone means every linear layer but lm_head."
    )


class FreezeSpec(ApiModel):
    """Partial-parameter training settings (method freeze)."""

    trainable_layers: Annotated[int, Field(ge=-1024, le=1024)] = 2
    (
        "Number of trainable layers (`freeze_trainable_layers`): "
        "positive counts from the last layer, negative from the first."
    )
    trainable_modules: Annotated[list[Identifier], Field(min_length=1, max_length=64)] = ["all"]
    """Module names trained inside those layers (`freeze_trainable_modules`)."""


class QuantizationSpec(ApiModel):
    """Load the base model quantized with bitsandbytes (method qlora)."""

    bits: Literal[4, 8]
    """4 (QLoRA, NF4/FP4) or 8 (LLM.int8) bits (LLaMA-Factory's `quantization_bit`)."""
    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type (`quantization_type`); NF4 is the QLoRA paper's choice."""
    double_quant: bool = True
    """Quantize the quantization constants too (`double_quantization`); saves ~0.4 bit per parameter."""
