"""FineTuneSweeps run by the real operator against the emulated cluster (issue 26).

Trials are played through their Kubeflow children and the trainer's log lines (``sweeplib``): the
operator's FineTuneJob controller turns those into each trial's status, and its sweep controller
reads them from there, as in a cluster."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support.harness import FTJ, PTJ, eventually
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import pod_name, set_condition
from tests.support.sweeplib import (
    FTS,
    install_sweep_crd,
    NS,
    sweep,
    sweep_condition,
    sweep_status,
    trial,
    trial_fails,
    trial_jobs,
    trial_reports,
    trial_runs,
    trial_succeeds,
    trials,
    uninstall_sweep_crd,
)

from kubetune.api.contract import KUEUE_QUEUE_LABEL, STAGE_PREFIX
from kubetune.api.sweep import LABEL_SWEEP
from kubetune.controller.sweeps import decide as sweep_decide


def sweep_events(cluster: Cluster, name: str = "lr") -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events on FineTuneSweep ``name``, oldest first (``kubectl describe fts``)."""
    return [
        (e["type"], e["reason"], e["message"])
        for e in sorted(cluster.objects("v1", "events", NS), key=lambda e: int(e["metadata"]["resourceVersion"]))
        if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "FineTuneSweep"
    ]


async def started(cluster: Cluster, operator: Any) -> Any:
    install_sweep_crd(cluster)
    op = await operator()
    await eventually(lambda: cluster.watching.get("finetunesweeps"), what="the operator's sweep watch")
    return op


