"""Issue 21 proved with the pinned LLaMA-Factory and TRL themselves, on the tiny model, in one
child process (tests/support/lf_probe.py): which DPO loss really runs, that LLaMA-Factory's loader
keeps every record of the dataset_info.json kubetune renders, that a reward model's export keeps
its value head, and that a QLoRA job's reference model is quantized."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from kubetune.api import FineTuneJob, contract
from kubetune.render import RenderOptions, render
from kubetune.render.chain import ModelSource
from kubetune.render.checks import IGNORED_PREFERENCE_LOSSES
from kubetune.trainer.tiny import QA_PAIRS, preference_records, tiny_job, write_jsonl
from kubetune.trainer import config
from kubetune.trainer import data as data_stage
from tests.support.trainerlib import TinyAssets, isolated_env, make_pod, pod_layout

pytestmark = [pytest.mark.train, pytest.mark.slow]

BETA = 0.1
LOSSES = ("sigmoid", "hinge", "ipo", "kto_pair")
# The first step of a LoRA policy: B = 0, so policy and reference (the adapter disabled) give
# the same log-probabilities and TRL's logits = (pi_c - pi_r) - (ref_c - ref_r) = 0 exactly.
# What each formula gives there (trl/trainer/dpo_trainer.py:1130-1150 @v0.24.0):
FIRST_STEP = {
    "sigmoid": math.log(2),  # -logsigmoid(beta * 0)
    "hinge": 1.0,  # relu(1 - beta * 0)
    "ipo": (0 - 1 / (2 * BETA)) ** 2,  # (logits - 1/(2 beta))^2 = 25
    "kto_pair": None,  # gone from TRL (DPOTrainer: "Support for kto_pair has been removed")
}
N = 8


def _manifest(
    name: str, assets: TinyAssets, training: dict[str, Any], datasets: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    m = tiny_job(name, assets, method=spec.pop("method", "lora"), max_steps=1)
    m["spec"]["training"].update(perDeviceBatchSize=2, **training)
    m["spec"]["datasets"] = datasets
    m["spec"].update(spec)
    return m


def _render(
    root: Path, assets: TinyAssets, manifest: dict[str, Any], source: ModelSource | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    layout = pod_layout(root, assets)
    rendered = render(FineTuneJob.from_api(manifest), RenderOptions(layout=layout, model_source=source))
    args = dict(rendered.train_args)
    # What the trainer's data stage does: dataset_info.json in dataset_dir, read by LLaMA-Factory.
    Path(args["dataset_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(args["dataset_dir"]) / "dataset_info.json").write_text(rendered.files[contract.DATASET_INFO_FILE])
    return args, dict(rendered.files)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, tiny_assets: TinyAssets) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("posttrain-upstream")
    data = root / "datasets"
    assets = TinyAssets(
        tiny_assets.root, tiny_assets.models_dir, data, tiny_assets.model_path, tiny_assets.dataset_path
    )
    pairs = preference_records(N, fmt="alpaca")
    write_jsonl(data / "pairs.jsonl", pairs)
    # Renamed prompt column, plus an input the DPO prompt must keep.
    write_jsonl(
        data / "pairs-q.jsonl",
        [
            {"question": r["instruction"], "input": f"CONTEXT{i}", "chosen": r["chosen"], "rejected": r["rejected"]}
            for i, r in enumerate(pairs)
        ],
    )
    # No `input` column at all: the trainer leaves the named default out of what LLaMA-Factory reads.
    write_jsonl(data / "sft-q.jsonl", [{"question": q, "output": a} for q, a in (QA_PAIRS * 2)[:N]])
    write_jsonl(
        data / "kto-q.jsonl",
        [{"question": q, "output": a, "label": i % 2 == 0} for i, (q, a) in enumerate((QA_PAIRS * 2)[:N])],
    )
    write_jsonl(data / "text.jsonl", [{"text": f"{q} {a}"} for q, a in (QA_PAIRS * 2)[:N]])
    ranking = [{"name": "pairs", "path": "pairs.jsonl", "format": "alpaca", "ranking": True}]
    renamed = {"prompt": "question"}

    tasks: list[dict[str, Any]] = []
    for loss in LOSSES:
        args, _ = _render(
            root,
            assets,
            _manifest(
                f"dpo-{loss.replace('_', '-')}",
                assets,
                {"stage": "dpo", "preference": {"loss": loss, "beta": BETA}},
                ranking,
            ),
        )
        tasks.append({"kind": "train", "args": args})
    for name, stage, lf_stage, dataset in (
        ("sft", "sft", "sft", {"name": "sftq", "path": "sft-q.jsonl", "format": "alpaca", "columns": renamed}),
        (
            "dpo",
            "dpo",
            "rm",
            {"name": "pairsq", "path": "pairs-q.jsonl", "format": "alpaca", "ranking": True, "columns": renamed},
        ),
        (
            "kto",
            "kto",
            "kto",
            {"name": "ktoq", "path": "kto-q.jsonl", "format": "alpaca", "columns": {**renamed, "ktoTag": "label"}},
        ),
        ("pt", "pt", "pt", {"name": "text", "path": "text.jsonl", "format": "alpaca", "columns": {"prompt": "text"}}),
    ):
        # As in the pod: the trainer's data stage checks the records and writes the
        # dataset_info.json LLaMA-Factory reads.
        pod = make_pod(
            root / f"load-{name}",
            _manifest(
                f"load-{name}", assets, {"stage": stage, "cutoffLength": 16 if stage == "pt" else 256}, [dataset]
            ),
            assets,
        )
        data_stage.prepare(config.load(pod.env), pod.env)
        tasks.append(
            {"kind": "dataset", "stage": lf_stage, "args": yaml.safe_load(pod.files[contract.TRAIN_ARGS_FILE])}
        )
    rm_args, rm_files = _render(
        root, assets, _manifest("rm", assets, {"stage": "rm"}, ranking, export={"enabled": True})
    )
    tasks.append({"kind": "train", "args": rm_args})
    tasks.append({"kind": "export", "args": yaml.safe_load(rm_files[contract.EXPORT_ARGS_FILE])})
    # QLoRA DPO on the sigmoid job's adapter (model.fromJob): the reference is base + that adapter.
    source = ModelSource(
        "dpo-sigmoid",
        str(assets.models_dir / assets.model_path),
        adapter=tasks[0]["args"]["output_dir"],
        kind="adapter",
        stage="dpo",
    )
    qlora = _manifest("dpo-qlora", assets, {"stage": "dpo"}, ranking, method="qlora", quantization={"bits": 4})
    qlora["spec"]["model"] = {"fromJob": "dpo-sigmoid", "template": "qwen"}
    args, _ = _render(root, assets, qlora, source)
    tasks.append({"kind": "ref_model", "args": args})

    (root / "tasks.json").write_text(json.dumps(tasks))
    env = isolated_env(root / "env")
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "support" / "lf_probe.py"),
            str(root / "tasks.json"),
            str(root / "results.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=scaled(600),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((root / "results.json").read_text())
    return {
        "dpo": dict(zip(LOSSES, results[:4])),
        "sft": results[4],
        "dpo_data": results[5],
        "kto": results[6],
        "pt": results[7],
        "rm": results[8],
        "export": results[9],
        "ref": results[10],
    }


def test_only_sigmoid_dpo_runs_whatever_the_loss_and_kubetune_refuses_the_others(probe: dict[str, Any]) -> None:
    first = {}
    for loss, result in probe["dpo"].items():
        assert "error" not in result, result
        first[loss] = result["losses"][0]
    assert first["sigmoid"] == pytest.approx(FIRST_STEP["sigmoid"], abs=1e-3)
    # The losses whose first step is not what their formula gives did not take effect ...
    not_taking_effect = {
        loss
        for loss, value in first.items()
        if FIRST_STEP[loss] is None or value != pytest.approx(FIRST_STEP[loss], abs=1e-3)
    }
    # ... they trained sigmoid DPO instead,
    assert all(first[loss] == pytest.approx(FIRST_STEP["sigmoid"], abs=1e-3) for loss in not_taking_effect)
    # and they are exactly the ones kubetune refuses for the default image.
    assert not_taking_effect == set(IGNORED_PREFERENCE_LOSSES)


def test_llamafactory_keeps_every_record_of_a_renamed_alpaca_column(probe: dict[str, Any]) -> None:
    for stage in ("sft", "dpo_data", "kto", "pt"):
        result = probe[stage]
        assert "error" not in result, (stage, result)
        if stage != "pt":  # pt packs the text into cutoffLength blocks
            assert result["rows"] == N, stage  # LLaMA-Factory drops what it cannot convert
    assert probe["pt"]["rows"] >= 1
    assert "CONTEXT0" in probe["dpo_data"]["first"]  # DPO keeps the input column


def test_reward_model_export_carries_the_value_head(probe: dict[str, Any]) -> None:
    assert "error" not in probe["rm"], probe["rm"]
    assert "value_head.safetensors" in probe["rm"]["files"]
    assert "error" not in probe["export"], probe["export"]
    assert "value_head.safetensors" in probe["export"]["files"]


def test_qlora_reference_model_is_loaded_in_4_bit(probe: dict[str, Any]) -> None:
    assert "error" not in probe["ref"], probe["ref"]
    assert "Linear4bit" in probe["ref"]["linear_kinds"]
