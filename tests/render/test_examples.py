"""Every example renders to its committed golden manifests, and every rendered object is one
the API server (core objects) and the Kubeflow operators (their CRD schemas) accept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from kubetune.render import render
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import (
    EXAMPLES as EXAMPLES_DIR,
    OPERATOR_EXAMPLES,
    OPERATOR_OPTIONS,
    example_files,
    example_id,
    golden_path,
    golden_text,
    load_example,
    operator_golden_path,
    pod_templates,
    schema_errors,
)

EXAMPLES = example_files()


def test_examples_exist() -> None:
    names = {example_id(p) for p in EXAMPLES}
    assert {
        "finetune-full.yaml",
        "finetune-lora.yaml",
        "finetune-qlora.yaml",
        "finetune-multinode-mpijob.yaml",
        "seed/full-single-gpu.yaml",
        "seed/full-deepspeed.yaml",
        "seed/full-accelerate.yaml",
        "seed/lora-deepspeed.yaml",
        "seed/qlora-deepspeed.yaml",
    } <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_golden(example: Path) -> None:
    golden = golden_path(example)
    assert golden.exists(), (
        f"no golden file for {example_id(example)}: run .venv/bin/python -m tests.support.update_golden"
    )
    assert golden_text(example) == golden.read_text(encoding="utf-8"), (
        f"{example_id(example)} renders differently from {golden.name}; if intended, "
        "run .venv/bin/python -m tests.support.update_golden and review the diff"
    )


@pytest.mark.parametrize("name", OPERATOR_EXAMPLES)
def test_operator_golden(name: str) -> None:
    """As the chart's operator renders them (with the progress intake URL)."""
    example = EXAMPLES_DIR / name
    golden = operator_golden_path(example)
    assert golden.exists(), f"no golden file for operator/{name}: run .venv/bin/python -m tests.support.update_golden"
    assert golden_text(example, OPERATOR_OPTIONS) == golden.read_text(encoding="utf-8"), (
        f"{name} renders differently from operator/{golden.name}; if intended, "
        "run .venv/bin/python -m tests.support.update_golden and review the diff"
    )


RENDER_ALL = """
import sys
from tests.support.renderlib import OPERATOR_OPTIONS, TRAINJOB_OPTIONS, example_files, golden_text
for path in example_files():
    for options in (None, OPERATOR_OPTIONS, TRAINJOB_OPTIONS):
        sys.stdout.write(golden_text(path, options))
"""


def test_render_is_the_same_bytes_in_processes_with_other_hash_seeds() -> None:
    """Every example rendered as the golden files hold it (PyTorchJob/MPIJob with spec.serve's objects,
    the operator's options, the TrainJob backend), in two processes whose str hashes differ
    (PYTHONHASHSEED): a set or dict iterated in hash order would reorder the output (GitOps diffs,
    needless re-applies). Rendering twice in one process could not see that: both share one seed."""
    # The repository root, whatever pytest's working directory: the child imports tests.support.
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path}
        done = subprocess.run(
            [sys.executable, "-c", RENDER_ALL], env=env, capture_output=True, timeout=scaled(60), check=False
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        outputs.append(done.stdout)
    assert outputs[0].count(b"\nkind: ") > 3 * len(EXAMPLES), "every example rendered"
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_core_objects_pass_kubernetes_schema(example: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    check_core_objects(kubernetes_validate, render(load_example(example)))


@pytest.mark.parametrize("name", OPERATOR_EXAMPLES)
def test_operator_rendered_core_objects_pass_kubernetes_schema(name: str) -> None:
    """The projected token volume and its mount are valid Pod fields (strict schema)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    check_core_objects(kubernetes_validate, render(load_example(EXAMPLES_DIR / name), OPERATOR_OPTIONS))


def check_core_objects(kubernetes_validate: Any, rendered: Any) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(rendered.config_map, version, strict=True)
    # Each replica's pod template, checked as a core Pod with the strict (no unknown fields) schema.
    for role, template in pod_templates(rendered.workload).items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"x-{role.lower()}", **template["metadata"]},
            "spec": template["spec"],
        }
        kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_workload_passes_upstream_crd_schema(example: Path) -> None:
    require_upstream_crds()
    rendered = render(load_example(example))
    assert schema_errors(rendered.workload) == []
