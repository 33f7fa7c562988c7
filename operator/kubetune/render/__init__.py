"""Pure rendering: FineTuneJob -> LLaMA-Factory config, DeepSpeed/Accelerate config,
dataset_info.json, ConfigMap and the Kubeflow job.  No I/O, no cluster, no clock.
"""

from .checks import validate_object
from .pipeline import render
from .types import DEFAULT_TRAINER_IMAGE, Problem, Rendered, RenderOptions

__all__ = ["DEFAULT_TRAINER_IMAGE", "Problem", "RenderOptions", "Rendered", "render", "validate_object"]
