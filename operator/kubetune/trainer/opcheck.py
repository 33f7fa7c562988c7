"""Before training: the DeepSpeed ops this job needs are prebuilt, or can really be compiled here.

The trainer image prebuilds DeepSpeed's ``cpu_adam`` and ``fused_adam`` for CUDA
(images/trainer/Dockerfile) and carries no nvcc and no C++ compiler, so an op that is not
prebuilt cannot be JIT-compiled: without this check the job would load the model, start
DeepSpeed and only then die in ``torch.utils.cpp_extension``. Contracts relied on:

* DeepSpeed uses a prebuilt op only when ``installed_ops[name]`` is true and the recorded
  ``accelerator_name`` equals the running accelerator's; otherwise it JIT-compiles it
  (deepspeed op_builder/builder.py:525-541 @v0.18.4). Both are written at build time into
  ``deepspeed/git_version_info_installed.py`` as literals (setup.py:285-291 @v0.18.4), which is
  read here without importing DeepSpeed.
* The running accelerator: ``DS_ACCELERATOR`` when set, else ``cuda`` when torch sees a CUDA
  device, else ``cpu`` (accelerator/real_accelerator.py:59-60, 191-212 @v0.18.4; the other
  vendors' probes are not relevant to this image).
* A JIT build needs ninja (builder.py:549-553), a C++ compiler (``$CXX`` or ``c++``,
  torch/utils/cpp_extension.py get_cxx_compiler @v2.13.0) and, for CUDA, ``nvcc`` under CUDA_HOME
  (builder.py:47-53).
* Which op a job needs: ZeRO-Offload of the optimizer (``offload_optimizer.device`` not ``none``)
  with no ``optimizer`` block in the DeepSpeed config makes accelerate replace the HF optimizer by
  ``DeepSpeedCPUAdam`` (accelerate/accelerator.py:2276-2285, utils/deepspeed.py:29-97 @v1.11.0;
  ``DeepSpeedCPUAdagrad``/``DeepSpeedCPULion`` for torch's Adagrad / a 32-bit bitsandbytes Lion); an ``optimizer`` block
  of type Adam/AdamW uses ``FusedAdam`` on the GPU (runtime/engine.py:1569 @v0.18.4) or ``DeepSpeedCPUAdam`` with
  offload; NVMe offload needs ``async_io``.
* CPU Adam is compiled for ``KUBETUNE_CPU_ADAM_MARCH`` (x86-64-v3 in the image): on a CPU without
  those instructions it would die with SIGILL mid-step, so that is refused here too.
* The image's torch is the CUDA 13.0 build: it needs an NVIDIA driver R580 or newer. A job that
  asked for GPUs on a node where torch sees none is refused with that reason.

The decisions are pure (:func:`check` on :class:`Facts`); :func:`gather` reads the real
environment; tests fake the facts at that boundary.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import console
from .config import JobConfig
from .errors import ConfigError

DRIVER_FLOOR = "R580"
CUDA_LINE = "13.0"
# x86-64-v3 (the psABI level): AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT (cpuinfo: abm), MOVBE, XSAVE.
MARCH_FLAGS: Mapping[str, frozenset[str]] = {
    "x86-64-v3": frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    "x86-64-v2": frozenset({"sse4_1", "sse4_2", "ssse3", "popcnt", "cx16"}),
}
CPU_OPS = frozenset({"cpu_adam", "cpu_adagrad", "cpu_lion", "async_io"})


@dataclass(frozen=True)
class Facts:
    """What the check reads from the container: DeepSpeed's build record and the tools at hand."""

    deepspeed_installed: bool
    installed_ops: Mapping[str, bool] = field(default_factory=dict)
    built_for: str = ""  # DeepSpeed's recorded accelerator_name
    running_accelerator: str = "cpu"
    cuda_devices: int = 0
    torch_cuda: str | None = None  # torch.version.cuda: None for a CPU build of torch
    cxx: str | None = None
    nvcc: str | None = None
    ninja: str | None = None
    cpu_flags: frozenset[str] = frozenset()
    cpu_adam_march: str | None = None
    driver: str | None = None  # /proc/driver/nvidia/version's first line, when present


