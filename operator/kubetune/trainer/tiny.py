"""Tiny, local, random assets: a model, a tokenizer and a dataset that train in seconds on a CPU.

``kubetune demo`` and the tests use them to run the real LLaMA-Factory
pipeline without a GPU, a cluster or the Hugging Face Hub.  The model is a
randomly initialised ``Qwen2ForCausalLM`` (2 layers, hidden size 64) and the
tokenizer a byte-level BPE trained on the dataset itself, with Qwen's ChatML
special tokens, so LLaMA-Factory's ``qwen`` template applies unchanged.  The
dataset is a fixed set of question/answer pairs, repeated: a model that
learns anything at all drives the loss down quickly, which is what a demo
and a "does it learn" test need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api import contract

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATE = "qwen"
"""The LLaMA-Factory chat template matching the tiny tokenizer."""

QA_PAIRS: tuple[tuple[str, str], ...] = (
    ("What does kubetune do?", "It fine-tunes language models on Kubernetes."),
    ("Which library trains the model?", "LLaMA-Factory does the training."),
    ("What is LoRA?", "LoRA trains small low-rank adapters instead of all weights."),
    ("What is QLoRA?", "QLoRA trains adapters on a 4-bit quantized base model."),
    ("Where do checkpoints go?", "Checkpoints go to the outputs volume."),
    ("How is progress reported?", "The trainer prints progress lines that the operator reads."),
    ("What does export do?", "Export merges the adapter into the base model."),
    ("What is ZeRO stage 2?", "ZeRO-2 shards optimizer states and gradients across GPUs."),
    ("Say hello.", "Hello from a tiny model!"),
    ("What colour is the sky?", "The sky is blue."),
    ("Count to five.", "One, two, three, four, five."),
    ("Name a prime number.", "Seven is a prime number."),
)


def sharegpt_records(n: int = 48, *, system: bool = True) -> list[dict[str, Any]]:
    """``n`` ShareGPT conversations (LLaMA-Factory's default conversations/from/value/human/gpt)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        q, a = QA_PAIRS[i % len(QA_PAIRS)]
        turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        if system and i % 3 == 0:
            turns.insert(0, {"from": "system", "value": "You are a helpful assistant."})
        out.append({"conversations": turns})
    return out


def _rejected(i: int) -> str:
    """A wrong answer for question i: another question's answer."""
    return QA_PAIRS[(i + 5) % len(QA_PAIRS)][1]


def preference_records(n: int = 48, *, fmt: str = "sharegpt") -> list[dict[str, Any]]:
    """``n`` ranking records (LLaMA-Factory's layout): a prompt, a ``chosen`` and a ``rejected`` answer.

    ShareGPT: ``conversations`` ends with the question and the answers are turn objects;
    Alpaca: ``instruction`` plus answer strings."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        q, a = QA_PAIRS[i % len(QA_PAIRS)]
        if fmt == "alpaca":
            out.append({"instruction": q, "input": "", "chosen": a, "rejected": _rejected(i)})
        else:
            out.append(
                {
                    "conversations": [{"from": "human", "value": q}],
                    "chosen": {"from": "gpt", "value": a},
                    "rejected": {"from": "gpt", "value": _rejected(i)},
                }
            )
    return out


def kto_records(n: int = 48) -> list[dict[str, Any]]:
    """``n`` ShareGPT conversations with a boolean ``label``: true for the right answer, false for a wrong one."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        q, a = QA_PAIRS[i % len(QA_PAIRS)]
        good = i % 2 == 0
        out.append(
            {
                "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a if good else _rejected(i)}],
                "label": good,
            }
        )
    return out


def _corpus() -> list[str]:
    texts = [t for pair in QA_PAIRS for t in pair]
    texts += ["system", "user", "assistant", "You are a helpful assistant.", "human", "gpt"]
    return texts * 4


def build_tokenizer(out_dir: Path, vocab_size: int = 512) -> Any:
    """A byte-level BPE with ChatML special tokens, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=512,
    )
    tok.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return tok


def build_model(out_dir: Path, *, seed: int = 0) -> Path:
    """A random Qwen2 causal LM and its tokenizer in ``out_dir`` (about 0.5 MB)."""
    import torch  # noqa: PLC0415
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415

    tok = build_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, max_new_tokens=32
    )
    from .heavy import skip_unused_deepspeed  # noqa: PLC0415

    skip_unused_deepspeed()  # save_pretrained would import DeepSpeed for nothing (kubetune.trainer.heavy)
    model.save_pretrained(str(out_dir))
    return out_dir


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@dataclass(frozen=True)
class TinyAssets:
    """Folders laid out like the job's volumes: ``models/<model>``, ``datasets/<file>``."""

    root: Path
    models_dir: Path
    datasets_dir: Path
    model_path: str
    """Relative to models_dir (spec.model.path)."""
    dataset_path: str
    """Relative to datasets_dir (spec.datasets[].path)."""


def build_assets(root: Path, *, records: int = 48) -> TinyAssets:
    """Model, tokenizer and a ShareGPT dataset under ``root`` (reused when already there)."""
    models_dir, datasets_dir = root / "models", root / "datasets"
    model_dir = models_dir / "tiny-qwen2"
    if not (model_dir / "config.json").is_file():
        build_model(model_dir)
    dataset = datasets_dir / "tiny-chat.jsonl"
    if not dataset.is_file():
        write_jsonl(dataset, sharegpt_records(records))
    return TinyAssets(root, models_dir, datasets_dir, "tiny-qwen2", "tiny-chat.jsonl")


def tiny_job(
    name: str,
    assets: TinyAssets,
    *,
    method: str = "lora",
    max_steps: int = 20,
    learning_rate: float = 5e-3,
    export: bool = False,
    save_steps: int = 500,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A FineTuneJob for the tiny assets that trains on CPU (fp32, gpusPerNode 0)."""
    spec: dict[str, Any] = {
        "model": {"path": assets.model_path, "template": TEMPLATE},
        "datasets": [{"name": "tiny_chat", "path": assets.dataset_path, "format": "sharegpt"}],
        "method": method,
        "resources": {"gpusPerNode": 0},
        "training": {
            "maxSteps": max_steps,
            "learningRate": learning_rate,
            "perDeviceBatchSize": 4,
            "gradientAccumulationSteps": 1,
            "scheduler": "constant",
            "cutoffLength": 64,
            "precision": "fp32",
            "loggingSteps": 1,
            "saveSteps": save_steps,
            "gradientCheckpointing": False,
        },
        "storage": {"outputs": {"claimName": "local-outputs"}},
    }
    if method in ("lora", "qlora"):
        spec["lora"] = {"rank": 8, "targetModules": ["all"]}
    if method == "qlora":
        spec["quantization"] = {"bits": 4}
    if export:
        spec["export"] = {"enabled": True}
    spec.update(extra_spec or {})
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
