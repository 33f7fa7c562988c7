"""The planner's activation terms against what autograd really saves, on tiny Qwen2 models (CPU).

Every tensor autograd keeps for backward passes through a saved-tensors pack
hook; we sum the bytes of their storages, each storage once (views share one),
leaving out the parameters themselves.  The planner must predict that figure
for the ways LLaMA-Factory runs a model: fp32 on CPU, pure 16-bit (DeepSpeed),
fp32 master weights under bf16 autocast (ZeRO 0 full fine-tuning) and a bf16
base with fp32 LoRA adapters or fp32 freeze-tuned layers, each with and without (reentrant) gradient
checkpointing, as LLaMA-Factory enables it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from kubetune.plan import Setup, activations, from_config

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None or importlib.util.find_spec("peft") is None,
        reason="needs torch, transformers and peft (the train extra)",
    ),
]

TINY = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "tie_word_embeddings": False,
}
BATCH, SEQ = 2, 48


def saved_bytes(
    config: dict[str, Any],
    *,
    dtype: str,
    autocast: bool,
    lora: tuple[str, ...] | None,
    gc: bool,
    freeze: int | None = None,
    attn: str = "sdpa",
) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        **{k: v for k, v in config.items() if k != "model_type"}, max_position_embeddings=1024, attn_implementation=attn
    )
    model: Any = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules=list(lora), lora_dropout=0.0))
        for p in model.parameters():  # LLaMA-Factory keeps trainable weights in fp32
            if p.requires_grad:
                p.data = p.data.float()
    if freeze is not None:  # LLaMA-Factory's freeze tuning: the last (or first) layers train, in fp32
        model.requires_grad_(False)
        n = config["num_hidden_layers"]
        for i in range(n - freeze, n) if freeze > 0 else range(-freeze):
            for p in model.model.layers[i].parameters():
                p.requires_grad_(True)
                p.data = p.data.float()
    model.train()
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
        return t

    ids = torch.randint(0, config["vocab_size"], (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
    ):
        out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()  # the graph really is complete
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


CASES: dict[str, tuple[str, bool, tuple[str, ...] | None, Setup]] = {
    # name: (model dtype, autocast, LoRA targets, planner setup)
    "full-fp32": ("float32", False, None, Setup(method="full", precision="fp32")),
    "full-bf16-deepspeed": (
        "bfloat16",
        False,
        None,
        Setup(method="full", precision="bf16", zero_stage=2, world_size=2),
    ),
    "full-fp32-master-autocast": ("float32", True, None, Setup(method="full", precision="bf16")),
    "lora-qv": ("bfloat16", True, ("q_proj", "v_proj"), Setup(method="lora", lora_targets=("q_proj", "v_proj"))),
    "lora-all": (
        "bfloat16",
        True,
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        Setup(method="lora", lora_targets=("all",)),
    ),
    "lora-o-down": (
        "bfloat16",
        True,
        ("o_proj", "down_proj"),
        Setup(method="lora", lora_targets=("o_proj", "down_proj")),
    ),
    "freeze-last-2": ("bfloat16", True, None, Setup(method="freeze", freeze_layers=2)),
    "freeze-first-1": ("bfloat16", True, None, Setup(method="freeze", freeze_layers=-1)),
    # spec.training.attention: disabled (eager attention keeps the attention probabilities)
    "full-bf16-eager": (
        "bfloat16",
        False,
        None,
        Setup(method="full", precision="bf16", zero_stage=2, world_size=2, attention="disabled"),
    ),
    "full-fp32-eager": ("float32", False, None, Setup(method="full", precision="fp32", attention="disabled")),
    "lora-qv-eager": (
        "bfloat16",
        True,
        ("q_proj", "v_proj"),
        Setup(method="lora", lora_targets=("q_proj", "v_proj"), attention="disabled"),
    ),
    "lora-all-eager": (
        "bfloat16",
        True,
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        Setup(method="lora", lora_targets=("all",), attention="disabled"),
    ),
}


@pytest.mark.parametrize("gc", [False, True], ids=["no-checkpointing", "checkpointing"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_activations_match_autograd(case: str, gc: bool) -> None:
    dtype, autocast, lora, setup = CASES[case]
    setup = setup.with_(micro_batch=BATCH, seq_len=SEQ, gradient_checkpointing=gc, packing="packing")
    measured = saved_bytes(
        TINY,
        dtype=dtype,
        autocast=autocast,
        lora=lora,
        gc=gc,
        freeze=setup.freeze_layers if setup.method == "freeze" else None,
        attn="eager" if setup.attention == "disabled" else "sdpa",
    )
    predicted = activations(from_config(TINY, "tiny", "test"), setup).saved
    assert predicted == pytest.approx(measured, rel=0.01), f"{case}: planner {predicted} B, autograd saved {measured} B"


def test_checkpointing_saves_less_and_scales_with_tokens() -> None:
    """What a user relies on: checkpointing cuts saved activations, and they grow linearly with batch x length."""
    small = saved_bytes(TINY, dtype="bfloat16", autocast=False, lora=None, gc=False)
    ckpt = saved_bytes(TINY, dtype="bfloat16", autocast=False, lora=None, gc=True)
    assert ckpt < small / 2
    arch = from_config(TINY, "tiny", "test")
    one = activations(
        arch, Setup(method="full", zero_stage=2, world_size=2, micro_batch=1, seq_len=SEQ, gradient_checkpointing=False)
    ).saved
    four = activations(
        arch, Setup(method="full", zero_stage=2, world_size=2, micro_batch=4, seq_len=SEQ, gradient_checkpointing=False)
    ).saved
    assert four == pytest.approx(4 * one, rel=0.05)  # rotary tables do not grow with the batch
