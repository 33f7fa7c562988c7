"""Real fine-tuning through ``python -m kubetune.trainer`` on CPU with the tiny model.

Each test renders a FineTuneJob exactly as the operator would (for folders in
the test's tmp dir), starts the trainer with the environment a pod would get,
and checks what a user would: files, losses, progress lines, exit codes.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import contract
from kubetune.trainer import checkpoints
from kubetune.trainer.tiny import tiny_job
from tests.support.trainerlib import TinyAssets, losses, make_pod, progress_lines, run_trainer, stage_lines
from tests.support.kt_time import scaled

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = [(s["stage"], s["event"]) for s in stage_lines(result.stdout)]
    assert ("train", "end") in stages and ("record", "end") in stages, stages
    assert not [s for s in stage_lines(result.stdout) if s["event"] == "failed"]


@pytest.fixture(scope="module")
def full_ft(
    tmp_path_factory: pytest.TempPathFactory, tiny_assets: TinyAssets
) -> tuple[Any, subprocess.CompletedProcess[str]]:
    """One full fine-tune, which two tests read: what it learned and reported, and how many
    samples maxSamples let through (48 records on disk; LLaMA-Factory's num_samples would draw
    1000 with replacement)."""
    job = tiny_job("full-ft", tiny_assets, method="full", max_steps=30, learning_rate=5e-3)
    job["spec"]["training"]["optimizer"] = "adamw_torch"  # spec.training.optimizer reaches transformers as optim
    job["spec"]["datasets"][0]["maxSamples"] = 1000
    pod = make_pod(tmp_path_factory.mktemp("full-ft"), job, tiny_assets)
    return pod, run_trainer(pod.env)


# xdist_group: both on one worker, so the run above happens once (pytest -n with --dist loadgroup).
@pytest.mark.xdist_group("full-ft")
def test_full_fine_tune_learns_and_reports_progress(full_ft: tuple[Any, subprocess.CompletedProcess[str]]) -> None:
    pod, result = full_ft
    _assert_succeeded(result)
    # The loss clearly falls (a random model on a small repeated dataset).
    curve = losses(pod.output_dir)
    assert len(curve) == 30
    assert sum(curve[-5:]) / 5 < 0.6 * curve[0], curve
    assert (pod.output_dir / "model.safetensors").is_file()
    assert (pod.output_dir / "training_loss.png").is_file()
    # Progress lines: the operator's transport, in camelCase, ending at 100 %.
    updates = progress_lines(result.stdout)
    assert {u["totalSteps"] for u in updates} == {30}
    assert updates[-1]["step"] == 30 and updates[-1]["percent"] == 100.0 and updates[-1]["loss"] is not None
    assert [u["step"] for u in updates] == sorted(u["step"] for u in updates)
    # The run record says what ran, on what.
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outcome"] == "Succeeded" and record["exitCode"] == 0
    assert (
        record["spec"]["method"] == "full"
        and record["trainArgs"]["max_steps"] == 30
        and record["trainArgs"]["optim"] == "adamw_torch"
    )
    assert record["packages"]["llamafactory"] == "0.9.5"
    assert record["metrics"]["epoch"] > 0 and record["startedAt"] <= record["finishedAt"]


def test_lora_then_export_merges_a_model_that_loads_and_generates(tmp_path: Path, tiny_assets: TinyAssets) -> None:
    pod = make_pod(tmp_path, tiny_job("lora-ft", tiny_assets, method="lora", max_steps=8, export=True), tiny_assets)
    result = run_trainer(pod.env)
    _assert_succeeded(result)
    assert ("export", "end") in [(s["stage"], s["event"]) for s in stage_lines(result.stdout)]
    # A job without DeepSpeed neither trains nor exports with it loaded (kubetune.trainer.heavy): `import
    # deepspeed` alone runs its accelerator detection, which logs from real_accelerator.py (on a CPU machine
    # accelerator/real_accelerator.py:208-210 @0.18.4, "Setting accelerator to CPU"; seen here on import).
    assert "real_accelerator.py" not in result.stdout + result.stderr
    adapter = json.loads((pod.output_dir / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 8
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    # spec.serve serves an unmerged adapter with vLLM --chat-template <adapter dir>/chat_template.jinja
    # (render/serving/base.py, CHAT_TEMPLATE_FILE): LLaMA-Factory's run leaves the template it trained with there.
    from kubetune.render.serving import CHAT_TEMPLATE_FILE

    assert "<|im_start|>" in (pod.output_dir / CHAT_TEMPLATE_FILE).read_text()
    merged = pod.output_dir / contract.MERGED_SUBDIR
    assert not list(pod.output_dir.glob(".merged.partial-*"))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_assets.models_dir / tiny_assets.model_path))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8
    with torch.no_grad():
        # The adapter is really in the weights: the merged model is not the base model.
        assert not torch.allclose(model(**ids).logits, base(**ids).logits)
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outputs"]["merged"] == str(merged) and "adapter" in record["outputs"]


def test_qlora_quantizes_the_base_to_4_bit(tmp_path: Path, tiny_assets: TinyAssets) -> None:
    pod = make_pod(tmp_path, tiny_job("qlora-ft", tiny_assets, method="qlora", max_steps=5), tiny_assets)
    result = run_trainer(pod.env)
    _assert_succeeded(result)
    assert "Quantizing model to 4 bit with bitsandbytes" in result.stdout + result.stderr
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    assert len(losses(pod.output_dir)) == 5

    # The same rendered arguments, loaded the way LLaMA-Factory's trainer loads them:
    # the linear layers of the base really are bitsandbytes 4-bit layers.
    import yaml
    from bitsandbytes.nn import Linear4bit
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    args: dict[str, Any] = yaml.safe_load((pod.config_dir / contract.TRAIN_ARGS_FILE).read_text())
    assert args["quantization_bit"] == 4
    args["output_dir"] = str(tmp_path / "probe")
    model_args, _, training_args, finetuning_args, _ = get_train_args(args)
    model = load_model(load_tokenizer(model_args)["tokenizer"], model_args, finetuning_args, is_trainable=True)
    kinds = {type(m).__name__ for m in model.modules()}
    assert any(isinstance(m, Linear4bit) for m in model.modules()), kinds


def _wait_for_step(log: Path, proc: subprocess.Popen[str], step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        updates = progress_lines(log.read_text(errors="replace"))
        if updates and updates[-1]["step"] >= step:
            return
        assert proc.poll() is None, "training ended early: " + log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"step {step} never came")


def test_sigterm_writes_a_checkpoint_and_the_restart_resumes_only_the_same_configuration(
    tmp_path: Path, tiny_assets: TinyAssets
) -> None:
    total = 150
    # No periodic checkpoint before the end: the only one can come from the SIGTERM.
    manifest = tiny_job("resume-ft", tiny_assets, method="lora", max_steps=total, save_steps=1000)
    pod = make_pod(tmp_path, manifest, tiny_assets)
    first_log = tmp_path / "first.log"
    log = open(first_log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trainer"], env=pod.env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for_step(first_log, proc, 3)
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends on preemption or drain
        code = proc.wait(timeout=scaled(120))
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    first_out = first_log.read_text(errors="replace")
    assert code == contract.EXIT_RETRYABLE, first_out[-3000:]
    saved = checkpoints.newest_complete(pod.output_dir)
    assert saved is not None, first_out[-3000:]
    stopped_at = int(saved.name.split("-")[1])
    assert 3 <= stopped_at < total
    assert not (pod.output_dir / "adapter_model.safetensors").exists()  # no "final" model from a stopped run
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outcome"] == "Failed" and record["exitCode"] == contract.EXIT_RETRYABLE and record["configHash"]

    # The same name re-created with another learning rate: refuse, and say what differs.
    changed = tiny_job("resume-ft", tiny_assets, method="lora", max_steps=total, save_steps=1000, learning_rate=1e-3)
    other = make_pod(tmp_path / "changed", changed, tiny_assets)
    refused = run_trainer({**other.env, contract.ENV_OUTPUT_DIR: str(pod.output_dir)})
    assert refused.returncode == contract.EXIT_CONFIG, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "learning_rate: 0.005 -> 0.001" in refused.stderr and "another training configuration" in refused.stderr
    assert checkpoints.newest_complete(pod.output_dir) == saved  # untouched

    # A checkpoint cut off by SIGKILL mid-save: no trainer state.  It must not be used.
    torn = pod.output_dir / f"checkpoint-{total - 1}"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"partial")

    result = run_trainer(pod.env)
    _assert_succeeded(result)
    train_end = next(s for s in stage_lines(result.stdout) if s["stage"] == "train" and s["event"] == "end")
    assert train_end["resumedFrom"] == str(saved)
    # The restart neither re-checks the data nor re-tokenises it: both were kept on the outputs volume.
    data_end = next(s for s in stage_lines(result.stdout) if s["stage"] == "data" and s["event"] == "end")
    assert "skipped" in data_end and data_end["records"] == {"tiny_chat": 48}
    assert train_end["tokenizedPath"].startswith(str(pod.output_dir / "data" / "tokenized-"))
    assert "Loaded tokenized dataset from" in result.stdout + result.stderr
    updates = progress_lines(result.stdout)
    assert updates[0]["step"] > stopped_at  # no step was trained twice
    assert {u["totalSteps"] for u in updates} == {total}  # the plan did not change
    state = json.loads((pod.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == total
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    assert not torn.exists() and list(pod.output_dir.glob(f".incomplete-checkpoint-{total - 1}-*"))


def _distributed_manifest(name: str, assets: TinyAssets, **distributed: Any) -> dict[str, Any]:
    manifest = tiny_job(name, assets, method="lora", max_steps=4)
    # zeroStage > 0 is only valid with GPUs in the spec; the CPU run below still
    # uses exactly the rendered files and the environment the controller sets.
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 1}
    manifest["spec"]["distributed"] = {"zeroStage": 2, **distributed}
    return manifest


def _run_ranks(envs: list[dict[str, str]], tmp_path: Path, timeout: float = 420) -> list[tuple[int, str]]:
    logs = [open(tmp_path / f"rank{i}.log", "w") for i in range(len(envs))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kubetune.trainer"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        for env, log in zip(envs, logs)
    ]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    return [(c, (tmp_path / f"rank{i}.log").read_text(errors="replace")) for i, c in enumerate(codes)]


def _two_replica_envs(env: dict[str, str], **extra: str) -> list[dict[str, str]]:
    """``env`` as the Kubeflow training-operator extends it on Master-0 and Worker-0 of a 2-replica
    PyTorchJob (with one process a node, on a free local port), plus ``extra``."""
    from tests.support.trainerlib import free_port

    port = str(free_port())
    return [
        {
            **env,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "PET_NNODES": "2",
            "PET_NODE_RANK": str(rank),
            "NPROC_PER_NODE": "1",
            **extra,
        }
        for rank in (0, 1)
    ]


@pytest.mark.timeout(
    300
)  # a fresh clone compiles DeepSpeed's CPU ops first (50-75 s, then cached in .cache/), then 2 processes train
def test_deepspeed_zero2_across_two_pytorchjob_pods(
    tmp_path: Path, tiny_assets: TinyAssets, torch_extensions: Path
) -> None:
    pod = make_pod(tmp_path, _distributed_manifest("ds-ptj", tiny_assets), tiny_assets, extensions=torch_extensions)
    assert json.loads(pod.files[contract.DEEPSPEED_FILE])["zero_optimization"]["stage"] == 2
    envs = _two_replica_envs(pod.env, PET_NPROC_PER_NODE="1")
    (code0, out0), (code1, out1) = _run_ranks(envs, tmp_path)
    assert code0 == 0 and code1 == 0, out0[-3000:] + "\n-----\n" + out1[-3000:]
    assert "world size: 2" in out0 and "DeepSpeed" in out0 + out1
    assert "Process rank: 1" in out1  # the second pod really was the second rank
    assert progress_lines(out0) and not progress_lines(out1)  # only rank 0 publishes
    assert progress_lines(out0)[-1]["step"] == 4
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    stages1 = stage_lines(out1)
    assert {"stage": "record", "event": "start"} not in stages1  # rank 0 alone writes the record


@pytest.mark.timeout(300)  # as above: the DeepSpeed op compile when the cache is cold, then 2 processes train
def test_accelerate_deepspeed_across_two_machines(
    tmp_path: Path, tiny_assets: TinyAssets, torch_extensions: Path
) -> None:
    """Two pods, each its own real ``accelerate launch --machine_rank N`` with the rendered accelerate.yaml."""
    import yaml

    pod = make_pod(
        tmp_path,
        _distributed_manifest("acc-2n", tiny_assets, launcher="accelerate"),
        tiny_assets,
        extensions=torch_extensions,
    )
    acc = yaml.safe_load(pod.files[contract.ACCELERATE_FILE])
    assert acc["distributed_type"] == "DEEPSPEED" and acc["num_machines"] == 2
    assert acc["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"  # not pdsh
    envs = _two_replica_envs(pod.env)
    (code0, out0), (code1, out1) = _run_ranks(envs, tmp_path)
    assert code0 == 0 and code1 == 0, out0[-3000:] + "\n-----\n" + out1[-3000:]
    assert "pdsh" not in out0 + out1
    assert "world size: 2" in out0 + out1
    assert progress_lines(out0)[-1]["step"] == 4 and not progress_lines(out1)
    assert (pod.output_dir / "adapter_model.safetensors").is_file()


@pytest.mark.xdist_group("full-ft")
def test_max_samples_means_at_most_and_the_run_record_says_how_many(
    full_ft: tuple[Any, subprocess.CompletedProcess[str]],
) -> None:
    # 48 records on disk; LLaMA-Factory's num_samples would draw 1000 with replacement.
    pod, result = full_ft
    assert json.loads(pod.files[contract.DATASET_INFO_FILE])["tiny_chat"]["num_samples"] == 1000
    _assert_succeeded(result)
    out = result.stdout + result.stderr
    assert re.search(r"Num examples = 48\b", out), out[-3000:]
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["stages"]["data"]["records"] == {"tiny_chat": 48}
    assert record["stages"]["data"]["samples"] == {"tiny_chat": 48}
