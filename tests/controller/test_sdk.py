"""The Python SDK (kubetune.sdk, ``import kubetune``) as a notebook user drives it: every verb through a
kubeconfig against the emulated API server (tests/support/apiserver/emulator.py, strict server-side apply), with
the real operator reconciling (conftest ``operator``); Kubeflow's part is played by tests/support/kubeflow.py.
The SDK is synchronous, so each call runs in a thread while the test's loop serves the API."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.kt_time import scaled

from tests.support.harness import EVENTS, FTJ, PTJ, ROOT, eventually, example_job, training_started
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import oom_killed, progress_line, set_condition, stage_line, start_pod
from tests.support.cli import kubeconfig, run_cli

import kubetune
from kubetune.controller.reasons import REASONS

NS = "team-a"
T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def client_for(cluster: Cluster, tmp_path: Path) -> kubetune.Client:
    return await call(kubetune.Client, kubeconfig=str(kubeconfig(cluster, tmp_path / "kubeconfig")))


def lora_job(name: str = "qwen-lora", **spec: Any) -> kubetune.FineTuneJob:
    doc = example_job(name, NS, **spec)
    del doc["metadata"]["namespace"]  # the client's namespace (the kubeconfig context's: team-a)
    return kubetune.FineTuneJob.from_api(doc)


def phase(cluster: Cluster, name: str = "qwen-lora") -> str | None:
    return ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("phase")


# --- create / get / list / suspend / resume / delete ----------------------------------------------


async def test_create_applies_with_kubetunes_field_manager_and_get_list_return_typed_jobs(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    assert client.namespace == NS  # the kubeconfig context's namespace
    created = await call(client.create, ROOT / "examples/finetune-lora.yaml")
    assert isinstance(created, kubetune.FineTuneJob) and created.metadata.namespace == NS and created.metadata.uid
    stored = cluster.read(*FTJ, NS, "qwen-lora")
    assert stored is not None
    applies = [(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"] if "f:spec" in e["fieldsV1"]]
    assert applies == [("kubetune", "Apply")], "server-side apply, one field manager owning the spec"
    assert ("kubetune.io", "v1alpha1", "finetunejobs", "patch", True, None) in {
        (c.group, c.version, c.resource, c.verb, c.namespaced, c.subresource) for c in cluster.calls
    }

    await eventually(
        lambda: phase(cluster) == "Pending" and cluster.read(*PTJ, NS, "qwen-lora"), what="the operator's children"
    )
    job = await call(client.get, "qwen-lora")
    assert job.status is not None and job.status.phase == "Pending" and job.status.observed_generation == 1
    assert job.status.job is not None and job.status.job.kind == "PyTorchJob"

    # Applying the same job again is no conflict and changes no spec field; a second job lists after the first.
    again = await call(client.create, lora_job())
    assert again.spec == job.spec
    await call(client.create, lora_job("alpha"))
    assert [j.name for j in await call(client.list)] == ["alpha", "qwen-lora"]
    assert all(isinstance(j, kubetune.FineTuneJob) for j in await call(client.list, all_namespaces=True))


async def test_suspend_resume_and_delete_through_the_operator(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    # (after the operator recorded the running job, as in test_operator's suspend test)
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, "qwen-lora") or {}).get("status") or {}).get("configMap"),
        what="status.configMap",
    )
    suspended = await call(client.suspend, "qwen-lora")
    assert suspended.spec.suspend is True
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is True, what="child suspended"
    )
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Suspended")  # Kubeflow's part
    await eventually(lambda: phase(cluster) == "Suspended", what="phase Suspended")
    assert (await call(client.get, "qwen-lora")).status.phase == "Suspended"  # type: ignore[union-attr]
    # the apply's fields are still the applier's: suspending did not drop or steal them
    stored = cluster.read(*FTJ, NS, "qwen-lora")
    assert stored is not None and stored["spec"]["lora"]["rank"] == 8
    resumed = await call(client.resume, "qwen-lora")
    assert resumed.spec.suspend is False
    await eventually(
        lambda: cluster.read(*PTJ, NS, "qwen-lora")["spec"]["runPolicy"]["suspend"] is False, what="child resumed"
    )
    await call(client.create, lora_job())  # re-applying the job after a suspend/resume: no conflict

    await call(client.delete, "qwen-lora")
    assert cluster.read(*FTJ, NS, "qwen-lora") is None
    with pytest.raises(kubetune.JobNotFound, match='"qwen-lora" not found') as err:
        await call(client.get, "qwen-lora")
    assert err.value.status == 404
    with pytest.raises(kubetune.JobNotFound):
        await call(client.delete, "qwen-lora")


# --- watch / wait -----------------------------------------------------------------------------------


async def test_delete_then_create_again_never_adopts_the_old_run(
    cluster: Cluster, operator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """delete() is background propagation (the default for custom resources: apiserver
    registry/generic/registry/store.go:886-980 @ v0.36.3): the job is gone at once, its PyTorchJob only when
    the garbage collector gets to it.  A notebook that deletes and creates again at once (to change the
    learning rate, say) must not get the old run, still training with the old spec, as the new job's child:
    the operator waits for the collector, then creates a fresh PyTorchJob."""
    caplog.set_level(logging.INFO, logger="kubetune.controller.act")
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    await training_started(cluster, NS)
    old_ptj = (cluster.read(*PTJ, NS, "qwen-lora") or {})["metadata"]["uid"]
    await call(client.delete, "qwen-lora")  # the emulator's collector is off: the child stays for now
    new_uid = (await call(client.create, lora_job(training={"learningRate": 5e-5}))).metadata.uid

    def owners() -> list[str]:
        return [
            r["uid"]
            for r in ((cluster.read(*PTJ, NS, "qwen-lora") or {}).get("metadata") or {}).get("ownerReferences") or []
        ]

    waiting = "still belongs to a previous FineTuneJob"
    await eventually(lambda: new_uid in owners() or waiting in caplog.text, what="the operator reconciling the new job")
    assert new_uid not in owners(), "the new job adopted the old, still running PyTorchJob"
    async with cluster._cond():  # the garbage collector's turn
        cluster._collect_garbage()
    await eventually(lambda: owners() == [new_uid], what="a PyTorchJob for the new job")
    assert (cluster.read(*PTJ, NS, "qwen-lora") or {})["metadata"]["uid"] != old_ptj


async def test_changing_a_finished_job_is_refused_not_silently_ignored(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    """A finished job never runs again (controller/decide.py, rule 1).  The training fields are immutable
    (the CRD's CEL transition rules refuse them, 422), but the rest (spec.export, scheduling, image...) may
    change: such an apply on a finished job was stored and ignored, and wait() handed back the old result at
    once.  create() says so; the same job again (an idempotent re-run of the cell) is still fine."""
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    await training_started(cluster, NS)
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Failed", "OOMKilled", "out of memory")
    await eventually(lambda: phase(cluster) == "Failed", what="phase Failed")
    generation = (cluster.read(*FTJ, NS, "qwen-lora") or {})["metadata"]["generation"]
    with pytest.raises(kubetune.KubetuneError) as err:
        await call(client.create, lora_job(export={"enabled": False}))
    assert "already Failed" in err.value.message and "spec.export.enabled" in err.value.message
    assert "client.delete('qwen-lora')" in err.value.hint
    assert (cluster.read(*FTJ, NS, "qwen-lora") or {})["metadata"]["generation"] == generation, "nothing was applied"
    assert (await call(client.create, lora_job())).status.phase == "Failed"  # type: ignore[union-attr]


async def test_events_are_the_jobs_own_not_its_predecessors_of_the_same_name(cluster: Cluster, tmp_path: Path) -> None:
    """Events outlive their object.  After a delete and a new create under the same name, the old run's
    Warnings (OOMKilled, say) must not show as the new job's: events() and watch(events=True) select by
    the job's uid too, as kubectl describe does (client-go event_expansion.go; strategy.go ToSelectableFields)."""
    client = await client_for(cluster, tmp_path)
    old_uid = (await call(client.create, lora_job())).metadata.uid

    def event(uid: str | None, reason: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"qwen-lora.{reason.lower()}", "namespace": NS},
            "type": "Warning",
            "reason": reason,
            "message": reason,
            "involvedObject": {
                "apiVersion": "kubetune.io/v1alpha1",
                "kind": "FineTuneJob",
                "name": "qwen-lora",
                "namespace": NS,
                "uid": uid,
            },
        }

    await cluster.put_object(*EVENTS, event(old_uid, "OOMKilled"))
    await call(client.delete, "qwen-lora")
    new_uid = (await call(client.create, lora_job())).metadata.uid
    await cluster.put_object(*EVENTS, event(new_uid, "ImagePullBackOff"))
    assert [e.reason for e in await call(client.events, "qwen-lora")] == ["ImagePullBackOff"]

    def first_updates() -> list[Any]:
        updates = client.watch("qwen-lora", events=True, events_interval=60)
        return [next(updates), next(updates)]  # the status now, then the Events so far

    first = await call(first_updates)
    assert [u.event.reason if u.event else u.kind for u in first] == ["status", "ImagePullBackOff"]
    await call(client.delete, "qwen-lora")  # gone: every Event of the name
    assert sorted(e.reason for e in await call(client.events, "qwen-lora")) == ["ImagePullBackOff", "OOMKilled"]


