"""The Helm value gpuMemoryByProduct reaches the operator as the table the feasibility check reads."""

from __future__ import annotations

from typing import Any

from chartlib import default_objects, needs_helm, one, template, template_error  # noqa: F401 (fixtures)

from kubetune.plan import product_memory_table
from kubetune.plan.feasibility import PRODUCT_TABLE_ENV, product_table_from_env

pytestmark = needs_helm


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_default_table_is_the_planners_gpu_catalogue(default_objects: list[dict[str, Any]]) -> None:
    table = product_table_from_env(_env(default_objects))
    assert table == product_memory_table()
    assert table["NVIDIA-H100-80GB-HBM3"] == "81008Mi"  # torch's 79.11 GiB (plan/gpus.py)


def test_own_products_and_a_bad_quantity() -> None:
    objects = template("--set-json", 'gpuMemoryByProduct={"NVIDIA-H800":"81559Mi"}')
    assert product_table_from_env(_env(objects)) == {**product_memory_table(), "NVIDIA-H800": "81559Mi"}
    err = template_error("--set", "gpuMemoryByProduct.NVIDIA-H800=lots")
    assert "gpuMemoryByProduct" in err
    assert PRODUCT_TABLE_ENV in _env(objects)


# Compute capability per GPU family, from NVIDIA's CUDA GPU list (developer.nvidia.com/cuda-gpus),
# and the host CPU architecture where it is not x86-64. Longest match first.
COMPUTE_CAPABILITY = [
    ("GH200", (9, 0), "arm64"), ("H200", (9, 0), None), ("H100", (9, 0), None), ("H800", (9, 0), None),
    ("B200", (10, 0), None), ("A100", (8, 0), None), ("A800", (8, 0), None), ("A10G", (8, 6), None),
    ("A10", (8, 6), None), ("A6000", (8, 6), None), ("RTX-3090", (8, 6), None), ("L40S", (8, 9), None),
    ("L40", (8, 9), None), ("L4", (8, 9), None), ("RTX-4090", (8, 9), None), ("V100", (7, 0), None), ("T4", (7, 5), None),
]


def test_the_default_gpu_table_lists_only_gpus_the_trainer_image_runs_on(default_objects: list[dict[str, Any]]) -> None:
    import re
    from pathlib import Path

    dockerfile = (Path(__file__).resolve().parents[2] / "images" / "trainer" / "Dockerfile").read_text()
    archs = re.search(r'^ARG DS_CUDA_ARCHS="([^"]+)"', dockerfile, re.M).group(1)  # type: ignore[union-attr]
    sass, ptx = set(), set()
    for cc in archs.split(";"):
        major, minor = (int(x) for x in cc.split("+")[0].split("."))
        sass.add((major, minor))
        if cc.endswith("+PTX"):
            ptx.add((major, minor))
    table = product_table_from_env(_env(default_objects))  # what the chart gives the operator
    assert table
    for product in table:
        family = next(((cap, host) for name, cap, host in COMPUTE_CAPABILITY if name in product), None)
        assert family is not None, f"{product}: add its compute capability to this test"
        cap, host = family
        # A cubin runs on its major version at an equal or higher minor; PTX on any newer GPU.
        runs = any(cap[0] == s[0] and cap[1] >= s[1] for s in sass) or any(cap >= p for p in ptx)
        assert runs and host is None, f"{product} (sm_{cap[0]}{cap[1]}, {host or 'x86-64'}) is in the chart's GPU table but the trainer image cannot run it (built for {archs}, linux/amd64)"
