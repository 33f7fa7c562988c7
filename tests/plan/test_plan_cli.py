"""`kubetune plan`, `kubetune validate --gpu`, and the feasibility/autotune functions the operator calls."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.plan import GPUS
import yaml

from kubetune.api import FineTuneJob
from kubetune.cli import main
from kubetune.plan import Setup, autotune, estimate, feasibility, find_gpu, parse_quantity, resolve
from kubetune.plan.feasibility import gpu_memory_for, product_table_from_env, setup_from_job
from tests.support.model_configs import QWEN2_0_5B

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if "kind: FineTuneJob" in p.read_text())
GiB = 2**30


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def big_lora(**spec_changes: Any) -> dict[str, Any]:
    """Llama-3.1-8B LoRA, micro-batch 16 x 2048 on 8 GPUs: about 85 GiB per GPU as written."""
    doc = yaml.safe_load((REPO / "examples/finetune-lora.yaml").read_text())
    doc["spec"]["model"]["name"] = "meta-llama/Llama-3.1-8B"
    doc["spec"]["training"].update(perDeviceBatchSize=16, gradientAccumulationSteps=1)
    doc["spec"].update(spec_changes)
    return doc


def write(tmp_path: Path, doc: dict[str, Any], name: str = "job.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return str(p)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_plan_every_example_prints_terms_and_a_verdict(
    capsys: pytest.CaptureFixture[str], example: Path, tmp_path: Path
) -> None:
    args = ["plan", str(example), "--gpu", "H200"]
    if any(((d or {}).get("spec") or {}).get("model", {}).get("uri") for d in yaml.safe_load_all(example.read_text())):
        # A base model in a bucket: the planner reads no bucket, the user gives its config.json
        # (docs/object-storage.md).
        from kubetune.plan.arch import catalogue  # noqa: PLC0415

        (tmp_path / "config.json").write_text(json.dumps(catalogue()["Qwen/Qwen2.5-0.5B"]))
        args += ["--model-config", str(tmp_path / "config.json")]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    for term in ("weights", "gradients", "optimizer states", "activations", "logits", "CUDA context", "total per GPU"):
        assert term in out
    assert "verdict: FITS in 137.6 GiB" in out  # H200: usable memory (plan/gpus.py), not the 141 GB label
    total = float(out.split("total per GPU")[1].split()[0])
    assert 2 < total < 140  # a 1.8B model on one GPU: gigabytes, not bytes or terabytes


def test_plan_follows_from_job_to_the_source_jobs_architecture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    recipe = REPO / "examples/recipes/sft-then-dpo.yaml"
    code, out, err = run(capsys, "plan", str(recipe), "--gpu", "H100")
    assert code == 0, err
    dpo = out.split("# qwen-dpo")[1]
    assert (
        "model Qwen/Qwen1.5-1.8B (1.84B params" in dpo
    )  # qwen-sft's base model: its merged output has that architecture
    sft, dpo_doc = list(yaml.safe_load_all(recipe.read_text()))
    code, out, err = run(capsys, "plan", write(tmp_path, dpo_doc), "--gpu", "H100")
    assert code == 1 and out == ""
    assert (
        "qwen-dpo: spec.model.fromJob 'qwen-sft'" in err
        and "which is not in the same input (kubetune plan: give both files" in err
    )


def test_optimizer_choice_is_planned(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Fused AdamW (transformers' default in the trainer image) has no step temporaries; foreach AdamW can;
    8-bit AdamW given through extraArgs.optim keeps a quarter of the moments."""
    doc = yaml.safe_load((REPO / "examples/seed/full-single-gpu.yaml").read_text())
    code, out, _ = run(capsys, "plan", write(tmp_path, doc), "--gpu", "H200")
    assert code == 0 and "optimizer adamw_torch_fused" in out
    default = estimate(resolve("Qwen/Qwen1.5-1.8B"), Setup(method="full", micro_batch=1, seq_len=256))
    foreach = estimate(
        resolve("Qwen/Qwen1.5-1.8B"), Setup(method="full", micro_batch=1, seq_len=256, optimizer="adamw_torch")
    )
    assert "optimizer step temporaries" not in [t.name for t in default.terms]
    assert foreach.term("optimizer step temporaries") > 0 and foreach.total > default.total
    doc["spec"]["extraArgs"] = {"optim": "adamw_8bit"}
    job = FineTuneJob.model_validate(doc)
    eight = estimate(resolve("Qwen/Qwen1.5-1.8B"), setup_from_job(job))
    assert setup_from_job(job).optimizer == "adamw_8bit"
    assert eight.term("optimizer states") * 4 == default.term("optimizer states")


