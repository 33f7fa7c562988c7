"""The evaluate stage (spec.evaluation): after training and export, on global rank 0.

The renderer wrote ``evaluate.json`` (:func:`kubetune.render.configs.evaluation_config`):
LLaMA-Factory runs for the trained model (and the base model with
``baseModel``), each ``mode: eval`` (``do_eval``: eval loss) or ``mode:
predict`` (``do_predict`` + ``predict_with_generate``: BLEU-4 and ROUGE via
LLaMA-Factory's ComputeSimilarity, which needs jieba, nltk and rouge-chinese).
All runs go through one child process (``python -m kubetune.trainer.evaluate
ARGS.json ...``, each run through ``llamafactory.train.tuner.run_exp``), so the
heavy imports are paid once.

Results: ``kubetune-eval.json`` beside the outputs (an
:class:`kubetune.api.EvaluationStatus`), the run record's ``evaluation`` and
the stage line ``evaluate`` ``end`` with ``evaluation``.  A failed evaluation
never fails the job: the model is already trained and exported; the stage
line then says ``state: Failed`` and why (it is an ``end`` event, not
``failed``, so a reader of stage lines never takes it for a failed training).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetune.api import EvaluationStatus, contract

from .config import JobConfig
from .errors import ConfigError, DataError
from .fsutil import write_text_atomic
from .launch import Child
from .train import child_env, scratch_dir

_DIST_ENV = (
    "FORCE_TORCHRUN",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NNODES",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
# An MPIJob rank's launcher variables: accelerate's PartialState (built by transformers'
# TrainingArguments) counts ``PMI_SIZE``/``OMPI_COMM_WORLD_SIZE``/``MV2_COMM_WORLD_SIZE`` > 1 as
# a MULTI_CPU launch even on a GPU (accelerate/state.py:788-795 @v1.11.0, images/trainer/pins.txt) and
# then refuses it without MASTER_ADDR or waits for the other ranks (state.py:239-253).
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
_MPI_ENV_PREFIXES = ("OMPI_COMM_WORLD_", "MV2_COMM_WORLD_")
_PREDICT_KEYS = {
    "predict_bleu-4": "bleu4",
    "predict_rouge-1": "rouge1",
    "predict_rouge-2": "rouge2",
    "predict_rouge-l": "rougeL",
}


def plan(cfg: JobConfig) -> dict[str, Any] | None:
    path = cfg.file(contract.EVAL_ARGS_FILE)
    if path is None:
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict) or not isinstance(value.get("runs"), list):
        raise ConfigError(f"{contract.EVAL_ARGS_FILE}: expected {{'runs': [...]}}")
    return value


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _lines(path: Path) -> int | None:
    try:
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError:
        return None


def collect(runs: list[dict[str, Any]], perplexity: bool) -> dict[str, dict[str, Any]]:
    """Metrics per model label from LLaMA-Factory's eval_results.json / predict_results.json."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        label, mode = str(run["model"]), str(run["mode"])
        folder = Path(str(run["args"]["output_dir"]))
        metrics = out.setdefault(label, {})
        if mode == "eval":
            found = _json(folder / "eval_results.json")
            loss = found.get("eval_loss")
            if not isinstance(loss, (int, float)) or not math.isfinite(loss):
                raise RuntimeError(
                    f"{label} model: LLaMA-Factory wrote no finite eval_loss in {folder / 'eval_results.json'}"
                )
            metrics["evalLoss"] = round(float(loss), 6)
            if perplexity:
                metrics["perplexity"] = round(math.exp(min(float(loss), 700.0)), 4)
        else:
            found = _json(folder / "predict_results.json")
            missing = [k for k in _PREDICT_KEYS if not isinstance(found.get(k), (int, float))]
            if missing:
                raise RuntimeError(
                    f"{label} model: LLaMA-Factory's predict mode wrote no {', '.join(missing)} in "
                    f"{folder / 'predict_results.json'}"
                )
            metrics.update({name: round(float(found[k]), 4) for k, name in _PREDICT_KEYS.items()})
            samples = _lines(folder / "generated_predictions.jsonl")
            if samples is not None:
                metrics["samples"] = samples
    return out


