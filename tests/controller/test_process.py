"""The operator as a process: flags, credentials, namespaces, /healthz, /metrics."""

from __future__ import annotations

import argparse
import dataclasses
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
from tests.support.harness import FTJ, PTJ, example_job, eventually, uninstall_finetunejob_crd
from tests.support.apiserver.emulator import Cluster

from kubetune.controller.kube import load_connection
from kubetune.controller.main import config_from_args
from kubetune.controller.runtime import OperatorConfig

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://k8s.example:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: team-a}
current-context: ctx
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return resp.status, resp.read().decode()


def test_kubeconfig_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG, encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", f"{path}:/nonexistent/second")
    conn = load_connection()
    assert conn.server == "https://k8s.example:6443"
    assert conn.token == "secret-token"
    assert conn.insecure
    assert conn.default_namespace == "team-a"


def test_flags_select_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG, encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(path))
    base = dict(metrics_port=9000, health_port=9001, trainer_image="registry/trainer:1", default_queue="q")
    some = config_from_args(argparse.Namespace(namespace=["a", "b"], all_namespaces=False, **base))
    assert some.namespaces == ("a", "b")
    assert some.render_options.image == "registry/trainer:1" and some.render_options.default_queue == "q"
    assert some.peering == "kubetune" and some.metrics_port == 9000
    assert config_from_args(argparse.Namespace(namespace=["a"], all_namespaces=True, **base)).namespaces == ()


async def test_health_and_metrics_endpoints(cluster: Cluster, operator: Any, config: OperatorConfig) -> None:
    metrics_port, health_port = free_port(), free_port()
    await operator(dataclasses.replace(config, metrics_port=metrics_port, health_port=health_port))
    cluster.inject("patch", "configmaps", 500, times=1)  # one failed reconcile, retried
    await cluster.put_object(*FTJ, example_job())
    uninstall_finetunejob_crd(cluster)  # "bad" is refused by today's CRD: stored as under an older one
    await cluster.put_object(*FTJ, example_job("bad", method="qlora"))
    await eventually(lambda: cluster.read(*PTJ, "team-a", "qwen-lora"), what="the PyTorchJob")

    code, _ = await eventually(lambda: fetch(f"http://127.0.0.1:{health_port}/healthz"), what="/healthz")
    assert code == 200

    def scrape() -> str:
        text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")[1]
        done = (
            'kubetune_finetunejobs{phase="Failed"} 1.0' in text and 'kubetune_finetunejobs{phase="Pending"} 1.0' in text
        )
        return text if done else ""

    text = await eventually(scrape, what="metrics")
    assert 'kubetune_reconcile_seconds_count{handler="reconcile"}' in text
    assert 'kubetune_api_requests_total{code="201",verb="patch"}' in text
    assert 'kubetune_reconcile_errors_total{handler="reconcile",kind="ApiError"} 1.0' in text
    assert 'kubetune_api_retries_total{reason="500"} 1.0' in text


async def test_namespaced_operator_ignores_other_namespaces(
    cluster: Cluster, operator: Any, config: OperatorConfig
) -> None:
    await operator(dataclasses.replace(config, namespaces=("team-a",)))
    await cluster.put_object(*FTJ, example_job("other", namespace="team-b"))
    await cluster.put_object(*FTJ, example_job("mine", namespace="team-a"))
    await eventually(lambda: cluster.read(*PTJ, "team-a", "mine"), what="the watched namespace is served")
    assert cluster.read(*PTJ, "team-b", "other") is None
    assert not (cluster.read(*FTJ, "team-b", "other") or {}).get("status")


def test_cli_flags_reach_the_operator_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.cli import build_parser

    path = tmp_path / "config"
    path.write_text(KUBECONFIG, encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(path))
    args = build_parser().parse_args(
        ["operator", "-n", "a", "--namespace", "b", "--sync-interval", "5", "--peering", "", "--priority", "7"]
    )
    config = config_from_args(args)
    assert config.namespaces == ("a", "b")
    assert config.sync_interval_s == 5.0 and config.peering is None and config.priority == 7
    # Outside a cluster the default is the kubeconfig context's namespace (as kubectl), -A is every one.
    assert config_from_args(build_parser().parse_args(["operator"])).namespaces == ("team-a",)
    assert config_from_args(build_parser().parse_args(["operator", "-A"])).namespaces == ()