def test_preference_stages_double_the_rows_and_full_dpo_loads_a_reference_model() -> None:
    """LLaMA-Factory concatenates chosen and rejected (dpo, rm) and loads a frozen reference copy for
    full/freeze DPO and KTO (LoRA disables the adapter instead; orpo/simpo need none)."""
    doc = yaml.safe_load((REPO / "examples/finetune-full.yaml").read_text())
    sft = setup_from_job(FineTuneJob.model_validate(doc))
    doc["spec"]["training"].update(stage="dpo")
    for dataset in doc["spec"]["datasets"]:
        dataset.update(
            ranking=True,
            format="sharegpt",
            columns={"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        )
    dpo = setup_from_job(FineTuneJob.model_validate(doc))
    assert (sft.rows, dpo.rows) == (sft.micro_batch, 2 * sft.micro_batch) and dpo.tokens == 2 * sft.tokens
    arch = resolve("Qwen/Qwen1.5-1.8B")
    ref = estimate(arch, dpo).term("reference model")
    assert ref == 2 * arch.total_params() // (dpo.world_size if dpo.zero_stage == 3 else 1) and ref > 0
    assert estimate(arch, dpo).term("activations") > estimate(arch, sft).term("activations")
    doc["spec"]["training"]["preference"] = {"loss": "simpo"}
    assert not setup_from_job(FineTuneJob.model_validate(doc)).reference_model
    assert estimate(arch, dpo.with_(reference_model=False)).total < estimate(arch, dpo).total


def test_plan_does_not_fit_then_the_suggested_change_fits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = big_lora()
    code, out, _ = run(capsys, "plan", write(tmp_path, doc), "--gpu", "A100-40GB")
    assert code == 1
    assert "verdict: DOES NOT FIT in 39.5 GiB" in out  # an A100-40GB gives torch 39.50 GiB (plan/gpus.py)
    # With training.ligerKernel available, the fused loss (no logits) is the cheapest fix.
    assert "cheapest change that fits: training.ligerKernel: true" in out
    fixed = copy.deepcopy(doc)
    fixed["spec"]["training"].update(ligerKernel=True)
    code, out, _ = run(capsys, "plan", write(tmp_path, fixed, "fixed.yaml"), "--gpu", "A100-40GB")
    assert code == 0 and "verdict: FITS" in out
    # The other kind of fix, a smaller micro-batch keeping the global batch, fits as well.
    smaller = copy.deepcopy(doc)
    smaller["spec"]["training"].update(perDeviceBatchSize=4, gradientAccumulationSteps=4)
    code, out, _ = run(capsys, "plan", write(tmp_path, smaller, "smaller.yaml"), "--gpu", "A100-40GB")
    assert code == 0 and "verdict: FITS" in out


def test_plan_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "plan", "-o", "json", write(tmp_path, big_lora()), "--gpu-memory", "40")
    assert code == 1
    [v] = json.loads(out)
    assert v["status"] == "False" and v["reason"] == "InsufficientGPUMemory"
    # the peak: what is always there + the larger of the two phases that never coexist
    phase = {p: sum(t["bytes"] for t in v["terms"] if t["phase"] == p) for p in ("always", "backward", "step")}
    assert v["totalBytes"] == phase["always"] + phase[v["peakPhase"]] > 40 * GiB
    assert phase[v["peakPhase"]] == max(phase["backward"], phase["step"])
    assert v["suggestion"]["totalBytes"] <= 40 * GiB


def test_plan_unknown_model_says_how_to_fix_and_model_config_fixes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = big_lora()
    doc["spec"]["model"]["name"] = "acme/secret-13b"
    path = write(tmp_path, doc)
    code, _, err = run(capsys, "plan", path, "--gpu", "H100")
    assert code == 1
    assert "spec.model.name 'acme/secret-13b'" in err and "--model-config" in err
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 5120,
                "num_hidden_layers": 40,
                "num_attention_heads": 40,
                "intermediate_size": 13824,
                "vocab_size": 32000,
            }
        )
    )
    code, out, _ = run(capsys, "plan", path, "--gpu", "H100", "--model-config", str(cfg))
    assert "13.02B params" in out and str(cfg) in out


