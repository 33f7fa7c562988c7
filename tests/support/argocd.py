"""Running Argo CD's health checks (Lua 5.1, Argo CD's dialect) on an object, for the tests under tests/argocd."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.kt_time import scaled

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "examples" / "argocd"
HARNESS = ROOT / "tests" / "argocd" / "harness.lua"
LUA = shutil.which("lua5.1")

needs_lua = pytest.mark.skipif(LUA is None, reason="lua5.1 missing: run `bash .ci/install-tools` (CI always does)")


def to_lua(value: Any) -> str:
    """A Lua literal for a JSON-like value, as Argo CD converts the live object (arrays 1-based)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(k)}] = {to_lua(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def run_check(check: Path, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    obj_file = tmp_path / "object.lua"
    obj_file.write_text("return " + to_lua(obj) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [LUA or "lua5.1", str(HARNESS), str(check), str(obj_file)], capture_output=True, text=True, timeout=scaled(30)
    )
    assert proc.returncode == 0, proc.stderr
    status, message = proc.stdout.split("\n", 1)
    return status, message.rstrip("\n")
