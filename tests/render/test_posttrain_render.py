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
from tests.support.kt_time import scaled
import yaml

from kubetune.api import FineTuneJob, contract, load_documents
from kubetune.api.contract import Layout
from kubetune.render import RenderOptions, render, validate_object
from kubetune.render.catalog import catalog
from kubetune.render.chain import Failed, ModelSource, Waiting, resolve_from_job, with_sources
from tests.support.renderlib import valid_job

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "recipes" / "sft-then-dpo.yaml"


def _job(patch: dict[str, Any] | None = None, name: str = "j", **spec: Any) -> FineTuneJob:
    return valid_job(
        name,
        {
            "model": {"name": "Qwen/Qwen1.5-1.8B", "template": "qwen"},
            "datasets": [{"name": "d", "hub": "o/d"}],
            "storage": {"outputs": {"claimName": "outputs"}},
            **spec,
        },
    )


def test_stage_arguments_use_llamafactory_names_that_exist() -> None:
    known = catalog().args
    jobs = [
        _job(
            training={"stage": "dpo", "preference": {"beta": 0.3, "loss": "simpo", "ftx": 0.5, "simpoGamma": 0.8}},
            datasets=[{"name": "p", "hub": "o/p", "ranking": True}],
        ),
        _job(
            training={
                "stage": "kto",
                "preference": {"beta": 0.2},
                "kto": {"desirableWeight": 1.0, "undesirableWeight": 1.5},
            },
            datasets=[{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}],
        ),
        _job(
            training={
                "stage": "ppo",
                "ppo": {
                    "rewardModel": {"path": "rm/qwen"},
                    "bufferSize": 2,
                    "epochs": 3,
                    "scoreNorm": True,
                    "targetKl": 4.0,
                    "whitenRewards": True,
                    "maxNewTokens": 32,
                },
            }
        ),
    ]
    dpo, kto, ppo = (render(j, RenderOptions()).train_args for j in jobs)
    assert (dpo["stage"], dpo["pref_beta"], dpo["pref_loss"], dpo["pref_ftx"], dpo["simpo_gamma"]) == (
        "dpo",
        0.3,
        "simpo",
        0.5,
        0.8,
    )
    assert (kto["stage"], kto["pref_beta"], kto["kto_chosen_weight"], kto["kto_rejected_weight"]) == (
        "kto",
        0.2,
        1.0,
        1.5,
    )
    assert "pref_loss" not in kto
    assert ppo["reward_model"] == "/data/models/rm/qwen" and ppo["reward_model_type"] == "full"
    assert (
        ppo["ppo_buffer_size"],
        ppo["ppo_epochs"],
        ppo["ppo_score_norm"],
        ppo["ppo_target"],
        ppo["ppo_whiten_rewards"],
        ppo["max_new_tokens"],
    ) == (2, 3, True, 4.0, True, 32)
    for args in (dpo, kto, ppo):
        assert [k for k in args if k not in known] == []
        assert all(
            known[k].accepts(v) for k, v in args.items() if k.startswith(("pref_", "kto_", "ppo_", "simpo", "reward"))
        )


def test_ranking_and_kto_datasets_render_their_columns() -> None:
    dpo = _job(
        training={"stage": "dpo"},
        datasets=[{"name": "p", "hub": "o/p", "ranking": True, "columns": {"chosen": "better"}}],
    )
    info = json.loads(render(dpo).files[contract.DATASET_INFO_FILE])
    assert info["p"]["ranking"] is True
    assert info["p"]["columns"] == {"chosen": "better", "messages": "conversations", "rejected": "rejected"}
    kto = _job(
        training={"stage": "kto"},
        datasets=[{"name": "k", "hub": "o/k", "format": "alpaca", "columns": {"ktoTag": "label"}}],
    )
    info = json.loads(render(kto).files[contract.DATASET_INFO_FILE])
    # Complete: LLaMA-Factory reads every unnamed column as None once "columns" exists (DatasetAttr.join).
    assert "ranking" not in info["k"] and info["k"]["columns"] == {
        "kto_tag": "label",
        "prompt": "instruction",
        "query": "input",
        "response": "output",
    }


