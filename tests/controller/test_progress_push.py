"""The push transport end to end: trainer -> the operator's intake -> TokenReview -> status.

The real operator (its intake on 127.0.0.1) against the emulated API server, whose TokenReview
behaves like kube-apiserver's (tests/support/apiserver/auth.py).  Tokens are issued the way the kubelet gets them
for the rendered projected volume: bound to the pod, audience ``kubetune``, 600 s.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.certs import make_pki
from tests.support.kt_time import scaled
from tests.support.harness import FTJ, PTJ, ROOT, example_job, eventually, training_started
from tests.support.apiserver.emulator import Cluster
from tests.support.apiserver.auth import API_AUDIENCES, TokenAuthority
from tests.support.kubeflow import progress_line, stage_line
from tests.support.pushlib import free_port, post

from kubetune.api import contract
from kubetune.controller.runtime import OperatorConfig
from kubetune.render import RenderOptions
from kubetune.trainer.push import Reporter

NS = "team-a"


@pytest.fixture
def authority(cluster: Cluster) -> TokenAuthority:
    return TokenAuthority(cluster)


@pytest.fixture
def push_config(config: OperatorConfig) -> OperatorConfig:
    port = free_port()
    url = f"http://127.0.0.1:{port}{contract.PROGRESS_PATH}"
    return dataclasses.replace(
        config, progress_port=port, progress_host="127.0.0.1", render_options=RenderOptions(progress_url=url)
    )


def url_of(cfg: OperatorConfig) -> str:
    assert cfg.render_options.progress_url
    return cfg.render_options.progress_url


def progress_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("progress") or {})


def report(name: str, *lines: str, namespace: str = NS) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "lines": list(lines)}


async def running_job(cluster: Cluster, name: str) -> str:
    await cluster.put_object(*FTJ, example_job(name))
    pod = await training_started(cluster, NS, name)
    await eventually(
        lambda: (cluster.read(*FTJ, NS, name) or {}).get("status", {}).get("phase") == "Running", what=f"{name} Running"
    )
    return pod


async def test_the_operator_renders_pods_with_the_intake_and_the_kubetune_token(
    cluster: Cluster, operator: Any, push_config: OperatorConfig
) -> None:
    await operator(push_config)
    await cluster.put_object(*FTJ, example_job("qwen-lora"))
    child = await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora"), what="the PyTorchJob")
    spec = child["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env[contract.ENV_PROGRESS_URL] == url_of(push_config)
    sources = [s for v in spec["volumes"] for s in (v.get("projected") or {}).get("sources", [])]
    assert sources == [{"serviceAccountToken": {"audience": "kubetune", "expirationSeconds": 600, "path": "token"}}]


async def test_a_real_trainer_process_pushes_progress_to_status(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig, tmp_path: Path
) -> None:
    """A separate Python process, configured only by the rendered environment, as rank 0 is."""
    await operator(push_config)
    pod = await running_job(cluster, "qwen-lora")
    token_file = tmp_path / "token"
    token_file.write_text(authority.issue(NS, pod), encoding="utf-8")
    script = (
        "from kubetune.trainer import console, push\n"
        "from kubetune.trainer.progress import ProgressTracker, StdoutProgressSink\n"
        "import os\n"
        "r = push.from_env(os.environ)\n"
        "console.set_tap(r.offer)\n"
        "ProgressTracker(StdoutProgressSink()).feed({'current_steps': 7, 'total_steps': 20, 'loss': "
        "0.75, 'lr': 1e-4, 'epoch': 0.35})\n"
        "r.close()\n"
        "print('sent', r.sent, 'failed', r.failed)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "operator"),
        contract.ENV_PROGRESS_URL: url_of(push_config),
        contract.ENV_PROGRESS_TOKEN_FILE: str(token_file),
        contract.ENV_NAMESPACE: NS,
        contract.ENV_JOB: "qwen-lora",
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kubetune.progress " in proc.stdout  # the log line stays as it was
    assert "sent 1 failed 0" in proc.stdout, proc.stdout + proc.stderr
    progress = await eventually(
        lambda: progress_of(cluster, "qwen-lora").get("step") == 7 and progress_of(cluster, "qwen-lora"),
        what="pushed progress in status",
    )
    assert progress["totalSteps"] == 20 and progress["loss"] == 0.75 and progress["summary"] == "7/20 (35%)"
    # Nothing was in the pod log: status came from the push alone.
    assert not cluster.logs.get((NS, pod))
    review = authority.reviews[-1]
    assert review["spec"]["audiences"] == ["kubetune"] and review["status"]["authenticated"] is True


async def test_a_steady_pushing_job_costs_no_log_read_and_one_token_review(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig, tmp_path: Path
) -> None:
    await operator(push_config)
    pod = await running_job(cluster, "qwen-lora")
    token_file = tmp_path / "token"
    token_file.write_text(authority.issue(NS, pod), encoding="utf-8")
    reporter = Reporter(
        url_of(push_config), str(token_file), NS, "qwen-lora", min_interval_s=0.05, heartbeat_s=0.3
    ).start()
    try:
        reporter.offer(stage_line("train", "start"))
        reporter.offer(progress_line(3, 10, 1.5))
        await eventually(lambda: progress_of(cluster, "qwen-lora").get("step") == 3, what="step 3")
        mark = len(cluster.call_log)
        reporter.offer(progress_line(6, 10, 1.2))
        await eventually(lambda: progress_of(cluster, "qwen-lora").get("step") == 6, what="step 6")
        reporter.offer(stage_line("export", "start"))
        await eventually(
            lambda: cluster.read(*FTJ, NS, "qwen-lora")["status"]["phase"] == "Exporting",
            what="Exporting from a pushed stage line",
        )
        await asyncio.sleep(1.0)  # several status-loop intervals (0.2 s) and heartbeats
        window = cluster.call_log[mark:]
    finally:
        reporter.close()
    assert reporter.failed == 0 and reporter.sent >= 3
    assert not [c for c in window if c[1] == "pods/log"], "a fresh push must replace the log read"
    assert not [c for c in window if c[:2] == ("list", "pods")], "no pod LIST for a Running job that pushes"
    # One TokenReview for the whole run: the answer is cached until the token expires.
    assert len(authority.reviews) == 1
    assert len([c for c in cluster.call_log if c[1] == "tokenreviews"]) == 1


async def test_without_fresh_pushes_the_operator_falls_back_to_the_log(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig
) -> None:
    await operator(dataclasses.replace(push_config, progress_fresh_s=0.5))
    pod = await running_job(cluster, "qwen-lora")
    token = authority.issue(NS, pod)
    assert await post(url_of(push_config), token, report("qwen-lora", progress_line(2, 10, 2.0))) == 204
    await eventually(lambda: progress_of(cluster, "qwen-lora").get("step") == 2, what="pushed step 2")
    cluster.append_log(NS, pod, progress_line(4, 10, 1.0))  # the trainer keeps logging; its pushes stopped
    await eventually(lambda: progress_of(cluster, "qwen-lora").get("step") == 4, what="step 4 from the log tail")


async def test_refused_reports_change_nothing(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig
) -> None:
    await operator(push_config)
    pod_a = await running_job(cluster, "job-a")
    pod_b = await running_job(cluster, "job-b")
    url = url_of(push_config)
    good = authority.issue(NS, pod_a)
    assert await post(url, good, report("job-a", progress_line(1, 10, 3.0))) == 204
    await eventually(lambda: progress_of(cluster, "job-a").get("step") == 1, what="job-a step 1")
    before_a = progress_of(cluster, "job-a")

    head, claims, sig = good.split(".")
    forged_claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    forged_claims["kubernetes.io"]["pod"]["name"] = pod_b
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode(), sig])
    unused_b = authority.issue(NS, pod_b)
    evil = progress_line(9, 10, 0.01)
    cases = {
        "no token": (None, report("job-a", evil), 401),
        "not a bearer token": ("", report("job-a", evil), 401),
        "garbage token": ("not-a-jwt", report("job-a", evil), 401),
        "token for the API server's audience": (
            authority.issue(NS, pod_a, audiences=API_AUDIENCES),
            report("job-a", evil),
            401,
        ),
        "expired token": (authority.issue(NS, pod_a, issued_at=time.time() - 700), report("job-a", evil), 401),
        "token with altered claims": (forged, report("job-a", evil), 401),
        "another job's pod reports for job-a": (authority.issue(NS, pod_b), report("job-a", evil), 403),
        "job-a's pod reports for job-b": (good, report("job-b", evil), 403),
        "job-a's pod names another namespace": (good, report("job-a", evil, namespace="team-b"), 403),
        "invalid progress values": (
            good,
            report("job-a", progress_line(9, 10, 0.01).replace('"step": 9', '"step": -9')),
            400,
        ),
        "not a protocol line": (good, report("job-a", "hello"), 400),
        "not JSON": (good, None, 400),
        "oversized body": (good, report("job-a", evil, *([stage_line("train", "start")] * 15), "x" * 20000), 413),
    }
    for what, (token, body, expected) in cases.items():
        raw = b"{not json" if body is None else None
        assert await post(url, token, body, raw=raw) == expected, what
    await asyncio.sleep(0.6)  # a few status-loop intervals
    assert progress_of(cluster, "job-a") == before_a
    assert progress_of(cluster, "job-b") == {}
    assert cluster.read(*FTJ, NS, "job-a")["status"]["phase"] == "Running"

    # A token whose pod was deleted fails the TokenReview (the bound-object check).
    await cluster.remove("v1", "pods", NS, pod_b)
    assert await post(url, unused_b, report("job-b", evil)) == 401
    assert progress_of(cluster, "job-b") == {}


async def test_each_pod_is_rate_limited(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig
) -> None:
    await operator(push_config)
    pod = await running_job(cluster, "qwen-lora")
    token = authority.issue(NS, pod)
    codes = [
        await post(url_of(push_config), token, report("qwen-lora", progress_line(i + 1, 100, 1.0))) for i in range(14)
    ]
    assert codes[:10] == [204] * 10 and 429 in codes[10:]


def test_an_unreachable_intake_never_blocks_or_crashes_the_trainer(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t", encoding="utf-8")
    messages: list[str] = []
    port = free_port()  # nothing listens there
    reporter = Reporter(
        f"http://127.0.0.1:{port}/v1/progress", str(token_file), NS, "x", min_interval_s=0.01, log=messages.append
    ).start()
    for step in range(1, 2001):  # offer() only swaps the newest line in: nothing queues up
        reporter.offer(progress_line(step, 2000, 1.0))
    reporter.close(timeout=5)
    assert not reporter._thread.is_alive()
    assert reporter.sent == 0 and 1 <= reporter.failed < 2000
    assert len(messages) == 1 and "could not push progress" in messages[0]  # logged once per outage


def test_operator_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's flags reach the intake and the renderer; a bad URL stops the start with a message."""
    import argparse

    from kubetune.cli import build_parser
    from kubetune.controller.main import config_from_args, run_operator

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://k:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    url = "http://kt-kubetune.kubetune-system.svc:8082/v1/progress"
    args = build_parser().parse_args(["operator", "--progress-port=8082", f"--progress-url={url}"])
    config = config_from_args(args)
    assert config.progress_port == 8082 and config.render_options.progress_url == url and config.progress_tls is None
    off = config_from_args(build_parser().parse_args(["operator"]))
    assert off.progress_port is None and off.render_options.progress_url is None
    bad: argparse.Namespace = build_parser().parse_args(["operator", "--progress-url=kt-kubetune:8082"])
    with pytest.raises(ValueError, match="--progress-url must be an http"):
        config_from_args(bad)
    assert run_operator(bad) == 2