def test_a_local_operator_has_the_built_in_gpu_table_and_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run outside the cluster (no chart, no KUBETUNE_GPU_MEMORY_BY_PRODUCT) the operator knows the
    same GPUs as `kubetune validate`; --gpu-memory-by-product adds the chart value's entries."""
    from kubetune.api import FineTuneJob, load_documents
    from kubetune.cli import build_parser
    from kubetune.plan.feasibility import PRODUCT_TABLE_ENV, feasibility, gpu_memory_for

    root = Path(__file__).resolve().parents[2]

    path = tmp_path / "config"
    path.write_text(KUBECONFIG, encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv(PRODUCT_TABLE_ENV, raising=False)
    table = config_from_args(build_parser().parse_args(["operator"])).gpu_memory_by_product
    [doc] = load_documents(
        (root / "examples" / "finetune-full.yaml").read_text(encoding="utf-8")
    )  # selects NVIDIA-H100-80GB-HBM3
    job = FineTuneJob.from_api({**doc, "metadata": {**doc["metadata"], "namespace": "team-a"}})
    assert feasibility(job, gpu_memory_for(job, table)).status in ("True", "False")  # not Unknown: the H100 is known
    flagged = config_from_args(
        build_parser().parse_args(["operator", "--gpu-memory-by-product", "NVIDIA-H800=81559Mi"])
    ).gpu_memory_by_product
    assert flagged == {**table, "NVIDIA-H800": "81559Mi"}
    with pytest.raises(ValueError, match="NVIDIA-H800: 'lots' is not a Kubernetes quantity"):
        config_from_args(build_parser().parse_args(["operator", "--gpu-memory-by-product", "NVIDIA-H800=lots"]))


def test_the_operator_never_imports_the_ml_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kubetune.controller.main; print(sorted(m for m in ('torch', 'transformers', "
        "'llamafactory') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


async def test_kubetune_operator_command_runs_against_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    """`kubetune operator` as a user starts it: a process, credentials from $KUBECONFIG, clean exit on SIGINT."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    config = tmp_path / "config"
    config.write_text(
        KUBECONFIG.replace(
            '"https://k8s.example:6443", insecure-skip-tls-verify: true', f'"{str(cluster.url).rstrip("/")}"'
        ),
        encoding="utf-8",
    )
    # As the README shows it: no --peering flag, and no peering object in the cluster.
    cmd = [sys.executable, "-m", "kubetune", "operator", "--sync-interval", "0.5",
           "--metrics-port", str(free_port()), "--health-port", str(free_port())]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "KUBECONFIG": str(config)}, stderr=subprocess.PIPE, text=True)
    try:
        await eventually(
            lambda: cluster.open_watches > 0 or proc.poll() is not None, timeout=60, what="the operator's watch"
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        await cluster.put_object(*FTJ, example_job())
        await eventually(lambda: cluster.read(*PTJ, "team-a", "qwen-lora"), timeout=30, what="the PyTorchJob")
    finally:
        proc.send_signal(signal.SIGINT)
        for _ in range(200):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            proc.kill()
    assert proc.returncode == 0
    assert proc.stderr is not None
    lines = proc.stderr.read().splitlines()
    assert lines[0].startswith("{") and '"message"' in lines[0], "logs are JSON lines"
    scope = [line for line in lines if "standalone" in line]
    assert len(scope) == 1, lines
    assert "watching namespace(s) team-a" in scope[0] and "no ClusterKopfPeering" not in scope[0]
    assert "no KopfPeering 'kubetune' in namespace team-a" in scope[0]
    assert not any("Handler 'index' succeeded" in line for line in lines), "per-event lines are debug only"


async def test_a_busy_port_is_one_error_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "config"
    config.write_text(KUBECONFIG, encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # noqa: S104 - the address the operator binds
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "kubetune",
            "operator",
            "--metrics-port",
            str(port),
            "--health-port",
            str(free_port()),
        ]
        proc = subprocess.run(
            cmd,
            env={**__import__("os").environ, "KUBECONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"metrics port {port} is already in use" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


async def test_two_operators_of_the_same_priority_say_why_they_pause(
    cluster: Cluster, operator: Any, config: OperatorConfig, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="kubetune.controller")
    cluster.declare("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False, has_status=False)
    await cluster.put_object("kopf.dev/v1", "clusterkopfpeerings", {"metadata": {"name": "kubetune"}})
    await operator(dataclasses.replace(config, peering="kubetune"))
    await operator(dataclasses.replace(config, peering="kubetune"))
    said = await eventually(
        lambda: [r.getMessage() for r in caplog.records if "same peering priority 0" in r.getMessage()],
        timeout=20,
        what="the pause explained",
    )
    assert any("--priority 1" in m for m in said) and any(
        r.levelname == "ERROR" for r in caplog.records if "same peering" in r.getMessage()
    )


async def test_a_namespaced_copy_refuses_to_race_a_clusterwide_operator(
    cluster: Cluster, operator: Any, config: OperatorConfig
) -> None:
    import datetime

    from kubetune.controller.main import Refused

    cluster.declare("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False, has_status=False)
    alive = {"priority": 0, "lifetime": 60, "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}
    await cluster.put_object(
        "kopf.dev/v1",
        "clusterkopfpeerings",
        {"metadata": {"name": "kubetune"}, "status": {"kubetune-incluster": alive}},
    )
    with pytest.raises(Refused, match=r"kubetune-incluster.*kubetune operator -A --priority 100"):
        await operator(dataclasses.replace(config, peering="kubetune", namespaces=("team-a",)))
    await cluster.put_object(*FTJ, example_job())
    assert not (cluster.read(*FTJ, "team-a", "qwen-lora") or {}).get("status")
