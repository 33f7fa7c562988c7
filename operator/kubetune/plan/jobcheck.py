"""One job's verdict as ``kubetune plan`` gives it: what the CLI prints and ``kubetune.plan(job, ...)`` returns.

The command and the SDK call this one function, so the two cannot disagree."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kubetune.api import FineTuneJob

from .arch import UnknownModelError
from .feasibility import (
    Verdict,
    feasibility,
    gpu_memory_for,
    job_architecture,
    product_table,
    setup_from_job,
    source_leaves_adapter,
)
from .gpus import find_gpu
from .memory import estimate
from .quantity import parse_quantity


def gpu_memory_bytes(gpu_memory: str | int | float | None = None, gpu: str | None = None) -> int | None:
    """Bytes of one GPU from a quantity (``"80Gi"``), a number of bytes (int), GiB (float), or a GPU name
    (``"H100"``: :func:`kubetune.plan.find_gpu`); None when neither is given."""
    if gpu is not None:
        return find_gpu(gpu).memory_bytes
    if gpu_memory is None:
        return None
    if isinstance(gpu_memory, str):
        return parse_quantity(gpu_memory)
    if isinstance(gpu_memory, float):
        return int(gpu_memory * 1024**3)
    return int(gpu_memory)


def models_search_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Where spec.model.path models and Hugging Face caches are looked for: ``extra``, then $HF_HOME and
    ~/.cache/huggingface when they exist (``kubetune plan --models-dir``)."""
    dirs = [Path(d) for d in extra]
    dirs += [
        Path(p)
        for p in (os.environ.get("HF_HOME"), os.path.expanduser("~/.cache/huggingface"))
        if p and Path(p).is_dir()
    ]
    return dirs


def check(
    job: FineTuneJob,
    *,
    gpu_memory: str | int | float | None = None,
    gpu: str | None = None,
    model_config: str | Path | None = None,
    models_dirs: Sequence[str | Path] = (),
    together: Sequence[FineTuneJob] = (),
) -> Verdict:
    """Predict the peak GPU memory per training process of ``job`` and say whether it fits.

    ``gpu_memory`` (``"80Gi"``, bytes, or GiB as a float) or ``gpu`` (``"H100"``) is the memory of one GPU;
    neither: the job's own (spec.resources.gpuMemory, or its nodeSelector's GPU product), else the verdict is
    Unknown with the estimate.  ``model_config``: the model's config.json when the model is not catalogued;
    ``together``: the other jobs of the input (spec.model.fromJob).  ``Verdict.status`` is "True" (fits),
    "False" (with ``suggestion``, the cheapest change that fits) or "Unknown"; ``Verdict.estimate`` holds
    the terms.  Raises :class:`kubetune.plan.UnknownModelError` (or ``KeyError`` for an unknown GPU name)."""
    jobs = list(together) or [job]
    arch = job_architecture(job, config_file=model_config, models_dirs=models_search_dirs(models_dirs), together=jobs)
    memory = gpu_memory_bytes(gpu_memory, gpu)
    if memory is None:
        memory = gpu_memory_for(job, product_table())
    if memory is not None:
        return feasibility(job, memory, arch=arch, together=jobs)
    setup = setup_from_job(job, source_adapter=source_leaves_adapter(job, jobs))
    return Verdict("Unknown", "GPUMemoryUnknown", "", estimate(arch, setup))


__all__ = ["UnknownModelError", "check", "gpu_memory_bytes", "models_search_dirs"]
