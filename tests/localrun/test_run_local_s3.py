"""``kubetune run --local`` of a tiny LoRA job whose base model, dataset and results all live in
buckets of a real S3 protocol server (moto's server mode on loopback, IAM auth on): the user's
shell gives the keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), the spec gives the endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from tests.support.kt_s3 import S3Server, s3_server  # noqa: F401 - s3_server is a fixture
from kubetune.api.objectstore import model_cache_subdir
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.localrunlib import assert_uploaded_run, bucket_lora_job, run_local, upload_tiny_assets
from tests.support.trainerlib import isolated_env


def _objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(420)
def test_run_local_reads_model_and_data_from_a_bucket_uploads_its_results_and_resumes_from_the_bucket_in_a_fresh_folder(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    s3_server: S3Server,  # noqa: F811
) -> None:
    s3 = s3_server.s3()
    for bucket in ("tiny-models", "tiny-data", "tiny-runs"):
        s3.create_bucket(Bucket=bucket)
    upload_tiny_assets(lambda bucket, key, body: s3.put_object(Bucket=bucket, Key=key, Body=body), tiny_assets)

    job = bucket_lora_job("s3-lora", tiny_assets, "s3", {"endpoint": s3_server.endpoint, "region": "us-east-1"})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = isolated_env(tmp_path / "env")
    env.update(AWS_ACCESS_KEY_ID=s3_server.admin.access_key_id, AWS_SECRET_ACCESS_KEY=s3_server.admin.secret_access_key)
    models = tmp_path / "models"  # empty: the model comes from the bucket only
    result = run_local("job.yaml", env, tmp_path, scaled(280), models=models)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert s3_server.admin.secret_access_key not in log
    assert (
        "uploaded to: s3://tiny-runs/runs/default/s3-lora/ (complete: s3://tiny-runs/runs/default/s3-lora/_KUBETUNE_COMPLETE)"
        in result.stdout
    )

    # The base model was staged into the models folder, with the ETags that key it.
    staged = models / model_cache_subdir("s3://tiny-models/tiny/")
    assert (staged / "config.json").is_file() and (staged / ".kubetune-etags.json").is_file()

    base = "runs/default/s3-lora/"
    # The local copy on the "volume" is the same adapter.
    assert_uploaded_run(
        _objects(s3, "tiny-runs", base),
        lambda key: s3.get_object(Bucket="tiny-runs", Key=key)["Body"].read(),
        base,
        (2, 4),
        tmp_path / "out" / "default" / "s3-lora" / "adapter_model.safetensors",
    )

    # Preemption on a cluster without ReadWriteMany: the pod died while checkpoint-4 went up (no
    # marker) and its volume is gone. The same job in a fresh folder resumes from checkpoint-2 of
    # the bucket, trains steps 3-4, and uploads checkpoint-4 and the job's marker again.
    s3.delete_object(Bucket="tiny-runs", Key=f"{base}checkpoint-4/_KUBETUNE_COMPLETE")
    s3.delete_object(Bucket="tiny-runs", Key=f"{base}_KUBETUNE_COMPLETE")
    again = run_local("job.yaml", env, tmp_path, scaled(200), models=models, output="fresh")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    fresh = tmp_path / "fresh" / "default" / "s3-lora"
    record = json.loads((fresh / "kubetune-run.json").read_text())
    assert record["stages"]["data"]["restoredCheckpoint"] == f"s3://tiny-runs/{base}checkpoint-2/"
    assert record["stages"]["train"]["resumedFrom"] == str(fresh / "checkpoint-2")
    steps = [
        json.loads(line)["current_steps"]
        for line in (fresh / "trainer_log.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert steps and min(steps) == 3 and max(steps) == 4  # steps 1-2 were not trained again
    assert s3.head_object(Bucket="tiny-runs", Key=f"{base}checkpoint-4/_KUBETUNE_COMPLETE") and s3.head_object(
        Bucket="tiny-runs", Key=f"{base}_KUBETUNE_COMPLETE"
    )


def _source_adapter(assets: TinyAssets, folder: Path) -> None:
    """A real PEFT LoRA adapter of the tiny model, as ``tiny_job(method="lora")`` configures one
    (rank 8, every linear layer; LLaMA-Factory's lora_alpha default rank * 2), written with PEFT's
    own save_pretrained: what LLaMA-Factory loads as adapter_name_or_path.  Built in this process
    (torch is loaded already by tiny_assets) instead of a second training subprocess."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(assets.models_dir / assets.model_path))
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(str(folder))


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(420)
def test_a_from_job_child_of_a_job_without_an_outputs_claim_downloads_its_adapter_from_the_bucket_and_trains_on_it(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    s3_server: S3Server,  # noqa: F811
) -> None:
    """Issue 24: spec.storage.outputs with uri and no claimName.  Source ``sft`` (no outputs claim)
    left its results only in the bucket, uploaded by the trainer's own upload_results and
    mark_complete, with a checkpoint beside them (upload_checkpoint); locally only its run record is
    left (run --local reads a source from an earlier local run's record).  ``cont``
    (spec.model.fromJob: sft) downloads what sft's completion marker lists into a fresh models folder
    and LLaMA-Factory trains on that adapter.

    One training, not two: a run --local of a job without a claim writes and uploads exactly as
    one with a claim (test_run_local_reads_model_and_data_from_a_bucket_... above trains, uploads and
    restores a checkpoint into a fresh folder), so training ``sft`` too proved nothing more."""
    import shutil

    from kubetune.api import contract
    from kubetune.trainer import objectstore

    s3 = s3_server.s3()
    s3.create_bucket(Bucket="only-runs")
    models = tmp_path / "models"  # fresh: the tiny base model only, copied so nothing lands in the shared fixture
    shutil.copytree(tiny_assets.models_dir / tiny_assets.model_path, models / tiny_assets.model_path)
    storage = {
        "outputs": {"uri": "s3://only-runs/runs/"},
        "objectStore": {"endpoint": s3_server.endpoint, "region": "us-east-1"},
    }
    sft = tiny_job("sft", tiny_assets, method="lora", max_steps=2, save_steps=2)
    sft["spec"]["storage"] = storage

    sft_prefix = "s3://only-runs/runs/default/sft/"
    pod_folder = tmp_path / "sft-emptydir"  # the source pod's outputs emptyDir, gone once it ended
    _source_adapter(tiny_assets, pod_folder)
    (pod_folder / "checkpoint-2").mkdir()
    (pod_folder / "checkpoint-2" / "adapter_model.safetensors").write_bytes(
        (pod_folder / "adapter_model.safetensors").read_bytes()
    )
    env_s3 = s3_server.env()
    objectstore.upload_checkpoint(sft_prefix, pod_folder / "checkpoint-2", env_s3)
    objectstore.upload_results(sft_prefix, pod_folder, env_s3)
    objectstore.mark_complete(sft_prefix, pod_folder, env_s3)
    record = tmp_path / "out" / "default" / "sft" / contract.RUN_RECORD_FILE
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"spec": sft["spec"], "outcome": "Succeeded", "exitCode": 0}))

    cont = tiny_job("cont", tiny_assets, method="lora", max_steps=2)
    cont["spec"]["model"] = {"fromJob": "sft", "template": sft["spec"]["model"]["template"]}
    cont["spec"]["storage"] = storage
    (tmp_path / "cont.yaml").write_text(yaml.safe_dump(cont))
    env = isolated_env(tmp_path / "env")
    env.update(AWS_ACCESS_KEY_ID=s3_server.admin.access_key_id, AWS_SECRET_ACCESS_KEY=s3_server.admin.secret_access_key)
    result = run_local("cont.yaml", env, tmp_path, scaled(300), models=models, datasets=tiny_assets.datasets_dir)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert s3_server.admin.secret_access_key not in log

    runs = _objects(s3, "only-runs", "runs/default/")
    assert "runs/default/cont/_KUBETUNE_COMPLETE" in runs and "runs/default/sft/checkpoint-2/_KUBETUNE_COMPLETE" in runs
    # cont loaded sft's adapter from the copy downloaded from the bucket: sft has no local folder but its record.
    copy = models / model_cache_subdir(sft_prefix)
    train_yaml = yaml.safe_load((tmp_path / "out" / ".kubetune" / "default-cont" / "config" / "train.yaml").read_text())
    assert train_yaml["adapter_name_or_path"] == str(copy)
    assert sorted(p.name for p in record.parent.iterdir()) == [contract.RUN_RECORD_FILE]
    assert (copy / "adapter_model.safetensors").stat().st_size == runs["runs/default/sft/adapter_model.safetensors"]
    assert not (copy / "checkpoint-2").exists()  # only what the marker lists: the results, never the checkpoints
    etags = json.loads(copy.with_name(copy.name + ".etags.json").read_text())
    assert "adapter_model.safetensors" in etags
    done = json.loads(s3.get_object(Bucket="only-runs", Key="runs/default/cont/kubetune-run.json")["Body"].read())
    assert done["exitCode"] == 0 and done["trainingCompleted"] is True
    assert done["stages"]["train"]  # LLaMA-Factory trained on the downloaded adapter
