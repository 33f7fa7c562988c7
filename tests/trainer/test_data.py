"""The data stage: Alpaca/ShareGPT with custom columns and tags, bad records rejected
with the dataset, record and field named, nothing half-written left behind."""

from __future__ import annotations

import copy
import functools
import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from kubetune.api import contract
from kubetune.trainer import config, data
from kubetune.trainer.errors import DataError, Retryable
from tests.support.httpserve import serving
from tests.support.trainerlib import Pod, TinyAssets, make_pod, run_trainer, stage_lines

pytestmark = pytest.mark.train  # every test prepares data with the tiny model's tokenizer (tiny_assets)

QA = [
    {"question": "What is LoRA?", "answer": "Low-rank adapters.", "sys": "Be brief."},
    {"question": "What is QLoRA?", "answer": "LoRA on a 4-bit base."},
    {"question": "Who trains?", "answer": "LLaMA-Factory."},
]
CHATS = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {
        "messages": [
            {"role": "sys", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ]
    },
]


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture()
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server standing in for a `url` dataset's host."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(functools.partial(_Files, directory=str(root))) as url:
        yield url, root


def _manifest(base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "data-job", "namespace": "team-a"},
        "spec": {
            "model": {"path": "tiny-qwen2", "template": "qwen"},
            "datasets": [
                {
                    "name": "qa",
                    "path": "custom/qa.json",
                    "format": "alpaca",
                    "columns": {"prompt": "question", "response": "answer", "system": "sys"},
                },
                {
                    "name": "chats",
                    "url": f"{base_url}/chats.jsonl",
                    "format": "sharegpt",
                    "columns": {"messages": "messages"},
                    "tags": {
                        "roleTag": "role",
                        "contentTag": "content",
                        "userTag": "user",
                        "assistantTag": "assistant",
                        "systemTag": "sys",
                    },
                },
            ],
            "resources": {"gpusPerNode": 0},
            "training": {"precision": "fp32"},
            "storage": {"outputs": {"claimName": "out"}},
        },
    }


def _setup(tmp_path: Path, assets: TinyAssets, web: tuple[str, Path], qa: list[Any], chats: list[Any]) -> Pod:
    base_url, www = web
    datasets = tmp_path / "datasets"
    (datasets / "custom").mkdir(parents=True)
    (datasets / "custom" / "qa.json").write_text(json.dumps(qa))  # a JSON array file
    (www / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))  # JSON lines
    local = TinyAssets(assets.root, assets.models_dir, datasets, assets.model_path, "custom/qa.json")
    return make_pod(tmp_path, _manifest(base_url), local)


def test_alpaca_and_sharegpt_with_custom_columns_and_tags_are_materialised(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path]
) -> None:
    pod = _setup(tmp_path, tiny_assets, web, QA, CHATS)
    cfg = config.load(pod.env)
    counts = data.prepare(cfg, pod.env)
    assert counts == {"qa": 3, "chats": 2}
    data_dir = pod.output_dir / contract.DATA_SUBDIR
    # The url dataset is downloaded and written where dataset_info.json says; the path dataset is read in place.
    assert [json.loads(l) for l in (data_dir / "chats.jsonl").read_text().splitlines()] == CHATS
    info = json.loads((data_dir / contract.DATASET_INFO_FILE).read_text())
    rendered = json.loads(pod.files[contract.DATASET_INFO_FILE])
    # No QA record has LLaMA-Factory's `input` column: left out, or its converter raises KeyError.
    assert rendered["qa"]["columns"].pop("query") == "input"
    assert info == rendered
    assert info["qa"]["file_name"] == str(tmp_path / "datasets" / "custom" / "qa.json")
    assert sorted(p.name for p in data_dir.iterdir()) == [data.READY_MARKER, "chats.jsonl", contract.DATASET_INFO_FILE]
    data.wait_ready(cfg, {**pod.env, data.ENV_WAIT_TIMEOUT: "1"})  # another rank proceeds at once


BAD = {
    "alpaca record without its response column": (
        "qa",
        lambda qa, chats: (qa[:1] + [{"question": "Q?"}] + qa[2:], chats),
        "dataset 'qa', record 1, field 'answer': missing",
    ),
    "alpaca response that is not text": (
        "qa",
        lambda qa, chats: (qa[:2] + [{"question": "Q?", "answer": 42}], chats),
        "dataset 'qa', record 2, field 'answer': expected a string, got int",
    ),
    "sharegpt unknown role": (
        "chats",
        lambda qa, chats: (
            qa,
            [chats[0], {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}],
        ),
        "dataset 'chats', record 1, field 'messages[1].role': unknown role 'bot'",
    ),
    "sharegpt turns out of order": (
        "chats",
        lambda qa, chats: (
            qa,
            [{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}],
        ),
        "dataset 'chats', record 0, field 'messages[0].role': turns must alternate",
    ),
    "sharegpt conversation ending on the user": (
        "chats",
        lambda qa, chats: (qa, [chats[0], chats[0], {"messages": [{"role": "user", "content": "a"}]}]),
        "dataset 'chats', record 2, field 'messages': needs at least one prompt/answer pair",
    ),
    "sharegpt record without the messages column": (
        "chats",
        lambda qa, chats: (qa, [{"conversations": chats[0]["messages"]}]),
        "dataset 'chats', record 0, field 'messages': missing",
    ),
    "empty dataset": ("chats", lambda qa, chats: (qa, []), "dataset 'chats' has no records"),
}


