"""Plays the Kubeflow training-operator (and the kubelet) against the emulated cluster.

Shapes follow training-operator v1 (PyTorchJob) and mpi-operator v2beta1
(MPIJob): job conditions Created/Running/Restarting/Succeeded/Failed/Suspended
with the newest state True and the previous running state flipped to False;
pods labelled ``training.kubeflow.org/job-name`` and
``training.kubeflow.org/replica-type`` (lower case, as since v1.7).
"""

from __future__ import annotations

import json
from typing import Any

from emulator import Cluster

from kubetune.api.contract import PROGRESS_PREFIX, STAGE_PREFIX

KINDS = {"PyTorchJob": ("kubeflow.org/v1", "pytorchjobs"), "MPIJob": ("kubeflow.org/v2beta1", "mpijobs")}
RANK0 = {"PyTorchJob": ("master", "pytorch"), "MPIJob": ("launcher", "launcher")}


def pod_name(kind: str, job: str) -> str:
    replica = RANK0[kind][0]
    return f"{job}-{replica}-0"


async def set_condition(cluster: Cluster, kind: str, namespace: str, name: str, type_: str, reason: str = "", message: str = "") -> None:
    """The job's newest condition becomes ``type_``=True; Running flips to False on a terminal state."""

    def change(obj: dict[str, Any]) -> None:
        conditions = [c for c in (obj.setdefault("status", {}).get("conditions") or []) if c["type"] != type_]
        if type_ in ("Succeeded", "Failed", "Suspended"):
            for c in conditions:
                if c["type"] in ("Running", "Restarting"):
                    c["status"] = "False"
        conditions.append({"type": type_, "status": "True", "reason": reason or f"Job{type_}", "message": message or f"job is {type_.lower()}"})
        obj["status"]["conditions"] = conditions

    await cluster.mutate(*KINDS[kind], namespace, name, change)


async def start_pod(cluster: Cluster, kind: str, namespace: str, job: str, phase: str = "Running", **status: Any) -> str:
    """The rank-0 pod (Master / Launcher) of ``job`` in ``phase``, with extra pod status fields."""
    replica, container = RANK0[kind]
    name = pod_name(kind, job)
    # The controllers copy the replica's pod template labels onto the pod, then add their own.
    child = cluster.read(*KINDS[kind], namespace, job) or {}
    specs = (child.get("spec") or {}).get("pytorchReplicaSpecs") or (child.get("spec") or {}).get("mpiReplicaSpecs") or {}
    template_labels = ((specs.get(replica.capitalize()) or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
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


def progress_line(step: int, total: int, loss: float) -> str:
    return PROGRESS_PREFIX + json.dumps({"step": step, "totalSteps": total, "loss": loss, "learningRate": 1e-4, "epoch": 0.4, "etaSeconds": 600, "updatedAt": "2026-11-28T12:00:00Z"})


def stage_line(stage: str, event: str) -> str:
    return STAGE_PREFIX + json.dumps({"stage": stage, "event": event})
