"""How fast is the planner itself?  In-process time per example of validate + estimate + verdict.

    .venv/bin/python bench/plan.py

Prints, for every FineTuneJob under examples/, the median of 20 in-process runs of
validation, the estimate and the verdict on an H100.  The cold start of the
`kubetune plan` command (the 0.5 s target of issue 14) is measured by
bench/plan_coldstart.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_coldstart import examples  # noqa: E402 - the same example list as the cold-start benchmark


def main() -> None:
    t0 = time.perf_counter()
    from kubetune.api import load_documents
    from kubetune.plan import feasibility, find_gpu
    from kubetune.render import validate_object

    imports = time.perf_counter() - t0
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"importing kubetune.api + render + plan in-process {imports:.3f} s"
    )
    print(f"{'example (first job)':45s} {'in-process ms':>14s}  verdict")
    gpu = find_gpu("H100").memory_bytes
    for path in examples():
        doc = next(iter(load_documents(path.read_text())))
        times = []
        for _ in range(20):
            t = time.perf_counter()
            job, _problems = validate_object(doc)
            assert job is not None
            verdict = feasibility(job, gpu)
            times.append(time.perf_counter() - t)
        total = verdict.estimate.total / 2**30 if verdict.estimate else 0
        print(
            f"{str(path.relative_to(REPO)):45s} {1000 * statistics.median(times):14.2f}  "
            f"{verdict.status} {total:.1f} GiB"
        )


if __name__ == "__main__":
    main()
