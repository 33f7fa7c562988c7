"""The Helm value gpuMemoryByProduct reaches the operator as the table the feasibility check reads."""

from __future__ import annotations

from typing import Any

from tests.support.chartlib import default_objects, needs_helm, one, template, template_error  # noqa: F401 (fixtures)

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
    assert table == product_memory_table()  # memory does not depend on the image
    assert table["NVIDIA-H100-80GB-HBM3"] == "81008Mi"  # torch's 79.11 GiB (plan/gpus.py)


def test_own_products_extend_the_built_in_table_and_a_bad_quantity() -> None:
    objects = template("--set-json", 'gpuMemoryByProduct={"NVIDIA-H800":"81559Mi","NVIDIA-L4":"22000Mi"}')
    assert product_table(_env(objects)) == {**product_memory_table(), "NVIDIA-H800": "81559Mi", "NVIDIA-L4": "22000Mi"}
    err = template_error("--set", "gpuMemoryByProduct.NVIDIA-H800=lots")
    assert "gpuMemoryByProduct" in err
    assert PRODUCT_TABLE_ENV in _env(objects)


# Compute capability per GPU family, from NVIDIA's CUDA GPU list (developer.nvidia.com/cuda-gpus),
# and the host CPU architecture where it is not x86-64. Longest match first.
COMPUTE_CAPABILITY = [
    ("GH200", (9, 0), "arm64"),
    ("H200", (9, 0), None),
    ("H100", (9, 0), None),
    ("H800", (9, 0), None),
    ("B200", (10, 0), None),
    ("A100", (8, 0), None),
    ("A800", (8, 0), None),
    ("A10G", (8, 6), None),
    ("A10", (8, 6), None),
    ("A6000", (8, 6), None),
    ("RTX-3090", (8, 6), None),
    ("L40S", (8, 9), None),
    ("L40", (8, 9), None),
    ("L4", (8, 9), None),
    ("RTX-4090", (8, 9), None),
    ("V100", (7, 0), None),
    ("T4", (7, 5), None),
]


def test_the_gpus_marked_for_the_stock_image_are_those_its_build_runs_on() -> None:
    """plan/gpus.py's in_image flag (shown by `kubetune plan --list-gpus`) is true exactly for the GPUs
    whose compute capability the trainer image's DeepSpeed/torch arch list covers, on an x86-64 host."""
    import re
    from pathlib import Path

    from kubetune.plan import GPUS

    dockerfile = (Path(__file__).resolve().parents[2] / "images" / "trainer" / "Dockerfile").read_text()
    archs = re.search(r'^ARG DS_CUDA_ARCHS="([^"]+)"', dockerfile, re.M).group(1)  # type: ignore[union-attr]
    sass, ptx = set(), set()
    for cc in archs.split(";"):
        major, minor = (int(x) for x in cc.split("+")[0].split("."))
        sass.add((major, minor))
        if cc.endswith("+PTX"):
            ptx.add((major, minor))
    for gpu in GPUS:
        family = next(((cap, host) for name, cap, host in COMPUTE_CAPABILITY if name in gpu.name), None)
        assert family is not None, f"{gpu.name}: add its compute capability to this test"
        cap, host = family
        # A cubin runs on its major version at an equal or higher minor; PTX on any newer GPU.
        runs = (any(cap[0] == s[0] and cap[1] >= s[1] for s in sass) or any(cap >= p for p in ptx)) and host is None
        assert gpu.in_image == runs, (
            f"{gpu.name} (sm_{cap[0]}{cap[1]}, {host or 'x86-64'}): in_image={gpu.in_image}, "
            f"but the image is built for {archs}, linux/amd64"
        )