async def test_trials_are_created_up_to_parallelism_then_more_as_trials_finish(cluster: Cluster, operator: Any) -> None:
    await started(cluster, operator)
    await cluster.put_object(
        *FTS, sweep(maxTrials=3, parallelism=2, template_changes={"scheduling": {"queueName": "gpu-queue"}})
    )
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="two trials (parallelism 2)")
    uid = cluster.read(*FTS, NS, "lr")["metadata"]["uid"]
    for record in trials(cluster):
        job = cluster.read(*FTJ, NS, record["name"])
        assert job["metadata"]["labels"][LABEL_SWEEP] == "lr"
        assert [(r["kind"], r["uid"], r.get("controller")) for r in job["metadata"]["ownerReferences"]] == [
            ("FineTuneSweep", uid, True)
        ]
        assert job["spec"]["training"]["learningRate"] == record["parameters"]["training.learningRate"]
        assert "serve" not in job["spec"]
    # Each trial is queued through Kueue like any job: the template's queue reaches the Kubeflow child.
    await eventually(lambda: cluster.read(*PTJ, NS, "lr-0"), what="lr-0's PyTorchJob")
    assert cluster.read(*PTJ, NS, "lr-0")["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert len({t["parameters"]["training.learningRate"] for t in trials(cluster)}) == 2
    await eventually(lambda: sweep_condition(cluster, "Running").get("reason") == "TrialsQueued", what="TrialsQueued")

    await trial_runs(cluster, "lr-0")
    await eventually(
        lambda: sweep_condition(cluster, "Running").get("reason") == "ParallelismReached", what="ParallelismReached"
    )
    assert trial_jobs(cluster) == ["lr-0", "lr-1"] and sweep_status(cluster)["phase"] == "Running"
    await trial_succeeds(cluster, "lr-0", 1.5)
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1", "lr-2"], what="a third trial once one finished")
    assert trial(cluster, "lr-0")["state"] == "Succeeded" and trial(cluster, "lr-0")["value"] == 1.5
    await trial_runs(cluster, "lr-1")
    # maxTrials are all asked: the sweep only waits for them
    await eventually(lambda: sweep_condition(cluster, "Running").get("reason") == "TrialsRunning", what="TrialsRunning")
    await trial_succeeds(cluster, "lr-1", 0.8)
    await trial_runs(cluster, "lr-2")
    await trial_succeeds(cluster, "lr-2", 1.1)
    await eventually(lambda: sweep_status(cluster).get("phase") == "Succeeded", what="the sweep Succeeded")
    status = sweep_status(cluster)
    assert (status["bestTrial"], status["bestValue"]) == ("lr-1", 0.8)
    assert sweep_condition(cluster, "Succeeded")["reason"] == "SweepSucceeded"
    assert status["summary"] == "3/3 (0 pruned, 0 failed)"
    assert trial_jobs(cluster) == ["lr-0", "lr-1", "lr-2"]  # never more than maxTrials
    assert not cluster.read("apps/v1", "deployments", NS, "lr-1-serve")  # promote: none


async def test_a_restart_between_recording_a_trial_and_creating_it_neither_asks_again_nor_duplicates(
    cluster: Cluster, operator: Any
) -> None:
    # The trial's FineTuneJob cannot be written (the API server answers 500): the trial is recorded
    # in the sweep's status first, then the operator stops before its FineTuneJob exists.
    fault = cluster.inject("patch", "finetunejobs", 500, times=10_000, name="lr-0")
    op = await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=3, parallelism=1))
    await eventually(lambda: [t["name"] for t in trials(cluster)] == ["lr-0"], what="lr-0 recorded")
    recorded = trial(cluster, "lr-0")
    assert trial_jobs(cluster) == []
    # The sweep says lr-0 was asked even while its FineTuneJob cannot be written (the Event is not lost
    # with the failed write: the stored status will never announce it again).
    await eventually(
        lambda: [r for _, r, _ in sweep_events(cluster)] == ["TrialCreated"], what="lr-0's TrialCreated Event"
    )
    await op.stop()
    fault.times = 0

    op = await started(cluster, operator)
    await eventually(lambda: trial_jobs(cluster) == ["lr-0"], what="lr-0 created after the restart")
    job = cluster.read(*FTJ, NS, "lr-0")
    assert job["spec"]["training"]["learningRate"] == recorded["parameters"]["training.learningRate"]
    assert trials(cluster) == [recorded]  # not asked again: the same one trial, same parameters
    uid = job["metadata"]["uid"]

    # Another restart while the trial runs: it is followed, not created again, and nothing new is asked.
    await trial_runs(cluster, "lr-0")
    await eventually(lambda: trial(cluster, "lr-0")["state"] == "Running", what="lr-0 Running in the study")
    before = trials(cluster)
    await op.stop()
    await started(cluster, operator)
    await trial_succeeds(cluster, "lr-0", 1.0)
    await eventually(
        lambda: [t["name"] for t in trials(cluster)] == ["lr-0", "lr-1"], what="lr-1 asked after lr-0 ended"
    )
    assert trials(cluster)[0]["parameters"] == before[0]["parameters"]
    assert cluster.read(*FTJ, NS, "lr-0")["metadata"]["uid"] == uid
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="lr-1 created, lr-0 still the same one")
    created = [m.split(" asked")[0] for _, r, m in sweep_events(cluster) if r == "TrialCreated"]
    assert created == ["trial lr-0", "trial lr-1"], created  # once each, across both restarts


async def test_a_failed_trial_is_counted_and_the_study_goes_on_until_max_failed_trials(
    cluster: Cluster, operator: Any
) -> None:
    await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=4, parallelism=1, maxFailedTrials=1))
    await eventually(lambda: trial_jobs(cluster) == ["lr-0"], what="lr-0")
    await trial_runs(cluster, "lr-0")
    await trial_fails(cluster, "lr-0")
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="lr-1 asked after lr-0 failed")
    failed = trial(cluster, "lr-0")
    assert (
        failed["state"] == "Failed"
        and "lr-0 failed" in failed["message"]
        and "Master replica(s) failed" in failed["message"]
    )
    assert sweep_status(cluster)["phase"] != "Failed"
    assert sweep_status(cluster)["summary"] == "1/4 (0 pruned, 1 failed)"

    await trial_runs(cluster, "lr-1")
    await trial_fails(cluster, "lr-1")
    await eventually(
        lambda: sweep_status(cluster).get("phase") == "Failed", what="the sweep Failed past maxFailedTrials"
    )
    failure = sweep_condition(cluster, "Failed")
    assert (
        failure["reason"] == "MaxFailedTrialsReached"
        and "2 trials failed, more than spec.maxFailedTrials=1" in failure["message"]
    )
    assert [t["state"] for t in trials(cluster)] == ["Failed", "Failed"]
    assert trial_jobs(cluster) == ["lr-0", "lr-1"]  # no third trial


