"""Will it fit? A GPU-memory planner for FineTuneJobs: pure arithmetic, no torch.

``estimate(arch, setup)`` predicts the peak memory of one training process term
by term; ``feasibility`` and ``autotune`` apply it to a FineTuneJob for the
operator and ``kubetune plan`` / ``kubetune validate``.  Only kubetune.api is
imported (import-linter enforces it) so the CLI and operator stay light.
"""

import sys
import types
from typing import Any

from .arch import Architecture, UnknownModelError, from_config, resolve
from .feasibility import AutoTuneResult, Verdict, autotune, feasibility, setup_from_job, source_leaves_adapter
from .gpus import GPUS, Gpu, find_gpu, product_memory_table
from .memory import Estimate, Setup, Term, activations, estimate, model_state_terms, trainable_params
from .quantity import parse_quantity
from .jobcheck import check

__all__ = [
    "GPUS",
    "Architecture",
    "AutoTuneResult",
    "Estimate",
    "Gpu",
    "Setup",
    "Term",
    "UnknownModelError",
    "Verdict",
    "activations",
    "autotune",
    "check",
    "estimate",
    "feasibility",
    "find_gpu",
    "from_config",
    "model_state_terms",
    "parse_quantity",
    "product_memory_table",
    "resolve",
    "setup_from_job",
    "source_leaves_adapter",
    "trainable_params",
]


class _CallablePlan(types.ModuleType):
    """``kubetune.plan(job, gpu_memory="80Gi")`` is :func:`check`: the package name is also the SDK's verb.
    (Static type checkers see a module here: typed code calls ``kubetune.plan.check(...)``.)"""

    def __call__(self, job: Any, **options: Any) -> Verdict:
        return check(job, **options)


sys.modules[__name__].__class__ = _CallablePlan
