"""Will it fit? A GPU-memory planner for FineTuneJobs: pure arithmetic, no torch.

``estimate(arch, setup)`` predicts the peak memory of one training process term
by term; ``feasibility`` and ``autotune`` apply it to a FineTuneJob for the
operator and ``kubetune plan`` / ``kubetune validate``.  Only kubetune.api is
imported (import-linter enforces it) so the CLI and operator stay light.
"""

from .arch import Architecture, UnknownModelError, from_config, resolve
from .feasibility import AutoTuneResult, Verdict, autotune, feasibility, setup_from_job, source_leaves_adapter
from .gpus import GPUS, Gpu, find_gpu, product_memory_table
from .memory import Estimate, Setup, Term, activations, estimate, model_state_terms, trainable_params
from .quantity import parse_quantity

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
