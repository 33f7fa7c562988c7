"""Feasibility and auto-tuning of a FineTuneJob: pure functions for the operator and the CLI.

How the operator's decide step calls them (before any child exists; the controller wires this):

1. ``table = product_table(environ, flags)`` once at start-up: the built-in table
   (``kubetune.plan.gpus.GPUS``) extended by the Helm value ``gpuMemoryByProduct`` (passed as the
   ``KUBETUNE_GPU_MEMORY_BY_PRODUCT`` environment variable) and ``--gpu-memory-by-product``; a
   broken entry raises ValueError naming it: fail start-up. ``kubetune validate`` uses the same.
   Per job: ``memory = gpu_memory_for(job, table)`` (spec.resources.gpuMemory, else the table
   entry for spec.scheduling.nodeSelector's ``nvidia.com/gpu.product``, else None).
2. If ``job.spec.auto_tune``: ``result = autotune(job, memory)``. Render ``result.job`` (the
   adjusted spec; ``result.job is job`` when nothing changed) with
   ``dataclasses.replace(options, auto_tune=result.record())`` so the run record
   (finetunejob.json, annotation ``kubetune.io/auto-tune``) says what was chosen and why, and
   patch ``status.autoTune = result.record()`` (it validates as ``AutoTuneStatus``).
   Then use ``verdict = result.verdict``; otherwise ``verdict = feasibility(job, memory)``.
3. Set the condition ``verdict.condition()`` = {type: "Feasible", status, reason, message}
   (add observedGeneration and lastTransitionTime as for every condition):
   - status "True", reason ``Fits`` (or ``CPUTraining``): create the children as usual;
   - status "False", reason ``InsufficientGPUMemory``, message with the predicted peak, the GPU
     memory, the three biggest terms and the cheapest change that fits: create NO children,
     emit a Warning event with the same reason and message, keep phase Pending and
     ``status.message`` = the message. The spec is immutable, so the user recreates the job (or
     sets autoTune); no requeue is needed;
   - status "Unknown" (``GPUMemoryUnknown``, ``UnknownArchitecture``): set the condition with the
     message (what is missing) and the reason's hint (how to supply it), and create the children:
     an unknown verdict never blocks a job.

Nothing here does I/O except :func:`resolve` reading a config.json when the caller passes
``models_dirs``; the operator passes none (catalogue only), so unknown private models are
``Unknown``, never refused.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubetune.api import FineTuneJob

from .arch import Architecture, UnknownModelError, resolve
from .gpus import GiB, product_memory_table
from .memory import Estimate, Setup, estimate
from .quantity import parse_quantity

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
PRODUCT_TABLE_ENV = "KUBETUNE_GPU_MEMORY_BY_PRODUCT"


# --- reading a job -------------------------------------------------------------------


def _packing(training: Any) -> Literal["none", "packing", "neat"]:
    """training.packing (added by another change; absent on older specs) as the planner's three cases."""
    value = getattr(training, "packing", None)
    if value in (None, False, "none", "off", "disabled"):
        return "none"
    if isinstance(value, str) and "neat" in value.lower():
        return "neat"
    return "packing"


def _liger(training: Any) -> bool:
    value = getattr(training, "liger_kernel", None)
    if value is None:
        value = getattr(training, "liger", False)
    return bool(value) and value not in ("off", "disabled", "none")


def setup_from_job(job: FineTuneJob, *, source_adapter: bool | None = None) -> Setup:
    """The planner's Setup of a job.  ``source_adapter``: whether spec.model.fromJob's source leaves a
    LoRA adapter (see :func:`source_leaves_adapter`); None (unknown) counts it as one, the pessimistic
    side, since kubetune then names base + adapter as ``ref_model``."""
    s = job.spec
    t, d, r = s.training, s.distributed, s.resources
    lora = s.lora
    freeze = s.freeze
    return Setup(
        method=s.method,
        precision=t.precision,
        micro_batch=t.per_device_batch_size,
        seq_len=t.cutoff_length,
        grad_accum=t.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        zero_stage=d.zero_stage,
        offload=d.offload,
        world_size=max(1, r.nodes * max(1, r.gpus_per_node)),
        lora_rank=lora.rank if lora else 8,
        lora_targets=tuple(lora.target_modules) if lora else ("all",),
        freeze_layers=freeze.trainable_layers if freeze else 2,
        freeze_modules=tuple(freeze.trainable_modules) if freeze else ("all",),
        quant_bits=s.quantization.bits if s.quantization else None,
        double_quant=s.quantization.double_quant if s.quantization else True,
        packing=_packing(t),
        liger=_liger(t),
        attention=t.attention,
        fsdp=d.fsdp,
        optimizer=_optimizer(job),
        rows_per_example=2 if t.stage in ("dpo", "rm") else 1,
        reference_model=_loads_reference_model(job, source_adapter),
        reference_quant_bits=s.quantization.bits
        if s.quantization and _loads_reference_model(job, source_adapter)
        else None,
        stage=t.stage,
        reference_forward=_uses_reference_model(t),
    )


