"""examples/notebooks/finetune.ipynb, cell by cell, as a user runs it: the cluster section against the
emulated API server with the real operator reconciling (Kubeflow played by the test), the local section
on the tiny model through ``kubetune.run_local``.

The cells run in order in one namespace, as one kernel runs them; the parameters cell is replaced by the
test's values (papermill's convention: the cell tagged ``parameters``).  No Jupyter kernel: nbclient and
ipykernel would add compiled packages (pyzmq, debugpy) to the environment, and what is checked is the
notebook's code, which runs the same in a kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FTJ, PTJ, ROOT, eventually
from emulator import Cluster
from kubeflow import progress_line, set_condition, stage_line, start_pod
from test_terminal import kubeconfig

NOTEBOOK = ROOT / "examples" / "notebooks" / "finetune.ipynb"
NS = "team-a"


def cells(tag: str) -> list[str]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and tag in c["metadata"].get("tags", [])]


def run_cells(sources: list[str], namespace: dict[str, Any]) -> list[Any]:
    """Each cell as a kernel runs it: statements, then the value of a last expression (what the notebook shows)."""
    import ast

    shown = []
    for source in sources:
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the repository's own notebook
        shown.append(eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace) if last is not None else None)  # noqa: S307
    return shown


def test_the_notebook_is_a_valid_v4_notebook_with_both_sections() -> None:
    assert cells("parameters") and cells("cluster") and cells("local")
    assert all(isinstance(c, str) and c for c in cells("cluster") + cells("local"))


async def test_notebook_cluster_section(cluster: Cluster, operator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await operator()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(cluster, tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    params = {"JOB_FILE": str(ROOT / "examples/finetune-lora.yaml"), "NAMESPACE": None, "TIMEOUT": 60}
    out = io.StringIO()

    def notebook() -> list[Any]:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            return run_cells(cells("cluster"), dict(params))

    ran = asyncio.ensure_future(asyncio.to_thread(notebook))
    await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora") or ran.done(), what="the PyTorchJob")
    assert not ran.done() or ran.result() is None, "the notebook ended before the job ran"
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
    cluster.append_log(NS, pod, stage_line("train", "start"), *(progress_line(s, 20, 3.0 - s / 10) for s in range(1, 21)), stage_line("train", "end"))
    await eventually(lambda: ((cluster.read(*FTJ, NS, "qwen-lora") or {}).get("status") or {}).get("progress", {}).get("step") == 20, what="progress 20")
    await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
    shown = await asyncio.wait_for(ran, 60)

    text = out.getvalue()
    assert "qwen-lora lora - True" in text  # the planner's verdict on an H100
    assert f"created {NS}/qwen-lora" in text
    assert "Succeeded 20/20 (100%)" in text
    assert f"20 logged steps from pod {NS}/{pod} log" in text
    losses = shown[3]
    assert losses[-1] == (20, pytest.approx(1.0))
    figure = shown[4]
    assert len(figure.axes[0].lines[0].get_xdata()) == 20


@pytest.mark.slow
@pytest.mark.train
def test_notebook_local_section_trains_the_tiny_model(tmp_path: Path, tiny_assets: Any) -> None:
    from kubetune.trainer.tiny import tiny_job
    from trainerlib import isolated_env

    job_file = tmp_path / "job-local.yaml"
    job_file.write_text(yaml.safe_dump(tiny_job("nb-local", tiny_assets, method="full", max_steps=4)))
    params = {
        "LOCAL_JOB_FILE": str(job_file),
        "LOCAL_DATASETS": str(tiny_assets.datasets_dir),
        "LOCAL_MODELS": str(tiny_assets.models_dir),
        "LOCAL_OUTPUT": str(tmp_path / "outputs"),
    }
    env = isolated_env(tmp_path / "env")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            shown = run_cells(cells("local"), dict(params))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert f"exit 0 -> {tmp_path / 'outputs' / 'default' / 'nb-local'}" in out.getvalue()
    first, last = shown[0]
    assert [s for s, _ in first] == [1, 2, 3] and last[-1][0] == 4
    assert len(shown[1].axes[0].lines[0].get_xdata()) == 4
