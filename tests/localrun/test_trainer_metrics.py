"""The trainer's Prometheus metrics: scraped over HTTP during a real ``run --local``, parsed with
prometheus_client's own parser (what Prometheus accepts), and the pure bookkeeping behind them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubetune.api import Progress
from kubetune.trainer import metrics
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.model_configs import QWEN2_0_5B
from tests.support.trainerlib import free_port, isolated_env
from tests.support.kt_time import scaled


def _samples(text: str) -> dict[str, tuple[dict[str, str], float]]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = (dict(sample.labels), sample.value)
    return out


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(300)  # 60 training steps scraped while they run (its own deadline: 240 s)
def test_metrics_are_scraped_during_run_local(tmp_path: Path, tiny_assets: TinyAssets) -> None:
    assets = tiny_assets
    job = tiny_job("metered", assets, method="full", max_steps=60)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    port = free_port()
    env = isolated_env(tmp_path / "env")
    argv = [
        sys.executable,
        "-m",
        "kubetune",
        "run",
        "--local",
        "job.yaml",
        "--output",
        "out",
        "--metrics-port",
        str(port),
    ]
    argv += ["--datasets", str(assets.datasets_dir), "--models", str(assets.models_dir)]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, tuple[dict[str, str], float]] = {}
    deadline = time.monotonic() + scaled(240)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310 - loopback
                    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    seen = _samples(resp.read().decode())
            except OSError:
                pass
            if "kubetune_trainer_tokens_per_second" in seen and "kubetune_trainer_samples_per_second" in seen:
                break
            time.sleep(0.2)
    finally:
        out = proc.communicate(timeout=scaled(300))[0]
    assert proc.returncode == 0, out[-3000:]
    assert "kubetune_trainer_tokens_per_second" in seen, (sorted(seen), out[-2000:])
    labels, tokens_per_s = seen["kubetune_trainer_tokens_per_second"]
    assert labels == {"finetunejob": "metered", "finetunejob_namespace": "default"}
    assert tokens_per_s > 0
    loss = seen["kubetune_trainer_loss"][1]
    assert 0 < loss < 20
    step, total = seen["kubetune_trainer_step"][1], seen["kubetune_trainer_total_steps"][1]
    assert 1 <= step <= total == 60
    assert seen["kubetune_trainer_samples_per_second"][1] > 0 and seen["kubetune_trainer_tokens_total"][1] > 0
    assert "kubetune_trainer_mfu_ratio" not in seen  # no GPU, no KUBETUNE_PEAK_TFLOPS: no made-up MFU
    assert "kubetune_trainer_peak_gpu_memory_bytes" not in seen  # CPU: LLaMA-Factory reports 0


def _progress(step: int, loss: float) -> Progress:
    return Progress(step=step, total_steps=100, percent=step, loss=loss, learning_rate=1e-4, epoch=0.5, eta_seconds=90)


def test_rates_come_from_the_interval_between_records() -> None:
    now = [100.0]
    m = metrics.TrainerMetrics(
        "j",
        "ns",
        samples_per_step=8,
        parameters=1_000_000,
        devices=2,
        peak_flops=1e12,
        clock=lambda: now[0],
        wall=lambda: 1.7e9,
    )
    m.observe(
        {"current_steps": 10, "total_tokens": 5000, "throughput": 400.0, "vram_allocated": 1.5}, _progress(10, 2.0)
    )
    first = _samples(m.exposition())
    assert (
        first["kubetune_trainer_tokens_per_second"][1] == 400.0
    )  # LLaMA-Factory's own average until an interval exists
    now[0] = 102.0
    m.observe({"current_steps": 20, "total_tokens": 9000, "vram_allocated": 1.0}, _progress(20, 1.5))
    s = _samples(m.exposition())
    assert s["kubetune_trainer_tokens_per_second"][1] == 2000.0
    assert s["kubetune_trainer_samples_per_second"][1] == 40.0  # 10 steps * 8 samples / 2 s
    assert s["kubetune_trainer_mfu_ratio"][1] == pytest.approx(6 * 1e6 * 2000 / (2 * 1e12))
    assert s["kubetune_trainer_peak_gpu_memory_bytes"][1] == 1.5 * 1024**3  # a peak never goes down
    assert s["kubetune_trainer_loss"][1] == 1.5 and s["kubetune_trainer_eta_seconds"][1] == 90
    assert s["kubetune_trainer_up"] == ({"finetunejob": "j", "finetunejob_namespace": "ns"}, 1.0)


def test_label_values_are_escaped() -> None:
    m = metrics.TrainerMetrics('we"ird\\', "ns")
    m.observe({"current_steps": 1}, _progress(1, 1.0))
    assert _samples(m.exposition())["kubetune_trainer_loss"][0]["finetunejob"] == 'we"ird\\'


def test_parameter_count_of_a_known_config() -> None:
    # Qwen2-0.5B: 494M parameters (hidden 896, 24 layers, 14 heads / 2 KV, intermediate 4864, vocab 151936, tied).
    assert metrics.parameter_count(QWEN2_0_5B) == pytest.approx(494e6, rel=0.02)
    assert metrics.parameter_count({"hidden_size": 8}) is None


def test_peak_flops_from_env_or_the_gpu_model(tmp_path: Path) -> None:
    assert metrics.peak_flops_per_device({"KUBETUNE_PEAK_TFLOPS": "100"}) == 1e14
    info = tmp_path / "0000:00:04.0"
    info.mkdir()
    (info / "information").write_text("Model:           NVIDIA H100 80GB HBM3\nIRQ: 10\n")
    assert metrics.peak_flops_per_device({}, str(tmp_path / "*" / "information")) == 989e12
    assert metrics.peak_flops_per_device({}, str(tmp_path / "none" / "information")) is None


def test_metrics_are_off_without_a_port() -> None:
    assert metrics.train_args({}) == {} and metrics.child_env({"A": "1"}) == {"A": "1"}
    on = {"KUBETUNE_METRICS_PORT": "9464"}
    assert metrics.train_args(on) == {"include_num_input_tokens_seen": "non_padding"}
    assert metrics.child_env(on)["RECORD_VRAM"] == "1"
