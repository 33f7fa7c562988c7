"""Build-time check of the trainer image (run by images/trainer/Dockerfile; the build fails on any problem).

The base image's CUDA, nvcc, torch's CUDA and DeepSpeed's build must agree, and DeepSpeed's ops
must really be prebuilt for CUDA. What this relies on, read at the pinned tags:

* DeepSpeed records its build in ``deepspeed/git_version_info_installed.py``: ``installed_ops``,
  ``accelerator_name``, ``torch_info`` (setup.py:285-291 @v0.18.4). A requested op that is not
  "compatible" is skipped silently when its DS_BUILD_* variable is set (setup.py:183-188), so the
  build succeeds without it: only this check notices.
* At run time a prebuilt op is used only when ``installed_ops[name]`` and ``accelerator_name`` equal
  the running accelerator's name, else DeepSpeed JIT-compiles it (op_builder/builder.py:525-541).
* nvcc's release must equal ``torch.version.cuda`` (builder.py:47-60, 90-112; no tolerated minor
  mismatch for CUDA 13).
* CPU Adam must not use AVX-512 (``zmm`` registers): it is compiled for the image's baseline ISA
  (images/trainer/baseline-cxx), so it runs on every x86-64-v3 node.

The checks are a pure function of the facts (``problems``); ``main`` gathers the facts from the
real image. tests/trainer/test_image_build_check.py feeds it the facts of good and broken builds.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

REQUIRED_OPS = ("cpu_adam", "fused_adam")


def nvcc_release(nvcc_version_output: str) -> str | None:
    """``13.0`` from ``nvcc --version``'s ``Cuda compilation tools, release 13.0, V13.0.88``."""
    match = re.search(r"release (\d+)\.(\d+)", nvcc_version_output)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def expected_elf_archs(archs: str) -> tuple[set[str], set[str]]:
    """``8.0;9.0;10.0+PTX`` -> ({sm_80, sm_90, sm_100}, {compute_100}): the cubins and PTX a
    cross-compiled op must hold (builder.py compute_capability_args :616-675 @v0.18.4)."""
    sass, ptx = set(), set()
    for cc in filter(None, re.split(r"[;\s]+", archs)):
        num = cc.split("+")[0].replace(".", "")
        sass.add(f"sm_{num}")
        if cc.endswith("+PTX"):
            ptx.add(f"compute_{num}")
    return sass, ptx


def problems(facts: Mapping[str, Any], *, torch: str, torch_cuda: str, deepspeed: str, archs: str) -> list[str]:
    out: list[str] = []
    if facts["torch_version"].split("+")[0] != torch:
        out.append(f"torch is {facts['torch_version']}, the lock pins {torch}")
    if facts["torch_cuda"] != torch_cuda:
        out.append(
            f"torch.version.cuda is {facts['torch_cuda']!r}, the image is built for CUDA "
            f"{torch_cuda} (wrong torch wheel/index?)"
        )
    release = nvcc_release(facts["nvcc"] or "")
    if release != torch_cuda:
        out.append(
            f"nvcc is release {release}, torch is built for CUDA {facts['torch_cuda']}: "
            "DeepSpeed raises CUDAMismatchException"
        )
    if facts["ds_version"] != deepspeed:
        out.append(f"deepspeed is {facts['ds_version']}, the lock pins {deepspeed}")
    if facts["accelerator_name"] != "cuda":
        out.append(
            f"DeepSpeed was built for accelerator {facts['accelerator_name']!r}, not 'cuda' (DS_ACCELERATOR unset?): "
            "its prebuilt ops would be ignored on GPUs"
        )
    ds_cuda = (facts.get("ds_torch_info") or {}).get("cuda_version")
    if ds_cuda != torch_cuda:
        out.append(f"DeepSpeed's ops were built against torch CUDA {ds_cuda}, not {torch_cuda}")
    for op in REQUIRED_OPS:
        if not facts["installed_ops"].get(op):
            out.append(f"DeepSpeed op {op} was not prebuilt (installed_ops[{op!r}] is false)")
        elif not facts["op_files"].get(op):
            out.append(f"DeepSpeed op {op} is marked installed but its extension module is missing")
    sass, ptx = expected_elf_archs(archs)
    have = set(facts.get("fused_adam_elf") or ())
    missing = sorted((sass | ptx) - have)
    if missing:
        out.append(
            f"fused_adam lacks code for {', '.join(missing)} (has {', '.join(sorted(have)) or 'nothing'}); "
            f"TORCH_CUDA_ARCH_LIST was {archs}"
        )
    if facts.get("cpu_adam_zmm", 0):
        out.append(
            f"cpu_adam uses AVX-512 ({facts['cpu_adam_zmm']} zmm instructions): "
            "it would fault with SIGILL on nodes without AVX-512"
        )
    return out


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def gather() -> dict[str, Any]:
    import deepspeed
    import torch
    from deepspeed import git_version_info as info

    adam_dir = os.path.join(os.path.dirname(deepspeed.__file__), "ops", "adam")
    op_files = {op: sorted(glob.glob(os.path.join(adam_dir, f"{op}_op*.so"))) for op in REQUIRED_OPS}
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    elf: set[str] = set()
    for so in op_files["fused_adam"]:
        # cuobjdump lists the cubins (``ELF file 1: <name>.sm_80.cubin``) and the PTX
        # (``PTX file 1: <name>.sm_100.ptx``) embedded in the fat binary. (Format not checked
        # against a real listing here: a mismatch fails the build loudly, it cannot pass silently.)
        elf |= {f"sm_{n}" for n in re.findall(r"sm_(\d+)\.cubin", _run(["cuobjdump", "--list-elf", so]))}
        elf |= {f"compute_{n}" for n in re.findall(r"sm_(\d+)\.ptx", _run(["cuobjdump", "--list-ptx", so]))}
    zmm = sum(len(re.findall(r"%zmm\d+", _run(["objdump", "-d", so]))) for so in op_files["cpu_adam"])
    return {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvcc": _run([nvcc, "--version"]),
        "ds_version": deepspeed.__version__.split("+")[0],
        "accelerator_name": info.accelerator_name,
        "installed_ops": dict(info.installed_ops),
        "ds_torch_info": dict(info.torch_info),
        "op_files": op_files,
        "fused_adam_elf": sorted(elf),
        "cpu_adam_zmm": zmm,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--torch", "--torch-cuda", "--deepspeed", "--archs"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    facts = gather()
    found = problems(facts, torch=args.torch, torch_cuda=args.torch_cuda, deepspeed=args.deepspeed, archs=args.archs)
    for key, value in facts.items():
        print(f"verify_build: {key} = {value if key != 'nvcc' else nvcc_release(value)}")
    for problem in found:
        print(f"verify_build: FAIL: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
