"""Post-training rendering: stage arguments under LLaMA-Factory 0.9.5's names, ranking/KTO
dataset_info entries, evaluate.json, and the fromJob decision (resolve_from_job) the
operator's decide step and ``kubetune run --local`` share; the recipe example renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import FineTuneJob, contract, load_documents
from kubetune.api.contract import Layout
from kubetune.render import RenderOptions, render, validate_object
from kubetune.render.catalog import catalog
from kubetune.render.chain import Failed, ModelSource, Waiting, resolve_from_job, with_sources

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "recipes" / "sft-then-dpo.yaml"


def _job(patch: dict[str, Any] | None = None, name: str = "j", **spec: Any) -> FineTuneJob:
    obj: dict[str, Any] = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": {"name": "Qwen/Qwen1.5-1.8B", "template": "qwen"},
            "datasets": [{"name": "d", "hub": "o/d"}],
            "storage": {"outputs": {"claimName": "outputs"}},
            **spec,
        },
    }
    job, problems = validate_object(obj)
    assert job is not None and not problems, problems
    return job


def test_stage_arguments_use_llamafactory_names_that_exist() -> None:
    known = catalog().args
    jobs = [
        _job(training={"stage": "dpo", "preference": {"beta": 0.3, "loss": "simpo", "ftx": 0.5, "simpoGamma": 0.8}}, datasets=[{"name": "p", "hub": "o/p", "ranking": True}]),
        _job(training={"stage": "kto", "preference": {"beta": 0.2}, "kto": {"desirableWeight": 1.0, "undesirableWeight": 1.5}}, datasets=[{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}]),
        _job(training={"stage": "ppo", "ppo": {"rewardModel": {"path": "rm/qwen"}, "bufferSize": 2, "epochs": 3, "scoreNorm": True, "targetKl": 4.0, "whitenRewards": True, "maxNewTokens": 32}}),
    ]
    dpo, kto, ppo = (render(j, RenderOptions()).train_args for j in jobs)
    assert (dpo["stage"], dpo["pref_beta"], dpo["pref_loss"], dpo["pref_ftx"], dpo["simpo_gamma"]) == ("dpo", 0.3, "simpo", 0.5, 0.8)
    assert (kto["stage"], kto["pref_beta"], kto["kto_chosen_weight"], kto["kto_rejected_weight"]) == ("kto", 0.2, 1.0, 1.5)
    assert "pref_loss" not in kto
    assert ppo["reward_model"] == "/data/models/rm/qwen" and ppo["reward_model_type"] == "full"
    assert (ppo["ppo_buffer_size"], ppo["ppo_epochs"], ppo["ppo_score_norm"], ppo["ppo_target"], ppo["ppo_whiten_rewards"], ppo["max_new_tokens"]) == (2, 3, True, 4.0, True, 32)
    for args in (dpo, kto, ppo):
        assert [k for k in args if k not in known] == []
        assert all(known[k].accepts(v) for k, v in args.items() if k.startswith(("pref_", "kto_", "ppo_", "simpo", "reward")))


def test_ranking_and_kto_datasets_render_their_columns() -> None:
    dpo = _job(training={"stage": "dpo"}, datasets=[{"name": "p", "hub": "o/p", "ranking": True, "columns": {"chosen": "better"}}])
    info = json.loads(render(dpo).files[contract.DATASET_INFO_FILE])
    assert info["p"]["ranking"] is True
    assert info["p"]["columns"] == {"chosen": "better", "messages": "conversations", "rejected": "rejected"}
    kto = _job(training={"stage": "kto"}, datasets=[{"name": "k", "hub": "o/k", "format": "alpaca", "columns": {"ktoTag": "label"}}])
    info = json.loads(render(kto).files[contract.DATASET_INFO_FILE])
    assert "ranking" not in info["k"] and info["k"]["columns"] == {"kto_tag": "label", "prompt": "instruction"}


def test_evaluation_holds_out_the_same_split_it_scores() -> None:
    job = _job(evaluation={"valSize": 0.1, "generation": True, "baseModel": True}, training={"maxSamples": 500, "seed": 7})
    rendered = render(job)
    train = rendered.train_args
    plan = json.loads(rendered.files[contract.EVAL_ARGS_FILE])
    assert train["val_size"] == 0.1 and "eval_strategy" not in train  # held out of training, not evaluated during it
    assert [(r["model"], r["mode"]) for r in plan["runs"]] == [("trained", "eval"), ("trained", "predict"), ("base", "eval"), ("base", "predict")]
    assert plan["perplexity"] is True
    for run in plan["runs"]:
        args = run["args"]
        assert (args["dataset"], args["val_size"], args["seed"], args["max_samples"]) == (train["dataset"], 0.1, 7, 500)
        assert args["do_train"] is False
    trained, base = plan["runs"][0]["args"], plan["runs"][2]["args"]
    assert trained["adapter_name_or_path"] == train["output_dir"] and trained["model_name_or_path"] == "Qwen/Qwen1.5-1.8B"
    assert "adapter_name_or_path" not in base
    assert plan["runs"][1]["args"]["predict_with_generate"] is True


def test_named_eval_datasets_are_registered_and_checked_like_training_data() -> None:
    job = _job(method="full", evaluation={"datasets": [{"name": "test", "hub": "o/d", "split": "test"}], "maxSamples": 20})
    rendered = render(job)
    info = json.loads(rendered.files[contract.DATASET_INFO_FILE])
    assert set(info) == {"d", "test"}
    run = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    assert run["eval_dataset"] == "test" and run["max_samples"] == 20 and run["model_name_or_path"] == rendered.train_args["output_dir"]
    assert "val_size" not in rendered.train_args


# --- fromJob ---------------------------------------------------------------------------


def _source(name: str = "sft", phase: str | None = "Succeeded", **spec: Any) -> dict[str, Any]:
    obj = _job(name=name, **spec).to_api()
    if phase is not None:
        obj["status"] = {"phase": phase, "message": "loss diverged"}
    return obj


CHILD = {"model": {"fromJob": "sft", "template": "qwen"}, "training": {"stage": "dpo"}, "datasets": [{"name": "p", "hub": "o/p", "ranking": True}]}


def test_resolve_from_job_waits_fails_or_resolves() -> None:
    child = _job(name="dpo", **CHILD)
    missing = resolve_from_job(child, None)
    assert isinstance(missing, Failed) and missing.reason == "FromJobNotFound" and "sft" in missing.message and "ml" in missing.message
    for phase in (None, "Pending", "Running", "Exporting"):
        waiting = resolve_from_job(child, _source(phase=phase))
        assert isinstance(waiting, Waiting) and waiting.reason == "WaitingForJob" and "sft" in waiting.message
    failed = resolve_from_job(child, _source(phase="Failed"))
    assert isinstance(failed, Failed) and failed.reason == "FromJobFailed" and "loss diverged" in failed.message
    merged = resolve_from_job(child, _source(export={"enabled": True}))
    assert merged == ModelSource("sft", "/data/outputs/ml/sft/merged", kind="merged", stage="sft")
    adapter = resolve_from_job(child, _source())
    assert adapter == ModelSource("sft", "Qwen/Qwen1.5-1.8B", adapter="/data/outputs/ml/sft", kind="adapter", stage="sft")
    full = resolve_from_job(child, _source(method="full"))
    assert isinstance(full, ModelSource) and full.model == "/data/outputs/ml/sft" and full.adapter is None


def test_an_adapter_is_checked_against_the_method() -> None:
    full_child = _job(name="dpo", **{**CHILD, "method": "full"})
    mismatch = resolve_from_job(full_child, _source())
    assert isinstance(mismatch, Failed) and mismatch.reason == "FromJobAdapterMismatch" and "export.enabled" in mismatch.message
    assert isinstance(resolve_from_job(full_child, _source(export={"enabled": True})), ModelSource)  # a merged model suits any method
    qlora_source = _source(method="qlora", quantization={"bits": 4})
    assert isinstance(resolve_from_job(_job(name="dpo", **CHILD), qlora_source), Failed)
    other_volume = _source(storage={"outputs": {"claimName": "elsewhere"}})
    got = resolve_from_job(_job(name="dpo", **CHILD), other_volume)
    assert isinstance(got, Failed) and got.reason == "FromJobOtherVolume"


def test_reward_model_from_a_reward_job() -> None:
    ppo = _job(name="ppo", training={"stage": "ppo", "ppo": {"rewardModel": {"fromJob": "rm"}}})
    rm_job = _source("rm", training={"stage": "rm"}, datasets=[{"name": "p", "hub": "o/p", "ranking": True}])
    got = resolve_from_job(ppo, rm_job, reference="rewardModel")
    assert isinstance(got, ModelSource) and got.kind == "adapter" and got.adapter == "/data/outputs/ml/rm"
    args = render(ppo, RenderOptions(reward_source=got)).train_args
    assert (args["reward_model"], args["reward_model_type"]) == ("/data/outputs/ml/rm", "lora")
    not_rm = resolve_from_job(ppo, _source("rm"), reference="rewardModel")
    assert isinstance(not_rm, Failed) and not_rm.reason == "FromJobNotRewardModel"


def test_rendering_a_from_job_without_its_source_says_how() -> None:
    with pytest.raises(ValueError, match="spec.model.fromJob sft"):
        render(_job(name="dpo", **CHILD))


def test_recipe_renders_both_jobs_the_second_on_the_first_jobs_merged_model() -> None:
    docs = [d for d in load_documents(RECIPE.read_text()) if d]
    jobs = [j for d in docs if (j := validate_object(d)[0]) is not None]
    assert [j.name for j in jobs] == ["qwen-sft", "qwen-dpo"]
    options = [with_sources(j, jobs, RenderOptions(layout=Layout())) for j in jobs]
    assert not any(isinstance(o, Failed) for o in options)
    sft, dpo = (render(j, o) for j, o in zip(jobs, options))
    assert dpo.train_args["model_name_or_path"] == f"{Layout().outputs_dir}/default/qwen-sft/merged"
    assert dpo.train_args["stage"] == "dpo" and contract.EVAL_ARGS_FILE in sft.files
    # The CLI does the same for `kubetune render` of the file.
    out = subprocess.run([sys.executable, "-m", "kubetune", "render", "-n", "ml", str(RECIPE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    objs = list(yaml.safe_load_all(out.stdout))
    trains = [yaml.safe_load(o["data"]["train.yaml"]) for o in objs if o and o["kind"] == "ConfigMap"]
    assert trains[1]["model_name_or_path"] == "/data/outputs/ml/qwen-sft/merged"


def test_preference_losses_compare_with_the_starting_model() -> None:
    # Evaluated alone, LLaMA-Factory would compare the model with itself (loss ln 2): name the reference.
    dpo = _job(method="lora", training={"stage": "dpo"}, datasets=[{"name": "p", "hub": "o/p", "ranking": True}], evaluation={"valSize": 0.1, "baseModel": True})
    rendered = render(dpo)
    assert "ref_model" not in rendered.train_args  # training: LLaMA-Factory's own default (adapter disabled) is the base
    runs = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"]
    assert [r["model"] for r in runs] == ["trained"]  # the base against itself says nothing
    assert runs[0]["args"]["ref_model"] == "Qwen/Qwen1.5-1.8B" and runs[0]["args"]["adapter_name_or_path"] == rendered.train_args["output_dir"]
    orpo = _job(training={"stage": "dpo", "preference": {"loss": "orpo"}}, datasets=[{"name": "p", "hub": "o/p", "ranking": True}], evaluation={"valSize": 0.1})
    assert "ref_model" not in json.loads(render(orpo).files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    # On top of a job's adapter, the reference is base + that adapter, not the bare base.
    child = _job(name="dpo", **CHILD)
    source = resolve_from_job(child, _source())
    assert isinstance(source, ModelSource)
    args = render(child, RenderOptions(model_source=source)).train_args
    assert (args["ref_model"], args["ref_model_adapters"], args["adapter_name_or_path"]) == ("Qwen/Qwen1.5-1.8B", "/data/outputs/ml/sft", "/data/outputs/ml/sft")
