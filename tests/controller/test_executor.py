"""The executor, once, against the emulated API server: children, then one status patch with a
resourceVersion precondition, then Events (an identical one counted, not posted again)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tests.support.harness import CM, EVENTS, FTJ, PTJ, example_job
from tests.support.apiserver.emulator import Cluster

from kubetune.controller.act import EventRecorder, Executor
from kubetune.controller.cache import Caches
from kubetune.controller.decide import EventSpec, decide
from kubetune.controller.kube import Connection, Kube
from kubetune.controller.metrics import Metrics
from kubetune.controller.snapshot import Memory, ObserveSettings, Snapshot, observe
from kubetune.render import RenderOptions

NS = "team-a"


async def first_pass(cluster: Cluster, kube: Kube) -> tuple[Caches, Memory, Executor, Snapshot]:
    """The example job stored, in the caches as kopf's watch puts it, and observed once."""
    caches = Caches(kube, (), lambda ns, name: None)
    memory = Memory()
    executor = Executor(kube, caches, memory, EventRecorder(kube, Metrics()))
    ftj = await cluster.put_object(*FTJ, example_job())
    caches.store_job(ftj)
    snap = await observe((NS, "qwen-lora"), ftj, caches, memory, kube, ObserveSettings(RenderOptions()), None)
    return caches, memory, executor, snap


async def test_executor_applies_a_decision_and_never_overwrites_a_newer_object(cluster: Cluster) -> None:
    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="test-token"))
    try:
        caches, memory, executor, snap = await first_pass(cluster, kube)
        decision = decide(snap, time.time())
        requeue = await executor.act(snap, decision)

        assert (
            cluster.read(*CM, NS, "qwen-lora-kubetune") is not None and cluster.read(*PTJ, NS, "qwen-lora") is not None
        )
        stored: dict[str, Any] = cluster.read(*FTJ, NS, "qwen-lora") or {}
        assert stored["status"]["phase"] == "Pending" and stored["status"]["job"]["kind"] == "PyTorchJob"
        assert caches.jobs[(NS, "qwen-lora")]["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"], (
            "write-through"
        )
        assert caches.children["pytorchjobs"].get(NS, "qwen-lora") is not None, (
            "the applied child is in the cache at once"
        )
        assert [e["reason"] for e in cluster.objects(*EVENTS, NS)] == ["Created"]
        # applied without conflict: the executor hands back the decision's requeue, none here: the
        # claims come from their informer (not listed in this test: "could not be checked"), whose
        # events wake the job (Caches._claim_event), not from a GET repeated on a timer
        assert requeue == decision.requeue_after
        assert requeue is None
        status_patches = [c for c in cluster.calls if c.resource == "finetunejobs" and c.subresource == "status"]
        assert len(status_patches) == 1

        # Someone else writes the FineTuneJob: a decision made from the older copy is refused (409)
        # and the key is reconciled again instead of overwriting the newer object.
        await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["metadata"].setdefault("labels", {}).update(team="a"))
        stale = dataclasses.replace(
            snap, status=stored["status"], resource_version=stored["metadata"]["resourceVersion"]
        )
        changed = dataclasses.replace(
            decision, status={**decision.status, "message": "from a stale snapshot"}, children=(), events=()
        )
        assert await executor.act(stale, changed) == executor.conflict_retry_s
        assert (cluster.read(*FTJ, NS, "qwen-lora") or {})["status"]["message"] != "from a stale snapshot"

        # Nothing to change: no request at all.
        calls = len(cluster.calls)
        fresh = cluster.read(*FTJ, NS, "qwen-lora") or {}
        same = dataclasses.replace(
            snap, status=fresh["status"], resource_version=fresh["metadata"]["resourceVersion"], obj=fresh
        )
        await executor.act(same, dataclasses.replace(decision, status=fresh["status"], children=(), events=()))
        assert len(cluster.calls) == calls

        # An identical Event again is counted on the first one (client-go's EventLogger).
        spec = EventSpec("Warning", "Unschedulable", "pod x cannot be scheduled")
        await executor.recorder.record(fresh, spec)
        await executor.recorder.record(fresh, spec)
        unschedulable = [e for e in cluster.objects(*EVENTS, NS) if e["reason"] == "Unschedulable"]
        assert len(unschedulable) == 1 and unschedulable[0]["count"] == 2
        # From the 10th different message of one reason within 10 minutes on, they are combined
        # (EventAggregator, client-go tools/record/events_cache.go:268-270 @ v0.36.3): 9 + 1 combined, counted 3 times.
        for i in range(12):
            await executor.recorder.record(fresh, EventSpec("Warning", "Restarting", f"retry {i}"))
        restarting = [e for e in cluster.objects(*EVENTS, NS) if e["reason"] == "Restarting"]
        combined = [e for e in restarting if e["message"].startswith("(combined from similar events): ")]
        assert len(restarting) == 10 and len(combined) == 1 and combined[0]["count"] == 3
    finally:
        await kube.close()