def test_column_and_tag_overrides_keep_every_other_default() -> None:
    # One Alpaca column renamed: the others must still be named, or LLaMA-Factory drops
    # every SFT example (no response) and every DPO input (no query).
    sft = _job(datasets=[{"name": "a", "hub": "o/a", "format": "alpaca", "columns": {"prompt": "question"}}])
    info = json.loads(render(sft).files[contract.DATASET_INFO_FILE])
    assert info["a"]["columns"] == {"prompt": "question", "query": "input", "response": "output"}
    dpo = _job(
        training={"stage": "dpo"},
        datasets=[{"name": "p", "hub": "o/p", "format": "alpaca", "ranking": True, "columns": {"response": "x"}}],
    )
    cols = json.loads(render(dpo).files[contract.DATASET_INFO_FILE])["p"]["columns"]
    assert cols == {
        "chosen": "chosen",
        "prompt": "instruction",
        "query": "input",
        "rejected": "rejected",
        "response": "x",
    }
    sharegpt = _job(datasets=[{"name": "s", "hub": "o/s", "tags": {"userTag": "user"}, "columns": {"system": "sys"}}])
    entry = json.loads(render(sharegpt).files[contract.DATASET_INFO_FILE])["s"]
    assert entry["columns"] == {"messages": "conversations", "system": "sys"}
    assert entry["tags"] == {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "user",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    }


def test_evaluation_holds_out_the_same_split_it_scores() -> None:
    job = _job(
        evaluation={"valSize": 0.1, "generation": True, "baseModel": True}, training={"maxSamples": 500, "seed": 7}
    )
    rendered = render(job)
    train = rendered.train_args
    plan = json.loads(rendered.files[contract.EVAL_ARGS_FILE])
    assert train["val_size"] == 0.1 and "eval_strategy" not in train  # held out of training, not evaluated during it
    assert [(r["model"], r["mode"]) for r in plan["runs"]] == [
        ("trained", "eval"),
        ("trained", "predict"),
        ("base", "eval"),
        ("base", "predict"),
    ]
    assert plan["perplexity"] is True
    for run in plan["runs"]:
        args = run["args"]
        assert (args["dataset"], args["val_size"], args["seed"], args["max_samples"]) == (train["dataset"], 0.1, 7, 500)
        assert args["do_train"] is False
    trained, base = plan["runs"][0]["args"], plan["runs"][2]["args"]
    assert (
        trained["adapter_name_or_path"] == train["output_dir"] and trained["model_name_or_path"] == "Qwen/Qwen1.5-1.8B"
    )
    assert "adapter_name_or_path" not in base
    assert plan["runs"][1]["args"]["predict_with_generate"] is True


def test_named_eval_datasets_are_registered_and_checked_like_training_data() -> None:
    job = _job(
        method="full", evaluation={"datasets": [{"name": "test", "hub": "o/d", "split": "test"}], "maxSamples": 20}
    )
    rendered = render(job)
    info = json.loads(rendered.files[contract.DATASET_INFO_FILE])
    assert set(info) == {"d", "test"}
    run = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    assert (
        run["eval_dataset"] == "test"
        and run["max_samples"] == 20
        and run["model_name_or_path"] == rendered.train_args["output_dir"]
    )
    assert "val_size" not in rendered.train_args


# --- fromJob ---------------------------------------------------------------------------


def _source(name: str = "sft", phase: str | None = "Succeeded", **spec: Any) -> dict[str, Any]:
    obj = _job(name=name, **spec).to_api()
    if phase is not None:
        obj["status"] = {"phase": phase, "message": "loss diverged"}
    return obj


CHILD = {
    "model": {"fromJob": "sft", "template": "qwen"},
    "training": {"stage": "dpo"},
    "datasets": [{"name": "p", "hub": "o/p", "ranking": True}],
}


