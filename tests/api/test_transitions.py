"""Immutability on update: the CRD's transition rules (CEL with oldSelf) and
``broken_transition_rules`` must refuse exactly the same changes."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.support.apiserver.validation import admitted, transition_errors
from tests.support.kt_corpus import VALID, base, patched
from kubetune.api import IMMUTABLE_FIELDS, FineTuneJob, FineTuneJobSpec, broken_transition_rules
from tests.support.apiserver.crd import install
from kubetune.api.crd import crd

# The schema as served once the CRD is created: a CRD the API server refuses fails here.
SCHEMA = install(crd())

PYDANTIC_ONLY = {(r.field_path or "").lstrip(".") for r in FineTuneJobSpec.rules if r.transition and not r.in_crd}
"""Immutable fields whose change only the operator refuses (CEL cannot read them): extraArgs."""


def api_server_refuses(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Top-level spec fields whose transition rule the API server's CEL breaks on this update."""
    stored_old, errors_old = admitted(old, SCHEMA)
    stored_new, errors_new = admitted(new, SCHEMA)
    assert errors_old == errors_new == []
    errors = transition_errors(stored_new, stored_old, SCHEMA)
    return {e.split(":", 1)[0].removeprefix(".spec.") for e in errors}


def pydantic_refuses(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    broken = broken_transition_rules(FineTuneJob.from_api(new).spec, FineTuneJob.from_api(old).spec)
    return {(r.field_path or "").lstrip(".") for r in broken}


UPDATES = [
    ("learning-rate", {"spec.training.learningRate": 1e-4}, {"training"}),
    ("epochs", {"spec.training.epochs": 1}, {"training"}),
    ("model-template", {"spec.model.template": "chatml"}, {"model"}),
    ("another-dataset", {"spec.datasets.1": {"name": "more", "hub": "a/b"}}, {"datasets"}),
    ("method", {"spec.method": "full"}, {"method"}),
    ("more-gpus", {"spec.resources.gpusPerNode": 8}, {"resources"}),
    ("zero-stage", {"spec.distributed": {"launcher": "deepspeed", "zeroStage": 2}}, {"distributed"}),
    ("add-lora-block", {"spec.lora": {"rank": 8}}, {"lora"}),
    ("add-extra-args", {"spec.extraArgs": {"neftune_noise_alpha": 5}}, {"extraArgs"}),
    ("storage", {"spec.storage.outputs.claimName": "elsewhere"}, {"storage"}),
    ("model-and-training", {"spec.model.template": "chatml", "spec.training.seed": 1}, {"model", "training"}),
    ("suspend", {"spec.suspend": True}, set()),
    ("scheduling", {"spec.scheduling": {"queueName": "team-b", "tolerations": [{"operator": "Exists"}]}}, set()),
    ("env", {"spec.env": [{"name": "WANDB_PROJECT", "value": "x"}]}, set()),
    ("image", {"spec.image": "example.com/trainer:2"}, set()),
    ("run-policy", {"spec.runPolicy.backoffLimit": 10}, set()),
    ("export", {"spec.export.enabled": True}, set()),
    ("restate-defaults", {"spec.method": "lora", "spec.resources": {"nodes": 1}, "spec.training": {}}, set()),
    ("status-only", {"status": {"phase": "Running"}}, set()),
]


@pytest.mark.parametrize("change,expected", [(u[1], u[2]) for u in UPDATES], ids=[u[0] for u in UPDATES])
def test_update_is_refused_or_allowed_by_both(change: dict[str, Any], expected: set[str]) -> None:
    old = base()
    new = patched(old, change)
    assert api_server_refuses(old, new) == expected - PYDANTIC_ONLY
    assert pydantic_refuses(old, new) == expected


def test_only_extra_args_is_refused_by_the_operator_alone() -> None:
    assert PYDANTIC_ONLY == {"extraArgs"}


def test_refusal_says_what_to_do() -> None:
    old = base()
    [rule] = broken_transition_rules(
        FineTuneJob.from_api(patched(old, {"spec.training.learningRate": 1e-4})).spec, FineTuneJob.from_api(old).spec
    )
    assert "spec.training cannot change" in rule.message and "new FineTuneJob" in rule.message


def test_every_immutable_field_is_covered_by_an_update_case() -> None:
    covered = set().union(*(u[2] for u in UPDATES)) | {"freeze", "quantization"}
    assert covered == set(IMMUTABLE_FIELDS)


def test_any_update_between_valid_jobs_gets_the_same_verdict() -> None:
    """Valid corpus jobs as updates of each other: to and from the first, and each to the next
    (freeze and quantization changes included).  cel-python takes ~4 ms a rule, so not all pairs."""
    stored = {c.id: admitted(c.obj, SCHEMA)[0] for c in VALID}
    specs = {c.id: FineTuneJob.from_api(c.obj).spec for c in VALID}
    disagreements, refused = [], 0
    pairs = [(VALID[0], c) for c in VALID] + [(c, VALID[0]) for c in VALID] + list(itertools.pairwise(VALID))
    pairs += [(b, a) for a, b in itertools.pairwise(VALID)]
    for old, new in pairs:
        by_api = {
            e.split(":", 1)[0].removeprefix(".spec.") for e in transition_errors(stored[new.id], stored[old.id], SCHEMA)
        }
        by_pydantic = {(r.field_path or "").lstrip(".") for r in broken_transition_rules(specs[new.id], specs[old.id])}
        refused += bool(by_api)
        if by_api != by_pydantic - PYDANTIC_ONLY:
            disagreements.append((old.id, new.id, by_api, by_pydantic))
    assert disagreements == []
    assert refused > len(pairs) // 2  # most pairs differ in some immutable field
