"""What lfcheck hands LLaMA-Factory's parser, checked without LLaMA-Factory installed."""

from __future__ import annotations

import sys

import json
from pathlib import Path

import pytest

from kubetune.render import render
from kubetune.trainer import lfcheck
from tests.support.renderlib import JobBuilder


def test_neutral_copy_drops_only_machine_dependent_keys(tmp_path: Path) -> None:
    args = render(JobBuilder().set("spec.distributed", {"zeroStage": 2}).build()).train_args
    assert args["bf16"] is True and "deepspeed" in args
    checked = lfcheck.neutral_copy(args, tmp_path)
    assert not {"bf16", "fp16", "deepspeed"} & set(checked)
    assert checked["dataset_dir"] == str(tmp_path / "data") and checked["output_dir"] == str(tmp_path / "output")
    same = {k: v for k, v in args.items() if k not in ("bf16", "fp16", "deepspeed", "dataset_dir", "output_dir")}
    assert {k: checked[k] for k in same} == same


def test_rendered_dataset_info_is_used_with_local_stand_ins(tmp_path: Path) -> None:
    rendered = render(
        JobBuilder().set("spec.datasets", [{"name": "a", "path": "big/a.jsonl"}, {"name": "b", "hub": "o/b"}]).build()
    )
    lfcheck._write_datasets(rendered.train_args, tmp_path, rendered.files["dataset_info.json"])
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"a", "b"}
    assert all((tmp_path / entry["file_name"]).is_file() for entry in info.values())
    assert info["b"]["formatting"] == "sharegpt", "the rendered entry is kept, only file_name points at a stand-in"


def test_available_is_false_where_llamafactory_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llamafactory", None)  # as if the train extra were not installed
    assert lfcheck.llamafactory_available() is False


@pytest.mark.train
def test_available_is_true_with_the_train_extra() -> None:
    assert lfcheck.llamafactory_available() is True
