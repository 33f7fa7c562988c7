"""Every top-level module of the package has its place in pyproject's import-linter layers, so no
module escapes the layering (``lint-imports`` only checks the modules a contract names)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "kubetune"


def _layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [m for line in layers["layers"] for m in re.split(r"\s*[|:]\s*", line)]  # independent (|) or not (:)


def test_every_top_level_module_is_a_layer() -> None:
    modules = {f"kubetune.{p.stem}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"kubetune.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert len(modules) >= 10, "the package's top-level modules were found"
    missing = sorted(modules - set(_layers()))
    assert missing == [], f"top-level modules in no import-linter layer (pyproject.toml): {missing}"


def test_every_layer_is_a_module() -> None:
    stale = [
        m
        for m in _layers()
        if not (PACKAGE / f"{m.removeprefix('kubetune.')}.py").is_file()
        and not (PACKAGE / m.removeprefix("kubetune.") / "__init__.py").is_file()
    ]
    assert stale == [], f"layers naming no module: {stale}"


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support: a `from test_x import y` works only under pytest's default import
    mode, with the importing file's folder on sys.path, and runs the other module's tests' setup twice."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            local = [n for n in names if n.split(".")[0] in ("tests",) or "." not in n]  # not aiohttp.test_utils
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in local if n.split(".")[-1].startswith("test_")]
    assert offenders == [], offenders
