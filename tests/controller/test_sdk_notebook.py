"""examples/notebooks/finetune.ipynb executed as Jupyter executes it: nbclient drives a real IPython kernel
(ipykernel, started from this environment's Python) over ZeroMQ, cell by cell, and the test reads the
outputs the notebook would show.  The cluster section runs against the emulated API server with the real
operator reconciling (Kubeflow played by the test); the local section trains the tiny model through
``kubetune.run_local``.  The parameters cell (tagged ``parameters``, papermill's convention) gets the
test's values; each test keeps its own section's cells, as a user without a cluster runs only the local
ones.

What a kernel proves that running the cells in the test's own process cannot: the notebook's code runs in
a separate interpreter that finds kubetune, the kubeconfig and the API server the way a user's kernel
does (environment and working directory only); what the notebook shows is what IPython's display
machinery makes of each value (the job's ``_repr_html_`` card, the matplotlib figure as an image, the
tqdm bar on the kernel's stderr); a cell that raises stops the run with the kernel's traceback.

What only a real Jupyter front-end (JupyterLab, VS Code) can still prove: how the card's HTML and the
progress bar are drawn, and the widget version of the bar (``tqdm.auto`` picks ``tqdm.notebook`` only
when ipywidgets is installed; without it the kernel gets the text bar plus tqdm's "IProgress not found"
warning, which the test accepts because that is what such a user sees).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode

from tests.support.harness import FTJ, PTJ, ROOT, eventually
from tests.support.apiserver.emulator import Cluster
from tests.support.kt_time import scaled
from tests.support.kubeflow import progress_line, set_condition, stage_line, start_pod
from tests.support.cli import kubeconfig

NOTEBOOK = ROOT / "examples" / "notebooks" / "finetune.ipynb"
NS = "team-a"


def notebook(section: str, params: dict[str, Any]) -> NotebookNode:
    """The notebook with the test's parameters and the code cells of one section (tag ``cluster`` or ``local``)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    kept = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags:
            cell.source = "\n".join(f"{key} = {value!r}" for key, value in params.items())
        elif cell.cell_type == "code" and section not in tags:
            continue
        kept.append(cell)
    nb.cells = kept
    return nb


class Kernel:
    """One IPython kernel for one notebook run, everything it writes under ``home``.

    The kernelspec is registered in ``home`` (not the user's Jupyter dirs) under the notebook's own
    kernelspec name, ``python3``, and launches this interpreter's ipykernel, so the kernel imports the
    kubetune under test.  nbclient owns the kernel's lifetime (``cleanup_kc=True``): nbclient/client.py
    ``async_setup_kernel`` (0.11.0, lines 612-667) shuts it down and stops the channels in a ``finally``,
    also when a cell raises (``CellExecutionError``, ``_check_raise_for_error`` lines 899-918) or a cell
    passes ``timeout`` (``_async_handle_timeout`` lines 842-858); ``startup_timeout`` bounds
    ``wait_for_ready`` (lines 554-580).  Without ``cleanup_kc`` a kernel manager passed in (``km=``) is left
    running (``cleanup_kc = kwargs.pop("cleanup_kc", self.owns_km)``, line 625).
    """

    def __init__(self, home: Path, env: dict[str, str], cell_timeout: float) -> None:
        self.home = home
        specs = home / "kernels"
        (specs / "python3").mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (specs / "python3" / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}), encoding="utf-8"
        )
        for sub in ("runtime", "data", "config", "ipython", "mpl"):
            (home / sub).mkdir()
        self.env = {
            **env,
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "IPYTHONDIR": str(home / "ipython"),
            "MPLCONFIGDIR": str(home / "mpl"),
        }
        self.km = AsyncKernelManager(
            kernel_name="python3",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)], ensure_native_kernel=False),
            connection_file=str(home / "runtime" / "kernel.json"),
        )
        self.pid: int | None = None
        self.ports: list[int] = []
        self.cell_timeout = int(scaled(cell_timeout))

    async def run(self, nb: NotebookNode) -> NotebookNode:
        client = NotebookClient(
            nb, km=self.km, timeout=self.cell_timeout, startup_timeout=int(scaled(60)), kernel_name="python3"
        )

        def started(notebook: NotebookNode) -> None:
            provisioner: Any = self.km.provisioner
            self.pid = provisioner.pid
            info = self.km.get_connection_info()
            self.ports = [int(info[k]) for k in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")]

        client.on_notebook_start = started
        return await client.async_execute(cleanup_kc=True, env=self.env, cwd=str(self.home))

    def assert_cleaned_up(self) -> None:
        """No kernel process, no connection file, none of its five ports still listening."""
        assert self.pid is not None and self.ports, "the kernel never started"
        assert not self.km.has_kernel
        if psutil.pid_exists(self.pid):
            assert psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE, f"kernel process {self.pid} still running"
        assert not (self.home / "runtime" / "kernel.json").exists()
        listening = {c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        assert not listening & set(self.ports), f"kernel ports still listening: {sorted(listening & set(self.ports))}"


def outputs(cell: NotebookNode) -> tuple[str, str, dict[str, Any]]:
    """A cell's stdout, stderr and the data of its result (``execute_result``/``display_data``, merged)."""
    stdout = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    data: dict[str, Any] = {}
    for o in cell.outputs:
        if o.output_type in ("execute_result", "display_data"):
            data.update(o.data)
    return stdout, stderr, data


def cell_with(nb: NotebookNode, text: str) -> NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and text in c.source)


def assert_no_errors(nb: NotebookNode) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), "a code cell did not run"