def summary(trained: Mapping[str, Any], base: Mapping[str, Any] | None) -> str:
    """``ppl 12.1 (base 40.3) bleu4 20.5`` - what the Eval printer column shows."""
    parts: list[str] = []
    for key, short in (("perplexity", "ppl"), ("evalLoss", "loss"), ("bleu4", "bleu4"), ("rougeL", "rougeL")):
        if key == "evalLoss" and "perplexity" in trained:
            continue
        if key in trained:
            text = f"{short} {trained[key]:.4g}"
            if base and key in base:
                text += f" (base {base[key]:.4g})"
            parts.append(text)
    return " ".join(parts)[:128]


def results_path(cfg: JobConfig) -> Path:
    return cfg.output_dir / contract.EVAL_RESULTS_FILE


def _write(cfg: JobConfig, status: dict[str, Any]) -> dict[str, Any]:
    status = EvaluationStatus.model_validate({**status, "path": str(results_path(cfg))}).to_api()
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results_path(cfg), json.dumps(status, indent=2) + "\n")
    return status


def failed(cfg: JobConfig, message: str) -> dict[str, Any]:
    """Record a failed evaluation (the trained model stays; the job still succeeds)."""
    return _write(cfg, {"state": "Failed", "message": message[-4000:], "summary": "failed"})


def eval_env(cfg: JobConfig, env: Mapping[str, str]) -> dict[str, str]:
    """The evaluation child's environment: one process, not distributed, on one GPU.

    Without the distributed variables but with every GPU of the pod visible, transformers
    counts ``n_gpu = torch.cuda.device_count()`` and reports ParallelMode.NOT_DISTRIBUTED
    for n_gpu > 1 (transformers/training_args.py:1902 and 1950-1951 @5.6.0), which
    LLaMA-Factory refuses: "Please launch distributed training with `llamafactory-cli` or
    `torchrun`." (src/llamafactory/hparams/parser.py:350-351 @v0.9.5).  So the child sees
    only the first GPU of the pod (the first of CUDA_VISIBLE_DEVICES when it is set: an index or
    a GPU-/MIG- UUID, both valid CUDA_VISIBLE_DEVICES entries), and no MPI rank variables.
    A model that fits only sharded cannot be evaluated this way (docs/evaluation.md)."""
    plain = {
        k: v for k, v in env.items() if k not in _DIST_ENV and k not in _MPI_ENV and not k.startswith(_MPI_ENV_PREFIXES)
    }
    if cfg.job.spec.resources.gpus_per_node > 1:
        visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        plain["CUDA_VISIBLE_DEVICES"] = visible[0] if visible else "0"
    return child_env(plain)


def run(cfg: JobConfig, env: Mapping[str, str]) -> dict[str, Any] | None:
    """Run every evaluation; returns the EvaluationStatus (camelCase) written to kubetune-eval.json."""
    p = plan(cfg)
    if p is None:
        return None
    runs: list[dict[str, Any]] = p["runs"]
    from .data import eval_data_problem  # noqa: PLC0415 - data imports nothing heavy; kept local to avoid a cycle

    problem = eval_data_problem(cfg)
    if problem is not None:
        raise DataError(f"the held-out data is unusable: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="kubetune-eval-", dir=scratch_dir(env)))
    files: list[str] = []
    try:
        for i, run_ in enumerate(runs):
            out = Path(str(run_["args"]["output_dir"]))
            shutil.rmtree(out, ignore_errors=True)  # never read an earlier attempt's results
            f = folder / f"run-{i}.json"
            f.write_text(json.dumps(run_["args"]), encoding="utf-8")
            files.append(str(f))
        Child([sys.executable, "-m", "kubetune.trainer.evaluate", *files], eval_env(cfg, env)).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    metrics = collect(runs, bool(p.get("perplexity")))
    trained, base = metrics.get("trained", {}), metrics.get("base")
    status: dict[str, Any] = {"state": "Succeeded", "trained": trained, "summary": summary(trained, base)}
    if base is not None:
        status["base"] = base
    return _write(cfg, status)


def _main(argv: list[str]) -> int:
    """Child process: each argument is one JSON file of LLaMA-Factory arguments, run in order."""
    from llamafactory.train.tuner import run_exp  # noqa: PLC0415 - heavy, child only

    from .heavy import skip_unused_deepspeed  # noqa: PLC0415

    skip_unused_deepspeed()  # DeepSpeed only where a run uses it (kubetune.trainer.heavy)
    for path in argv:
        run_exp(json.loads(Path(path).read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