def _loads_reference_model(job: FineTuneJob, source_adapter: bool | None) -> bool:
    """A separate reference model in GPU memory (llamafactory/train/trainer_utils.py:116-148 @v0.9.5):
    a copy for full/freeze; for LoRA/QLoRA only when ``ref_model`` is set, which kubetune does on a
    fromJob adapter (render/lfargs.py reference_args). Assumption, stated for the planner: with a
    quantized policy the renderer also sets ``ref_model_quantization_bit`` to the policy's bits, so
    that reference is counted quantized (:attr:`Setup.reference_quant_bits`)."""
    if not _uses_reference_model(job.spec.training):
        return False
    if job.spec.method in ("full", "freeze"):
        return True
    return job.spec.model.from_job is not None and source_adapter is not False


def source_leaves_adapter(job: FineTuneJob, together: Sequence[FineTuneJob | Mapping[str, Any]] = ()) -> bool | None:
    """Whether spec.model.fromJob's source leaves base + LoRA adapter rather than a complete model: a
    lora/qlora source without export (or an rm source, which is never exported), as render/chain.py
    ``model_source_of`` decides. None when the source is not among ``together``."""
    name = job.spec.model.from_job
    if name is None:
        return False
    for j in together:
        spec = j.spec.model_dump(by_alias=True) if isinstance(j, FineTuneJob) else (j.get("spec") or {})
        meta_name, namespace = _model_of(j)[:2]
        if meta_name != name or namespace != job.metadata.namespace or not isinstance(spec, Mapping):
            continue
        export = spec.get("export") or {}
        training = spec.get("training") or {}
        exported = bool(export.get("enabled")) if isinstance(export, Mapping) else False
        stage = training.get("stage", "sft") if isinstance(training, Mapping) else "sft"
        return spec.get("method") in ("lora", "qlora") and (not exported or stage == "rm")
    return None


def _uses_reference_model(training: Any) -> bool:
    """DPO (except the reference-free orpo/simpo losses) and KTO (LLaMA-Factory's use_ref_model)."""
    loss = training.preference.loss if training.preference is not None else "sigmoid"
    return bool(training.stage == "kto" or (training.stage == "dpo" and loss not in ("orpo", "simpo")))


DEFAULT_OPTIMIZER = "adamw_torch_fused"
"""transformers' default ``optim`` in the trainer image (transformers 5.6 with torch >= 2.8)."""


def _optimizer(job: FineTuneJob) -> str:
    """spec.training.optimizer, else spec.extraArgs.optim, else transformers' default."""
    chosen = getattr(job.spec.training, "optimizer", None)
    extra = (job.spec.extra_args or {}).get("optim")
    return str(chosen or extra or DEFAULT_OPTIMIZER)


