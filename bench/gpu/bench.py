#!/usr/bin/env python3
"""kubetune GPU benchmark: training throughput of the tutorial's settings against kubetune's,
and the memory planner's predictions against measured peaks.  One H100/H200, no network.

    python bench/gpu/bench.py --wheels /path/to/wheels --out bench-gpu.json
    python bench/gpu/bench.py --tiny --device cpu --out /tmp/b.json      # what CI runs

Needs PyTorch (+ CUDA) and the wheels folder prepared as bench/gpu/README.md says
(transformers, peft, bitsandbytes, pydantic and their small dependencies); it
installs them with pip --no-index into a private folder, never touching the
machine's environment.  The model is a random-init Qwen2.5-1.5B (architecture
only: no weights), the data a synthetic multi-turn conversation set with a
realistic length spread, tokenised by a tiny BPE tokenizer trained on it here.

(a) throughput: fixed optimizer steps per configuration; non-padding tokens/s,
    MFU against --peak-tflops (790 bf16 dense by default), peak memory, loss.
(b) planner: kubetune.plan's predicted peak vs torch.cuda.max_memory_allocated
    and max_memory_reserved, for full / LoRA / QLoRA at ZeRO 0, with and
    without gradient checkpointing, and a LoRA DPO step as LLaMA-Factory runs it
    (policy fp32 logits held through the reference forward); plus the device's
    total memory as torch reports it against kubetune.plan's GPU table.
Prints one table and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
QWEN25_15B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "tie_word_embeddings": True,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
}
ALL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- setup ----------------------------------------------------------------------------------


def install_wheels(folder: Path | None) -> None:
    """pip install --no-index --no-deps every wheel of ``folder`` into a private target on sys.path."""
    if folder is None:
        return
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--wheels {folder}: no .whl files (see bench/gpu/README.md)")
    target = Path(tempfile.gettempdir()) / "kubetune-bench-site"
    marker = target / ".installed"
    if not marker.exists() or marker.read_text() != "\n".join(wheels):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--upgrade",
                "--target",
                str(target),
                *wheels,
            ],
            check=True,
        )
        marker.write_text("\n".join(wheels))
    sys.path.insert(0, str(target))


@dataclass
class Config:
    name: str
    method: str  # full | lora | qlora
    precision: str  # bf16 | fp16
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    lora_targets: list[str] = field(default_factory=lambda: ALL_LINEARS)
    lora_rank: int = 8
    packing: bool = False
    fused_adamw: bool = False
    lr: float = 1e-5
    note: str = ""


def throughput_configs(tiny: bool) -> list[Config]:
    """The tutorial's commands (examples/seed/) on one GPU, kubetune's defaults, and candidates."""
    return [
        Config("tutorial-full", "full", "fp16", 1, 16, True, lr=1e-5, note="seed full-single-gpu: batch 1 x 16, fp16"),
        Config(
            "tutorial-lora",
            "lora",
            "fp16",
            8,
            2,
            True,
            ["q_proj", "v_proj"],
            lr=1e-4,
            note="seed lora-deepspeed per GPU: batch 8 x 2, q_proj/v_proj, fp16",
        ),
        # kubetune renders no `optim`: transformers 5.6 with torch >= 2.8 (the trainer image) then uses fused AdamW.
        Config(
            "kubetune-full",
            "full",
            "bf16",
            1,
            8,
            True,
            fused_adamw=True,
            lr=1e-5,
            note="defaults: batch 1 x 8, bf16, checkpointing, sdpa, no packing, fused AdamW (transformers' default)",
        ),
        Config(
            "kubetune-lora",
            "lora",
            "bf16",
            1,
            8,
            True,
            fused_adamw=True,
            lr=1e-4,
            note="defaults: batch 1 x 8, all linears r8, bf16, checkpointing, fused AdamW",
        ),
        Config(
            "candidate-full",
            "full",
            "bf16",
            4,
            2,
            False,
            packing=True,
            fused_adamw=True,
            lr=1e-5,
            note="packing, no checkpointing, fused AdamW",
        ),
        Config(
            "candidate-lora",
            "lora",
            "bf16",
            4,
            2,
            False,
            packing=True,
            fused_adamw=True,
            lr=1e-4,
            note="packing, no checkpointing, fused AdamW",
        ),
    ]


# --- data -------------------------------------------------------------------------------------


def synthetic_conversations(n: int, seed: int, scale: float) -> list[list[tuple[str, str]]]:
    """Multi-turn chats with a heavy-tailed length spread (lognormal turn lengths, 1-4 turns)."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "po", "qua", "rel", "dan", "fy", "gor", "ish"]
    words = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(3000)})
    weights = [1 / (i + 1) for i in range(len(words))]  # Zipf
    chats = []
    for _ in range(n):
        turns = []
        topic = rng.sample(words[:400], 5)
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
            u = max(3, int(rng.lognormvariate(math.log(40 * scale), 0.9)))
            a = max(5, int(rng.lognormvariate(math.log(150 * scale), 0.8)))
            user = " ".join(rng.choices(words, weights, k=u) + topic[:2])
            # answers repeat the topic: something a model can learn
            answer = " ".join(w if rng.random() > 0.3 else rng.choice(topic) for w in rng.choices(words, weights, k=a))
            turns.append((user, answer))
        chats.append(turns)
    return chats


