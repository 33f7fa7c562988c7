"""Plays the Kubeflow training-operator (and the kubelet) against the emulated cluster.

Shapes follow training-operator v1 (PyTorchJob) and mpi-operator v2beta1
(MPIJob): job conditions Created/Running/Restarting/Succeeded/Failed/Suspended
with the newest state True and the previous running state flipped to False;
pods labelled ``training.kubeflow.org/job-name`` and
``training.kubeflow.org/replica-type`` (lower case, as since v1.7).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from tests.support.apiserver.emulator import Cluster

from kubetune.api.contract import PROGRESS_PREFIX, STAGE_PREFIX

KINDS = {"PyTorchJob": ("kubeflow.org/v1", "pytorchjobs"), "MPIJob": ("kubeflow.org/v2beta1", "mpijobs")}
RANK0 = {"PyTorchJob": ("master", "pytorch"), "MPIJob": ("launcher", "launcher")}


def pod_name(kind: str, job: str) -> str:
    replica = RANK0[kind][0]
    return f"{job}-{replica}-0"


async def set_condition(
    cluster: Cluster, kind: str, namespace: str, name: str, type_: str, reason: str = "", message: str = ""
) -> None:
    """The job's newest condition becomes ``type_``=True; Running flips to False on a terminal state."""

    def change(obj: dict[str, Any]) -> None:
        conditions = [c for c in (obj.setdefault("status", {}).get("conditions") or []) if c["type"] != type_]
        if type_ in ("Succeeded", "Failed", "Suspended"):
            for c in conditions:
                if c["type"] in ("Running", "Restarting"):
                    c["status"] = "False"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions.append(
            {
                "type": type_,
                "status": "True",
                "reason": reason or f"Job{type_}",
                "message": message or f"job is {type_.lower()}",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        obj["status"]["conditions"] = conditions

    await cluster.mutate(*KINDS[kind], namespace, name, change)


async def start_pod(
    cluster: Cluster, kind: str, namespace: str, job: str, phase: str = "Running", **status: Any
) -> str:
    """The rank-0 pod (Master / Launcher) of ``job`` in ``phase``, with extra pod status fields."""
    replica, container = RANK0[kind]
    name = pod_name(kind, job)
    # The controllers copy the replica's pod template labels onto the pod, then add their own.
    child = cluster.read(*KINDS[kind], namespace, job) or {}
    specs = (
        (child.get("spec") or {}).get("pytorchReplicaSpecs") or (child.get("spec") or {}).get("mpiReplicaSpecs") or {}
    )
    template_labels = ((specs.get(replica.capitalize()) or {}).get("template") or {}).get("metadata", {}).get(
        "labels"
    ) or {}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                **template_labels,
                "training.kubeflow.org/job-name": job,
                "training.kubeflow.org/replica-type": replica,
                "training.kubeflow.org/replica-index": "0",
            },
        },
        "spec": {"containers": [{"name": container, "image": "trainer"}]},
        "status": {"phase": phase, **status},
    }
    if cluster.read("v1", "pods", namespace, name) is None:
        await cluster.put_object("v1", "pods", pod)
    else:
        await cluster.mutate("v1", "pods", namespace, name, lambda o: o.update(status=pod["status"]))
    return name


async def job_failed(cluster: Cluster, kind: str, namespace: str, job: str) -> None:
    """The job's ``Failed`` condition as training-operator sets it once its rank-0 replica failed
    (message and reason as :func:`pod_exits` cites them)."""
    role = "Master" if kind == "PyTorchJob" else "Launcher"
    message = f"{kind} {job} is failed because 1 {role} replica(s) failed."
    await set_condition(cluster, kind, namespace, job, "Failed", f"{kind}Failed", message)


