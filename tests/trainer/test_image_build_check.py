"""The trainer image's build-time checks, run here on the facts of good and broken builds.

images/trainer/verify_build.py fails the image build when CUDA, nvcc, torch and DeepSpeed's build
disagree; images/trainer/baseline-cxx compiles CPU Adam for a stated ISA instead of the build
host's; images/check_stack.py reads a torch wheel's CUDA line from its metadata. No docker and no
GPU here: verify_build's facts are what ``gather()`` reads in the image (the broken ones are the
failures the old Dockerfile produced), baseline-cxx runs the real g++."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images" / "trainer"))
sys.path.insert(0, str(ROOT / "images"))
import check_stack  # noqa: E402
import verify_build  # noqa: E402

NVCC_13 = (
    "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"
    "Build cuda_13.0.r13.0/compiler.36424714_0\n"
)
EXPECT = dict(torch="2.13.0", torch_cuda="13.0", deepspeed="0.18.4", archs="8.0;9.0;10.0+PTX")
GOOD: dict[str, Any] = {
    "torch_version": "2.13.0",
    "torch_cuda": "13.0",
    "nvcc": NVCC_13,
    "ds_version": "0.18.4",
    "accelerator_name": "cuda",
    "installed_ops": {"cpu_adam": True, "fused_adam": True, "async_io": False},
    "ds_torch_info": {"version": "2.13", "cuda_version": "13.0"},
    "op_files": {"cpu_adam": ["cpu_adam_op.so"], "fused_adam": ["fused_adam_op.so"]},
    "fused_adam_elf": ["sm_80", "sm_90", "sm_100", "compute_100"],
    "cpu_adam_zmm": 0,
}


def test_a_consistent_cuda_build_passes() -> None:
    assert verify_build.problems(GOOD, **EXPECT) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # The old Dockerfile's failures: docker build has no GPU and DS_ACCELERATOR was unset.
        ({"accelerator_name": "cpu"}, "built for accelerator 'cpu', not 'cuda'"),
        # DS_BUILD_CPU_ADAM=1 set but the op "incompatible": setup.py skips it silently.
        ({"installed_ops": {"cpu_adam": False, "fused_adam": True}}, "cpu_adam was not prebuilt"),
        # PyPI's torch (CUDA 13.0) on a CUDA 12.8 devel base.
        ({"nvcc": NVCC_13.replace("13.0", "12.8")}, "nvcc is release 12.8, torch is built for CUDA 13.0"),
        ({"torch_cuda": "12.6", "ds_torch_info": {"cuda_version": "12.6"}}, "torch.version.cuda is '12.6'"),
        ({"torch_cuda": None}, "torch.version.cuda is None"),
        # TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0": no Blackwell, no PTX.
        ({"fused_adam_elf": ["sm_80", "sm_86", "sm_89", "sm_90"]}, "fused_adam lacks code for compute_100, sm_100"),
        ({"cpu_adam_zmm": 412}, "cpu_adam uses AVX-512 (412 zmm instructions)"),
        (
            {"op_files": {"cpu_adam": [], "fused_adam": ["x.so"]}},
            "cpu_adam is marked installed but its extension module is missing",
        ),
    ],
)
def test_a_build_that_disagrees_fails_with_the_reason(change: dict[str, Any], message: str) -> None:
    found = verify_build.problems({**GOOD, **change}, **EXPECT)
    assert any(message in p for p in found), found


def test_nvcc_release_and_arch_list_parsing() -> None:
    assert verify_build.nvcc_release(NVCC_13) == "13.0"
    assert verify_build.nvcc_release("command not found") is None
    assert verify_build.expected_elf_archs("8.0;9.0;10.0+PTX") == ({"sm_80", "sm_90", "sm_100"}, {"compute_100"})


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on this machine")


def _macros(tmp_path: Path, *flags: str) -> set[str]:
    src = tmp_path / "x.cpp"
    src.write_text("int main() { return 0; }\n")
    env = {**os.environ, "KUBETUNE_CPU_MARCH": "x86-64-v3", "KUBETUNE_REAL_CXX": "g++"}
    out = subprocess.run(
        [str(ROOT / "images" / "trainer" / "baseline-cxx"), *flags, "-dM", "-E", str(src)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("#define ")}


@needs_gxx
def test_baseline_cxx_compiles_cpu_adam_for_the_stated_isa_not_the_build_hosts(tmp_path: Path) -> None:
    # The flags DeepSpeed's cpu_arch()/simd_width() give on an AVX-512 build host.
    macros = _macros(tmp_path, "-march=native", "-D__AVX512__", "-O3")
    assert "__AVX2__" in macros and "__FMA__" in macros  # x86-64-v3
    assert "__AVX512F__" not in macros and "__AVX512__" not in macros and "__AVX256__" in macros
    host_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " sha_ni" in host_flags:  # -march=native here would define __SHA__; x86-64-v3 does not
        assert "__SHA__" not in macros


def test_baseline_cxx_refuses_to_run_without_a_baseline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBETUNE_CPU_MARCH"}
    proc = subprocess.run(
        [str(ROOT / "images" / "trainer" / "baseline-cxx"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode != 0 and "KUBETUNE_CPU_MARCH must name the baseline ISA" in proc.stderr


def test_the_cuda_line_is_read_from_a_torch_wheels_requirements() -> None:
    # Requires-Dist of PyPI's torch 2.13.0 (CUDA 13.0) and of a CUDA 12.6 torch build (the cu12 style).
    cu13 = [
        'cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"',
        'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
        'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
        "filelock",
    ]
    cu12 = [
        'nvidia-cuda-runtime-cu12==12.6.77; platform_system == "Linux"',
        'nvidia-cudnn-cu12==9.5.1.17; platform_system == "Linux"',
        'nvidia-nccl-cu12==2.21.5; platform_system == "Linux"',
    ]
    assert check_stack.cuda_line(cu13) == ("13.0", [])
    assert check_stack.cuda_line(cu12) == ("12.6", [])
    assert check_stack.cuda_line(["filelock", "sympy>=1.13"]) == (None, [])  # a CPU wheel
    line, mixed = check_stack.cuda_line(cu13 + cu12[1:2])
    assert line == "13.0" and mixed == [cu12[1]]


def test_the_lock_parser_reads_every_entry_with_its_hashes() -> None:
    text = (ROOT / "images" / "trainer" / "requirements.lock").read_text()
    lock = check_stack.locked(text)
    entries = [l for l in text.splitlines() if l and not l[0].isspace() and not l.startswith("#")]
    assert len(lock) == len(entries) and lock["torch"][0] == "2.13.0" and len(lock["torch"][1]) >= 1
    assert text.count("--hash=sha256:") == sum(len(h) for _, h in lock.values())


def test_the_wheel_check_covers_exactly_what_the_trainer_dockerfile_installs_with_only_binary(tmp_path: Path) -> None:
    # The Dockerfile's own awk filter, run on the real lock, against check_stack's: the packages CI checks
    # for wheels (cp312, manylinux_2_28_x86_64) are the ones `pip install --only-binary=:all:` gets.
    dockerfile = (ROOT / "images" / "trainer" / "Dockerfile").read_text()
    awk = next(line for line in dockerfile.splitlines() if "/tmp/wheels.lock" in line and "awk" in line)
    program = awk.split("awk '", 1)[1].split("'", 1)[0]
    text = (ROOT / "images" / "trainer" / "requirements.lock").read_text()
    dockers = subprocess.run(["awk", program], input=text, capture_output=True, text=True, check=True).stdout
    ours = check_stack.wheels_only(text, check_stack.TRAINER_SDISTS)
    assert check_stack.locked(ours) == check_stack.locked(dockers)
    assert "deepspeed" not in check_stack.locked(ours) and "torch" in check_stack.locked(ours)


def test_a_locked_package_with_no_wheel_is_named() -> None:
    # uv 0.13's words when `--only-binary :all:` meets an sdist-only package (jieba 0.42.1 on PyPI).
    stderr = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because jieba==0.42.1 has no usable wheels and you require jieba==0.42.1, we can conclude "
        "that your requirements are unsatisfiable.\n"
    )
    assert check_stack.wheel_problem("images/x.lock", "cp312 on x86_64-manylinux_2_28", 1, stderr) == (
        "images/x.lock: PyPI has no wheel of jieba==0.42.1 for cp312 on x86_64-manylinux_2_28, "
        "but the Dockerfile installs it with --only-binary=:all: "
        "(build it from its sdist there, or lock another version)"
    )
    assert check_stack.wheel_problem("images/x.lock", "cp312 on x86_64-manylinux_2_28", 0, "") is None


def _fake_uv(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'uv {version} (fake)'\n")
    path.chmod(0o755)
    return path


def test_lock_sh_uses_the_uv_version_that_wrote_the_locks(tmp_path: Path) -> None:
    # Another uv version may format a lock differently, and `lock.sh --check` (CI) would then fail on
    # formatting alone: lock.sh takes a uv on PATH only at its pinned version, else its own copy.
    lock_sh = ROOT / "images" / "lock.sh"
    pinned = next(line.split("=", 1)[1] for line in lock_sh.read_text().splitlines() if line.startswith("UV_VERSION="))
    own = _fake_uv(
        tmp_path / "tmp" / f"kubetune-uv-{pinned}" / "bin" / "uv", pinned
    )  # lock.sh's copy, already installed
    base = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "TMPDIR": str(tmp_path / "tmp")}

    def chosen(**env: str) -> str:
        proc = subprocess.run(
            ["bash", str(lock_sh), "--print-uv"], capture_output=True, text=True, env={**base, **env}, check=True
        )
        return proc.stdout.strip()

    _fake_uv(tmp_path / "bin" / "uv", "0.0.1")
    assert chosen() == str(own)  # a uv of another version on PATH is not used
    _fake_uv(tmp_path / "bin" / "uv", pinned)
    assert chosen() == str(tmp_path / "bin" / "uv")
    assert chosen(UV="/opt/my/uv") == "/opt/my/uv"  # $UV: the caller's choice
