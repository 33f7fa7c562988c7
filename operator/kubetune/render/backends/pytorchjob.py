"""Kubeflow PyTorchJob (kubeflow.org/v1): torchrun, DeepSpeed or Accelerate inside each pod.

The training operator injects MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK and
PET_* into every pod; the trainer maps them onto LLaMA-Factory's launcher
variables (NNODES, NODE_RANK, ...).  The master pod is rank 0, whose log the
operator reads for progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from kubetune.api.contract import METRICS_PORT
from kubetune.cluster.backends.pytorchjob import PyTorchJobBackend

from ..intermediate import Plan
from ..podspec import TRAINER_COMMAND
from ..templating import render_manifest
from .base import WorkloadRenderer
from .common import child_labels, run_policy

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob

    from ..types import Problem


class PyTorchJobRenderer:
    name: ClassVar[str] = PyTorchJobBackend.name

    def build(self, plan: Plan) -> dict[str, Any]:
        roles = [("Master", 1)]
        if plan.nodes > 1:
            roles.append(("Worker", plan.nodes - 1))
        return render_manifest(
            "pytorchjob.json.j2",
            plan=plan,
            labels=child_labels(plan),
            roles=roles,
            nproc_per_node=str(plan.procs_per_node),
            run_policy=run_policy(plan, min_available=plan.nodes),
            command=list(TRAINER_COMMAND),
            master_port=plan.job.spec.distributed.master_port,
            metrics_port=METRICS_PORT,
            image_pull_policy=plan.job.spec.image_pull_policy,
        )

    def check(self, job: FineTuneJob) -> list[Problem]:
        return []


_CONFORMS: WorkloadRenderer = PyTorchJobRenderer()
"""Static check (mypy) that the class implements the renderer Protocol."""
