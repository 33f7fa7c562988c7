"""Model architectures: the few config.json fields that decide memory.

Where they come from, in order: a ``config.json`` the caller points at, the
model on the models volume (``spec.model.path``) or the Hugging Face cache
layout (``models--owner--name/snapshots/*/config.json``) when present locally,
then the committed catalogue ``architectures.json`` of common base models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_CATALOGUE = Path(__file__).with_name("architectures.json")

# Module names of the decoder layer, in the spelling LoRA targets use.
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
# Fused projections of Phi-3/4 and what they stand for.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
# Outside the decoder layers: PEFT puts LoRA on an nn.Embedding and on the lm_head nn.Linear too
# (peft/tuners/lora/layer.py:2241-2274 @0.18.1, dispatch_default: nn.Embedding, ..., nn.Linear).
OUTER_MODULES = ("embed_tokens", "lm_head")


class UnknownModelError(ValueError):
    """The planner cannot find the model's architecture; the message says how to give it."""


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer, as far as memory is concerned."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool
    source: str
    """Where the numbers came from: a file path or 'catalogue'."""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.model_type.startswith("gemma") else 2

    @property
    def lora_modules(self) -> tuple[str, ...]:
        """The decoder layer's linear layers by the names the model has (what a LoRA target names).
        Phi-3/4 fuse them: transformers/models/phi3/modeling_phi3.py:54-55,223-224 @5.6.0 has
        gate_up_proj, down_proj, o_proj and qkv_proj, and no q_proj, k_proj, v_proj, gate_proj or
        up_proj (PEFT stops at model load on a target that matches no module)."""
        if self.model_type == "phi3":
            return ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
        return ATTENTION_MODULES + MLP_MODULES

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear of one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_params(self) -> int:
        """Parameters of one decoder layer (linears, biases, norms)."""
        n = sum(a * b for a, b in self.linear_shapes().values())
        if self.qkv_bias:
            n += self.q_dim + 2 * self.kv_dim
        n += self.norms_per_layer * self.hidden
        if self.model_type == "qwen3" or self.model_type.startswith("gemma3"):
            n += 2 * self.head_dim  # q_norm and k_norm
        return n

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def total_params(self) -> int:
        lm_head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.embedding_params() + lm_head + self.layers * self.layer_params() + self.hidden

    def largest_module_params(self) -> int:
        """The biggest single parameter tensor (ZeRO-3 gathers one at a time): usually the embedding."""
        sizes = [a * b for a, b in self.linear_shapes().values()]
        if self.model_type == "phi3":  # fused qkv_proj and gate_up_proj are single tensors
            sizes += [self.hidden * (self.q_dim + 2 * self.kv_dim), 2 * self.hidden * self.intermediate]
        return max(self.embedding_params(), *sizes)


def from_config(config: dict[str, Any], name: str, source: str) -> Architecture:
    """An Architecture from the fields of a Hugging Face config.json."""
    cfg = config.get("text_config", config) if "hidden_size" not in config else config
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        model_type = str(cfg.get("model_type", config.get("model_type", "llama")))
        return Architecture(
            name=name,
            model_type=model_type,
            hidden=hidden,
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
            qkv_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
            source=source,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnknownModelError(
            f"{source}: not a decoder-only transformer config.json the planner understands (missing or bad {exc})"
        ) from exc


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(_CATALOGUE.read_text(encoding="utf-8"))["models"]
    return data


_SUFFIX = re.compile(r"-(Instruct|Chat|chat|it|instruct|Base)(-\d+)?$")


def _catalogue_lookup(name: str) -> dict[str, Any] | None:
    models = catalogue()
    lowered = {k.lower(): v for k, v in models.items()}
    for candidate in (
        name,
        _SUFFIX.sub("", name),
        _SUFFIX.sub("", name) + "-pt",
        _SUFFIX.sub("", name).replace("-it", "-pt"),
    ):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def _hub_cache_config(name: str, roots: list[Path]) -> Path | None:
    folder = "models--" + name.replace("/", "--")
    for root in roots:
        for base in (root / "hub" / folder, root / folder):
            snaps = sorted((base / "snapshots").glob("*/config.json")) if base.is_dir() else []
            if snaps:
                return snaps[-1]
    return None


def resolve(
    name: str | None,
    path: str | None = None,
    *,
    config_file: str | Path | None = None,
    models_dirs: list[Path] | None = None,
) -> Architecture:
    """Find the architecture of spec.model (name or path); raise UnknownModelError saying how to fix it."""
    label = name or path or "?"
    if config_file is not None:
        p = Path(config_file)
        if p.is_dir():
            p = p / "config.json"
        return from_config(json.loads(p.read_text(encoding="utf-8")), label, str(p))
    roots = list(models_dirs or [])
    if path is not None:
        for root in roots:
            p = root / path / "config.json"
            if p.is_file():
                return from_config(json.loads(p.read_text(encoding="utf-8")), label, str(p))
    if name is not None:
        cached = _hub_cache_config(name, roots)
        if cached is not None:
            return from_config(json.loads(cached.read_text(encoding="utf-8")), label, str(cached))
        entry = _catalogue_lookup(name)
        if entry is not None:
            return from_config(entry, name, "catalogue")
    where = f"spec.model.path {path!r}" if path else f"spec.model.name {name!r}"
    raise UnknownModelError(
        f"{where}: the planner does not know this architecture. Give its config.json "
        "(kubetune plan --model-config PATH, a file or the model folder), point --models-dir at a folder "
        "holding the model (spec.model.path) or a Hugging Face cache (HF_HOME), or pick a catalogued model: "
        + ", ".join(sorted(catalogue())[:6])
        + ", ... (kubetune plan --list-models)"
    )
