"""The chart, the Python package and the default trainer image are released together."""

from __future__ import annotations

import ast
import re
import tomllib
from typing import Any

from tests.support.chartlib import CHART, ROOT, default_objects, load_yaml, needs_helm, one  # noqa: F401 (fixtures)


def package_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def module_version() -> str:
    text = (ROOT / "operator" / "kubetune" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    assert match, "no __version__ in operator/kubetune/__init__.py"
    return match.group(1)


def renderer_default_image() -> str:
    """DEFAULT_TRAINER_IMAGE from render/types.py, read without importing the renderer."""
    tree = ast.parse((ROOT / "operator" / "kubetune" / "render" / "types.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEFAULT_TRAINER_IMAGE" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError("DEFAULT_TRAINER_IMAGE not found in operator/kubetune/render/types.py")


def test_chart_version_and_app_version_follow_the_package() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert package_version() == module_version(), "pyproject.toml and kubetune.__version__ disagree"
    assert str(chart["version"]) == package_version(), "Chart.yaml version != pyproject.toml version"
    assert str(chart["appVersion"]) == package_version(), "Chart.yaml appVersion != pyproject.toml version"


@needs_helm
def test_default_trainer_image_is_the_renderers_default(default_objects: list[dict[str, Any]]) -> None:
    args = one(default_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--trainer-image={renderer_default_image()}" in args


@needs_helm
def test_operator_image_defaults_to_app_version(default_objects: list[dict[str, Any]]) -> None:
    image = one(default_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/kubetune/operator:{package_version()}"