async def test_a_validating_admission_policy_denial_is_reported_not_retried_as_rbac(cluster: Cluster) -> None:
    """A ValidatingAdmissionPolicy refuses the child with 403 Forbidden and the API server's wording
    ``ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <msg>`` (k8s.io/apiserver
    pkg/admission/plugin/policy/validating/dispatcher.go, admission.NewForbidden; read through the code
    search index, release not pinned): it is a refusal to report on the FineTuneJob (UpdateRejected,
    backoff), not RBAC's "User ... cannot ..." that goes back to the work queue unreported forever."""
    from tests.support.apiserver.emulator import ApiError as Refusal

    from kubetune.controller.kube import ApiError

    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="test-token"))
    try:
        caches, memory, executor, snap = await first_pass(cluster, kube)
        decision = decide(snap, time.time())

        def policy(new: dict[str, Any], old: dict[str, Any] | None) -> None:
            raise Refusal(
                403,
                "Forbidden",
                f'pytorchjobs.kubeflow.org "{new["metadata"]["name"]}" is forbidden: ValidatingAdmissionPolicy '
                "'no-gpus' with binding 'no-gpus-team-a' denied request: team-a may not use GPUs",
            )

        cluster.admission[("kubeflow.org", "v1", "pytorchjobs")] = [policy]
        assert await executor.act(snap, decision) == executor.report_after_s
        failure = memory.apply_failures[(NS, "qwen-lora")]
        assert failure.status == 403 and "team-a may not use GPUs" in failure.message

        def rbac(new: dict[str, Any], old: dict[str, Any] | None) -> None:
            raise Refusal(
                403,
                "Forbidden",
                f'pytorchjobs.kubeflow.org "{new["metadata"]["name"]}" is forbidden: User '
                '"system:serviceaccount:kubetune:kubetune" cannot patch resource '
                '"pytorchjobs" in API group "kubeflow.org"',
            )

        memory.apply_failures.clear()
        cluster.admission[("kubeflow.org", "v1", "pytorchjobs")] = [rbac]
        try:
            await executor.act(snap, decision)
        except ApiError as exc:
            assert exc.status == 403
        else:
            raise AssertionError("an RBAC 403 goes back to the work queue")
        assert not memory.apply_failures
    finally:
        await kube.close()


async def test_a_child_is_deleted_only_once_the_status_saying_why_is_stored(cluster: Cluster) -> None:
    """Past the retry bound a queued child is deleted (decide.py) and its pods with it: the status
    that says BackoffLimitExceeded must be stored first.  Deleted before a status patch that lost a
    race (409), the job would be decided again with the pods, and the failures they showed, gone:
    "JobDeleted" instead of the truth."""
    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="test-token"))
    try:
        caches, memory, executor, snap = await first_pass(cluster, kube)
        decision = decide(snap, time.time())
        await executor.act(snap, decision)
        stored: dict[str, Any] = cluster.read(*FTJ, NS, "qwen-lora") or {}
        stale = dataclasses.replace(
            snap, status=stored["status"], resource_version=stored["metadata"]["resourceVersion"], obj=stored
        )
        await cluster.mutate(*FTJ, NS, "qwen-lora", lambda o: o["metadata"].setdefault("labels", {}).update(team="a"))
        delete = dataclasses.replace(
            decision,
            children=(),
            events=(),
            status={**stored["status"], "phase": "Failed"},
            deletions=(
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "PyTorchJob",
                    "metadata": {"name": "qwen-lora", "namespace": NS},
                },
            ),
        )
        assert await executor.act(stale, delete) == executor.conflict_retry_s
        assert cluster.read(*PTJ, NS, "qwen-lora") is not None, "not deleted while the status saying why was refused"

        fresh = cluster.read(*FTJ, NS, "qwen-lora") or {}
        await executor.act(
            dataclasses.replace(
                stale, status=fresh["status"], resource_version=fresh["metadata"]["resourceVersion"], obj=fresh
            ),
            delete,
        )
        assert (cluster.read(*FTJ, NS, "qwen-lora") or {})["status"]["phase"] == "Failed"
        assert cluster.read(*PTJ, NS, "qwen-lora") is None
    finally:
        await kube.close()


async def test_a_job_the_api_server_no_longer_has_leaves_the_cache(cluster: Cluster) -> None:
    """kopf relists after a watch's 410 Gone without a DELETED for the objects deleted meanwhile
    (kopf/_cogs/clients/watching.py:157-210 @ 1.45.2: type-None events of the LIST, then the watch), so a
    FineTuneJob deleted during such a gap stayed in the controller's cache and its fromJob/claims
    index, and every event naming it (its source job, its claims) reconciled it again. The status
    patch's 404 is the API server saying it is gone: it leaves the cache."""
    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="test-token"))
    try:
        caches, memory, executor, snap = await first_pass(cluster, kube)
        decision = dataclasses.replace(decide(snap, time.time()), children=(), events=())
        await cluster.remove(*FTJ, NS, "qwen-lora")  # deleted while kopf's watch was away
        assert await executor.act(snap, decision) is None
        assert (NS, "qwen-lora") not in caches.jobs
        assert caches._claimants == {} and caches._sources == {}
    finally:
        await kube.close()
