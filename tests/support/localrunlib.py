"""Helpers for the ``kubetune run --local`` tests: the CLI run as a user runs it, in a subprocess, and
the checks of what a run with object-store outputs leaves in its bucket (S3 or Azure Blob alike)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubetune.trainer.tiny import TinyAssets, tiny_job

KUBETUNE = [sys.executable, "-m", "kubetune"]


def kubetune(
    args: list[str], env: dict[str, str] | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -m kubetune ARGS`` in ``cwd``, its output captured as text."""
    return subprocess.run([*KUBETUNE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_local(
    job_file: str | Path,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    *,
    models: Path,
    datasets: Path | None = None,
    output: str = "out",
) -> subprocess.CompletedProcess[str]:
    """``kubetune run --local JOB_FILE --output OUTPUT [--datasets D] --models M``."""
    args = ["run", "--local", str(job_file), "--output", output]
    if datasets is not None:
        args += ["--datasets", str(datasets)]
    return kubetune([*args, "--models", str(models)], env, cwd, timeout)


def upload_tiny_assets(put: Callable[[str, str, bytes], None], assets: TinyAssets) -> None:
    """The tiny base model under ``tiny-models/tiny/`` and its dataset as ``tiny-data/chat/train.jsonl``,
    through ``put(bucket, key, content)``."""
    model_dir = assets.models_dir / assets.model_path
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        put("tiny-models", f"tiny/{f.relative_to(model_dir).as_posix()}", f.read_bytes())
    put("tiny-data", "chat/train.jsonl", (assets.datasets_dir / assets.dataset_path).read_bytes())


def bucket_lora_job(name: str, assets: TinyAssets, scheme: str, object_store: dict[str, Any]) -> dict[str, Any]:
    """A 4-step LoRA job (a checkpoint every 2 steps) whose model, dataset and outputs are the buckets
    :func:`upload_tiny_assets` filled (``tiny-runs`` for the outputs), under ``scheme``:// ."""
    job = tiny_job(name, assets, method="lora", max_steps=4, save_steps=2)
    job["spec"]["model"] = {"uri": f"{scheme}://tiny-models/tiny/", "template": job["spec"]["model"]["template"]}
    job["spec"]["datasets"] = [
        {"name": "tiny_chat", "uri": f"{scheme}://tiny-data/chat/train.jsonl", "format": "sharegpt"}
    ]
    job["spec"]["storage"] = {
        "outputs": {"claimName": "local-outputs", "uri": f"{scheme}://tiny-runs/runs/"},
        "objectStore": object_store,
    }
    return job


def assert_uploaded_run(
    objects: dict[str, int], read: Callable[[str], bytes], base: str, steps: Iterable[int], local: Path
) -> None:
    """What a finished run left under the prefix ``base`` (``objects``: key -> size, ``read``: a key's
    content): every checkpoint with its marker listing exactly its objects, the adapter and the
    trainer log, no working state, a run record of a completed training, the job's marker listing the
    adapter and the record, and the same adapter as the local copy ``local``."""
    for step in steps:
        marker = json.loads(read(f"{base}checkpoint-{step}/_KUBETUNE_COMPLETE"))
        listed = {f"{base}checkpoint-{step}/{name}": size for name, size in marker["files"].items()}
        assert {
            k: v
            for k, v in objects.items()
            if k.startswith(f"{base}checkpoint-{step}/") and not k.endswith("_KUBETUNE_COMPLETE")
        } == listed
        assert f"{base}checkpoint-{step}/adapter_model.safetensors" in listed
    assert f"{base}adapter_model.safetensors" in objects and f"{base}trainer_log.jsonl" in objects
    assert not any(k.startswith(f"{base}data/") for k in objects)  # working state stays local
    record = json.loads(read(f"{base}kubetune-run.json"))
    assert record["exitCode"] == 0 and record["trainingCompleted"] is True
    done = json.loads(read(f"{base}_KUBETUNE_COMPLETE"))
    assert "adapter_model.safetensors" in done["files"] and "kubetune-run.json" in done["files"]
    assert objects[f"{base}adapter_model.safetensors"] == local.stat().st_size
