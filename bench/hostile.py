"""Hostile input: the worst time and memory seen. Prints figures and their ratio to the targets. No assertions.

    .venv/bin/python bench/hostile.py [--corpus N] [--skip-processes]

Targets (issue 12): every input ends within 2 s and 300 MB.

1. The fuzz corpus of tests/api/test_hostile_fuzz.py (mutated examples plus YAML tricks,
   derandomized so runs compare), each through ``kubetune validate`` and ``kubetune render``
   in this process: CPU time and the tracemalloc allocation peak per call.
2. Named worst cases through the real command in a child process: wall and CPU time, and
   the child's peak RSS (VmHWM), which includes the interpreter and its imports.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))  # the helpers are the package tests.support

TARGET_S = 2.0
TARGET_MB = 300.0


def bench_corpus(n: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from tests.support.kt_hostile import hostile_manifest

    from kubetune.cli import main

    worst = {"cpu": (0.0, ""), "mem": (0, ""), "count": 0}
    folder = Path(tempfile.mkdtemp(prefix="kubetune-hostile-"))

    @settings(max_examples=n, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=hostile_manifest())
    def one(case: tuple[str, bytes]) -> None:
        trick, data = case
        path = folder / "job.yaml"
        path.write_bytes(data)
        worst["count"] += 1  # type: ignore[operator]
        for argv in (["validate", "--skip-llamafactory", str(path)], ["render", str(path)]):
            tracemalloc.start()
            start = time.process_time()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(argv)
            cpu = time.process_time() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            label = f"{argv[0]} {trick} ({len(data)} bytes)"
            if cpu > worst["cpu"][0]:  # type: ignore[index]
                worst["cpu"] = (cpu, label)
            if peak > worst["mem"][0]:  # type: ignore[index]
                worst["mem"] = (peak, label)

    # Warm-up: the first call builds pydantic validators and imports lazily (once per process).
    lora = REPO / "examples" / "finetune-lora.yaml"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["validate", "--skip-llamafactory", str(lora)])
        main(["render", str(lora)])
    started = time.monotonic()
    one()
    cpu, cpu_label = worst["cpu"]  # type: ignore[misc]
    mem, mem_label = worst["mem"]  # type: ignore[misc]
    print(f"fuzz corpus: {worst['count']} inputs x (validate, render) in {time.monotonic() - started:.1f} s")
    print(f"  worst CPU time   {cpu:8.3f} s    ({cpu / TARGET_S:.1%} of {TARGET_S} s)  {cpu_label}")
    print(
        f"  worst alloc peak {mem / 2**20:8.1f} MiB  ({mem / 2**20 / TARGET_MB:.1%} of {TARGET_MB:.0f} MB)  {mem_label}"
    )


def _named_cases(folder: Path) -> dict[str, tuple[list[str], bytes]]:
    from tests.support.kt_hostile import alias_bomb

    lora = (REPO / "examples" / "finetune-lora.yaml").read_text(encoding="utf-8")
    big_env = lora.replace(
        "spec:\n", "spec:\n  env:\n" + "".join(f"  - name: V{i}\n    value: '{'x' * 4096}'\n" for i in range(64)), 1
    )
    many_docs = ("---\n" + lora) * (3 * 1024 * 1024 // (len(lora) + 4))
    hundred = ("---\n" + lora) * 100
    return {
        "alias bomb, unknown field": (["validate", "--skip-llamafactory"], (alias_bomb() + lora).encode()),
        "alias bomb, under affinity": (
            ["render"],
            (alias_bomb() + lora.replace("spec:\n", "spec:\n  scheduling:\n    affinity: *l8\n", 1)).encode(),
        ),
        "alias bomb, run --local": (
            ["run", "--local", "--output", str(folder / "out")],
            (alias_bomb() + lora).encode(),
        ),
        "nesting 100000 deep": (
            ["validate", "--skip-llamafactory"],
            ("spec: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
        ),
        "100 KB values": (
            ["validate", "--skip-llamafactory"],
            lora.replace("method: lora", "method: " + "m" * 100_000).encode(),
        ),
        "64 env values of 4 KiB": (["render"], big_env.encode()),
        f"{len(many_docs) // 1024} KiB of FineTuneJobs (refused)": (["render"], many_docs.encode()),
        "render 100 FineTuneJobs (the most)": (["render"], hundred.encode()),
        "validate 100 FineTuneJobs": (["validate", "--skip-llamafactory"], hundred.encode()),
    }


# The child reports its own high-water RSS (VmHWM of its address space) at exit: wait4's
# ru_maxrss would include the parent's RSS, which Linux carries across fork and exec.
_CHILD = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['HWM_FILE'], 'w').write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "sys.argv = ['kubetune', *sys.argv[1:]]\n"
    "runpy.run_module('kubetune', run_name='__main__', alter_sys=True)\n"
)


def bench_processes() -> None:
    folder = Path(tempfile.mkdtemp(prefix="kubetune-hostile-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    print("real command (child process; wall time depends on the machine's load, CPU time does not):")
    for name, (argv, data) in _named_cases(folder).items():
        path = folder / "job.yaml"
        path.write_bytes(data)
        args = [*argv[:1], str(path), *argv[1:]] if argv[0] != "run" else ["run", "--local", str(path), *argv[2:]]
        hwm = folder / "hwm"
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**env, "HWM_FILE": str(hwm)},
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        cpu = usage.ru_utime + usage.ru_stime
        rss_mb = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
        code = os.waitstatus_to_exitcode(status)
        print(
            f"  {name:38s} wall {seconds:5.2f} s  CPU {cpu:5.2f} s ({cpu / TARGET_S:4.0%})  "
            f"peak RSS {rss_mb:4.0f} MB ({rss_mb / TARGET_MB:4.0%})  exit {code}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=500, help="fuzz inputs (default 500)")
    parser.add_argument("--skip-processes", action="store_true")
    args = parser.parse_args()
    bench_corpus(args.corpus)
    if not args.skip_processes:
        bench_processes()


if __name__ == "__main__":
    main()