def test_resolve_from_job_waits_fails_or_resolves() -> None:
    child = _job(name="dpo", **CHILD)
    missing = resolve_from_job(child, None)
    assert (
        isinstance(missing, Failed)
        and missing.reason == "FromJobNotFound"
        and "sft" in missing.message
        and "ml" in missing.message
    )
    for phase in (None, "Pending", "Running", "Exporting"):
        waiting = resolve_from_job(child, _source(phase=phase))
        assert isinstance(waiting, Waiting) and waiting.reason == "WaitingForJob" and "sft" in waiting.message
    failed = resolve_from_job(child, _source(phase="Failed"))
    assert isinstance(failed, Failed) and failed.reason == "FromJobFailed" and "loss diverged" in failed.message
    merged = resolve_from_job(child, _source(export={"enabled": True}))
    assert merged == ModelSource("sft", "/data/outputs/ml/sft/merged", kind="merged", stage="sft")
    adapter = resolve_from_job(child, _source())
    assert adapter == ModelSource(
        "sft", "Qwen/Qwen1.5-1.8B", adapter="/data/outputs/ml/sft", kind="adapter", stage="sft"
    )
    full = resolve_from_job(child, _source(method="full"))
    assert isinstance(full, ModelSource) and full.model == "/data/outputs/ml/sft" and full.adapter is None