def tokenize(
    chats: list[list[tuple[str, str]]], vocab: int, cutoff: int
) -> tuple[Any, list[tuple[list[int], list[int]]]]:
    """A tiny byte-level BPE trained on the chats, a ChatML template, labels on answers only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator((u + " " + a for c in chats for u, a in c), trainer=trainer)
    start, end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    examples = []
    for chat in chats:
        ids: list[int] = []
        labels: list[int] = []
        for user, answer in chat:
            p = [start] + tok.encode("user\n" + user).ids + [end, start] + tok.encode("assistant\n").ids
            r = tok.encode(answer).ids + [end]
            ids += p + r
            labels += [-100] * len(p) + r
        examples.append((ids[:cutoff], labels[:cutoff]))
    return tok, examples


def batches(
    examples: list[tuple[list[int], list[int]]], micro_batch: int, cutoff: int, packing: bool, seed: int
) -> list[dict[str, list[list[int]]]]:
    """LLaMA-Factory's two layouts: padded batches (pad to the longest, multiple of 8) or
    packed rows of cutoff tokens."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    rows: list[tuple[list[int], list[int]]] = []
    if packing:  # greedy first-fit packing, like LLaMA-Factory's knapsack
        bins: list[tuple[list[int], list[int]]] = []
        for i in order:
            ids, lab = examples[i]
            for b in bins:
                if len(b[0]) + len(ids) <= cutoff:
                    b[0].extend(ids)
                    b[1].extend(lab)
                    break
            else:
                bins.append((list(ids), list(lab)))
        rows = bins
    else:
        rows = [examples[i] for i in order]
    out = []
    for k in range(0, len(rows) - micro_batch + 1, micro_batch):
        group = rows[k : k + micro_batch]
        width = max(len(r[0]) for r in group)
        width = min(cutoff, (width + 7) // 8 * 8)
        out.append(
            {
                "input_ids": [r[0] + [0] * (width - len(r[0])) for r in group],
                "labels": [r[1] + [-100] * (width - len(r[1])) for r in group],
                "attention_mask": [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in group],
            }
        )
    return out


# --- models -------------------------------------------------------------------------------------


def build_model(arch: dict[str, Any], cfg: Config, device: str) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    config = Qwen2Config(**arch, attn_implementation="sdpa", use_cache=False)
    torch.manual_seed(0)
    build_dtype = torch.float32 if cfg.method == "full" else dtype
    build_device = "cpu" if cfg.method == "qlora" else device  # quantise from CPU: no full bf16 copy on the GPU
    previous = torch.get_default_dtype()
    torch.set_default_dtype(build_dtype)
    try:
        with torch.device(build_device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    if cfg.method == "full":
        model.float()  # LLaMA-Factory keeps trainable weights in fp32 (autocast computes in 16 bit)
    else:
        model.to(dtype)
        model.requires_grad_(False)
        if cfg.method == "qlora":
            model = quantize_4bit(model, dtype, device).to(device)
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, target_modules=cfg.lora_targets, lora_dropout=0.0
            ),
        )
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    model.train()
    return model


def quantize_4bit(model: Any, dtype: Any, device: str) -> Any:
    """NF4 + double quantisation of every decoder linear, as LLaMA-Factory's QLoRA loads it."""
    import bitsandbytes as bnb
    import torch

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(
                    lin.in_features,
                    lin.out_features,
                    bias=lin.bias is not None,
                    compute_dtype=dtype,
                    quant_type="nf4",
                    compress_statistics=True,
                    device="cpu",
                )
                q.weight = bnb.nn.Params4bit(
                    lin.weight.data.to("cpu"), requires_grad=False, quant_type="nf4", compress_statistics=True
                )
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(lin.bias.data.to("cpu"), requires_grad=False)
                setattr(parent, name, q.to(device))
                del lin
    gc.collect()
    return model


