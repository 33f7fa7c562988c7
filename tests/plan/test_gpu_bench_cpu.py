"""bench/gpu/bench.py cannot rot: CI runs it for real on CPU with the tiny configuration."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.train,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("transformers", "peft", "tokenizers")),
        reason="needs the train extra",
    ),
]


@pytest.mark.timeout(600)  # six tiny trainings and nine planner cases (its own bound: 600 s)
def test_bench_runs_on_cpu_and_reports_sane_numbers(tmp_path: Path) -> None:
    check_bench(tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.timeout(600)  # the tiny configuration on a GPU, with CUDA start-up and kernel warm-up
def test_bench_runs_on_the_gpu_and_reports_sane_numbers(tmp_path: Path) -> None:
    """The same tiny bench where it is meant to run (skipped without a CUDA device; CI=true allows that skip only)."""
    check_bench(tmp_path, "cuda")


def check_bench(tmp_path: Path, device: str) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/gpu/bench.py"), "--tiny", "--device", device, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(600),
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tok/s" in proc.stdout and "planner case" in proc.stdout
    report = json.loads(out.read_text())
    names = [t["name"] for t in report["throughput"]]
    assert names == [
        "tutorial-full",
        "tutorial-lora",
        "kubetune-full",
        "kubetune-lora",
        "candidate-full",
        "candidate-lora",
    ]
    for t in report["throughput"]:
        assert t["tokens_per_s"] > 0 and t["non_padding_tokens"] > 0
        assert math.isfinite(t["final_loss"]) and 0 < t["final_loss"] < 2 * math.log(
            512
        )  # random init: about ln(vocab)
        assert 0 <= t["mfu"] < 1
    # packed rows carry more real tokens per micro-batch than padded ones
    by = {t["name"]: t for t in report["throughput"]}
    assert by["candidate-full"]["non_padding_tokens"] > by["kubetune-full"]["non_padding_tokens"]
    cases = {p["case"]: p for p in report["planner"]}
    assert set(cases) == {f"{m}-{g}" for m in ("full", "lora", "qlora") for g in ("gc", "nogc")} | {"dpo-lora-gc"}
    assert cases["dpo-lora-gc"]["stage"] == "dpo" and "loss" in cases["dpo-lora-gc"]  # the DPO step really ran
    for case, p in cases.items():
        assert "error" not in p, (case, p["error"])
        assert p["predicted_total_gib"] > p["predicted_allocated_gib"] > 0
    assert cases["full-nogc"]["terms"]["activations"] > cases["full-gc"]["terms"]["activations"]
    data = report["data"]
    assert (
        data["median_tokens"] < data["p90_tokens"] <= data["max_tokens"] <= report["cutoff"]
    )  # a length spread, not fixed rows