async def test_a_trial_whose_eval_loss_is_clearly_worse_is_pruned_and_its_job_deleted(
    cluster: Cluster, operator: Any
) -> None:
    cluster.garbage_collect = True  # the delete is Background: Kubernetes' collector removes the Kubeflow job
    await started(cluster, operator)
    # maxTrials 3: the median pruner judges from the first completed trial on (kubetune.sweep.engine.pruner_startup).
    await cluster.put_object(*FTS, sweep(maxTrials=3, parallelism=1, earlyStopping="median"))
    await eventually(lambda: trial_jobs(cluster) == ["lr-0"], what="lr-0")
    await trial_runs(cluster, "lr-0")
    await trial_reports(cluster, "lr-0", 10, 1.2)
    await eventually(
        lambda: trial(cluster, "lr-0")["intermediate"] == [{"step": 10, "value": 1.2}], what="lr-0's intermediate value"
    )
    await trial_succeeds(cluster, "lr-0", 1.0)
    await eventually(lambda: "lr-1" in trial_jobs(cluster), what="lr-1")
    await trial_runs(cluster, "lr-1")
    await trial_reports(cluster, "lr-1", 10, 4.0)
    await eventually(lambda: trial(cluster, "lr-1")["state"] == "Pruned", what="lr-1 Pruned")
    pruned = trial(cluster, "lr-1")
    assert pruned["value"] == 4.0 and "pruned at step 10" in pruned["message"]
    await eventually(lambda: cluster.read(*FTJ, NS, "lr-1") is None, what="lr-1's FineTuneJob deleted")
    await eventually(lambda: cluster.read(*PTJ, NS, "lr-1") is None, what="lr-1's PyTorchJob gone with it")
    await eventually(lambda: "lr-2" in trial_jobs(cluster), what="lr-2 asked in its place")
    assert trial(cluster, "lr-0")["state"] == "Succeeded"  # the better trial was never pruned
    # `kubectl describe fts lr` tells the story, each step once, on the sweep itself.
    await eventually(
        lambda: [r for _, r, _ in sweep_events(cluster)].count("TrialCreated") == 3, what="three TrialCreated Events"
    )
    story = sweep_events(cluster)
    reasons = [r for _, r, _ in story]
    assert reasons.index("TrialSucceeded") < reasons.index("TrialPruned"), story
    assert [(t, r) for t, r, _ in story if r in ("TrialSucceeded", "TrialPruned", "NewBestTrial")] == [
        ("Normal", "TrialSucceeded"),
        ("Normal", "NewBestTrial"),
        ("Normal", "TrialPruned"),
    ], story
    pruned_event = next(m for _, r, m in story if r == "TrialPruned")
    assert pruned_event.startswith("trial lr-1: pruned at step 10: eval loss 4"), pruned_event
    created = [m for _, r, m in story if r == "TrialCreated"]
    assert created[0].startswith("trial lr-0 asked: training.learningRate="), created


