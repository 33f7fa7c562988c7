"""Typed inputs and outputs of the renderer.

The renderer is a pure function ``render(job, options) -> Rendered``: no I/O,
no cluster, no clock.  The operator applies ``Rendered.objects``; ``kubetune
render`` prints them; ``kubetune run --local`` writes ``Rendered.files`` to a
folder and hands it to the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune.api import FineTuneJob
from kubetune.api.contract import Layout
from kubetune.api.spec import Backend
from kubetune.api.text import line

from .chain import ModelSource

DEFAULT_TRAINER_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"


@dataclass(frozen=True)
class RenderOptions:
    """Cluster-level defaults the operator (Helm values) or the CLI supplies."""

    image: str = DEFAULT_TRAINER_IMAGE
    """Trainer image used when spec.image is unset."""
    backend: Backend | None = None
    """Override spec.distributed.backend (``kubetune render --backend``)."""
    layout: Layout = field(default_factory=Layout)
    """Folders inside the pods (or local folders for run --local)."""
    default_namespace: str = "default"
    """Namespace for objects whose metadata has none."""
    default_queue: str | None = None
    """Kueue LocalQueue used when spec.scheduling.queueName is unset."""
    progress_url: str | None = None
    """The operator's progress intake (``http://<service>.<namespace>.svc:<port>/v1/progress``).

    When set, training pods get a projected ServiceAccount token for the audience
    ``kubetune`` (never one the API server accepts) and rank 0 posts its progress
    there; when unset (``kubetune render``, ``run --local``) nothing is added and the
    pod log is the only transport."""
    auto_tune: dict[str, Any] | None = None
    """What spec.autoTune chose and why (``kubetune.plan.AutoTuneResult.record()``); recorded in the
    run record (finetunejob.json) as the annotation ``kubetune.io/auto-tune``. Render the adjusted job
    (``AutoTuneResult.job``) so train.yaml carries the chosen settings."""
    model_source: ModelSource | None = None
    """The resolved spec.model.fromJob (:func:`kubetune.render.chain.resolve_from_job`); required when it is set."""
    reward_source: ModelSource | None = None
    """The resolved spec.training.ppo.rewardModel.fromJob; required when it is set."""


@dataclass(frozen=True)
class Problem:
    """One reason a FineTuneJob is invalid, pointing at the field and the fix."""

    path: str
    """Field path, e.g. ``spec.training.learningRate``."""
    message: str
    """What is wrong and how to fix it."""

    def __str__(self) -> str:
        # Escaped and bounded: a path may hold a user's key (ESC, newlines, 100 KB).
        return line(f"{self.path}: {self.message}" if self.path else self.message)


@dataclass(frozen=True)
class Rendered:
    """Everything one FineTuneJob renders to."""

    job: FineTuneJob
    train_args: dict[str, Any]
    """LLaMA-Factory training arguments (the content of train.yaml)."""
    files: dict[str, str]
    """ConfigMap data: file name (see kubetune.api.contract) -> text."""
    config_map: dict[str, Any]
    workload: dict[str, Any]
    """The Kubeflow PyTorchJob or MPIJob."""

    @property
    def objects(self) -> list[dict[str, Any]]:
        """Children in apply order: the ConfigMap first, so pods never start without it."""
        return [self.config_map, self.workload]
