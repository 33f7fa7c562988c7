"""FineTuneSweep's engine: pure functions over the recorded trials (no I/O, no cluster client).

The operator (controller/) and ``kubetune sweep --local`` (localrun) drive a sweep with these:

- :func:`next_trials` asks up to n new trials (Pending, parameters chosen) from an in-memory Optuna
  study rebuilt from the recorded trials (:mod:`kubetune.sweep.engine` says how and why);
- :func:`should_prune` asks the configured pruner about a running trial's intermediate values;
- :func:`best`, :func:`finished`, :func:`summary`: the study's outcome and status.summary;
- :func:`trial_spec` / :func:`winner_spec`: the FineTuneJob spec of a trial / of the promoted winner;
- :func:`objective_value`: the objective from a trial's status.evaluation.trained;
- :func:`kubetune.sweep.checks.validate_sweep`: admission checks beyond the CRD's (``kubetune validate``).
"""

from __future__ import annotations

from typing import Any

from kubetune.api.sweep import FineTuneSweepSpec, TrialRecord

from .engine import best, finished, grid_size, next_trials, objective_value, should_prune, summary, trial_limit
from .paths import apply


def _template(spec: FineTuneSweepSpec) -> dict[str, Any]:
    """The template as the user wrote it (camelCase, no defaults filled in, no nulls)."""
    out: dict[str, Any] = spec.template.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
    return out


def trial_spec(spec: FineTuneSweepSpec, trial: TrialRecord) -> dict[str, Any]:
    """The FineTuneJob spec of one trial: the template with the trial's parameters at their paths.

    Trials are never served (with promote: serve the winner is, through :func:`winner_spec`), so
    ``serve`` is left out."""
    out = apply(_template(spec), dict(trial.parameters))
    out.pop("serve", None)
    return out


def winner_spec(spec: FineTuneSweepSpec, trial: TrialRecord) -> dict[str, Any]:
    """The spec of the best trial as promoted: like :func:`trial_spec`, with the template's serve kept."""
    return apply(_template(spec), dict(trial.parameters))


__all__ = [
    "best",
    "finished",
    "grid_size",
    "next_trials",
    "objective_value",
    "should_prune",
    "summary",
    "trial_limit",
    "trial_spec",
    "winner_spec",
]
