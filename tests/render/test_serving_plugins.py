"""Every serving engine is one plugin (operator/kubetune/cluster/serving): the registry is what the
API enum, the operator (apply, watch, install hints) and the chart's RBAC read, and each engine
declares every kind it renders."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from tests.support.renderlib import JobBuilder

from kubetune.api.serve import Engine
from kubetune.cluster.serving import ENGINES, engine_for, engine_for_kind, served_kinds
from kubetune.render.serving import render_serving

# Every way spec.serve selects an engine: engine x (one model | an adapter) x spec.serve.kserve.kind.
SELECTIONS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "vllm-adapter": ({}, {}, "vllm"),
    "vllm-merged": ({}, {"spec.export": {"enabled": True}}, "vllm"),
    "kserve-merged": ({"engine": "kserve"}, {"spec.export": {"enabled": True}}, "kserve-inferenceservice"),
    "kserve-full": ({"engine": "kserve"}, {"spec.method": "full"}, "kserve-inferenceservice"),
    "kserve-adapter": ({"engine": "kserve"}, {}, "kserve-llminferenceservice"),
    "kserve-merged-as-llmisvc": (
        {"engine": "kserve", "kserve": {"kind": "LLMInferenceService"}},
        {"spec.export": {"enabled": True}},
        "kserve-llminferenceservice",
    ),
    "kaito-adapter": ({"engine": "kaito", "kaito": {}}, {}, "kaito"),
}


def build(serve: dict[str, Any], changes: dict[str, Any]) -> Any:
    b = JobBuilder().set("metadata.uid", "0b4c5a52-6a3c-4a8e-9d8e-2f1f5b0c1d11").set("spec.serve", serve)
    for dotted, value in changes.items():
        b = b.set(dotted, value)
    return b.build()


def test_the_api_enum_is_the_registry() -> None:
    # The CRD's enum lives in the API layer (which may not import the renderer): kept equal here.
    assert set(typing.get_args(Engine)) == {e.engine for e in ENGINES.values()}


def test_every_engine_is_complete_and_its_main_kind_unique() -> None:
    mains = [e.kinds[0].kind for e in ENGINES.values()]
    assert len(set(mains)) == len(mains)
    for name, e in ENGINES.items():
        assert e.name == name and e.kinds and e.kinds[0].watched, (
            "the main object is watched: its status is what status.serving reports"
        )
        assert engine_for_kind(e.kinds[0].kind) is e
        assert e.controller is None or e.kinds[0].kind in e.controller, "the install hint names the kind"
        for k in e.kinds:
            assert k.plural == k.plural.lower() and k.plural.endswith("s")
            assert served_kinds()[(k.api_version, k.kind)] == k, "one kind, one plural across engines"
        granted = {(r.api_group, res, v) for r in e.rbac() for res in r.resources for v in r.verbs}
        for k in e.kinds:
            assert {(k.group, k.plural, "create"), (k.group, k.plural, "patch")} <= granted, (
                f"{name}: {k.kind} is written with server-side apply"
            )
            assert k.watched == ((k.group, k.plural, "watch") in granted), (
                f"{name}: {k.kind} is watched only where it is granted watch"
            )


@pytest.mark.parametrize("case", list(SELECTIONS))
def test_one_engine_serves_each_spec_and_declares_every_kind_it_renders(case: str) -> None:
    serve, changes, expected = SELECTIONS[case]
    job = build(serve, changes)
    assert [e.name for e in ENGINES.values() if e.selects(job)] == [expected]
    engine = engine_for(job)
    serving = render_serving(job)
    assert serving.engine == job.spec.serve.engine
    assert serving.objects[0]["kind"] == engine.kinds[0].kind, "the main object comes first"
    declared = {(k.api_version, k.kind) for k in engine.kinds}
    rendered = {(o["apiVersion"], o["kind"]) for o in serving.prepare + serving.objects}
    # The operator applies only kinds it knows the plural of (controller/act.py reads the registry).
    assert rendered <= declared, f"{engine.name} renders kinds it does not declare: {sorted(rendered - declared)}"


def test_the_operator_reads_the_registry() -> None:
    from kubetune.controller.act import PLURALS
    from kubetune.controller.cache import SERVING_KINDS
    from kubetune.controller.reasons import CONTROLLERS

    for e in ENGINES.values():
        for k in e.kinds:
            assert PLURALS[(k.api_version, k.kind)] == k.plural
            assert (SERVING_KINDS.get(k.kind) == (k.api_version, k.plural)) is k.watched
        if e.controller:
            assert CONTROLLERS[e.kinds[0].kind] == e.controller
