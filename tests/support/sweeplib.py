"""FineTuneSweeps against the emulated cluster: a sweep object, and trials played through their
Kubeflow children (the PyTorchJob of trial FineTuneJob ``<sweep>-<n>`` has the trial's name) and the
rank-0 log lines the trainer prints, so the real operator's FineTuneJob controller turns them into
the trial's status (phase, status.progress.evalLoss/evalStep, status.evaluation) as it would in a
cluster, and the sweep controller reads them from there."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.support.harness import FTJ, PTJ, eventually, example_job
from tests.support.apiserver.emulator import Cluster
from tests.support.kubeflow import pod_exits, pod_name, set_condition, start_pod

from kubetune.api.contract import PROGRESS_PREFIX, STAGE_PREFIX
from kubetune.api.crd import crd
from kubetune.api.contract import KIND
from kubetune.api.sweep import SWEEP_KIND
from kubetune.controller.sweeps.snapshot import SweepSnapshot

FTS = ("kubetune.io/v1alpha1", "finetunesweeps")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def install_sweep_crd(cluster: Cluster) -> None:
    """The generated FineTuneSweep CRD, as `helm install` leaves it: the emulator then prunes, defaults and
    validates every sweep write (the user's, and the operator's status patches) like the API server."""
    doc = crd(SWEEP_KIND)
    doc["metadata"].update(uid="sweep-crd-uid", resourceVersion="1", generation=1)
    cluster.store[(CRDS, None, doc["metadata"]["name"])] = doc


def uninstall_sweep_crd(cluster: Cluster) -> None:
    """Sweeps are stored as sent from now on (an older or schemaless CRD): the operator's
    own checks are what refuses."""
    cluster.store.pop((CRDS, None, f"{FTS[1]}.kubetune.io"), None)


NS = "team-a"
TOTAL = 40


def template(**changes: Any) -> dict[str, Any]:
    """The LoRA example as a trial template: an eval loss every 10 steps on a 10 % hold-out (what the
    pruner reads) and a held-out dataset for the final evaluation (the objective)."""
    spec = example_job("template")["spec"]
    spec["training"].update(valSize=0.1, evalSteps=10)
    held_out = {**copy.deepcopy(spec["datasets"][0]), "name": "deita_eval"}
    spec["evaluation"] = {"datasets": [held_out], "maxSamples": 50}
    spec.update(changes)
    return spec


def sweep(name: str = "lr", *, template_changes: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body = {
        "template": template(**(template_changes or {})),
        "parameters": [{"path": "training.learningRate", "type": "float", "min": 1e-5, "max": 1e-3, "log": True}],
        "objective": {"metric": "evalLoss", "goal": "minimize"},
        "algorithm": "random",
        "earlyStopping": "none",
        "maxTrials": 3,
        "parallelism": 1,
        "seed": 7,
        **spec,
    }
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSweep",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def sweep_status(cluster: Cluster, name: str = "lr") -> dict[str, Any]:
    return dict((cluster.read(*FTS, NS, name) or {}).get("status") or {})


def trials(cluster: Cluster, name: str = "lr") -> list[dict[str, Any]]:
    return list(sweep_status(cluster, name).get("trials") or [])


def trial(cluster: Cluster, trial_name: str, sweep_name: str = "lr") -> dict[str, Any]:
    return next(t for t in trials(cluster, sweep_name) if t["name"] == trial_name)


def sweep_condition(cluster: Cluster, type_: str, name: str = "lr") -> dict[str, Any]:
    return next((c for c in sweep_status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


def trial_jobs(cluster: Cluster) -> list[str]:
    return sorted(o["metadata"]["name"] for o in cluster.objects(*FTJ, NS))


async def trial_runs(cluster: Cluster, name: str) -> None:
    """Kubeflow starts the trial's PyTorchJob: Running, its rank-0 pod runs."""
    await eventually(lambda: cluster.read(*PTJ, NS, name), what=f"the PyTorchJob of trial {name}")
    await set_condition(cluster, "PyTorchJob", NS, name, "Running")
    await start_pod(cluster, "PyTorchJob", NS, name)
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("phase") == "Running",
        what=f"trial {name} Running",
    )


def eval_line(step: int, eval_loss: float) -> str:
    """The trainer's progress line after an evaluation during training (trainer/progress.py)."""
    return PROGRESS_PREFIX + json.dumps(
        {"step": step, "totalSteps": TOTAL, "loss": eval_loss + 0.1, "evalLoss": eval_loss, "evalStep": step}
    )