async def test_promotion_serves_the_best_trial_only(cluster: Cluster, operator: Any) -> None:
    await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=2, parallelism=2, promote="serve", template_changes={"serve": {}}))
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="two trials")
    assert all("serve" not in cluster.read(*FTJ, NS, n)["spec"] for n in ("lr-0", "lr-1"))
    for name, value in (("lr-0", 0.9), ("lr-1", 0.6)):
        await trial_runs(cluster, name)
        await trial_succeeds(cluster, name, value)
    await eventually(lambda: sweep_status(cluster).get("phase") == "Succeeded", what="the sweep Succeeded")
    assert sweep_status(cluster)["bestTrial"] == "lr-1"
    await eventually(
        lambda: (
            cluster.read("apps/v1", "deployments", NS, "lr-1-serve")
            and cluster.read("v1", "services", NS, "lr-1-serve")
        ),
        what="lr-1 served",
    )
    assert sweep_condition(cluster, "Promoted")["reason"] == "WinnerPromoted"
    assert "serve" in cluster.read(*FTJ, NS, "lr-1")["spec"] and "serve" not in cluster.read(*FTJ, NS, "lr-0")["spec"]
    assert cluster.read("apps/v1", "deployments", NS, "lr-0-serve") is None
    await eventually(
        lambda: cluster.read(*FTJ, NS, "lr-1")["status"]["serving"]["objects"], what="lr-1's status.serving"
    )
    # The sweep says whether the winner really serves: its Serving condition is lr-1's (Argo CD reads it).
    await eventually(
        lambda: sweep_condition(cluster, "Serving").get("reason") == "ServingStarting",
        what="the sweep's Serving=False ServingStarting",
    )
    await cluster.mutate(
        "apps/v1",
        "deployments",
        NS,
        "lr-1-serve",
        lambda o: o.update(status={"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}),
    )
    await eventually(
        lambda: sweep_condition(cluster, "Serving").get("reason") == "ServingReady",
        what="the sweep's Serving=True ServingReady",
    )
    assert sweep_condition(cluster, "Serving")["status"] == "True" and sweep_condition(cluster, "Serving")[
        "message"
    ].startswith("FineTuneJob lr-1: ")

    # The Events follow the stored status (controller/sweeps/act.py): wait for both.
    def announced() -> list[tuple[str, str]]:
        return [(t, m) for t, r, m in sweep_events(cluster) if r in ("SweepSucceeded", "WinnerPromoted")]

    await eventually(lambda: len(announced()) >= 2, what="the SweepSucceeded and WinnerPromoted Events")
    promoted = announced()
    assert [t for t, _ in promoted] == ["Normal", "Normal"] and "best trial lr-1" in promoted[0][1], promoted


async def test_a_sweep_with_an_invalid_template_gets_a_condition_naming_the_field_and_no_trials(
    cluster: Cluster, operator: Any
) -> None:
    await started(cluster, operator)
    uninstall_sweep_crd(cluster)  # stored as sent, as under an older CRD: the operator's own checks refuse it
    await cluster.put_object(*FTS, sweep(template_changes={"method": "qlora"}))
    await eventually(lambda: sweep_condition(cluster, "Validated").get("reason") == "InvalidSweep", what="InvalidSweep")
    message = sweep_condition(cluster, "Validated")["message"]
    assert "template" in message and "quantization" in message, message
    assert sweep_status(cluster)["phase"] == "Failed"
    assert not trials(cluster) and trial_jobs(cluster) == []
    # One Warning on the sweep, whatever the number of reconciles since (it is posted after the status is stored).
    await eventually(lambda: sweep_events(cluster), what="the InvalidSweep Event")
    assert [(t, r) for t, r, _ in sweep_events(cluster)] == [("Warning", "InvalidSweep")]


async def test_kubetune_get_sweeps_and_the_sdk_read_the_study(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    import kubetune
    from tests.support.cli import kubeconfig, run_cli

    await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=2, parallelism=2))
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="two trials")
    for name, value in (("lr-0", 0.9), ("lr-1", 0.6)):
        await trial_runs(cluster, name)
        await trial_succeeds(cluster, name, value)
    await eventually(lambda: sweep_status(cluster).get("phase") == "Succeeded", what="the sweep Succeeded")
    config = kubeconfig(cluster, tmp_path / "kubeconfig")

    client = await asyncio.to_thread(kubetune.Client, kubeconfig=str(config))
    found = await asyncio.to_thread(client.get_sweep, "lr")
    assert found.status is not None and found.status.best_trial == "lr-1" and found.status.best_value == 0.6
    assert [(t.name, t.state, t.value) for t in found.status.trials] == [
        ("lr-0", "Succeeded", 0.9),
        ("lr-1", "Succeeded", 0.6),
    ]
    assert [s.name for s in await asyncio.to_thread(client.list_sweeps)] == ["lr"]

    code, out, err = await run_cli(["get", "sweeps"], config)
    assert code == 0, err
    header, row = out.splitlines()
    assert (
        header.split()[:3] == ["NAME", "PHASE", "TRIALS"]
        and row.split()[:3] == ["lr", "Succeeded", "2/2"]
        and "lr-1" in row
    )
    code, out, err = await run_cli(["get", "sweeps", "lr"], config)
    assert code == 0, err
    trial_lines = out.split("\n\n")[1].splitlines()
    assert trial_lines[0].split()[:3] == ["#", "TRIAL", "STATE"]
    assert "lr-1 *" in trial_lines[2] and "training.learningRate=" in trial_lines[2]
    code, _, err = await run_cli(["get", "sweeps", "nope"], config)
    assert code == 1 and "not found" in err