def _cpu_optimizer_op(optim: str) -> str:
    """The DeepSpeed CPU optimizer accelerate swaps in for the HF ``optim`` under ZeRO-Offload.

    accelerate utils/deepspeed.py:43-95 @v1.11.0: DeepSpeedCPUAdagrad for ``torch.optim.Adagrad``
    (HF ``adagrad``), DeepSpeedCPULion for a bitsandbytes ``Lion`` with ``optim_bits == 32``, else
    DeepSpeedCPUAdam. transformers trainer_optimizer.py:251-285 @v5.6.0 builds every ``*lion*``
    name as bitsandbytes' ``Lion`` with ``optim_bits = 8 if "8bit" in name else 32``, so
    ``lion_8bit``/``paged_lion_8bit`` run cpu_adam, not cpu_lion."""
    name = optim.lower()
    if name == "adagrad":
        return "cpu_adagrad"
    if "lion" in name and "8bit" not in name:
        return "cpu_lion"
    return "cpu_adam"


def needed_ops(ds_config: Mapping[str, Any], optim: str = "") -> dict[str, str]:
    """DeepSpeed ops the job will load, each with the reason (see the module docstring)."""
    zero = ds_config.get("zero_optimization") or {}
    devices = {
        str((zero.get(key) or {}).get("device", "none")).lower() for key in ("offload_optimizer", "offload_param")
    }
    offload = str((zero.get("offload_optimizer") or {}).get("device", "none")).lower()
    ops: dict[str, str] = {}
    block = ds_config.get("optimizer")
    if offload != "none":
        if block is None and ds_config.get("zero_force_ds_cpu_optimizer", True) is not False:
            name = _cpu_optimizer_op(optim)
            ops[name] = (
                f"ZeRO-Offload (offload_optimizer {offload}) runs the optimizer step on the CPU with DeepSpeed's {name}"
            )
        elif isinstance(block, Mapping) and str(block.get("type", "")).lower() in ("adam", "adamw"):
            ops["cpu_adam"] = "ZeRO-Offload with a DeepSpeed Adam optimizer block runs DeepSpeedCPUAdam"
    elif isinstance(block, Mapping) and str(block.get("type", "")).lower() in ("adam", "adamw"):
        ops["fused_adam"] = "the DeepSpeed config's Adam optimizer block runs FusedAdam on the GPU"
    if "nvme" in devices:
        ops["async_io"] = "NVMe offload reads and writes through DeepSpeed's async_io"
    return ops


def check(facts: Facts, ds_config: Mapping[str, Any] | None, *, gpus: int, optim: str = "") -> list[str]:
    """Lines for the log (which ops are prebuilt, which the job uses); raises ConfigError when the job cannot run."""
    lines: list[str] = []
    if gpus > 0 and facts.torch_cuda and facts.cuda_devices == 0:
        driver = (
            f" (this node: {facts.driver})"
            if facts.driver
            else " (no NVIDIA driver found at /proc/driver/nvidia/version)"
        )
        raise ConfigError(
            f"spec.resources.gpusPerNode is {gpus} but torch (CUDA {facts.torch_cuda}) sees no CUDA device{driver}: "
            f"the trainer image's torch is the CUDA {CUDA_LINE} build and needs an NVIDIA driver {DRIVER_FLOOR} or "
            "newer; select nodes with such a driver (spec.scheduling.nodeSelector) or upgrade the node's driver"
        )
    if ds_config is None:
        return lines
    if not facts.deepspeed_installed:
        raise ConfigError(
            "the job uses DeepSpeed (spec.distributed.zeroStage) but this trainer image has no deepspeed package"
        )
    prebuilt = sorted(op for op, on in facts.installed_ops.items() if on)
    usable = facts.built_for == facts.running_accelerator
    lines.append(
        f"DeepSpeed ops prebuilt for accelerator {facts.built_for or 'none'!r}: {', '.join(prebuilt) or 'none'}; "
        f"running on {facts.running_accelerator!r}"
        + ("" if usable else " (a mismatch: every op would be JIT-compiled)")
    )
    for op, why in needed_ops(ds_config, optim).items():
        if usable and facts.installed_ops.get(op):
            lines.append(f"DeepSpeed op {op}: prebuilt ({why})")
            if op in CPU_OPS and facts.cpu_adam_march:
                missing = sorted(MARCH_FLAGS.get(facts.cpu_adam_march, frozenset()) - facts.cpu_flags)
                if missing and facts.cpu_flags:
                    raise ConfigError(
                        f"{why}, and the image's {op} is compiled for {facts.cpu_adam_march}, "
                        f"which this node's CPU does not support (it lacks {', '.join(missing)}): "
                        "it would crash with SIGILL. Run on newer CPUs (spec.scheduling.nodeSelector) or turn "
                        "offload off (spec.distributed.offload: none)"
                    )
            continue
        tools = {"ninja": facts.ninja, "a C++ compiler (c++ or $CXX)": facts.cxx}
        if facts.running_accelerator == "cuda":
            tools["nvcc (CUDA_HOME)"] = facts.nvcc
        absent = [name for name, path in tools.items() if not path]
        reason = (
            f"not prebuilt for {facts.running_accelerator!r}"
            if usable
            else f"prebuilt for {facts.built_for or 'no accelerator'!r}, not for {facts.running_accelerator!r}"
        )
        if absent:
            raise ConfigError(
                f"{why}, but DeepSpeed's {op} op is {reason} and this image cannot JIT-compile it (no "
                f"{', '.join(absent)}). Use kubetune's trainer image (it prebuilds cpu_adam and fused_adam for CUDA), "
                "build a derived image with the op prebuilt (DS_BUILD_<OP>=1) or with the CUDA toolkit and g++, "
                "or change spec.distributed.offload"
            )
        lines.append(f"DeepSpeed op {op}: {reason}; it will be JIT-compiled now ({why})")
    return lines