@pytest.mark.parametrize(("dataset", "mutate", "message"), BAD.values(), ids=BAD.keys())
def test_bad_records_fail_with_dataset_record_and_field_and_leave_nothing_half_written(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path], dataset: str, mutate: Any, message: str
) -> None:
    qa, chats = mutate(copy.deepcopy(QA), copy.deepcopy(CHATS))
    pod = _setup(tmp_path, tiny_assets, web, qa, chats)
    cfg = config.load(pod.env)
    with pytest.raises(DataError) as err:
        data.prepare(cfg, pod.env)
    assert message in str(err.value)
    data_dir = pod.output_dir / contract.DATA_SUBDIR
    left = sorted(p.name for p in data_dir.iterdir())
    # No materialised file, no temporary file, no ready marker: only the failure marker for the other ranks.
    assert left == [data.FAILED_MARKER], left
    with pytest.raises(DataError, match="rank 0 failed to prepare the data"):
        data.wait_ready(cfg, {**pod.env, data.ENV_WAIT_TIMEOUT: "1"})


def test_entrypoint_exits_with_the_data_code_and_a_failed_stage_line(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path]
) -> None:
    bad_chats = [{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}]
    pod = _setup(tmp_path, tiny_assets, web, QA, bad_chats)
    result = run_trainer(pod.env, timeout=scaled(120))
    assert result.returncode == contract.EXIT_DATA, result.stderr[-2000:]
    failed = [s for s in stage_lines(result.stdout) if s["event"] == "failed"]
    assert failed and failed[0]["stage"] == "data" and "unknown role 'robot'" in failed[0]["message"]
    assert "record 0" in result.stderr
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outcome"] == "Failed" and record["exitCode"] == contract.EXIT_DATA


def test_a_stale_marker_from_another_job_does_not_release_waiting_ranks(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path]
) -> None:
    pod = _setup(tmp_path, tiny_assets, web, QA, CHATS)
    cfg = config.load(pod.env)
    cfg.data_dir.mkdir(parents=True)
    (cfg.data_dir / data.READY_MARKER).write_text(json.dumps({"digest": "an-older-job"}))
    with pytest.raises(Retryable, match="waiting for rank 0"):
        data.wait_ready(cfg, {**pod.env, data.ENV_WAIT_TIMEOUT: "0.5"})


@pytest.mark.parametrize(("status", "error"), [(404, DataError), (503, Retryable)])
def test_url_failures_are_permanent_or_retryable(
    tmp_path: Path, tiny_assets: TinyAssets, status: int, error: type[Exception]
) -> None:
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(status)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Failing) as url:
        (tmp_path / "www").mkdir()
        pod = _setup(tmp_path, tiny_assets, (url, tmp_path / "www"), QA, CHATS)
        with pytest.raises(error, match=str(status)):
            data.prepare(config.load(pod.env), pod.env)
    assert not (pod.output_dir / contract.DATA_SUBDIR / "chats.jsonl").exists()


# --- hostile and careless data (issue 12) ------------------------------------------------------

_DEEP = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n"

HOSTILE = {
    "role-is-a-list": (
        "chats",
        [{"messages": [{"role": ["user"], "content": "a"}, {"role": "assistant", "content": "b"}]}],
        "record 0, field 'messages[0].role': expected a string role, got list",
    ),
    "role-is-a-dict": (
        "chats",
        [{"messages": [{"role": {"x": 1}, "content": "a"}, {"role": "assistant", "content": "b"}]}],
        "expected a string role, got dict",
    ),
    "deeply-nested-record": ("chats", _DEEP, "line 1 is not valid JSON: nested too deeply"),
    "not-utf8": ("chats", b"\xff\xfe{}\n", "not UTF-8 text"),
    "single-object-file": (
        "qa",
        '{\n  "question": "q",\n  "answer": "a"\n}\n',
        "expected a JSON array of records or JSON lines",
    ),
    "deeply-nested-array-file": ("qa", "[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
}


@pytest.mark.parametrize(("which", "content", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_data_is_a_data_error_naming_dataset_and_source_and_releases_other_ranks(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path], which: str, content: Any, message: str
) -> None:
    """Every bad file or record ends as a DataError (exit 3) naming the dataset - a URL dataset by
    its URL, not the scratch file - and the failure marker stops the other ranks at once."""
    pod = _setup(tmp_path, tiny_assets, web, QA, CHATS)
    base_url, www = web
    target = www / "chats.jsonl" if which == "chats" else tmp_path / "datasets" / "custom" / "qa.json"
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif isinstance(content, str):
        target.write_text(content)
    else:
        target.write_text("".join(json.dumps(c) + "\n" for c in content))
    cfg = config.load(pod.env)
    with pytest.raises(DataError) as err:
        data.prepare(cfg, pod.env)
    text = str(err.value)
    assert err.value.exit_code == contract.EXIT_DATA
    assert message in text, text
    assert text.startswith(f"dataset {which!r}"), text
    if which == "chats" and "record" not in text:
        assert f"{base_url}/chats.jsonl" in text and ".download" not in text, text
    with pytest.raises(DataError, match="rank 0 failed to prepare the data") as waited:
        data.wait_ready(cfg, {**pod.env, data.ENV_WAIT_TIMEOUT: "5"})
    assert waited.value.exit_code == contract.EXIT_DATA


def test_an_unforeseen_failure_still_writes_the_failure_marker(
    tmp_path: Path, tiny_assets: TinyAssets, web: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = _setup(tmp_path, tiny_assets, web, QA, CHATS)
    cfg = config.load(pod.env)

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(data, "local_files", broken)
    with pytest.raises(DataError, match=r"dataset 'qa' \(/.*custom/qa.json\): cannot be read: OSError"):
        data.prepare(cfg, pod.env)
    with pytest.raises(DataError, match="rank 0 failed"):
        data.wait_ready(cfg, {**pod.env, data.ENV_WAIT_TIMEOUT: "5"})
