"""The pinned LLaMA-Factory itself: its parser accepts every rendered train.yaml, and the
committed argument catalog is the one generated from it.

Needs the ``train`` extra (llamafactory, torch); importing it takes ~10 s, so these are slow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from kubetune.render import render, validate_object
from tests.support.renderlib import example_files, example_id, load_example
from tests.support.strategies import finetune_jobs

pytestmark = [
    pytest.mark.train,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None, reason="needs the train extra (llamafactory)"),
]


@pytest.fixture(scope="module")
def parse() -> Any:
    from kubetune.trainer.lfcheck import parse_train_args

    return parse_train_args


@pytest.mark.parametrize("example", example_files(), ids=example_id)
def test_examples_pass_llamafactory_parser(example: Path, parse: Any) -> None:
    rendered = render(load_example(example))
    assert parse(rendered.train_args, rendered.files["dataset_info.json"]) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(doc=finetune_jobs())
def test_generated_jobs_pass_llamafactory_parser(doc: dict[str, Any]) -> None:
    from kubetune.trainer.lfcheck import parse_train_args

    job, _ = validate_object(doc)
    assume(job is not None)
    assert job is not None
    rendered = render(job)
    assert parse_train_args(rendered.train_args, rendered.files["dataset_info.json"]) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lora_rankk": 4}, "not used by the HfArgumentParser"),
        ({"finetuning_type": "partial"}, "fine-tuning method"),
    ],
    ids=["unknown-key", "bad-finetuning-type"],
)
def test_parser_errors_come_back_as_messages(change: dict[str, Any], words: str, parse: Any) -> None:
    """The check can fail: LLaMA-Factory's own refusals are returned, not raised."""
    rendered = render(load_example(example_files()[0]))
    errors = parse({**rendered.train_args, **change}, rendered.files["dataset_info.json"])
    assert errors and words in errors[0]


def test_catalog_is_current() -> None:
    from tests.support import update_llamafactory_catalog as updater  # in-process: llamafactory is already imported

    assert updater.CATALOG.read_text(encoding="utf-8") == updater.render_text(updater.build()), (
        "operator/kubetune/render/llamafactory_args.json is stale: run .venv/bin/python -m "
        "tests.support.update_llamafactory_catalog"
    )