def _literals(path: Path) -> dict[str, Any]:
    """The literal assignments of a generated module (deepspeed/git_version_info_installed.py,
    torch/version.py), read without importing the package."""
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                out[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return out


def _cpu_flags(text: str) -> frozenset[str]:
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def gather(env: Mapping[str, str], *, gpus: int) -> Facts:
    """The real facts of this container. torch is imported only when the job asked for GPUs and
    torch is a CUDA build (torch/version.py's ``cuda``, read as a literal)."""
    package_dir = _package_dir("deepspeed")
    record = _literals(package_dir / "git_version_info_installed.py") if package_dir is not None else {}
    torch_dir = _package_dir("torch")
    torch_cuda = _literals(torch_dir / "version.py").get("cuda") if torch_dir is not None else None
    cuda_devices = 0
    if gpus > 0 and torch_cuda:
        import torch  # noqa: PLC0415 - only GPU jobs pay for the import

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    running = env.get("DS_ACCELERATOR") or ("cuda" if cuda_devices > 0 else "cpu")
    cuda_home = env.get("CUDA_HOME") or env.get("CUDA_PATH") or "/usr/local/cuda"
    nvcc = shutil.which("nvcc", path=env.get("PATH")) or (
        str(Path(cuda_home) / "bin" / "nvcc") if (Path(cuda_home) / "bin" / "nvcc").is_file() else None
    )
    return Facts(
        deepspeed_installed=package_dir is not None,
        installed_ops={str(k): bool(v) for k, v in dict(record.get("installed_ops") or {}).items()},
        built_for=str(record.get("accelerator_name") or ""),
        running_accelerator=running,
        cuda_devices=cuda_devices,
        torch_cuda=str(torch_cuda) if torch_cuda else None,
        cxx=shutil.which(env.get("CXX") or "c++", path=env.get("PATH")),
        nvcc=nvcc,
        ninja=shutil.which("ninja", path=env.get("PATH")),
        cpu_flags=_cpu_flags(_read("/proc/cpuinfo")),
        cpu_adam_march=env.get("KUBETUNE_CPU_ADAM_MARCH") or None,
        driver=next(iter(_read("/proc/driver/nvidia/version").splitlines()), None),
    )


def run(cfg: JobConfig, env: Mapping[str, str]) -> None:
    """The start-up check (kubetune.trainer.main): log which ops are prebuilt and used; raise
    ConfigError when the job cannot run."""
    ds_path = cfg.train_args.get("deepspeed")
    ds_config = None
    if ds_path:
        path = Path(str(ds_path))
        if not path.is_file():
            path = cfg.config_dir / path.name
        if path.is_file():
            ds_config = json.loads(path.read_text(encoding="utf-8"))
    gpus = cfg.job.spec.resources.gpus_per_node
    for line in check(gather(env, gpus=gpus), ds_config, gpus=gpus, optim=str(cfg.train_args.get("optim") or "")):
        console.write_line(f"kubetune trainer: {line}")
