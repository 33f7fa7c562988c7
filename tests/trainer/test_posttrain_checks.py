"""Trainer-side checks of issue 21 that need no model: the evaluation child's GPUs, the TRL
check for preference losses on a user's image, and the record check against the very column
mapping LLaMA-Factory reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import FineTuneJob, contract
from kubetune.render import RenderOptions, render
from kubetune.trainer import evaluate, stagecheck
from kubetune.trainer.config import JobConfig
from kubetune.trainer.errors import ConfigError
from kubetune.trainer.datachecks import RecordChecker


def _job(**spec: Any) -> FineTuneJob:
    return FineTuneJob.from_api(
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": "j", "namespace": "ml"},
            "spec": {
                "model": {"name": "Qwen/Qwen1.5-1.8B", "template": "qwen"},
                "datasets": [{"name": "d", "hub": "o/d"}],
                "storage": {"outputs": {"claimName": "outputs"}},
                **spec,
            },
        }
    )


def _config(tmp_path: Path, job: FineTuneJob) -> JobConfig:
    rendered = render(job, RenderOptions())
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for name, text in rendered.files.items():
        (config_dir / name).write_text(text, encoding="utf-8")
    # Results and scratch inside the test's folder.
    plan = json.loads(rendered.files[contract.EVAL_ARGS_FILE])
    for i, run in enumerate(plan["runs"]):
        run["args"]["output_dir"] = str(tmp_path / f"eval-{i}")
    (config_dir / contract.EVAL_ARGS_FILE).write_text(json.dumps(plan), encoding="utf-8")
    return JobConfig(
        job,
        config_dir,
        rendered.train_args,
        json.loads(rendered.files[contract.DATASET_INFO_FILE]),
        tmp_path / "out",
        tmp_path / "datasets",
        tmp_path / "models",
    )


class _Recorder:
    seen: list[tuple[list[str], dict[str, str]]] = []

    def __init__(self, argv: list[str], env: dict[str, str], **_: Any) -> None:
        self.argv, self.env = argv, env

    def run(self) -> None:
        _Recorder.seen.append((self.argv, self.env))


@pytest.mark.parametrize(("visible", "expected"), [(None, "0"), ("3,5,6", "3")])
def test_evaluation_in_a_multi_gpu_pod_sees_one_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: str | None, expected: str
) -> None:
    # transformers reports NOT_DISTRIBUTED for one process with n_gpu > 1 and LLaMA-Factory refuses it:
    # the evaluation child must see exactly one GPU (and none of the torchrun variables).
    job = _job(resources={"gpusPerNode": 8}, training={"precision": "bf16"}, evaluation={"valSize": 0.1})
    cfg = _config(tmp_path, job)
    monkeypatch.setattr(evaluate, "Child", _Recorder)
    _Recorder.seen.clear()
    pod_env = {
        "PATH": "/usr/bin",
        "RANK": "0",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "j-master-0",
        "FORCE_TORCHRUN": "1",
        "TMPDIR": str(tmp_path),
    }
    if visible is not None:
        pod_env["CUDA_VISIBLE_DEVICES"] = visible
    with pytest.raises(RuntimeError, match="eval_loss"):  # the recorder ran nothing, so no results
        evaluate.run(cfg, pod_env)
    ((argv, env),) = _Recorder.seen
    assert argv[1:3] == ["-m", "kubetune.trainer.evaluate"]
    assert env["CUDA_VISIBLE_DEVICES"] == expected
    assert not {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "FORCE_TORCHRUN"} & set(env)


@pytest.mark.train
def test_evaluation_child_of_an_mpi_rank_is_one_plain_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MPIJob: mpirun starts one trainer per GPU (-np 32) with OMPI_COMM_WORLD_*; accelerate's
    # PartialState (which transformers' TrainingArguments builds) reads OMPI_COMM_WORLD_SIZE > 1
    # without LOCAL_RANK as MULTI_CPU (accelerate/state.py:788-795 @v1.11.0) and then refuses a multinode
    # launch without MASTER_ADDR or waits for 31 absent ranks. The child must look like one process.
    from accelerate.state import PartialState  # noqa: PLC0415 - heavy, only here
    from accelerate.utils import DistributedType  # noqa: PLC0415

    cfg = _config(
        tmp_path, _job(resources={"gpusPerNode": 8}, training={"precision": "bf16"}, evaluation={"valSize": 0.1})
    )
    rank0 = {
        "PATH": "/usr/bin",
        "MASTER_ADDR": "j-worker-0",
        "OMPI_COMM_WORLD_RANK": "0",
        "OMPI_COMM_WORLD_SIZE": "32",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "8",
        "OMPI_MCA_orte_default_hostfile": "/etc/mpi/hostfile",
        "PMI_RANK": "0",
        "PMI_SIZE": "32",
        "LOCAL_WORLD_SIZE": "8",
    }
    child = evaluate.eval_env(cfg, rank0)
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in child.items():
        monkeypatch.setenv(key, value)
    _, distributed_type = PartialState._prepare_backend(object.__new__(PartialState), cpu=False)
    assert distributed_type == DistributedType.NO  # one process (MULTI_CPU before)
    assert child["CUDA_VISIBLE_DEVICES"] == "0"


def test_single_gpu_and_cpu_pods_keep_their_devices(tmp_path: Path) -> None:
    one = _config(
        tmp_path, _job(resources={"gpusPerNode": 1}, training={"precision": "bf16"}, evaluation={"valSize": 0.1})
    )
    assert "CUDA_VISIBLE_DEVICES" not in evaluate.eval_env(one, {"PATH": "/usr/bin"})
    assert evaluate.eval_env(one, {"CUDA_VISIBLE_DEVICES": "2"})["CUDA_VISIBLE_DEVICES"] == "2"


@pytest.mark.parametrize("loss", ["hinge", "ipo", "kto_pair"])
def test_a_user_image_with_trl_020_or_later_is_refused_for_losses_it_would_replace(tmp_path: Path, loss: str) -> None:
    job = _job(
        image="registry.example/trainer:mine",
        training={"stage": "dpo", "preference": {"loss": loss}},
        datasets=[{"name": "p", "hub": "o/p", "ranking": True}],
    )
    cfg = JobConfig(job, tmp_path, {}, {}, tmp_path, tmp_path, tmp_path)
    # This venv has the image's TRL (0.24.0, images/trainer/pins.txt).
    with pytest.raises(ConfigError, match=f"loss {loss}.*sigmoid"):
        stagecheck.check(cfg)
    ok = _job(
        image="registry.example/trainer:mine",
        training={"stage": "dpo"},
        datasets=[{"name": "p", "hub": "o/p", "ranking": True}],
    )
    stagecheck.check(JobConfig(ok, tmp_path, {}, {}, tmp_path, tmp_path, tmp_path))


def test_records_are_checked_against_the_mapping_llamafactory_reads() -> None:
    # The entry an older renderer wrote for `columns: {prompt: question}`: LLaMA-Factory reads
    # response as None and drops every SFT example, so the check must not assume `output`.
    partial = {"file_name": "a.jsonl", "formatting": "alpaca", "columns": {"prompt": "question"}}
    record = {"question": "What is LoRA?", "output": "Low-rank adapters."}
    problems = RecordChecker("a", partial).check(0, record)
    assert [p.field for p in problems] == ["columns.response"]
    # The complete mapping the renderer now writes passes the same record.
    complete = {**partial, "columns": {"prompt": "question", "query": "input", "response": "output"}}
    assert RecordChecker("a", complete).check(0, record) == []
    # No "columns" at all: LLaMA-Factory's own defaults.
    assert (
        RecordChecker("a", {"file_name": "a.jsonl", "formatting": "alpaca"}).check(
            0, {"instruction": "q", "output": "a"}
        )
        == []
    )
    # A ranking entry without the pair named: LLaMA-Factory has no default for it.
    pairs = {"file_name": "p.jsonl", "formatting": "alpaca", "ranking": True, "columns": {"prompt": "instruction"}}
    fields = [
        p.field
        for p in RecordChecker("p", pairs, stage="dpo").check(0, {"instruction": "q", "chosen": "a", "rejected": "b"})
    ]
    assert fields == ["columns.chosen", "columns.rejected"]


def test_a_named_optional_column_no_record_has_is_left_out_of_what_llamafactory_reads() -> None:
    from kubetune.trainer.data import capped_info  # noqa: PLC0415

    # kubetune names LLaMA-Factory's defaults (query `input`); a dataset without that column at
    # all would raise KeyError in its converter, so the trainer leaves it out - nothing is lost.
    entry = {
        "file_name": "a.jsonl",
        "formatting": "alpaca",
        "columns": {"prompt": "question", "query": "input", "response": "output", "system": "sys"},
    }
    checker = RecordChecker("a", entry)
    assert checker.check(0, {"question": "q", "output": "a"}) == []
    assert checker.check(1, {"question": "q", "output": "a", "sys": "be brief"}) == []
    assert checker.unused_columns() == ["query"]
    info = capped_info({"a": entry}, {"a": 2}, {"a": checker.unused_columns()})
    assert info["a"]["columns"] == {"prompt": "question", "response": "output", "system": "sys"}
    # A required column is never dropped: each record without it is reported instead.
    sft = RecordChecker("a", entry)
    assert [p.field for p in sft.check(0, {"question": "q"})] == ["output"] and sft.unused_columns() == [
        "query",
        "system",
    ]
    # Ranking data has no response column: LLaMA-Factory reads it only for non-pair records.
    pairs = RecordChecker(
        "p",
        {**entry, "ranking": True, "columns": {**entry["columns"], "chosen": "chosen", "rejected": "rejected"}},
        stage="dpo",
    )
    assert pairs.check(0, {"question": "q", "chosen": "a", "rejected": "b"}) == []
    assert set(pairs.unused_columns()) == {"query", "response", "system"}


def test_pretraining_text_needs_no_other_column() -> None:
    entry = {
        "file_name": "t.jsonl",
        "formatting": "alpaca",
        "columns": {"prompt": "text", "query": "input", "response": "output"},
    }
    checker = RecordChecker("t", entry, stage="pt")
    assert checker.check(0, {"text": "plain text"}) == []
    assert checker.unused_columns() == ["query", "response"]
