"""How fast is `kubetune plan`?  Cold start of the command and in-process time per example.

    .venv/bin/python bench/plan.py

Prints, for every example: the wall time of a fresh `kubetune plan FILE --gpu H100`
process (median of 3), and the in-process time of validate + estimate + verdict
(median of 20).  Target (issue 14): under 0.5 s per example.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml")) + sorted((REPO / "examples" / "seed").glob("*.yaml"))
KUBETUNE = [sys.executable, "-m", "kubetune"]


def main() -> None:
    t0 = time.perf_counter()
    from kubetune.api import load_documents
    from kubetune.plan import feasibility, find_gpu
    from kubetune.render import validate_object

    imports = time.perf_counter() - t0
    base = statistics.median(_run([sys.executable, "-c", "pass"]) for _ in range(3))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; python startup {base:.3f} s; importing kubetune.api + render + plan in-process {imports:.3f} s")
    print(f"{'example':45s} {'cold CLI s':>10s} {'CPU s':>6s} {'in-process ms':>14s}  verdict")
    gpu = find_gpu("H100").memory_bytes
    for path in EXAMPLES:
        CPU.clear()
        cold = statistics.median(_run([*KUBETUNE, "plan", str(path), "--gpu", "H100"]) for _ in range(3))
        cpu = statistics.median(CPU)
        doc = next(iter(load_documents(path.read_text())))
        times = []
        for _ in range(20):
            t = time.perf_counter()
            job, _problems = validate_object(doc)
            assert job is not None
            verdict = feasibility(job, gpu)
            times.append(time.perf_counter() - t)
        print(f"{str(path.relative_to(REPO)):45s} {cold:10.3f} {cpu:6.3f} {1000 * statistics.median(times):14.2f}  {verdict.status} {verdict.estimate.total / 2**30 if verdict.estimate else 0:.1f} GiB")


CPU: list[float] = []


def _run(cmd: list[str]) -> float:
    """Wall seconds of one fresh process; its CPU seconds (user + sys) go to CPU, which a loaded machine inflates less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
