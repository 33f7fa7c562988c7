"""``kubetune run --local`` and ``kubetune chat`` as a user runs them: the CLI, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.localrunlib import kubetune, run_local
from tests.support.trainerlib import isolated_env


@pytest.fixture(scope="module")
def assets(tiny_assets: TinyAssets) -> TinyAssets:
    return tiny_assets  # the session's (tests/conftest.py)


@pytest.mark.slow
@pytest.mark.train
def test_run_local_trains_and_says_where_the_results_are_then_chat_answers(tmp_path: Path, assets: TinyAssets) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(tiny_job("local-lora", assets, method="lora", max_steps=5)))
    env = isolated_env(tmp_path / "env")
    result = run_local(job_file, env, tmp_path, 300, models=assets.models_dir, datasets=assets.datasets_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_dir = tmp_path / "out" / "default" / "local-lora"
    assert f"LoRA adapter: {job_dir / 'adapter_model.safetensors'}" in result.stdout
    assert f"loss plot: {job_dir / 'training_loss.png'}" in result.stdout
    assert (job_dir / "adapter_model.safetensors").is_file() and (job_dir / "training_loss.png").is_file()
    assert "step 5/5" in result.stdout  # progress from the trainer's progress lines
    assert "kubetune.progress" not in result.stdout  # the protocol is rendered, not dumped
    # The same renderer output a pod would mount.
    config = tmp_path / "out" / ".kubetune" / "default-local-lora" / "config"
    train_yaml = yaml.safe_load((config / "train.yaml").read_text())
    assert train_yaml["output_dir"] == str(job_dir) and train_yaml["model_name_or_path"] == str(
        assets.models_dir / assets.model_path
    )

    chat = kubetune(
        [
            "chat",
            str(assets.models_dir / assets.model_path),
            "--adapter",
            str(job_dir),
            "--template",
            "qwen",
            "--message",
            "Say hello.",
            "--max-new-tokens",
            "4",
        ],
        env,
        tmp_path,
        300,
    )
    assert chat.returncode == 0, chat.stderr[-3000:]


def test_run_without_local_points_to_kubectl(tmp_path: Path) -> None:
    result = kubetune(["run", "job.yaml"], dict(os.environ), tmp_path, 300)
    assert result.returncode == 2 and "kubectl apply" in result.stdout


def test_run_local_refuses_an_invalid_job_with_the_field_path(tmp_path: Path) -> None:
    job = tiny_job("bad-job", TinyAssets(tmp_path, tmp_path, tmp_path, "m", "d.jsonl"))
    job["spec"]["training"]["precision"] = "bf16"  # no GPU in the spec
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = kubetune(["run", "--local", "job.yaml"], dict(os.environ), tmp_path, 300)
    assert result.returncode == 1
    assert "spec.training.precision" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_run_local_refuses_multi_node_jobs(tmp_path: Path) -> None:
    job = tiny_job("two-nodes", TinyAssets(tmp_path, tmp_path, tmp_path, "m", "d.jsonl"))
    job["spec"]["resources"]["nodes"] = 2
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = kubetune(["run", "--local", "job.yaml"], dict(os.environ), tmp_path, 300)
    assert result.returncode == 1 and "nodes: 1" in result.stderr


def test_cli_import_stays_light() -> None:
    # `kubetune render` must not pay for torch: localrun is imported by the CLI at start.
    code = (
        "import sys, kubetune.cli, kubetune.localrun; heavy = [m for m in ('torch', 'transformers', "
        "'llamafactory') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
