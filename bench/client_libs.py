"""Kubernetes client libraries compared on the operator's hot path (issue 23; a benchmark, not a test).

    pip install -e '.[bench-clients]'                                # lightkube, kubernetes_asyncio
    .venv/bin/python bench/client_libs.py --jobs 1000                # every client, emulator
    .venv/bin/python bench/client_libs.py --jobs 200 --repeat 3      # each client 3 times, interleaved; medians

The same small operator loop is written once per client library:

* ``kubetune``: the operator's own ``kubetune.controller.kube`` (aiohttp; kubeconfig by ``load_connection``);
* ``lightkube``: ``lightkube.AsyncClient`` 1.0.1 (httpx2, msgspec; generic resources for the CRDs);
* ``kubernetes_asyncio``: ``kubernetes_asyncio`` 36.1.0 (aiohttp, like kopf; generated ``CoreV1Api`` and
  ``CustomObjectsApi``).
* ``kubernetes_asyncio_raw``: the same calls with ``_preload_content=False``, answers read as dicts (as kube.py
  returns them) instead of deserialized into the generated models: what the library's transport costs alone.

Each loop, in a process of its own (so its CPU, peak RSS and imports are its own), LISTs FineTuneJobs in all
namespaces, WATCHes them from the list's resourceVersion, and for every new FineTuneJob (16 workers) does what
``controller/act`` does for a job it admits: server-side apply of the job's ConfigMap and PyTorchJob
(``fieldManager=kubetune``, ``force=true``), then a JSON merge patch of ``/status`` carrying the job's
resourceVersion (optimistic locking).  The children are the renderer's output for the example job
(``examples/finetune-lora.yaml``), rendered once by this script and renamed per job, so the loops spend their
CPU on the client, not on rendering.

The API server is the emulator of the controller tests (tests/support/apiserver/emulator.py: real server-side
apply, status subresource, watch from a resourceVersion) behind the counting proxy of
``bench/operator_scale.py``, both in this (parent) process.  Printed per client: seconds from the first job's
creation until the loop has handled all N, the loop process's CPU seconds for that, its peak RSS (VmHWM),
the CPU seconds of importing the library and of loading the kubeconfig, and API requests per job; then the
ratios against ``kubetune``.  The figures are against the emulator on loopback, not a real API server: the
wall time includes the emulator's own work in the parent process, CPU seconds of the loop process are the
robust figure.
"""

from __future__ import annotations

import sys

# bench/ must not shadow the stdlib (see bench/operator_scale.py).
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ("kubetune", "lightkube", "kubernetes_asyncio", "kubernetes_asyncio_raw")
TEMPLATE_NAME = "kt-template-job"
WORKERS = 16
TIMEOUT_S = 30.0  # per request, every client (kube.py's default; lightkube's own default is 10 s)


# --------------------------------------------------------------------------------------------------
# The child: one client library's operator loop.  Prints JSON lines: {"ready": ...} once the LIST is done,
# {"done": ...} when every job is handled.  Imports only the standard library before the measured import.
# --------------------------------------------------------------------------------------------------


