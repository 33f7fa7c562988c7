"""Pure rendering: FineTuneJob -> LLaMA-Factory config, DeepSpeed/Accelerate config,
dataset_info.json, ConfigMap and the training child (a Kubeflow PyTorchJob, MPIJob or Trainer v2
TrainJob: one renderer each in ``backends``), and, for ``spec.serve``, the serving objects (one
renderer per engine in ``serving``).  The backends and engines themselves, and what kubetune knows
about their kinds in the cluster, are ``kubetune.cluster``, which the renderer reads for the kinds
it writes.  No I/O, no cluster, no clock.
"""

from .checks import validate_object
from .pipeline import render
from .types import DEFAULT_TRAINER_IMAGE, Problem, Rendered, RenderOptions

__all__ = ["DEFAULT_TRAINER_IMAGE", "Problem", "RenderOptions", "Rendered", "render", "validate_object"]
