"""Renderer and CLI speed: prints figures and their ratio to the targets. No assertions.

    .venv/bin/python bench/render.py [--repeat N]

Targets: a render under 5 ms per job (the operator renders on every
reconcile), and ``kubetune --help`` / ``kubetune render`` starting in under
0.5 s (the CLI must not import torch, transformers or a cluster client).
"""

from __future__ import annotations

import sys

import argparse
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

RENDER_TARGET_MS = 5.0
STARTUP_TARGET_S = 0.5


def example_files() -> list[Path]:
    root = REPO / "examples"
    skip = {"argocd", "prerequisites"}  # not FineTuneJobs
    return sorted(p for p in root.rglob("*.yaml") if not skip & set(p.relative_to(root).parts))


def bench_render(repeat: int) -> None:
    from kubetune.api import load_documents
    from kubetune.render import render, validate_object

    jobs = []
    for path in example_files():
        for doc in load_documents(path.read_text(encoding="utf-8")):
            job, problems = validate_object(doc)
            if job is not None and not problems:
                jobs.append(job)
    for job in jobs:  # warm-up: template compilation, catalog load
        render(job)
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for job in jobs:
            render(job)
        rounds.append((time.perf_counter() - start) / len(jobs) * 1000)
    mean = statistics.mean(rounds)
    print(f"render: {len(jobs)} example jobs x {repeat} rounds")
    print(
        f"  mean {mean:.2f} ms/job, best round {min(rounds):.2f} ms/job, target < {RENDER_TARGET_MS} ms "
        f"({mean / RENDER_TARGET_MS:.2f} x target)"
    )

    start = time.perf_counter()
    n = 0
    for _ in range(max(1, repeat // 5)):
        for path in example_files():
            for doc in load_documents(path.read_text(encoding="utf-8")):
                validate_object(doc)
                n += 1
    print(f"  validate_object: {(time.perf_counter() - start) / n * 1000:.2f} ms/document (incl. YAML parsing)")


def bench_startup(repeat: int) -> None:
    example = str(example_files()[0])
    commands = {
        "kubetune --help": [sys.executable, "-m", "kubetune", "--help"],
        f"kubetune render {Path(example).relative_to(REPO)}": [sys.executable, "-m", "kubetune", "render", example],
    }
    for label, argv in commands.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, cwd=REPO)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(
            f"{label}: median {median:.3f} s over {repeat} runs (min {min(times):.3f} s), "
            f"target < {STARTUP_TARGET_S} s ({median / STARTUP_TARGET_S:.2f} x target)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50, help="render rounds (startup runs = repeat / 5)")
    args = parser.parse_args()
    bench_render(args.repeat)
    bench_startup(max(3, args.repeat // 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
