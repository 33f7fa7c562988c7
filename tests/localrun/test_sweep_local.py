"""``kubetune sweep --local`` as a user runs it: the CLI in a subprocess, real LLaMA-Factory trials on
the tiny model (tests/conftest.py's session fixture), one after another.

One sweep of 4 LoRA trials over the learning rate (6 steps each, evaluated during training every 2
steps): the median pruner stops at least one trial early (the trainer's SIGTERM checkpoint, fewer
evaluations than the trials that ran to the end), the best trial's eval loss is below the worst
trial's, the table and the plot are printed, and the study record lets a second run continue
instead of asking again.  The seed makes the parameters reproducible: the engine, given the same
seed and the recorded history, asks exactly the recorded parameters again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import sweep as engine
from kubetune.api.sweep import FineTuneSweepSpec, TrialRecord
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.trainerlib import isolated_env

KUBETUNE = [sys.executable, "-m", "kubetune"]
STEPS = 6
EVAL_STEPS = 2


def sweep_manifest(assets: TinyAssets) -> dict[str, Any]:
    template = tiny_job("unused", assets, method="lora", max_steps=STEPS)["spec"]
    template["training"].update(valSize=0.25, evalSteps=EVAL_STEPS, loggingSteps=EVAL_STEPS)
    template["evaluation"] = {
        "datasets": [{"name": "tiny_eval", "path": assets.dataset_path, "format": "sharegpt"}],
        "maxSamples": 4,
    }
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSweep",
        "metadata": {"name": "tiny-lr", "namespace": "default"},
        "spec": {
            "template": template,
            "parameters": [{"path": "training.learningRate", "type": "float", "min": 1e-5, "max": 5e-2, "log": True}],
            "objective": {"metric": "evalLoss", "goal": "minimize"},
            "earlyStopping": "median",
            "maxTrials": 4,
            "seed": 7,
        },
    }


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(600)
def test_local_sweep_prunes_finds_a_better_trial_and_continues_from_its_record(
    tmp_path: Path, tiny_assets: TinyAssets
) -> None:
    manifest = sweep_manifest(tiny_assets)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    env = isolated_env(tmp_path / "env")
    args = [
        "sweep",
        "--local",
        str(path),
        "--output",
        "out",
        "--datasets",
        str(tiny_assets.datasets_dir),
        "--models",
        str(tiny_assets.models_dir),
    ]
    started = time.monotonic()
    run = subprocess.run(KUBETUNE + args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    print(f"sweep --local of 4 trials: {seconds:.0f} s\n{run.stdout[-4000:]}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    study = json.loads((tmp_path / "out" / "default" / "tiny-lr" / "study.json").read_text(encoding="utf-8"))
    trials = [TrialRecord.model_validate(t) for t in study["trials"]]
    assert [t.name for t in trials] == ["tiny-lr-0", "tiny-lr-1", "tiny-lr-2", "tiny-lr-3"]
    states = [t.state for t in trials]
    assert "Pruned" in states and "Succeeded" in states and "Failed" not in states, states

    # Pruned early: the pruner stopped it at an evaluation before the last step (its record keeps the
    # evaluations up to that decision, whenever the stop reached the trainer).
    finished = [t for t in trials if t.state == "Succeeded"]
    pruned = [t for t in trials if t.state == "Pruned"]
    assert all(t.intermediate[-1].step == STEPS for t in finished), [(t.name, t.intermediate) for t in finished]
    assert all(t.intermediate[-1].step < STEPS for t in pruned), [(t.name, t.intermediate) for t in pruned]
    assert all(t.message == f"pruned at step {t.intermediate[-1].step} by the median pruner" for t in pruned)
    for t in pruned:  # the trainer was stopped before its end (no evaluation stage): its record says so
        record = json.loads((tmp_path / "out" / "default" / t.name / "kubetune-run.json").read_text(encoding="utf-8"))
        assert record.get("evaluation") is None

    # A better trial than the worst one, and it is the one reported best.
    values = [t.value for t in trials if t.value is not None]
    spec = FineTuneSweepSpec.model_validate(manifest["spec"], by_alias=True)
    best = engine.best(spec, trials)
    assert best is not None and best.value is not None and best.value < max(values)
    assert study["bestTrial"] == best.name
    assert f"best trial: {best.name} (evalLoss {best.value:.4f})" in run.stdout
    # The table (one row per trial, the best marked) and the terminal plot.
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith("tiny-lr-")]
    assert len(rows) == 4 and [r.split()[0] for r in rows if r.rstrip().endswith("*")] == [best.name]
    assert "evalLoss by trial (lower is better" in run.stdout

    # Reproducible: from the same seed and the recorded history the engine asks the same parameters.
    for k, t in enumerate(trials):
        [again] = engine.next_trials(spec, trials[:k], 1, "tiny-lr")
        assert again.parameters == t.parameters

    # A second run continues the recorded study: nothing is trained or asked again.
    rerun = subprocess.run(KUBETUNE + args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "continuing the study" in rerun.stdout and "trial tiny-lr-4" not in rerun.stdout
    assert (
        json.loads((tmp_path / "out" / "default" / "tiny-lr" / "study.json").read_text(encoding="utf-8"))["trials"]
        == study["trials"]
    )
