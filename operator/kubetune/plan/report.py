"""The text `kubetune plan` prints: a table of terms, the verdict and the cheapest fix."""

from __future__ import annotations

from typing import Any

from .feasibility import Verdict, cheapest_fit
from .gpus import GiB
from .memory import Estimate, Phase


def _gib(n: int) -> str:
    return f"{n / GiB:8.2f}"


def table(est: Estimate) -> str:
    s, a = est.setup, est.arch
    head = (
        f"model {a.name} ({est.params / 1e9:.2f}B params, {a.layers} layers, hidden {a.hidden}, "
        f"vocab {a.vocab}; from {a.source})\n"
        f"method {s.method}"
        + (f" {s.quant_bits}-bit" if s.quant_bits else "")
        + f", {s.precision}, {est.trainable / 1e6:.1f}M trainable; ZeRO {s.zero_stage}, offload {s.offload}, "
        f"{s.world_size} GPU(s); micro-batch {s.micro_batch}"
        + (f" (x{s.rows_per_example} rows: chosen and rejected)" if s.rows_per_example > 1 else "")
        + f" x {s.seq_len} tokens x accumulation {s.grad_accum}; gradient checkpointing "
        f"{'on' if s.gradient_checkpointing else 'off'}; packing {s.packing}; liger {'on' if s.liger else 'off'}; "
        f"attention {s.attention}; optimizer {s.optimizer}\n"
    )
    width = max(len(t.name) for t in est.terms)
    rows = [f"  {'term'.ljust(width)}  {'GiB':>8}  {'when':8}  note"]
    rows += [f"  {t.name.ljust(width)}  {_gib(t.bytes)}  {t.phase:8}  {t.note}" for t in est.terms]
    other: Phase = "step" if est.peak_phase == "backward" else "backward"
    rows.append(
        f"  {'total per GPU'.ljust(width)}  {_gib(est.total)}  always + {est.peak_phase} "
        f"({est.phase_bytes(est.peak_phase) / GiB:.2f} GiB; the {other} terms, "
        f"{est.phase_bytes(other) / GiB:.2f} GiB, are never alive with them)"
    )
    return head + "\n".join(rows) + "\n"


def render_verdict(v: Verdict) -> str:
    if v.estimate is None:
        return f"{v.status}: {v.message}\n"
    out = table(v.estimate)
    if v.gpu_memory is None:
        return out + "verdict: GPU memory unknown (give --gpu NAME or --gpu-memory GiB)\n"
    margin = v.margin or 0
    if v.fits:
        out += (
            f"verdict: FITS in {v.gpu_memory / GiB:.1f} GiB with {margin / GiB:.2f} GiB "
            f"({100 * margin / v.gpu_memory:.0f}%) to spare\n"
        )
        return out
    out += f"verdict: DOES NOT FIT in {v.gpu_memory / GiB:.1f} GiB: {-margin / GiB:.2f} GiB over\n"
    if v.suggestion is not None:
        out += f"cheapest change that fits: {v.suggestion.describe()} -> {v.suggestion.estimate.total / GiB:.2f} GiB\n"
    else:
        out += "no single change found that fits: more GPUs with zeroStage 3, or a GPU with more memory\n"
    return out


def verdict_json(v: Verdict) -> dict[str, Any]:
    est = v.estimate
    return {
        "status": v.status,
        "reason": v.reason,
        "message": v.message,
        "gpuMemoryBytes": v.gpu_memory,
        "totalBytes": est.total if est else None,
        "peakPhase": est.peak_phase if est else None,
        "terms": [{"name": t.name, "bytes": t.bytes, "phase": t.phase, "note": t.note} for t in est.terms]
        if est
        else [],
        "suggestion": {"changes": list(v.suggestion.steps), "totalBytes": v.suggestion.estimate.total}
        if v.suggestion
        else None,
    }


__all__ = ["cheapest_fit", "render_verdict", "table", "verdict_json"]