async def test_the_intake_over_tls(
    cluster: Cluster,
    authority: TokenAuthority,
    operator: Any,
    push_config: OperatorConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--progress-tls-cert/--progress-tls-key; the trainer verifies the server against SSL_CERT_FILE."""
    pki = make_pki(tmp_path / "pki", users=())  # what a cluster CA signs for the Service name (127.0.0.1 here)
    cert, key = str(pki["server.crt"]), str(pki["server.key"])
    url = url_of(push_config).replace("http://", "https://")
    await operator(
        dataclasses.replace(push_config, progress_tls=(cert, key), render_options=RenderOptions(progress_url=url))
    )
    pod = await running_job(cluster, "qwen-lora")
    token_file = tmp_path / "token"
    token_file.write_text(authority.issue(NS, pod), encoding="utf-8")

    untrusted: list[str] = []
    reporter = Reporter(url, str(token_file), NS, "qwen-lora", min_interval_s=0.05, log=untrusted.append).start()
    reporter.offer(progress_line(2, 10, 2.0))
    await eventually(lambda: reporter.failed >= 1, what="a refused handshake")
    reporter.close()
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted[0] and progress_of(cluster, "qwen-lora") == {}

    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca.crt"]))  # e.g. a CA bundle mounted into the pod
    reporter = Reporter(url, str(token_file), NS, "qwen-lora", min_interval_s=0.05).start()
    reporter.offer(progress_line(3, 10, 1.0))
    await eventually(lambda: progress_of(cluster, "qwen-lora").get("step") == 3, what="progress over TLS")
    reporter.close()


async def test_a_namespaced_operator_refuses_reports_from_other_namespaces(
    cluster: Cluster, authority: TokenAuthority, operator: Any, push_config: OperatorConfig
) -> None:
    await operator(dataclasses.replace(push_config, namespaces=(NS,)))
    labels = {contract.LABEL_JOB: "other"}
    await cluster.put_object(
        "v1",
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "other-master-0", "namespace": "team-b", "labels": labels},
        },
    )
    token = authority.issue("team-b", "other-master-0")
    mark = len(cluster.call_log)
    assert await post(url_of(push_config), token, report("other", progress_line(1, 10, 1.0), namespace="team-b")) == 403
    assert [c[1] for c in cluster.call_log[mark:]] == ["tokenreviews"]  # no pod LIST where it has no RBAC
