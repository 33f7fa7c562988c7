"""``kubetune serve --local`` as a user runs it: a real server process (LLaMA-Factory's API on its
Hugging Face backend), asked through the official ``openai`` client, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import io
import urllib.request
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.localserve import ModelGate, resolve_target
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.trainerlib import free_port, isolated_env
from tests.support.kt_time import scaled

openai = pytest.importorskip("openai")

KUBETUNE = [sys.executable, "-m", "kubetune"]


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_assets: TinyAssets
) -> tuple[Path, TinyAssets, dict[str, str]]:
    """A LoRA job trained with ``run --local`` (5 steps, no export): served as base + adapter."""
    root = tmp_path_factory.mktemp("serve")
    assets = tiny_assets
    env = isolated_env(root / "env")
    job_file = root / "job.yaml"
    job_file.write_text(yaml.safe_dump(tiny_job("served-lora", assets, method="lora", max_steps=5)))
    args = [
        "run",
        "--local",
        str(job_file),
        "--output",
        str(root / "out"),
        "--datasets",
        str(assets.datasets_dir),
        "--models",
        str(assets.models_dir),
    ]
    done = subprocess.run(KUBETUNE + args, env=env, cwd=root, capture_output=True, text=True, timeout=scaled(300))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root / "out" / "default" / "served-lora", assets, env


class Served:
    def __init__(self, proc: subprocess.Popen[str], base_url: str, lines: list[str]) -> None:
        self.proc, self.base_url, self.lines = proc, base_url, lines


@pytest.fixture(scope="module")
def served(trained: tuple[Path, TinyAssets, dict[str, str]]) -> Iterator[Served]:
    job_dir, _, env = trained
    port = free_port()
    proc = subprocess.Popen(
        KUBETUNE + ["serve", "--local", str(job_dir), "--port", str(port), "--max-new-tokens", "8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + scaled(180)
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("serving model") or time.monotonic() > deadline:
            break
    assert any(l.startswith("serving model") for l in lines), "".join(lines)[-3000:]
    yield Served(proc, f"http://127.0.0.1:{port}/v1", lines)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0, timeout=scaled(120))


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(480)  # its module fixtures train (300 s bound) and start the server (180 s bound) first
def test_the_job_output_is_served_as_base_plus_adapter_under_the_job_name(
    served: Served, trained: tuple[Path, TinyAssets, dict[str, str]]
) -> None:
    job_dir, assets, _ = trained
    assert f"{assets.models_dir / assets.model_path} + adapter {job_dir}" in served.lines[0]
    assert f"serving model 'served-lora' at {served.base_url}" in served.lines[-1]
    models = _client(served).models.list()
    assert [m.id for m in models.data] == ["served-lora"]


@pytest.mark.slow
@pytest.mark.train
def test_openai_client_chat_and_streamed_chat(served: Served) -> None:
    client = _client(served)
    # temperature 0: greedy decoding (llamafactory/chat/hf_engine.py:160-165 @0.9.5: no temperature
    # -> do_sample False), so the streamed answer must be the same text as the plain one.
    question = [{"role": "user", "content": "Say hello."}]
    reply = client.chat.completions.create(model="served-lora", messages=question, max_tokens=6, temperature=0)
    assert reply.object == "chat.completion" and reply.model == "served-lora"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content is not None
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 0

    stream = client.chat.completions.create(
        model="served-lora", messages=question, max_tokens=6, stream=True, temperature=0
    )
    chunks = list(stream)
    assert len(chunks) >= 2 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == reply.choices[0].message.content, "the stream carries the same greedy answer"


@pytest.mark.slow
@pytest.mark.train
def test_bad_requests_get_openai_error_json(served: Served) -> None:
    client = _client(served)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.status_code == 404
    assert unknown.value.body["code"] == "model_not_found" and unknown.value.body["param"] == "model"
    assert "served-lora" in unknown.value.body["message"]

    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="served-lora", messages=[])
    assert empty.value.body["param"] == "messages" and empty.value.body["type"] == "invalid_request_error"

    # LLaMA-Factory's own checks come back in the same shape (it answers {"detail": ...} by itself).
    with pytest.raises(openai.BadRequestError) as order:
        client.chat.completions.create(model="served-lora", messages=[{"role": "assistant", "content": "hi"}])
    assert order.value.body["message"] == "Invalid role"
    with pytest.raises(openai.BadRequestError) as schema:
        client.chat.completions.create(model="served-lora", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item]
    assert "messages" in schema.value.body["message"]


@pytest.mark.slow
@pytest.mark.train
def test_ask_works_without_the_openai_package(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.localserve import ask

    monkeypatch.setitem(sys.modules, "openai", None)  # import openai now raises ImportError
    sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    urlopen = urllib.request.urlopen

    def recording(request: urllib.request.Request, timeout: float | None = None) -> io.BytesIO:
        with urlopen(request, timeout=timeout) as resp:  # noqa: S310 - the test's own loopback server
            body = resp.read()
        sent.append((request.full_url, json.loads(request.data or b"{}"), json.loads(body)))
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", recording)
    answer = ask(served.base_url, "served-lora", "Say hello.", max_tokens=4)
    [(url, request, response)] = sent  # one plain HTTP request, no client
    assert (
        url == f"{served.base_url}/chat/completions"
        and request["model"] == "served-lora"
        and request["max_tokens"] == 4
    )
    assert (
        answer == (response["choices"][0]["message"]["content"] or "") and response["usage"]["completion_tokens"] <= 4
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        ask(served.base_url, "other", "Say hello.")
    assert refused.value.code == 404


@pytest.mark.slow
@pytest.mark.train
def test_ctrl_c_stops_the_server_cleanly(served: Served) -> None:
    port = int(served.base_url.rsplit(":", 1)[1].split("/")[0])
    served.proc.send_signal(signal.SIGINT)
    out, _ = served.proc.communicate(timeout=scaled(30))
    assert served.proc.returncode == 0, out[-3000:]
    assert "server stopped" in out and "Traceback" not in out
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# --- what is served, without starting a server ---------------------------------------------------


def test_resolve_prefers_the_merged_model_then_adapter_then_weights(tmp_path: Path) -> None:
    record = {
        "job": {"name": "j"},
        "trainArgs": {"model_name_or_path": "/models/base", "template": "qwen", "quantization_bit": 4},
    }
    (tmp_path / "kubetune-run.json").write_text(json.dumps(record))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_target(str(tmp_path)).model == str(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    t = resolve_target(str(tmp_path))
    assert (t.model, t.adapter, t.template, t.name, t.extra) == (
        "/models/base",
        str(tmp_path),
        "qwen",
        "j",
        {"quantization_bit": 4},
    )
    assert t.chat_args(8)["finetuning_type"] == "lora"
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    t = resolve_target(str(tmp_path))
    assert (t.model, t.adapter) == (str(tmp_path / "merged"), None)


def test_resolve_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model"):
        resolve_target(str(tmp_path))
    with pytest.raises(ValueError, match="--template"):
        resolve_target(None, model="/m")
    with pytest.raises(ValueError, match="no such folder"):
        resolve_target(str(tmp_path / "nope"))


def _imported(stderr: str) -> set[str]:
    """Top-level packages a process imported, from ``PYTHONPROFILEIMPORTTIME``'s lines on stderr."""
    names = set()
    for text in stderr.splitlines():
        if text.startswith("import time:") and "|" in text:
            names.add(text.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize(
    ("command", "what", "reason"),
    [
        (["serve", "--local", "--model", "{tmp}"], "{tmp}", "holds no config.json"),
        (["serve", "--local", "--model", "{tmp}/weights.bin"], "{tmp}/weights.bin", "is a file"),
        (["serve", "--local", "--model", "{tmp}/missing"], "{tmp}/missing", "no such folder"),
        (
            ["serve", "--local", "--model", "{model}", "--adapter", "{tmp}"],
            "{model} + adapter {tmp}",
            "holds no adapter_config.json",
        ),
        (["chat", "{tmp}", "--message", "hi"], "{tmp}", "holds no config.json"),
    ],
    ids=["empty-folder", "a-file", "missing-path", "not-an-adapter", "chat-empty-folder"],
)
def test_a_path_that_is_no_model_is_refused_at_once_without_loading_anything(
    tmp_path: Path, command: list[str], what: str, reason: str
) -> None:
    """Refused before LLaMA-Factory and torch load (they take ~10 s of CPU), with the reason and no traceback."""
    (tmp_path / "weights.bin").write_bytes(b"\0")
    model = tmp_path / "model"  # a model folder as far as the disk shows: the adapter is what is wrong
    model.mkdir()
    (model / "config.json").write_text("{}")
    fill = {"tmp": str(tmp_path), "model": str(model)}
    env = {**isolated_env(tmp_path / "env"), "PYTHONPROFILEIMPORTTIME": "1"}
    argv = [a.format(**fill) for a in command] + ["--template", "qwen"]
    if argv[0] == "serve":
        argv += ["--port", "0"]
    done = subprocess.run(KUBETUNE + argv, env=env, capture_output=True, text=True, timeout=scaled(60))
    said = [t for t in done.stderr.splitlines() if not t.startswith("import time:")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"kubetune {argv[0]}: cannot load {what.format(**fill)}: " in said[-1] and reason in said[-1], said
    assert not any("Traceback" in t for t in said), said
    assert not {"torch", "transformers", "llamafactory"} & _imported(done.stderr)


def test_a_hub_id_and_real_folders_are_left_to_llamafactory(tmp_path: Path) -> None:
    from kubetune.localserve import ServeTarget, local_folder_problem  # noqa: PLC0415

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    for i in (1, 2):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_config.json").write_text("{}")
    ok = [
        ServeTarget(model="Qwen/Qwen2.5-0.5B-Instruct", template="qwen", name="m"),
        ServeTarget(model=str(tmp_path / "m"), template="qwen", name="m", adapter="someone/lora"),
        ServeTarget(model=str(tmp_path / "m"), template="qwen", name="m", adapter=f"{tmp_path}/a1, {tmp_path}/a2"),
    ]
    assert [local_folder_problem(t) for t in ok] == [None, None, None]
    second_missing = ServeTarget(model=str(tmp_path / "m"), template="qwen", name="m", adapter=f"{tmp_path}/a1,./nope")
    assert local_folder_problem(second_missing) == "adapter ./nope: no such folder"
    home = ServeTarget(model="~/models/base", template="qwen", name="m")
    assert "a leading ~ is not expanded" in str(local_folder_problem(home))


def test_serve_without_local_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(KUBETUNE + ["serve", str(tmp_path)], capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 2 and "spec.serve" in done.stderr


def test_model_gate_refusals() -> None:
    gate = ModelGate(None, "m")  # type: ignore[arg-type]
    assert gate.refusal(b"{") == (
        400,
        {
            "error": {
                "message": "the request body is not valid JSON",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
    status, body = gate.refusal(b'{"messages": [{"role": "user", "content": "x"}]}')  # type: ignore[misc]
    assert status == 400 and body["error"]["param"] == "model" and "`m`" in body["error"]["message"]
    status, body = gate.refusal(b'{"model": "other", "messages": []}')  # type: ignore[misc]
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert gate.refusal(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}') is None


def test_model_gate_passes_the_body_through_unchanged() -> None:
    import asyncio

    seen: dict[str, object] = {}

    async def inner(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen["body"] = (await receive())["body"]

    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()
    messages = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:]},
    ]

    async def receive() -> dict:  # type: ignore[type-arg]
        return messages.pop(0)

    async def send(_: dict) -> None:  # type: ignore[type-arg]
        raise AssertionError("the gate answered a valid request itself")

    asyncio.run(
        ModelGate(inner, "m")({"type": "http", "method": "POST", "path": "/v1/chat/completions"}, receive, send)
    )  # type: ignore[arg-type]
    assert seen["body"] == body
