"""Rank 0's progress push (kubetune.trainer.push) against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from kubetune.api import contract
from kubetune.trainer import console, push


class Intake(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 204
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{contract.PROGRESS_PATH}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Intake

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts.append((self.headers["Authorization"], body))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def intake() -> Iterator[Intake]:
    server = Intake()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def progress(step: int) -> str:
    return contract.PROGRESS_PREFIX + json.dumps({"step": step, "totalSteps": 10})


def stage(name: str, event: str) -> str:
    return contract.STAGE_PREFIX + json.dumps({"stage": name, "event": event})


def env_for(intake: Intake, token: Path) -> dict[str, str]:
    return {
        contract.ENV_PROGRESS_URL: intake.url,
        contract.ENV_PROGRESS_TOKEN_FILE: str(token),
        contract.ENV_NAMESPACE: "team-a",
        contract.ENV_JOB: "qwen-lora",
    }


def test_no_url_no_reporter() -> None:
    """kubetune run --local and pods rendered without an intake: the log only."""
    assert push.from_env({contract.ENV_NAMESPACE: "a", contract.ENV_JOB: "b"}) is None


def test_console_lines_reach_the_intake_with_the_current_token(
    intake: Intake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n", encoding="utf-8")
    reporter = push.from_env(env_for(intake, token))
    assert reporter is not None
    reporter.min_interval_s = 0.05
    console.set_tap(reporter.offer)
    try:
        console.write_line("some message")  # not a protocol line: stdout only
        console.write_line(stage("train", "start"))
        console.write_line(progress(3))
        until(lambda: any(b["lines"] == [progress(3), stage("train", "start")] for _, b in intake.posts))
        token.write_text("rotated\n", encoding="utf-8")  # the kubelet rewrote the projected token
        console.write_line(progress(4))
        auth, body = until(lambda: next((p for p in intake.posts if p[1]["lines"][0] == progress(4)), None))
    finally:
        console.set_tap(None)
        reporter.close()
    assert auth == "Bearer rotated"
    assert intake.posts[0][0] == "Bearer first"
    assert body == {"namespace": "team-a", "name": "qwen-lora", "lines": [progress(4), stage("train", "start")]}
    assert all("some message" not in json.dumps(b) for _, b in intake.posts)
    assert "kubetune.progress " in capsys.readouterr().out  # the log line is printed as before


def test_close_sends_the_final_state_and_heartbeats_repeat_it(intake: Intake, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t", encoding="utf-8")
    reporter = push.Reporter(intake.url, str(token), "team-a", "j", min_interval_s=0.05, heartbeat_s=0.2).start()
    reporter.offer(progress(1))
    until(lambda: len(intake.posts) >= 3)  # the first post, then heartbeats with nothing new
    assert {json.dumps(b["lines"]) for _, b in intake.posts} == {json.dumps([progress(1)])}
    reporter.min_interval_s = 3600  # a long gap: close() must still flush what is pending
    reporter.offer(progress(10))
    reporter.offer(stage("record", "end"))
    reporter.close()
    assert intake.posts[-1][1]["lines"] == [progress(10), stage("record", "end")]


def test_refusals_are_logged_once_and_training_goes_on(intake: Intake, tmp_path: Path) -> None:
    intake.status = 403
    messages: list[str] = []
    reporter = push.Reporter(
        intake.url, str(tmp_path / "missing-token"), "team-a", "j", min_interval_s=0.01, log=messages.append
    ).start()
    reporter.offer(progress(1))
    until(lambda: reporter.failed >= 1)
    (tmp_path / "missing-token").write_text("t", encoding="utf-8")
    until(lambda: reporter.failed >= 2)  # now the server refuses (403), backing off
    intake.status = 204
    reporter.offer(progress(2))
    until(lambda: reporter.sent >= 1, timeout=30)
    reporter.close()
    assert len(messages) == 2, messages
    assert "could not push progress" in messages[0] and "again" in messages[1]


@pytest.mark.slow
@pytest.mark.train
def test_a_real_training_run_pushes_what_it_prints(intake: Intake, tmp_path: Path, tiny_assets: Any) -> None:
    """``python -m kubetune.trainer`` (LLaMA-Factory, tiny model, CPU) with the variables the
    operator renders: rank 0 pushes its progress and stages, and the last report is the end state."""
    from kubetune.trainer.tiny import tiny_job
    from tests.support.trainerlib import make_pod, progress_lines, run_trainer

    pod = make_pod(tmp_path, tiny_job("pushed", tiny_assets, method="full", max_steps=5), tiny_assets)
    token = tmp_path / "token"
    token.write_text("projected-token", encoding="utf-8")
    env = {**pod.env, contract.ENV_PROGRESS_URL: intake.url, contract.ENV_PROGRESS_TOKEN_FILE: str(token)}
    result = run_trainer(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "could not push" not in result.stderr
    assert intake.posts and {auth for auth, _ in intake.posts} == {"Bearer projected-token"}
    assert {(b["namespace"], b["name"]) for _, b in intake.posts} == {(pod.job.namespace, "pushed")}
    last = intake.posts[-1][1]["lines"]
    printed = progress_lines(result.stdout)[-1]
    assert json.loads(last[0][len(contract.PROGRESS_PREFIX) :]) == printed and printed["step"] == 5
    assert json.loads(last[1][len(contract.STAGE_PREFIX) :])["stage"] == "record"
    stages = [
        json.loads(line[len(contract.STAGE_PREFIX) :])
        for _, b in intake.posts
        for line in b["lines"]
        if line.startswith(contract.STAGE_PREFIX)
    ]
    assert {"stage": "train", "event": "start"}.items() <= next(s for s in stages if s["stage"] == "train").items()
