"""Resume only what this configuration wrote: the effective training configuration, hashed.

A FineTuneJob deleted and re-created under the same name with another spec
finds the old run's checkpoints in its output folder; resuming them would
continue the old optimizer state, schedule and data order under the new
settings.  So rank 0 records the effective configuration (every training
argument that changes what is learned, the data digest and the world size)
in ``kubetune-config.json`` before the first checkpoint, and the run record
carries its hash.  A later start that finds checkpoints made under another
configuration refuses, naming what differs.

Arguments that do not change the trained model (paths, logging, tracking,
checkpoint cadence and retention, worker counts, timeouts) are left out, so
changing them (e.g. ``runPolicy``, ``tracking``) never blocks a resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fsutil import write_text_atomic

CONFIG_FILE = "kubetune-config.json"

BOOKKEEPING_ARGS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "logging_steps",
        "report_to",
        "run_name",
        "plot_loss",
        "save_steps",
        "save_total_limit",
        "preprocessing_num_workers",
        "dataloader_num_workers",
        "ddp_timeout",
        "overwrite_cache",
        "tokenized_path",
        "resume_from_checkpoint",
    }
)
"""Training arguments that change neither the tokenised data nor what is learned: where outputs and the
tokenised cache go, logging and tracking, checkpoint cadence and retention, worker counts, timeouts.
Left out of this configuration's hash and of the tokenised cache's key (train.NOT_DATA)."""

NOT_TRAINING_STATE = BOOKKEEPING_ARGS | {"dataset_dir"}
"""Left out of the effective configuration: the bookkeeping, and the dataset folder's path (the data
digest stands for its contents)."""


def effective_config(train_args: Mapping[str, Any], *, data_digest: str, world_size: int) -> dict[str, Any]:
    conf = {k: v for k, v in sorted(train_args.items()) if k not in NOT_TRAINING_STATE}
    conf["kubetune.dataDigest"] = data_digest
    conf["kubetune.worldSize"] = world_size
    return conf


def config_hash(conf: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 8) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in keys if old.get(k) != new.get(k)]
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def has_checkpoints(output_dir: Path) -> bool:
    return output_dir.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint-") for p in output_dir.iterdir())


def check_and_record(output_dir: Path, conf: Mapping[str, Any]) -> str:
    """Refuse checkpoints of another configuration; record this one. Returns its hash."""
    digest = config_hash(conf)
    path = output_dir / CONFIG_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = None
    if has_checkpoints(output_dir):
        if not isinstance(stored, dict) or "hash" not in stored:
            raise ConfigError(
                f"{output_dir} holds checkpoints but no {CONFIG_FILE}, so kubetune cannot tell which configuration "
                "wrote them and will not resume them: move them away, or give the job a new name"
            )
        if stored["hash"] != digest:
            diff = "; ".join(differences(stored.get("config") or {}, conf))
            raise ConfigError(
                f"{output_dir} holds checkpoints of another training configuration ({diff}); resuming them would "
                "train the old run's optimizer state under new settings: give the job a new name (or move the old "
                "checkpoints away) to start afresh"
            )
        return digest
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        path, json.dumps({"hash": digest, "config": dict(conf)}, indent=2, sort_keys=True, default=str) + "\n"
    )
    return digest
