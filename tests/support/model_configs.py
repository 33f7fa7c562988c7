"""config.json fields of real base models, for the tests of what is computed from a model's architecture."""

from __future__ import annotations

from typing import Any

QWEN2_0_5B: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}
"""Qwen/Qwen2-0.5B's config.json (the architecture fields): 494M parameters, embeddings tied."""