def _own_stats() -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of this process."""
    times = os.times()
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return times.user + times.system, rss


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _child(which: str, jobs: int, templates: dict[str, str]) -> None:
    # The operator imports its API models whatever the client (kube.py's kubeconfig reader imports
    # kubetune.api.safeyaml, hence kubetune.api): loaded before the measured import, for every client.
    import kubetune.api  # noqa: F401

    cpu0, wall0 = time.process_time(), time.perf_counter()
    if which == "kubetune":
        from kubetune.controller.kube import FIELD_MANAGER, Kube, load_connection
    elif which == "lightkube":
        from lightkube import AsyncClient
        from lightkube.generic_resource import create_namespaced_resource
        from lightkube.resources.core_v1 import ConfigMap
        from lightkube.types import PatchType
    else:
        from kubernetes_asyncio import client as k8s_client
        from kubernetes_asyncio import config as k8s_config
        from kubernetes_asyncio import watch as k8s_watch
    import_cpu, import_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    cpu0, wall0 = time.process_time(), time.perf_counter()
    handled: set[tuple[str, str]] = set()
    queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
    finished = asyncio.Event()

    def children(namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        cm = json.loads(templates["config_map"].replace(TEMPLATE_NAME, name))
        ptj = json.loads(templates["workload"].replace(TEMPLATE_NAME, name))
        cm["metadata"]["namespace"] = ptj["metadata"]["namespace"] = namespace
        return cm, ptj

    status = {"phase": "Pending", "observedGeneration": 1}

    def seen(event_type: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type in ("ADDED", "MODIFIED") and key not in handled and not (obj.get("status") or {}).get("phase"):
            handled.add(key)
            queue.put_nowait((key[0], key[1], meta["resourceVersion"]))

    if which == "kubetune":
        kube = Kube(load_connection(), timeout_s=TIMEOUT_S)
        config_cpu, config_wall = time.process_time() - cpu0, time.perf_counter() - wall0

        async def reconcile(namespace: str, name: str, rv: str) -> None:
            cm, ptj = children(namespace, name)
            await kube.apply("v1", "configmaps", cm)
            await kube.apply("kubeflow.org/v1", "pytorchjobs", ptj)
            body = {"metadata": {"resourceVersion": rv}, "status": status}
            await kube.patch_status("kubetune.io/v1alpha1", "finetunejobs", namespace, name, body)

        async def informer() -> None:
            items, rv, _ = await kube.list_chunk("kubetune.io/v1alpha1", "finetunejobs", None)
            for obj in items:
                seen("ADDED", obj)
            _say(ready=True)
            while True:
                async for event in kube.watch("kubetune.io/v1alpha1", "finetunejobs", None, rv):
                    if event["type"] == "BOOKMARK" or event["type"] == "ERROR":
                        rv = event["object"].get("metadata", {}).get("resourceVersion") or rv
                        continue
                    rv = event["object"]["metadata"]["resourceVersion"]
                    seen(event["type"], event["object"])

        assert FIELD_MANAGER == "kubetune"
        close = kube.close

    elif which == "lightkube":
        import httpx2

        # field_manager on the client: every apply carries fieldManager=kubetune.
        lk = AsyncClient(field_manager="kubetune", timeout=httpx2.Timeout(TIMEOUT_S))
        FineTuneJob = create_namespaced_resource("kubetune.io", "v1alpha1", "FineTuneJob", "finetunejobs")
        PyTorchJob = create_namespaced_resource("kubeflow.org", "v1", "PyTorchJob", "pytorchjobs")
        config_cpu, config_wall = time.process_time() - cpu0, time.perf_counter() - wall0

        async def reconcile(namespace: str, name: str, rv: str) -> None:
            cm, ptj = children(namespace, name)
            await lk.patch(
                ConfigMap, cm["metadata"]["name"], cm, namespace=namespace, patch_type=PatchType.APPLY, force=True
            )
            await lk.patch(PyTorchJob, name, ptj, namespace=namespace, patch_type=PatchType.APPLY, force=True)
            body = {"metadata": {"resourceVersion": rv}, "status": status}
            await lk.patch(FineTuneJob.Status, name, body, namespace=namespace, patch_type=PatchType.MERGE)

        async def informer() -> None:
            listing = lk.list(FineTuneJob, namespace="*")
            async for obj in listing:
                seen("ADDED", dict(obj))
            rv = listing.resourceVersion
            _say(ready=True)
            # lightkube's watch reconnects by itself after the server ends it (generic_client.py WatchDriver)
            async for event_type, obj in lk.watch(FineTuneJob, namespace="*", resource_version=rv):
                seen(event_type, dict(obj))

        close = lk.close

    else:
        await k8s_config.load_kube_config()  # $KUBECONFIG (read at import, kube_config.py:38-40)
        api = k8s_client.ApiClient()
        core = k8s_client.CoreV1Api(api)
        custom = k8s_client.CustomObjectsApi(api)
        config_cpu, config_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        apply = {"field_manager": "kubetune", "force": True, "_content_type": "application/apply-patch+yaml"}
        if which == "kubernetes_asyncio_raw":
            # Answers as dicts, as kube.py gives them: no model deserialization (_preload_content=False hands
            # back the aiohttp response, and then nothing raises on an error status: rest.py:197-209).
            apply["_preload_content"] = False

        async def answer(result: Any) -> Any:
            if which != "kubernetes_asyncio_raw":
                return result
            try:
                if result.status >= 400:
                    raise RuntimeError(f"{result.status}: {(await result.text())[:200]}")
                return await result.json()
            finally:
                result.release()

        async def reconcile(namespace: str, name: str, rv: str) -> None:
            cm, ptj = children(namespace, name)
            await answer(
                await core.patch_namespaced_config_map(
                    cm["metadata"]["name"], namespace, cm, **apply, _request_timeout=TIMEOUT_S
                )
            )
            await answer(
                await custom.patch_namespaced_custom_object(
                    "kubeflow.org", "v1", namespace, "pytorchjobs", name, ptj, **apply, _request_timeout=TIMEOUT_S
                )
            )
            body = {"metadata": {"resourceVersion": rv}, "status": status}
            # Without _content_type a dict goes out as application/json-patch+json (the first type that
            # custom_objects_api.py:4537-4539 lists; api_client.py:528-552): the server would refuse it.
            raw = {"_preload_content": False} if which == "kubernetes_asyncio_raw" else {}
            await answer(
                await custom.patch_namespaced_custom_object_status(
                    "kubetune.io", "v1alpha1", namespace, "finetunejobs", name, body,
                    _content_type="application/merge-patch+json", _request_timeout=TIMEOUT_S, **raw,
                )
            )  # fmt: skip

        async def informer() -> None:
            listing = await custom.list_cluster_custom_object("kubetune.io", "v1alpha1", "finetunejobs")
            for obj in listing["items"]:
                seen("ADDED", obj)
            rv = listing["metadata"]["resourceVersion"]
            _say(ready=True)
            async with k8s_watch.Watch() as watch:
                stream = watch.stream(
                    custom.list_cluster_custom_object, "kubetune.io", "v1alpha1", "finetunejobs",
                    resource_version=rv, allow_watch_bookmarks=True,
                )  # fmt: skip
                async for event in stream:
                    if event["type"] != "BOOKMARK":
                        seen(event["type"], event["object"])

        close = api.close

    done = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal done
        while True:
            namespace, name, rv = await queue.get()
            for attempt in range(5):
                try:
                    await reconcile(namespace, name, rv)
                    break
                except Exception as exc:  # noqa: BLE001 - reported, retried: a benchmark must finish
                    errors.append(f"{name}: {exc!r}"[:300])
                    await asyncio.sleep(0.5 * (attempt + 1))
            done += 1
            if done >= jobs:
                finished.set()

    tasks = [asyncio.create_task(informer())] + [asyncio.create_task(worker()) for _ in range(WORKERS)]
    waiter = asyncio.create_task(finished.wait())
    await asyncio.wait([waiter, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
    if not finished.is_set():
        tasks[0].result()  # the informer failed: raise its error
    cpu, rss = _own_stats()
    _say(
        done=done,
        cpu_s=cpu,
        rss_mib=rss,
        import_cpu_s=import_cpu,
        import_wall_s=import_wall,
        config_cpu_s=config_cpu,
        config_wall_s=config_wall,
        errors=len(errors),
        first_errors=errors[:3],
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await close()


# --------------------------------------------------------------------------------------------------
# The parent: emulator + counting proxy, one child per client.
# --------------------------------------------------------------------------------------------------


@functools.cache
def _operator_scale() -> Any:
    spec = importlib.util.spec_from_file_location("operator_scale", ROOT / "bench" / "operator_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _templates() -> dict[str, str]:
    scale = _operator_scale()
    from kubetune.api import FineTuneJob
    from kubetune.render import render

    rendered = render(FineTuneJob.from_api(scale.example_job(TEMPLATE_NAME, namespace="bench")))
    return {"config_map": json.dumps(rendered.config_map), "workload": json.dumps(rendered.workload)}


async def run_one(
    which: str, jobs: int, namespace: str, timeout: float, templates_file: str, profile: str | None = None
) -> dict[str, float]:
    scale = _operator_scale()
    names = [f"bench-{i:05d}" for i in range(jobs)]
    async with scale.api_server("emulator") as (_kube, cluster):
        proxy = scale.CountingProxy(_kube)
        await proxy.start()
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
            f.write(scale.kubeconfig(proxy.url, namespace))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            which,
            "--jobs",
            str(jobs),
            "--templates",
            templates_file,
            *(["--profile", profile] if profile else []),
            env={**os.environ, "KUBECONFIG": f.name},
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if not line:
                raise RuntimeError(f"{which}: the loop exited before its LIST (code {await proc.wait()})")
            start = time.perf_counter()
            for name in names:
                await cluster.put_object("kubetune.io/v1alpha1", "finetunejobs", scale.example_job(name, namespace))
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            wall = time.perf_counter() - start
            if not line:
                raise RuntimeError(f"{which}: the loop exited (code {await proc.wait()})")
            result = json.loads(line)
            # Per job: everything but the LIST and WATCH of FineTuneJobs (whether the watch opened before or
            # after the "ready" line is a race); those are counted apart.
            reads = sum(v for k, v in proxy.counts.items() if k.split(" ", 1)[0] in ("GET", "watch"))
            requests = proxy.mark() - reads
            ftjs = cluster.objects("kubetune.io/v1alpha1", "finetunejobs", namespace)
            ptjs = cluster.objects("kubeflow.org/v1", "pytorchjobs", namespace)
            phased = sum(1 for o in ftjs if (o.get("status") or {}).get("phase") == "Pending")
            if len(ptjs) != jobs or phased != jobs:
                raise RuntimeError(f"{which}: {len(ptjs)} PyTorchJobs, {phased} phases for {jobs} jobs")
            managers = {m["manager"] for m in ptjs[0]["metadata"]["managedFields"] if m["operation"] == "Apply"}
            if managers != {"kubetune"}:
                raise RuntimeError(f"{which}: PyTorchJob applied by {managers}")
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.unlink(f.name)
            await cluster.drop_watches()  # ends the proxied watch, or the proxy's shutdown waits 60 s for it
            await proxy.stop()
    if result["errors"]:
        print(f"  {which}: {result['errors']} failed attempts (retried), e.g. {result['first_errors']}")
    return {
        "wall_s": wall,
        "cpu_s": result["cpu_s"],
        "rss_mib": result["rss_mib"],
        "import_cpu_s": result["import_cpu_s"],
        "config_cpu_s": result["config_cpu_s"],
        "requests_per_job": requests / jobs,
        "list_watch_requests": reads,
        "counts": dict(proxy.counts.most_common(6)),  # type: ignore[dict-item]
    }


ROWS = [
    ("wall_s", "wall s (to all N handled)", "{:9.1f}"),
    ("cpu_s", "CPU s (loop process, total)", "{:9.2f}"),
    ("cpu_ms_per_job", "CPU ms per job (after start-up)", "{:9.2f}"),
    ("rss_mib", "peak RSS MiB (VmHWM)", "{:9.0f}"),
    ("import_cpu_s", "import CPU s", "{:9.2f}"),
    ("config_cpu_s", "kubeconfig + client CPU s", "{:9.2f}"),
    ("requests_per_job", "API requests per job (writes)", "{:9.2f}"),
    ("list_watch_requests", "LIST + WATCH requests (all jobs)", "{:9.0f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per client, interleaved; medians printed")
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    parser.add_argument(
        "--profile", metavar="PREFIX", help="run each loop under cProfile; stats in PREFIX.<client> (python -m pstats)"
    )
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--templates", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        templates = json.loads(Path(args.templates).read_text(encoding="utf-8"))
        if args.profile:
            import cProfile

            cProfile.runctx(
                "asyncio.run(_child(args.child, args.jobs, templates))",
                globals(),
                {"args": args, "templates": templates},
                f"{args.profile}.{args.child}",
            )
        else:
            asyncio.run(_child(args.child, args.jobs, templates))
        return

    sys.path.insert(0, str(ROOT))  # the helpers are the package tests.support
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as t:
        json.dump(_templates(), t)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.clients}
    try:
        for attempt in range(args.repeat):
            for which in args.clients:
                r = asyncio.run(run_one(which, args.jobs, args.namespace, args.timeout, t.name, args.profile))
                r["cpu_ms_per_job"] = 1000 * (r["cpu_s"] - r["import_cpu_s"] - r["config_cpu_s"]) / args.jobs
                runs[which].append(r)
                print(
                    f"run {attempt + 1} {which:18s} wall {r['wall_s']:7.1f} s  CPU {r['cpu_s']:6.2f} s  "
                    f"RSS {r['rss_mib']:5.0f} MiB  req/job {r['requests_per_job']:.2f}  {r['counts']}",
                    flush=True,
                )
    finally:
        os.unlink(t.name)
    med = {c: {k: statistics.median(r[k] for r in rs) for k, _, _ in ROWS} for c, rs in runs.items()}
    print(f"\n== {args.jobs} FineTuneJobs, emulator (not a real API server), median of {args.repeat} ==")
    print(f"{'':34s}" + "".join(f"{c:>24s}" for c in args.clients))
    for key, label, fmt in ROWS:
        print(f"{label:34s}" + "".join(f"{fmt.format(med[c][key]):>24s}" for c in args.clients))
    if "kubetune" in med:
        print("\n== ratio against kubetune (kube.py) ==")
        for key, label, _ in ROWS:
            base = med["kubetune"][key]
            cells = "".join(f"{(med[c][key] / base if base else float('nan')):23.2f}x" for c in args.clients)
            print(f"{label:34s}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": args.jobs, "runs": runs}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