def test_plan_reads_config_from_a_hugging_face_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = big_lora()
    doc["spec"]["model"]["name"] = "acme/tiny"
    snap = tmp_path / "hf" / "hub" / "models--acme--tiny" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(QWEN2_0_5B))
    code, out, err = run(capsys, "plan", write(tmp_path, doc), "--models-dir", str(tmp_path / "hf"))
    assert code == 0, err
    assert "0.49B params" in out and "snapshots/0123abc/config.json" in out
    assert "fits one GPU of: H200" in out


def test_validate_shows_the_verdict_when_gpu_memory_is_known(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, big_lora())
    code, _, _ = run(capsys, "validate", "--skip-llamafactory", path)
    assert code == 0  # memory unknown: no verdict, no failure
    code, _, err = run(capsys, "validate", "--skip-llamafactory", "--gpu", "L4", path)
    assert code == 1
    assert "spec.resources: will not fit: predicted peak" in err and "to fit:" in err
    doc = big_lora()
    doc["spec"]["resources"]["gpuMemory"] = "40Gi"
    code, _, err = run(capsys, "validate", "--skip-llamafactory", write(tmp_path, doc, "declared.yaml"))
    assert code == 1 and "exceeds 40.0 GiB" in err


def test_gpu_memory_from_spec_then_node_label_table() -> None:
    doc = big_lora()
    job = FineTuneJob.model_validate(doc)
    assert gpu_memory_for(job, {"NVIDIA-A100-SXM4-40GB": "40Gi"}) is None
    doc["spec"]["scheduling"] = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}}
    assert gpu_memory_for(FineTuneJob.model_validate(doc), {"NVIDIA-A100-SXM4-40GB": "40Gi"}) == 40 * GiB
    doc["spec"]["resources"]["gpuMemory"] = "141Gi"
    assert gpu_memory_for(FineTuneJob.model_validate(doc), {"NVIDIA-A100-SXM4-40GB": "40Gi"}) == 141 * GiB


def test_feasibility_condition_for_the_operator() -> None:
    job = FineTuneJob.model_validate(big_lora())
    no = feasibility(job, 40 * GiB).condition()
    assert no["type"] == "Feasible" and no["status"] == "False" and no["reason"] == "InsufficientGPUMemory"
    assert "exceeds 40.0 GiB" in no["message"] and "to fit:" in no["message"]
    assert feasibility(job, 141 * GiB).condition()["status"] == "True"
    assert feasibility(job, None).condition()["reason"] == "GPUMemoryUnknown"
    doc = big_lora()
    doc["spec"]["model"]["name"] = "acme/unknown"
    assert feasibility(FineTuneJob.model_validate(doc), 80 * GiB).condition()["reason"] == "UnknownArchitecture"


def test_autotune_makes_it_fit_and_keeps_the_global_batch() -> None:
    job = FineTuneJob.model_validate(big_lora(autoTune=True))
    result = autotune(job, 40 * GiB)
    assert result.changed and result.verdict.fits
    before, after = job.spec.training, result.job.spec.training
    assert (
        after.per_device_batch_size * after.gradient_accumulation_steps
        == before.per_device_batch_size * before.gradient_accumulation_steps
    )
    assert feasibility(result.job, 40 * GiB).fits
    record = result.record()
    assert record["settings"]["perDeviceBatchSize"] == after.per_device_batch_size
    assert any("chose" in r for r in record["reasons"])
    # a job that fits is left alone
    small = autotune(job, 141 * GiB)
    assert not small.changed and small.job is job


def test_autotune_uses_zero3_and_offload_for_full_fine_tuning() -> None:
    doc = yaml.safe_load((REPO / "examples/finetune-full.yaml").read_text())
    doc["spec"]["model"]["name"] = "Qwen/Qwen2.5-32B"
    doc["spec"]["distributed"]["zeroStage"] = 2
    doc["spec"]["training"].update(perDeviceBatchSize=1, cutoffLength=2048)
    result = autotune(FineTuneJob.model_validate(doc), 80 * GiB)
    assert result.changed and result.job.spec.distributed.zero_stage == 3, result.reasons


