"""Operator scale benchmark (not a test): kubetune against a trivial kopf operator, N FineTuneJobs at once.

    .venv/bin/python bench/operator_scale.py --jobs 200                      # against the emulator
    .venv/bin/python bench/operator_scale.py --sweep 1000,3000 --reconcile-only   # CPU per job as N grows (issue 23)
    KUBECONFIG=~/.kube/config .venv/bin/python bench/operator_scale.py --server kubeconfig --jobs 1000

Each operator under test runs as its own process (so CPU and RSS are its own) and talks to the API
server through a counting proxy on loopback (so every request it makes is counted, whatever the
server).  ``--server emulator`` (default) starts the emulated API server of the controller tests;
``--server kubeconfig`` uses the server, credentials and namespace ``--namespace`` of $KUBECONFIG
(the FineTuneJob CRD and the Kubeflow PyTorchJob CRD must be installed; the jobs are deleted at
the end).  For each operator, in one run:

* seconds until every FineTuneJob has its ConfigMap, its PyTorchJob and ``status.phase``;
* the operator's CPU seconds and peak RSS (VmHWM);
* API requests per job for that;
* steady load with all N jobs Pending (nothing changes): requests/s over ``--window`` seconds;
* (kubetune, emulator only) steady load with all N jobs Running, with one new progress line per
  job: requests per job per minute, and seconds until every new progress line is in status.

The trivial operator is what issue 8 compares against: a kopf ``on.create`` handler that renders
the same two children (``kubetune.render``), applies them with the same client, and sets
``status.phase`` with kopf's own patch; nothing else (no status following, no progress).
Ratios kubetune/trivial are printed at the end.
"""

from __future__ import annotations

import sys

# This file once shared its name with the stdlib module ``operator``: keep its folder off the import path.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the helpers are the package tests.support, as pyproject's pytest pythonpath

from tests.support.apiserver.emulator import query_bool  # noqa: E402
from tests.support.harness import declare_resources, example_job  # noqa: E402

KUBETUNE = textwrap.dedent(
    """
    import argparse, sys
    from kubetune.controller.main import run_operator
    args = argparse.Namespace(
        namespace=[], all_namespaces=True, metrics_port=None, health_port=None,
        trainer_image=None, default_queue=None, sync_interval=float(sys.argv[1]), peering="")
    if len(sys.argv) > 2:  # --profile: cProfile of the whole operator process, written at exit
        import cProfile
        profile = cProfile.Profile()
        try:
            code = profile.runcall(run_operator, args)
        finally:
            profile.dump_stats(sys.argv[2])
        sys.exit(code)
    sys.exit(run_operator(args))
    """
)

TRIVIAL = textwrap.dedent(
    """
    import asyncio, logging, sys
    import kopf
    from kubetune.api import FineTuneJob
    from kubetune.controller.kube import Kube, load_connection
    from kubetune.render import render

    conn = load_connection()
    clients = {}

    @kopf.on.login()
    def login(**_):
        return kopf.ConnectionInfo(server=conn.server, scheme="Bearer" if conn.token else None, token=conn.token,
                                   insecure=conn.insecure, ca_path=conn.ca_path)

    @kopf.on.create("kubetune.io", "v1alpha1", "finetunejobs")
    async def create(body, patch, **_):
        kube = clients.setdefault("kube", Kube(conn))
        rendered = render(FineTuneJob.from_api(dict(body)))
        await kube.apply("v1", "configmaps", rendered.config_map)
        await kube.apply("kubeflow.org/v1", "pytorchjobs", rendered.workload)
        patch.status["phase"] = "Pending"

    @kopf.on.startup()
    def configure(settings, **_):
        settings.posting.level = logging.WARNING
        settings.scanning.disabled = True

    kopf.configure(log_format=kopf.LogFormat.JSON)
    kopf.run(clusterwide=True, standalone=True)
    """
)

FTJ = ("kubetune.io/v1alpha1", "finetunejobs")