def job_architecture(
    job: FineTuneJob,
    *,
    config_file: str | Path | None = None,
    models_dirs: list[Path] | None = None,
    together: Sequence[FineTuneJob | Mapping[str, Any]] = (),
) -> Architecture:
    """The architecture of spec.model.  A spec.model.fromJob trains on the source job's output,
    which has the source's architecture: followed through ``together`` (the jobs given in the same
    input, as ``kubetune render`` resolves them, or the source objects the operator's watch holds;
    the same namespace only)."""
    name, path, from_job = job.spec.model.name, job.spec.model.path, job.spec.model.from_job
    if job.spec.model.uri is not None and config_file is None:
        raise UnknownModelError(
            f"spec.model.uri {job.spec.model.uri!r}: the planner does not read buckets; give the model's config.json "
            "(kubetune plan --model-config PATH, a file or a folder holding it)"
        )
    seen = {job.name}
    while from_job is not None and config_file is None:
        source = next(
            (
                _model_of(j)
                for j in together
                if _model_of(j)[0] == from_job and _model_of(j)[1] == job.metadata.namespace
            ),
            None,
        )
        if source is None or from_job in seen:
            raise UnknownModelError(
                f"spec.model.fromJob {from_job!r}: the planner takes the architecture from the source "
                "FineTuneJob, which is not in the same input (kubetune plan: give both files; "
                "or give the model's config.json: --model-config PATH)"
            )
        seen.add(from_job)
        name, path, from_job = source[2:]
    return resolve(name, path, config_file=config_file, models_dirs=models_dirs)


def _model_of(job: FineTuneJob | Mapping[str, Any]) -> tuple[str, str | None, str | None, str | None, str | None]:
    """(name, namespace, model name, model path, model fromJob) of a job or of its raw object."""
    if isinstance(job, FineTuneJob):
        m = job.spec.model
        return job.name, job.metadata.namespace, m.name, m.path, m.from_job
    meta, spec = job.get("metadata") or {}, job.get("spec") or {}
    model = spec.get("model") if isinstance(spec, Mapping) else None
    model = model if isinstance(model, Mapping) else {}
    return str(meta.get("name")), meta.get("namespace"), model.get("name"), model.get("path"), model.get("fromJob")


def gpu_memory_for(job: FineTuneJob, product_table: Mapping[str, str] | None = None) -> int | None:
    """Bytes of one GPU: spec.resources.gpuMemory, else the Helm table entry for the
    spec.scheduling.nodeSelector's nvidia.com/gpu.product, else None (unknown)."""
    declared = getattr(job.spec.resources, "gpu_memory", None)
    if declared:
        return parse_quantity(declared)
    selector = (job.spec.scheduling.node_selector if job.spec.scheduling else None) or {}
    product = selector.get(GPU_PRODUCT_LABEL)
    if product and product_table and product in product_table:
        return parse_quantity(product_table[product])
    return None


def product_table_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Helm value gpuMemoryByProduct, as the chart passes it (JSON in KUBETUNE_GPU_MEMORY_BY_PRODUCT)."""
    raw = (environ if environ is not None else os.environ).get(PRODUCT_TABLE_ENV, "")
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{PRODUCT_TABLE_ENV} must be a JSON object of product -> quantity")
    return _checked({str(k): str(v) for k, v in data.items()}, PRODUCT_TABLE_ENV)


def _checked(table: dict[str, str], source: str) -> dict[str, str]:
    for k, v in table.items():
        try:
            size = parse_quantity(v)  # refuse a broken table at start-up, naming the entry
        except ValueError as exc:
            raise ValueError(f"{source}: {k}: {exc}") from None
        if size <= 0:
            raise ValueError(f"{source}: {k}: {v!r} must be a positive quantity such as 80Gi")
    return table


def product_table(environ: Mapping[str, str] | None = None, extra: Sequence[str] = ()) -> dict[str, str]:
    """The GPU memory table of the operator and of ``kubetune validate``: the built-in one
    (kubetune.plan.gpus.GPUS, one entry per nvidia.com/gpu.product value), extended and overridden
    by the chart's gpuMemoryByProduct (KUBETUNE_GPU_MEMORY_BY_PRODUCT), then by ``extra``
    (``--gpu-memory-by-product PRODUCT=QUANTITY``, for an operator run outside the cluster).
    Every GPU the planner knows is in it, those kubetune's stock image cannot run included (a job
    with its own spec.image may run there): memory does not depend on the image."""
    flags: dict[str, str] = {}
    for item in extra:
        product, sep, quantity = item.partition("=")
        if not sep or not product.strip() or not quantity.strip():
            raise ValueError(f"--gpu-memory-by-product {item!r}: give PRODUCT=QUANTITY, e.g. NVIDIA-H800=81559Mi")
        flags[product.strip()] = quantity.strip()
    return {**product_memory_table(), **product_table_from_env(environ), **_checked(flags, "--gpu-memory-by-product")}


def why_gpu_memory_unknown(job: FineTuneJob, product_table: Mapping[str, str] | None = None) -> str:
    """What is missing when :func:`gpu_memory_for` returns None, naming the job's own values."""
    selector = (job.spec.scheduling.node_selector if job.spec.scheduling else None) or {}
    product = selector.get(GPU_PRODUCT_LABEL)
    if product is None:
        where = f"spec.scheduling.nodeSelector names no {GPU_PRODUCT_LABEL}"
    elif not product_table:
        where = f"the operator has no gpuMemoryByProduct table to look up {GPU_PRODUCT_LABEL}={product!r} in"
    else:
        where = (
            f"{GPU_PRODUCT_LABEL}={product!r} is not in the operator's GPU table (built in, "
            "extended by the chart's gpuMemoryByProduct or --gpu-memory-by-product; "
            f"it lists {', '.join(sorted(product_table)[:5])}{', ...' if len(product_table) > 5 else ''})"
        )
    return f"GPU memory per GPU unknown: spec.resources.gpuMemory is not set and {where}"


