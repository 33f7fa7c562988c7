"""The run record: ``kubetune-run.json`` in the job's output folder.

What was trained, with which arguments, on which image and package versions,
when, and how it ended: enough to reproduce a model, or to tell two models
apart, months later.  Written by global rank 0 on success *and* failure, via
an atomic rename.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune.api import contract

from .config import JobConfig
from .fsutil import write_text_atomic

PACKAGES = (
    "kubetune",
    "llamafactory",
    "transformers",
    "torch",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "deepspeed",
    "bitsandbytes",
)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (no heavy imports)."""
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read(output_dir: Path) -> dict[str, Any] | None:
    value = _json_file(output_dir / contract.RUN_RECORD_FILE)
    return value if isinstance(value, dict) else None


def outputs(output_dir: Path) -> dict[str, str]:
    """Where the user finds results (only what exists)."""
    candidates = {
        "adapter": output_dir / "adapter_model.safetensors",
        "model": output_dir / "model.safetensors",
        "lossPlot": output_dir / "training_loss.png",
        "merged": output_dir / contract.MERGED_SUBDIR,
        "trainerLog": output_dir / "trainer_log.jsonl",
    }
    return {k: str(v) for k, v in candidates.items() if v.exists()}


def write(
    cfg: JobConfig, *, image: str | None, started_at: str, exit_code: int, message: str, facts: dict[str, Any]
) -> Path:
    path = cfg.output_dir / contract.RUN_RECORD_FILE
    record = {
        "apiVersion": contract.API_VERSION,
        "kind": "FineTuneJobRun",
        "job": {"name": cfg.job.name, "namespace": cfg.job.namespace, "uid": cfg.job.metadata.uid},
        "spec": cfg.job.spec.to_api(),
        "trainArgs": cfg.train_args,
        "configHash": facts.get("configHash"),
        "attention": facts.get("attention"),
        "image": image,
        "packages": versions(),
        "startedAt": started_at,
        "finishedAt": now(),
        "outcome": "Succeeded" if exit_code == contract.EXIT_OK else "Failed",
        "exitCode": exit_code,
        "message": message,
        "trainingCompleted": bool(facts.get("trainingCompleted")),
        "stages": facts.get("stages", {}),
        "metrics": _json_file(cfg.output_dir / "all_results.json"),
        "evaluation": facts.get("evaluation"),
        "outputs": outputs(cfg.output_dir),
    }
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path
