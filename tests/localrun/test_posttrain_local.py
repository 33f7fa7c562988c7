"""Post-training through ``kubetune run --local`` as a user runs it (the CLI, in a subprocess),
on the tiny random Qwen2: DPO, ORPO, KTO and reward modelling; an SFT -> DPO recipe file whose
second job trains on the first job's merged model; evaluation after training, and a corrupted
held-out set that fails the evaluation but keeps the trained model and the exit code."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from kubetune.api import EvaluationStatus, contract
from kubetune.trainer.tiny import TinyAssets, kto_records, preference_records, tiny_job, write_jsonl
from tests.support.localrunlib import KUBETUNE, run_local
from tests.support.trainerlib import isolated_env

pytestmark = [pytest.mark.slow, pytest.mark.train]


@pytest.fixture(scope="module")
def assets(tiny_assets: TinyAssets) -> TinyAssets:
    a = tiny_assets  # the session's (tests/conftest.py); these dataset files are this module's own
    write_jsonl(a.datasets_dir / "pairs.jsonl", preference_records(8))
    write_jsonl(a.datasets_dir / "pairs-alpaca.jsonl", preference_records(8, fmt="alpaca"))
    write_jsonl(a.datasets_dir / "kto.jsonl", kto_records(8))
    return a


def _job(
    name: str,
    assets: TinyAssets,
    stage: str,
    dataset: dict[str, Any],
    *,
    steps: int = 10,
    lr: float = 1e-2,
    **training: Any,
) -> dict[str, Any]:
    job = tiny_job(name, assets, method="lora", max_steps=steps, learning_rate=lr)
    job["spec"]["datasets"] = [dataset]
    job["spec"]["training"].update(stage=stage, **training)
    return job


def _run(
    tmp_path: Path, assets: TinyAssets, docs: list[dict[str, Any]]
) -> tuple[subprocess.CompletedProcess[str], float]:
    job_file = tmp_path / "jobs.yaml"
    job_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    started = time.monotonic()
    result = run_local(
        job_file,
        isolated_env(tmp_path / "env"),
        tmp_path,
        scaled(900),
        models=assets.models_dir,
        datasets=assets.datasets_dir,
    )
    return result, time.monotonic() - started


def _losses(job_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (job_dir / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    return [float(r["loss"]) for r in rows if "loss" in r]


def _record(job_dir: Path) -> dict[str, Any]:
    return dict(json.loads((job_dir / contract.RUN_RECORD_FILE).read_text()))


@pytest.mark.timeout(600)  # five real trainings in one `run --local`
def test_dpo_orpo_kto_and_reward_modelling_train_through_run_local(tmp_path: Path, assets: TinyAssets) -> None:
    pairs = {"name": "pairs", "path": "pairs.jsonl", "ranking": True}
    docs = [
        _job("dpo", assets, "dpo", pairs, preference={"beta": 0.1}),
        _job(
            "orpo",
            assets,
            "dpo",
            {"name": "pairs", "path": "pairs-alpaca.jsonl", "format": "alpaca", "ranking": True},
            steps=5,
            preference={"loss": "orpo"},
        ),
        _job(
            "kto",
            assets,
            "kto",
            {"name": "kto", "path": "kto.jsonl", "columns": {"ktoTag": "label"}},
            kto={"desirableWeight": 1.0, "undesirableWeight": 1.0},
        ),
        _job("rm", assets, "rm", pairs),
    ]
    docs[0]["spec"]["evaluation"] = {"valSize": 0.25}
    result, seconds = _run(tmp_path, assets, docs)
    print(f"4 post-training jobs (+ DPO evaluation) through run --local: {seconds:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    out = tmp_path / "out" / "default"
    for name in ("dpo", "orpo", "kto", "rm"):
        record = _record(out / name)
        assert record["outcome"] == "Succeeded", record["message"]
        losses = _losses(out / name)
        assert losses and all(math.isfinite(x) for x in losses), (name, losses)
        print(f"  {name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")

    # The rendered arguments are LLaMA-Factory's own names for each stage.
    def train_yaml(name: str) -> dict[str, Any]:
        return dict(
            yaml.safe_load((tmp_path / "out" / ".kubetune" / f"default-{name}" / "config" / "train.yaml").read_text())
        )

    assert train_yaml("dpo")["stage"] == "dpo" and train_yaml("dpo")["pref_loss"] == "sigmoid"
    assert train_yaml("orpo")["pref_loss"] == "orpo"
    assert train_yaml("kto")["stage"] == "kto" and train_yaml("kto")["kto_chosen_weight"] == 1.0
    # DPO starts with the policy equal to its reference model: the loss is exactly ln 2, and it falls.
    dpo = _losses(out / "dpo")
    assert abs(dpo[0] - math.log(2)) < 1e-3, dpo
    assert sum(dpo[-3:]) / 3 < dpo[0] - 0.02, dpo
    # Evaluated against its starting model (not against itself, which is ln 2 by definition).
    evaluation = _record(out / "dpo")["evaluation"]
    assert evaluation["state"] == "Succeeded" and "perplexity" not in evaluation["trained"]
    assert (
        math.isfinite(evaluation["trained"]["evalLoss"]) and abs(evaluation["trained"]["evalLoss"] - math.log(2)) > 1e-4
    ), evaluation
    # ORPO has no reference model: its loss (NLL + odds ratio) falls from the start.
    orpo = _losses(out / "orpo")
    assert orpo[-1] < orpo[0], orpo
    # KTO and the reward model (pairwise ranking loss) learn the 8 pairs.
    for name in ("kto", "rm"):
        losses = _losses(out / name)
        assert sum(losses[-3:]) / 3 < losses[0] - 0.02, (name, losses)
    # The reward model keeps its value head next to the adapter (what PPO would load).
    assert (out / "rm" / "value_head.safetensors").is_file() or (out / "rm" / "value_head.bin").is_file()


@pytest.mark.timeout(300)  # two trainings and an evaluation
def test_sft_then_dpo_recipe_runs_in_order_and_evaluates(tmp_path: Path, assets: TinyAssets) -> None:
    sft = tiny_job("tiny-sft", assets, method="lora", max_steps=8, learning_rate=1e-2, export=True)
    sft["spec"]["evaluation"] = {"valSize": 0.25, "generation": True, "maxNewTokens": 8, "baseModel": True}
    dpo = _job(
        "tiny-dpo",
        assets,
        "dpo",
        {"name": "pairs", "path": "pairs.jsonl", "ranking": True},
        steps=4,
        preference={"beta": 0.1},
    )
    dpo["spec"]["model"] = {"fromJob": "tiny-sft", "template": "qwen"}
    # The dependent job comes first in the file: run --local still runs its source first.
    result, seconds = _run(tmp_path, assets, [dpo, sft])
    print(f"SFT (+export, evaluation with base model) -> DPO recipe through run --local: {seconds:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    out = tmp_path / "out" / "default"
    first, second = _record(out / "tiny-sft"), _record(out / "tiny-dpo")
    assert first["outcome"] == second["outcome"] == "Succeeded"
    assert first["finishedAt"] <= second["startedAt"]
    assert second["trainArgs"]["model_name_or_path"] == str(out / "tiny-sft" / contract.MERGED_SUBDIR)
    assert "adapter_name_or_path" not in second["trainArgs"]
    assert result.stdout.index("FineTuneJob tiny-sft") < result.stdout.index("FineTuneJob tiny-dpo")

    # Evaluation: a file beside the outputs, the run record and the stage line agree.
    written = json.loads((out / "tiny-sft" / contract.EVAL_RESULTS_FILE).read_text())
    status = EvaluationStatus.model_validate(written)
    assert status.state == "Succeeded" and written == first["evaluation"]
    assert status.trained is not None and status.base is not None
    for metrics in (status.trained, status.base):
        assert metrics.eval_loss is not None and math.isfinite(metrics.eval_loss)
        assert metrics.perplexity == pytest.approx(math.exp(metrics.eval_loss), rel=1e-3)
        for value in (metrics.bleu4, metrics.rouge1, metrics.rouge2, metrics.rouge_l):
            assert value is not None and 0 <= value <= 100
    # Trained on the same questions, the model beats the random base on the held-out quarter.
    assert status.trained.eval_loss < status.base.eval_loss
    assert status.summary.startswith("ppl ") and "(base " in status.summary
    assert f"evaluation: {status.summary}" in result.stdout
    assert first["stages"]["evaluate"]["evaluation"]["state"] == "Succeeded"


def test_a_corrupted_held_out_set_fails_the_evaluation_but_keeps_the_model(tmp_path: Path, assets: TinyAssets) -> None:
    # A held-out record the data stage rejects: the job must still train and succeed.
    write_jsonl(
        assets.datasets_dir / "bad-eval" / "heldout.jsonl",
        [{"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]}],
    )
    job = tiny_job("eval-broken", assets, method="full", max_steps=3)
    job["spec"]["evaluation"] = {"datasets": [{"name": "heldout", "path": "bad-eval/heldout.jsonl"}]}
    result, seconds = _run(tmp_path, assets, [job])
    print(f"full SFT with a corrupted held-out set: {seconds:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    job_dir = tmp_path / "out" / "default" / "eval-broken"
    record = _record(job_dir)
    assert record["outcome"] == "Succeeded" and (job_dir / "model.safetensors").is_file()
    evaluation = record["evaluation"]
    assert evaluation["state"] == "Failed"
    assert "dataset 'heldout', record 0, field 'conversations[1].from'" in evaluation["message"]
    assert json.loads((job_dir / contract.EVAL_RESULTS_FILE).read_text()) == evaluation
    assert "evaluation failed (the trained model is kept)" in result.stdout


def test_chat_takes_the_cli_demo_sampling_settings(tmp_path: Path, assets: TinyAssets) -> None:
    env = isolated_env(tmp_path / "env")
    model = str(assets.models_dir / assets.model_path)
    base = [*KUBETUNE, "chat", model, "--template", "qwen", "--message", "Say hello."]
    started = time.monotonic()
    sampled = subprocess.run(
        [*base, "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens", "6", "--system", "You are terse."],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    print(f"chat with sampling settings: {time.monotonic() - started:.1f} s")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    for bad, flag in (
        (["--top-p", "0"], "--top-p"),
        (["--temperature", "-1"], "--temperature"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ):
        refused = subprocess.run(
            [*base, *bad], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(60)
        )
        assert refused.returncode == 2 and flag in refused.stderr, refused.stderr


def test_ppo_is_refused_before_any_work_with_the_reason(tmp_path: Path, assets: TinyAssets) -> None:
    """LLaMA-Factory 0.9.5's PPO trainer requires trl 0.8.6-0.9.6 while the package requires
    trl>=0.18: with the pinned stack it cannot run, so the trainer says so before loading anything."""
    rm = _job("rm-for-ppo", assets, "rm", {"name": "pairs", "path": "pairs.jsonl", "ranking": True})
    ppo = tiny_job("ppo", assets, method="lora", max_steps=2)
    ppo["spec"]["training"].update(stage="ppo", ppo={"rewardModel": {"fromJob": "rm-for-ppo"}, "maxNewTokens": 8})
    # The reward job is not run: a record stands in for its success (run --local reads earlier runs' records).
    record_dir = tmp_path / "out" / "default" / "rm-for-ppo"
    record_dir.mkdir(parents=True)
    (record_dir / contract.RUN_RECORD_FILE).write_text(
        json.dumps({"spec": rm["spec"], "outcome": "Succeeded", "message": "trained"})
    )
    result, seconds = _run(tmp_path, assets, [ppo])
    print(f"PPO refusal: {seconds:.1f} s")
    assert result.returncode == contract.EXIT_CONFIG, result.stdout[-3000:] + result.stderr[-3000:]
    assert "trl 0.8.6-0.9.6" in result.stdout + result.stderr
    train_yaml = yaml.safe_load((tmp_path / "out" / ".kubetune" / "default-ppo" / "config" / "train.yaml").read_text())
    assert train_yaml["reward_model"] == str(record_dir) and train_yaml["reward_model_type"] == "lora"
    assert not (tmp_path / "out" / "default" / "ppo" / "trainer_log.jsonl").exists()
