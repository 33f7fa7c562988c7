"""The search engine: an in-memory Optuna study rebuilt from the recorded trials at every decision.

The study's only state is the list of :class:`~kubetune.api.sweep.TrialRecord` (status.trials in
the cluster, ``study.json`` locally).  Each call builds a fresh in-memory study, adds every recorded
trial to it *told* (its parameters, state, intermediate and final values), and only then asks for new
trials: a recorded trial's parameters are never sampled again, no database server is needed, and an
operator restart loses nothing.

Determinism: the sampler's seed is derived from ``spec.seed`` and the number of recorded trials, and
the study has a fixed name (HyperbandPruner picks a trial's bracket from a CRC32 of the study name and
trial number), so the same seed and history always give the same parameters, in any process.

Optuna 5.1.0 contracts relied on (read in the installed package, site-packages/optuna):
- ``optuna.trial.create_trial`` (trial/_frozen.py:519) builds a FrozenTrial that ``Study.add_trial``
  (study/study.py:908) validates (trial/_frozen.py:300-335: a COMPLETE trial needs a non-NaN value, a
  FAIL trial none, params must lie in their distributions); the in-memory storage numbers added trials
  0, 1, ... in order, so a recorded trial keeps its number.
- ``Study.ask(fixed_distributions)`` (study/study.py:515) samples every parameter through the sampler;
  the asked trial stays RUNNING in the study, so a second ask in the same call sees it (TPESampler's
  ``constant_liar``, samplers/_tpe/sampler.py:345, and GridSampler's running grids).
- GridSampler (samplers/_grid.py:116-175) shuffles its grid once with its seed and gives trial number
  ``n`` the ``n``-th grid point while ``n`` < grid size: the grid seed therefore depends on spec.seed
  only (never on the history), so the trial numbered ``n`` always gets the same, not yet visited, point.
- CmaEsSampler keeps the CMA-ES state pickled in the trials' system attributes
  (samplers/_cmaes.py:440-465, restored at 489-505), which a record does not hold: for cmaes the
  recorded trials are replayed instead (``enqueue_trial`` with their own parameters, then ask and tell,
  study/study.py:843), which rebuilds a CMA-ES state from exactly the recorded values; it needs the
  ``cmaes`` package (the operator extra).
- MedianPruner is PercentilePruner(50) (pruners/_median.py); ``prune`` (pruners/_percentile.py:182-215)
  compares the trial's best intermediate value with the median of COMPLETE trials at the same step,
  once ``n_startup_trials`` trials completed.  HyperbandPruner (pruners/_hyperband.py:176-200) sizes its
  brackets from the longest COMPLETE trial (``max_resource='auto'``).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from typing import Any

from kubetune.api.sweep import FineTuneSweepSpec, SweepParameter, TrialRecord

STUDY_NAME = "kubetune"
"""Fixed: HyperbandPruner's bracket of a trial is crc32(f"{study_name}_{number}") (pruners/_hyperband.py:256)."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - the operator and train extras install it
        raise RuntimeError("the sweep engine needs optuna: pip install 'kubetune[operator]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def sampler_seed(spec: FineTuneSweepSpec, recorded: int) -> int | None:
    """The sampler's seed after ``recorded`` trials: fixed by spec.seed and the history length.

    Hashed (SHA-256, the same in every process): samplers seed numpy's RandomState (optuna
    samplers/_random.py, _lazy_random_state.py), whose first draws for consecutive seeds are close
    to each other; seeds spec.seed+n made a random search try nearly the same value again and again."""
    if spec.seed is None:
        return None
    digest = hashlib.sha256(f"kubetune-sweep:{spec.seed}:{recorded}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def distribution(p: SweepParameter) -> Any:
    """The Optuna distribution of one parameter (optuna/distributions.py: FloatDistribution,
    IntDistribution, CategoricalDistribution)."""
    optuna = _optuna()
    d = optuna.distributions
    if p.type == "categorical":
        return d.CategoricalDistribution(list(p.values or []))
    assert p.min is not None and p.max is not None
    # With a step, the top is the last value on the step grid (Optuna would move it there itself,
    # with a warning: distributions.py _adjust_discrete_uniform_high / _adjust_int_uniform_high).
    high = grid_values(p)[-1] if p.step is not None else p.max
    if p.type == "int":
        return d.IntDistribution(int(p.min), int(high), log=p.log, step=int(p.step or 1))
    return d.FloatDistribution(p.min, float(high), log=p.log, step=p.step)


def distributions(spec: FineTuneSweepSpec) -> dict[str, Any]:
    return {p.path: distribution(p) for p in spec.parameters}


def grid_values(p: SweepParameter) -> list[Any]:
    """Every value of one parameter that algorithm grid tries."""
    if p.type == "categorical":
        return list(p.values or [])
    assert p.min is not None and p.max is not None
    if p.type == "int":
        return list(range(int(p.min), int(p.max) + 1, int(p.step or 1)))
    assert p.step is not None
    count = int(math.floor((p.max - p.min) / p.step + 1e-9)) + 1
    # Rounded to 12 significant digits so that min + i*step does not print as 0.30000000000000004.
    return [float(f"{p.min + i * p.step:.12g}") for i in range(count)]


def grid_size(spec: FineTuneSweepSpec) -> int | None:
    """Number of combinations for algorithm grid (None for the other algorithms)."""
    if spec.algorithm != "grid":
        return None
    return math.prod(len(grid_values(p)) for p in spec.parameters)


def trial_limit(spec: FineTuneSweepSpec) -> int:
    """Trials the study may ask in all: maxTrials, or fewer when the grid has fewer points."""
    size = grid_size(spec)
    return spec.max_trials if size is None else min(spec.max_trials, size)


def _sampler(spec: FineTuneSweepSpec, recorded: int) -> Any:
    optuna = _optuna()
    seed = sampler_seed(spec, recorded)
    if spec.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.algorithm == "grid":
        space = {p.path: grid_values(p) for p in spec.parameters}
        return optuna.samplers.GridSampler(space, seed=spec.seed)
    if spec.algorithm == "cmaes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of some options
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner_startup(spec: FineTuneSweepSpec) -> int:
    """Completed trials before the median pruner may prune: Optuna's default 5, fewer for small sweeps
    (a third of maxTrials, at least 1), so a sweep of 6 trials can prune its later ones."""
    return max(1, min(5, spec.max_trials // 3))


def _pruner(spec: FineTuneSweepSpec) -> Any:
    optuna = _optuna()
    if spec.early_stopping == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner_startup(spec), n_warmup_steps=0)
    if spec.early_stopping == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def _state(record: TrialRecord) -> Any:
    states = _optuna().trial.TrialState
    if record.state in ("Pending", "Running"):
        return states.RUNNING
    if record.state == "Succeeded" and record.value is not None and math.isfinite(record.value):
        return states.COMPLETE
    if record.state == "Pruned":
        return states.PRUNED
    return states.FAIL


def _intermediate(record: TrialRecord) -> dict[int, float]:
    return {iv.step: iv.value for iv in record.intermediate if math.isfinite(iv.value)}


def _frozen(spec: FineTuneSweepSpec, record: TrialRecord, dists: dict[str, Any]) -> Any:
    optuna = _optuna()
    state = _state(record)
    params = {k: v for k, v in record.parameters.items() if k in dists}
    complete = state == optuna.trial.TrialState.COMPLETE
    pruned_value = None
    if state == optuna.trial.TrialState.PRUNED and record.value is not None and math.isfinite(record.value):
        pruned_value = record.value
    return optuna.trial.create_trial(
        state=state,
        value=record.value if complete else pruned_value,
        params=params,
        distributions={k: dists[k] for k in params},
        intermediate_values=_intermediate(record),
    )


def _new_study(spec: FineTuneSweepSpec, sampler: Any) -> Any:
    direction = "minimize" if spec.objective.goal == "minimize" else "maximize"
    return _optuna().create_study(study_name=STUDY_NAME, direction=direction, sampler=sampler, pruner=_pruner(spec))


def build_study(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord], *, sampler: Any | None = None) -> Any:
    """An in-memory study holding every recorded trial, told (never asked again)."""
    study = _new_study(spec, sampler or _sampler(spec, len(trials)))
    dists = distributions(spec)
    ordered = sorted(trials, key=lambda t: t.number)
    if spec.algorithm == "cmaes" and sampler is None:
        _replay(study, spec, ordered, dists)
    else:
        for record in ordered:
            study.add_trial(_frozen(spec, record, dists))
    return study


def _replay(
    study: Any,
    spec: FineTuneSweepSpec,
    trials: Sequence[TrialRecord],
    dists: dict[str, Any],
    *,
    consult_pruner: bool = False,
) -> list[bool]:
    """Replay recorded trials as a live Optuna run would have produced them: each is enqueued with its
    own parameters, asked, its intermediate values reported (with ``consult_pruner``, the pruner is asked
    after each report, as ``Trial.should_prune`` would be) and told its outcome.

    Used where a sampler or pruner keeps state in the trials' system attributes, which a record does not
    hold: CmaEsSampler's pickled CMA-ES state (samplers/_cmaes.py:440-465) and SuccessiveHalvingPruner's
    ``completed_rung_<k>`` values (pruners/_successive_halving.py: prune, _get_competing_values; used
    by every HyperbandPruner bracket).  The in-memory storage lets system attributes be set only while a
    trial runs, so they cannot be given to finished trials afterwards.  Returns, per trial, whether the
    pruner said prune at any report (all False without ``consult_pruner``)."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    verdicts: list[bool] = []
    for record in trials:
        study.enqueue_trial({k: v for k, v in record.parameters.items() if k in dists})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(dists)
        pruned = False
        for step, value in sorted(_intermediate(record).items()):
            trial.report(value, step)
            if consult_pruner:
                pruned = trial.should_prune() or pruned
        verdicts.append(pruned)
        state = _state(record)
        if state == states.COMPLETE:
            study.tell(trial, record.value)
        elif state == states.PRUNED:
            study.tell(trial, state=states.PRUNED)
        elif state == states.FAIL:
            study.tell(trial, state=states.FAIL)
    return verdicts


def _plain(value: Any) -> bool | int | float | str:
    """A sampled value as JSON-able Python (numpy scalars from some samplers become int/float)."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) or (hasattr(value, "dtype") and "int" in str(value.dtype)):
        return int(value)
    return float(value)


def next_trials(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord], n: int, sweep_name: str) -> list[TrialRecord]:
    """Up to ``n`` new trials (state Pending, parameters chosen), respecting maxTrials and the grid size."""
    room = trial_limit(spec) - len(trials)
    n = min(n, room)
    if n <= 0:
        return []
    study = build_study(spec, trials)
    dists = distributions(spec)
    first = max((t.number for t in trials), default=-1) + 1
    new: list[TrialRecord] = []
    for i in range(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(dists)
        number = first + i
        if trial.number != number:  # numbers in the rebuilt study follow the records
            raise RuntimeError(f"study numbering drifted: asked trial {trial.number}, expected {number}")
        params = {p.path: _plain(trial.params[p.path]) for p in spec.parameters}
        new.append(TrialRecord(number=number, name=f"{sweep_name}-{number}", parameters=params, state="Pending"))
    return new


def should_prune(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord], trial: TrialRecord) -> bool:
    """Whether the configured pruner stops ``trial`` given its intermediate values and the other trials.

    median: the pruner is asked once, at the trial's last reported step (it keeps no state).
    hyperband: every trial is replayed (:func:`_replay`) so that each bracket's rungs hold the values the
    other trials reached; the trial is pruned when the pruner says so at any of its reports."""
    if spec.early_stopping == "none" or not _intermediate(trial):
        return False
    optuna = _optuna()
    others = sorted((t for t in trials if t.number != trial.number), key=lambda t: t.number)
    running = trial.model_copy(update={"state": "Running", "value": None})
    dists = distributions(spec)
    if spec.early_stopping == "hyperband":
        study = _new_study(spec, optuna.samplers.RandomSampler(seed=0))
        _replay(study, spec, others, dists, consult_pruner=True)
        return _replay(study, spec, [running], dists, consult_pruner=True)[0]
    study = build_study(spec, others, sampler=optuna.samplers.RandomSampler(seed=0))
    study.add_trial(_frozen(spec, running, dists))
    target = study.get_trials(deepcopy=False)[-1]
    return bool(study.pruner.prune(study, target))


def best(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """The best Succeeded trial by the objective's goal (the lowest number wins a tie)."""
    done = [t for t in trials if t.state == "Succeeded" and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    sign = 1.0 if spec.objective.goal == "minimize" else -1.0
    return min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))


def finished(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord]) -> tuple[bool, str]:
    """Whether the study is over, and why: too many failed trials, or every trial asked and none running."""
    failed = sum(1 for t in trials if t.state == "Failed")
    if failed > spec.max_failed_trials:
        return True, f"{failed} trials failed, more than spec.maxFailedTrials ({spec.max_failed_trials})"
    active = sum(1 for t in trials if t.state in ("Pending", "Running"))
    limit = trial_limit(spec)
    if len(trials) >= limit and active == 0:
        if limit < spec.max_trials:
            return True, f"all {limit} points of the grid were tried"
        return True, f"all {spec.max_trials} trials (spec.maxTrials) ended"
    return False, ""


def summary(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord]) -> str:
    """status.summary: ``4/6 (1 pruned, 0 failed)``, trials ended of the trials the study may run."""
    ended = sum(1 for t in trials if t.state in ("Succeeded", "Pruned", "Failed"))
    pruned = sum(1 for t in trials if t.state == "Pruned")
    failed = sum(1 for t in trials if t.state == "Failed")
    return f"{ended}/{trial_limit(spec)} ({pruned} pruned, {failed} failed)"


def objective_value(spec: FineTuneSweepSpec, trained: Any) -> float | None:
    """The objective from a trial's status.evaluation.trained (a dict with camelCase keys, or
    EvaluationMetrics); None when the metric is missing or not finite."""
    if trained is None:
        return None
    data = trained.to_api() if hasattr(trained, "to_api") else dict(trained)
    value = data.get(spec.objective.metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


__all__ = [
    "best",
    "build_study",
    "finished",
    "grid_size",
    "next_trials",
    "objective_value",
    "should_prune",
    "summary",
    "trial_limit",
]
