"""``kubetune get / watch / logs / plot`` as a user runs them: the real CLI in a subprocess, through a
kubeconfig with a bearer token, against the emulated API server (tests/support/apiserver/emulator.py);
screens through a pseudo-terminal, read back with a VT100 emulator (pyte) as a user would see them."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import pty
import re
import struct
import termios
from datetime import datetime
from pathlib import Path
from typing import Any

import pyte
import pytest

from tests.support.harness import EVENTS, FTJ, PODS, eventually
from tests.support.apiserver.emulator import Cluster
from tests.support.cli import KUBETUNE, add_job, cli_env, kubeconfig, run_cli
from tests.support.kubeflow import progress_line, start_pod

from kubetune.controller.kube import load_connection
from kubetune.terminal import Client, bar, jobs_path, pod_for_rank, sparkline, status_line


def progress(step: int, total: int, loss: float, eta: int | None = 300) -> dict[str, Any]:
    return {
        "step": step,
        "totalSteps": total,
        "percent": round(100 * step / total, 2),
        "loss": loss,
        "etaSeconds": eta,
        "summary": f"{step}/{total}",
    }


async def set_status(cluster: Cluster, name: str, namespace: str = "team-a", **status: Any) -> None:
    await cluster.mutate(*FTJ, namespace, name, lambda o: o.setdefault("status", {}).update(status))


async def post_event(
    cluster: Cluster, name: str, reason: str, message: str, type_: str = "Normal", namespace: str = "team-a"
) -> None:
    """An Event about the job, as the operator records it: involvedObject with the job's uid (controller/act.py)."""
    uid = ((cluster.read(*FTJ, namespace, name) or {}).get("metadata") or {}).get("uid")
    await cluster.put_object(
        *EVENTS,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{reason.lower()}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "kubetune.io/v1alpha1",
                "kind": "FineTuneJob",
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "lastTimestamp": "2026-11-30T12:00:00Z",
        },
    )


# --- get ------------------------------------------------------------------------------------------


async def test_get_lists_jobs_with_a_progress_bar(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "alpha", phase="Running", progress=progress(45, 100, 1.2345))
    await add_job(cluster, "beta", phase="Succeeded", progress=progress(100, 100, 0.5, eta=0))
    await add_job(cluster, "gamma", namespace="team-b", phase="Pending")

    code, out, err = await run_cli(["get"], config)  # the context's namespace: team-a
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "METHOD", "PROGRESS", "LOSS", "ETA", "AGE"]
    alpha = next(l for l in lines if l.startswith("alpha"))
    assert "Running" in alpha and "lora" in alpha and "45% 45/100" in alpha and "1.2345" in alpha and "5m0s" in alpha
    assert bar(45, 10) in alpha
    assert "█" * 10 in next(l for l in lines if l.startswith("beta"))
    assert "gamma" not in out

    code, out, _ = await run_cli(["get", "-A"], config)
    assert code == 0 and out.splitlines()[0].split()[0] == "NAMESPACE"
    assert re.search(r"^team-b\s+gamma\s+Pending", out, re.M)

    code, _, err = await run_cli(["get", "nope"], config)
    assert code == 1 and "not found" in err