def test_an_adapter_is_checked_against_the_method() -> None:
    full_child = _job(name="dpo", **{**CHILD, "method": "full"})
    mismatch = resolve_from_job(full_child, _source())
    assert (
        isinstance(mismatch, Failed)
        and mismatch.reason == "FromJobAdapterMismatch"
        and "export.enabled" in mismatch.message
    )
    assert isinstance(
        resolve_from_job(full_child, _source(export={"enabled": True})), ModelSource
    )  # a merged model suits any method
    qlora_source = _source(method="qlora", quantization={"bits": 4})
    assert isinstance(resolve_from_job(_job(name="dpo", **CHILD), qlora_source), Failed)
    other_volume = _source(storage={"outputs": {"claimName": "elsewhere"}})
    got = resolve_from_job(_job(name="dpo", **CHILD), other_volume)
    assert isinstance(got, Failed) and got.reason == "FromJobOtherVolume"
    assert (
        "uploads nowhere" in got.message and "spec.storage.outputs.uri" in got.message
    )  # the message names the way out
    # issue 24: a source on another claim that uploads its results is read from the bucket, by its
    # completion marker, into the models folder (no longer FromJobOtherVolume with a spec.model.uri workaround)
    uploaded = _source(
        storage={"outputs": {"claimName": "elsewhere", "uri": "s3://ml-runs/ft/"}}, export={"enabled": True}
    )
    got = resolve_from_job(_job(name="dpo", **CHILD), uploaded)
    assert (
        isinstance(got, ModelSource) and got.results_uri == "s3://ml-runs/ft/ml/sft/" and got.model.endswith("/merged")
    )
    assert got.model.startswith(contract.Layout().models_dir + "/")
    # ... and a serving child is fine: it serves its own outputs, not the source's
    serving = resolve_from_job(_job(name="dpo", **CHILD, serve={}, export={"enabled": True}), uploaded)
    assert isinstance(serving, ModelSource) and serving.results_uri == "s3://ml-runs/ft/ml/sft/"


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
    out = subprocess.run(
        [sys.executable, "-m", "kubetune", "render", "-n", "ml", str(RECIPE)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert out.returncode == 0, out.stderr
    objs = list(yaml.safe_load_all(out.stdout))
    trains = [yaml.safe_load(o["data"]["train.yaml"]) for o in objs if o and o["kind"] == "ConfigMap"]
    assert trains[1]["model_name_or_path"] == "/data/outputs/ml/qwen-sft/merged"


def test_preference_losses_compare_with_the_starting_model() -> None:
    # Evaluated alone, LLaMA-Factory would compare the model with itself (loss ln 2): name the reference.
    dpo = _job(
        method="lora",
        training={"stage": "dpo"},
        datasets=[{"name": "p", "hub": "o/p", "ranking": True}],
        evaluation={"valSize": 0.1, "baseModel": True},
    )
    rendered = render(dpo)
    assert (
        "ref_model" not in rendered.train_args
    )  # training: LLaMA-Factory's own default (adapter disabled) is the base
    runs = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"]
    assert [r["model"] for r in runs] == ["trained"]  # the base against itself says nothing
    assert (
        runs[0]["args"]["ref_model"] == "Qwen/Qwen1.5-1.8B"
        and runs[0]["args"]["adapter_name_or_path"] == rendered.train_args["output_dir"]
    )
    orpo = _job(
        training={"stage": "dpo", "preference": {"loss": "orpo"}},
        datasets=[{"name": "p", "hub": "o/p", "ranking": True}],
        evaluation={"valSize": 0.1},
    )
    assert "ref_model" not in json.loads(render(orpo).files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    # On top of a job's adapter, the reference is base + that adapter, not the bare base.
    child = _job(name="dpo", **CHILD)
    source = resolve_from_job(child, _source())
    assert isinstance(source, ModelSource)
    args = render(child, RenderOptions(model_source=source)).train_args
    assert (args["ref_model"], args["ref_model_adapters"], args["adapter_name_or_path"]) == (
        "Qwen/Qwen1.5-1.8B",
        "/data/outputs/ml/sft",
        "/data/outputs/ml/sft",
    )


# --- issue 21: what trained or scored something else than the spec said ----------------------

PAIRS = [{"name": "p", "hub": "o/p", "ranking": True}]


def _problems(**spec: Any) -> list[tuple[str, str]]:
    obj = _job().to_api()
    obj["spec"].update(spec)
    job, problems = validate_object(obj)
    return [(p.path, p.message) for p in problems]


@pytest.mark.parametrize("loss", ["hinge", "ipo", "kto_pair"])
def test_losses_that_train_as_sigmoid_with_the_image_trl_are_refused(loss: str) -> None:
    problems = _problems(training={"stage": "dpo", "preference": {"loss": loss}}, datasets=PAIRS)
    assert [p for p, _ in problems] == ["spec.training.preference.loss"]
    assert "sigmoid" in problems[0][1] and "spec.image" in problems[0][1]
    # An image of the user's own may carry an older TRL: the trainer checks it there (stagecheck).
    assert (
        _problems(
            training={"stage": "dpo", "preference": {"loss": loss}},
            datasets=PAIRS,
            image="registry.example/trainer:old-trl",
        )
        == []
    )
    for ok in ("sigmoid", "orpo", "simpo"):
        assert _problems(training={"stage": "dpo", "preference": {"loss": ok}}, datasets=PAIRS) == []


def test_packing_the_stage_would_refuse_or_ignore_is_refused() -> None:
    neat = _problems(training={"stage": "dpo", "packing": "neat"}, datasets=PAIRS)
    assert [p for p, _ in neat] == ["spec.training.packing"] and "sft" in neat[0][1]
    for stage, datasets in (
        ("rm", PAIRS),
        ("dpo", PAIRS),
        ("kto", [{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}]),
    ):
        ignored = _problems(training={"stage": stage, "packing": "packing"}, datasets=datasets)
        assert [p for p, _ in ignored] == ["spec.training.packing"] and "packing: none" in ignored[0][1]
    assert _problems(training={"stage": "sft", "packing": "neat"}) == []
    assert _problems(training={"stage": "sft", "packing": "packing"}) == []


def test_reward_model_export_keeps_its_value_head_and_has_no_base_comparison() -> None:
    rm = _job(
        training={"stage": "rm"},
        datasets=PAIRS,
        export={"enabled": True},
        evaluation={"valSize": 0.1, "baseModel": True},
    )
    rendered = render(rm)
    export = yaml.safe_load(rendered.files[contract.EXPORT_ARGS_FILE])
    assert export["stage"] == "rm"  # LLaMA-Factory copies value_head.safetensors only then
    runs = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"]
    assert [r["model"] for r in runs] == ["trained"]  # a base model has no value head to score with
    sft_export = yaml.safe_load(render(_job(export={"enabled": True})).files[contract.EXPORT_ARGS_FILE])
    assert "stage" not in sft_export
    # The exported reward model, value head included, is what a PPO job then loads.
    src = resolve_from_job(
        _job(name="ppo", training={"stage": "ppo", "ppo": {"rewardModel": {"fromJob": "rm"}}}),
        _source("rm", training={"stage": "rm"}, datasets=PAIRS, export={"enabled": True}),
        reference="rewardModel",
    )
    assert isinstance(src, ModelSource) and src.kind == "merged" and src.model.endswith("/rm/merged")


def test_qlora_evaluation_loads_both_models_as_trained() -> None:
    job = _job(
        method="qlora",
        quantization={"bits": 4, "type": "fp4", "doubleQuant": False},
        evaluation={"valSize": 0.1, "baseModel": True},
    )
    runs = json.loads(render(job).files[contract.EVAL_ARGS_FILE])["runs"]
    for run in runs:
        args = run["args"]
        assert (args["quantization_bit"], args["quantization_type"], args["double_quantization"]) == (
            4,
            "fp4",
            False,
        ), run["model"]
    # Exported, the trained model is the merged full-precision one: the base is loaded the same way,
    # or the difference would credit training with the 4-bit base's quantization error.
    exported = _job(
        method="qlora",
        quantization={"bits": 4},
        export={"enabled": True},
        evaluation={"valSize": 0.1, "baseModel": True},
    )
    runs = json.loads(render(exported).files[contract.EVAL_ARGS_FILE])["runs"]
    assert {run["model"] for run in runs} == {"trained", "base"}
    assert all("quantization_bit" not in run["args"] for run in runs), runs


def test_evaluation_max_samples_and_kto_labels() -> None:
    held_out = _problems(evaluation={"valSize": 0.1, "maxSamples": 50})
    assert [p for p, _ in held_out] == ["spec.evaluation.maxSamples"] and "valSize" in held_out[0][1]
    kto = {"stage": "kto"}
    labelled = [{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}]
    unlabelled = _problems(training=kto, datasets=labelled, evaluation={"datasets": [{"name": "e", "hub": "o/e"}]})
    assert [p for p, _ in unlabelled] == ["spec.evaluation.datasets"] and "ktoTag" in unlabelled[0][1]
    assert (
        _problems(
            training=kto,
            datasets=labelled,
            evaluation={"datasets": [{"name": "e", "hub": "o/e", "columns": {"ktoTag": "ok"}}]},
        )
        == []
    )
    predict = json.loads(render(_job(evaluation={"valSize": 0.1, "generation": True})).files[contract.EVAL_ARGS_FILE])[
        "runs"
    ][1]["args"]
    assert predict["max_new_tokens"] == 1024  # LLaMA-Factory's own default (docs/post-training.md says why)


def test_a_source_adapter_is_continued_with_its_own_lora_settings() -> None:
    source = _source(lora={"rank": 16, "alpha": 32})
    same = _job(name="dpo", **CHILD, lora={"rank": 16, "alpha": 32})
    unset = _job(name="dpo", **CHILD)
    assert isinstance(resolve_from_job(same, source), ModelSource)
    assert isinstance(resolve_from_job(unset, source), ModelSource)
    differs = resolve_from_job(_job(name="dpo", **CHILD, lora={"rank": 64}), source)
    assert isinstance(differs, Failed) and differs.reason == "FromJobAdapterMismatch"
    assert (
        differs.message.startswith("spec.lora:")
        and "rank 16, alpha 32" in differs.message
        and "export.enabled" in differs.message
    )
    # The same adapter written another way is no difference: LLaMA-Factory's lora_alpha defaults to
    # 2 x rank (hparams/finetuning_args.py:568 @v0.9.5) and PEFT's target_modules is a set.
    assert isinstance(resolve_from_job(_job(name="dpo", **CHILD, lora={"rank": 16}), source), ModelSource)
    assert isinstance(
        resolve_from_job(_job(name="dpo", **CHILD, lora={"rank": 8, "alpha": 16}), _source()), ModelSource
    )
    targets = _source(lora={"targetModules": ["q_proj", "v_proj"]})
    assert isinstance(
        resolve_from_job(_job(name="dpo", **CHILD, lora={"targetModules": ["v_proj", "q_proj"]}), targets), ModelSource
    )
    assert isinstance(resolve_from_job(_job(name="dpo", **CHILD, lora={"alpha": 8}), _source()), Failed)
    # On a merged model the job starts its own adapter: its settings apply.
    assert isinstance(
        resolve_from_job(
            _job(name="dpo", **CHILD, lora={"rank": 64}), _source(lora={"rank": 16}, export={"enabled": True})
        ),
        ModelSource,
    )


def test_qlora_reference_model_is_quantized_like_the_policy() -> None:
    qlora = {"method": "qlora", "quantization": {"bits": 4}}
    child = _job(name="dpo", **CHILD, **qlora)
    source = resolve_from_job(child, _source(**qlora))
    assert isinstance(source, ModelSource) and source.kind == "adapter"
    args = render(child, RenderOptions(model_source=source)).train_args
    assert (args["ref_model"], args["ref_model_adapters"], args["ref_model_quantization_bit"]) == (
        "Qwen/Qwen1.5-1.8B",
        "/data/outputs/ml/sft",
        4,
    )
    assert args["quantization_bit"] == 4
    known = catalog().args
    assert known["ref_model_quantization_bit"].accepts(4)
    # Evaluation of a QLoRA DPO job names the starting model as reference: quantized too.
    own = _job(name="q", training={"stage": "dpo"}, datasets=PAIRS, evaluation={"valSize": 0.1}, **qlora)
    run = json.loads(render(own).files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    assert (run["ref_model"], run["ref_model_quantization_bit"], run["quantization_bit"]) == ("Qwen/Qwen1.5-1.8B", 4, 4)
    # Exported, the evaluated model is the merged full-precision one: its reference is not quantized
    # either (training still quantizes it, as the policy).
    exported = _job(name="dpo", **CHILD, **qlora, export={"enabled": True}, evaluation={"valSize": 0.1})
    rendered = render(exported, RenderOptions(model_source=source))
    assert rendered.train_args["ref_model_quantization_bit"] == 4
    eval_run = json.loads(rendered.files[contract.EVAL_ARGS_FILE])["runs"][0]["args"]
    assert eval_run["ref_model_adapters"] == "/data/outputs/ml/sft" and "ref_model_quantization_bit" not in eval_run
    plain = render(
        _job(name="dpo", **CHILD), RenderOptions(model_source=resolve_from_job(_job(name="dpo", **CHILD), _source()))
    ).train_args  # type: ignore[arg-type]
    assert "ref_model_quantization_bit" not in plain


def test_ppo_kl_reference_and_reward_adapter_base() -> None:
    ppo_spec = {
        "model": {"fromJob": "sft", "template": "qwen"},
        "training": {"stage": "ppo", "ppo": {"rewardModel": {"path": "rm"}}},
    }
    ppo = _job(name="ppo", **ppo_spec)
    source = resolve_from_job(ppo, _source())
    assert isinstance(source, ModelSource)
    args = render(ppo, RenderOptions(model_source=source)).train_args
    # The KL reference is the starting policy (base + the SFT adapter), not the bare base.
    assert (args["ref_model"], args["ref_model_adapters"]) == ("Qwen/Qwen1.5-1.8B", "/data/outputs/ml/sft")
    # A LoRA reward adapter goes onto the policy's base: it must have been trained on it.
    policy = _job(name="ppo", training={"stage": "ppo", "ppo": {"rewardModel": {"fromJob": "rm"}}})
    other_base = _source(
        "rm", model={"name": "meta-llama/Llama-3.1-8B", "template": "llama3"}, training={"stage": "rm"}, datasets=PAIRS
    )
    got = resolve_from_job(policy, other_base, reference="rewardModel")
    assert (
        isinstance(got, Failed) and got.reason == "FromJobAdapterMismatch" and "meta-llama/Llama-3.1-8B" in got.message
    )
    same_base = _source("rm", training={"stage": "rm"}, datasets=PAIRS)
    assert isinstance(resolve_from_job(policy, same_base, reference="rewardModel"), ModelSource)


def test_reward_adapter_base_is_checked_against_a_from_job_policy() -> None:
    # The policy continues the SFT job's adapter on Qwen: a LoRA reward adapter trained on Qwen fits,
    # one trained on another base is refused (jobs given together, as in one kubectl apply).
    sft = _job(name="sft")
    rm_other = _job(
        name="rm",
        model={"name": "meta-llama/Llama-3.1-8B", "template": "llama3"},
        training={"stage": "rm"},
        datasets=PAIRS,
    )
    rm_same = _job(name="rm", training={"stage": "rm"}, datasets=PAIRS)
    ppo = _job(
        name="ppo",
        model={"fromJob": "sft", "template": "qwen"},
        training={"stage": "ppo", "ppo": {"rewardModel": {"fromJob": "rm"}}},
    )
    got = with_sources(ppo, [sft, rm_other, ppo], RenderOptions(layout=Layout()))
    assert isinstance(got, Failed) and got.reason == "FromJobAdapterMismatch" and "Llama-3.1-8B" in got.message
    ok = with_sources(ppo, [sft, rm_same, ppo], RenderOptions(layout=Layout()))
    assert isinstance(ok, RenderOptions) and ok.reward_source is not None and ok.reward_source.kind == "adapter"
