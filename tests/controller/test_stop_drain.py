"""A stop (SIGTERM in the pod; kopf's cleanup activity, controller/main.py) lets the reconcile under
way finish its writes before the controller's tasks are cancelled, and starts no new one. kopf 1.45.2
gave them up to 5 s (kopf/_core/reactor/running.py:411-413) before main.py's cleanup handler cancelled
them at once, cutting a reconcile between its children and its status patch."""

from __future__ import annotations

import asyncio

from kubetune.controller.kube import Kube
from kubetune.controller.loop import Controller
from kubetune.controller.metrics import Metrics
from kubetune.controller.runtime import OperatorConfig, Runtime


async def test_a_stop_lets_the_reconcile_under_way_finish_and_starts_no_other(config: OperatorConfig) -> None:
    rt = Runtime(config, Kube(config.connection), Metrics())
    try:
        controller = Controller(rt, peering=None)
        under_way, release = asyncio.Event(), asyncio.Event()
        reconciled: list[tuple[str, str]] = []

        async def reconcile(key: tuple[str, str]) -> None:  # stands for observe -> decide -> act
            under_way.set()
            await release.wait()
            reconciled.append(key)

        controller.reconcile = reconcile  # type: ignore[method-assign]
        controller.queue.add(("team-a", "first"))
        worker = asyncio.create_task(controller._worker())
        await under_way.wait()
        controller.queue.add(("team-a", "second"))  # queued, not started
        drain = asyncio.create_task(controller.drain(grace=60))
        await asyncio.sleep(0)
        assert not drain.done(), "the stop waits for the reconcile under way"
        release.set()
        await drain
        assert reconciled == [("team-a", "first")]
        assert worker.done() and not worker.cancelled(), "the worker ended by itself, taking no other key"
    finally:
        await rt.kube.close()
