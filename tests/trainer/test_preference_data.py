"""The data stage on preference (ranking) and KTO datasets: good records pass, and every
bad one is named by dataset, record and field before any training starts (DataError, exit 3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import contract
from kubetune.trainer import config, data
from kubetune.trainer.errors import DataError
from kubetune.trainer.tiny import kto_records, preference_records, write_jsonl
from tests.support.trainerlib import TinyAssets, make_pod

pytestmark = pytest.mark.train  # the tiny model's tokenizer prepares the records (tiny_assets)


def _job(stage: str, dataset: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": f"{stage}-data", "namespace": "team-a"},
        "spec": {
            "model": {"path": "tiny-qwen2", "template": "qwen"},
            "datasets": [dataset],
            "resources": {"gpusPerNode": 0},
            "training": {"stage": stage, "precision": "fp32"},
            "storage": {"outputs": {"claimName": "out"}},
        },
    }


def _prepare(
    tmp_path: Path, assets: TinyAssets, stage: str, dataset: dict[str, Any], records: list[Any]
) -> dict[str, int]:
    datasets = tmp_path / "datasets"
    write_jsonl(datasets / "d.jsonl", records)
    local = TinyAssets(assets.root, assets.models_dir, datasets, assets.model_path, "d.jsonl")
    pod = make_pod(tmp_path, _job(stage, {**dataset, "path": "d.jsonl"}), local)
    info = json.loads(pod.files[contract.DATASET_INFO_FILE])
    entry = info[dataset["name"]]
    if dataset.get("ranking"):
        assert entry["ranking"] is True and entry["columns"]["chosen"] and entry["columns"]["rejected"]
    return data.prepare(config.load(pod.env), pod.env)


SHAREGPT_PAIRS = {"name": "pairs", "format": "sharegpt", "ranking": True}
ALPACA_PAIRS = {"name": "pairs", "format": "alpaca", "ranking": True}
KTO = {"name": "kto", "format": "sharegpt", "columns": {"ktoTag": "label"}}


@pytest.mark.parametrize(
    ("stage", "dataset", "records"),
    [
        ("dpo", SHAREGPT_PAIRS, preference_records(6)),
        ("rm", ALPACA_PAIRS, preference_records(6, fmt="alpaca")),
        ("kto", KTO, kto_records(6)),
    ],
    ids=["dpo-sharegpt", "rm-alpaca", "kto"],
)
def test_valid_preference_and_kto_records_pass(
    tmp_path: Path, tiny_assets: TinyAssets, stage: str, dataset: dict[str, Any], records: list[Any]
) -> None:
    counts = _prepare(tmp_path, tiny_assets, stage, dataset, records)
    assert counts == {dataset["name"]: 6}


def _set(i: int, key: str, value: Any) -> Any:
    def mutate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records[i][key] = value
        return records

    return mutate


def _drop(i: int, key: str) -> Any:
    def mutate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        del records[i][key]
        return records

    return mutate


@pytest.mark.parametrize(
    ("stage", "dataset", "records", "mutate", "message"),
    [
        ("dpo", SHAREGPT_PAIRS, preference_records(4), _drop(2, "rejected"), "record 2, field 'rejected': missing"),
        (
            "dpo",
            SHAREGPT_PAIRS,
            preference_records(4),
            _set(1, "chosen", "a plain string"),
            "record 1, field 'chosen': expected one turn object",
        ),
        (
            "dpo",
            SHAREGPT_PAIRS,
            preference_records(4),
            _set(3, "chosen", {"from": "human", "value": "x"}),
            "record 3, field 'chosen.from': expected an answer role",
        ),
        (
            "dpo",
            SHAREGPT_PAIRS,
            preference_records(4),
            _set(0, "conversations", [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]),
            "record 0, field 'conversations': a ranking record's turns must end with the prompt",
        ),
        (
            "rm",
            ALPACA_PAIRS,
            preference_records(4, fmt="alpaca"),
            _set(2, "rejected", 7),
            "record 2, field 'rejected': expected a string answer",
        ),
        (
            "rm",
            ALPACA_PAIRS,
            preference_records(4, fmt="alpaca"),
            _set(1, "chosen", "  "),
            "record 1, field 'chosen': empty answer",
        ),
        (
            "kto",
            KTO,
            kto_records(4),
            _set(3, "label", "yes"),
            "record 3, field 'label': the KTO label must be true (desirable) or false (undesirable); got str 'yes'",
        ),
        (
            "kto",
            KTO,
            kto_records(4),
            _drop(0, "label"),
            "record 0, field 'label': the KTO label must be true (desirable) or false (undesirable); missing",
        ),
    ],
    ids=[
        "dpo-missing-rejected",
        "dpo-chosen-not-a-turn",
        "dpo-chosen-user-role",
        "dpo-turns-end-with-answer",
        "rm-rejected-number",
        "rm-empty-chosen",
        "kto-label-string",
        "kto-label-missing",
    ],
)
def test_bad_preference_and_kto_records_name_dataset_record_and_field(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    stage: str,
    dataset: dict[str, Any],
    records: list[Any],
    mutate: Any,
    message: str,
) -> None:
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, tiny_assets, stage, dataset, mutate(copy.deepcopy(records)))
    assert f"dataset {dataset['name']!r}" in str(err.value) and message in str(err.value), str(err.value)
    assert err.value.exit_code == contract.EXIT_DATA