async def trial_reports(cluster: Cluster, name: str, step: int, eval_loss: float) -> None:
    cluster.append_log(NS, pod_name("PyTorchJob", name), eval_line(step, eval_loss))
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("progress", {}).get("evalStep") == step,
        what=f"trial {name}'s eval loss at step {step}",
    )


async def trial_succeeds(cluster: Cluster, name: str, eval_loss: float) -> None:
    """The evaluate stage ends with the trained model's eval loss, then the PyTorchJob Succeeded."""
    evaluation = {"state": "Succeeded", "trained": {"evalLoss": eval_loss}, "summary": f"loss {eval_loss}"}
    cluster.append_log(
        NS,
        pod_name("PyTorchJob", name),
        STAGE_PREFIX + json.dumps({"stage": "evaluate", "event": "end", "evaluation": evaluation}),
    )
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("evaluation"),
        what=f"trial {name}'s evaluation",
    )
    await set_condition(cluster, "PyTorchJob", NS, name, "Succeeded")


async def trial_fails(cluster: Cluster, name: str) -> None:
    """Rank 0 exits with a permanent code (1): its pod Failed, then the PyTorchJob (kubeflow.pod_exits)."""
    await pod_exits(cluster, "PyTorchJob", NS, name, 1)


async def drive_a_sweep(cluster: Cluster, name: str = "sw") -> None:
    """Every call a sweep makes (tests/controller/test_api_calls.py): trials asked and applied, one
    pruned (its FineTuneJob deleted), the sweep Succeeded and its best trial promoted to serving."""
    body = sweep(
        name, maxTrials=3, parallelism=1, earlyStopping="median", promote="serve", template_changes={"serve": {}}
    )
    await cluster.put_object(*FTS, body)
    await trial_runs(cluster, f"{name}-0")
    await trial_reports(cluster, f"{name}-0", 10, 1.2)
    await eventually(lambda: trial(cluster, f"{name}-0", name)["intermediate"], what="an intermediate value")
    await trial_succeeds(cluster, f"{name}-0", 1.0)
    await trial_runs(cluster, f"{name}-1")
    await trial_reports(cluster, f"{name}-1", 10, 4.0)
    await eventually(lambda: cluster.read(*FTJ, NS, f"{name}-1") is None, what="the pruned trial deleted")
    await trial_runs(cluster, f"{name}-2")
    await trial_succeeds(cluster, f"{name}-2", 1.1)
    await eventually(
        lambda: cluster.read("apps/v1", "deployments", NS, f"{name}-0-serve"), what="the best trial served"
    )


# --- snapshots for the pure sweep decide (tests/controller/test_sweep_decide.py, the Argo CD health check) ---

UID = "sweep-uid"


def snapshot(
    status: dict[str, Any] | None = None, trials: dict[str, Any] | None = None, **changes: Any
) -> SweepSnapshot:
    obj = sweep(**changes)
    obj["metadata"].update(uid=UID, generation=1, resourceVersion="7")
    defaults: dict[str, Any] = {"trials": trials or {}}
    return SweepSnapshot("team-a", "lr", obj, UID, 1, "7", status or {}, **defaults)


def job(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {},
        "status": {"phase": phase, **status},
    }


def record(number: int, state: str, value: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "number": number,
        "name": f"lr-{number}",
        "parameters": {"training.learningRate": 1e-4 * (number + 1)},
        "state": state,
    }
    if value is not None:
        out["value"] = value
    return out


def promoted_snapshot(serving: dict[str, Any] | None, *, job_generation: int = 2, served: bool = True) -> SweepSnapshot:
    """A finished promote: serve sweep whose winner lr-0 already got spec.serve (promotion applied
    earlier in this generation) and whose FineTuneJob controller wrote ``serving`` (or nothing yet)."""
    winner = job("lr-0", "Succeeded", conditions=[serving] if serving else [])
    winner["metadata"]["generation"] = job_generation
    if served:
        winner["spec"] = {"serve": {}}
    promoted = {
        "type": "Promoted",
        "status": "True",
        "reason": "WinnerPromoted",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-12-07T10:00:00Z",
    }
    status = {"trials": [record(0, "Succeeded", 0.5)], "conditions": [promoted]}
    snap = snapshot(status, {"lr-0": winner}, maxTrials=1, promote="serve", template_changes={"serve": {}})
    return SweepSnapshot(**{**snap.__dict__, "first_seen": False})


def serving_condition(reason: str, holds: str, generation: int = 2) -> dict[str, Any]:
    return {
        "type": "Serving",
        "status": holds,
        "reason": reason,
        "message": f"{reason} here",
        "observedGeneration": generation,
        "lastTransitionTime": "2026-12-07T10:00:00Z",
    }
