"""``kubetune run --local`` of a tiny LoRA job whose base model, dataset and results all live in
Azure Blob containers of a real Blob protocol server (Azurite on loopback, Shared Key auth on): the
user's shell gives the connection string (AZURE_STORAGE_CONNECTION_STRING, the name adlfs reads);
then `kubetune plot` and `serve --local`'s fetch read the results back from the az:// job prefix.
One training; the resume from the container is proven without training in
tests/trainer/test_objectstore_azure.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled
import yaml

from tests.support.kt_azurite import KEY, Azurite, azurite  # noqa: F401 - azurite is a fixture
from kubetune.api.objectstore import model_cache_subdir
from kubetune.trainer.tiny import TinyAssets
from tests.support.localrunlib import assert_uploaded_run, bucket_lora_job, kubetune, run_local, upload_tiny_assets
from tests.support.trainerlib import isolated_env


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
    upload_tiny_assets(lambda bucket, key, body: service.get_blob_client(bucket, key).upload_blob(body), tiny_assets)

    # The credentials Secret is what a pod reads; run --local takes the shell's.
    job = bucket_lora_job("az-lora", tiny_assets, "az", {"credentialsSecretRef": {"name": "az-storage"}})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = isolated_env(tmp_path / "env")
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string()
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    models = tmp_path / "models"  # empty: the model comes from the container only
    result = run_local("job.yaml", env, tmp_path, scaled(280), models=models)
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
    base = "runs/default/az-lora/"
    local = tmp_path / "out" / "default" / "az-lora" / "adapter_model.safetensors"
    assert_uploaded_run(
        {b.name: b.size for b in runs.list_blobs(name_starts_with=base)},
        lambda key: runs.download_blob(key).readall(),
        base,
        (2, 4),
        local,
    )

    # Read back from the job's az:// prefix, as on a laptop without the outputs volume.
    prefix = f"az://tiny-runs/{base}"
    plot = kubetune(["plot", prefix, "-o", "loss.png"], env, tmp_path, scaled(60))
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
