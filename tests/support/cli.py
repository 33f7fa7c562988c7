"""The `kubetune` CLI run as a user runs it, in a subprocess, against an emulated API server through a kubeconfig
with a bearer token: for the tests of the terminal commands and the SDK."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tests.support.apiserver.emulator import Cluster
from tests.support.harness import FTJ, example_job

KUBETUNE = [sys.executable, "-m", "kubetune"]


def kubeconfig(cluster: Cluster, path: Path, token: str = "test-token") -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster: {{server: "{str(cluster.url).rstrip('/')}"}}
users:
- name: u
  user: {{token: {token}}}
contexts:
- name: emu
  context: {{cluster: emu, user: u, namespace: team-a}}
current-context: emu
""",
        encoding="utf-8",
    )
    return path


def cli_env(config: Path) -> dict[str, str]:
    """The environment of the test process, pointed at this kubeconfig (and never at an in-cluster account)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST",)}
    env["KUBECONFIG"] = str(config)
    return env


async def run_cli(args: list[str], config: Path, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *KUBETUNE, *args, env=cli_env(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def add_job(cluster: Cluster, name: str, namespace: str = "team-a", **status: Any) -> None:
    doc = example_job(name, namespace)
    doc["status"] = status
    await cluster.put_object(*FTJ, doc)
