"""The operator-in-a-thread harness and the controller tests' fixtures: the emulated cluster on loopback
(``cluster``), the operator's ``config`` and the real ``operator`` in its own thread and loop.
tests/controller/conftest.py imports the fixtures; tests import the helpers (``eventually``,
``example_job``, ``training_started``, ...) from here.

kopf pitfalls handled here (see environment-facts.md): ``kopf.operator()``
runs in a separate thread with its own event loop (inside the test's loop it
cancels tasks created after it); readiness is "a watch is open", not kopf's
``ready_flag``; the operator gets explicit credentials, never ``$KUBECONFIG``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.support.apiserver.emulator import Cluster, Tokens
from tests.support.kt_time import scaled
from tests.support.kubeflow import set_condition, start_pod

from kubetune.api import load_documents
from kubetune.controller.kube import Connection
from kubetune.controller.main import serve
from kubetune.controller.runtime import OperatorConfig, Runtime

ROOT = Path(__file__).resolve().parents[2]
FTJ = ("kubetune.io/v1alpha1", "finetunejobs")
PTJ = ("kubeflow.org/v1", "pytorchjobs")
MPI = ("kubeflow.org/v2beta1", "mpijobs")
CM = ("v1", "configmaps")
PODS = ("v1", "pods")
EVENTS = ("v1", "events")


def declare_resources(cluster: Cluster) -> None:
    cluster.declare("kubetune.io/v1alpha1", "finetunejobs", "FineTuneJob")
    cluster.declare("kubetune.io/v1alpha1", "finetunesweeps", "FineTuneSweep")
    cluster.declare("kubeflow.org/v1", "pytorchjobs", "PyTorchJob")
    cluster.declare("kubeflow.org/v2beta1", "mpijobs", "MPIJob")
    cluster.declare("v1", "configmaps", "ConfigMap", has_status=False)
    cluster.declare("v1", "pods", "Pod")
    cluster.declare("v1", "events", "Event", has_status=False)
    cluster.declare("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
    cluster.declare("kueue.x-k8s.io/v1beta1", "localqueues", "LocalQueue")
    # spec.serve's engine vllm (every cluster serves these; KServe and KAITO kinds are declared by the
    # tests that install them)
    cluster.declare("apps/v1", "deployments", "Deployment")
    cluster.declare("v1", "services", "Service")
    cluster.declare("batch/v1", "jobs", "Job")  # engine kaito copies the adapter with a Job
    # Present in every real cluster; kopf's discovery waits for them even with scanning disabled.
    cluster.declare("v1", "namespaces", "Namespace", namespaced=False)
    cluster.declare(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
    )


def example_job(name: str = "qwen-lora", namespace: str = "team-a", **spec_changes: Any) -> dict[str, Any]:
    """The LoRA example from examples/, renamed; small spec changes by keyword."""
    doc = next(load_documents((ROOT / "examples/finetune-lora.yaml").read_text(encoding="utf-8")))
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"].update(spec_changes)
    return doc


class OperatorThread:
    """The real operator (``kubetune.controller.main.serve``) in a thread with its own loop."""

    def __init__(self, config: OperatorConfig) -> None:
        from kubetune.controller.intake import ProgressBoard

        self.config = config
        self.board = ProgressBoard()
        """Where this operator's pushed progress reports land (tests record into it)."""
        self.stop_flag = threading.Event()
        self.runtime: Runtime | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="kubetune-operator", daemon=True)

    def _main(self) -> None:
        try:
            self.runtime = asyncio.run(serve(self.config, stop_flag=self.stop_flag, board=self.board))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> OperatorThread:
        self.thread.start()
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        deadline = time.monotonic() + scaled(20)
        while self.thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not self.thread.is_alive(), "the operator did not stop"
        if self.error is not None:
            raise self.error


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy; convergence deadline, not a performance assertion
    (``timeout`` on an idle CI machine, scaled by KUBETUNE_TEST_TIME_FACTOR: tests/support/kt_time.py)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, TypeError, IndexError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


async def training_started(cluster: Cluster, namespace: str, name: str = "qwen-lora") -> str:
    """Play Kubeflow up to a running PyTorchJob: wait for the child, mark it Running, start its
    rank-0 pod. Returns the pod's name (where tests append the trainer's log lines)."""
    await eventually(lambda: cluster.read(*PTJ, namespace, name), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", namespace, name, "Running")
    return await start_pod(cluster, "PyTorchJob", namespace, name)


@functools.cache
def _finetunejob_crd() -> dict[str, Any]:
    from kubetune.api.crd import crd

    doc = crd()
    doc["metadata"].update(uid="crd-uid", resourceVersion="1", generation=1)
    return doc


def install_finetunejob_crd(cluster: Cluster) -> None:
    """The generated CRD, as `helm install` leaves it (its creation checks: test_emulator_crd.py): the
    emulator then prunes, defaults and validates every FineTuneJob write like the API server."""
    doc = copy.deepcopy(_finetunejob_crd())
    cluster.store[(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, doc["metadata"]["name"])] = doc


def uninstall_finetunejob_crd(cluster: Cluster) -> None:
    """From now on FineTuneJobs are stored as sent, like under an older or schemaless CRD: how a test
    reaches the operator's own validation with a job today's CRD refuses."""
    cluster.store.pop(
        (("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "finetunejobs.kubetune.io"), None
    )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    handler = Cluster()
    # Like a real server, only known tokens get in: the fixture's config and test_process's kubeconfig.
    handler.authenticate = Tokens(static=("test-token", "secret-token"))
    declare_resources(handler)
    install_finetunejob_crd(handler)
    async with handler, kmock.Server(handler):
        yield handler


@pytest.fixture
def config(cluster: Cluster) -> OperatorConfig:
    return OperatorConfig(
        connection=Connection(server=str(cluster.url).rstrip("/"), token="test-token"),
        metrics_port=None,
        health_port=None,
        sync_interval_s=0.2,
        retry_delay_s=0.2,
        peering_check_s=0.2,
        prereq_recheck_s=0.2,
        peering=None,
    )


@pytest.fixture
async def operator(cluster: Cluster, config: OperatorConfig) -> AsyncIterator[Callable[..., Any]]:
    """Start operators on demand (``await operator()``); every one still running is stopped at teardown."""
    started: list[OperatorThread] = []

    async def start(cfg: OperatorConfig | None = None) -> OperatorThread:
        op = OperatorThread(cfg or config).start()
        started.append(op)
        await eventually(
            lambda: all(cluster.watching.get(r) for r in ("finetunejobs", "pods")) or op.error,
            what="the operator's watches",
        )
        if op.error:
            raise op.error
        return op

    yield start
    # Stop every one, even when stopping another failed: an operator left running keeps its watches
    # open, and the emulator's server would then wait for them at its own teardown (a hang, not a failure).
    errors: list[BaseException] = []
    for op in started:
        if op.thread.is_alive():
            try:
                await op.stop()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others stopped
                errors.append(exc)
    if errors:
        raise errors[0]
