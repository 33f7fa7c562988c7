"""The sweep controller's worker: how a reconcile runs (no cluster)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tests.support.sweeplib import sweep

from kubetune.controller.cache import Caches
from kubetune.controller.sweeps import loop as sweep_loop
from kubetune.controller.sweeps.decide import SweepDecision
from kubetune.controller.sweeps.snapshot import SweepSnapshot


async def test_the_study_is_rebuilt_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """decide_sweep rebuilds the Optuna study (seconds with hyperband at 200 trials) at every new
    evaluation of a running trial: meanwhile the loop must go on serving watches, the FineTuneJob
    controller and the progress endpoint.  Here decide waits for a task of the loop: on the loop
    itself it would wait in vain."""
    loop_ran = threading.Event()
    seen: list[bool] = []

    def decide(snap: SweepSnapshot, now: float) -> SweepDecision:
        seen.append(loop_ran.wait(timeout=2.0))
        return SweepDecision(dict(snap.status))

    async def act(snap: SweepSnapshot, decision: SweepDecision) -> tuple[Any, Any]:
        return None, None

    monkeypatch.setattr(sweep_loop, "decide_sweep", decide)
    kube: Any = object()  # no request is made: observe reads the caches, act is replaced
    caches = Caches(kube, ("team-a",), lambda ns, name: None)
    controller = sweep_loop.SweepController(kube, caches)
    monkeypatch.setattr(controller.executor, "act", act)
    obj = sweep()
    obj["metadata"].update(namespace="team-a", uid="u", generation=1, resourceVersion="1")
    controller.sweeps[("team-a", "lr")] = obj

    async def meanwhile() -> None:
        loop_ran.set()

    task = asyncio.create_task(meanwhile())
    await controller.reconcile(("team-a", "lr"))
    await task
    assert seen == [True], "the event loop was held while the study was rebuilt"