def kubeconfig(url: str, namespace: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: bench, cluster: {{server: "{url}"}}}}]
        users: [{{name: bench, user: {{token: bench}}}}]
        contexts: [{{name: bench, context: {{cluster: bench, user: bench, namespace: {namespace}}}}}]
        current-context: bench
        """
    )


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return cpu, rss


class CountingProxy:
    """A loopback HTTP proxy in front of the API server that counts the operator's requests.

    Upstream requests carry the benchmark's own credentials (token or client certificate from the
    kubeconfig), so the operator under test connects to plain http://127.0.0.1 without any.
    """

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream  # kubetune.controller.kube.Kube
        self.counts: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.dropped = 0
        self.runner: aiohttp.web.AppRunner | None = None
        self.url = ""

    def mark(self) -> int:
        return self.total

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        self.total += 1
        # A watch as the API server tells one (the emulator's query_bool, after apimachinery conversion.go).
        watch = query_bool(request.query, "watch")
        verb = "watch" if watch else request.method
        parts = request.path.strip("/").split("/")
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
            parts = parts[parts.index("namespaces") + 2 :]
            resource = parts[0] + ("/" + parts[2] if len(parts) > 2 else "")
        else:
            resource = parts[-1] if len(parts) % 2 == 1 or parts[0] == "api" else parts[-2]
        self.counts[f"{verb} {resource}"] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        token = self.upstream.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = await request.read()
        session = self.upstream._get_session()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None if watch else 60)
        out = aiohttp.web.StreamResponse()
        try:
            async with session.request(
                request.method, request.path_qs.lstrip("/"), data=body or None, headers=headers, timeout=timeout
            ) as resp:
                out = aiohttp.web.StreamResponse(
                    status=resp.status, headers={"Content-Type": resp.headers.get("Content-Type", "application/json")}
                )
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
        except (aiohttp.ClientConnectionError, ConnectionResetError):
            self.dropped += 1  # the operator gave up on the request (its own timeout) or the server went away
        return out

    async def start(self) -> None:
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = aiohttp.web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def api_server(kind: str) -> AsyncIterator[tuple[Any, Any]]:
    """(upstream Kube client, emulator Cluster or None)."""
    from kubetune.controller.kube import Connection, Kube, load_connection

    if kind == "emulator":
        import kmock
        from tests.support.apiserver.emulator import Cluster

        cluster = Cluster()
        declare_resources(cluster)
        async with cluster, kmock.Server(cluster):
            kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="bench"))
            try:
                yield kube, cluster
            finally:
                await kube.close()
    else:
        kube = Kube(load_connection(), timeout_s=120)
        try:
            yield kube, None
        finally:
            await kube.close()


def alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"the operator exited with code {proc.returncode} (--log PREFIX keeps its log)")


async def wait_for(check: Any, timeout: float, every: float = 0.5) -> float:
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark did not converge")
        await asyncio.sleep(every)
    return time.perf_counter() - start


async def run_one(which: str, args: argparse.Namespace, jobs: int) -> dict[str, float]:
    from kubetune.controller.kube import ApiError

    namespace, n = args.namespace, jobs
    names = [f"bench-{i:05d}" for i in range(n)]
    async with api_server(args.server) as (kube, cluster):
        proxy = CountingProxy(kube)
        await proxy.start()
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
            f.write(kubeconfig(proxy.url, namespace))
        script = KUBETUNE if which == "kubetune" else TRIVIAL
        profile = [f"{args.profile}.{which}.{n}"] if args.profile and which == "kubetune" else []
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(args.log_interval), *profile],
            env={**os.environ, "KUBECONFIG": f.name},
            stdout=subprocess.DEVNULL,
            stderr=open(args.log + f".{which}.{n}", "w") if args.log else subprocess.DEVNULL,
        )
        result: dict[str, float] = {}
        try:
            await asyncio.sleep(3)  # start-up (imports, LIST, WATCH)
            before = proxy.mark()
            cpu_start = proc_stats(proc.pid)[0]  # imports and start-up: not the jobs' cost
            start = time.perf_counter()
            if cluster is not None:
                for claim in ("model-cache", "finetune-outputs"):  # the example's prerequisites exist
                    await cluster.put_object(
                        "v1",
                        "persistentvolumeclaims",
                        {"metadata": {"name": claim, "namespace": namespace}, "status": {"phase": "Bound"}},
                    )
                for name in names:
                    await cluster.put_object(*FTJ, example_job(name, namespace=namespace))
            else:
                for name in names:
                    await kube.create(*FTJ, example_job(name, namespace=namespace))

            async def reconciled() -> bool:
                alive(proc)
                if cluster is not None:  # read the store directly: the benchmark must not compete for CPU
                    ftjs = cluster.objects(*FTJ, namespace)
                    ptjs = len(cluster.objects("kubeflow.org/v1", "pytorchjobs", namespace))
                else:
                    ftjs = (await kube.list_chunk(*FTJ, namespace))[0]
                    ptjs = len((await kube.list_chunk("kubeflow.org/v1", "pytorchjobs", namespace))[0])
                return ptjs >= n and sum(1 for o in ftjs if (o.get("status") or {}).get("phase")) >= n

            await wait_for(reconciled, args.timeout)
            t_reconciled = time.perf_counter() - start
            cpu, rss = proc_stats(proc.pid)
            requests = proxy.mark() - before
            result.update(
                reconciled_s=t_reconciled,
                cpu_s=cpu,
                cpu_jobs_s=cpu - cpu_start,
                rss_mib=rss,
                requests_per_job=requests / n,
            )
            print(f"\n== {which}: {n} FineTuneJobs ({args.server}) ==")
            print(f"all reconciled (children + phase) {t_reconciled:8.1f} s")
            print(
                f"operator CPU so far                {cpu:8.1f} s ({cpu - cpu_start:.1f} s since the jobs were created)"
            )
            print(f"API requests per job               {requests / n:8.2f}   {dict(proxy.counts.most_common(8))}")
            if proxy.dropped:
                print(
                    f"requests the operator abandoned    {proxy.dropped:8d}   (client timeouts: "
                    "the server side is the bottleneck)"
                )
            if args.reconcile_only:
                return result

            if cluster is not None:
                # As the training-operator would: every child gets its Created condition (pods pending).
                # Without it kubetune rightly reports ControllerNotRunning after 2 minutes.
                from tests.support.kubeflow import set_condition as kubeflow_condition

                for name in names:
                    await kubeflow_condition(cluster, "PyTorchJob", namespace, name, "Created")
            await asyncio.sleep(5)  # let follow-up events settle
            before = proxy.mark()
            await asyncio.sleep(args.window)
            steady = (proxy.mark() - before) / args.window
            result["steady_pending_rps"] = steady
            print(f"steady load, {n} Pending jobs       {steady:8.2f} req/s over {args.window:.0f} s")

            if which == "kubetune" and cluster is not None:
                from tests.support.kubeflow import progress_line, set_condition, start_pod

                for name in names:
                    await set_condition(cluster, "PyTorchJob", namespace, name, "Running")
                    pod = await start_pod(cluster, "PyTorchJob", namespace, name)
                    cluster.append_log(namespace, pod, progress_line(1, 10, 2.0))

                async def progressed(step: int) -> bool:
                    alive(proc)
                    return all(
                        ((o.get("status") or {}).get("progress") or {}).get("step") == step
                        for o in cluster.objects(*FTJ, namespace)
                    )

                t_first = await wait_for(lambda: progressed(1), args.timeout + args.log_interval)
                await asyncio.sleep(5)
                before, t0 = proxy.mark(), time.perf_counter()
                for name in names:
                    cluster.append_log(namespace, f"{name}-master-0", progress_line(2, 10, 1.5))
                t_progress = await wait_for(lambda: progressed(2), args.timeout + args.log_interval)
                rest = max(0.0, args.log_interval - (time.perf_counter() - t0))
                await asyncio.sleep(rest)  # a whole log interval: the steady cost of a running job
                per_minute = (proxy.mark() - before) / n / ((time.perf_counter() - t0) / 60)
                result.update(progress_s=t_progress, running_req_per_job_min=per_minute)
                print(f"first progress everywhere in       {t_first:8.1f} s (log interval {args.log_interval} s)")
                print(f"new progress line -> status in     {t_progress:8.1f} s (all {n} jobs)")
                print(
                    f"steady load, {n} Running jobs       {per_minute:8.2f} requests per job per minute "
                    "(one new progress line each)"
                )
            cpu, rss = proc_stats(proc.pid)
            result.update(cpu_total_s=cpu, rss_mib=rss)
            print(f"operator CPU total                 {cpu:8.1f} s; peak RSS {rss:.0f} MiB")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            os.unlink(f.name)
            await proxy.stop()
            if cluster is None:
                for name in names:
                    with contextlib.suppress(ApiError):
                        await kube.request(
                            "delete", "DELETE", f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs/{name}"
                        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--server", choices=("emulator", "kubeconfig"), default="emulator")
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--operators", nargs="+", choices=("trivial", "kubetune"), default=["trivial", "kubetune"])
    parser.add_argument("--window", type=float, default=30.0, help="seconds of steady load measured")
    parser.add_argument(
        "--log-interval", type=float, default=60.0, help="kubetune's --sync-interval (rank-0 log reads)"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--sweep", metavar="N,N,...", help="run at each job count (e.g. 1000,3000) and print CPU per job and its growth"
    )
    parser.add_argument(
        "--reconcile-only", action="store_true", help="stop once every job is reconciled (no steady-load phases)"
    )
    parser.add_argument(
        "--log", metavar="PREFIX", help="keep each operator's stderr (its JSON log) in PREFIX.<operator>.N"
    )
    parser.add_argument(
        "--profile", metavar="PREFIX", help="run kubetune under cProfile; stats in PREFIX.kubetune.N (python -m pstats)"
    )
    args = parser.parse_args()
    if args.sweep:
        sweep(args)
        return
    results = {which: asyncio.run(run_one(which, args, args.jobs)) for which in args.operators}
    if len(results) == 2:
        t, k = results["trivial"], results["kubetune"]
        print("\n== kubetune / trivial ==")
        for key, label in [
            ("reconciled_s", "reconcile time"),
            ("rss_mib", "peak RSS"),
            ("cpu_s", "CPU to reconcile"),
            ("requests_per_job", "API requests per job"),
        ]:
            print(f"{label:24s} {k[key] / t[key]:6.2f}x   ({k[key]:.2f} vs {t[key]:.2f})")
        if "steady_pending_rps" in k and "steady_pending_rps" in t:  # not measured with --reconcile-only
            print(f"{'steady pending load':24s} {k['steady_pending_rps']:.2f} vs {t['steady_pending_rps']:.2f} req/s")


def sweep(args: argparse.Namespace) -> None:
    """Each operator at each job count (issue 23: the 1,000 and 3,000 points): CPU to reconcile per job
    and its growth against the growth in jobs. Linear cost: CPU per job stays flat (ratio ~1)."""
    counts = [int(n) for n in args.sweep.split(",")]
    results = {(which, n): asyncio.run(run_one(which, args, n)) for n in counts for which in args.operators}
    print("\n== sweep: operator CPU from the jobs' creation until all are reconciled ==")
    print(
        f"{'operator':10s} {'jobs':>6s} {'CPU s':>8s} {'CPU ms/job':>11s} {'req/job':>8s} "
        f"{'x CPU/job vs ' + str(counts[0]):>16s}"
    )
    for which in args.operators:
        first = results[(which, counts[0])]["cpu_jobs_s"] / counts[0]
        for n in counts:
            r = results[(which, n)]
            per_job = r["cpu_jobs_s"] / n
            print(
                f"{which:10s} {n:6d} {r['cpu_jobs_s']:8.1f} {1000 * per_job:11.1f} "
                f"{r['requests_per_job']:8.2f} {per_job / first:16.2f}"
            )


if __name__ == "__main__":
    main()
