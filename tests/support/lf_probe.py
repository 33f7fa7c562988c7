"""Child process for tests/trainer/test_posttrain_upstream.py: run the pinned LLaMA-Factory
on a list of tasks in one process (its imports cost ~10 s), and write what happened.

``python lf_probe.py TASKS.json RESULTS.json``; each task is
``{"kind": "train" | "export" | "dataset" | "ref_model", "args": {...LLaMA-Factory args...}}``
(``dataset`` also has ``stage``, the stage LLaMA-Factory's workflow loads data for). A task
that raises records the exception instead of stopping the others.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _train(args: dict[str, Any]) -> dict[str, Any]:
    from llamafactory.train.tuner import run_exp  # noqa: PLC0415

    run_exp(dict(args))
    log = Path(args["output_dir"]) / "trainer_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {
        "losses": [r["loss"] for r in records if "loss" in r],
        "files": sorted(p.name for p in Path(args["output_dir"]).iterdir()),
    }


def _export(args: dict[str, Any]) -> dict[str, Any]:
    from llamafactory.train.tuner import export_model  # noqa: PLC0415

    export_model(dict(args))
    return {"files": sorted(p.name for p in Path(args["export_dir"]).iterdir())}


def _dataset(args: dict[str, Any], stage: str) -> dict[str, Any]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: PLC0415
    from llamafactory.hparams import get_train_args  # noqa: PLC0415
    from llamafactory.model import load_tokenizer  # noqa: PLC0415

    model_args, data_args, training_args, _, _ = get_train_args(dict(args))
    module = load_tokenizer(model_args)
    tokenizer = module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    data = get_dataset(template, model_args, data_args, training_args, stage, **module)  # type: ignore[arg-type]
    train = data["train_dataset"]
    first = train[0]
    ids = first.get("input_ids") or first.get("chosen_input_ids") or first.get("completion_input_ids") or []
    return {"rows": len(train), "first": tokenizer.decode(ids)}


def _ref_model(args: dict[str, Any]) -> dict[str, Any]:
    from llamafactory.hparams import get_train_args  # noqa: PLC0415
    from llamafactory.train.trainer_utils import create_ref_model  # noqa: PLC0415

    model_args, _, _, finetuning_args, _ = get_train_args(dict(args))
    ref = create_ref_model(model_args, finetuning_args)
    kinds = sorted({type(m).__name__ for m in ref.modules() if "Linear" in type(m).__name__}) if ref is not None else []
    return {"linear_kinds": kinds}


def main(tasks_file: str, results_file: str) -> int:
    tasks = json.loads(Path(tasks_file).read_text())
    results: list[dict[str, Any]] = []
    for task in tasks:
        started = time.monotonic()
        try:
            if task["kind"] == "train":
                results.append(_train(task["args"]))
            elif task["kind"] == "export":
                results.append(_export(task["args"]))
            elif task["kind"] == "dataset":
                results.append(_dataset(task["args"], task["stage"]))
            else:
                results.append(_ref_model(task["args"]))
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to read
            results.append({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
        results[-1]["seconds"] = round(time.monotonic() - started, 2)
        Path(results_file).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
