"""One logger hierarchy that follows the package names (issue 23): the operator's loggers are its
modules' names, so ``logging.getLogger("kubetune.controller").setLevel(...)`` (or a filter on
``kubetune.controller.act``) reaches exactly the operator's messages, and a log line's logger names the
file that wrote it."""

from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
from pathlib import Path

import kubetune.controller

PACKAGE = Path(kubetune.controller.__file__).resolve().parents[1]


def test_every_controller_module_logs_under_its_own_name() -> None:
    loggers = {}
    for info in pkgutil.walk_packages(kubetune.controller.__path__, prefix="kubetune.controller."):
        module = importlib.import_module(info.name)
        log = getattr(module, "log", None)
        if isinstance(log, logging.Logger):
            loggers[info.name] = log.name
    assert {"kubetune.controller.act", "kubetune.controller.loop", "kubetune.controller.sweeps.loop"} <= set(loggers)
    assert {m: n for m, n in loggers.items() if n != m} == {}


def test_no_logger_is_named_by_hand_inside_the_package() -> None:
    """A literal ``getLogger("kubetune...")`` is how ``kubetune.operator.*`` drifted from the modules."""
    literal = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("kubetune")
            ):
                literal.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert literal == []
