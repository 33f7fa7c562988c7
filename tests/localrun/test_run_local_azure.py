"""``kubetune run --local`` of a tiny LoRA job whose base model, dataset and results all live in
Azure Blob containers of a real Blob protocol server (Azurite on loopback, Shared Key auth on): the
user's shell gives the connection string (AZURE_STORAGE_CONNECTION_STRING, the name adlfs reads);
then `kubetune plot` and `serve --local`'s fetch read the results back from the az:// job prefix.
One training; the resume from the container is proven without training in
tests/trainer/test_objectstore_azure.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled
import yaml

from tests.support.kt_azurite import KEY, Azurite, azurite  # noqa: F401 - azurite is a fixture
from kubetune.api.objectstore import model_cache_subdir
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.trainerlib import isolated_env

KUBETUNE = [sys.executable, "-m", "kubetune"]


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(420)
def test_run_local_reads_model_and_data_from_azure_blob_and_uploads_checkpoints_results_and_the_marker(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    azurite: Azurite,  # noqa: F811
) -> None:
    service = azurite.service()
    for name in ("tiny-models", "tiny-data", "tiny-runs"):
        service.create_container(name)
    model_dir = tiny_assets.models_dir / tiny_assets.model_path
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        service.get_blob_client("tiny-models", f"tiny/{f.relative_to(model_dir).as_posix()}").upload_blob(
            f.read_bytes()
        )
    data = (tiny_assets.datasets_dir / tiny_assets.dataset_path).read_bytes()
    service.get_blob_client("tiny-data", "chat/train.jsonl").upload_blob(data)

    job = tiny_job("az-lora", tiny_assets, method="lora", max_steps=4, save_steps=2)
    job["spec"]["model"] = {"uri": "az://tiny-models/tiny/", "template": job["spec"]["model"]["template"]}
    job["spec"]["datasets"] = [{"name": "tiny_chat", "uri": "az://tiny-data/chat/train.jsonl", "format": "sharegpt"}]
    job["spec"]["storage"] = {
        "outputs": {"claimName": "local-outputs", "uri": "az://tiny-runs/runs/"},
        "objectStore": {
            "credentialsSecretRef": {"name": "az-storage"}
        },  # a pod reads it; run --local takes the shell's
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = isolated_env(tmp_path / "env")
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string()
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    models = tmp_path / "models"  # empty: the model comes from the container only
    result = subprocess.run(
        [*KUBETUNE, "run", "--local", "job.yaml", "--output", "out", "--models", str(models)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(280),
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert KEY not in log
    assert (
        "uploaded to: az://tiny-runs/runs/default/az-lora/ (complete: az://tiny-runs/runs/default/az-lora/_KUBETUNE_COMPLETE)"
        in result.stdout
    )

    staged = models / model_cache_subdir("az://tiny-models/tiny/")
    assert (staged / "config.json").is_file() and (staged / ".kubetune-etags.json").is_file()

    runs = service.get_container_client("tiny-runs")
    blobs = {b.name: b.size for b in runs.list_blobs(name_starts_with="runs/default/az-lora/")}
    base = "runs/default/az-lora/"
    for step in (2, 4):  # every checkpoint, each with its marker listing exactly its blobs
        marker = json.loads(runs.download_blob(f"{base}checkpoint-{step}/_KUBETUNE_COMPLETE").readall())
        listed = {f"{base}checkpoint-{step}/{name}": size for name, size in marker["files"].items()}
        assert {
            k: v
            for k, v in blobs.items()
            if k.startswith(f"{base}checkpoint-{step}/") and not k.endswith("_KUBETUNE_COMPLETE")
        } == listed
        assert f"{base}checkpoint-{step}/adapter_model.safetensors" in listed
    assert not any(k.startswith(f"{base}data/") for k in blobs)  # working state stays local
    record = json.loads(runs.download_blob(f"{base}kubetune-run.json").readall())
    assert record["exitCode"] == 0 and record["trainingCompleted"] is True
    done = json.loads(runs.download_blob(f"{base}_KUBETUNE_COMPLETE").readall())
    assert "adapter_model.safetensors" in done["files"] and "kubetune-run.json" in done["files"]
    local = tmp_path / "out" / "default" / "az-lora" / "adapter_model.safetensors"
    assert blobs[f"{base}adapter_model.safetensors"] == local.stat().st_size

    # Read back from the job's az:// prefix, as on a laptop without the outputs volume.
    prefix = f"az://tiny-runs/{base}"
    plot = subprocess.run(
        [*KUBETUNE, "plot", prefix, "-o", "loss.png"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert plot.returncode == 0, plot.stdout + plot.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"points from {prefix}" in plot.stdout
    fetch = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kubetune import localserve; print(localserve.fetch_results(sys.argv[1], endpoint=None))",
            prefix,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert fetch.returncode == 0, fetch.stderr
    folder = Path(fetch.stdout.strip().splitlines()[-1])
    assert (folder / "adapter_model.safetensors").read_bytes() == local.read_bytes()
    assert not any(p.name.startswith("checkpoint-") for p in folder.iterdir())  # the results, never the checkpoints
