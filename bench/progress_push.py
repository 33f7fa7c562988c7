"""API requests of steady running jobs: progress pushed to the intake vs read from the pod log.

    .venv/bin/python bench/progress_push.py --jobs 50 --rounds 10 --interval 1

Not a test: prints figures.  For each transport it starts the real operator (in a thread,
against the emulated API server on loopback), brings N FineTuneJobs to Running with a rank-0
pod, then for ``--rounds`` status-loop intervals makes every trainer report one new step per
interval: in ``log`` mode the line is appended to the pod log; in ``push`` mode a real
``kubetune.trainer.push.Reporter`` per job posts it to the operator's intake with a
kubelet-style projected token (TokenReview by the emulator, as kube-apiserver does).  It
prints the API requests per job per interval during the steady rounds, by kind, and what that
means per minute at the default 15 s interval.  TokenReviews happen once per token: the kubelet
rotates the token at 80% of 600 s, so in a cluster a pushing job adds one TokenReview per
~480 s, which the figure per minute includes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the helpers are the package tests.support

import kmock  # noqa: E402
from tests.support.harness import FTJ, OperatorThread, declare_resources, example_job  # noqa: E402
from tests.support.apiserver.emulator import Cluster  # noqa: E402
from tests.support.apiserver.auth import TokenAuthority  # noqa: E402
from tests.support.kubeflow import progress_line, set_condition, start_pod  # noqa: E402
from tests.support.pushlib import free_port  # noqa: E402

from kubetune.api import contract  # noqa: E402
from kubetune.controller.kube import Connection  # noqa: E402
from kubetune.controller.runtime import OperatorConfig  # noqa: E402
from kubetune.render import RenderOptions  # noqa: E402
from kubetune.trainer.push import Reporter  # noqa: E402

NS = "bench"
ROTATION_S = 0.8 * contract.PROGRESS_TOKEN_EXPIRATION_S


async def wait_for(check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark setup did not converge")
        await asyncio.sleep(0.05)


def step_of(cluster: Cluster, name: str) -> int:
    return int((((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("progress") or {}).get("step") or 0)


async def measure(mode: str, jobs: int, rounds: int, interval: float) -> dict[str, float]:
    cluster = Cluster()
    declare_resources(cluster)
    authority = TokenAuthority(cluster)
    async with cluster, kmock.Server(cluster):
        config = OperatorConfig(
            connection=Connection(server=str(cluster.url).rstrip("/"), token="bench"),
            metrics_port=None,
            health_port=None,
            sync_interval_s=interval,
            peering=None,
        )
        if mode == "push":
            port = free_port()
            url = f"http://127.0.0.1:{port}{contract.PROGRESS_PATH}"
            config = dataclasses.replace(
                config, progress_port=port, progress_host="127.0.0.1", render_options=RenderOptions(progress_url=url)
            )
        op = OperatorThread(config).start()
        names = [f"job-{i:04d}" for i in range(jobs)]
        reporters: list[Reporter] = []
        tmp = tempfile.TemporaryDirectory()
        try:
            await wait_for(lambda: cluster.open_watches > 0)
            for name in names:
                await cluster.put_object(*FTJ, example_job(name, NS))
            await wait_for(lambda: all(cluster.read("kubeflow.org/v1", "pytorchjobs", NS, n) for n in names))
            pods = {}
            for name in names:
                await set_condition(cluster, "PyTorchJob", NS, name, "Running")
                pods[name] = await start_pod(cluster, "PyTorchJob", NS, name)
            if mode == "push":
                for name in names:
                    token = Path(tmp.name) / name
                    token.write_text(authority.issue(NS, pods[name]), encoding="utf-8")
                    reporters.append(Reporter(url, str(token), NS, name, min_interval_s=interval / 4).start())
            feed = dict(zip(names, reporters)) if reporters else {}

            def report(step: int) -> None:
                for name in names:
                    line = progress_line(step, 1000, 1.0 / step)
                    if mode == "push":
                        feed[name].offer(line)
                    else:
                        cluster.append_log(NS, pods[name], line)

            report(1)
            await wait_for(lambda: all(step_of(cluster, n) == 1 for n in names))
            await asyncio.sleep(2 * interval)
            mark = len(cluster.call_log)
            started = time.monotonic()
            for step in range(2, rounds + 2):
                report(step)
                await asyncio.sleep(interval)
            await wait_for(lambda: all(step_of(cluster, n) == rounds + 1 for n in names))
            elapsed = time.monotonic() - started
            window = cluster.call_log[mark:]
        finally:
            for r in reporters:
                r.close(timeout=2)
            await op.stop()
            tmp.cleanup()
    intervals = elapsed / interval
    counts = collections.Counter(f"{verb} {resource}" for verb, resource, _ in window)
    per = {k: v / jobs / intervals for k, v in sorted(counts.items())}
    per["TOTAL"] = len(window) / jobs / intervals
    per["reviews_total"] = float(len(authority.reviews))
    return per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="status-loop interval in this run (default 15 s in a cluster)"
    )
    args = parser.parse_args()
    for mode in ("log", "push"):
        per = asyncio.run(measure(mode, args.jobs, args.rounds, args.interval))
        reviews = per.pop("reviews_total")
        total = per.pop("TOTAL")
        print(f"{mode}: {args.jobs} running jobs, one new step per job per interval, {args.rounds} intervals")
        for kind, value in per.items():
            print(f"  {kind:28s} {value:6.2f} per job per interval")
        print(f"  {'all requests':28s} {total:6.2f} per job per interval")
        rotation = 60.0 / ROTATION_S if mode == "push" else 0.0
        print(
            f"  at the default 15 s interval: {total * 4 + rotation:.2f} requests per job per minute"
            + (
                f" (incl. {rotation:.3f} TokenReviews/min from token rotation; "
                f"{reviews:.0f} reviews in this run for {args.jobs} tokens)"
                if mode == "push"
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
