"""Helpers for the trainer tests: render a FineTuneJob the way the operator would, for
folders under a test's tmp dir, and run ``python -m kubetune.trainer`` with a pod's environment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api import FineTuneJob, contract
from kubetune.render import RenderOptions, render
from kubetune.trainer.tiny import TinyAssets, build_assets

__all__ = [
    "Pod",
    "TinyAssets",
    "build_shared_assets",
    "free_port",
    "make_pod",
    "progress_lines",
    "run_trainer",
    "stage_lines",
]


def build_shared_assets(root: Path) -> TinyAssets:
    # Building the model needs the heavy stack; do it in a child so the test
    # process itself stays light (and its import time stays honest).
    code = (
        "import sys; from pathlib import Path; from kubetune.trainer.tiny import build_assets; "
        "build_assets(Path(sys.argv[1]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(root)], check=True, env=isolated_env(root / "env"), capture_output=True
    )
    return build_assets(root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_env(root: Path, extensions: Path | None = None) -> dict[str, str]:
    """Caches and temp files inside the test's folder; the Hub unreachable on purpose."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "mpl", "hf"):
        (root / sub).mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBETUNE_", "PET_", "OMPI_"))
        and k
        not in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "FORCE_TORCHRUN",
            "NNODES",
            "NODE_RANK",
            "NPROC_PER_NODE",
        )
    }
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(root / "hf"),
        TMPDIR=str(root / "tmp"),
        MPLCONFIGDIR=str(root / "mpl"),
        TORCH_EXTENSIONS_DIR=str(extensions or root / "torch_extensions"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass(frozen=True)
class Pod:
    """A rendered job: its config folder, its job output folder and a pod's environment."""

    job: FineTuneJob
    config_dir: Path
    output_dir: Path
    env: dict[str, str]
    files: dict[str, str]


def pod_layout(root: Path, assets: TinyAssets) -> contract.Layout:
    """A pod's mounts as folders: config, outputs and scratch under ``root``, the assets' datasets and models."""
    return contract.Layout(
        config_dir=str(root / "config"),
        datasets_dir=str(assets.datasets_dir),
        models_dir=str(assets.models_dir),
        outputs_dir=str(root / "outputs"),
        scratch_dir=str(root / "scratch"),
    )


def make_pod(root: Path, manifest: dict[str, Any], assets: TinyAssets, *, extensions: Path | None = None) -> Pod:
    job = FineTuneJob.from_api(manifest)
    layout = pod_layout(root, assets)
    rendered = render(job, RenderOptions(layout=layout))
    (root / "config").mkdir(parents=True, exist_ok=True)
    for name, text in rendered.files.items():
        (root / "config" / name).write_text(text, encoding="utf-8")
    env = isolated_env(root / "env", extensions)
    # The renderer's own variables (config dir, output dir, volumes, NPROC_PER_NODE).
    for key, value in _rendered_env(rendered.workload).items():
        # KUBETUNE_METRICS_PORT: a pod port on every address; tests that want metrics set it on loopback themselves.
        if key not in (
            "HOME",
            "TMPDIR",
            "TORCH_EXTENSIONS_DIR",
            "MPLCONFIGDIR",
            "TRITON_CACHE_DIR",
            "HF_HOME",
            contract.ENV_METRICS_PORT,
        ):
            env[key] = value
    return Pod(job, root / "config", Path(layout.job_output_dir(job.namespace, job.name)), env, dict(rendered.files))


def _rendered_env(obj: Any) -> dict[str, str]:
    if isinstance(obj, dict):
        for c in obj.get("containers", []) or []:
            env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
            if contract.ENV_CONFIG_DIR in env:
                return env
        for v in obj.values():
            found = _rendered_env(v)
            if found:
                return found
    if isinstance(obj, list):
        for v in obj:
            found = _rendered_env(v)
            if found:
                return found
    return {}


def run_trainer(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.trainer"],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def _prefixed(out: str, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(prefix) :]) for line in out.splitlines() if line.startswith(prefix)]


def progress_lines(out: str) -> list[dict[str, Any]]:
    return _prefixed(out, contract.PROGRESS_PREFIX)


def stage_lines(out: str) -> list[dict[str, Any]]:
    return _prefixed(out, contract.STAGE_PREFIX)


def losses(output_dir: Path) -> list[float]:
    records = [json.loads(l) for l in (output_dir / "trainer_log.jsonl").read_text().splitlines() if l.strip()]
    return [r["loss"] for r in records if "loss" in r]


def fake_checkpoint(folder: Path, step: int, *, size: int = 1000) -> Path:
    """What transformers leaves: weights, optimizer, and trainer_state.json with the step (the object-store
    tests of every store upload and restore these)."""
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"w" * size)
    (ckpt / "optimizer.pt").write_bytes(b"o" * size)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def fake_checkpoint_sizes(step: int, *, size: int = 1000) -> dict[str, int]:
    """The files :func:`fake_checkpoint` writes for ``step`` and their sizes, as a completion marker lists them."""
    return {
        "adapter_model.safetensors": size,
        "optimizer.pt": size,
        "trainer_state.json": len(json.dumps({"global_step": step})),
    }
