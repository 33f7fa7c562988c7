"""The sweep engine (kubetune.sweep): an in-memory Optuna study rebuilt from the recorded trials.

Each test drives the engine the way the operator and `kubetune sweep --local` do: ask trials,
record their outcome as TrialRecords, ask again.  The objective is a known function of the
parameters, so whether the search, the pruner and `best` behave is visible in the values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune import sweep
from kubetune.api.sweep import FineTuneSweepSpec, TrialRecord

REPO = Path(__file__).resolve().parents[2]

TEMPLATE: dict[str, Any] = {
    "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "template": "qwen"},
    "datasets": [{"name": "d", "hub": "a/b"}],
    "storage": {"outputs": {"claimName": "out"}},
    "training": {"valSize": 0.1, "evalSteps": 10},
    "evaluation": {"datasets": [{"name": "e", "hub": "a/c"}]},
}
LR = {"path": "training.learningRate", "type": "float", "min": 1e-5, "max": 1e-3, "log": True}
RANK = {"path": "lora.rank", "type": "int", "min": 4, "max": 64, "step": 4}


def make_spec(**fields: Any) -> FineTuneSweepSpec:
    body = {
        "template": TEMPLATE,
        "parameters": [LR, RANK],
        "objective": {"metric": "evalLoss"},
        "maxTrials": 8,
        "seed": 11,
        **fields,
    }
    return FineTuneSweepSpec.model_validate(body, by_alias=True)


def loss(params: dict[str, Any]) -> float:
    """A bowl with its minimum at learning rate 3e-4 (in log space) and small ranks."""
    lr = float(params.get("training.learningRate", 3e-4))
    return (math.log10(lr) - math.log10(3e-4)) ** 2 + int(params.get("lora.rank", 0)) / 1000


def done(
    trial: TrialRecord, state: str = "Succeeded", value: float | None = None, curve: list[float] | None = None
) -> TrialRecord:
    value = loss(trial.parameters) if value is None and state == "Succeeded" else value
    inter = [{"step": 10 * (i + 1), "value": v} for i, v in enumerate(curve or [])]
    return TrialRecord.model_validate({**trial.model_dump(), "state": state, "value": value, "intermediate": inter})


def run(spec: FineTuneSweepSpec, batch: int = 1) -> list[TrialRecord]:
    trials: list[TrialRecord] = []
    while new := sweep.next_trials(spec, trials, batch, "s"):
        trials += [done(t) for t in new]
    return trials


def test_new_trials_are_pending_named_and_numbered_after_the_records() -> None:
    spec = make_spec()
    first = sweep.next_trials(spec, [], 3, "lr-sweep")
    assert [(t.number, t.name, t.state) for t in first] == [
        (0, "lr-sweep-0", "Pending"),
        (1, "lr-sweep-1", "Pending"),
        (2, "lr-sweep-2", "Pending"),
    ]
    for t in first:
        assert 1e-5 <= t.parameters["training.learningRate"] <= 1e-3
        assert t.parameters["lora.rank"] in range(4, 65, 4) and isinstance(t.parameters["lora.rank"], int)
    more = sweep.next_trials(spec, first, 10, "lr-sweep")
    assert [t.number for t in more] == [3, 4, 5, 6, 7]  # maxTrials 8 in all


def test_same_seed_and_history_give_the_same_parameters_and_another_seed_does_not() -> None:
    a, b = run(make_spec()), run(make_spec())
    assert [t.parameters for t in a] == [t.parameters for t in b]
    other = run(make_spec(seed=12))
    assert [t.parameters for t in other] != [t.parameters for t in a]


def test_seeded_parameters_agree_across_processes_with_different_hash_seeds() -> None:
    """Nothing in the engine depends on Python's string hashing (HyperbandPruner hashes the study
    name with crc32, and the study has a fixed name)."""
    code = (
        "import json, sys; sys.path.insert(0, %r); from test_sweep_engine import run, make_spec; "
        "print(json.dumps([t.parameters for t in run(make_spec(algorithm='tpe', earlyStopping='hyperband'), batch=2)]))"
    ) % str(Path(__file__).parent)
    outs = []
    for hash_seed in ("1", "2"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": hash_seed,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
        }
        done_ = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
        )
        outs.append(json.loads(done_.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    assert len(outs[0]) == 8


def test_recorded_trials_are_never_asked_again() -> None:
    """The parameters of recorded trials stay as recorded, whatever their state; new trials only follow them."""
    spec = make_spec()
    recorded = [
        TrialRecord(
            number=0,
            name="s-0",
            parameters={"training.learningRate": 1e-4, "lora.rank": 8},
            state="Succeeded",
            value=0.5,
        ),
        TrialRecord(number=1, name="s-1", parameters={"training.learningRate": 5e-4, "lora.rank": 16}, state="Running"),
        TrialRecord(number=2, name="s-2", parameters={"training.learningRate": 2e-5, "lora.rank": 4}, state="Failed"),
    ]
    new = sweep.next_trials(spec, recorded, 2, "s")
    assert [t.number for t in new] == [3, 4]
    assert all(t.parameters not in [r.parameters for r in recorded] for t in new)


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe", "cmaes"])
def test_every_algorithm_runs_a_study_and_best_is_the_lowest_value(algorithm: str) -> None:
    params = [{**LR, "log": False, "step": 2e-4, "min": 1e-4, "max": 9e-4}, RANK] if algorithm == "grid" else [LR, RANK]
    spec = make_spec(algorithm=algorithm, parameters=params, maxTrials=10)
    trials = run(spec, batch=2)
    assert len(trials) == 10
    winner = sweep.best(spec, trials)
    assert winner is not None and winner.value == min(t.value for t in trials if t.value is not None)
    assert sweep.finished(spec, trials) == (True, "all 10 trials (spec.maxTrials) ended")


def test_grid_tries_every_point_once_then_ends() -> None:
    params = [
        {"path": "training.learningRate", "type": "float", "min": 1e-4, "max": 3e-4, "step": 1e-4},
        {"path": "training.scheduler", "type": "categorical", "values": ["cosine", "linear"]},
    ]
    spec = make_spec(algorithm="grid", parameters=params, maxTrials=50, parallelism=4)
    assert sweep.grid_size(spec) == 6
    trials: list[TrialRecord] = []
    # Asked in uneven batches, some left running while others are asked: still no repeats.
    new = sweep.next_trials(spec, trials, 4, "g")
    trials += [done(new[0]), new[1], done(new[2]), new[3]]
    trials += sweep.next_trials(spec, trials, 4, "g")
    points = {(t.parameters["training.learningRate"], t.parameters["training.scheduler"]) for t in trials}
    assert len(trials) == 6 and len(points) == 6
    assert points == {(lr, s) for lr in (1e-4, 2e-4, 3e-4) for s in ("cosine", "linear")}
    assert sweep.next_trials(spec, trials, 4, "g") == []
    assert sweep.finished(spec, trials)[0] is False  # some still running
    closed = [done(t) if t.state == "Pending" else t for t in trials]
    assert sweep.finished(spec, closed) == (True, "all 6 points of the grid were tried")


def test_median_pruning_prunes_a_clearly_worse_curve_and_keeps_a_good_one() -> None:
    spec = make_spec(earlyStopping="median", maxTrials=6)  # n_startup_trials: 6 // 3 = 2 completed trials
    assert sweep.engine.pruner_startup(spec) == 2
    trials = sweep.next_trials(spec, [], 4, "m")
    history = [done(trials[0], value=1.0, curve=[2.0, 1.5, 1.0]), done(trials[1], value=1.1, curve=[2.1, 1.6, 1.1])]
    bad = done(trials[2], state="Running", curve=[3.0, 2.9])
    good = done(trials[3], state="Running", curve=[1.9, 1.4])
    assert sweep.should_prune(spec, [*history, bad, good], bad) is True
    assert sweep.should_prune(spec, [*history, bad, good], good) is False
    # Before n_startup_trials trials completed, nothing is pruned.
    assert sweep.should_prune(spec, [history[0], bad], bad) is False
    # earlyStopping none never prunes.
    assert sweep.should_prune(make_spec(earlyStopping="none", maxTrials=6), [*history, bad], bad) is False


def test_hyperband_prunes_a_clearly_worse_curve() -> None:
    spec = make_spec(earlyStopping="hyperband", maxTrials=20)
    trials = sweep.next_trials(spec, [], 12, "h")
    curves = [[2.0 - 0.1 * k - 0.01 * i for k in range(9)] for i in range(10)]
    history = [done(t, value=c[-1], curve=c) for t, c in zip(trials[:10], curves)]
    verdicts = [
        sweep.should_prune(
            spec, [*history, done(t, state="Running", curve=[9.0] * 3)], done(t, state="Running", curve=[9.0] * 3)
        )
        for t in trials[10:]
    ]
    assert any(verdicts), "hyperband must prune a curve far above every completed one"
    good = done(trials[10], state="Running", curve=[0.1] * 3)
    assert sweep.should_prune(spec, [*history, good], good) is False


def test_failed_trials_beyond_max_failed_trials_end_the_study_and_fewer_do_not() -> None:
    spec = make_spec(maxFailedTrials=1)
    trials = sweep.next_trials(spec, [], 3, "f")
    one = [done(trials[0], state="Failed"), trials[1], trials[2]]
    assert sweep.finished(spec, one) == (False, "")
    assert sweep.next_trials(spec, one, 1, "f")[0].number == 3  # a failed trial never stops the study by itself
    two = [done(trials[0], state="Failed"), done(trials[1], state="Failed"), trials[2]]
    assert sweep.finished(spec, two) == (True, "2 trials failed, more than spec.maxFailedTrials (1)")


def test_best_follows_the_goal_and_ignores_pruned_and_failed_trials() -> None:
    base = make_spec()
    trials = sweep.next_trials(base, [], 4, "b")
    recs = [
        done(trials[0], value=0.2),
        done(trials[1], value=0.9),
        done(trials[2], state="Pruned", value=0.01),
        done(trials[3], state="Failed"),
    ]
    assert sweep.best(base, recs).number == 0  # type: ignore[union-attr]
    bleu = make_spec(
        objective={"metric": "bleu4", "goal": "maximize"},
        template={**TEMPLATE, "evaluation": {**TEMPLATE["evaluation"], "generation": True}},
    )
    assert sweep.best(bleu, recs).number == 1  # type: ignore[union-attr]
    assert sweep.best(base, recs[2:]) is None
    assert sweep.summary(base, recs) == "4/8 (1 pruned, 1 failed)"


def test_trial_spec_applies_parameters_and_only_the_winner_is_served() -> None:
    serve_template = {**TEMPLATE, "serve": {"engine": "vllm"}}
    spec = make_spec(template=serve_template, promote="serve")
    trial = TrialRecord(number=0, name="s-0", parameters={"training.learningRate": 2e-4, "lora.rank": 32})
    body = sweep.trial_spec(spec, trial)
    assert body["training"] == {"valSize": 0.1, "evalSteps": 10, "learningRate": 2e-4}
    assert body["lora"] == {"rank": 32}
    assert "serve" not in body and "method" not in body  # as the user wrote it: defaults are the API server's
    assert sweep.winner_spec(spec, trial)["serve"] == {"engine": "vllm"}
    assert TEMPLATE["training"] == {"valSize": 0.1, "evalSteps": 10}  # the template is not changed


def test_objective_value_reads_the_metric_of_status_evaluation_trained() -> None:
    spec = make_spec()
    assert sweep.objective_value(spec, {"evalLoss": 1.25, "perplexity": 3.49}) == 1.25
    assert sweep.objective_value(spec, {"perplexity": 3.49}) is None
    assert sweep.objective_value(spec, {"evalLoss": float("nan")}) is None
    assert sweep.objective_value(spec, None) is None
