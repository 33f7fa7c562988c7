"""``spec.serve``: the serving objects of a Succeeded FineTuneJob (pure: no I/O, no cluster, no clock).

What is served (the same choice as ``kubetune serve --local``; :func:`.base.source_of`):

* method full/freeze: the model the job wrote, ``<outputs>/<namespace>/<name>``;
* lora/qlora with ``export.enabled``: the merged model, ``.../merged``;
* lora/qlora without export: the base model plus the adapter (vLLM
  ``--enable-lora --lora-modules <name>=<adapter dir>``, KServe
  ``spec.model.lora.adapters``, KAITO ``inference.adapters``); clients ask for
  the served model name and get base + adapter.

Engines are plugins (docs/adding-a-serving-engine.md), registered in ``ENGINES`` of
:mod:`kubetune.cluster.serving`, which owns what kubetune knows about their objects in the cluster
(the kinds each writes and watches, with their plurals; which engine serves a job; how its status
reads; its RBAC rules and its install hint).  Here each has its renderer, one module each behind
:class:`.base.EngineRenderer`, in ``RENDERERS`` below under the engine's name:

* :mod:`.vllm` (``engine: vllm``): a Deployment running vLLM's OpenAI server and a ClusterIP Service;
* :mod:`.inferenceservice` (``engine: kserve``, one model): an InferenceService (Hugging Face runtime);
* :mod:`.llminferenceservice` (``engine: kserve``, an adapter): an LLMInferenceService with
  ``model.lora.adapters`` (:mod:`.kserve` says which of the two; both share it);
* :mod:`.kaito` (``engine: kaito``): a KAITO Workspace, after a Job copied the adapter to a claim of its own.

How the operator uses this (``kubetune.controller.decide``, ``_serve``): once
the FineTuneJob has Succeeded (and, with ``when: evaluationImproves``, once
:func:`evaluation_verdict` says the trained model beats the base), it
server-side applies every object of ``render_serving(job, options).objects``
(each carries the FineTuneJob as controller ownerReference when
``job.metadata.uid`` is set), watches them (``controller/cache.py``: one informer per watched kind
of ``kubetune.cluster.serving.served_kinds()``), and reports ``kubetune.cluster.serving.observed_state``
in ``status.serving`` and the ``Serving`` condition.  ``kubetune render`` prints the same objects
after the training objects.

``render_serving`` raises ``ValueError`` only when ``spec.serve`` is unset;
every other problem is refused earlier by the CRD's rules and
``validate_object``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.api import FineTuneJob
from kubetune.cluster.serving import ENGINES, adapter_served, engine_for

from ...plan.arch import UnknownModelError, resolve
from ...plan.memory import outer_lora_targets
from ..types import RenderOptions
from .base import (
    CHAT_TEMPLATE_FILE,
    LORA_RANKS,
    VLLM_MAX_LORA_RANK,
    EngineRenderer,
    Serving,
    child_name,
    max_lora_rank,
    source_of,
)
from .inferenceservice import InferenceServiceRenderer
from .kaito import KaitoRenderer
from .llminferenceservice import LLMInferenceServiceRenderer
from .vllm import VLLM_IMAGE, VLLM_PORT, VllmRenderer

RENDERERS: dict[str, EngineRenderer] = {
    r.name: r for r in (VllmRenderer(), InferenceServiceRenderer(), LLMInferenceServiceRenderer(), KaitoRenderer())
}
"""The renderer of every engine of ``kubetune.cluster.serving.ENGINES``, by the engine's name."""

if RENDERERS.keys() != ENGINES.keys():
    raise ImportError(
        f"every serving engine has one renderer: registered {sorted(ENGINES)}, rendered {sorted(RENDERERS)}"
    )


def serving_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    """What spec.serve would break at serving time, as (field, message) pairs (``checks`` reports them):
    what every engine refuses (each runs vLLM), then the engine's own checks."""
    serve, spec = job.spec.serve, job.spec
    if serve is None:
        return []
    problems: list[tuple[str, str]] = []
    adapter = adapter_served(job)
    if adapter and spec.model.from_job is not None:
        problems.append(
            (
                "spec.serve",
                "serving a LoRA adapter trained on spec.model.fromJob needs that job's model as the base, "
                "which is only known once it ran: set spec.export.enabled to serve the merged model",
            )
        )
    if adapter and spec.lora is not None and spec.lora.rank > VLLM_MAX_LORA_RANK:
        problems.append(
            (
                "spec.lora.rank",
                f"is {spec.lora.rank}, but vLLM serves LoRA ranks up to {VLLM_MAX_LORA_RANK} (its largest "
                f"--max-lora-rank): use a rank of at most {VLLM_MAX_LORA_RANK}, "
                "or set spec.export.enabled to serve the merged model",
            )
        )
    quant = spec.quantization
    if adapter and spec.method == "qlora" and quant is not None and quant.bits == 4 and quant.type == "fp4":
        problems.append(
            (
                "spec.quantization.type",
                "fp4: vLLM quantizes a base in flight to NF4 only, so the adapter would run on another base than it "
                "was trained on: use type nf4, or set spec.export.enabled to serve the merged model",
            )
        )
    if adapter and spec.lora is not None:
        problems.extend(_vllm_outer_lora_problems(job, outer_lora_targets(spec.lora.target_modules)))
    return problems + RENDERERS[engine_for(job).name].check(job)


