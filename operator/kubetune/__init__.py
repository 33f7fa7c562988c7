"""kubetune: fine-tune LLMs on Kubernetes with LLaMA-Factory.

The package is layered (enforced by import-linter, see pyproject.toml):
``api`` (pydantic models, the single source of truth) -> ``cluster`` (what
kubetune knows about its kinds in the cluster: backends, serving engines) ->
``render`` (pure functions) -> ``controller`` / ``cli``.  ``trainer`` runs inside
the training image and depends on ``api`` only.  Nothing here imports torch, transformers or
llamafactory at module level; those are the optional ``train`` extra.

The Python SDK (``kubetune.sdk``, docs/sdk.md) is reachable from here:
``kubetune.FineTuneJob``, ``kubetune.Client``, ``kubetune.run_local``,
``kubetune.plan(job, gpu_memory=...)`` and the SDK's errors.  They are loaded on
first use (PEP 562 ``__getattr__``), so ``import kubetune`` and the CLI's start
stay as light as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob
    from kubetune.localrun import RunResult
    from kubetune.plan import Verdict
    from kubetune.sdk import (
        AsyncClient,
        ClusterUnreachable,
        Client,
        Conflict,
        CRDNotInstalled,
        Forbidden,
        InvalidSpec,
        JobDeleted,
        JobEvent,
        JobFailed,
        JobNotFound,
        JobUpdate,
        KubetuneError,
        MetricRows,
        NoPodYet,
        OperatorNotRunning,
        Unauthorized,
        WaitTimeout,
        read_trainer_log,
        run_local,
    )

__all__ = [
    "AsyncClient",
    "CRDNotInstalled",
    "Client",
    "ClusterUnreachable",
    "Conflict",
    "FineTuneJob",
    "Forbidden",
    "InvalidSpec",
    "JobDeleted",
    "JobEvent",
    "JobFailed",
    "JobNotFound",
    "JobUpdate",
    "KubetuneError",
    "MetricRows",
    "NoPodYet",
    "OperatorNotRunning",
    "RunResult",
    "Unauthorized",
    "Verdict",
    "WaitTimeout",
    "__version__",
    "plan",
    "read_trainer_log",
    "run_local",
]

_LAZY = {"FineTuneJob": "kubetune.api", "RunResult": "kubetune.localrun", "Verdict": "kubetune.plan"}
"""Where each name of ``__all__`` lives (the rest: kubetune.sdk)."""


def __getattr__(name: str) -> Any:
    """The SDK's names, imported on first use.  ``importlib`` (not an import statement) keeps the
    import-linter layers intact: every module imports this package, and this package must not
    import the layers above them.  ``kubetune.plan`` is the planner package itself, callable as
    ``kubetune.plan(job, gpu_memory="80Gi")`` (kubetune/plan/__init__.py)."""
    if name == "plan":
        return importlib.import_module("kubetune.plan")
    if name not in __all__:
        raise AttributeError(f"module 'kubetune' has no attribute {name!r}")
    module = _LAZY.get(name, "kubetune.sdk")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
