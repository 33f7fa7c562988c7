"""Which checkpoint a restarted pod resumes from."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune.trainer import checkpoints
from kubetune.trainer.train import quarantine_incomplete


def _checkpoint(
    root: Path, step: int, *, state: bool = True, weights: str = "adapter_model.safetensors", optimizer: bool = True
) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if weights:
        (folder / weights).write_bytes(b"w")
    if optimizer:
        (folder / "optimizer.pt").write_bytes(b"o")
    if state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 100}))
    return folder


def test_newest_complete_skips_a_checkpoint_killed_while_saving(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 10)
    good = _checkpoint(tmp_path, 20, weights="model.safetensors")
    _checkpoint(tmp_path, 30, state=False)  # killed before trainer_state.json
    _checkpoint(tmp_path, 40, optimizer=False)  # killed before the optimizer state
    (tmp_path / "checkpoint-50").mkdir()  # killed right after mkdir
    assert checkpoints.newest_complete(tmp_path) == good


def test_numeric_not_lexical_order_and_state_must_match_folder(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 9)
    newest = _checkpoint(tmp_path, 100)
    assert checkpoints.newest_complete(tmp_path) == newest
    (newest / "trainer_state.json").write_text('{"global_step": 9')  # truncated JSON
    assert checkpoints.newest_complete(tmp_path) == tmp_path / "checkpoint-9"


def test_deepspeed_optimizer_shards_count_and_weights_only_jobs_need_no_optimizer(tmp_path: Path) -> None:
    ds = _checkpoint(tmp_path, 5, optimizer=False)
    assert checkpoints.newest_complete(tmp_path) is None
    (ds / "global_step5").mkdir()
    (ds / "latest").write_text("global_step5")
    assert checkpoints.newest_complete(tmp_path) == ds
    only_model = _checkpoint(tmp_path, 6, optimizer=False)
    assert checkpoints.newest_complete(tmp_path, needs_optimizer=False) == only_model


def test_no_output_folder_means_a_fresh_start(tmp_path: Path) -> None:
    assert checkpoints.newest_complete(tmp_path / "missing") is None


def test_incomplete_checkpoints_are_renamed_aside_never_deleted(tmp_path: Path) -> None:
    keep = _checkpoint(tmp_path, 10)
    broken = _checkpoint(tmp_path, 20, state=False)
    moved = quarantine_incomplete(tmp_path, {})
    assert [m.name.startswith(".incomplete-checkpoint-20-") for m in moved] == [True]
    assert not broken.exists() and (moved[0] / "adapter_model.safetensors").is_file()
    assert keep.is_dir()