# --- changes that make a job fit --------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One candidate configuration and what it costs in throughput or semantics."""

    setup: Setup
    steps: tuple[str, ...]
    cost: int
    estimate: Estimate

    def describe(self) -> str:
        return "; ".join(self.steps)


def _describe(base: Setup, new: Setup) -> tuple[tuple[str, ...], int]:
    steps: list[str] = []
    cost = 0
    if new.zero_stage != base.zero_stage:
        steps.append(f"distributed.zeroStage: {new.zero_stage}")
        cost += 2 * (new.zero_stage - base.zero_stage)
    if new.offload != base.offload:
        steps.append(f"distributed.offload: {new.offload}")
        cost += {"optimizer": 8, "all": 14}[new.offload]
    if new.micro_batch != base.micro_batch:
        steps.append(
            f"training.perDeviceBatchSize: {new.micro_batch}, gradientAccumulationSteps: "
            f"{new.grad_accum} (same global batch)"
        )
        ratio = base.micro_batch // new.micro_batch
        cost += ratio.bit_length() - 1 + (1 if new.micro_batch == 1 else 0)
    if new.gradient_checkpointing and not base.gradient_checkpointing:
        steps.append("training.gradientCheckpointing: true")
        cost += 5
    if new.liger and not base.liger:
        steps.append(
            "training.ligerKernel: true (fused linear cross-entropy: "
            "the logits are never materialised; stages pt and sft only)"
        )
        cost += 1
    if new.method != base.method:
        if new.method == "qlora":
            steps.append("method: qlora with quantization.bits: 4 (changes numerics)")
            cost += 20
        else:
            steps.append(f"method: {new.method} (trains adapters instead of all weights)")
            cost += 40
    return tuple(steps), cost


