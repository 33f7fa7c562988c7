"""Loading LLaMA-Factory's stack in a heavy child (worker, evaluation, export) without DeepSpeed when
the job does not use it.

With DeepSpeed installed (the trainer image; the ``train`` extra), every process that unwraps a model
imported all of DeepSpeed, ~2.4 s of CPU on top of ~9 s for ``llamafactory.train.tuner`` (measured
here; bench/process_census.py counts it per process), and printed its accelerator line, also in a
LoRA job that never uses it.  The importer is accelerate's ``extract_model_from_parallel``
(accelerate/utils/other.py:218 and 250-253 @v1.11.0, images/trainer/pins.txt), which transformers
calls from every ``save_pretrained`` (transformers/modeling_utils.py:3316 and 4819 @5.6.0) and the
Trainer from ``compute_loss`` (transformers/trainer.py:1997 @5.6.0, through
``Accelerator.unwrap_model``)::

    if is_deepspeed_available():
        from deepspeed import DeepSpeedEngine
        options += (DeepSpeedEngine,)
    ...
    while isinstance(model, options):

``is_deepspeed_available`` only asks whether the package is installed (accelerate/utils/imports.py:166-167
@v1.11.0).  The import serves one ``isinstance`` check, and no object is a ``DeepSpeedEngine`` unless
``deepspeed.runtime.engine`` was imported, which puts ``deepspeed`` in ``sys.modules``: a job that
uses DeepSpeed has imported it long before (transformers' HfDeepSpeedConfig and ``deepspeed.initialize``
build the engine).  So the name ``is_deepspeed_available`` *in that one module* answers "installed and
already imported": the same unwrapping in every case, without the import where nothing can be unwrapped.
``is_deepspeed_available`` elsewhere (accelerate's state and plugins, transformers) is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_MARK = "_kubetune_only_when_imported"


def skip_unused_deepspeed() -> bool:
    """In this process, accelerate's model unwrapping imports DeepSpeed only when it is in use (see
    the module docstring).  Returns whether the probe is (now) the narrowed one; an accelerate without
    that module or name is left alone."""
    try:
        from accelerate.utils import other  # noqa: PLC0415 - heavy; called only in the heavy children
    except ImportError:
        return False
    probe: Callable[[], bool] | None = getattr(other, "is_deepspeed_available", None)
    if probe is None or not callable(probe):
        return False
    if getattr(probe, _MARK, False):
        return True
    installed = probe

    def imported_and_installed() -> bool:
        return "deepspeed" in sys.modules and bool(installed())

    setattr(imported_and_installed, _MARK, True)
    setattr(other, "is_deepspeed_available", imported_and_installed)  # noqa: B010 - a module of accelerate's
    return True
