"""The FineTuneSweep kind: a hyperparameter search over FineTuneJobs (issue 26).

A sweep holds a FineTuneJob spec (``template``), the ``parameters`` to search (each a dotted
path into that spec), the ``objective`` (a metric of ``spec.evaluation``) and the search and
pruning algorithms (Optuna's samplers and pruners, :mod:`kubetune.sweep`).  Every trial is an
ordinary FineTuneJob: the template with the trial's values applied at their paths.

The study's whole state is ``status.trials`` (the trials' parameters, states, intermediate and
final values): the engine rebuilds an in-memory Optuna study from it at every decision, so no
database server is needed and an operator restart loses nothing.

Like every API model, the attribute docstrings are the CRD's descriptions (``kubectl explain
finetunesweep.spec``), and cross-field rules are written once for CEL and Python
(:class:`~kubetune.api.base.Rule`).  The checks CEL cannot express cheaply (a path's meaning in
the FineTuneJob schema, the template's own validation, the GPU planner) are in
:func:`kubetune.sweep.checks.validate_sweep`, which ``kubetune validate`` and the operator run.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints

from .base import ApiModel, Rule, RuledModel
from .resource import MAX_NAME_LENGTH, KubetuneResource, ObjectMeta, name_rule
from .spec import FineTuneJobSpec
from .status import Condition

SWEEP_KIND: Final = "FineTuneSweep"
SWEEP_PLURAL: Final = "finetunesweeps"
LABEL_SWEEP: Final = "kubetune.io/finetunesweep"
"""Label on every trial FineTuneJob: the name of the sweep that owns it."""

MAX_TRIALS: Final = 200
"""Most trials one sweep may run: status.trials holds them all (the object stays well under etcd's 1.5 MiB)."""
MAX_INTERMEDIATE: Final = 100
"""Most intermediate values kept per trial (evaluations during training)."""
MAX_SWEEP_NAME_LENGTH: Final = MAX_NAME_LENGTH - 1 - len(str(MAX_TRIALS - 1))
"""Longest sweep name (47): the trial ``<sweep>-<number>`` must still be a valid FineTuneJob name."""

Metric = Literal["evalLoss", "perplexity", "bleu4", "rouge1", "rouge2", "rougeL"]
"""The metrics spec.evaluation writes into status.evaluation.trained (kubetune.api.EvaluationMetrics)."""
GENERATION_METRICS: Final = ("bleu4", "rouge1", "rouge2", "rougeL")
"""Metrics only evaluation.generation produces (LLaMA-Factory's predict mode)."""
PERPLEXITY_STAGES: Final = ("pt", "sft")
"""Stages whose evaluation reports perplexity (kubetune.render.configs: perplexity = exp(loss) for pt/sft)."""

ParameterPath = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$")
]
ParameterValue = bool | int | float | Annotated[str, Field(max_length=256)]
TrialState = Literal["Pending", "Running", "Pruned", "Succeeded", "Failed"]
SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]

_IS_CATEGORICAL = "self.type == 'categorical'"


