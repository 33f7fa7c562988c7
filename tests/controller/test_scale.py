"""The controller's cost per event does not grow with the number of FineTuneJobs.

Issue 23 measured kubetune's CPU growing 7.4x from 1,000 to 3,000 jobs (a trivial kopf operator's:
2.7x). Two scans ran on every event: every FineTuneJob event walked every known job to find the ones
that build on it (fromJob), and once more than 4,096 objects had Events, every Event rebuilt the
Event correlator's whole cache. Work is counted here, not timed: the Python lines the controller
runs for one event, with few jobs and with many (``bench/operator_scale.py --sweep`` measures CPU).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.harness import FTJ, eventually, example_job

from kubetune.controller.act import EventRecorder
from kubetune.controller.decide import EventSpec
from kubetune.controller.kube import Connection, Kube
from kubetune.controller.loop import Controller
from kubetune.controller.metrics import Metrics
from kubetune.controller.runtime import OperatorConfig, Runtime

CONTROLLER = str(Path(Controller.__module__.replace(".", "/")).parent)  # "kubetune/controller"


def lines_run(call: Callable[[], Any]) -> int:
    """How many lines of kubetune/controller/*.py run during ``call()`` (loop iterations included)."""
    count = 0

    def local(frame: FrameType, event: str, _arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def trace(frame: FrameType, _event: str, _arg: Any) -> Any:
        return local if CONTROLLER in frame.f_code.co_filename.replace("\\", "/") else None

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def controller_with(n: int) -> Controller:
    """A controller that knows ``n`` FineTuneJobs, plus ``base`` and ``tuned`` (tuned builds on base, not started)."""
    config = OperatorConfig(
        connection=Connection(server="http://127.0.0.1:9"), metrics_port=None, health_port=None, peering=None
    )
    controller = Controller(Runtime(config, Kube(config.connection), Metrics()), peering=None)
    for i in range(n):
        controller.job_event(
            "ADDED",
            {
                **example_job(f"job-{i:05d}", "ns"),
                "metadata": {"name": f"job-{i:05d}", "namespace": "ns", "resourceVersion": "1"},
            },
        )
    controller.job_event(
        "ADDED", {**example_job("base", "ns"), "metadata": {"name": "base", "namespace": "ns", "resourceVersion": "1"}}
    )
    tuned = example_job("tuned", "ns", model={"fromJob": "base", "template": "qwen"})
    controller.job_event("ADDED", {**tuned, "metadata": {"name": "tuned", "namespace": "ns", "resourceVersion": "1"}})
    return controller


def job_event_cost(n: int) -> tuple[int, set[tuple[str, str]]]:
    """Lines run for one update of ``base``, and the keys it queued."""
    controller = controller_with(n)
    while len(controller.queue):  # start from an empty queue
        key = controller.queue._queue.popleft()
        controller.queue._dirty.discard(key)
    base = {**controller.caches.jobs[("ns", "base")], "status": {"phase": "Succeeded"}}
    base["metadata"] = {**base["metadata"], "resourceVersion": "2"}
    cost = lines_run(lambda: controller.job_event("MODIFIED", base))
    return cost, set(controller.queue._queue)


def test_a_job_event_costs_the_same_with_10_or_3000_jobs() -> None:
    few, queued_few = job_event_cost(10)
    many, queued_many = job_event_cost(3000)
    # What a user sees: the job built on `base` is reconciled when `base` changes, with any number of jobs.
    assert queued_few == queued_many == {("ns", "base"), ("ns", "tuned")}
    assert many == few, f"one FineTuneJob event ran {few} controller lines with 10 jobs and {many} with 3,000"


def test_a_job_that_stops_building_on_another_is_no_longer_woken_by_it() -> None:
    controller = controller_with(0)
    assert controller.caches.dependents("ns", "base") == [("ns", "tuned")]
    plain = {**example_job("tuned", "ns"), "metadata": {"name": "tuned", "namespace": "ns", "resourceVersion": "2"}}
    controller.job_event("MODIFIED", plain)
    assert controller.caches.dependents("ns", "base") == []
    controller.job_event("DELETED", plain)
    assert controller.caches._dependents == {} and controller.caches._sources == {}


class Events:
    """The API server's Event endpoints, as far as EventRecorder uses them: everything is accepted."""

    def __init__(self) -> None:
        self.posted = 0

    async def create(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.posted += 1
        return obj

    async def request(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}


def event_cost(objects: int, cache_size: int) -> tuple[int, int]:
    """Lines run by one Event after ``objects`` jobs each got one (all within the aggregation window),
    and how many aggregation records the recorder then holds."""
    recorder = EventRecorder(Events(), Metrics(), cache_size=cache_size)  # type: ignore[arg-type]
    spec = EventSpec("Normal", "Created", "created the children")

    def job(i: int) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": f"job-{i}", "uid": f"uid-{i}"}}

    async def run() -> int:
        for i in range(objects):
            await recorder.record(job(i), spec, now=1000.0)
        one_more = recorder.record(job(objects), spec, now=1001.0)
        return lines_run(lambda: _drive(one_more))

    return asyncio.run(run()), len(recorder._similar)


def _drive(coro: Any) -> None:
    """Run a coroutine that never really waits (the fake API answers at once) in the calling frame."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("the recorder waited on something")


def test_an_event_costs_the_same_past_the_correlator_cache_size() -> None:
    few, _ = event_cost(100, cache_size=64)
    many, held = event_cost(2000, cache_size=64)
    assert many == few, f"one Event ran {few} controller lines after 100 objects had Events and {many} after 2,000"
    assert held == 64, "the correlator's cache is bounded like client-go's LRU (maxLruCacheEntries)"


async def test_a_claim_created_later_is_seen_at_once_and_claims_cost_no_request_per_job(
    cluster: Any, operator: Any, config: OperatorConfig
) -> None:
    """Prerequisite PVCs come from a watch: creating the missing one flips PrerequisitesReady without
    waiting for a timed re-check (here an hour away), and no job costs a GET of a claim."""
    await operator(dataclasses.replace(config, prereq_recheck_s=3600.0))
    await cluster.put_object(
        "v1",
        "persistentvolumeclaims",
        {"metadata": {"name": "model-cache", "namespace": "ns"}, "status": {"phase": "Bound"}},
    )
    for name in ("a", "b"):
        await cluster.put_object(*FTJ, example_job(name, "ns"))

    def ready(name: str) -> dict[str, Any]:
        conditions = ((cluster.read(*FTJ, "ns", name) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "PrerequisitesReady"), {})

    await eventually(lambda: all(ready(n).get("status") == "False" for n in "ab"), what="finetune-outputs missing")
    assert "PersistentVolumeClaim finetune-outputs in namespace ns: not found" in ready("a")["message"]
    await cluster.put_object(
        "v1",
        "persistentvolumeclaims",
        {"metadata": {"name": "finetune-outputs", "namespace": "ns"}, "status": {"phase": "Pending"}},
    )
    await eventually(
        lambda: all(ready(n).get("status") == "True" for n in "ab"), what="the new claim seen by both jobs"
    )
    claim_calls = {c.verb for c in cluster.api_calls() if c.resource == "persistentvolumeclaims"}
    assert claim_calls == {"list", "watch"}, claim_calls


async def test_an_operator_that_may_not_list_claims_still_creates_the_children(
    cluster: Any, operator: Any, config: OperatorConfig
) -> None:
    """RBAC without list on PVCs (a chart older than this operator): the claims are "could not be
    checked", never a start-up that waits forever for the informer, and the job runs."""
    cluster.inject("list", "persistentvolumeclaims", 403, times=1000)
    await operator(config)
    await cluster.put_object(*FTJ, example_job("a", "ns"))
    await eventually(lambda: cluster.read("kubeflow.org/v1", "pytorchjobs", "ns", "a"), what="the PyTorchJob")
    conditions = ((cluster.read(*FTJ, "ns", "a") or {}).get("status") or {}).get("conditions") or []
    assert not [c for c in conditions if c["type"] == "PrerequisitesReady" and c["status"] == "False"], conditions


class ClaimsApi:
    """The two calls an Informer makes of the API client, with KubeApi's signature
    (operator/kubetune/controller/kube.py list_chunk, watch): a fake answers a LIST page in ``page``;
    every WATCH stays open."""

    async def list_chunk(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str, str]:
        return await self.page(namespace, limit, continue_token)

    async def page(
        self, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str, str]:
        raise NotImplementedError

    async def watch(self, *_: Any, **__: Any) -> Any:
        await asyncio.Event().wait()
        yield {}


class ScopedClaims(ClaimsApi):
    """LIST/WATCH of PersistentVolumeClaims as an API server answers a namespaced install whose Role is
    missing in one watched namespace: 403 there, the claims elsewhere; every WATCH stays open."""

    def __init__(self, forbidden: str, claims: dict[str, list[str]]) -> None:
        self.forbidden, self.claims, self.lists = forbidden, claims, 0

    async def page(
        self, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str, str]:
        from kubetune.controller.kube import ApiError

        self.lists += 1
        if namespace == self.forbidden:
            raise ApiError(
                403,
                "Forbidden",
                'persistentvolumeclaims is forbidden: cannot list resource "persistentvolumeclaims" '
                f'in the namespace "{namespace}"',
            )
        items = [
            {"metadata": {"name": n, "namespace": namespace, "resourceVersion": "5"}, "status": {"phase": "Bound"}}
            for n in self.claims.get(str(namespace), [])
        ]
        return items, "5", ""


def test_a_namespace_whose_claims_may_not_be_listed_does_not_report_them_missing_nor_hide_the_others() -> None:
    """Namespaced mode (one LIST/WATCH per watched namespace, a Role each): a 403 in namespace ``a``
    makes its claims "could not be checked", never "not found", whatever namespace ``b`` answers; and
    ``b``'s claims are still answered from its LIST."""
    from kubetune.controller.cache import Informer
    from kubetune.controller.snapshot import _claim

    async def run() -> list[tuple[bool | None, str]]:
        fake = ScopedClaims("a", {"b": ["data"]})
        claims = Informer(
            fake, "v1", "persistentvolumeclaims", ("a", "b"), lambda *_: None, recheck_s=3600, tolerate_forbidden=True
        )  # type: ignore[arg-type]
        task = asyncio.create_task(claims.run())
        await eventually(lambda: fake.lists >= 2)
        try:
            return [
                (p.found, p.detail)
                for p in (_claim(claims, "a", "data"), _claim(claims, "b", "data"), _claim(claims, "b", "other"))
            ]
        finally:
            task.cancel()

    in_a, in_b, missing_in_b = asyncio.run(run())
    assert in_a[0] is None and "forbidden" in in_a[1], (
        f"a claim in a namespace the operator may not list was reported {in_a}"
    )
    assert in_b == (True, ""), f"a claim listed in namespace b was reported {in_b}"
    assert missing_in_b == (False, "not found")


class RecordedEvents(Events):
    """Events as the API server keeps them: posted ones by name, a count patch applied to its Event."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, dict[str, Any]] = {}

    async def create(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.events[obj["metadata"]["name"]] = dict(obj)
        return await super().create(api_version, plural, obj)

    async def request(
        self, verb: str, method: str, url: str, body: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        self.events[url.rsplit("/", 1)[-1]].update(body or {})
        return {}


def test_similar_events_are_combined_at_the_tenth_and_stay_combined_while_they_keep_coming() -> None:
    """client-go's EventAggregator (tools/record/events_cache.go @ v0.36.3): the 10th different message
    of one object, type and reason is already the combined Event (:268-270, ``localKeys.Len() <
    maxEvents`` posts as is, 10 does not); the 10-minute window runs from the LAST similar Event
    (:256-262, ``interval := now - record.lastTimestamp``; :265, ``lastTimestamp = now``), so an object
    that keeps failing with new messages every few minutes keeps counting one combined Event instead of
    posting ten new ones every 10 minutes."""
    api = RecordedEvents()
    recorder = EventRecorder(api, Metrics())  # type: ignore[arg-type]
    job = {"metadata": {"namespace": "ns", "name": "job", "uid": "uid-1"}}

    async def run() -> None:
        for i in range(10):
            await recorder.record(job, EventSpec("Warning", "Restarting", f"retry {i}"), now=1000.0 + i)
        for i in range(10, 16):  # one more every 5 minutes, for half an hour
            await recorder.record(job, EventSpec("Warning", "Restarting", f"retry {i}"), now=1000.0 + 300 * (i - 9))

    asyncio.run(run())
    combined = [e for e in api.events.values() if e["message"].startswith("(combined from similar events): ")]
    assert len(api.events) == 10, (
        f"{len(api.events)} Events posted: {sorted(e['message'] for e in api.events.values())}"
    )
    assert len(combined) == 1 and combined[0]["count"] == 7


class SlowScope(ScopedClaims):
    """As ScopedClaims, but namespace ``slow``'s LIST answers only once ``release`` is set."""

    def __init__(self, claims: dict[str, list[str]]) -> None:
        super().__init__("", claims)
        self.release = asyncio.Event()

    async def page(
        self, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str, str]:
        if namespace == "slow":
            await self.release.wait()
        return await super().page(namespace, limit, continue_token)


def test_claims_are_synced_only_once_every_watched_namespace_is_listed() -> None:
    """The workers start after every informer is synced (Controller waits on Caches.wait_synced); in
    namespaced mode the claims informer lists each namespace on its own, so it is synced only when all
    of them answered, and until then a namespace's claims are "could not be checked", not "not found"
    (client-go's SharedInformer HasSynced is one LIST of its whole scope, tools/cache/shared_informer.go)."""
    from kubetune.controller.cache import Informer
    from kubetune.controller.snapshot import _claim

    async def run() -> tuple[bool, bool | None, bool, bool | None]:
        fake = SlowScope({"fast": ["a"], "slow": ["data"]})
        claims = Informer(
            fake,
            "v1",
            "persistentvolumeclaims",
            ("fast", "slow"),
            lambda *_: None,
            recheck_s=3600,
            tolerate_forbidden=True,
        )  # type: ignore[arg-type]
        task = asyncio.create_task(claims.run())
        try:
            await eventually(lambda: claims.get("fast", "a") is not None)
            before = (claims.synced.is_set(), _claim(claims, "slow", "data").found)
            fake.release.set()
            await asyncio.wait_for(claims.synced.wait(), 5)
            await eventually(lambda: claims.get("slow", "data") is not None)
            return (*before, claims.synced.is_set(), _claim(claims, "slow", "data").found)
        finally:
            task.cancel()

    synced_before, slow_before, synced_after, slow_after = asyncio.run(run())
    assert not synced_before, "the claims informer said synced while one watched namespace was not listed yet"
    assert slow_before is None, f"a claim of a namespace not listed yet was reported found={slow_before}"
    assert synced_after and slow_after is True


class PagedClaims(ClaimsApi):
    """A cluster-wide LIST of PersistentVolumeClaims as the API server pages it: at most ``limit`` items
    and ``metadata.continue`` while more remain, every page at the first page's resourceVersion; a
    continue token that expired is 410 Gone (client-go tools/pager/pager.go:92-121 @ v0.36.3)."""

    def __init__(self, count: int, expire_once: bool = False) -> None:
        self.items = [
            {
                "metadata": {"name": f"c-{i:05d}", "namespace": f"ns-{i % 7}", "resourceVersion": "9"},
                "status": {"phase": "Bound"},
                "spec": {"big": "x" * 100},
            }
            for i in range(count)
        ]
        self.largest = 0
        self.expire_once = expire_once

    async def page(
        self, namespace: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str, str]:
        from kubetune.controller.kube import ApiError

        start = int(continue_token or 0)
        if continue_token and self.expire_once:
            self.expire_once = False
            raise ApiError(
                410, "Expired", "The provided continue parameter is too old to display a consistent list result."
            )
        end = len(self.items) if not limit else min(len(self.items), start + limit)
        self.largest = max(self.largest, end - start)
        return self.items[start:end], "9", (str(end) if end < len(self.items) else "")


def test_the_claims_are_listed_in_pages_so_a_large_cluster_does_not_exhaust_the_operators_memory() -> None:
    """A cluster-wide PVC informer in a cluster with 50,000 claims: one unpaginated LIST is ~85 MB of
    JSON, ~330 MB once parsed in Python, over the chart's 512Mi limit (values.yaml resources) before it
    is trimmed to ~50 MB: the operator was OOM-killed at start. client-go's reflector lists in pages of
    500 (tools/cache/reflector.go:693-719, pager.go:31 defaultPageSize @ v0.36.3); each page is trimmed
    before the next is asked for. A continue token that expired falls back to one full LIST (pager.go:110-121)."""
    from kubetune.controller.cache import Informer, trim_claim

    async def run(fake: PagedClaims) -> Informer:
        claims = Informer(
            fake, "v1", "persistentvolumeclaims", (), lambda *_: None, transform=trim_claim, tolerate_forbidden=True
        )  # type: ignore[arg-type]
        task = asyncio.create_task(claims.run())
        try:
            await asyncio.wait_for(claims.synced.wait(), 5)
        finally:
            task.cancel()
        return claims

    fake = PagedClaims(1234)
    claims = asyncio.run(run(fake))
    assert len(claims.objects) == 1234 and claims.get("ns-3", "c-00003") == {
        "metadata": {"name": "c-00003", "namespace": "ns-3", "resourceVersion": "9"},
        "status": {"phase": "Bound"},
    }
    assert fake.largest <= 500, f"one LIST response held {fake.largest} claims"
    expired = PagedClaims(1234, expire_once=True)
    assert len(asyncio.run(run(expired)).objects) == 1234