def _candidates(base: Setup, *, knobs: tuple[str, ...]) -> list[Setup]:
    sharding = not base.fsdp  # FSDP jobs keep FSDP: zeroStage/offload would contradict it
    stages = range(base.zero_stage, 4) if "zero" in knobs and base.world_size > 1 and sharding else [base.zero_stage]
    offloads: tuple[str, ...] = ("none", "optimizer", "all") if "offload" in knobs and sharding else (base.offload,)
    batches = (
        [
            b
            for b in range(base.micro_batch, 0, -1)
            if base.micro_batch % b == 0
            and (b == base.micro_batch or (base.micro_batch // b) & (base.micro_batch // b - 1) == 0)
        ]
        if "batch" in knobs
        else [base.micro_batch]
    )
    gcs = (base.gradient_checkpointing, True) if "gc" in knobs else (base.gradient_checkpointing,)
    # Liger's fused cross-entropy removes the logits only for stages pt and sft (Setup.fused_ce):
    # never suggest it for dpo, kto or rm.
    ligers = (base.liger, True) if "liger" in knobs and base.stage in ("pt", "sft") else (base.liger,)
    methods = [base.method]
    if "method" in knobs:
        if base.method == "lora":
            methods.append("qlora")
        elif base.method == "full":
            methods += ["lora", "qlora"]
    out: list[Setup] = []
    for z, off, b, gc, m, lg in itertools.product(stages, offloads, batches, set(gcs), methods, set(ligers)):
        if off == "optimizer" and z < 2 or off == "all" and z != 3:
            continue
        if off != base.offload and off != "none" and base.world_size == 1 and z == 0:
            continue
        quant = base.quant_bits if m == base.method else (4 if m == "qlora" else None)
        if quant == 8 and z == 3:
            continue
        # full/freeze -> LoRA: the adapter is disabled for the reference instead of a copy; a LoRA
        # policy that loads a reference (fromJob adapter) keeps it, quantized like a qlora policy.
        ref = base.reference_model and (m == base.method or m in ("full", "freeze") or base.method in ("lora", "qlora"))
        out.append(
            base.with_(
                zero_stage=z,
                offload=off,
                micro_batch=b,
                grad_accum=base.grad_accum * base.micro_batch // b,
                gradient_checkpointing=gc,
                method=m,
                quant_bits=quant,
                liger=lg,
                reference_model=ref,
                reference_quant_bits=quant if ref and m == "qlora" else None,
            )
        )
    return out


def cheapest_fit(
    arch: Architecture,
    base: Setup,
    gpu_memory: int,
    *,
    knobs: tuple[str, ...] = ("zero", "offload", "batch", "gc", "method"),
) -> Change | None:
    """The fitting configuration with the least throughput cost (ties: the most headroom)."""
    best: Change | None = None
    for s in _candidates(base, knobs=knobs):
        if s == base:
            continue
        est = estimate(arch, s)
        if est.total > gpu_memory:
            continue
        steps, cost = _describe(base, s)
        if best is None or (cost, est.total) < (best.cost, best.estimate.total):
            best = Change(s, steps, cost, est)
    return best


# --- verdicts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Will the job fit one GPU of ``gpu_memory`` bytes?  ``status`` is the Feasible condition's."""

    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    estimate: Estimate | None = None
    gpu_memory: int | None = None
    suggestion: Change | None = None

    @property
    def fits(self) -> bool:
        return self.status == "True"

    @property
    def margin(self) -> int | None:
        if self.estimate is None or self.gpu_memory is None:
            return None
        return self.gpu_memory - self.estimate.total

    def condition(self) -> dict[str, str]:
        """The Feasible condition (type/status/reason/message) as the operator should set it."""
        return {"type": "Feasible", "status": self.status, "reason": self.reason, "message": self.message}


def _g(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def verdict_for(arch: Architecture, setup: Setup, gpu_memory: int, *, liger_available: bool = False) -> Verdict:
    est = estimate(arch, setup)
    margin = gpu_memory - est.total
    if margin >= 0:
        return Verdict(
            "True",
            "Fits",
            f"predicted peak {_g(est.total)} per GPU of {_g(gpu_memory)} ({_g(margin)} to spare)",
            est,
            gpu_memory,
        )
    knobs = ("zero", "offload", "batch", "gc", "method") + (("liger",) if liger_available else ())
    change = cheapest_fit(arch, setup, gpu_memory, knobs=knobs)
    fix = (
        f"; to fit: {change.describe()} (predicted {_g(change.estimate.total)})"
        if change
        else "; no single change found that fits: use a GPU with more memory or more GPUs with zeroStage 3"
    )
    biggest = sorted(est.terms, key=lambda t: -t.bytes)[:3]
    parts = ", ".join(f"{t.name} {_g(t.bytes)}" for t in biggest)
    msg = f"predicted peak {_g(est.total)} per GPU exceeds {_g(gpu_memory)} by {_g(-margin)} ({parts}){fix}"
    return Verdict("False", "InsufficientGPUMemory", msg, est, gpu_memory, change)


def feasibility(
    job: FineTuneJob,
    gpu_memory: int | None,
    *,
    arch: Architecture | None = None,
    models_dirs: list[Path] | None = None,
    product_table: Mapping[str, str] | None = None,
    together: Sequence[FineTuneJob | Mapping[str, Any]] = (),
) -> Verdict:
    """The Feasible verdict of a job on GPUs of ``gpu_memory`` bytes (None: unknown).

    Unknown (GPUMemoryUnknown, UnknownArchitecture) says what is missing; the operator then
    creates the children anyway.  ``product_table`` only words the GPUMemoryUnknown message;
    ``together`` resolves spec.model.fromJob (see :func:`job_architecture`)."""
    if job.spec.resources.gpus_per_node == 0:
        return Verdict("True", "CPUTraining", "trains on CPU; no GPU memory to check")
    try:
        a = arch or job_architecture(job, models_dirs=models_dirs, together=together)
    except (UnknownModelError, ValueError) as exc:
        a, unknown_arch = None, str(exc)
    if gpu_memory is None or gpu_memory <= 0:
        message = (
            why_gpu_memory_unknown(job, product_table)
            if gpu_memory is None
            else f"GPU memory {gpu_memory} bytes is not a positive size"
        )
        if a is None:
            message += "; the model's architecture is unknown too"
        est = (
            estimate(a, setup_from_job(job, source_adapter=source_leaves_adapter(job, together)))
            if a is not None
            else None
        )
        if est is not None:
            message += f" (predicted peak {_g(est.total)} per GPU)"
        return Verdict("Unknown", "GPUMemoryUnknown", message, est)
    if a is None:
        return Verdict(
            "Unknown",
            "UnknownArchitecture",
            f"the model's architecture is unknown: {unknown_arch}",
            gpu_memory=gpu_memory,
        )
    # training.ligerKernel is suggested only once the API has it (another change adds the field)
    liger = "liger_kernel" in type(job.spec.training).model_fields
    return verdict_for(
        a, setup_from_job(job, source_adapter=source_leaves_adapter(job, together)), gpu_memory, liger_available=liger
    )


@dataclass(frozen=True)
class AutoTuneResult:
    job: FineTuneJob
    """The job with the chosen settings (the input job when nothing changed)."""
    changed: bool
    reasons: tuple[str, ...]
    verdict: Verdict
    chosen: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What to store in status.autoTune and in the run record (finetunejob.json 'autoTune')."""
        return {"changed": self.changed, "settings": self.chosen, "reasons": list(self.reasons)}


def autotune(
    job: FineTuneJob,
    gpu_memory: int | None,
    *,
    arch: Architecture | None = None,
    product_table: Mapping[str, str] | None = None,
    together: Sequence[FineTuneJob | Mapping[str, Any]] = (),
) -> AutoTuneResult:
    """Choose ZeRO stage, offload and micro-batch (keeping the global batch) so the job fits.

    Only those three change: method, precision and gradient checkpointing are the
    user's call (the verdict suggests them when nothing else fits).
    """
    first = feasibility(job, gpu_memory, arch=arch, product_table=product_table, together=together)
    if first.status != "False" or first.estimate is None or gpu_memory is None:
        return AutoTuneResult(job, False, (f"kept as written: {first.message}",), first)
    a = first.estimate.arch
    base = first.estimate.setup
    change = cheapest_fit(a, base, gpu_memory, knobs=("zero", "offload", "batch"))
    if change is None:
        return AutoTuneResult(
            job, False, ("no ZeRO stage, offload or micro-batch makes it fit; " + first.message,), first
        )
    s = change.setup
    spec = job.spec
    distributed = spec.distributed.model_copy(update={"zero_stage": s.zero_stage, "offload": s.offload})
    if s.zero_stage > 0 and distributed.launcher == "torchrun":
        distributed = distributed.model_copy(update={"launcher": "deepspeed"})
    training = spec.training.model_copy(
        update={"per_device_batch_size": s.micro_batch, "gradient_accumulation_steps": s.grad_accum}
    )
    new_job = job.model_copy(
        update={"spec": spec.model_copy(update={"distributed": distributed, "training": training})}
    )
    chosen = {
        "zeroStage": s.zero_stage,
        "offload": s.offload,
        "perDeviceBatchSize": s.micro_batch,
        "gradientAccumulationSteps": s.grad_accum,
    }
    reasons = (
        f"as written: {first.message.split(';')[0]}",
        f"chose {change.describe()}: predicted peak {_g(change.estimate.total)} of {_g(gpu_memory)}",
    )
    return AutoTuneResult(new_job, True, reasons, verdict_for(a, s, gpu_memory), chosen)
