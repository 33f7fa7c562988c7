"""The planner's DPO/KTO logits term against LLaMA-Factory's own step, measured on CPU (issue 21 item 10).

LLaMA-Factory 0.9.5's ``CustomDPOTrainer.get_batch_loss_metrics`` (train/dpo/trainer.py:277-317,
with its ``concatenated_forward`` and ``compute_reference_log_probs``, and TRL 0.24's ``dpo_loss``)
and ``CustomKTOTrainer.get_batch_loss_metrics`` (train/kto/trainer.py, with TRL's ``kto_loss``)
run unchanged on a tiny LoRA Qwen2 model; only the Trainer's constructor is skipped (its methods
are bound to a namespace holding the attributes they read).  A dispatch mode follows every tensor
the forward and backward create whose storage is at least tokens x vocabulary bytes (the logits
family: bf16/fp32 logits, log-softmax, their gradients; the parameters themselves left out) and
records the most bytes alive at once.
The planner's logits term, per token x vocabulary, must match that peak.
"""

from __future__ import annotations

import importlib.util
import types
from typing import Any

import pytest

from kubetune.plan import Setup, estimate, from_config

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llamafactory", "trl", "peft")),
        reason="needs LLaMA-Factory, TRL and peft (the train extra)",
    ),
]

TINY = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
    "tie_word_embeddings": False,
}
PAIRS, SEQ = 2, 64


def _peak_logits_bytes(loss_type: str) -> tuple[float, int]:
    import torch
    from llamafactory.train.dpo.trainer import CustomDPOTrainer
    from llamafactory.train.kto.trainer import CustomKTOTrainer
    from peft import LoraConfig, get_peft_model
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import DPOTrainer, KTOTrainer

    kto = loss_type == "kto"
    rows = 2 * PAIRS  # dpo: chosen and rejected rows in one batch; kto: desirable and undesirable examples
    tokens = rows * SEQ
    unit = tokens * TINY["vocab_size"]
    params: set[int] = set()

    class Live(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.refs: dict[int, tuple[Any, int]] = {}
            self.peak = 0

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if (
                    isinstance(t, torch.Tensor)
                    and t.untyped_storage().nbytes() >= unit
                    and t.untyped_storage().data_ptr() not in params
                ):
                    st = t.untyped_storage()
                    self.refs[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
            self.peak = max(self.peak, sum(n for ref, n in self.refs.values() if not ref.expired()))
            return out

    torch.manual_seed(0)
    config = Qwen2Config(**{k: v for k, v in TINY.items() if k != "model_type"}, max_position_embeddings=256)
    model = get_peft_model(
        Qwen2ForCausalLM(config).to(torch.bfloat16), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    )
    params.update(p.untyped_storage().data_ptr() for p in model.parameters())
    ids = torch.randint(0, TINY["vocab_size"], (rows, SEQ), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    if kto:  # KTO's KL batch (mismatched completions, as long) and the desirable tags
        kl = torch.randint(0, TINY["vocab_size"], (rows, SEQ), generator=torch.Generator().manual_seed(2))
        batch.update(
            kl_input_ids=kl,
            kl_attention_mask=torch.ones_like(kl),
            kl_labels=kl.clone(),
            kto_tags=torch.tensor([True, False] * PAIRS),
        )
    reference = loss_type not in ("orpo", "simpo")
    trainer = types.SimpleNamespace(
        finetuning_args=types.SimpleNamespace(use_ref_model=reference),
        loss_type=loss_type,
        ld_alpha=None,
        ref_model=None,
        accelerator=types.SimpleNamespace(
            unwrap_model=lambda m: m, device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x
        ),
        ftx_gamma=0.0,
        bco_gemma=0.0,
        beta=0.1,
        simpo_gamma=0.5,
        label_smoothing=0.0,
        reference_free=False,
        f_divergence_type="reverse_kl",
        f_divergence_params={},
        use_weighting=False,
        args=types.SimpleNamespace(rpo_alpha=None, loss_weights=None, use_weighting=False),
        desirable_weight=1.0,
        undesirable_weight=1.0,
        calculate_KL=True,
        aux_loss_enabled=False,
    )
    if kto:
        for name in ("forward", "concatenated_forward", "compute_reference_log_probs", "get_batch_loss_metrics"):
            setattr(trainer, name, types.MethodType(getattr(CustomKTOTrainer, name), trainer))
        trainer.kto_loss = types.MethodType(KTOTrainer.kto_loss, trainer)
    else:
        for name in (
            "concatenated_forward",
            "compute_reference_log_probs",
            "compute_preference_loss",
            "get_batch_loss_metrics",
            "simpo_loss",
        ):
            setattr(trainer, name, types.MethodType(getattr(CustomDPOTrainer, name), trainer))
        trainer.dpo_loss = types.MethodType(DPOTrainer.dpo_loss, trainer)
    mode = Live()
    with mode:
        loss, _ = trainer.get_batch_loss_metrics(model, dict(batch))
        loss.backward()
    return mode.peak / unit, tokens


@pytest.mark.parametrize("loss_type", ["sigmoid", "simpo", "kto"])
def test_dpo_logits_term_matches_llamafactory_dpo_step(loss_type: str) -> None:
    measured, tokens = _peak_logits_bytes(loss_type)
    arch = from_config(TINY, "tiny", "test")
    if loss_type == "kto":  # one row per example
        s = Setup(
            method="lora",
            lora_targets=("q_proj", "v_proj"),
            micro_batch=2 * PAIRS,
            seq_len=SEQ,
            stage="kto",
            reference_forward=True,
        )
    else:
        s = Setup(
            method="lora",
            lora_targets=("q_proj", "v_proj"),
            micro_batch=PAIRS,
            seq_len=SEQ,
            rows_per_example=2,
            stage="dpo",
            reference_forward=loss_type not in ("orpo", "simpo"),
        )
    assert s.tokens == tokens
    predicted = estimate(arch, s).term("logits") / (tokens * arch.vocab)
    # get_batch_logps drops the last position (trainer_utils.py:609), so the log-softmax has SEQ - 1 rows:
    # the measurement is a little under the planner's whole-sequence figure, never over it.
    assert measured <= predicted
    assert measured == pytest.approx(predicted, rel=0.04), (
        f"{loss_type}: LLaMA-Factory keeps {measured:.3f} B per token x vocab, the planner counts {predicted}"
    )
