"""Operator scale benchmark (not a test): N FineTuneJobs created at once against the emulated API.

    .venv/bin/python bench/operator_scale.py --jobs 100 1000

For each N it starts the real operator as a separate process (``run_operator``
with a kubeconfig that points at the emulator, so its RSS is its own), creates
N FineTuneJobs in one burst and reports:

* seconds until every ConfigMap and PyTorchJob exists, and until every
  FineTuneJob has ``status.phase`` and ``status.job``;
* the API requests the operator made for that, in total and per job;
* then every child is marked Running with a rank-0 pod and one progress line,
  and it reports the seconds and requests per job until every status shows
  the progress (one status-sync round: GET child, LIST pods, GET log, PATCH status);
* then one more progress line per job, and the requests per job of that steady
  round (rank 0 known: GET child, GET log, PATCH status);
* the operator's peak RSS (VmHWM).

The emulator answers from memory on loopback, so the numbers are the
operator's own cost (CPU, requests), not an API server's latency.
"""

from __future__ import annotations

import sys

# This file shares its name with the stdlib module ``operator``: keep its folder off the import path.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "controller"))

import kmock  # noqa: E402
from conftest import FTJ, declare_resources, example_job  # noqa: E402
from emulator import Cluster  # noqa: E402
from kubeflow import progress_line, set_condition, start_pod  # noqa: E402

OPERATOR = textwrap.dedent(
    """
    import argparse, sys
    from kubetune.controller.main import run_operator
    sys.exit(run_operator(argparse.Namespace(
        namespace=[], all_namespaces=True, metrics_port=None, health_port=None,
        trainer_image=None, default_queue=None, sync_interval=float(sys.argv[1]), peering="")))
    """
)


def kubeconfig(url: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: bench, cluster: {{server: "{url}"}}}}]
        users: [{{name: bench, user: {{token: bench}}}}]
        contexts: [{{name: bench, context: {{cluster: bench, user: bench}}}}]
        current-context: bench
        """
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_for(check: Any, timeout: float) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark did not converge")
        await asyncio.sleep(0.2)
    return time.perf_counter() - start


def breakdown(calls: list[Any]) -> str:
    counts = collections.Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}" for c in calls)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


async def run(n: int, sync_interval: float, timeout: float) -> dict[str, float]:
    cluster = Cluster()
    declare_resources(cluster)
    async with cluster, kmock.Server(cluster):
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
            f.write(kubeconfig(str(cluster.url).rstrip("/")))
        env = {**os.environ, "KUBECONFIG": f.name}
        proc = subprocess.Popen([sys.executable, "-c", OPERATOR, str(sync_interval)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_for(lambda: cluster.open_watches > 0, 60)
            names = [f"job-{i:05d}" for i in range(n)]
            before = len(cluster.calls)
            start = time.perf_counter()
            for name in names:
                await cluster.put_object(*FTJ, example_job(name, namespace="bench"))
            ptj_res, cm_res = ("kubeflow.org", "v1", "pytorchjobs"), ("", "v1", "configmaps")
            t_children = await wait_for(lambda: sum(1 for r, _, _ in cluster.store if r in (ptj_res, cm_res)) == 2 * n, timeout)
            ftjs = [(("kubetune.io", "v1alpha1", "finetunejobs"), "bench", x) for x in names]

            def all_status() -> bool:  # reads the store directly: the benchmark must not compete for CPU
                return all((cluster.store[k].get("status") or {}).get("job") for k in ftjs)

            await wait_for(all_status, timeout)
            t_status = time.perf_counter() - start
            create_calls = cluster.calls[before:]

            before = len(cluster.calls)
            for name in names:
                await set_condition(cluster, "PyTorchJob", "bench", name, "Running")
                pod = await start_pod(cluster, "PyTorchJob", "bench", name)
                cluster.append_log("bench", pod, progress_line(1, 10, 2.0))
            start = time.perf_counter()

            def all_progress() -> bool:
                return all((cluster.store[k].get("status") or {}).get("progress") for k in ftjs)

            t_progress = await wait_for(all_progress, timeout + sync_interval)
            sync_calls = cluster.calls[before:]

            before = len(cluster.calls)
            for name in names:  # one more log line each: a steady round (rank 0 known, no LIST)
                cluster.append_log("bench", f"{name}-master-0", progress_line(2, 10, 1.5))

            def all_step2() -> bool:
                return all(((cluster.store[k].get("status") or {}).get("progress") or {}).get("step") == 2 for k in ftjs)

            t_steady = await wait_for(all_step2, timeout + sync_interval)
            steady_calls = cluster.calls[before:]
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            os.unlink(f.name)

    print(f"\n== {n} FineTuneJobs ==")
    print(f"children exist after     {t_children:8.2f} s   ({t_children / n * 1000:.1f} ms/job)")
    print(f"every status set after   {t_status:8.2f} s   ({t_status / n * 1000:.1f} ms/job)")
    print(f"API requests (create)    {len(create_calls):8d}     ({len(create_calls) / n:.2f}/job)  {breakdown(create_calls)}")
    print(f"progress everywhere in   {t_progress:8.2f} s   (sync interval {sync_interval} s)")
    print(f"API requests (1st sync)  {len(sync_calls):8d}     ({len(sync_calls) / n:.2f}/job)  {breakdown(sync_calls)}")
    print(f"steady round in          {t_steady:8.2f} s")
    print(f"API requests (steady)    {len(steady_calls):8d}     ({len(steady_calls) / n:.2f}/job)  {breakdown(steady_calls)}")
    print(f"operator peak RSS        {rss:8.1f} MiB ({rss / n * 1024:.1f} KiB/job)")
    return {"n": n, "children_s": t_children, "status_s": t_status, "requests_per_job": len(create_calls) / n, "rss_mib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--sync-interval", type=float, default=2.0, help="status sync interval of the operator under test")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    for n in args.jobs:
        asyncio.run(run(n, args.sync_interval, args.timeout))


if __name__ == "__main__":
    main()