def kernel_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "KUBERNETES_SERVICE_HOST" and not k.startswith(("PYTEST_", "KUBETUNE_"))
    }
    env.update(extra)
    return env


def test_the_notebook_is_a_valid_v4_notebook_with_both_sections() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert tags.count("parameters") == 1 and "cluster" in tags and "local" in tags
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"


@pytest.mark.timeout(240)
async def test_notebook_cluster_section_in_a_kernel(cluster: Cluster, operator: Any, tmp_path: Path) -> None:
    await operator()
    config = kubeconfig(cluster, tmp_path / "kubeconfig")
    params = {"JOB_FILE": str(ROOT / "examples/finetune-lora.yaml"), "NAMESPACE": None, "TIMEOUT": 120}
    nb = notebook("cluster", params)
    kernel = Kernel(tmp_path / "kernel", kernel_env(KUBECONFIG=str(config)), cell_timeout=180)

    ran = asyncio.ensure_future(kernel.run(nb))
    try:
        await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora") or ran.done(), timeout=90, what="the PyTorchJob")
        if ran.done():
            ran.result()  # the kernel's CellExecutionError, if a cell raised
            pytest.fail("the notebook ended before the job ran")
        await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Running")
        pod = await start_pod(cluster, "PyTorchJob", NS, "qwen-lora")
        cluster.append_log(
            NS,
            pod,
            stage_line("train", "start"),
            *(progress_line(s, 20, 3.0 - s / 10) for s in range(1, 21)),
            stage_line("train", "end"),
        )
        await eventually(
            lambda: (
                ((cluster.read(*FTJ, NS, "qwen-lora") or {}).get("status") or {}).get("progress", {}).get("step") == 20
            ),
            what="progress 20",
        )
        await set_condition(cluster, "PyTorchJob", NS, "qwen-lora", "Succeeded")
        done = await asyncio.wait_for(ran, scaled(120))
    finally:
        if not ran.done():
            ran.cancel()
            await asyncio.gather(ran, return_exceptions=True)
    kernel.assert_cleaned_up()

    assert_no_errors(done)
    assert "qwen-lora lora - True" in outputs(cell_with(done, "kubetune.plan("))[0]  # the planner's verdict on an H100
    assert f"created {NS}/qwen-lora" in outputs(cell_with(done, "client.create("))[0]
    stdout, stderr, _ = outputs(cell_with(done, "client.wait("))
    assert "Succeeded 20/20 (100%)" in stdout
    assert "20/20" in stderr  # tqdm's bar, drawn on the kernel's stderr, at its end
    _, _, card = outputs(cell_with(done, "client.get("))
    assert "FineTuneJob team-a/qwen-lora" in card["text/html"] and ">Succeeded</span>" in card["text/html"]
    stdout, _, shown = outputs(cell_with(done, "client.metrics("))
    assert f"20 logged steps from pod {NS}/{pod} log" in stdout
    last = ast.literal_eval(shown["text/plain"])
    assert last[-1][0] == 20 and last[-1][1] == pytest.approx(1.0)
    _, _, plot = outputs(cell_with(done, "client.plot("))
    assert "image/png" in plot, plot.keys()  # the loss curve, as the inline backend shows a Figure
    assert '"stage": "train", "event": "end"' in outputs(cell_with(done, "client.logs("))[0]  # rank 0's last log line


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(300)
async def test_notebook_local_section_trains_the_tiny_model_in_a_kernel(tmp_path: Path, tiny_assets: Any) -> None:
    from kubetune.trainer.tiny import tiny_job
    from tests.support.trainerlib import isolated_env

    job_file = tmp_path / "job-local.yaml"
    job_file.write_text(yaml.safe_dump(tiny_job("nb-local", tiny_assets, method="full", max_steps=4)))
    params = {
        "LOCAL_JOB_FILE": str(job_file),
        "LOCAL_DATASETS": str(tiny_assets.datasets_dir),
        "LOCAL_MODELS": str(tiny_assets.models_dir),
        "LOCAL_OUTPUT": str(tmp_path / "outputs"),
    }
    kernel = Kernel(tmp_path / "kernel", kernel_env(**isolated_env(tmp_path / "env")), cell_timeout=240)
    done = await kernel.run(notebook("local", params))
    kernel.assert_cleaned_up()

    assert_no_errors(done)
    stdout, _, shown = outputs(cell_with(done, "kubetune.run_local("))
    assert f"exit 0 -> {tmp_path / 'outputs' / 'default' / 'nb-local'}" in stdout
    first, last = ast.literal_eval(shown["text/plain"])
    assert [s for s, _ in first] == [1, 2, 3] and last[-1][0] == 4
    assert "image/png" in outputs(cell_with(done, "local_rows.plot("))[2]  # the loss curve
