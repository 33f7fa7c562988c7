"""``python -m kubetune.trainer.fetchresults``, the init container engine vllm runs with
spec.serve.modelSource bucket: the rendered container's own environment, against a real S3 protocol
server (moto, tests/support/kt_s3.py), copies a succeeded job's results and refuses an unfinished one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_s3 import S3Server, s3_server  # noqa: F401 - s3_server is a fixture
from tests.support.renderlib import JobBuilder

from kubetune.render.serving import render_serving
from kubetune.trainer import objectstore

BUCKET = "kubetune-fetch"


def _rendered_env(built: Any, s3: S3Server, results: Path) -> dict[str, str]:
    """The fetch-results init container's env as rendered, each secretKeyRef resolved to the server's admin
    key (what the kubelet does with the Secret) and its folders moved under ``results``."""
    deployment = next(o for o in render_serving(built).objects if o["kind"] == "Deployment")
    (init,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-results"]
    assert init["command"] == [
        "python",
        "-m",
        "kubetune.trainer.fetchresults",
    ]  # nothing from the spec on the command line
    keys = {"ak": s3.admin.access_key_id, "sk": s3.admin.secret_access_key}
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for var in init["env"]:
        if "valueFrom" in var:
            env[var["name"]] = keys[var["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[var["name"]] = var["value"]
    env["KUBETUNE_S3_ENDPOINT"] = s3.endpoint  # the spec names the cluster's endpoint; the test server is here
    env["KUBETUNE_RESULTS_DIR"] = str(results / "job")
    env["HOME"] = str(results)
    return env


def test_the_vllm_init_container_copies_a_succeeded_jobs_results_not_its_checkpoints(
    tmp_path: Path, s3_server: S3Server
) -> None:  # noqa: F811
    s3_server.s3().create_bucket(Bucket=BUCKET)
    built = (
        JobBuilder()
        .set("spec.serve", {"modelSource": "bucket"})
        .set("spec.export", {"enabled": True})
        .set(
            "spec.storage",
            {
                "outputs": {"claimName": "out", "uri": f"s3://{BUCKET}/runs/"},
                "objectStore": {
                    "endpoint": "https://minio.example:9000",
                    "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "ak", "secretAccessKeyKey": "sk"},
                },
            },
        )
        .build()
    )
    prefix = f"s3://{BUCKET}/runs/{built.namespace}/{built.name}/"
    volume = tmp_path / "volume"
    (volume / "checkpoint-4").mkdir(parents=True)
    (volume / "checkpoint-4" / "optimizer.pt").write_bytes(b"o" * 100)
    (volume / "merged").mkdir()
    (volume / "merged" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (volume / "merged" / "model.safetensors").write_bytes(b"m" * 100)
    (volume / "adapter_model.safetensors").write_bytes(b"a" * 10)
    results = tmp_path / "results"
    results.mkdir()
    env = _rendered_env(built, s3_server, results)
    run = [sys.executable, "-m", "kubetune.trainer.fetchresults"]

    objectstore.upload_results(prefix, volume, s3_server.env())  # uploaded, not yet succeeded: no marker
    before = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert before.returncode == 2 and f"{prefix}: no _KUBETUNE_COMPLETE here" in before.stderr
    assert not (results / "job" / "merged").exists()

    objectstore.mark_complete(prefix, volume, s3_server.env())
    after = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert after.returncode == 0, after.stderr
    job = results / "job"
    assert (job / "merged" / "model.safetensors").read_bytes() == b"m" * 100
    assert (job / "adapter_model.safetensors").exists()
    assert not (job / "checkpoint-4").exists()  # the marker lists the results, never the checkpoints
    # vLLM reads the merged model where the init container put it
    args = next(o for o in render_serving(built).objects if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[args.index("--model") + 1] == "/results/job/merged"


def test_fetchresults_takes_no_arguments() -> None:
    from kubetune.trainer import fetchresults

    assert fetchresults.main(["s3://x/"]) == 2  # a URI on the command line is refused: it comes from the environment
    assert fetchresults.run({}) == 2


def test_an_earlier_export_set_aside_is_neither_uploaded_nor_fetched(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    """A retried job exports again: trainer/export.py renames the existing merged/ to .merged.old-<time> (and a
    killed export leaves .merged.partial-<pid>).  Those are not results: uploaded and listed in the marker, the
    fetch-results init container would download a second merged model (about 15 GB for 7B) on every pod start."""
    s3_server.s3().create_bucket(Bucket=BUCKET + "-old")
    prefix = f"s3://{BUCKET}-old/runs/team-a/demo/"
    volume = tmp_path / "volume"
    for folder in ("merged", ".merged.old-1765000000", ".merged.partial-42"):
        (volume / folder).mkdir(parents=True)
        (volume / folder / "model.safetensors").write_bytes(b"m" * 10)
    objectstore.upload_results(prefix, volume, s3_server.env())
    objectstore.mark_complete(prefix, volume, s3_server.env())
    fetched = objectstore.download_results(prefix, tmp_path / "results" / "job", s3_server.env())
    assert fetched == ["merged/model.safetensors"]
    keys = [o["Key"] for o in s3_server.s3().list_objects_v2(Bucket=BUCKET + "-old")["Contents"]]
    assert not [k for k in keys if ".merged." in k], keys


def test_a_rerun_leaves_no_stale_file_in_the_merged_prefix_kserve_downloads_whole(
    tmp_path: Path, s3_server: S3Server
) -> None:  # noqa: F811
    """KServe's storage initializer downloads every object under storageUri s3://.../<job>/merged/
    (python/storage/kserve_storage/kserve_storage.py:533-559 @v0.20.0), not what the marker lists.  A job
    created again under its name on another base writes other shard names: the earlier shards and index must
    not stay under merged/, or the served folder mixes two models (the old index naming the old shards)."""
    s3_server.s3().create_bucket(Bucket=BUCKET + "-rerun")
    prefix = f"s3://{BUCKET}-rerun/runs/team-a/demo/"
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "merged").mkdir(parents=True)
    for name in (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ):
        (first / "merged" / name).write_bytes(b"1")
    (second / "merged").mkdir(parents=True)
    (second / "merged" / "model.safetensors").write_bytes(b"2")
    objectstore.upload_results(prefix, first, s3_server.env())
    objectstore.upload_results(prefix, second, s3_server.env())
    listed = s3_server.s3().list_objects_v2(Bucket=BUCKET + "-rerun", Prefix="runs/team-a/demo/merged/")["Contents"]
    assert [o["Key"] for o in listed] == ["runs/team-a/demo/merged/model.safetensors"]


def test_results_that_change_while_they_are_read_are_refused_not_mixed(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    """download_results reads the marker, then each object it lists.  A source job created again under its
    name starts by deleting its marker and uploads anew; an object replaced after the marker was read is
    not the one it listed (another size here): the copy (a fromJob child's model, the serving pods' folder)
    must not mix the two runs' files, and must not be cached as if it were complete."""
    s3_server.s3().create_bucket(Bucket=BUCKET + "-race")
    prefix = f"s3://{BUCKET}-race/runs/team-a/sft/"
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "adapter_config.json").write_text("{}")
    (volume / "adapter_model.safetensors").write_bytes(b"a" * 10)
    objectstore.upload_results(prefix, volume, s3_server.env())
    objectstore.mark_complete(prefix, volume, s3_server.env())
    # The re-run's upload lands after the marker listing 10 bytes was read (moto answers the same marker).
    s3_server.s3().put_object(Bucket=BUCKET + "-race", Key="runs/team-a/sft/adapter_model.safetensors", Body=b"b" * 12)
    dest = tmp_path / "copy"
    with pytest.raises(
        objectstore.StorageError,
        match="adapter_model.safetensors: _KUBETUNE_COMPLETE lists 10 bytes, the object has 12",
    ):
        objectstore.download_results(prefix, dest, s3_server.env())
    assert not (dest / "adapter_model.safetensors").exists()
    assert not (tmp_path / "copy.etags.json").exists()  # nothing cached as complete