async def oom_killed(cluster: Cluster, namespace: str, job: str) -> None:
    """The PyTorchJob's master pod Failed with its container OOMKilled (exit code 137), then the job Failed."""
    oom = {
        "containerStatuses": [{"name": "pytorch", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]
    }
    await start_pod(cluster, "PyTorchJob", namespace, job, phase="Failed", **oom)
    await job_failed(cluster, "PyTorchJob", namespace, job)


def progress_line(step: int, total: int, loss: float) -> str:
    return PROGRESS_PREFIX + json.dumps(
        {
            "step": step,
            "totalSteps": total,
            "loss": loss,
            "learningRate": 1e-4,
            "epoch": 0.4,
            "etaSeconds": 600,
            "updatedAt": "2026-11-28T12:00:00Z",
        }
    )


def stage_line(stage: str, event: str) -> str:
    return STAGE_PREFIX + json.dumps({"stage": stage, "event": event})


def retryable_exit_code(code: int) -> bool:
    """training-operator pkg/util/train/train_util.go ``IsRetryableExitCode``: ``exitCode >= 128``."""
    return code >= 128


async def pod_exits(
    cluster: Cluster, kind: str, namespace: str, job: str, exit_code: int, reason: str = "Error"
) -> str:
    """The rank-0 pod's container exits with ``exit_code`` under ``restartPolicy: ExitCode``, and the
    training-operator reacts as upstream does (kubeflow/training-operator v1.8,
    pkg/controller.v1/common/pod.go ``ReconcilePods`` and job.go):

    * the pod turns Failed with the container's terminated state (the kubelet);
    * a retryable code (>= 128): the operator deletes the pod and sets the job's
      ``Restarting`` condition True ("<kind> <job> is restarting because 1 Master replica(s)
      failed", reason ``<Kind>Restarting``); the next reconcile creates the pod again under the
      same name with a new uid, Pending, and the job is Running again once it runs.
      job.go ``PastBackoffLimit`` only counts OnFailure/Always replicas, so ExitCode restarts never
      fail the job by themselves;
    * a permanent code (1-127): the pod stays Failed and the job gets ``Failed`` True
      ("<kind> <job> is failed because 1 Master replica(s) failed", reason ``<Kind>Failed``).

    Returns the name of the (recreated) pod.
    """
    replica, container = RANK0[kind]
    name = pod_name(kind, job)
    terminated = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": "2026-11-28T12:00:00Z",
        "finishedAt": "2026-11-28T12:05:00Z",
    }

    def failed(pod: dict[str, Any]) -> None:
        pod["status"] = {
            "phase": "Failed",
            "containerStatuses": [{"name": container, "state": {"terminated": terminated}, "restartCount": 0}],
        }

    await cluster.mutate("v1", "pods", namespace, name, failed)
    if not retryable_exit_code(exit_code):
        await job_failed(cluster, kind, namespace, job)
        return name
    role = "Master" if kind == "PyTorchJob" else "Launcher"
    await cluster.remove("v1", "pods", namespace, name)
    await set_condition(
        cluster,
        kind,
        namespace,
        job,
        "Restarting",
        f"{kind}Restarting",
        f"{kind} {job} is restarting because 1 {role} replica(s) failed.",
    )

    def not_running(obj: dict[str, Any]) -> None:
        for c in obj["status"]["conditions"]:
            if c["type"] == "Running":
                c["status"] = "False"

    await cluster.mutate(*KINDS[kind], namespace, job, not_running)
    return await start_pod(cluster, kind, namespace, job, phase="Pending")


async def pod_runs_again(cluster: Cluster, kind: str, namespace: str, job: str) -> str:
    """The recreated pod runs: the training-operator flips Restarting to False and Running to True."""
    name = await start_pod(cluster, kind, namespace, job)

    def running(obj: dict[str, Any]) -> None:
        conditions = obj["status"]["conditions"]
        for c in conditions:
            if c["type"] == "Restarting":
                c["status"] = "False"
        conditions[:] = [c for c in conditions if c["type"] != "Running"]
        conditions.append(
            {"type": "Running", "status": "True", "reason": f"{kind}Running", "message": f"{kind} {job} is running."}
        )

    await cluster.mutate(*KINDS[kind], namespace, job, running)
    return name
