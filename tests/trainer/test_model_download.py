"""The model stage downloads only what training needs, filtered by huggingface_hub's own
``filter_repo_objects`` (what ``snapshot_download`` applies to the repository listing)."""

from __future__ import annotations

import pytest

from kubetune.trainer.model import ignore_patterns

# meta-llama/Meta-Llama-3-8B-Instruct's files (names only).
LLAMA3 = [
    ".gitattributes",
    "LICENSE",
    "README.md",
    "USE_POLICY.md",
    "config.json",
    "generation_config.json",
    "model-00001-of-00004.safetensors",
    "model-00002-of-00004.safetensors",
    "model-00003-of-00004.safetensors",
    "model-00004-of-00004.safetensors",
    "model.safetensors.index.json",
    "original/consolidated.00.pth",
    "original/params.json",
    "original/tokenizer.model",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
BOTH_FORMATS = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "onnx/model.onnx",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "modeling_custom.py",
]
BIN_ONLY = [
    "config.json",
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
]


def _fetched(files: list[str]) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects  # noqa: PLC0415

    return sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns(files)))


@pytest.mark.parametrize(
    ("files", "skipped"),
    [
        (LLAMA3, ["original/consolidated.00.pth", "original/params.json", "original/tokenizer.model"]),
        (BOTH_FORMATS, ["flax_model.msgpack", "onnx/model.onnx", "pytorch_model.bin", "tf_model.h5"]),
        (BIN_ONLY, []),
    ],
    ids=["llama3-original", "safetensors-and-pickles", "bin-only"],
)
def test_download_skips_duplicate_and_foreign_weights(files: list[str], skipped: list[str]) -> None:
    fetched = _fetched(files)
    assert sorted(set(files) - set(fetched)) == skipped
    # Everything transformers and LLaMA-Factory load is still there.
    assert "config.json" in fetched and "tokenizer.json" in fetched
    assert any(f.endswith((".safetensors", ".bin")) for f in fetched)
    assert all(f in fetched for f in files if f.endswith((".py", "tokenizer_config.json", ".index.json")))