def test_memory_moves_the_right_way() -> None:
    arch = resolve("Qwen/Qwen2.5-7B")
    s = Setup(method="lora", micro_batch=4, seq_len=4096, gradient_checkpointing=False)
    assert estimate(arch, s.with_(gradient_checkpointing=True)).total < estimate(arch, s).total
    assert estimate(arch, s.with_(liger=True)).term("logits") < estimate(arch, s).term("logits") / 10
    assert (
        estimate(arch, s.with_(method="qlora", quant_bits=4)).term("weights") < estimate(arch, s).term("weights") / 2.5
    )
    assert estimate(arch, s.with_(micro_batch=2)).term("activations") < estimate(arch, s).term("activations")
    full = estimate(arch, s.with_(method="full"))
    assert full.term("optimizer states") == 8 * arch.total_params()  # AdamW: two fp32 moments per weight


def test_setup_reads_optional_fields_of_other_changes() -> None:
    job = FineTuneJob.model_validate(big_lora())
    assert setup_from_job(job).packing == "none" and not setup_from_job(job).liger

    class T:  # how training.packing / training.ligerKernel will look once they exist
        packing = "neat"
        liger_kernel = True

    from kubetune.plan.feasibility import _liger, _packing

    assert _packing(T()) == "neat" and _liger(T())


@pytest.mark.parametrize(
    ("text", "value"),
    [("80Gi", 80 * GiB), ("81559Mi", 81559 * 2**20), ("85G", 85 * 10**9), ("1.5Gi", 3 * 2**29), ("8e9", 8 * 10**9)],
)
def test_quantities(text: str, value: int) -> None:
    assert parse_quantity(text) == value


def test_bad_quantity_and_gpu_names() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("80 GB")
    with pytest.raises(KeyError, match="unknown GPU"):
        find_gpu("K80")
    assert find_gpu("NVIDIA-H100-80GB-HBM3").name == "H100-80GB" and find_gpu("h200").name == "H200"


def test_product_table_from_environment() -> None:
    assert product_table_from_env({"KUBETUNE_GPU_MEMORY_BY_PRODUCT": '{"NVIDIA-L40S": "46068Mi"}'}) == {
        "NVIDIA-L40S": "46068Mi"
    }
    assert product_table_from_env({}) == {}
    with pytest.raises(ValueError, match="NVIDIA-L40S: 'lots' is not a Kubernetes quantity"):
        product_table_from_env({"KUBETUNE_GPU_MEMORY_BY_PRODUCT": '{"NVIDIA-L40S": "lots"}'})
    with pytest.raises(ValueError, match="NVIDIA-L40S: '0Gi' must be a positive quantity"):
        product_table_from_env({"KUBETUNE_GPU_MEMORY_BY_PRODUCT": '{"NVIDIA-L40S": "0Gi"}'})


def test_autotune_choice_is_rendered_and_recorded_in_the_run_record() -> None:
    """The operator renders the adjusted job with the record; the trainer still reads finetunejob.json."""
    from kubetune.api.contract import SPEC_FILE, TRAIN_ARGS_FILE
    from kubetune.render import RenderOptions, render
    from kubetune.render.configs import AUTO_TUNE_ANNOTATION

    result = autotune(FineTuneJob.model_validate(big_lora(autoTune=True)), 40 * GiB)
    rendered = render(result.job, RenderOptions(auto_tune=result.record()))
    train = yaml.safe_load(rendered.files[TRAIN_ARGS_FILE])
    assert train["per_device_train_batch_size"] == result.chosen["perDeviceBatchSize"] < 16
    record = json.loads(rendered.files[SPEC_FILE])
    assert json.loads(record["metadata"]["annotations"][AUTO_TUNE_ANNOTATION]) == result.record()
    again = FineTuneJob.from_api(record)  # what the trainer does with it (kubetune.trainer.config.load)
    assert again.spec.training.per_device_batch_size == result.chosen["perDeviceBatchSize"]
    plain = json.loads(render(result.job).files[SPEC_FILE])
    assert "annotations" not in plain["metadata"]


