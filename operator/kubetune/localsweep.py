"""``kubetune sweep --local FILE``: a FineTuneSweep on this machine, one trial after another.

Each trial is the FineTuneJob the operator would create (:func:`kubetune.sweep.trial_spec`), trained
by the same local runner as ``kubetune run --local`` (:func:`kubetune.localrun.run_local`: the real
renderer and trainer entrypoint).  While a trial trains, its evaluation losses (LLaMA-Factory's
``trainer_log.jsonl`` records with ``eval_loss``, written every ``training.evalSteps``:
llamafactory/train/callbacks.py:262-300 @0.9.5, LogCallback.on_log) are reported to the engine;
when the pruner says so the trial is stopped the way a cluster stops a pod (SIGTERM: the trainer
saves a checkpoint and exits, kubetune.trainer.launch) and recorded as Pruned.  A trial that ends
is scored from its run record's evaluation (the metric of spec.objective).

The study (every TrialRecord) is written to ``<output>/<namespace>/<sweep>/study.json`` after each
change, so running the same command again continues the study: recorded trials are never asked
again, an interrupted one is run again with its recorded parameters (resuming from its checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.api import contract
from kubetune.api.safeyaml import InputError, read_documents
from kubetune.api.sweep import SWEEP_KIND, FineTuneSweep, FineTuneSweepSpec, IntermediateValue, TrialRecord
from kubetune.api.text import line
from kubetune.render import validate_object

if TYPE_CHECKING:
    from rich.console import Console

STUDY_FILE = "study.json"
TRAINER_LOG = "trainer_log.jsonl"
"""LLaMA-Factory's per-log-step record file in the job's output folder (llamafactory/extras/constants.py
TRAINER_LOG)."""
STOP_WAIT_SECONDS = 120.0
"""How long a pruned trial may take to save its stop checkpoint and exit before it is killed."""


# --- loading ---------------------------------------------------------------------------------


def load_sweep(path: str) -> tuple[FineTuneSweep | None, list[str]]:
    """The single FineTuneSweep of a file, validated like ``kubetune validate`` (and the operator)."""
    from kubetune.plan.feasibility import product_table
    from kubetune.sweep.checks import validate_sweep

    try:
        docs = [d for d in read_documents(path) if isinstance(d, dict) and d.get("kind") == SWEEP_KIND]
    except InputError as exc:
        return None, [line(f"{path}: {exc}")]
    if len(docs) != 1:
        return None, [f"{path}: expected exactly one FineTuneSweep, found {len(docs)}"]
    sweep, problems = validate_sweep(docs[0], product_table=product_table())
    if problems or sweep is None:
        return None, [line(f"{path}: {p}") for p in problems]
    if sweep.spec.template.resources.nodes > 1:
        return None, [
            f"{path}: spec.template.resources.nodes: sweep --local trains on this one machine; "
            "set nodes: 1 (or apply it to a cluster)"
        ]
    return sweep, []


def study_path(output: Path, sweep: FineTuneSweep) -> Path:
    return output / sweep.namespace / sweep.name / STUDY_FILE


def load_study(path: Path, sweep: FineTuneSweep) -> tuple[list[TrialRecord], str | None]:
    """The recorded trials of an earlier run of the same sweep, or a problem (another sweep's study)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], None
    except (OSError, ValueError) as exc:
        return [], f"{path}: cannot read the study record ({exc}); move it away to start over"
    if not isinstance(data, dict) or data.get("kind") != SWEEP_KIND:
        return [], f"{path}: not a FineTuneSweep study record; move it away to start over"
    recorded = (
        FineTuneSweep.from_api({"metadata": {"name": sweep.name}, "spec": data.get("spec")}).spec
        if data.get("spec")
        else None
    )
    if recorded is None or _search(recorded) != _search(sweep.spec):
        return [], (
            f"{path}: the study there was run with another template, parameters, objective, algorithm or seed; "
            "use another --output (or move the study away) to start a new one"
        )
    return [TrialRecord.model_validate(t) for t in data.get("trials", [])], None


def _search(spec: FineTuneSweepSpec) -> tuple[Any, ...]:
    """What the recorded trials depend on (maxTrials, parallelism and the like may change between runs)."""
    return (spec.template, spec.parameters, spec.objective, spec.algorithm, spec.early_stopping, spec.seed)


def save_study(path: Path, sweep: FineTuneSweep, trials: Sequence[TrialRecord]) -> None:
    from kubetune import sweep as engine

    best = engine.best(sweep.spec, trials)
    data = {
        "apiVersion": contract.API_VERSION,
        "kind": SWEEP_KIND,
        "name": sweep.name,
        "spec": sweep.spec.to_api(),
        "trials": [t.to_api() for t in trials],
        "bestTrial": best.name if best else None,
        "bestValue": best.value if best else None,
        "summary": engine.summary(sweep.spec, trials),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # an interrupted write never leaves half a study


# --- one trial -------------------------------------------------------------------------------


def eval_losses(log: Path) -> list[IntermediateValue]:
    """The evaluations during training in a trainer_log.jsonl (records with a finite eval_loss), by step."""
    found: dict[int, float] = {}
    try:
        text = log.read_text(encoding="utf-8")
    except OSError:
        return []
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a line being written
        if not isinstance(record, dict):
            continue
        step, value = record.get("current_steps"), record.get("eval_loss")
        if (
            isinstance(step, int)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            found[step] = float(value)
    return [IntermediateValue(step=s, value=v) for s, v in sorted(found.items())]


class PruneWatch:
    """Follows a running trial's evaluation losses; stops the trainer when the pruner says so."""

    def __init__(
        self,
        spec: FineTuneSweepSpec,
        history: Sequence[TrialRecord],
        trial: TrialRecord,
        log: Path,
        console: Console,
        interval: float = 0.5,
    ) -> None:
        self.spec, self.history, self.log, self.console, self.interval = spec, list(history), log, console, interval
        self.trial = trial.model_copy(update={"state": "Running"})
        self.pruned_at: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __call__(self, proc: subprocess.Popen[str]) -> None:
        """Called by run_local once the trainer started."""
        self._proc = proc
        self._thread = threading.Thread(target=self._run, name="kubetune-sweep-prune", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubetune import sweep as engine

        seen = 0
        while not self._stop.is_set():
            values = eval_losses(self.log)
            # Each new evaluation in step order, as Optuna's trial.report + should_prune would see them:
            # one poll can find several (a busy machine, a fast trial), and the decision must not
            # depend on when the log was read.
            for k in range(seen, len(values)):
                reported = values[: k + 1]
                self.trial = self.trial.model_copy(update={"intermediate": reported[-100:]})
                last = reported[-1]
                self.console.print(f"  eval loss {last.value:.4f} at step {last.step}")
                if engine.should_prune(self.spec, self.history, self.trial):
                    self.pruned_at = last.step
                    self.console.print(f"  [yellow]pruned[/yellow] at step {last.step}: stopping the trial")
                    self._terminate()
                    return
            seen = len(values)
            self._stop.wait(self.interval)

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint and exits (kubetune.trainer.launch)
        try:
            proc.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()

    def finish(self) -> TrialRecord:
        """The trial with every evaluation loss read (the log's last lines included)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS + 5)
        values = eval_losses(self.log)
        if self.pruned_at is not None:
            # What the pruner decided on; evaluations the trainer logged before the stop arrived are
            # not the study's (a record that depends on timing would not be reproducible).
            values = [v for v in values if v.step <= self.pruned_at]
        if values:
            self.trial = self.trial.model_copy(update={"intermediate": values[-100:]})
        return self.trial


def run_trial(
    sweep: FineTuneSweep,
    trials: Sequence[TrialRecord],
    trial: TrialRecord,
    *,
    output: Path,
    datasets: Path,
    models: Path,
    console: Console,
    verbose: bool = False,
) -> TrialRecord:
    """Train one trial with the local runner; the trial as recorded afterwards (Succeeded, Pruned or Failed)."""
    from kubetune import sweep as engine
    from kubetune.localrun import run_local

    doc = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {
            "name": trial.name,
            "namespace": sweep.namespace,
            "labels": {"kubetune.io/finetunesweep": sweep.name},
        },
        "spec": engine.trial_spec(sweep.spec, trial),
    }
    job, problems = validate_object(doc)
    if job is None or problems:
        message = "; ".join(str(p) for p in problems)[:1000]
        return _record(trial, state="Failed", message=f"invalid trial: {message}")
    log = output.resolve() / sweep.namespace / trial.name / TRAINER_LOG
    history = [t for t in trials if t.number != trial.number]
    watch = PruneWatch(sweep.spec, history, trial, log, console)
    result = run_local(
        job,
        output=output,
        datasets=datasets,
        models=models,
        console=console,
        verbose=verbose,
        on_start=watch,
        stopped=lambda: watch.pruned_at is not None,
    )
    ran = watch.finish()
    if watch.pruned_at is not None:
        last = ran.intermediate[-1].value if ran.intermediate else None
        return _record(
            ran,
            state="Pruned",
            value=last,
            message=f"pruned at step {watch.pruned_at} by the {sweep.spec.early_stopping} pruner",
        )
    if result.exit_code != contract.EXIT_OK:
        return _record(
            ran, state="Failed", message=f"the trainer exited with {result.exit_code} (log: {result.log_file})"
        )
    evaluation = result.record.get("evaluation") if isinstance(result.record, dict) else None
    trained = (
        evaluation.get("trained") if isinstance(evaluation, dict) and evaluation.get("state") == "Succeeded" else None
    )
    value = engine.objective_value(sweep.spec, trained)
    if value is None:
        why = evaluation.get("message") if isinstance(evaluation, dict) else "no evaluation in the run record"
        return _record(
            ran, state="Failed", message=f"no {sweep.spec.objective.metric} from the evaluation: {why}"[:1000]
        )
    return _record(ran, state="Succeeded", value=value)


def _record(trial: TrialRecord, **update: Any) -> TrialRecord:
    return TrialRecord.model_validate({**trial.model_dump(), **update})


# --- output ----------------------------------------------------------------------------------


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def table(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord]) -> str:
    """The study as a plain-text table: trial, parameters, state, value, and * on the best."""
    from kubetune import sweep as engine

    best = engine.best(spec, trials)
    paths = [p.path for p in spec.parameters]
    rows = [["TRIAL", *[p.upper() for p in paths], "STATE", spec.objective.metric.upper(), "BEST"]]
    for t in sorted(trials, key=lambda t: t.number):
        rows.append(
            [
                t.name,
                *[_param(t.parameters.get(p)) for p in paths],
                t.state,
                _value(t.value),
                "*" if best is not None and t.number == best.number else "",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def plot(spec: FineTuneSweepSpec, trials: Sequence[TrialRecord], width: int = 40) -> str:
    """A terminal plot of the objective across trials: one bar per trial (longer is better for the
    goal), the best-so-far line marked with ``|``."""
    scored = [t for t in sorted(trials, key=lambda t: t.number) if t.value is not None]
    if not scored:
        return "(no trial has a value yet)\n"
    values = [float(t.value or 0.0) for t in scored]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    better_low = spec.objective.goal == "minimize"
    lines = [
        f"{spec.objective.metric} by trial ({'lower' if better_low else 'higher'} is better; "
        "'#' ended, '~' pruned, '|' best so far)"
    ]
    best: float | None = None
    for t, v in zip(scored, values):
        if t.state == "Succeeded":
            best = v if best is None or (v < best if better_low else v > best) else best
        goodness = (hi - v) / span if better_low else (v - lo) / span
        cells = 1 + int(round(goodness * (width - 1)))
        mark = "#" if t.state == "Succeeded" else "~"
        bar = [mark] * cells + [" "] * (width - cells)
        if best is not None:
            at = min(width - 1, int(round(((hi - best) / span if better_low else (best - lo) / span) * (width - 1))))
            bar[at] = "|"
        lines.append(f"{t.number:>4} {''.join(bar)} {v:.4f}")
    return "\n".join(lines) + "\n"


def write_png(path: Path, spec: FineTuneSweepSpec, trials: Sequence[TrialRecord]) -> bool:
    """The objective across trials as a PNG (matplotlib, as ``kubetune plot``); False without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    for state, marker in (("Succeeded", "o"), ("Pruned", "x")):
        pts = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, marker=marker, label=state.lower())
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.objective.metric)
    ax.set_title(f"sweep: {spec.objective.metric} ({spec.objective.goal})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


# --- the command -----------------------------------------------------------------------------


def run_sweep(
    sweep: FineTuneSweep, *, output: Path, datasets: Path, models: Path, console: Console, verbose: bool = False
) -> tuple[list[TrialRecord], str]:
    """Run (or continue) the study until it is finished; returns the trials and why it ended."""
    from kubetune import sweep as engine

    path = study_path(output, sweep)
    trials, problem = load_study(path, sweep)
    if problem is not None:
        raise ValueError(problem)
    if trials:
        console.print(f"continuing the study in {path}: {engine.summary(sweep.spec, trials)}")
    while True:
        over, why = engine.finished(sweep.spec, trials)
        if over:
            return trials, why
        waiting = [t for t in trials if t.state in ("Pending", "Running")]
        if not waiting:
            new = engine.next_trials(sweep.spec, trials, 1, sweep.name)
            if not new:
                return trials, "no trial left to ask"
            trials = [*trials, *new]
            save_study(path, sweep, trials)
            waiting = new
        trial = waiting[0]
        shown = ", ".join(f"{k}={_param(v)}" for k, v in trial.parameters.items())
        console.print(
            f"[bold]trial {trial.name}[/bold] ({trial.number + 1} of at most {engine.trial_limit(sweep.spec)}): {shown}"
        )
        trials = [t.model_copy(update={"state": "Running"}) if t.number == trial.number else t for t in trials]
        save_study(path, sweep, trials)
        done = run_trial(
            sweep, trials, trial, output=output, datasets=datasets, models=models, console=console, verbose=verbose
        )
        trials = [done if t.number == trial.number else t for t in trials]
        save_study(path, sweep, trials)
        console.print(
            f"  {done.state}"
            + (f": {sweep.spec.objective.metric} {done.value:.4f}" if done.value is not None else "")
            + (f" ({done.message})" if done.message else "")
        )


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kubetune import sweep as engine
    from kubetune.localrun import local_only, refused

    console = Console()
    if not local_only(args, console, "sweep", "FineTuneSweep"):
        return 2
    sweep, problems = load_sweep(args.file)
    if sweep is None:
        return refused(problems)
    output = Path(args.output).resolve()
    started = time.monotonic()
    try:
        trials, why = run_sweep(
            sweep,
            output=output,
            datasets=Path(args.datasets),
            models=Path(args.models),
            console=console,
            verbose=args.verbose,
        )
    except ValueError as exc:
        print(line(f"kubetune sweep: {exc}"), file=sys.stderr)
        return 1
    path = study_path(output, sweep)
    print(f"\nstudy ended: {why} ({engine.summary(sweep.spec, trials)}, {time.monotonic() - started:.0f} s)")
    sys.stdout.write(table(sweep.spec, trials))
    print()
    sys.stdout.write(plot(sweep.spec, trials))
    png = path.with_name("sweep.png")
    print(f"study record: {path}" + (f"\nplot: {png}" if write_png(png, sweep.spec, trials) else ""))
    best = engine.best(sweep.spec, trials)
    if best is None:
        print("no trial succeeded", file=sys.stderr)
        return 1
    print(
        f"best trial: {best.name} ({sweep.spec.objective.metric} {best.value:.4f}), "
        f"outputs in {output / sweep.namespace / best.name}"
    )
    if sweep.spec.promote == "serve":
        print(f"promote: serve: `kubetune serve --local {output / sweep.namespace / best.name}` serves it here")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``sweep`` on the ``kubetune`` parser (called by kubetune.cli)."""
    p = sub.add_parser("sweep", help="run a FineTuneSweep (hyperparameter search) on this machine (--local)")
    p.add_argument("file", metavar="FILE", help="FineTuneSweep manifest ('-' reads stdin)")
    p.add_argument(
        "--local",
        action="store_true",
        help="run the trials here, one after another, instead of on a cluster (required)",
    )
    p.add_argument(
        "--output",
        default="outputs",
        help="outputs folder (like spec.template.storage.outputs); the study record goes to "
        "OUTPUT/NAMESPACE/SWEEP/study.json; default ./outputs",
    )
    p.add_argument("--datasets", default=".", help="folder spec.template.datasets[].path is relative to; default .")
    p.add_argument(
        "--models", default=".", help="folder spec.template.model.path is relative to, and the Hub cache; default ."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the trainer's full output")
    p.set_defaults(func=cmd_sweep)
