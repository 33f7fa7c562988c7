"""spec.tracking with the real integrations: TensorBoard event files on the outputs volume, and a
real ``mlflow server`` on 127.0.0.1 that records the run's metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.api import contract
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.trainerlib import free_port, make_pod, run_trainer, stage_lines
from tests.support.kt_time import scaled, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.train]


# Full mlflow (the server) lives in an environment of its own, made by .ci/install: in the test venv
# it would bring scikit-learn, which transformers then imports into every training process of the
# suite, where the image (mlflow-skinny, no scikit-learn) imports nothing of the kind. The client
# below is the image's mlflow-skinny from the test venv.
MLFLOW_SERVER = Path(__file__).resolve().parents[2] / ".tools" / "mlflow" / "bin" / "mlflow"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    exe = MLFLOW_SERVER
    if not exe.is_file():
        pytest.skip(f"no mlflow tracking server at {exe}: `bash .ci/install` puts full mlflow there")
    port = free_port()
    root = tmp_path / "mlflow"
    root.mkdir()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + scaled(180)
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.timeout(300)  # a real mlflow server start (its own deadline: 180 s) and a training
def test_tensorboard_by_default_and_mlflow_records_the_runs_metrics(
    tmp_path: Path, tiny_assets: TinyAssets, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - mlflow-skinny (train extra)

    manifest = tiny_job("tracked", tiny_assets, method="full", max_steps=3)
    manifest["spec"]["tracking"] = {"mlflow": {"trackingUri": mlflow_server, "experiment": "kubetune-test"}}
    pod = make_pod(tmp_path, manifest, tiny_assets)
    assert pod.env["MLFLOW_TRACKING_URI"] == mlflow_server
    result = run_trainer(pod.env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not [s for s in stage_lines(result.stdout) if s["event"] == "failed"]

    # TensorBoard: on by default, event files under the job's outputs folder.
    events = list((pod.output_dir / contract.TENSORBOARD_SUBDIR).rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert len(acc.Scalars("train/loss")) == 3

    # MLflow: the real server (full mlflow at the image's client version: its /version route,
    # mlflow/server/__init__.py:110-113 @3.17.2) has the run, named after the job, with the loss of every step.
    from importlib import metadata  # noqa: PLC0415

    with urllib.request.urlopen(f"{mlflow_server}/version", timeout=scaled(10)) as resp:
        assert resp.read().decode() == metadata.version("mlflow-skinny")
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("kubetune-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "tracked" and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    logged = [
        json.loads(line) for line in (pod.output_dir / "trainer_log.jsonl").read_text().splitlines() if line.strip()
    ]
    assert [round(m.value, 4) for m in sorted(history, key=lambda m: m.step)] == [
        round(r["loss"], 4) for r in logged if "loss" in r
    ]
    shutil.rmtree(tmp_path / "mlflow", ignore_errors=True)
