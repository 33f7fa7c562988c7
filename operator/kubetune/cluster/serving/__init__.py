"""Serving engines: one module per engine, registered by name in ``ENGINES``.

This is the one registry of serving engines: the API's enum (kept equal by a test), the renderer
(:mod:`kubetune.render.serving`, one renderer per engine under the same name), the operator (what it
applies, watches, grants and names in install hints) and the chart's RBAC test read it.  Each entry
owns what kubetune knows about its objects as they run (see :mod:`.base`):

* :mod:`.vllm` (``engine: vllm``): a Deployment running vLLM's OpenAI server and a ClusterIP Service;
* :mod:`.inferenceservice` (``engine: kserve``, one model): an InferenceService (Hugging Face runtime);
* :mod:`.llminferenceservice` (``engine: kserve``, an adapter): an LLMInferenceService
  (:mod:`.kserve` says which of the two);
* :mod:`.kaito` (``engine: kaito``): a KAITO Workspace, after a Job copied the adapter to a claim of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.api import FineTuneJob

from .base import ServedKind, ServingEngine, adapter_served
from .inferenceservice import InferenceServiceEngine
from .kaito import KaitoEngine
from .llminferenceservice import LLMInferenceServiceEngine
from .vllm import VllmEngine

ENGINES: dict[str, ServingEngine] = {
    VllmEngine.name: VllmEngine(),
    InferenceServiceEngine.name: InferenceServiceEngine(),
    LLMInferenceServiceEngine.name: LLMInferenceServiceEngine(),
    KaitoEngine.name: KaitoEngine(),
}
"""Every serving engine, by name (the order is the order the operator starts its informers in)."""


def engine_for(job: FineTuneJob) -> ServingEngine:
    """The engine that serves ``job`` (``spec.serve`` must be set)."""
    found = [e for e in ENGINES.values() if e.selects(job)]
    if len(found) != 1:
        serve = job.spec.serve
        raise ValueError(
            f"spec.serve.engine {serve.engine if serve else None!r}: {len(found)} serving engines answer, not one"
        )
    return found[0]


def engine_for_kind(kind: str) -> ServingEngine | None:
    """The engine whose main object is of ``kind``, or None."""
    return next((e for e in ENGINES.values() if e.kinds[0].kind == kind), None)


def served_kinds() -> dict[tuple[str, str], ServedKind]:
    """Every kind any engine writes, by (apiVersion, kind), in registry order."""
    return {(k.api_version, k.kind): k for e in ENGINES.values() for k in e.kinds}


def observed_state(obj: Mapping[str, Any] | None, engine: ServingEngine | None = None) -> tuple[bool, str | None, str]:
    """What a watched serving object says: (ready, URL it reports, a short description), read by
    ``engine`` (the one that rendered it: :func:`engine_for`), else by the engine whose main object's
    kind it names (each engine's ``observed_state`` says how).

    The operator passes the engine: objects from an informer's LIST carry no ``kind`` (the API
    server leaves apiVersion and kind off the items of a list of built-in kinds such as Deployment:
    kubernetes/kubernetes issues 63676 and 98925, and kubernetes/client-go issue 861 where a
    maintainer names "the list response coming back from the server not setting apiVersion/kind
    fields on individual items"; read in those threads, not in the API server's source), only
    those from its watch events do."""
    if obj is None:
        return False, None, "not created yet"
    engine = engine or engine_for_kind(str(obj.get("kind")))
    if engine is None:
        return False, None, f"{obj.get('kind')} is not the main object of a serving engine"
    return engine.observed_state(obj)


__all__ = [
    "ENGINES",
    "ServedKind",
    "ServingEngine",
    "adapter_served",
    "engine_for",
    "engine_for_kind",
    "observed_state",
    "served_kinds",
]