async def test_an_evaluation_read_after_the_trial_succeeded_still_gives_its_value(
    cluster: Cluster, operator: Any
) -> None:
    """The log tail is read once per interval, and the evaluate stage ends just before the pod exits: the
    FineTuneJob can turn Succeeded before its evaluation was read. It is read afterwards (a finished job
    with spec.evaluation keeps reading its rank-0 log until it has it), and the sweep waits for it."""
    await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=1, parallelism=1))
    await trial_runs(cluster, "lr-0")
    await set_condition(cluster, "PyTorchJob", NS, "lr-0", "Succeeded")
    await eventually(
        lambda: sweep_condition(cluster, "Running").get("reason") == "WaitingForTrialEvaluation",
        what="WaitingForTrialEvaluation",
    )
    assert (
        trial(cluster, "lr-0")["state"] == "Running"
        and cluster.read(*FTJ, NS, "lr-0")["status"]["phase"] == "Succeeded"
    )
    evaluation = {"state": "Succeeded", "trained": {"evalLoss": 0.7}, "summary": "loss 0.7"}
    cluster.append_log(
        NS,
        pod_name("PyTorchJob", "lr-0"),
        STAGE_PREFIX + json.dumps({"stage": "evaluate", "event": "end", "evaluation": evaluation}),
    )
    await eventually(lambda: sweep_status(cluster).get("phase") == "Succeeded", what="the sweep Succeeded")
    assert (trial(cluster, "lr-0")["state"], trial(cluster, "lr-0")["value"]) == ("Succeeded", 0.7)
    assert cluster.read(*FTJ, NS, "lr-0")["status"]["evaluation"]["trained"] == {"evalLoss": 0.7}


async def test_a_sweep_deleted_and_applied_again_waits_for_its_old_trials_to_be_collected(
    cluster: Cluster, operator: Any, monkeypatch: Any
) -> None:
    """`kubectl delete fts lr; kubectl apply -f sweep.yaml`: the old sweep is gone at once (Background) and its
    trials stay until Kubernetes' garbage collector deletes them. The new sweep's trials have the same names:
    they wait for the collector instead of failing as names another object holds."""
    monkeypatch.setattr(sweep_decide, "PREDECESSOR_RECHECK_S", 0.2)  # the operator runs in this process
    await started(cluster, operator)
    await cluster.put_object(*FTS, sweep(maxTrials=2, parallelism=2, maxFailedTrials=0))
    await eventually(lambda: trial_jobs(cluster) == ["lr-0", "lr-1"], what="two trials")
    old_uid = cluster.read(*FTS, NS, "lr")["metadata"]["uid"]
    await cluster.remove(*FTS, NS, "lr")
    again = await cluster.put_object(*FTS, sweep(maxTrials=2, parallelism=2, maxFailedTrials=0))
    await eventually(
        lambda: len(trials(cluster)) == 2 and all("earlier sweep" in t.get("message", "") for t in trials(cluster)),
        what="the new sweep's trials waiting for the old ones",
    )
    assert [t["state"] for t in trials(cluster)] == ["Pending", "Pending"] and sweep_status(cluster)[
        "phase"
    ] != "Failed"
    assert {cluster.read(*FTJ, NS, n)["metadata"]["ownerReferences"][0]["uid"] for n in ("lr-0", "lr-1")} == {old_uid}
    cluster.garbage_collect = True  # the collector runs: each dependent whose owner is gone is deleted
    await cluster.remove(*FTJ, NS, "lr-0")
    assert (
        cluster.read(*FTJ, NS, "lr-1") is None
        or cluster.read(*FTJ, NS, "lr-1")["metadata"]["ownerReferences"][0]["uid"] != old_uid
    )
    await eventually(
        lambda: all(
            (cluster.read(*FTJ, NS, n) or {}).get("metadata", {}).get("ownerReferences", [{}])[0].get("uid")
            == again["metadata"]["uid"]
            for n in ("lr-0", "lr-1")
        ),
        what="the new sweep's trials created",
    )
