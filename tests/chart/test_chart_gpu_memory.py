"""The Helm value gpuMemoryByProduct reaches the operator as the table the feasibility check reads."""

from __future__ import annotations

from typing import Any

from chartlib import default_objects, needs_helm, one, template, template_error  # noqa: F401 (fixtures)

from kubetune.plan import product_memory_table
from kubetune.plan.feasibility import PRODUCT_TABLE_ENV, product_table, product_table_from_env

pytestmark = needs_helm


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_default_table_is_the_planners_gpu_catalogue(default_objects: list[dict[str, Any]]) -> None:
    """The chart adds nothing by default: the operator's table is the built-in one, which
    `kubetune validate` uses too (kubetune.plan.feasibility.product_table)."""
    env = _env(default_objects)
    assert product_table_from_env(env) == {}
    table = product_table(env)
    assert table == product_memory_table()
    assert table["NVIDIA-H100-80GB-HBM3"] == "81559Mi"


def test_own_products_extend_the_built_in_table_and_a_bad_quantity() -> None:
    objects = template("--set-json", 'gpuMemoryByProduct={"NVIDIA-H800":"81559Mi","NVIDIA-L4":"22000Mi"}')
    assert product_table(_env(objects)) == {**product_memory_table(), "NVIDIA-H800": "81559Mi", "NVIDIA-L4": "22000Mi"}
    err = template_error("--set", "gpuMemoryByProduct.NVIDIA-H800=lots")
    assert "gpuMemoryByProduct" in err
    assert PRODUCT_TABLE_ENV in _env(objects)
