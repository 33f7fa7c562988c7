"""Wall time and peak RSS of real CPU trainings through ``python -m kubetune.trainer``.

Prints one line per scenario (the same shapes the CI training tests use).  Figures,
not assertions: timing targets live here, never in tests.

    .venv/bin/python bench/train.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kubetune.api import FineTuneJob, contract
from kubetune.render import RenderOptions, render
from kubetune.trainer.tiny import build_assets, tiny_job

HERE = Path(__file__).resolve().parent


def _env(root: Path, rendered_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETUNE_", "PET_", "OMPI_"))}
    for sub in ("tmp", "mpl", "hf", "ext"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    env.update(rendered_env)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(root / "hf"),
        TMPDIR=str(root / "tmp"),
        MPLCONFIGDIR=str(root / "mpl"),
        TORCH_EXTENSIONS_DIR=str(root / "ext"),
    )
    env.pop("HOME", None)
    env.pop("KUBETUNE_METRICS_PORT", None)  # a pod's port on every address: not on this machine
    return env


def _pod_env(workload: Any) -> dict[str, str]:
    if isinstance(workload, dict):
        for c in workload.get("containers", []) or []:
            env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
            if contract.ENV_CONFIG_DIR in env:
                return env
        for v in workload.values():
            if found := _pod_env(v):
                return found
    if isinstance(workload, list):
        for v in workload:
            if found := _pod_env(v):
                return found
    return {}


def measure(name: str, manifest: dict[str, Any], assets: Any, root: Path) -> dict[str, Any]:
    job = FineTuneJob.from_api(manifest)
    layout = contract.Layout(
        str(root / "config"), str(assets.datasets_dir), str(assets.models_dir), str(root / "out"), str(root / "scratch")
    )
    rendered = render(job, RenderOptions(layout=layout))
    (root / "config").mkdir(parents=True)
    for file, text in rendered.files.items():
        (root / "config" / file).write_text(text)
    env = _env(root, _pod_env(rendered.workload))
    out = subprocess.run(
        [sys.executable, str(HERE / "train_rss.py"), sys.executable, "-m", "kubetune.trainer"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout)
    log = root / "out" / job.namespace / job.name / "trainer_log.jsonl"
    losses = [json.loads(l).get("loss") for l in log.read_text().splitlines()] if log.exists() else []
    losses = [x for x in losses if x is not None]
    if losses:
        figures["loss"] = f"{losses[0]:.3f} -> {losses[-1]:.3f}"
    return {"scenario": name, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kubetune-bench-"))
    assets = build_assets(work / "assets")
    scenarios = {
        "full, 30 steps": tiny_job("b-full", assets, method="full", max_steps=30),
        "lora, 8 steps + export": tiny_job("b-lora", assets, method="lora", max_steps=8, export=True),
        "qlora 4-bit, 5 steps": tiny_job("b-qlora", assets, method="qlora", max_steps=5),
    }
    for i, (name, manifest) in enumerate(scenarios.items()):
        print(json.dumps(measure(name, manifest, assets, work / f"s{i}")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