async def test_watch_and_wait_follow_a_job_to_success(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    watched = asyncio.ensure_future(call(lambda: list(client.watch("qwen-lora", events=True, events_interval=0.2))))
    waited = asyncio.ensure_future(call(client.wait, "qwen-lora", 60))
    pod = await training_started(cluster, NS)
    await eventually(lambda: phase(cluster) == "Running", what="phase Running")
    cluster.append_log(NS, pod, progress_line(120, 1000, 1.4213))
    await eventually(
        lambda: (
            ((cluster.read(*FTJ, NS, "qwen-lora") or {}).get("status") or {}).get("progress", {}).get("step") == 120
        ),
        what="progress 120",
    )
    cluster.append_log(NS, pod, progress_line(1000, 1000, 0.9), stage_line("train", "end"))
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")

    final = await asyncio.wait_for(waited, 60)
    assert isinstance(final, kubetune.FineTuneJob) and final.status is not None and final.status.phase == "Succeeded"
    updates = await asyncio.wait_for(watched, 60)
    assert all(isinstance(u, kubetune.JobUpdate) for u in updates)
    phases = [u.phase for u in updates if u.kind == "status"]
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and "Running" in phases
    step = next(u for u in updates if u.step == 120)
    assert step.total_steps == 1000 and step.loss == pytest.approx(1.4213) and step.eta_seconds is not None
    assert updates[-1].finished and updates[-1].reason == "JobSucceeded"
    assert {"Created", "Running"} <= {u.event.reason for u in updates if u.kind == "event" and u.event is not None}


async def test_wait_raises_job_failed_with_the_reason_and_its_hint(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    waited = asyncio.ensure_future(call(client.wait, "qwen-lora", 60))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    await oom_killed(cluster, NS, "qwen-lora")
    with pytest.raises(kubetune.JobFailed) as err:
        await asyncio.wait_for(waited, 60)
    assert err.value.reason == "OOMKilled" and "OOMKilled" in err.value.message
    assert err.value.hint == REASONS["OOMKilled"].hint
    assert err.value.job is not None and err.value.job.status is not None and err.value.job.status.phase == "Failed"


async def test_wait_without_an_operator_raises_operator_not_running(cluster: Cluster, tmp_path: Path) -> None:
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    with pytest.raises(kubetune.OperatorNotRunning, match="not observed by the kubetune operator within 1 s") as err:
        await call(client.wait, "qwen-lora", 30, operator_grace=1)
    assert "kubetune-system" in err.value.hint and NS in err.value.hint


async def test_wait_times_out_and_reports_deletion(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    with pytest.raises(kubetune.WaitTimeout, match="did not finish within 1 s") as err:
        await call(client.wait, "qwen-lora", 1)
    assert isinstance(err.value, TimeoutError) and err.value.job is not None
    before = cluster.watching.get("finetunejobs", 0)  # the operator's
    waited = asyncio.ensure_future(call(client.wait, "qwen-lora", 60))
    await eventually(lambda: cluster.watching.get("finetunejobs", 0) > before, what="the SDK's watch")
    await cluster.remove(*FTJ, NS, "qwen-lora")
    with pytest.raises(kubetune.JobDeleted):
        await asyncio.wait_for(waited, 60)


async def test_async_client_creates_watches_and_waits_without_blocking_the_loop(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    """AsyncClient's calls run in worker threads: this very loop keeps serving the emulated API meanwhile."""
    await operator()
    client = await call(kubetune.AsyncClient, kubeconfig=str(kubeconfig(cluster, tmp_path / "kubeconfig")))
    created = await client.create(lora_job())
    assert created.metadata.namespace == NS and [j.name for j in await client.list()] == ["qwen-lora"]
    phases: list[str] = []

    async def follow() -> None:
        async for update in client.watch("qwen-lora"):
            phases.append(update.phase)

    watching = asyncio.ensure_future(follow())
    waiting = asyncio.ensure_future(client.wait("qwen-lora", 60))
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, progress_line(5, 10, 1.5))
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
    final = await asyncio.wait_for(waiting, 60)
    await asyncio.wait_for(watching, 60)
    assert final.status is not None and final.status.phase == "Succeeded"
    assert phases[0] == "Pending" and phases[-1] == "Succeeded"
    assert (await client.get("qwen-lora")).name == "qwen-lora"
    assert (await client.logs("qwen-lora")).endswith(progress_line(5, 10, 1.5) + "\n")
    await client.delete("qwen-lora")
    with pytest.raises(kubetune.JobNotFound):
        await client.get("qwen-lora")


async def test_an_async_watch_cancelled_by_a_timeout_raises_the_timeout_and_stops_watching(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``asyncio.timeout`` around ``async for ... in client.watch(...)`` is how pipelines bound a wait: the
    consumer gets TimeoutError (not "ValueError: generator already executing" from closing the watch
    while its worker still reads it), and the watch in the worker thread ends too (no watch left open)."""
    client = await call(kubetune.AsyncClient, kubeconfig=str(kubeconfig(cluster, tmp_path / "kubeconfig")))
    await client.create(lora_job())  # no operator: the job stays Pending, the watch blocks in its worker
    seen: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            async for update in client.watch("qwen-lora", events=True, events_interval=1.0, timeout=scaled(120)):
                seen.append(update.kind)
    assert seen and seen[0] == "status"
    # The worker stops at its next look (each watch window here is 1 s), not when the 120 s run out.
    await eventually(lambda: cluster.watching.get("finetunejobs", 0) == 0, timeout=10, what="the SDK's watch closed")


async def test_an_async_wait_cancelled_by_a_timeout_stops_waiting_in_its_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``asyncio.timeout`` around ``await client.wait(name)`` (no timeout of its own): the waiter gets its
    TimeoutError, and the wait does not go on in a worker thread -- watching for hours, and keeping
    asyncio.run from returning, which joins the default executor's threads."""
    client = await call(kubetune.AsyncClient, kubeconfig=str(kubeconfig(cluster, tmp_path / "kubeconfig")))
    await client.create(lora_job())  # no operator: the job stays Pending
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await client.wait("qwen-lora", operator_grace=None)
    await eventually(lambda: cluster.watching.get("finetunejobs", 0) == 0, timeout=15, what="the wait's watch closed")


async def test_a_job_the_model_refuses_still_reads_and_waits_to_its_invalid_spec_failure(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    """Stored under an older CRD (no schema): the operator fails it with InvalidSpec; get/list/watch/wait
    and `kubetune get` still show it, as they showed it before the SDK."""
    from tests.support.harness import uninstall_finetunejob_crd

    await operator()
    client = await client_for(cluster, tmp_path)
    uninstall_finetunejob_crd(cluster)
    await cluster.put_object(*FTJ, example_job("broken", NS, method="qlora"))  # qlora without spec.quantization
    with pytest.raises(kubetune.JobFailed) as err:
        await call(client.wait, "broken", 30)
    assert err.value.reason == "InvalidSpec" and "spec.quantization" in err.value.message
    assert err.value.hint == REASONS["InvalidSpec"].hint
    job = await call(client.get, "broken")
    assert (
        job.status is not None
        and job.status.phase == "Failed"
        and job.metadata.name == "broken"
        and job.spec.method == "qlora"
    )
    assert [j.name for j in await call(client.list)] == ["broken"]
    # a status field this kubetune does not know (a newer operator wrote it) is dropped, the rest stays typed
    await cluster.mutate(*FTJ, NS, "broken", lambda o: o["status"].update(futureField={"x": 1}))
    assert (await call(client.get, "broken")).status.phase == "Failed"  # type: ignore[union-attr]
    code, out, err_text = await run_cli(["get"], tmp_path / "kubeconfig")
    assert code == 0 and "broken" in out and "Failed" in out and "qlora" in out, err_text
    assert "Warning" not in err_text


# --- logs / metrics / plot --------------------------------------------------------------------------


async def test_logs_metrics_and_plot_from_rank_0s_pod(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    with pytest.raises(kubetune.NoPodYet, match="no master pod"):
        await call(client.logs, "qwen-lora")
    pod = await training_started(cluster, NS)
    # As the trainer writes it: the train stage's start line, then the steps (trainer/main.py, stages.py).
    cluster.append_log(
        NS,
        pod,
        "loading model",
        stage_line("train", "start"),
        *(progress_line(s, 10, 3.0 - s / 10) for s in range(1, 6)),
        "[rank0]: noise",
    )
    assert await call(client.logs, "qwen-lora", tail=1) == "[rank0]: noise\n"
    text = await call(client.logs, "qwen-lora")
    assert text.startswith("loading model\n") and text.count("\n") == 8

    rows = await call(client.metrics, "qwen-lora")
    assert [r["current_steps"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] == pytest.approx(2.5)
    assert rows[0]["total_steps"] == 10 and rows.source == f"pod {NS}/{pod} log" and rows.from_start
    assert rows.losses()[0] == (1, pytest.approx(2.9))
    fig = await call(client.plot, "qwen-lora")
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4, 5]

    def follow() -> list[str]:
        lines = []
        for line in client.logs("qwen-lora", follow=True):
            lines.append(line)
        return lines

    followed = asyncio.ensure_future(call(follow))
    await asyncio.sleep(0.3)
    cluster.append_log(NS, pod, "last words")
    await start_pod(cluster, "PyTorchJob", NS, "qwen-lora", phase="Succeeded")
    assert (await asyncio.wait_for(followed, 30))[-1] == "last words"


async def test_wait_draws_a_progress_bar_when_asked(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = example_job("done", NS)
    doc["status"] = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "progress": {"step": 40, "totalSteps": 40, "percent": 100.0, "loss": 1.0},
    }
    await cluster.put_object(*FTJ, doc)
    client = await client_for(cluster, tmp_path)
    final = await call(client.wait, "done", 10, progress_bar=True)
    assert final.status is not None and final.status.phase == "Succeeded"
    err = capsys.readouterr().err  # tqdm.auto outside a notebook: the text bar on stderr
    assert "done: 100%" in err and "40/40" in err and "Succeeded loss 1.0000" in err


async def test_expiring_credentials_are_reloaded_before_expiry_and_once_after_a_401(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transport's rule (kubetune.terminal.Client.open), seen through the SDK: exec-plugin tokens
    (tests/support/exec_plugin.py) that expire or are revoked during a long wait."""
    from tests.support.plugin_kubeconfig import expiring_tokens, issued_tokens

    from kubetune.controller import kube

    ttl = 600
    clock, path, issued = expiring_tokens(cluster, tmp_path, ttl)
    # The SDK loads its credentials with kube.load_connection (terminal.Client.from_kubeconfig): on the test's clock.
    monkeypatch.setattr(kube, "load_connection", functools.partial(kube.load_connection, clock=clock))
    await cluster.put_object(*FTJ, example_job("alpha", NS))
    client = await call(kubetune.Client, NS, str(path))
    assert (await call(client.get, "alpha")).name == "alpha"
    clock.advance(ttl + 1)  # expired: reloaded ahead of the call, nothing refused
    assert not cluster.authenticate(issued_tokens(issued)[0])
    assert (await call(client.get, "alpha")).name == "alpha"
    assert len(issued_tokens(issued)) == 2 and all(a.accepted for a in cluster.auth_log)
    issued.write_text("", encoding="utf-8")  # the issuer revokes every token: one 401, reload, retry
    assert [j.name for j in await call(client.list)] == ["alpha"]
    assert [a.accepted for a in cluster.auth_log][-2:] == [False, True]


async def test_logs_of_a_container_not_started_yet_say_so_and_metrics_fall_back_to_the_status(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    """Right after create, the pod exists but its container is still being created: the kubelet answers the
    log request 400 "container ... is waiting to start: ContainerCreating" (pkg/kubelet/kubelet_pods.go:1528-1587,
    passed on as BadRequest: apiserver registry/generic/rest/response_checker.go:58-59).  That is no pod log
    yet (NoPodYet, exit 1 in the CLI), not an invalid FineTuneJob; metrics() then reads the status."""
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    pod = await training_started(cluster, NS)
    waiting = f'container "trainer" in pod "{pod}" is waiting to start: ContainerCreating'
    cluster.log_errors[(NS, pod)] = (400, "BadRequest", waiting)
    with pytest.raises(kubetune.NoPodYet) as err:
        await call(client.logs, "qwen-lora")
    assert (
        not isinstance(err.value, kubetune.InvalidSpec)
        and waiting in err.value.message
        and "kubetune watch" in err.value.hint
    )
    rows = await call(client.metrics, "qwen-lora")
    assert list(rows) == [] and rows.source == f"FineTuneJob {NS}/qwen-lora status"
    code, _, stderr = await run_cli(["logs", "qwen-lora"], tmp_path / "kubeconfig")
    assert code == 1 and waiting in stderr and "validate" not in stderr


async def test_metrics_from_a_log_the_kubelet_rotated_say_steps_are_missing(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    """pods/log reads only the current log file ("It will not retrieve logs in rotated log file":
    k8s.io/cri-client/pkg/logs/logs.go:44-45), rotated at 10Mi by default (kubelet config defaults.go:258-259):
    a long job's log starts mid-training, without the train stage's start line.  The rows say so (and warn)
    instead of passing for the whole history, so a loss curve from step 500 is not taken for the run."""
    await operator()
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job())
    pod = await training_started(cluster, NS)
    cluster.append_log(NS, pod, *(progress_line(s, 1000, 1.0) for s in range(500, 506)))
    with pytest.warns(UserWarning, match="steps before 500 are not in it"):
        rows = await call(client.metrics, "qwen-lora")
    assert [r["current_steps"] for r in rows] == list(range(500, 506)) and not rows.from_start
    assert "trainer_log.jsonl" in rows.source


# --- errors: the same words as the CLI ----------------------------------------------------------------


async def test_no_cluster_raises_cluster_unreachable_with_the_clis_text(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: {NS}}}}}]
current-context: c
""")
    client = kubetune.Client(kubeconfig=str(config))
    with pytest.raises(kubetune.ClusterUnreachable) as err:
        await call(client.list)
    assert (
        f"cannot reach the API server http://127.0.0.1:{port}" in err.value.message
        and "kubectl config current-context" in err.value.hint
    )
    code, _, stderr = await run_cli(["get"], config)
    assert code == 2 and stderr == f"kubetune get: {err.value}\n"


async def test_crd_not_installed_is_told_apart_from_a_missing_job(cluster: Cluster, tmp_path: Path) -> None:
    client = await client_for(cluster, tmp_path)
    with pytest.raises(kubetune.JobNotFound):
        await call(client.get, "nope")
    del cluster.kinds[("kubetune.io", "v1alpha1", "finetunejobs")]  # the cluster no longer serves the kind
    del cluster.resources["kubetune.io/v1alpha1/finetunejobs"]
    for verb in (client.list, lambda: client.create(lora_job()), lambda: client.get("qwen-lora")):
        with pytest.raises(kubetune.CRDNotInstalled) as err:
            await call(verb)
        assert err.value.hint.startswith("install kubetune's CRD and operator: helm install kubetune charts/kubetune")
        assert "does not serve FineTuneJobs (finetunejobs.kubetune.io kubetune.io/v1alpha1)" in err.value.message
    code, _, stderr = await run_cli(["get", "qwen-lora"], tmp_path / "kubeconfig")
    assert code == 1 and stderr == f"kubetune get: {err.value}\n"


async def test_rbac_denial_raises_forbidden_naming_the_permission(cluster: Cluster, tmp_path: Path) -> None:
    client = await client_for(cluster, tmp_path)
    cluster.inject("list", "finetunejobs", 403, times=2)
    with pytest.raises(kubetune.Forbidden) as err:
        await call(client.list)
    assert err.value.status == 403 and "kubectl auth can-i list finetunejobs.kubetune.io -n team-a" in err.value.hint
    code, _, stderr = await run_cli(["get"], tmp_path / "kubeconfig")
    assert code == 2 and stderr == f"kubetune get: {err.value}\n"


async def test_a_forbidden_create_names_both_verbs_an_apply_needs(cluster: Cluster, tmp_path: Path) -> None:
    """A server-side apply is authorized as patch and, when the job does not exist yet, as create too
    (apiserver endpoints/handlers/patch.go:203-232, update.go:258-281 @ v0.36.3): a role with patch but
    not create is refused with 'cannot create resource', so 'can-i patch' alone would say yes."""
    client = await client_for(cluster, tmp_path)
    cluster.inject("patch", "finetunejobs", 403)
    with pytest.raises(kubetune.Forbidden) as err:
        await call(client.create, lora_job())
    assert "kubectl auth can-i create finetunejobs.kubetune.io -n team-a" in err.value.hint
    assert "kubectl auth can-i patch finetunejobs.kubetune.io -n team-a" in err.value.hint


async def test_a_bad_spec_is_refused_before_sending_and_a_422_is_typed_too(cluster: Cluster, tmp_path: Path) -> None:
    client = await client_for(cluster, tmp_path)
    bad = example_job("broken", NS, method="qlora")  # qlora without spec.quantization
    with pytest.raises(kubetune.InvalidSpec) as err:
        await call(client.create, bad)
    assert any(p.startswith("spec") and "quantization" in p for p in err.value.problems)
    assert cluster.read(*FTJ, NS, "broken") is None and not [c for c in cluster.calls if c.resource == "finetunejobs"]
    # What the API server refuses (its schema and CEL rules, 422 Invalid) is typed the same way.
    cluster.inject("patch", "finetunejobs", 422)
    with pytest.raises(kubetune.InvalidSpec) as err:
        await call(client.create, lora_job())
    assert err.value.status == 422 and "kubetune validate" in err.value.hint


async def test_an_apply_over_another_managers_field_conflicts_until_forced(cluster: Cluster, tmp_path: Path) -> None:
    client = await client_for(cluster, tmp_path)
    await cluster.put_object(*FTJ, example_job("qwen-lora", NS), manager="kubectl-client-side-apply")
    changed = lora_job(export={"enabled": False})  # a field that may change after creation
    with pytest.raises(kubetune.Conflict, match="409") as err:
        await call(client.create, changed)
    assert "force=True" in err.value.hint
    forced = await call(client.create, changed, force=True)
    assert forced.spec.export.enabled is False


async def test_applying_a_suspended_job_again_after_resume_says_resume_owns_suspend(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A job created with suspend: true, resumed (merge patch: manager "kubetune", operation Update), then
    created again from the same manifest: server-side apply counts (kubetune, Update) as another manager
    (managedfields.go BuildManagerIdentifier), so the API server answers 409 'conflict with "kubetune" using
    kubetune.io/v1alpha1: .spec.suspend'.  The hint says what happened, not "another field manager"."""
    client = await client_for(cluster, tmp_path)
    await call(client.create, lora_job(suspend=True))
    await call(client.resume, "qwen-lora")
    with pytest.raises(kubetune.Conflict) as err:
        await call(client.create, lora_job(suspend=True))
    assert 'conflict with "kubetune" using kubetune.io/v1alpha1: .spec.suspend' in err.value.message
    assert "suspend() or resume()" in err.value.hint and "another field manager" not in err.value.hint
    assert (cluster.read(*FTJ, NS, "qwen-lora") or {})["spec"]["suspend"] is False, "the resume stands"
    await call(client.create, lora_job(suspend=True), force=True)
    assert (cluster.read(*FTJ, NS, "qwen-lora") or {})["spec"]["suspend"] is True


# --- the package root, plan, build ------------------------------------------------------------------


def test_import_kubetune_stays_light_and_exposes_the_sdk() -> None:
    import subprocess

    code = (
        "import sys, kubetune; print(sorted(m for m in sys.modules if m.startswith(('kubetune.', 'kopf', "
        "'torch', 'aiohttp', 'pydantic'))))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    assert kubetune.Client.__module__ == "kubetune.sdk" and kubetune.FineTuneJob.__module__ == "kubetune.api.resource"


async def test_plan_returns_the_verdict_kubetune_plan_prints(tmp_path: Path) -> None:
    from kubetune.plan.report import verdict_json

    job = kubetune.FineTuneJob.from_file(ROOT / "examples/finetune-lora.yaml")
    verdict = kubetune.plan(job, gpu_memory="16Gi")
    assert isinstance(verdict, kubetune.Verdict) and verdict.status == "False" and verdict.suggestion is not None
    assert kubetune.plan(job, gpu="H100").fits
    code, out, _ = await run_cli(
        ["plan", str(ROOT / "examples/finetune-lora.yaml"), "--gpu-memory", "16", "-o", "json"], tmp_path / "none"
    )
    assert code == 1 and json.loads(out) == [{"name": "qwen-lora", **json.loads(json.dumps(verdict_json(verdict)))}]


def test_build_makes_a_valid_job_from_a_few_values() -> None:
    job = kubetune.FineTuneJob.build(
        name="qwen-lora",
        model="Qwen/Qwen2.5-1.5B-Instruct",
        template="qwen",
        dataset="hkust-nlp/deita-10k-v0",
        outputs="finetune-outputs",
        gpus=2,
        training={"epochs": 1},
    )
    assert job.spec.datasets[0].hub == "hkust-nlp/deita-10k-v0" and job.spec.datasets[0].name == "deita-10k-v0"
    assert job.spec.resources.gpus_per_node == 2 and job.spec.storage.outputs.claim_name == "finetune-outputs"
    from kubetune.render import validate_object

    assert validate_object(job.to_api())[1] == []
    with pytest.raises(ValueError, match="expected exactly one FineTuneJob, found 0"):
        kubetune.FineTuneJob.from_file(ROOT / "charts/kubetune/Chart.yaml")


def test_the_sdk_reference_in_docs_is_current() -> None:
    """docs/sdk.md's reference section is generated from the docstrings (bash .ci/regen writes it)."""
    from tests.support.update_sdk_docs import DOC, updated

    text = DOC.read_text(encoding="utf-8")
    assert updated(text) == text, (
        "docs/sdk.md is stale: run bash .ci/regen (or python -m tests.support.update_sdk_docs)"
    )


def test_a_job_shows_itself_in_a_notebook_with_escaped_values() -> None:
    doc = example_job("qwen-lora", NS)
    doc["status"] = {
        "phase": "Failed",
        "message": "exit 4: <script>alert(1)</script>",
        "progress": {"step": 30, "totalSteps": 40, "percent": 75.0, "loss": 1.25},
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "JobFailed",
                "message": "exit 4: <b>",
                "lastTransitionTime": "2026-12-07T06:00:00Z",
            }
        ],
    }
    html = kubetune.FineTuneJob.from_api(doc)._repr_html_()
    assert "FineTuneJob team-a/qwen-lora" in html and ">Failed</span>" in html and "30/40 (75%) · loss 1.2500" in html
    assert "width:75.0%" in html and "<td>JobFailed</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "exit 4: &lt;b&gt;" in html
    # Rounded down like the status summary, kubetune get and watch: 996 of 1000 steps is not 100 %.
    doc["status"] = {"phase": "Running", "progress": {"step": 996, "totalSteps": 1000, "percent": 99.6}}
    html = kubetune.FineTuneJob.from_api(doc)._repr_html_()
    assert "996/1000 (99%)" in html and "(100%)" not in html