async def test_a_wrong_token_is_refused_with_the_servers_message(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig", token="stolen")
    code, _, err = await run_cli(["get"], config)
    assert code == 2 and "Unauthorized" in err


async def test_client_reloads_exec_plugin_credentials_before_expiry_and_after_a_401(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A `watch` runs for hours; EKS/GKE exec-plugin tokens last minutes (tests/support/exec_plugin.py)."""
    from tests.support.plugin_kubeconfig import expiring_tokens, issued_tokens

    ttl = 600
    clock, path, issued = expiring_tokens(cluster, tmp_path, ttl)
    await add_job(cluster, "alpha", phase="Running")
    # Client.from_kubeconfig(path) is Client(load_connection(path)); the clock is the test's.
    client = Client(await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock)))
    path_ = jobs_path("team-a", "alpha")
    assert (await asyncio.to_thread(client.get, path_))["metadata"]["name"] == "alpha"
    clock.advance(ttl + 1)  # expired: reloaded ahead of the call, nothing refused
    assert not cluster.authenticate(issued_tokens(issued)[0])
    assert (await asyncio.to_thread(client.get, path_))["metadata"]["name"] == "alpha"
    assert len(issued_tokens(issued)) == 2 and all(a.accepted for a in cluster.auth_log)
    issued.write_text("", encoding="utf-8")  # the issuer revokes every token
    assert (await asyncio.to_thread(client.get, path_))["metadata"]["name"] == "alpha"
    assert [a.accepted for a in cluster.auth_log][-2:] == [False, True]


async def test_client_shared_by_threads_runs_the_exec_plugin_once_per_expiry(cluster: Cluster, tmp_path: Path) -> None:
    """The SDK calls one Client from several threads (an async watch's thread beside other calls).
    client-go's exec authenticator holds a mutex across the check and the plugin run, so concurrent
    requests with expired credentials run it once (getCreds, plugin/pkg/client/auth/exec/exec.go:401-414
    @ v0.36.3); the Client checked and reloaded with no lock, each thread running the plugin."""
    from tests.support.plugin_kubeconfig import expiring_tokens, issued_tokens

    ttl = 600
    clock, path, issued = expiring_tokens(cluster, tmp_path, ttl)
    await add_job(cluster, "alpha", phase="Running")
    client = Client(await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock)))
    path_ = jobs_path("team-a", "alpha")
    clock.advance(ttl + 1)
    answers = await asyncio.gather(*(asyncio.to_thread(client.get, path_) for _ in range(4)))
    assert [a["metadata"]["name"] for a in answers] == ["alpha"] * 4
    assert len(issued_tokens(issued)) == 2, "the load, then one reload for the 4 concurrent calls"
    assert all(a.accepted for a in cluster.auth_log)


# --- watch ----------------------------------------------------------------------------------------


async def _start_watch(config: Path, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *KUBETUNE,
        "watch",
        name,
        "--events-interval",
        "0.2",
        env=cli_env(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_watch_follows_progress_and_events_and_exits_0_on_success(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "qwen", phase="Pending")
    proc = await _start_watch(config, "qwen")
    await eventually(lambda: cluster.open_watches > 0, what="the watch")
    await set_status(cluster, "qwen", phase="Running", progress=progress(10, 40, 2.5))
    await post_event(cluster, "qwen", "Created", "created PyTorchJob team-a/qwen")
    await asyncio.sleep(0.5)
    await set_status(cluster, "qwen", progress=progress(30, 40, 1.25))
    await asyncio.sleep(0.5)
    await set_status(cluster, "qwen", phase="Succeeded", progress=progress(40, 40, 1.0, eta=0), message="trained")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    phases = re.findall(r"phase (\w+)", text)
    assert phases == ["Pending", "Running", "Succeeded"]
    # an Event is stamped with its own time (lastTimestamp 2026-11-30T12:00:00Z), not when watch saw it
    stamp = datetime.fromisoformat("2026-11-30T12:00:00+00:00").astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert f"{stamp} Normal Created: created PyTorchJob team-a/qwen" in text
    assert "progress 10/40 (25%) loss 2.5000" in text and "progress 40/40 (100%) loss 1.0000" in text


async def test_watch_exits_1_on_failure_and_shows_the_warning(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "bad", phase="Running", progress=progress(3, 40, 2.0))
    proc = await _start_watch(config, "bad")
    await eventually(lambda: cluster.open_watches > 0, what="the watch")
    await post_event(cluster, "bad", "TrainingFailed", "exit 4: CUDA out of memory", type_="Warning")
    await asyncio.sleep(0.5)
    await set_status(cluster, "bad", phase="Failed", message="exit 4: CUDA out of memory")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "Warning TrainingFailed: exit 4: CUDA out of memory" in out.decode()
    assert "phase Failed: exit 4: CUDA out of memory" in out.decode()


async def test_watch_exits_1_when_the_job_is_deleted_and_1_when_it_never_existed(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "gone", phase="Running")
    proc = await _start_watch(config, "gone")
    await eventually(lambda: cluster.open_watches > 0, what="the watch")
    await cluster.remove(*FTJ, "team-a", "gone")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and "was deleted" in out.decode()
    code, _, err = await run_cli(["watch", "never"], config)
    assert code == 1 and "not found" in err


async def test_watch_exits_0_at_once_for_a_job_that_already_succeeded(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "done", phase="Succeeded", progress=progress(40, 40, 1.0, eta=0))
    code, out, _ = await run_cli(["watch", "done"], config)
    assert code == 0 and "phase Succeeded" in out


# --- screens through a pseudo-terminal --------------------------------------------------------------


async def _watch_in_pty(
    cluster: Cluster, config: Path, name: str, columns: int, steps: list[tuple[int, float]]
) -> tuple[int, pyte.Screen]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cli_env(config) | {"COLUMNS": str(columns), "TERM": "xterm"}
    proc = await asyncio.create_subprocess_exec(
        *KUBETUNE, "watch", name, "--events-interval", "0.2", env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    reader = loop.run_in_executor(None, _drain, master, chunks)
    await eventually(lambda: cluster.open_watches > 0, what="the watch")
    await post_event(
        cluster, name, "Created", "created PyTorchJob team-a/" + name + " with a long message that must not wrap"
    )
    for step, loss in steps:
        await set_status(cluster, name, phase="Running", progress=progress(step, 100, loss, eta=3600 - 30 * step))
        await asyncio.sleep(0.3)
    await set_status(cluster, name, phase="Succeeded", progress=progress(100, 100, steps[-1][1], eta=0))
    code = await asyncio.wait_for(proc.wait(), 30)
    await asyncio.wait_for(reader, 10)
    screen = pyte.Screen(columns, 24)
    stream = pyte.ByteStream(screen)
    stream.feed(b"".join(chunks))
    return code, screen


async def _run_in_pty(args: list[str], config: Path, columns: int) -> tuple[int, pyte.Screen]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cli_env(config) | {"COLUMNS": str(columns), "TERM": "xterm"}
    proc = await asyncio.create_subprocess_exec(*KUBETUNE, *args, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    reader = asyncio.get_running_loop().run_in_executor(None, _drain, master, chunks)
    code = await asyncio.wait_for(proc.wait(), 60)
    await asyncio.wait_for(reader, 10)
    screen = pyte.Screen(columns, 24)
    pyte.ByteStream(screen).feed(b"".join(chunks))
    return code, screen


@pytest.mark.parametrize("columns", [120, 40], ids=["wide", "narrow"])
async def test_get_table_in_a_terminal(cluster: Cluster, tmp_path: Path, columns: int) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "alpha", phase="Running", progress=progress(45, 100, 1.2345))
    await add_job(cluster, "gamma", namespace="team-b", phase="Pending")
    code, screen = await _run_in_pty(["get", "-A"], config, columns)
    assert code == 0
    rows = _rows(screen)
    # One screen row per table row: long rows are cut at the edge like kubectl's, never wrapped.
    assert (
        len(rows) == 3
        and rows[0].startswith("NAMESPACE")
        and rows[1].startswith("team-a")
        and rows[2].startswith("team-b")
    )
    if columns >= 100:
        assert bar(45, 10) + "  45% 45/100" in rows[1] and "1.2345" in rows[1]


def _drain(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)


def _rows(screen: pyte.Screen) -> list[str]:
    return [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.parametrize("columns", [120, 40], ids=["wide", "narrow"])
async def test_watch_screen_in_a_terminal(cluster: Cluster, tmp_path: Path, columns: int) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(cluster, "tty", phase="Pending")
    steps = [(10, 3.0), (20, 2.4), (35, 1.9), (50, 1.6), (70, 1.2)]
    code, screen = await _watch_in_pty(cluster, config, "tty", columns, steps)
    assert code == 0
    rows = _rows(screen)
    # Every line is either a timestamped log line or the one status line: no fragments of a
    # wrapped or half-erased redraw anywhere on the screen.
    # (an Event carries its own time: with its date when it is not from today)
    stamp = r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d "
    timestamped = [r for r in rows if re.match(stamp, r)]
    status = [r for r in rows if not re.match(stamp, r)]
    assert len(status) == 1, rows
    assert all(len(r) < columns for r in rows)
    assert [re.search(r"phase (\w+)", r).group(1) for r in timestamped if " phase " in r] == [
        "Pending",
        "Running",
        "Succeeded",
    ]  # type: ignore[union-attr]
    final = status[0]
    assert final.startswith("█") and "Succeeded" in final and "100.0%" in final
    if columns >= 100:
        assert "100/100" in final and "loss 1.2000" in final
        assert sparkline([3.0, 2.4, 1.9, 1.6, 1.2], 16) in final  # the loss history, highest first
        assert any("Normal Created: created PyTorchJob team-a/tty with a long message" in r for r in timestamped)
    else:
        assert any(
            "Normal Created: cre" in r and len(r) == columns - 1 for r in timestamped
        )  # cut at the edge, not wrapped


def test_status_line_fits_every_width() -> None:
    job = {"status": {"phase": "Running", "progress": progress(512, 1000, 1.23456, eta=4000)}}
    losses = [3.0, 2.0, 1.5, 1.2]
    for width in range(10, 140):
        line = status_line(job, losses, width)
        assert len(line) < width and "Running" in line[:width]
    assert "eta 1h6m" in status_line(job, losses, 120) and sparkline(losses, 16) in status_line(job, losses, 120)
    assert (bar(0, 4), bar(100, 4), bar(50, 4), bar(12.5, 4), bar(250, 2)) == ("····", "████", "██··", "▌···", "██")


# --- logs -----------------------------------------------------------------------------------------


async def test_logs_picks_rank_0s_pod_and_rank_n(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(
        cluster, "qwen", phase="Running", job={"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "qwen"}
    )
    code, _, err = await run_cli(["logs", "qwen"], config)
    assert code == 1 and "no master pod" in err
    master = await start_pod(cluster, "PyTorchJob", "team-a", "qwen")
    worker = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "qwen-worker-0",
            "namespace": "team-a",
            "labels": {
                "training.kubeflow.org/job-name": "qwen",
                "training.kubeflow.org/replica-type": "worker",
                "training.kubeflow.org/replica-index": "0",
            },
        },
        "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]},
        "status": {"phase": "Running"},
    }
    await cluster.put_object(*PODS, worker)
    cluster.append_log("team-a", master, "rank 0 line 1", "rank 0 line 2", "rank 0 line 3")
    cluster.append_log("team-a", "qwen-worker-0", "node 1 line")
    code, out, err = await run_cli(["logs", "qwen"], config)
    assert code == 0, err
    assert out == "rank 0 line 1\nrank 0 line 2\nrank 0 line 3\n"
    code, out, _ = await run_cli(["logs", "qwen", "--tail", "1"], config)
    assert out == "rank 0 line 3\n"
    code, out, _ = await run_cli(["logs", "qwen", "--rank", "1", "-n", "team-a"], config)
    assert code == 0 and out == "node 1 line\n"


async def test_logs_follow_streams_until_the_pod_ends(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    await add_job(
        cluster, "fol", phase="Running", job={"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "fol"}
    )
    pod = await start_pod(cluster, "PyTorchJob", "team-a", "fol")
    cluster.append_log("team-a", pod, "before")
    proc = await asyncio.create_subprocess_exec(
        *KUBETUNE,
        "logs",
        "fol",
        "-f",
        env=cli_env(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"before\n"
    cluster.append_log("team-a", pod, "while following")
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"while following\n"
    assert proc.returncode is None  # still following
    cluster.append_log("team-a", pod, "last words")
    await start_pod(cluster, "PyTorchJob", "team-a", "fol", phase="Succeeded")
    rest, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0 and rest == b"last words\n"


def test_rank_to_pod_mapping() -> None:
    assert pod_for_rank("PyTorchJob", None) == ("master", 0, "pytorch")
    assert pod_for_rank("PyTorchJob", 2) == ("worker", 1, "pytorch")
    assert pod_for_rank("MPIJob", None) == ("launcher", 0, "launcher")
    assert pod_for_rank("MPIJob", 1) == ("worker", 1, "worker")


# --- plot -----------------------------------------------------------------------------------------


async def test_plot_from_an_outputs_folder_and_from_status(cluster: Cluster, tmp_path: Path) -> None:
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    run = tmp_path / "outputs" / "team-a" / "qwen"
    run.mkdir(parents=True)
    lines = [
        f'{{"current_steps": {i}, "total_steps": 20, "loss": {3.0 - i * 0.1:.2f}, "lr": 0.001}}' for i in range(1, 21)
    ]
    (run / "trainer_log.jsonl").write_text("\n".join(lines + ['{"current_steps": 20, "total_steps": 20}']) + "\n")
    png = tmp_path / "curve.png"
    code, out, err = await run_cli(["plot", str(run), "-o", str(png)], config)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "20 points" in out and "2.9000 -> 1.0000" in out

    # From the cluster: rank 0's progress lines while its pod exists, else the one point in status.
    await add_job(
        cluster,
        "live",
        phase="Running",
        progress=progress(7, 40, 2.25),
        job={"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "live"},
    )
    code, out, err = await run_cli(["plot", "live", "-o", str(tmp_path / "live.png")], config)
    assert code == 0 and "1 point from FineTuneJob team-a/live status" in out and "outputs folder" in err
    pod = await start_pod(cluster, "PyTorchJob", "team-a", "live")
    cluster.append_log(
        "team-a",
        pod,
        "starting",
        *(progress_line(s, 40, 3.0 - s / 10) for s in range(1, 8)),
        progress_line(7, 40, 2.3),
        "noise",
    )
    code, out, err = await run_cli(["plot", "live", "-o", str(tmp_path / "live.png")], config)
    assert code == 0, err
    assert f"7 points from pod team-a/{pod} log; loss 2.9000 -> 2.3000" in out
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "trainer_log.jsonl").write_text("")
    code, _, err = await run_cli(["plot", str(tmp_path / "empty")], config)
    assert code == 1 and "no loss values" in err
