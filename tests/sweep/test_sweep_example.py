"""examples/sweep-lr.yaml: a realistic cluster sweep that `kubetune validate` accepts, whose trials are
valid FineTuneJobs, and whose extreme trial does not fit a GPU too small for it (the planner's check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from kubetune import sweep as engine
from kubetune.api.sweep import FineTuneSweep
from kubetune.render import validate_object

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sweep-lr.yaml"


def test_kubetune_validate_accepts_the_sweep_example() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune", "validate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"{EXAMPLE}: FineTuneSweep qwen-lr is valid; 2 parameter(s), algorithm tpe, earlyStopping median, "
        "up to 8 trials (2 at a time), objective minimize evalLoss"
    )


def test_the_examples_trials_are_valid_jobs_and_only_the_winner_is_served() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert "namespace" not in doc["metadata"]  # kubectl apply -n NS -f works
    sweep = FineTuneSweep.from_api(doc)
    trials = engine.next_trials(sweep.spec, [], 2, sweep.name)
    assert [t.name for t in trials] == ["qwen-lr-0", "qwen-lr-1"]
    for t in trials:
        body = {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": t.name},
            "spec": engine.trial_spec(sweep.spec, t),
        }
        job, problems = validate_object(body)
        assert job is not None and problems == [], problems
        assert job.spec.serve is None and job.spec.lora is not None and job.spec.lora.rank == t.parameters["lora.rank"]
        assert job.spec.training.learning_rate == t.parameters["training.learningRate"]
    assert engine.winner_spec(sweep.spec, trials[0])["serve"] == {"engine": "vllm", "gpus": 1, "maxModelLen": 4096}


def test_validate_refuses_the_example_on_a_gpu_too_small_for_its_ranges() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune", "validate", "--gpu-memory", "8", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert (
        f"{EXAMPLE}: spec.parameters: a trial with training.learningRate = 2e-05, "
        "lora.rank = 8 will not fit the GPUs: predicted peak" in proc.stderr
    )
