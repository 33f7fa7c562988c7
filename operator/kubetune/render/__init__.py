"""Pure rendering: FineTuneJob -> LLaMA-Factory config, DeepSpeed/Accelerate config,
dataset_info.json, ConfigMap and the training child (a Kubeflow PyTorchJob, MPIJob or Trainer v2
TrainJob: one module each in ``backends``), and, for ``spec.serve``, the serving objects (one
engine each in ``serving``).  No I/O, no cluster, no clock.
"""

from .checks import validate_object
from .pipeline import render
from .types import DEFAULT_TRAINER_IMAGE, Problem, Rendered, RenderOptions

__all__ = ["DEFAULT_TRAINER_IMAGE", "Problem", "RenderOptions", "Rendered", "render", "validate_object"]