class SweepParameter(RuledModel):
    """One searched value: where it goes in the FineTuneJob spec and the range or choices to try."""

    path: ParameterPath
    (
        "Dotted path of a scalar field of the FineTuneJob spec, e.g. `training.learningRate` or `lora.rank`. "
        "Only fields fixed when a job is created can be searched (model, method, lora, freeze, quantization, "
        "training, resources, distributed): fields that can change on a running job (suspend, scheduling, "
        "evaluation, serve, ...) are refused."
    )
    type: Literal["float", "int", "categorical"]
    """`float` (a real range min..max), `int` (an integer range) or `categorical` (one of values)."""
    min: float | None = None
    """Lower bound, inclusive (float and int)."""
    max: float | None = None
    """Upper bound, inclusive (float and int); must be above min."""
    log: bool = False
    """Sample on a log scale (Optuna's `log=True`); min must be > 0. Typical for learning rates."""
    step: Annotated[float, Field(gt=0)] | None = None
    (
        "Spacing of the values tried (Optuna's `step`): for float, min, min+step, ... up to max; for int, "
        "a whole number (default 1). Needed by algorithm grid for float parameters. Not with log."
    )
    values: Annotated[list[ParameterValue], Field(min_length=1, max_length=64)] | None = None
    """The choices of a categorical parameter (strings, numbers or booleans)."""

    rules = (
        Rule(
            name="range-needs-bounds",
            cel=f"{_IS_CATEGORICAL} || (has(self.min) && has(self.max))",
            message="spec.parameters[]: float and int parameters need min and max (the range to search); "
            "or use type: categorical with values",
            field_path=".min",
            check=lambda p: p.type == "categorical" or (p.min is not None and p.max is not None),
        ),
        Rule(
            name="range-not-empty",
            cel="!has(self.min) || !has(self.max) || self.min < self.max",
            message="spec.parameters[]: min must be below max (the range is empty or inverted): swap them, "
            "or set a value that should not vary in spec.template instead",
            field_path=".max",
            check=lambda p: p.min is None or p.max is None or p.min < p.max,
        ),
        Rule(
            name="categorical-needs-values",
            cel=f"!({_IS_CATEGORICAL}) || has(self.values)",
            message="spec.parameters[]: type categorical needs values (at least one choice)",
            field_path=".values",
            check=lambda p: p.type != "categorical" or bool(p.values),
            # values' items are mixed scalars, x-kubernetes-preserve-unknown-fields in the CRD: CEL has no
            # declared type for such a list (see Rule.in_crd), so the schema's minItems and this Python check
            # (kubetune validate, the operator) refuse it instead.
            in_crd=False,
        ),
        Rule(
            name="categorical-has-no-range",
            cel=f"!({_IS_CATEGORICAL}) || (!has(self.min) && !has(self.max) && !has(self.step) && !self.log)",
            message="spec.parameters[]: min, max, step and log apply to float and int parameters; "
            "a categorical parameter lists its values only",
            field_path=".type",
            check=lambda p: (
                p.type != "categorical" or (p.min is None and p.max is None and p.step is None and not p.log)
            ),
        ),
        Rule(
            name="range-has-no-values",
            cel=f"{_IS_CATEGORICAL} || !has(self.values)",
            message="spec.parameters[]: values lists the choices of a categorical parameter; "
            "a float or int parameter searches min..max (remove values or set type: categorical)",
            field_path=".values",
            check=lambda p: p.type == "categorical" or p.values is None,
            in_crd=False,  # values cannot be named in CEL (see categorical-needs-values)
        ),
        Rule(
            name="log-needs-positive-min",
            cel="!self.log || (has(self.min) && self.min > 0.0)",
            message="spec.parameters[]: log: true samples on a log scale and needs min > 0",
            field_path=".min",
            check=lambda p: not p.log or (p.min is not None and p.min > 0),
        ),
        Rule(
            # optuna/distributions.py: FloatDistribution/IntDistribution refuse step together with log
            # (optuna 5.1.0, see kubetune.sweep.engine for the lines).
            name="log-or-step",
            cel="!self.log || !has(self.step)",
            message="spec.parameters[]: log and step cannot be combined (Optuna refuses it): remove one",
            field_path=".step",
            check=lambda p: not p.log or p.step is None,
        ),
        Rule(
            name="int-bounds-whole",
            cel="",
            message="spec.parameters[]: an int parameter needs whole-number min, max and step",
            field_path=".type",
            check=lambda p: p.type != "int" or all(v is None or float(v).is_integer() for v in (p.min, p.max, p.step)),
            # Python only: CEL would need double(int(x)) == x, a conversion the CEL cost tests
            # (tests/support/apiserver/crd.py) cannot check; refused by kubetune validate and the operator.
            in_crd=False,
        ),
    )


class SweepObjective(ApiModel):
    """What the sweep optimises: one metric of the trial's spec.evaluation."""

    metric: Metric
    (
        "A metric in the trial's status.evaluation.trained: `evalLoss` (every stage that can be evaluated), "
        "`perplexity` (stages pt and sft), `bleu4`, `rouge1`, `rouge2`, `rougeL` (template.evaluation.generation)."
    )
    goal: Literal["minimize", "maximize"] = "minimize"
    """`minimize` (losses, perplexity) or `maximize` (BLEU, ROUGE)."""


def _paths_unique(s: Any) -> bool:
    return len({p.path for p in s.parameters}) == len(s.parameters)