VLLM_EMBEDDING_LORA_TYPES = frozenset({"llama", "mistral", "phi3"})
"""config.json model_types whose vLLM class takes LoRA on embed_tokens and lm_head: LlamaForCausalLM
lists them in ``embedding_modules`` (vllm/model_executor/models/llama.py:493-497 @0.11.0), Mistral is
served by that class (registry.py:121) and Phi3ForCausalLM inherits it (phi3.py:10). Qwen2
(qwen2.py:445), Qwen3 (qwen3.py:263), Gemma 2 (gemma2.py:364) and Gemma 3 (gemma3.py:496) keep the
empty default (interfaces.py:259)."""


def _vllm_outer_lora_problems(job: FineTuneJob, outer: list[str]) -> list[tuple[str, str]]:
    """An adapter with LoRA on embed_tokens/lm_head that vLLM would refuse when it loads it: its
    expected modules are the model's linear layers plus ``embedding_modules``
    (vllm/lora/utils.py:186-201, worker_manager.py:84-96 @0.11.0) and any other name is a ValueError
    (vllm/lora/models.py:227-238); a --lora-modules adapter is loaded at startup, so the server
    never comes up. Models outside the planner's catalogue are not checked (no I/O here)."""
    name = job.spec.model.name
    if not outer or name is None:
        return []
    try:
        arch = resolve(name)
    except UnknownModelError:
        return []
    if arch.model_type in VLLM_EMBEDDING_LORA_TYPES:
        return []
    return [
        (
            "spec.lora.targetModules",
            f"{', '.join(outer)}: vLLM (every spec.serve engine runs it) refuses a {arch.model_type} adapter "
            f"with LoRA on {', '.join(outer)} when it loads it, so {name} would never be served: "
            "name decoder-layer modules only, or set spec.export.enabled to serve the merged model",
        )
    ]


def evaluation_verdict(evaluation: Mapping[str, Any] | None) -> tuple[bool | None, str]:
    """Whether ``status.evaluation`` shows the trained model beating the base model.

    ``(None, why)``: no result yet; ``(False, why)``: it does not (or cannot be told);
    ``(True, why)``: it does.  The rule: a lower eval loss than the base (LLaMA-Factory's
    ``eval_loss`` on the same held-out data), and in generation mode also a ROUGE-L no lower
    than the base's; without eval losses (generation only), a higher ROUGE-L, else BLEU-4.
    """
    if not evaluation:
        return None, "no evaluation result yet"
    if evaluation.get("state") != "Succeeded":
        return False, f"the evaluation failed: {evaluation.get('message') or 'no message'}"
    trained, base = evaluation.get("trained") or {}, evaluation.get("base")
    if not base:
        return False, "the base model was not evaluated (spec.evaluation.baseModel), so nothing shows an improvement"
    facts: list[str] = []
    improved: bool | None = None
    if isinstance(trained.get("evalLoss"), (int, float)) and isinstance(base.get("evalLoss"), (int, float)):
        improved = trained["evalLoss"] < base["evalLoss"]
        facts.append(f"eval loss {trained['evalLoss']:.4g} {'<' if improved else '>='} base {base['evalLoss']:.4g}")
    for key, name in (("rougeL", "ROUGE-L"), ("bleu4", "BLEU-4")):
        t, b = trained.get(key), base.get(key)
        if not isinstance(t, (int, float)) or not isinstance(b, (int, float)):
            continue
        better = t >= b if improved is not None else t > b
        facts.append(f"{name} {t:.4g} {'>=' if t >= b else '<'} base {b:.4g}")
        improved = better if improved is None else (improved and better)
        break  # one generation metric decides: ROUGE-L when present
    if improved is None:
        return False, "the evaluation has no metric measured on both the trained and the base model"
    return improved, "; ".join(facts)


def render_serving(job: FineTuneJob, options: RenderOptions | None = None) -> Serving:
    """The serving objects for ``job.spec.serve`` (see the module docstring for how decide uses it)."""
    serve = job.spec.serve
    if serve is None:
        raise ValueError("spec.serve is not set: nothing to serve")
    options = options or RenderOptions()
    namespace = job.metadata.namespace or options.default_namespace
    served = serve.served_model_name or job.name
    source = source_of(job, namespace)
    return RENDERERS[engine_for(job).name].render(job, namespace, served, source, options)


def manifests(job: FineTuneJob, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """What ``kubetune render`` prints for one job: the training objects, then (with spec.serve)
    the serving objects.  Applied together (GitOps without the operator), the serving pods start
    before the model exists and restart until training has written it; with the operator, apply
    the FineTuneJob instead and it creates them once the job has Succeeded."""
    from ..pipeline import render  # noqa: PLC0415 - pipeline is the heavier module; serving stays importable alone

    objects = list(render(job, options).objects)
    if job.spec.serve is not None:
        serving = render_serving(job, options)
        objects += serving.prepare + serving.objects
    return objects


__all__ = [
    "CHAT_TEMPLATE_FILE",
    "LORA_RANKS",
    "RENDERERS",
    "VLLM_IMAGE",
    "VLLM_MAX_LORA_RANK",
    "VLLM_PORT",
    "EngineRenderer",
    "Serving",
    "child_name",
    "evaluation_verdict",
    "manifests",
    "max_lora_rank",
    "render_serving",
    "serving_problems",
]
