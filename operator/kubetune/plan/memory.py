"""Peak GPU memory of one training process, term by term.

Pure arithmetic on an :class:`~kubetune.plan.arch.Architecture` and a :class:`Setup`.
The model follows what LLaMA-Factory 0.9.5 + transformers + DeepSpeed really
allocate (each rule names its source), and is checked two ways in CI:

* model states (weights, gradients, optimizer) against DeepSpeed's own
  ``estimate_zero2/3_model_states_mem_needs`` (tests/plan/test_deepspeed_agreement.py);
* the activations saved for backward against the bytes autograd really saves on
  tiny Qwen2 models (tests/plan/test_activations.py, saved-tensor hooks).

What only a GPU can check (allocator overhead, kernel workspaces, the CUDA
context) is estimated and measured by bench/gpu/bench.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .arch import ATTENTION_MODULES, FUSED, MLP_MODULES, OUTER_MODULES, Architecture
from .gpus import MiB

Method = Literal["full", "freeze", "lora", "qlora"]
Packing = Literal["none", "packing", "neat"]

CUDA_CONTEXT = 512 * MiB
"""CUDA context + cuBLAS/NCCL handles of one process on a Hopper GPU (outside torch's allocator)."""
NCCL_BUFFERS = 640 * MiB
"""NCCL communicator buffers when more than one process trains (DeepSpeed's reduce bucket and DDP's
gradient buckets are their own terms)."""


@dataclass(frozen=True)
class Setup:
    """Everything about a run that changes per-GPU memory."""

    method: Method = "lora"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    micro_batch: int = 1
    seq_len: int = 2048
    grad_accum: int = 1
    gradient_checkpointing: bool = True
    zero_stage: int = 0
    offload: Literal["none", "optimizer", "all"] = "none"
    world_size: int = 1
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("all",)
    freeze_layers: int = 2
    freeze_modules: tuple[str, ...] = ("all",)
    quant_bits: int | None = None
    double_quant: bool = True
    packing: Packing = "none"
    liger: bool = False
    attention: str = "auto"
    fsdp: bool = False
    """PyTorch FSDP (accelerate, full shard): estimated like ZeRO-3, computing in 16 bit without autocast."""
    optimizer: str = "adamw_torch_fused"
    """transformers' ``optim``: AdamW fused (the default with torch >= 2.8) or foreach (``adamw_torch``, a
    temporary per parameter during the step); bitsandbytes' 8-bit AdamW variants keep 2-byte moments."""

    rows_per_example: int = 1
    """Sequences per example in one forward: 2 for stages dpo and rm (chosen and rejected are
    concatenated into one batch of 2 x micro-batch rows), else 1."""
    reference_model: bool = False
    """A separate frozen model for DPO/KTO's reference log-probabilities: LLaMA-Factory loads a copy
    for full and freeze tuning, and the ``ref_model`` kubetune names for a LoRA/QLoRA policy on a
    fromJob adapter (base + that adapter); a LoRA policy otherwise disables its adapter instead
    (llamafactory/train/trainer_utils.py:116-148 ``create_ref_model`` @v0.9.5). ZeRO-3 shards it."""
    reference_quant_bits: int | None = None
    """bitsandbytes bits of that reference model (``ref_model_quantization_bit``,
    trainer_utils.py:128 @v0.9.5). Assumption (kubetune's renderer): it is set to the policy's
    ``quantization_bit`` whenever the policy is quantized and a reference model is loaded."""
    stage: str = "sft"
    """LLaMA-Factory's ``stage``: decides whether Liger's fused cross-entropy applies and how long the
    fp32 logits live (see :func:`logits_bytes_per_token_vocab`)."""
    reference_forward: bool = False
    """Each step runs a reference forward for the preference loss (dpo except orpo/simpo, kto), on the
    reference model or on the policy with its adapter disabled (dpo/trainer.py:254-274 @v0.9.5)."""

    @property
    def rows(self) -> int:
        """Sequences per forward pass per GPU."""
        return self.micro_batch * self.rows_per_example

    @property
    def moment_bytes(self) -> int:
        """Bytes of AdamW's two moments per trainable parameter."""
        return 2 if "8bit" in self.optimizer else 8

    @property
    def tokens(self) -> int:
        return self.rows * self.seq_len

    @property
    def fused_ce(self) -> bool:
        """Liger's fused linear cross-entropy really replaces the logits: only for stages pt and sft.
        LLaMA-Factory passes ``require_logits=(stage not in ["pt", "sft"])``
        (llamafactory/model/loader.py:142 @v0.9.5) and then applies Liger with
        ``fused_linear_cross_entropy=False`` (model/model_utils/liger_kernel.py:94-96 @v0.9.5):
        dpo, kto and rm materialise the full logits with or without Liger."""
        return self.liger and self.stage in ("pt", "sft")

    @property
    def deepspeed(self) -> bool:
        """Sharded training that keeps a 16-bit module and the fp32 master copy in the optimizer."""
        return self.zero_stage >= 1 or self.fsdp

    @property
    def elem(self) -> int:
        """Bytes of a compute-dtype element."""
        return 4 if self.precision == "fp32" else 2

    @property
    def autocast_master(self) -> bool:
        """Trainable weights kept in fp32 and cast to 16 bit by autocast.

        LLaMA-Factory upcasts trainable parameters to fp32 unless pure_bf16
        (model/adapter.py, ``cast_trainable_params_to_fp32``); DeepSpeed then
        turns the module back into 16 bit for ZeRO >= 1 and keeps the fp32
        master copy in the optimizer instead.
        """
        return self.elem == 2 and not self.deepspeed

    def with_(self, **changes: object) -> Setup:
        return replace(self, **changes)  # type: ignore[arg-type]


Phase = Literal["always", "backward", "step"]


@dataclass(frozen=True)
class Term:
    """One allocation.  ``phase`` says when it is alive: ``always``; ``backward`` (forward and backward
    of a micro-batch: activations, logits, buckets); ``step`` (only around ``optimizer.step()``).
    The two transient phases never coexist, so the peak is always + the larger of the two."""

    name: str
    bytes: int
    note: str = ""
    phase: Phase = "always"


@dataclass(frozen=True)
class Estimate:
    arch: Architecture
    setup: Setup
    terms: tuple[Term, ...]
    params: int
    trainable: int

    def phase_bytes(self, phase: Phase, *, allocator_only: bool = False) -> int:
        skip = _OUTSIDE_ALLOCATOR if allocator_only else ()
        return sum(t.bytes for t in self.terms if t.phase == phase and t.name not in skip)

    @property
    def peak_phase(self) -> Phase:
        """The transient phase that sets the peak: ``backward`` or ``step``."""
        return "step" if self.phase_bytes("step") > self.phase_bytes("backward") else "backward"

    @property
    def total(self) -> int:
        """Peak bytes per GPU: what is always there + the larger transient phase."""
        return self.phase_bytes("always") + max(self.phase_bytes("backward"), self.phase_bytes("step"))

    def term(self, name: str) -> int:
        return sum(t.bytes for t in self.terms if t.name == name)

    @property
    def model_states(self) -> int:
        """Weights + gradients + optimizer states: what DeepSpeed's estimators cover."""
        return sum(
            self.term(n)
            for n in (
                "weights",
                "gradients",
                "DDP gradient buckets",
                "optimizer states",
                "fp32 gradients at the step",
                "ZeRO-3 gathered layer",
            )
        )

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated should read: everything inside torch's allocator."""
        return self.phase_bytes("always", allocator_only=True) + max(
            self.phase_bytes("backward", allocator_only=True), self.phase_bytes("step", allocator_only=True)
        )


_OUTSIDE_ALLOCATOR = ("CUDA context", "allocator overhead", "communication buffers")


# --- which parameters train ------------------------------------------------------


LORA_TARGETS = ATTENTION_MODULES + MLP_MODULES
"""The decoder-layer linears in the planner's unfused spelling (its memory terms); what a model
lets spec.lora.targetModules name is Architecture.lora_modules, OUTER_MODULES or ``all``."""


def _lora_base(target: str) -> str:
    """The module a target names: PEFT matches a target by the module's full name or by a ``.``-suffix
    of it (peft/tuners/tuners_utils.py:1682-1686 @0.18.1, check_target_module_exists), so
    ``self_attn.q_proj`` and ``model.layers.0.self_attn.q_proj`` name q_proj layers (the planner counts
    every layer's: an over-estimate for a single layer's path)."""
    return target.rsplit(".", 1)[-1]


def unknown_lora_targets(arch: Architecture, targets: tuple[str, ...] | list[str]) -> list[str]:
    """The names in spec.lora.targetModules that name no module of ``arch`` LoRA can go on: its
    decoder layers' linear layers (Architecture.lora_modules) and OUTER_MODULES.
    ``all`` counts only alone: LLaMA-Factory expands it only when it is the only name
    (llamafactory/model/adapter.py:205 @0.9.5); beside others it goes to PEFT as a module name."""
    if list(targets) == ["all"]:
        return []
    known = (*arch.lora_modules, *OUTER_MODULES)
    return [t for t in targets if _lora_base(t) not in known]


def outer_lora_targets(targets: tuple[str, ...] | list[str]) -> list[str]:
    """The OUTER_MODULES (embed_tokens, lm_head) that spec.lora.targetModules names, in its order."""
    return [t for t in dict.fromkeys(_lora_base(t) for t in targets) if t in OUTER_MODULES]


def _lora_modules(arch: Architecture, targets: tuple[str, ...]) -> tuple[str, ...]:
    """The decoder-layer linears (in the planner's unfused spelling) that get LoRA."""
    names = LORA_TARGETS
    if list(targets) == ["all"]:
        return names
    unknown = unknown_lora_targets(arch, targets)
    if unknown:  # refused before: render/checks.py (validate, render, the operator)
        raise ValueError(
            f"spec.lora.targetModules: {', '.join(unknown)} are not linear layers of {arch.name} "
            f"({', '.join(arch.lora_modules)}, or all)"
        )
    out: list[str] = []
    for t in targets:
        out.extend(FUSED.get(_lora_base(t), (_lora_base(t),)))
    return tuple(n for n in names if n in out)


def _lora_outer_params(arch: Architecture, s: Setup) -> int:
    """LoRA on embed_tokens (lora_embedding_A r x vocab, B hidden x r) or lm_head (A r x hidden,
    B vocab x r): r * (vocab + hidden) each (peft/tuners/lora/layer.py:907-909 @0.18.1, the
    Embedding's A is r x num_embeddings and B embedding_dim x r). ``all`` never includes them:
    llamafactory/model/model_utils/misc.py:31,48 @0.9.5 (find_all_linear_modules) forbids lm_head
    and takes only Linear classes."""
    if s.method not in ("lora", "qlora") or list(s.lora_targets) == ["all"]:
        return 0
    outer = {_lora_base(t) for t in s.lora_targets} & set(OUTER_MODULES)
    return len(outer) * s.lora_rank * (arch.vocab + arch.hidden)


def _freeze_layer_ids(arch: Architecture, k: int) -> range:
    k = max(-arch.layers, min(arch.layers, k))
    return range(arch.layers - k, arch.layers) if k > 0 else range(0, -k)


def _freeze_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    if "all" in modules:
        return ATTENTION_MODULES + MLP_MODULES + ("norm",)
    out: list[str] = []
    for m in modules:
        if m in ("mlp", "feed_forward"):
            out.extend(MLP_MODULES)
        elif m in ("self_attn", "attention", "attn"):
            out.extend(ATTENTION_MODULES)
        elif "norm" in m:
            out.append("norm")
        else:
            out.extend(FUSED.get(m, (m,)))
    return tuple(out)


@dataclass
class _Layer:
    trainable: set[str] = field(default_factory=set)
    """Base linears (and 'norm') whose weights train in this layer."""
    lora: tuple[str, ...] = ()


def _layers(arch: Architecture, s: Setup) -> list[_Layer]:
    if s.method == "full":
        return [_Layer(set(ATTENTION_MODULES + MLP_MODULES + ("norm",))) for _ in range(arch.layers)]
    if s.method == "freeze":
        ids = set(_freeze_layer_ids(arch, s.freeze_layers))
        mods = set(_freeze_modules(s.freeze_modules))
        return [_Layer(mods if i in ids else set()) for i in range(arch.layers)]
    lora = _lora_modules(arch, s.lora_targets)
    return [_Layer(set(), lora) for _ in range(arch.layers)]


def trainable_params(arch: Architecture, s: Setup) -> int:
    shapes = arch.linear_shapes()
    if s.method == "full":
        return arch.total_params()
    n = 0
    for layer in _layers(arch, s):
        for name in layer.trainable:
            if name == "norm":
                n += arch.norms_per_layer * arch.hidden
            else:
                a, b = shapes[name]
                n += a * b + (b if arch.qkv_bias and name in ("q_proj", "k_proj", "v_proj") else 0)
        n += sum(s.lora_rank * (shapes[m][0] + shapes[m][1]) for m in layer.lora)
    return n + _lora_outer_params(arch, s)


# --- model states ----------------------------------------------------------------


def _quantized_bytes_per_param(bits: int, double_quant: bool, in_features: int) -> float:
    """bitsandbytes storage per weight of a Linear4bit / Linear8bitLt.

    4-bit: two weights per byte plus one absmax per block of 64 weights, an fp32
    (4 bytes) or, with double quantisation, a uint8 with one fp32 per 256 blocks
    (bitsandbytes/functional.py ``quantize_4bit``, blocksize 64; ``nested`` state).
    8-bit: one byte per weight plus one fp32 scale per output row (``SCB``).
    """
    if bits == 4:
        absmax = (1 + 4 / 256) / 64 if double_quant else 4 / 64
        return 0.5 + absmax
    return 1 + 4 / in_features


def _frozen_weights(arch: Architecture, s: Setup) -> tuple[float, str]:
    """Frozen weights: loaded in the compute dtype (or quantised) and never touched by the optimizer;
    (bytes per GPU, how they are held)."""
    F = arch.total_params() - trainable_params(arch, s)
    N, e, z = s.world_size, s.elem, (3 if s.fsdp else s.zero_stage)
    frozen = float(F * e)
    note = f"{F / 1e9:.2f}B frozen in {s.precision}"
    if s.method == "qlora" and s.quant_bits:
        linear = arch.layers * sum(a * b for a, b in arch.linear_shapes().values())
        per = _quantized_bytes_per_param(s.quant_bits, s.double_quant, arch.hidden)
        frozen = linear * per + (F - linear) * e
        note = (
            f"{linear / 1e9:.2f}B linear weights at {s.quant_bits}-bit ({per:.3f} B/param) + "
            f"embeddings/norms in {s.precision}"
        )
    if z == 3:
        frozen = 0 if s.offload == "all" else frozen / N
        note += f", ZeRO-3 sharded over {N}" + (" and offloaded" if s.offload == "all" else "")
    return frozen, note


def _reference_model_term(arch: Architecture, s: Setup) -> Term:
    """The frozen reference model of DPO/KTO (s.reference_model), quantised like LLaMA-Factory's
    ref_model_quantization_bit."""
    P, N, e, z = arch.total_params(), s.world_size, s.elem, (3 if s.fsdp else s.zero_stage)
    if s.reference_quant_bits:
        linear = arch.layers * sum(a * b for a, b in arch.linear_shapes().values())
        per = _quantized_bytes_per_param(s.reference_quant_bits, s.double_quant, arch.hidden)
        ref = int(linear * per + (P - linear) * e)
        rnote = (
            "frozen copy for the reference log-probabilities, linear weights at "
            f"{s.reference_quant_bits}-bit (ref_model_quantization_bit)"
        )
    else:
        ref = e * P
        rnote = f"frozen {e * 8}-bit copy for the reference log-probabilities"
    return Term(
        "reference model", ref // (N if z == 3 else 1), rnote + (f", ZeRO-3 sharded over {N}" if z == 3 else "")
    )


def model_state_terms(arch: Architecture, s: Setup) -> list[Term]:
    P = arch.total_params()
    T = trainable_params(arch, s)
    F = P - T
    N = s.world_size
    e = s.elem
    z = 3 if s.fsdp else s.zero_stage
    terms: list[Term] = []

    frozen, note = _frozen_weights(arch, s)

    # Trainable weights, gradients, optimizer (AdamW: two fp32 moments).
    # When gradients exist: torch creates them during backward and the Trainer frees them right after
    # each optimizer step (``model.zero_grad()``, transformers/trainer.py:1774 @v5.6.0;
    # ``set_to_none=True`` is the default, torch/nn/modules/module.py:2948 @2.13). With one micro-batch
    # per step they are therefore never alive with the logits at the start of backward: they belong to
    # the step phase. With gradient accumulation the earlier micro-batches' gradients stay through the
    # next forward and backward: then they are always there.
    grads_phase: Phase = "step" if s.grad_accum <= 1 else "always"
    extra: list[Term] = []
    if not s.deepspeed:
        tw, grads, opt = 4 * T if e == 2 else e * T, 4 * T, s.moment_bytes * T
        tnote, gnote, onote = (
            "fp32 (LLaMA-Factory upcasts trainable weights)",
            "fp32",
            "AdamW moments, " + ("8-bit" if s.moment_bytes == 2 else "fp32"),
        )
        gnote += (
            ", freed after each step"
            if grads_phase == "step"
            else f", kept across {s.grad_accum} accumulated micro-batches"
        )
        if N > 1:
            # DDP's flat gradient buckets live as long as the DDP module (not read: torch's C++ Reducer).
            extra.append(Term("DDP gradient buckets", 4 * T, "DDP's flat copy of the fp32 gradients"))
    else:
        tw = e * T if z < 3 else (0 if s.offload == "all" else e * T // N)
        tnote = f"{e * 8}-bit module copy" + (", sharded" if z == 3 else "")
        grads_phase = "always"  # ZeRO's 16-bit gradient partitions are filled during backward and kept to the step
        if z == 1:
            grads, gnote = e * T, "16-bit, full (ZeRO-1 shards optimizer only)"
        elif z == 2:
            grads, gnote = (0, "offloaded to CPU") if s.offload != "none" else (e * T // N, f"16-bit, sharded over {N}")
        else:
            # ZeRO-3's grad_partitions_flat_buffer: T / N elements in the model's dtype, allocated at init on
            # the GPU unless the optimizer is offloaded (deepspeed/runtime/zero/stage3.py:306, 620-622
            # @v0.18.4); the gathered full-size gradients are the "ZeRO-3 gathered layer" term.
            grads, gnote = (
                (0, "offloaded to CPU") if s.offload != "none" else (e * T // N, f"16-bit partition, sharded over {N}")
            )
        if s.offload != "none":
            opt, onote = 0, "offloaded to CPU"
        else:
            opt = (4 + s.moment_bytes) * T // N
            onote = f"fp32 master + {'8-bit ' if s.moment_bytes == 2 else ''}AdamW moments, sharded over {N}"
            # The fp32 gradient partition exists only inside the step: ZeRO-1/2 builds it from the 16-bit
            # partition and drops it after the update (deepspeed/runtime/zero/stage_1_and_2.py:2099-2119
            # @v0.18.4); ZeRO-3 per sub-group (stage3.py:1977-1987 _prepare_fp32_grad_for_sub_group,
            # 2027-2031 _release_sub_group @v0.18.4). DeepSpeed's estimators count it (the "4_grads_32bit"
            # of stage_1_and_2.py:2832), so it stays in model_states.
            extra.append(
                Term(
                    "fp32 gradients at the step",
                    4 * T // N,
                    f"fp32 gradient partition, sharded over {N}, only during optimizer.step()",
                    phase="step",
                )
            )
            # It is cast from ``self.flatten(averaged_gradients)``: torch's _flatten_dense_tensors concatenates
            # the per-parameter list into a new 16-bit tensor, alive with the fp32 result
            # (stage_1_and_2.py:2094-2100, stage3.py:1980-1981 @v0.18.4). Not a model state: a transient.
            extra.append(
                Term(
                    "16-bit gradient copy",
                    e * T // N,
                    "the flat 16-bit copy the fp32 gradients are cast from",
                    phase="step",
                )
            )
    frozen_note = f"{note}; " if F else ""
    terms.append(Term("weights", int(frozen + tw), f"{frozen_note}{T / 1e6:.1f}M trainable, {tnote}"))
    terms.append(Term("gradients", int(grads), gnote, phase=grads_phase))
    terms += [t for t in extra if t.phase == "always"]
    terms.append(Term("optimizer states", int(opt), onote))
    terms += [t for t in extra if t.phase != "always"]
    if s.reference_model:
        terms.append(_reference_model_term(arch, s))
    if z == 3:
        # deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs: 4 bytes x the largest layer.
        terms.append(
            Term(
                "ZeRO-3 gathered layer",
                4 * arch.largest_module_params(),
                "largest parameter gathered at once (param + grad, 16-bit)",
                phase="backward",
            )
        )
    return terms


# --- activations -------------------------------------------------------------------


@dataclass(frozen=True)
class Activations:
    """Bytes autograd keeps for backward at the end of the forward pass, and the transients around it."""

    layers: int
    """Saved by the decoder layers (or only their inputs, with gradient checkpointing)."""
    other: int
    """Rotary tables, final norm, lm_head input, labels."""
    weight_casts: int
    """16-bit copies of fp32 trainable weights that autocast caches for backward."""
    logits_saved: int
    """fp32 log-softmax of the logits, saved by the loss."""
    recompute: int
    """With gradient checkpointing: one layer's activations recomputed during backward."""
    mask: int
    """A materialised attention mask, shared by all layers."""

    @property
    def saved(self) -> int:
        return self.layers + self.other + self.weight_casts + self.logits_saved + self.mask


def _layer_saved(
    arch: Architecture, s: Setup, layer: _Layer, in_grad: bool, kv_repeated: bool
) -> tuple[int, int, bool]:
    """(bytes per token, bytes of weight casts, output requires grad) of one decoder layer.

    Follows transformers' Qwen2/Llama decoder layer op by op: what each autograd
    node saves (RMSNorm: the fp32 input and rsqrt, plus the normalised value when
    the norm weight trains; a linear: its input only when its weight trains;
    SDPA: q, k, v, output and the fp32 log-sum-exp; eager attention (``attention: disabled``)
    also the seq_len x seq_len probabilities per head; SwiGLU: gate, act, up).
    """
    h, I, e = arch.hidden, arch.intermediate, s.elem
    shapes = arch.linear_shapes()
    autocast = s.autocast_master and bool(layer.trainable)
    # residual stream dtype: fp32 only when the fp32 embedding feeds it (full fine-tuning under autocast)
    r = 4 if autocast and s.method == "full" else e
    lora_copy = e == 2 and not s.deepspeed  # fp32 adapters: PEFT casts the input to fp32, autocast back to 16 bit
    tr, lora = layer.trainable, set(layer.lora)
    norm_w = "norm" in tr
    b = 0
    casts = 0

    def norm(x_grad: bool, consumers: tuple[str, ...]) -> tuple[int, bool]:
        n = 0
        if x_grad:
            n += 4 * h + 4  # fp32 copy saved by pow/mul, rsqrt
        if norm_w:
            n += r * h  # normalised value, saved by weight * x
        trained = [c for c in consumers if c in tr]
        if trained:
            n += (len(trained) if autocast else 1) * e * h  # an fp32 norm output is cast once per linear
        adapters = [c for c in consumers if c in lora]
        if adapters:
            n += len(adapters) * e * h if lora_copy else (0 if trained else e * h)
        return n, x_grad or norm_w

    n1, out_grad = norm(in_grad, ("q_proj", "k_proj", "v_proj"))
    b += n1
    qkv_grad = out_grad or any(m in tr or m in lora for m in ("q_proj", "k_proj", "v_proj"))
    if qkv_grad and s.attention == "disabled":
        # eager attention (transformers' eager_attention_forward): q @ k^T saves each side for the
        # other's gradient; softmax saves its fp32 output, probs @ v saves the 16-bit probabilities
        # (for v's gradient) and the repeated v (for the probabilities'); one row of seq_len per head
        # and token.  The output is saved only by a trained o_proj.
        grads = {m: out_grad or m in tr or m in lora for m in ("q_proj", "k_proj", "v_proj")}
        scores_grad = grads["q_proj"] or grads["k_proj"]
        rows = arch.heads * s.seq_len
        b += e * arch.q_dim * (grads["k_proj"] + grads["q_proj"] + scores_grad + ("o_proj" in tr))
        b += 4 * rows if scores_grad else 0
        if grads["v_proj"]:
            b += e * rows if (e != 4 or not scores_grad) else 0  # in fp32 the copy is softmax's own output
    elif qkv_grad:
        kv = arch.q_dim if kv_repeated else arch.kv_dim
        b += e * (2 * arch.q_dim + 2 * kv) + 4 * arch.heads  # q, k, v, out, log-sum-exp (fp32)
    if "o_proj" in lora and lora_copy:
        b += e * arch.q_dim
    x2_grad = in_grad or qkv_grad or "o_proj" in tr or "o_proj" in lora
    n2, mlp_in_grad = norm(x2_grad, ("gate_proj", "up_proj"))
    b += n2
    if mlp_in_grad or any(m in tr or m in lora for m in ("gate_proj", "up_proj")):
        b += 3 * e * I  # gate (for the activation), activation, up
    if "down_proj" in tr or "down_proj" in lora:
        b += e * I  # product, input of down_proj (an fp32 copy for an fp32 adapter is not saved: autocast recasts)
    for m in lora:
        b += e * s.lora_rank  # lora_A output, saved by lora_B
        if lora_copy:
            casts += 2 * s.lora_rank * sum(shapes[m])
    if autocast:
        casts += 2 * sum(shapes[m][0] * shapes[m][1] for m in tr if m != "norm")
    return b, casts, True


def activations(arch: Architecture, s: Setup) -> Activations:
    t = s.tokens
    e = s.elem
    layers = _layers(arch, s)
    embed_trains = s.method == "full"
    mask_present = s.packing == "neat" and s.attention != "fa2"
    kv_repeated = mask_present or (s.packing == "none" and s.rows > 1 and s.attention != "fa2")
    # LLaMA-Factory calls enable_input_require_grads() with gradient checkpointing.
    grad = embed_trains or s.gradient_checkpointing
    per_layer: list[int] = []
    casts = 0
    for layer in layers:
        n, c, out = _layer_saved(arch, s, layer, grad, kv_repeated)
        grad = grad or bool(layer.trainable or layer.lora)
        per_layer.append(n * t)
        casts += c
    r_final = 4 if s.autocast_master and embed_trains else e
    head_casts = 0
    lm_trains = s.method == "full"
    other = (4 * arch.hidden + 4) * t  # final norm: fp32 input, rsqrt
    if s.method == "full":
        other += r_final * arch.hidden * t + e * arch.hidden * t  # normalised value, lm_head input
        if s.autocast_master:
            head_casts = 2 * arch.vocab * arch.hidden  # lm_head weight cast (outside any checkpointed layer)
    other += 8 * t + 4  # labels (int64) and the loss's total weight
    if embed_trains:
        other += 8 * t  # input ids, saved by the embedding
    if s.gradient_checkpointing:
        layer_bytes = sum(r_final * arch.hidden * t for _ in layers)  # each layer's input, kept by checkpoint()
        recompute = max(per_layer)
    else:
        layer_bytes = sum(per_layer)
        recompute = 0
        rope_rows = s.rows if s.packing == "neat" else 1  # neat packing passes per-row position ids
        other += 2 * rope_rows * s.seq_len * arch.head_dim * r_final  # cos and sin
    logits = 0 if s.fused_ce else 4 * t * arch.vocab
    mask = s.rows * s.seq_len * s.seq_len * e if mask_present else 0
    del lm_trains
    layer_casts = casts if not s.gradient_checkpointing else 0  # recast inside each recomputed layer
    return Activations(layer_bytes, other, layer_casts + head_casts, logits, recompute, mask)


ZERO_REDUCE_BUCKET_ELEMENTS = 500_000_000
"""``reduce_bucket_size`` kubetune renders for ZeRO-1/2 (render/configs.py ``_BUCKET``), DeepSpeed's
default too (deepspeed/runtime/zero/config.py:112 @v0.18.4)."""


def logits_bytes_per_token_vocab(s: Setup) -> int:
    """Peak bytes per token x vocabulary entry that the loss keeps (the ``logits`` term).

    Causal LM loss (pt, sft, rm): the 16-bit logits are freed after the loss; at the start of backward
    the fp32 log-softmax (saved), the gradient of the loss and the gradient of log-softmax's input
    are alive at once: 4 + 4 + 4 = 12.

    dpo with a reference (LLaMA-Factory's ``CustomDPOTrainer`` overrides TRL's concatenated forward,
    so TRL's own code path does not run): the policy's logits are cast to fp32 and kept
    (dpo/trainer.py:230 @v0.9.5) by ``get_batch_loss_metrics`` as ``chosen_logits``/``rejected_logits``
    views until the metrics at lines 311-312, i.e. through the reference forward at line 293 (4);
    ``get_batch_logps`` saves their fp32 log-softmax for backward (trainer_utils.py:612 @v0.9.5) (4).
    The reference forward then builds its own fp32 logits (4) and their log-softmax (4, under
    no_grad): 16. Backward afterwards needs 12 (above), so the peak is 16.
    orpo/simpo (no reference forward): 12.

    kto (kto/trainer.py @v0.9.5): the policy keeps its log-softmax (4) and the boolean-indexed
    chosen/rejected copies of its fp32 logits (lines 194-196, 4 together); the reference pass runs
    ``concatenated_forward`` under no_grad, whose target logits (4) stay alive through its KL
    forward (lines 187-189: fp32 logits 4 + log-softmax 4): 8 + 12 = 20.
    """
    if s.fused_ce:
        return 0
    if s.reference_forward and s.stage == "dpo":
        return 16
    if s.reference_forward and s.stage == "kto":
        return 20
    return 12


def estimate(arch: Architecture, s: Setup) -> Estimate:
    terms = model_state_terms(arch, s)
    act = activations(arch, s)
    t = s.tokens
    ckpt = "gradient checkpointing: layer inputs only" if s.gradient_checkpointing else "every layer's saved tensors"
    terms.append(
        Term(
            "activations",
            act.layers + act.other + act.weight_casts + act.mask + act.recompute,
            f"{s.rows} x {s.seq_len} tokens, {ckpt}" + (", + one layer recomputed" if act.recompute else ""),
            phase="backward",
        )
    )
    per = logits_bytes_per_token_vocab(s)
    if s.fused_ce:
        terms.append(
            Term(
                "logits",
                8 * t * arch.hidden,
                "Liger fused linear cross-entropy: chunked, never materialised",
                phase="backward",
            )
        )
    else:
        why = {
            12: "fp32 loss + its gradients",
            16: "policy fp32 logits + log-softmax alive through the reference forward (DPO)",
            20: "policy log-softmax + logits copies alive through the reference and KL forwards (KTO)",
        }[per]
        if s.liger:
            why += f"; Liger's fused cross-entropy is off for stage {s.stage}"
        terms.append(
            Term(
                "logits",
                per * t * arch.vocab,
                f"{t} tokens x {arch.vocab} vocabulary x {per} B: {why}",
                phase="backward",
            )
        )
    workspace = s.elem * t * (2 * arch.hidden + 3 * arch.intermediate)
    if s.method == "qlora":
        a, b = max(arch.linear_shapes().values(), key=lambda x: x[0] * x[1])
        workspace += 2 * a * b
    terms.append(
        Term(
            "backward workspace",
            workspace,
            "gradients of one layer's activations in flight"
            + (", one dequantised weight" if s.method == "qlora" else ""),
            phase="backward",
        )
    )
    z = 3 if s.fsdp else s.zero_stage
    if z in (1, 2):
        # ZeRO-1/2 with contiguous_gradients (as rendered) allocate the reduce bucket in the dtype of
        # the 16-bit parameters (stage_1_and_2.py:334 self.dtype) when the first gradient hook fires
        # (process_gradients -> setup_buckets, lines 1547-1548, 2230-2251 @v0.18.4) and release it at the
        # end of backward (_release_ipg_buffers, lines 755-761, 883): one buffer of
        # reduce_bucket_size elements per communication dtype, two with overlap_comm (rendered false).
        bucket = ZERO_REDUCE_BUCKET_ELEMENTS * s.elem
        terms.append(
            Term(
                "ZeRO reduce bucket",
                bucket,
                f"{ZERO_REDUCE_BUCKET_ELEMENTS:.0e} elements x {s.elem} B (reduce_bucket_size), during backward",
                phase="backward",
            )
        )
    if not s.deepspeed and s.optimizer == "adamw_torch":
        T = trainable_params(arch, s)
        # foreach AdamW: a temporary per parameter group (sqrt of the second moment); fused AdamW has none
        terms.append(
            Term("optimizer step temporaries", 4 * T, "foreach AdamW temporaries (the step only)", phase="step")
        )
    if s.world_size > 1:
        terms.append(Term("communication buffers", NCCL_BUFFERS, "NCCL communicators"))
    dyn = max(sum(x.bytes for x in terms if x.phase == p) for p in ("backward", "step"))
    terms.append(
        Term(
            "allocator overhead",
            int(0.08 * dyn) + 256 * MiB,
            "caching-allocator fragmentation (~8% of the larger transient phase + 256 MiB)",
        )
    )
    terms.append(Term("CUDA context", CUDA_CONTEXT, "driver context, cuBLAS workspace"))
    return Estimate(arch, s, tuple(terms), arch.total_params(), trainable_params(arch, s))