def test_autotune_record_is_a_valid_status() -> None:
    """The record validates as status.autoTune, so the operator can patch it as is."""
    from kubetune.api import FineTuneJobStatus

    result = autotune(FineTuneJob.model_validate(big_lora(autoTune=True)), 40 * GiB)
    status = FineTuneJobStatus.model_validate({"autoTune": result.record()})
    assert status.auto_tune is not None and status.auto_tune.changed
    assert (
        status.auto_tune.settings is not None
        and status.auto_tune.settings.per_device_batch_size == result.chosen["perDeviceBatchSize"]
    )


def test_liger_is_suggested_when_it_is_the_cheapest_fix_and_the_field_exists() -> None:
    from kubetune.plan.feasibility import verdict_for

    arch = resolve("Qwen/Qwen1.5-1.8B")
    s = Setup(method="qlora", quant_bits=4, micro_batch=8, seq_len=2048, zero_stage=2, world_size=8)
    with_liger = verdict_for(arch, s, find_gpu("L4").memory_bytes, liger_available=True)
    assert with_liger.suggestion is not None and with_liger.suggestion.steps[0].startswith("training.ligerKernel: true")
    without = verdict_for(arch, s, find_gpu("L4").memory_bytes)
    assert without.suggestion is not None and not any("liger" in step for step in without.suggestion.steps)


def test_fsdp_shards_like_zero3_and_is_never_told_to_use_zero(capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((REPO / "examples/seed/full-accelerate.yaml").read_text())
    doc["spec"]["distributed"].update(fsdp=True, launcher="accelerate")
    job = FineTuneJob.model_validate(doc)
    s = setup_from_job(job)
    arch = resolve("Qwen/Qwen1.5-1.8B")
    assert estimate(arch, s).model_states < estimate(arch, s.with_(fsdp=False)).model_states / 4
    v = feasibility(job, 12 * GiB)
    assert v.status == "False" and v.suggestion is not None
    assert not any("zeroStage" in step or "offload" in step for step in v.suggestion.steps)


def test_list_models_and_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--list-models", "--list-gpus")
    assert code == 0 and "Qwen/Qwen2.5-7B" in out and "meta-llama/Llama-3.1-8B" in out
    assert "H200" in out and "NVIDIA-H100-80GB-HBM3" in out
    code, _, err = run(capsys, "plan")
    assert code == 2 and "give a FineTuneJob file" in err


def test_memory_planning_doc_shows_what_kubetune_plan_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/memory-planning.md's console example (issue 27 item 9: it showed a stale cheapest change):
    every line it shows, besides the elisions, is a line `kubetune plan` prints today."""
    doc = (REPO / "docs/memory-planning.md").read_text()
    block = doc.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    command = block[0].removeprefix("$ kubetune ").split()
    code, out, _ = run(capsys, *command)
    assert code == 1
    shown = [line for line in block[1:] if line.strip() != "..."]
    assert len(shown) >= 4 and any(line.startswith("cheapest change that fits:") for line in shown)
    printed = out.splitlines()
    for line in shown:
        assert line in printed, f"docs/memory-planning.md shows {line!r}, kubetune plan prints:\n{out}"


@pytest.mark.parametrize(
    ("product", "verdict"),
    [
        ("Tesla-V100-SXM2-32GB", "DOES NOT FIT"),
        ("Tesla-T4", "DOES NOT FIT"),
        ("NVIDIA-GH200-480GB", "FITS"),
    ],
)
def test_cli_still_knows_the_memory_of_gpus_the_chart_table_leaves_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, product: str, verdict: str
) -> None:
    # The chart's default gpuMemoryByProduct lists only what kubetune's trainer image runs on, but a job
    # with its own spec.image may target a V100/T4/GH200 node: `kubetune plan` still reads its memory
    # from the node selector's product and gives a verdict.
    doc = big_lora(image="registry.example.com/ml/trainer-cu126:1")
    doc["spec"]["scheduling"] = {"nodeSelector": {"nvidia.com/gpu.product": product}}
    _, out, _ = run(capsys, "plan", write(tmp_path, doc))
    gpu = next(g for g in GPUS if product in g.products)
    assert f"verdict: {verdict} in {gpu.memory_mib / 1024:.1f} GiB" in out
