"""The trainer's start-up check of DeepSpeed's ops and the GPU driver (kubetune.trainer.opcheck).

No GPU here: the check's inputs are faked at its boundary (``opcheck.Facts``: DeepSpeed's build
record, the tools on PATH, the CPU flags, what torch sees), with the facts the real trainer image
has (ops prebuilt for CUDA, no nvcc, no g++) and the ones the old image had (ops recorded for the
``cpu`` accelerator). The DeepSpeed configs are the renderer's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import FineTuneJob
from kubetune.render import configs
from kubetune.trainer import opcheck
from kubetune.trainer.config import JobConfig
from kubetune.trainer.errors import ConfigError

# The image's facts: images/trainer/Dockerfile builds cpu_adam and fused_adam with DS_ACCELERATOR=cuda,
# and its runtime stage has neither nvcc nor g++ (ninja comes with the venv).
IMAGE = opcheck.Facts(
    deepspeed_installed=True,
    installed_ops={"cpu_adam": True, "fused_adam": True, "async_io": False, "cpu_adagrad": False},
    built_for="cuda",
    running_accelerator="cuda",
    cuda_devices=8,
    torch_cuda="13.0",
    cxx=None,
    nvcc=None,
    ninja="/opt/venv/bin/ninja",
    cpu_flags=opcheck.MARCH_FLAGS["x86-64-v3"] | {"sse4_2", "avx512f"},
    cpu_adam_march="x86-64-v3",
)


def _job(offload: str = "none", zero: int = 2) -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {
                "model": {"path": "models/m", "template": "qwen"},
                "datasets": [{"name": "d", "path": "data/d.jsonl", "format": "sharegpt"}],
                "method": "full",
                "resources": {"gpusPerNode": 8},
                "distributed": {"zeroStage": zero, "offload": offload},
                "storage": {"outputs": {"claimName": "out"}},
            },
        }
    )


def _cfg(tmp_path: Path, job: FineTuneJob) -> JobConfig:
    ds = tmp_path / "ds_config.json"
    ds.write_text(json.dumps(configs.deepspeed_config(job)))
    return JobConfig(
        job=job,
        config_dir=tmp_path,
        train_args={"deepspeed": str(ds)},
        dataset_info={},
        output_dir=tmp_path,
        datasets_dir=tmp_path,
        models_dir=tmp_path,
    )


def _ds(offload: str) -> dict[str, Any]:
    return configs.deepspeed_config(_job(offload))


def test_the_image_runs_a_zero_offload_job_with_its_prebuilt_cpu_adam_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(opcheck, "gather", lambda env, gpus: IMAGE)
    opcheck.run(_cfg(tmp_path, _job("optimizer")), {})
    out = capsys.readouterr().out
    assert "DeepSpeed ops prebuilt for accelerator 'cuda': cpu_adam, fused_adam; running on 'cuda'" in out
    assert "DeepSpeed op cpu_adam: prebuilt (ZeRO-Offload (offload_optimizer cpu)" in out


def test_ops_recorded_for_the_cpu_accelerator_are_refused_on_gpus_when_nothing_can_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old image: `docker build` saw no GPU, DeepSpeed picked the cpu accelerator and recorded it.
    old = opcheck.Facts(**{**IMAGE.__dict__, "built_for": "cpu"})
    monkeypatch.setattr(opcheck, "gather", lambda env, gpus: old)
    with pytest.raises(ConfigError) as err:
        opcheck.run(_cfg(tmp_path, _job("optimizer")), {})
    message = str(err.value)
    assert "cpu_adam op is prebuilt for 'cpu', not for 'cuda'" in message
    assert "cannot JIT-compile it (no a C++ compiler (c++ or $CXX), nvcc (CUDA_HOME))" in message
    assert "spec.distributed.offload" in message


def test_a_job_without_offload_needs_no_op_and_starts_without_any_compiler() -> None:
    assert opcheck.needed_ops(_ds("none")) == {}
    lines = opcheck.check(opcheck.Facts(**{**IMAGE.__dict__, "installed_ops": {}}), _ds("none"), gpus=8)
    assert lines == ["DeepSpeed ops prebuilt for accelerator 'cuda': none; running on 'cuda'"]


def test_an_op_that_is_not_prebuilt_is_compiled_where_the_image_carries_the_tools() -> None:
    derived = opcheck.Facts(
        **{**IMAGE.__dict__, "installed_ops": {}, "cxx": "/usr/bin/c++", "nvcc": "/usr/local/cuda/bin/nvcc"}
    )
    lines = opcheck.check(derived, _ds("optimizer"), gpus=8)
    assert "DeepSpeed op cpu_adam: not prebuilt for 'cuda'; it will be JIT-compiled now" in lines[-1]


def test_nvme_offload_and_deepspeed_optimizer_blocks_need_their_ops() -> None:
    nvme = {
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}, "offload_param": {"device": "nvme"}}
    }
    assert set(opcheck.needed_ops(nvme)) == {"cpu_adam", "async_io"}
    with pytest.raises(ConfigError, match="async_io op is not prebuilt for 'cuda'"):
        opcheck.check(IMAGE, nvme, gpus=8)
    assert set(opcheck.needed_ops({"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 2}})) == {
        "fused_adam"
    }
    assert set(opcheck.needed_ops(_ds("optimizer"), optim="adagrad")) == {"cpu_adagrad"}
    forced_off = {**_ds("optimizer"), "zero_force_ds_cpu_optimizer": False}
    assert opcheck.needed_ops(forced_off) == {}


@pytest.mark.parametrize(
    ("optim", "op"),
    [
        # transformers trainer_optimizer.py:251-285 (5.6.0): every lion_* name is bitsandbytes' Lion, with
        # optim_bits 8 for *_8bit; accelerate utils/deepspeed.py:84-95 (1.11.0) swaps in DeepSpeedCPULion
        # only for a 32-bit Lion, and DeepSpeedCPUAdam (the default, :43) for every other optimizer.
        ("lion_32bit", "cpu_lion"),
        ("paged_lion_32bit", "cpu_lion"),
        ("lion_8bit", "cpu_adam"),
        ("paged_lion_8bit", "cpu_adam"),
        ("adagrad", "cpu_adagrad"),
        ("adamw_8bit", "cpu_adam"),
        ("adamw_torch", "cpu_adam"),
    ],
)
def test_the_cpu_optimizer_offload_swaps_in_is_the_one_accelerate_picks(optim: str, op: str) -> None:
    assert set(opcheck.needed_ops(_ds("optimizer"), optim=optim)) == {op}
    if op == "cpu_adam":  # prebuilt in the image: an 8-bit Lion job is not refused for a cpu_lion it never loads
        opcheck.check(IMAGE, _ds("optimizer"), gpus=8, optim=optim)
    else:
        with pytest.raises(ConfigError, match=f"{op} op is not prebuilt"):
            opcheck.check(IMAGE, _ds("optimizer"), gpus=8, optim=optim)


def test_cpu_adam_for_x86_64_v3_is_refused_on_a_cpu_without_avx2() -> None:
    old_cpu = opcheck.Facts(**{**IMAGE.__dict__, "cpu_flags": frozenset({"sse4_2", "avx", "popcnt"})})
    with pytest.raises(ConfigError) as err:
        opcheck.check(old_cpu, _ds("optimizer"), gpus=8)
    assert "compiled for x86-64-v3" in str(err.value) and "avx2" in str(err.value) and "SIGILL" in str(err.value)
    opcheck.check(old_cpu, _ds("none"), gpus=8)  # no CPU op: no CPU requirement


def test_a_gpu_job_on_a_node_whose_driver_is_too_old_names_the_driver_floor() -> None:
    r570 = opcheck.Facts(
        **{**IMAGE.__dict__, "cuda_devices": 0, "driver": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.133.20"}
    )
    with pytest.raises(ConfigError) as err:
        opcheck.check(r570, None, gpus=8)
    message = str(err.value)
    assert (
        "gpusPerNode is 8" in message
        and "570.133.20" in message
        and "R580 or newer" in message
        and "CUDA 13.0" in message
    )
    # A CPU build of torch (this test venv) or a CPU job is not held to the driver floor.
    opcheck.check(opcheck.Facts(**{**r570.__dict__, "torch_cuda": None}), None, gpus=8)
    opcheck.check(r570, None, gpus=0)


def test_gather_reads_deepspeeds_real_build_record_without_importing_it() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed in this venv")
    import runpy

    facts = opcheck.gather({"PATH": "/nonexistent"}, gpus=0)
    # The record executed as Python (what `from deepspeed.git_version_info import *` sees; importing
    # deepspeed itself takes half a minute here) against the check's literal read of it.
    spec = importlib.util.find_spec("deepspeed")
    assert spec is not None and spec.origin is not None
    record = runpy.run_path(str(Path(spec.origin).parent / "git_version_info_installed.py"))
    assert facts.deepspeed_installed
    assert facts.built_for == record["accelerator_name"]
    assert dict(facts.installed_ops) == {k: bool(v) for k, v in record["installed_ops"].items()}
    assert facts.cxx is None and facts.ninja is None  # nothing on that PATH
