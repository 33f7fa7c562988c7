#!/usr/bin/env python3
"""Prepare the wheels folder bench.py installs on a bare GPU machine (PyTorch + accelerate only, no network).

    .venv/bin/python bench/gpu/prepare_wheels.py --out /tmp/bench-wheels --python-version 3.11

Run it where the registry is reachable, from kubetune's venv: it takes the exact
versions installed there (transformers, peft, bitsandbytes, tokenizers, pydantic
and their dependency closure), leaves out what a PyTorch + accelerate machine
already has (torch and its dependencies, numpy, pyyaml, psutil, accelerate),
downloads manylinux x86_64 wheels for the GPU machine's Python, and slims the
bitsandbytes wheel to the CUDA builds named by --cuda (its full wheel carries
one ~21 MB library per CUDA/ROCm version).  Prints the folder's size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from importlib.metadata import distribution, requires
from pathlib import Path

from packaging.requirements import Requirement

ROOTS = ["transformers", "peft", "bitsandbytes", "tokenizers", "pydantic"]
ALREADY_THERE = {
    "torch",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "markupsafe",
    "setuptools",
    "numpy",
    "psutil",
    "pyyaml",
    "accelerate",
    "triton",
    "filelock",
    "fsspec",
}


def closure() -> dict[str, str]:
    seen: dict[str, str] = {}

    def walk(name: str) -> None:
        key = name.lower().replace("_", "-")
        if key in seen or key in ALREADY_THERE or key.startswith("nvidia-"):
            return
        seen[key] = distribution(name).version
        for spec in requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                walk(req.name)

    for root in ROOTS:
        walk(root)
    return seen


def platforms(glibc: str) -> list[str]:
    minor = int(glibc.split(".")[1])
    tags = [f"manylinux_2_{m}_x86_64" for m in range(17, minor + 1)] + ["manylinux2014_x86_64", "any"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def slim_bitsandbytes(wheel: Path, cuda: list[str]) -> None:
    keep = {f"libbitsandbytes_cuda{c}.so" for c in cuda} | {"libbitsandbytes_cpu.so"}
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            base = item.filename.rsplit("/", 1)[-1]
            if base.startswith("libbitsandbytes_") and base not in keep:
                continue
            data = src.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"\n".join(
                    line
                    for line in data.split(b"\n")
                    if not (
                        b"libbitsandbytes_" in line and line.split(b",")[0].rsplit(b"/", 1)[-1].decode() not in keep
                    )
                )
            dst.writestr(item, data)
    tmp.replace(wheel)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--python-version",
        default=f"{sys.version_info.major}.{sys.version_info.minor}",
        help="the GPU machine's Python (python -V there)",
    )
    ap.add_argument(
        "--glibc",
        default="2.35",
        help="the GPU machine's glibc (ldd --version); wheels for it and older manylinux tags are accepted",
    )
    ap.add_argument(
        "--cuda",
        default="126,128,130",
        help="bitsandbytes CUDA builds to keep (torch.version.cuda on the GPU machine, without the dot)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in sorted(closure().items())]
    print("downloading:", " ".join(pins))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(args.out),
            "--python-version",
            args.python_version,
            *platforms(args.glibc),
            *pins,
        ],
        check=True,
    )
    for wheel in args.out.glob("bitsandbytes-*.whl"):
        slim_bitsandbytes(wheel, [c.strip() for c in args.cuda.split(",") if c.strip()])
    total = sum(p.stat().st_size for p in args.out.glob("*.whl"))
    print(f"{len(list(args.out.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