def count_flops_per_token(arch: dict[str, Any], seq: float, method: str) -> float:
    """Model FLOPs per trained token (no recomputation): 2N forward, 2N input-gradients, 2N weight-gradients when all
    weights train; plus attention."""
    h, i, L, v = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"], arch["vocab_size"]
    d = h // arch["num_attention_heads"]
    kv = arch["num_key_value_heads"] * d
    n_matmul = L * (2 * h * h + 2 * h * kv + 3 * h * i) + h * v
    attn = L * 2 * 2 * seq * h / 2  # QK^T and AV, causal half, forward
    fwd = 2 * n_matmul + attn
    return fwd * (3 if method == "full" else 2)


# --- runs -----------------------------------------------------------------------------------------


def run_training(
    arch: dict[str, Any],
    cfg: Config,
    data: list[dict[str, Any]],
    steps: int,
    warmup: int,
    device: str,
    peak_tflops: float,
) -> dict[str, Any]:
    import torch

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(arch, cfg, device)
    if cuda:  # the peak of training, with the weights resident; not the transient of building them
        torch.cuda.reset_peak_memory_stats()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, fused=cfg.fused_adamw and cuda)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=cfg.precision == "fp16")
    it = iter(data * (1 + (steps + warmup) * cfg.grad_accum // max(1, len(data))))
    tokens = 0
    seq_sum = 0.0
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            t0, tokens, seq_sum = time.perf_counter(), 0, 0.0
        step_losses = []
        for _ in range(cfg.grad_accum):
            b = next(it)
            batch = {k: torch.tensor(v, device=device) for k, v in b.items()}
            with torch.autocast(device.split(":")[0], dtype=dtype):
                out = model(**batch)
            scaler.scale(out.loss / cfg.grad_accum).backward()
            n = int(batch["attention_mask"].sum())
            tokens += n
            seq_sum += n * batch["input_ids"].shape[1]
            step_losses.append(float(out.loss.detach()))
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(sum(step_losses) / len(step_losses))
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    seq = seq_sum / max(1, tokens)
    tps = tokens / elapsed if elapsed > 0 else 0.0
    result = {
        **asdict(cfg),
        "steps": steps,
        "non_padding_tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tps, 1),
        "mfu": round(tps * count_flops_per_token(arch, seq, cfg.method) / (peak_tflops * 1e12), 4),
        "first_loss": round(losses[0], 4),
        "final_loss": round(losses[-1], 4),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
    }
    del model, opt, params
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def predicted_total(arch: dict[str, Any], cfg: Config, seq: int) -> int:
    sys.path.insert(0, str(REPO / "operator"))
    from kubetune.plan import Setup, estimate, from_config

    setup = Setup(
        method=cfg.method,
        precision=cfg.precision,
        micro_batch=cfg.micro_batch,
        seq_len=seq,
        gradient_checkpointing=cfg.gradient_checkpointing,
        lora_targets=tuple(cfg.lora_targets),
        lora_rank=cfg.lora_rank,
        quant_bits=4 if cfg.method == "qlora" else None,
        packing="packing" if cfg.packing else "none",
        optimizer="adamw_torch_fused" if cfg.fused_adamw else "adamw_torch",
    )
    return estimate(from_config({"model_type": "qwen2", **arch}, "bench", "bench"), setup).total


def dpo_loss(model: Any, ids: Any) -> Any:
    """One sigmoid-DPO loss as LLaMA-Factory 0.9.5 computes it for a LoRA policy (train/dpo/trainer.py
    concatenated_forward:230, get_batch_loss_metrics:286-293, compute_reference_log_probs:262-270;
    train/trainer_utils.py get_batch_logps:608-612): ``ids`` holds the chosen rows then the rejected
    rows; the policy's fp32 logits stay referenced through the reference forward (adapter disabled)."""
    import torch
    import torch.nn.functional as F

    def logps(m: Any) -> tuple[Any, Any]:
        logits = m(input_ids=ids, use_cache=False).logits.to(torch.float32)
        labels = ids[:, 1:].clone()
        per_token = torch.gather(logits[:, :-1, :].log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
        return logits, per_token.sum(-1)

    policy_logits, policy = logps(model)
    with torch.no_grad(), model.disable_adapter():
        _, reference = logps(model)
    half = ids.shape[0] // 2
    ratio = (policy[:half] - reference[:half]) - (policy[half:] - reference[half:])
    loss = -F.logsigmoid(0.1 * ratio).mean()
    del policy_logits  # LLaMA-Factory reads it for the metrics after the reference forward
    return loss


def run_planner_case(
    arch: dict[str, Any], method: str, gc_on: bool, micro_batch: int, seq: int, device: str, *, dpo: bool = False
) -> dict[str, Any]:
    """Two optimizer steps on full rows (micro_batch x seq, no padding); measured peak vs the planner.
    ``dpo``: micro_batch chosen + micro_batch rejected rows through :func:`dpo_loss`."""
    import torch

    sys.path.insert(0, str(REPO / "operator"))
    from kubetune.plan import Setup, estimate, from_config

    cfg = Config(f"{'dpo-' if dpo else ''}{method}-{'gc' if gc_on else 'nogc'}", method, "bf16", micro_batch, 1, gc_on)
    setup = Setup(
        method=method,
        precision="bf16",
        micro_batch=micro_batch,
        seq_len=seq,
        gradient_checkpointing=gc_on,
        quant_bits=4 if method == "qlora" else None,
        packing="packing",
        lora_targets=("all",),
        optimizer="adamw_torch",  # torch.optim.AdamW below: foreach on CUDA
        stage="dpo" if dpo else "sft",
        rows_per_example=2 if dpo else 1,
        reference_forward=dpo,
    )
    est = estimate(from_config({"model_type": "qwen2", **arch}, "Qwen2.5-1.5B (random init)", "bench"), setup)
    row: dict[str, Any] = {
        "case": cfg.name,
        "method": method,
        "stage": setup.stage,
        "peak_phase": est.peak_phase,
        "gradient_checkpointing": gc_on,
        "micro_batch": micro_batch,
        "seq_len": seq,
        "predicted_allocated_gib": round(est.allocated / 2**30, 2),
        "predicted_total_gib": round(est.total / 2**30, 2),
        "terms": {t.name: round(t.bytes / 2**30, 3) for t in est.terms},
    }
    cuda = device.startswith("cuda")
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = build_model(arch, cfg, device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, arch["vocab_size"], (setup.rows, seq), generator=g).to(device)
        for _ in range(2):
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                loss = dpo_loss(model, ids) if dpo else model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            alloc, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
            row.update(
                measured_allocated_gib=round(alloc / 2**30, 2),
                measured_reserved_gib=round(reserved / 2**30, 2),
                allocated_error=round(est.allocated / alloc - 1, 4),
                reserved_error=round((est.total - (512 << 20)) / reserved - 1, 4),
            )
        else:
            row.update(measured_allocated_gib=None, measured_reserved_gib=None, loss=round(float(loss.detach()), 4))
        del model, opt, params
    except Exception as exc:  # noqa: BLE001 - a case that cannot run here is reported, not fatal
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, help="folder of wheels prepared as bench/gpu/README.md says")
    ap.add_argument("--out", type=Path, default=Path("bench-gpu.json"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model and data set (CI on CPU)")
    ap.add_argument("--steps", type=int, help="timed optimizer steps per configuration (default 8; tiny 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 2; tiny 1)")
    ap.add_argument("--cutoff", type=int, help="cutoff length (default 2048; tiny 128)")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak used for MFU")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip remaining runs after this many seconds")
    ap.add_argument("--only", choices=["throughput", "planner"], help="run one part")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    install_wheels(args.wheels)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    tiny = args.tiny
    arch = TINY if tiny else QWEN25_15B
    steps = args.steps or (1 if tiny else 8)
    warmup = args.warmup if args.warmup is not None else (0 if tiny else 2)
    cutoff = args.cutoff or (256 if tiny else 2048)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --tiny for the CI configuration")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "device_total_mib": torch.cuda.get_device_properties(device).total_memory // 2**20
        if device.startswith("cuda")
        else None,
        "planner_table_mib": planner_table_mib(torch.cuda.get_device_name()) if device.startswith("cuda") else None,
        "torch": torch.__version__,
        "model": "tiny qwen2" if tiny else "Qwen2.5-1.5B architecture, random init",
        "cutoff": cutoff,
        "steps": steps,
        "peak_tflops": args.peak_tflops,
        "throughput": [],
        "planner": [],
        "skipped": [],
    }
    chats = synthetic_conversations(64 if tiny else 1500, seed=0, scale=0.1 if tiny else 1.0)
    _, examples = tokenize(chats, vocab=arch["vocab_size"] if tiny else 8192, cutoff=cutoff)
    lengths = sorted(len(e[0]) for e in examples)
    report["data"] = {
        "conversations": len(examples),
        "median_tokens": lengths[len(lengths) // 2],
        "p90_tokens": lengths[int(0.9 * len(lengths))],
        "max_tokens": lengths[-1],
    }
    if args.only in (None, "throughput"):
        for cfg in throughput_configs(tiny):
            if tiny:  # the same code paths, a fraction of the work
                cfg.micro_batch, cfg.grad_accum = min(cfg.micro_batch, 2), min(cfg.grad_accum, 2)
            if time.perf_counter() - started > args.budget_s:
                report["skipped"].append(f"{cfg.name} (time budget)")
                continue
            predicted = predicted_total(arch, cfg, cutoff)
            if device.startswith("cuda") and predicted > torch.cuda.get_device_properties(device).total_memory:
                report["skipped"].append(f"{cfg.name} (planner: {predicted / 2**30:.1f} GiB does not fit)")
                continue
            data = batches(examples, cfg.micro_batch, cutoff, cfg.packing, seed=1)
            row = run_training(arch, cfg, data, steps, warmup, device, args.peak_tflops)
            row["predicted_total_gib"] = round(predicted / 2**30, 2)
            report["throughput"].append(row)
    if args.only in (None, "planner"):
        for method in ("full", "lora", "qlora"):
            for gc_on in (True, False):
                if time.perf_counter() - started > args.budget_s:
                    report["skipped"].append(f"{method}-{'gc' if gc_on else 'nogc'} (time budget)")
                    continue
                mb = 1 if method == "full" else 4
                report["planner"].append(run_planner_case(arch, method, gc_on, mb if not tiny else 2, cutoff, device))
        # issue 21: a LoRA DPO step (the planner counts 16 B per token x vocabulary of logits there)
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append("dpo-lora-gc (time budget)")
        else:
            report["planner"].append(run_planner_case(arch, "lora", True, 1, cutoff, device, dpo=True))
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"wrote {args.out}")
    return 0


def planner_table_mib(device_name: str) -> int | None:
    """kubetune.plan's usable-memory figure for this GPU (plan/gpus.py), to compare with torch's total_memory."""
    sys.path.insert(0, str(REPO / "operator"))
    from kubetune.plan import find_gpu

    for key in (device_name, device_name.replace(" ", "-"), device_name.replace("NVIDIA ", "")):
        try:
            return find_gpu(key).memory_mib
        except KeyError:
            continue
    return None


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"kubetune GPU bench on {r['device']} (torch {r['torch']}), {r['model']}, cutoff {r['cutoff']}, "
        f"{r['steps']} steps; data median {r['data']['median_tokens']} / p90 {r['data']['p90_tokens']} tokens"
    ]
    if r.get("device_total_mib") is not None:
        lines.append(
            f"torch total_memory {r['device_total_mib']} MiB; kubetune.plan's table {r.get('planner_table_mib')} MiB"
        )
    lines.append(f"{'config':16s} {'tok/s':>10s} {'MFU':>6s} {'peak GiB':>9s} {'loss0':>7s} {'loss':>7s}  note")
    for t in r["throughput"]:
        peak = f"{t['peak_allocated_gib']:.2f}" if t["peak_allocated_gib"] is not None else "-"
        lines.append(
            f"{t['name']:16s} {t['tokens_per_s']:10.0f} {100 * t['mfu']:5.1f}% {peak:>9s} {t['first_loss']:7.3f} "
            f"{t['final_loss']:7.3f}  {t['note']}"
        )
    lines.append(
        f"{'planner case':16s} {'pred alloc':>10s} {'meas alloc':>10s} {'err':>7s} "
        f"{'pred total':>10s} {'meas resv':>10s}"
    )
    for p in r["planner"]:
        ma = p.get("measured_allocated_gib")
        err = f"{100 * p['allocated_error']:+.1f}%" if "allocated_error" in p else "-"
        lines.append(
            f"{p['case']:16s} {p['predicted_allocated_gib']:10.2f} {ma if ma is not None else '-':>10} {err:>7s} "
            f"{p['predicted_total_gib']:10.2f} {p.get('measured_reserved_gib') or '-':>10}"
            + (f"  {p['error']}" if "error" in p else "")
        )
    if r["skipped"]:
        lines.append(f"skipped: {', '.join(r['skipped'])}")
    lines.append(f"total {r['seconds']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
