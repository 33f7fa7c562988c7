"""A kubeconfig whose user is a real exec plugin (tests/support/exec_plugin.py) that issues short-lived tokens,
and the tokens it issued: for the credential tests of the operator's client, the SDK and the terminal commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.kt_time import ForwardClock

if TYPE_CHECKING:
    from tests.support.apiserver.emulator import Cluster

PLUGIN = Path(__file__).with_name("exec_plugin.py")
NS = "team-a"


def write_kubeconfig(
    tmp_path: Path,
    server: str,
    ttl: float,
    api_version: str = "client.authentication.k8s.io/v1",
    clock: ForwardClock | None = None,
) -> tuple[Path, Path]:
    """A kubeconfig whose exec plugin issues tokens of ``ttl`` seconds (by ``clock``, when given)."""
    issued = tmp_path / "issued.jsonl"
    clock_env = (
        [{"name": "KT_CLOCK_OFFSET", "value": str(clock.offset_file)}]
        if clock is not None and clock.offset_file
        else []
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kt", "cluster": {"server": server}}],
        "contexts": [{"name": "kt", "context": {"cluster": "kt", "user": "plugin", "namespace": NS}}],
        "current-context": "kt",
        "users": [
            {
                "name": "plugin",
                "user": {
                    "exec": {
                        "apiVersion": api_version,
                        "command": sys.executable,
                        "args": [str(PLUGIN)],
                        "env": [
                            {"name": "KT_ISSUED", "value": str(issued)},
                            {"name": "KT_TOKEN_TTL", "value": str(ttl)},
                            *clock_env,
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path, issued


def expiring_tokens(cluster: Cluster, tmp_path: Path, ttl: float) -> tuple[ForwardClock, Path, Path]:
    """A kubeconfig for ``cluster`` whose plugin issues tokens of ``ttl`` seconds, and ``cluster`` checking
    them: the server's, the issuer's and the client's clock is one ForwardClock, so tokens expire without a
    wait.  Returns (clock, kubeconfig, issued-tokens file)."""
    from tests.support.apiserver.emulator import Tokens

    clock = ForwardClock(tmp_path / "clock")
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=ttl, clock=clock)
    cluster.authenticate = Tokens(issued=str(issued), clock=clock)
    return clock, path, issued


def issued_tokens(issued: Path) -> list[str]:
    return [json.loads(line)["token"] for line in issued.read_text(encoding="utf-8").splitlines()]
