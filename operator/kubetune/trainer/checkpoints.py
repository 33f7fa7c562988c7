"""Finding the checkpoint to resume from after a restart.

transformers writes a checkpoint in several steps (weights, optimizer,
scheduler, RNG states) and ``trainer_state.json`` last.  A pod killed while
saving leaves a ``checkpoint-N`` folder without it, or with weights only;
resuming from that would crash or silently restart the optimizer.  So we take
the newest checkpoint that is *complete*: a readable trainer state whose
``global_step`` matches the folder, model weights, and the optimizer state
(unless the job saves weights only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _has_optimizer(folder: Path) -> bool:
    if (folder / "optimizer.pt").is_file() or (folder / "optimizer.bin").is_file():
        return True
    # DeepSpeed keeps optimizer shards in global_stepN/ next to a `latest` file.
    return (folder / "latest").is_file() and any(
        p.is_dir() and p.name.startswith("global_step") for p in folder.iterdir()
    )


def is_complete(folder: Path, *, needs_optimizer: bool = True) -> bool:
    match = _CHECKPOINT.match(folder.name)
    if not match or not folder.is_dir():
        return False
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != int(match.group(1)):
        return False
    if not any((folder / w).is_file() for w in _WEIGHTS):
        return False
    return _has_optimizer(folder) or not needs_optimizer


def newest_complete(output_dir: Path, *, needs_optimizer: bool = True) -> Path | None:
    """The complete checkpoint with the highest step under ``output_dir``, if any."""
    if not output_dir.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := _CHECKPOINT.match(p.name)) and is_complete(p, needs_optimizer=needs_optimizer)
    ]
    return max(found)[1] if found else None