class FineTuneSweepSpec(RuledModel):
    """A hyperparameter search: trials are FineTuneJobs made from template, searched by Optuna."""

    template: FineTuneJobSpec
    (
        "The FineTuneJob spec every trial starts from (spec.evaluation is required: "
        "the objective comes from it). With promote: serve, its spec.serve is applied to the best trial only."
    )
    parameters: Annotated[list[SweepParameter], Field(min_length=1, max_length=16)]
    """The values to search; each names a field of the template by its path. Paths must be unique."""
    objective: SweepObjective
    """The metric to optimise and its direction."""
    algorithm: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    (
        "Optuna sampler: `tpe` (TPESampler, the default), `random` (RandomSampler), "
        "`grid` (GridSampler over every combination: float parameters need step) or `cmaes` (CmaEsSampler; "
        "float and int parameters only)."
    )
    early_stopping: Literal["median", "hyperband", "none"] = "median"
    (
        "Optuna pruner that stops unpromising trials from the evaluation loss reported during training "
        "(template.training.valSize, every training.evalSteps): `median` (MedianPruner), "
        "`hyperband` (HyperbandPruner) or `none`."
    )
    max_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)]
    (
        "Trials to run in all (pruned and failed ones count). With algorithm grid the sweep also "
        "ends when the grid is exhausted."
    )
    parallelism: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 1
    """Trials running at the same time (each is a FineTuneJob queued like any other)."""
    max_failed_trials: Annotated[int, Field(ge=0, le=MAX_TRIALS)] = 3
    """The sweep fails once more than this many trials failed; a failed trial never stops the study by itself."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    (
        "Seed of the sampler: the same seed and the same history give the same parameters. "
        "Unset: a different search each time."
    )
    promote: Literal["none", "serve"] = "none"
    (
        "`serve`: when the sweep ends, the best trial is served as template.serve says (the other trials are never "
        "served). `none`: nothing is served."
    )

    rules = (
        (
            Rule(
                name="template-needs-evaluation",
                cel="has(self.template.evaluation)",
                message="spec.template.evaluation is required: the objective is read from the trial's evaluation (set "
                "evaluation.valSize or evaluation.datasets)",
                field_path=".template.evaluation",
                check=lambda s: s.template.evaluation is not None,
            ),
            Rule(
                name="generation-metric-needs-generation",
                cel="!(self.objective.metric in ['bleu4', 'rouge1', 'rouge2', 'rougeL']) || "
                "(has(self.template.evaluation) && self.template.evaluation.generation)",
                message="spec.objective.metric bleu4/rouge1/rouge2/rougeL comes from generation: "
                "set spec.template.evaluation.generation: true, or use metric evalLoss",
                field_path=".objective.metric",
                check=lambda s: (
                    s.objective.metric not in GENERATION_METRICS
                    or (s.template.evaluation is not None and s.template.evaluation.generation)
                ),
            ),
            Rule(
                name="perplexity-needs-pt-or-sft",
                cel="self.objective.metric != 'perplexity' || self.template.training.stage in ['pt', 'sft']",
                message="spec.objective.metric perplexity is reported for stages pt and sft only: use metric evalLoss",
                field_path=".objective.metric",
                check=lambda s: s.objective.metric != "perplexity" or s.template.training.stage in PERPLEXITY_STAGES,
            ),
            Rule(
                name="parallelism-within-max-trials",
                cel="self.parallelism <= self.maxTrials",
                message="spec.parallelism is above spec.maxTrials: lower parallelism to maxTrials or fewer",
                field_path=".parallelism",
                check=lambda s: s.parallelism <= s.max_trials,
            ),
            Rule(
                name="parameter-paths-unique",
                cel="self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))",
                message="spec.parameters[].path must be unique: remove the duplicate parameter",
                field_path=".parameters",
                check=_paths_unique,
            ),
            Rule(
                name="pruning-needs-evaluation-during-training",
                cel="self.earlyStopping == 'none' || has(self.template.training.valSize)",
                message="spec.earlyStopping prunes on the loss evaluated during training: "
                "set spec.template.training.valSize (and training.evalSteps), or earlyStopping: none",
                field_path=".earlyStopping",
                check=lambda s: s.early_stopping == "none" or s.template.training.val_size is not None,
            ),
            Rule(
                name="promote-serve-needs-serve",
                cel="self.promote != 'serve' || has(self.template.serve)",
                message="spec.promote serve serves the best trial as spec.template.serve says: "
                "set spec.template.serve (e.g. engine: vllm), or promote: none",
                field_path=".promote",
                check=lambda s: s.promote != "serve" or s.template.serve is not None,
            ),
            Rule(
                name="serve-only-with-promote",
                cel="self.promote == 'serve' || !has(self.template.serve)",
                message="spec.template.serve would serve every trial: set spec.promote: "
                "serve to serve only the best one, or remove spec.template.serve",
                field_path=".template.serve",
                check=lambda s: s.promote == "serve" or s.template.serve is None,
            ),
            Rule(
                name="grid-needs-steps",
                cel="self.algorithm != 'grid' || self.parameters.all(p, p.type != 'float' || has(p.step))",
                message="spec.algorithm grid tries every combination: give each float parameter a "
                "step (or use type categorical)",
                field_path=".parameters",
                check=lambda s: (
                    s.algorithm != "grid" or all(p.type != "float" or p.step is not None for p in s.parameters)
                ),
            ),
            Rule(
                name="cmaes-numeric-only",
                cel="self.algorithm != 'cmaes' || self.parameters.all(p, p.type != 'categorical')",
                message="spec.algorithm cmaes searches float and int parameters only (Optuna's CmaEsSampler would "
                "pick categorical ones at random): use tpe, or make them numeric",
                field_path=".algorithm",
                check=lambda s: s.algorithm != "cmaes" or all(p.type != "categorical" for p in s.parameters),
            ),
        )
        + tuple(
            Rule(
                name=f"immutable-{field}",
                cel=f"self.{field} == oldSelf.{field}",
                message=f"spec.{field} cannot change after the sweep is created (the recorded trials were searched "
                "with it): create a new FineTuneSweep",
                field_path=f".{field}",
                reason="FieldValueForbidden",
                transition=True,
                check=lambda new, old, f=field: getattr(new, f) == getattr(old, f),
            )
            for field, _ in (("parameters", 0), ("objective", 0), ("algorithm", 0))
        )
        + (
            # The objective is read from each trial's evaluation: a changed template.evaluation (other
            # datasets, valSize, generation settings) would score the next trials on another measure than
            # the recorded ones, and every new trial is created from the current template.  (A FineTuneJob
            # may change its own evaluation; a sweep's trials may not differ in it.)
            Rule(
                name="immutable-template-evaluation",
                cel="has(self.template.evaluation) == has(oldSelf.template.evaluation) && "
                "(!has(self.template.evaluation) || self.template.evaluation == oldSelf.template.evaluation)",
                message="spec.template.evaluation cannot change after the sweep is created (the recorded trials' "
                "objective values were measured with it): create a new FineTuneSweep",
                field_path=".template.evaluation",
                reason="FieldValueForbidden",
                transition=True,
                check=lambda new, old: new.template.evaluation == old.template.evaluation,
            ),
        )
    )


class IntermediateValue(ApiModel):
    """One evaluation of a trial during training."""

    model_config = ApiModel.model_config | {"strict": False}

    step: Annotated[int, Field(ge=0)]
    """Optimizer step of the evaluation."""
    value: float
    """The evaluation loss at that step."""


class TrialRecord(ApiModel):
    """One trial of the study: its parameters, state and values (what the engine rebuilds the study from)."""

    model_config = ApiModel.model_config | {"strict": False}

    number: Annotated[int, Field(ge=0)]
    """Trial number, from 0 (Optuna's trial.number)."""
    name: Annotated[str, Field(max_length=63)]
    """The trial's FineTuneJob: `<sweep>-<number>`."""
    parameters: dict[Annotated[str, Field(max_length=256)], ParameterValue]
    """The values chosen for this trial, by parameter path."""
    state: TrialState = "Pending"
    """`Pending` (chosen, not started), `Running`, `Pruned` (stopped early), `Succeeded` or `Failed`."""
    value: float | None = None
    """The objective (spec.objective.metric) of a Succeeded trial; for a Pruned one, its last intermediate value."""
    intermediate: Annotated[list[IntermediateValue], Field(max_length=MAX_INTERMEDIATE)] = []
    """Evaluation losses reported during training, by step."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """Why the trial was pruned or failed."""


class FineTuneSweepStatus(ApiModel):
    """Observed state of a FineTuneSweep: the study. Written only by the operator."""

    model_config = ApiModel.model_config | {"strict": False}

    phase: SweepPhase | None = None
    """Pending, Running, Succeeded (the study ended with a best trial) or Failed."""
    trials: Annotated[list[TrialRecord], Field(max_length=MAX_TRIALS)] = []
    """Every trial asked so far, in order; the study is rebuilt from this list."""
    summary: Annotated[str, Field(max_length=64)] = ""
    (
        "Short form for `kubectl get` (kubetune.sweep.summary), e.g. `4/6 (1 pruned, "
        "0 failed)`: trials ended of maxTrials."
    )
    best_trial: Annotated[str, Field(max_length=63)] | None = None
    """Name of the best Succeeded trial so far."""
    best_value: float | None = None
    """Its objective value."""
    conditions: Annotated[list[Condition], Field(max_length=32)] | None = None
    """Detailed state (e.g. why the sweep waits); see Condition."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation last acted on by the operator."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Latest human-readable summary."""


class FineTuneSweep(KubetuneResource):
    # One line: it is the CRD's description (`kubectl explain finetunesweep`).
    """FineTuneSweep searches hyperparameters of a FineTuneJob with Optuna: trials are FineTuneJobs, pruned early on their evaluation loss; the best can be served."""  # noqa: E501

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    """kubetune.io/v1alpha1."""
    kind: Literal["FineTuneSweep"] = "FineTuneSweep"
    """FineTuneSweep."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: FineTuneSweepSpec
    """What to search and how."""
    status: FineTuneSweepStatus | None = None
    """Reported by the operator."""

    rules = (
        name_rule("name-fits-trials", MAX_SWEEP_NAME_LENGTH, "each trial is a FineTuneJob named <sweep>-<number>"),
    )
