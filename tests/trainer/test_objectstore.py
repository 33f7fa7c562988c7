"""s3:// staging and uploads against a real S3 protocol server (moto's server mode, IAM auth on):
datasets and models in, checkpoints and results out, each cloud failure a StorageError/DataError
with the URI and the S3 error code, and never a half-uploaded checkpoint taken as complete."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from tests.support.kt_s3 import S3Server, s3_server, statement  # noqa: F401 - s3_server is a fixture
from kubetune.trainer import config, data, objectstore
from kubetune.trainer.errors import DataError, StorageError
from tests.support.trainerlib import Pod, TinyAssets, fake_checkpoint, fake_checkpoint_sizes, make_pod

pytestmark = pytest.mark.train  # data.prepare reads records with the train stack

BUCKET = "kubetune-tests"
CHATS = [
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]},
]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> Any:  # noqa: F811
    s3 = s3_server.s3()
    s3.create_bucket(Bucket=BUCKET)
    return s3


def test_a_dataset_object_and_a_prefix_are_staged_and_checked_by_the_data_stage(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    bucket.put_object(Bucket=BUCKET, Key="data/one.jsonl", Body="".join(json.dumps(c) + "\n" for c in CHATS).encode())
    bucket.put_object(Bucket=BUCKET, Key="data/many/a.json", Body=json.dumps(CHATS).encode())
    bucket.put_object(Bucket=BUCKET, Key="data/many/sub/b.jsonl", Body=(json.dumps(CHATS[0]) + "\n").encode())
    bucket.put_object(Bucket=BUCKET, Key="data/many/README.md", Body=b"not data")
    manifest = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "s3-data", "namespace": "default"},
        "spec": {
            "model": {"path": "m", "template": "qwen"},
            "datasets": [
                {"name": "one", "uri": f"s3://{BUCKET}/data/one.jsonl"},
                {"name": "many", "uri": f"s3://{BUCKET}/data/many/"},
            ],
            "resources": {"gpusPerNode": 0},
            "training": {"precision": "fp32"},
            "storage": {
                "outputs": {"claimName": "out"},
                "objectStore": {"endpoint": s3_server.endpoint, "region": "us-east-1"},
            },
        },
    }
    pod = make_pod(tmp_path, manifest, TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl"))
    env = {**pod.env, **s3_server.env()}
    counts = data.prepare(config.load(env), env)
    assert counts == {"one": 2, "many": 3}  # every data object under the prefix, README left out
    staged = (pod.output_dir / "data" / "many.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in staged] == [*CHATS, CHATS[0]]  # key order: a.json, sub/b.jsonl

    # A bad record is named by its object, not by the scratch file it was downloaded to.
    bucket.put_object(Bucket=BUCKET, Key="data/bad.jsonl", Body=(json.dumps(CHATS[0]) + "\n{broken\n").encode())
    manifest["spec"]["datasets"] = [{"name": "bad", "uri": f"s3://{BUCKET}/data/bad.jsonl"}]
    pod = make_pod(
        tmp_path / "bad", manifest, TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl")
    )
    env = {**pod.env, **s3_server.env()}
    with pytest.raises(DataError, match=rf"dataset 'bad': s3://{BUCKET}/data/bad.jsonl: line 2 is not valid JSON"):
        data.prepare(config.load(env), env)


def test_the_base_model_is_staged_once_and_only_changed_objects_again(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    prefix = "models/tiny/"
    for name, body in {"config.json": b"{}", "model.safetensors": b"x" * 5000, "tok/tokenizer.json": b"{}"}.items():
        bucket.put_object(Bucket=BUCKET, Key=prefix + name, Body=body)
    dest = tmp_path / "models" / "cache"
    uri = f"s3://{BUCKET}/{prefix}"
    assert objectstore.stage_model(uri, dest, s3_server.env()) == {"objects": 3, "downloaded": 3, "reused": 0}
    assert (dest / "tok" / "tokenizer.json").read_bytes() == b"{}" and (
        dest / "model.safetensors"
    ).stat().st_size == 5000
    assert objectstore.stage_model(uri, dest, s3_server.env()) == {"objects": 3, "downloaded": 0, "reused": 3}
    bucket.put_object(Bucket=BUCKET, Key=prefix + "model.safetensors", Body=b"y" * 10)  # a new ETag
    assert objectstore.stage_model(uri, dest, s3_server.env()) == {"objects": 3, "downloaded": 1, "reused": 2}
    assert (dest / "model.safetensors").read_bytes() == b"y" * 10

    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/models/none/: no objects under this prefix"):
        objectstore.stage_model(f"s3://{BUCKET}/models/none/", tmp_path / "none", s3_server.env())


def test_two_pods_staging_one_model_into_a_shared_models_volume_both_succeed(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """Two jobs (a sweep) with one spec.model.uri and one ReadWriteMany models claim stage into the
    same folder at the same time.  Each pod has its own PID namespace, so both trainers commonly
    have the same PID: a temporary name keyed on the PID is the same file for both.  Here pod B's
    whole staging runs between pod A's download and A's rename, in one process (so one PID)."""
    prefix = "models/shared/"
    for name, body in {"config.json": b"{}", "model.safetensors": b"x" * 5000}.items():
        bucket.put_object(Bucket=BUCKET, Key=prefix + name, Body=body)
    uri, dest = f"s3://{BUCKET}/{prefix}", tmp_path / "models" / "cache"
    pod_a = objectstore.client(s3_server.env())

    class PodA:
        """Pod A's client: after its first download, pod B stages the same model."""

        interleaved = False

        def __getattr__(self, name: str) -> Any:
            return getattr(pod_a, name)

        def download_file(self, b: str, key: str, filename: str) -> None:
            pod_a.download_file(b, key, filename)
            if not PodA.interleaved:
                PodA.interleaved = True
                assert objectstore.stage_model(uri, dest, s3_server.env())["objects"] == 2  # pod B

    assert objectstore.stage_model(uri, dest, s3_server.env(), s3=PodA())["objects"] == 2
    assert PodA.interleaved
    assert (dest / "model.safetensors").read_bytes() == b"x" * 5000 and (dest / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in dest.iterdir()) == [".kubetune-etags.json", "config.json", "model.safetensors"]


def test_wrong_keys_missing_bucket_and_key_and_denied_write_each_give_their_error(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    bucket.put_object(Bucket=BUCKET, Key="data/x.jsonl", Body=b"{}\n")
    good = s3_server.env()
    unknown_key = {
        **good,
        "KUBETUNE_S3_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000001",
        "KUBETUNE_S3_SECRET_ACCESS_KEY": "s3cr3t-value-never-shown",
    }
    wrong_secret = {**good, "KUBETUNE_S3_SECRET_ACCESS_KEY": "s3cr3t-value-never-shown"}
    uri = f"s3://{BUCKET}/data/x.jsonl"

    cases = [
        (unknown_key, uri, "InvalidAccessKeyId", "the access key id is wrong"),
        (wrong_secret, uri, "SignatureDoesNotMatch", "the secret access key is wrong"),
        (good, "s3://no-such-bucket-here/data/x.jsonl", "NoSuchBucket", "the bucket does not exist"),
    ]
    for env, where, code, hint in cases:
        with pytest.raises(DataError) as err:
            objectstore.stage_dataset(where, tmp_path / "scratch", env)
        text = str(err.value)
        assert text.startswith(f"{where}: reading the dataset failed: {code}: ") and hint in text
        assert "s3cr3t" not in text and good["KUBETUNE_S3_SECRET_ACCESS_KEY"] not in text and err.value.exit_code == 3
    with pytest.raises(DataError, match=rf"s3://{BUCKET}/data/missing.jsonl: no such object"):
        objectstore.stage_dataset(f"s3://{BUCKET}/data/missing.jsonl", tmp_path / "scratch", good)
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/models/missing/: no objects"):
        objectstore.stage_model(f"s3://{BUCKET}/models/missing/", tmp_path / "m", good)

    reader = s3_server.user("reader", [statement(["s3:GetObject", "s3:ListBucket"], ["*"])])
    out = tmp_path / "out"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"a")
    with pytest.raises(StorageError) as err:
        objectstore.upload_results(f"s3://{BUCKET}/runs/default/job/", out, s3_server.env(reader))
    assert str(err.value).startswith(f"s3://{BUCKET}/runs/default/job/: uploading failed: AccessDenied")
    assert (
        reader.secret_access_key not in str(err.value) and err.value.exit_code == 2
    )  # permanent: a restart cannot help


def test_a_store_that_cannot_be_reached_is_a_retryable_storage_error(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    env = {**s3_server.env(), "KUBETUNE_S3_ENDPOINT": f"http://127.0.0.1:{closed}"}
    ckpt = fake_checkpoint(tmp_path, 1)
    with pytest.raises(
        StorageError, match=rf"s3://{BUCKET}/x/checkpoint-1/: uploading failed: EndpointConnectionError"
    ) as err:
        objectstore.upload_checkpoint(f"s3://{BUCKET}/x/", ckpt, env)
    assert err.value.exit_code == 130  # the pod restarts and resumes


def test_an_interrupted_checkpoint_upload_leaves_no_completion_marker(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    prefix = f"s3://{BUCKET}/interrupted/default/job/"
    ckpt = fake_checkpoint(tmp_path / "out", 3)
    objectstore.upload_checkpoint(prefix, ckpt, s3_server.env())
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is not None
    # The store refuses the optimizer state midway (after the weights went up), as a dropped link would.
    flaky = s3_server.user(
        "flaky",
        [statement(["s3:*"], ["*"]), statement(["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*optimizer.pt"], "Deny")],
    )
    (ckpt / "adapter_model.safetensors").write_bytes(b"v2")  # a re-save of the same step
    with pytest.raises(StorageError, match=r"uploading failed: AccessDenied"):
        objectstore.upload_checkpoint(prefix, ckpt, s3_server.env(flaky))
    keys = [o["Key"] for o in objectstore.list_objects(bucket, BUCKET, "interrupted/")]
    assert "interrupted/default/job/checkpoint-3/adapter_model.safetensors" in keys  # part of it went up
    assert not any(k.endswith(objectstore.MARKER) for k in keys)  # the old marker went first, no new one
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is None


class _Overlap:
    """The real client, counting the transfers in flight.  A transfer waits (a few seconds at most,
    once) for a second one to start: moved one file at a time, none ever does."""

    def __init__(self, real: Any) -> None:
        import threading

        self.real, self.lock, self.met = real, threading.Lock(), threading.Event()
        self.in_flight = self.most = self.done = 0
        self.gave_up = False
        self.large_alongside: list[int] = []  # transfers in flight beside each multipart-sized file
        self.marker_after: list[int] = []  # transfers finished when a completion marker was written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _transfer(self, path: str, move: Any) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight > 1:
                self.met.set()
        try:
            if not self.gave_up and not self.met.wait(scaled(3)):
                self.gave_up = True
            if (
                Path(path).is_file() and Path(path).stat().st_size >= objectstore.MULTIPART_THRESHOLD
            ):  # an upload's source
                self.large_alongside.append(self.in_flight - 1)
            move()
        finally:
            with self.lock:
                self.in_flight -= 1
                self.done += 1

    def upload_file(self, filename: str, b: str, key: str) -> None:
        self._transfer(filename, lambda: self.real.upload_file(filename, b, key))

    def download_file(self, b: str, key: str, filename: str) -> None:
        self._transfer(filename, lambda: self.real.download_file(b, key, filename))

    def put_object(self, **kwargs: Any) -> Any:
        if str(kwargs["Key"]).endswith(objectstore.MARKER):
            self.marker_after.append(self.done)
        return self.real.put_object(**kwargs)


def test_a_folder_of_many_files_moves_several_files_at_once_and_its_marker_still_comes_last(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """A checkpoint or a model is many files; `aws s3 cp --recursive` keeps 10 requests in flight,
    kubetune moved one file at a time (a checkpoint of small files took one round trip per file).
    Now up to TRANSFER_CONCURRENCY small files move at once, a multipart-sized file alone (its own
    parts are already parallel), and the completion marker is written only after every file."""
    env = s3_server.env()
    ckpt = fake_checkpoint(tmp_path / "out", 5, size=100)
    for i in range(12):
        (ckpt / f"rng_state_{i}.pth").write_bytes(b"r" * (i + 1))
    (ckpt / "model.safetensors").write_bytes(b"m" * objectstore.MULTIPART_THRESHOLD)
    files = sorted(p.name for p in ckpt.iterdir())
    prefix = f"s3://{BUCKET}/parallel/default/job/"

    up = _Overlap(objectstore.client(env))
    objectstore.upload_checkpoint(prefix, ckpt, env, s3=up, config_hash="c")
    assert 2 <= up.most <= objectstore.TRANSFER_CONCURRENCY and not up.gave_up
    assert up.large_alongside == [0]  # the 8 MiB file went alone
    assert up.marker_after == [len(files)]  # the marker after every file, not while any was under way
    assert objectstore.newest_complete_remote(prefix, env, config_hash="c") == (
        "checkpoint-5",
        {f: (ckpt / f).stat().st_size for f in files},
    )

    down = _Overlap(objectstore.client(env))
    fresh = tmp_path / "fresh"
    assert (
        objectstore.restore_checkpoint(prefix, fresh, env, needs_optimizer=True, s3=down, config_hash="c")
        == "checkpoint-5"
    )
    assert 2 <= down.most <= objectstore.TRANSFER_CONCURRENCY and not down.gave_up
    assert sorted(p.name for p in (fresh / "checkpoint-5").iterdir()) == files
    assert all((fresh / "checkpoint-5" / f).read_bytes() == (ckpt / f).read_bytes() for f in files)

    (ckpt / "config.json").write_text("{}")
    objectstore.upload_folder(f"s3://{BUCKET}/parallel/model/", ckpt, env)
    model = _Overlap(objectstore.client(env))
    assert objectstore.stage_model(f"s3://{BUCKET}/parallel/model/", tmp_path / "model", env, s3=model) == {
        "objects": len(files) + 1,
        "downloaded": len(files) + 1,
        "reused": 0,
    }
    assert 2 <= model.most <= objectstore.TRANSFER_CONCURRENCY and not model.gave_up


def test_a_failed_file_among_several_in_flight_fails_the_upload_and_leaves_no_marker(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """One file refused while others are under way: the upload fails with that file's error, and
    the marker (deleted first, written only after every file) is not there."""
    ckpt = fake_checkpoint(tmp_path / "out", 6, size=10)
    for i in range(30):
        (ckpt / f"shard-{i:02d}.bin").write_bytes(b"s")
    denied = s3_server.user(
        "denied-shard",
        [statement(["s3:*"], ["*"]), statement(["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*shard-00.bin"], "Deny")],
    )
    prefix = f"s3://{BUCKET}/parallel-fail/default/job/"
    with pytest.raises(StorageError, match=r"checkpoint-6/: uploading failed: AccessDenied"):
        objectstore.upload_checkpoint(prefix, ckpt, s3_server.env(denied))
    keys = [o["Key"] for o in objectstore.list_objects(bucket, BUCKET, "parallel-fail/")]
    assert keys and not any(k.endswith(objectstore.MARKER) for k in keys)
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is None


def test_a_fresh_working_dir_resumes_from_the_newest_complete_checkpoint_in_the_bucket(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    prefix = f"s3://{BUCKET}/resume/default/job/"
    env = s3_server.env()
    old = tmp_path / "old-pod"
    for step in (2, 4):
        objectstore.upload_checkpoint(prefix, fake_checkpoint(old, step, size=100 * step), env)
    # checkpoint-6: every object, but the pod died before its marker; checkpoint-8: marker, one object lost.
    objectstore.upload_folder(f"{prefix}checkpoint-6/", fake_checkpoint(old, 6), env)
    objectstore.upload_checkpoint(prefix, fake_checkpoint(old, 8), env)
    bucket.delete_object(Bucket=BUCKET, Key="resume/default/job/checkpoint-8/optimizer.pt")

    fresh = tmp_path / "new-pod"
    fresh.mkdir()
    # The newest of all, checkpoint-10, was written by another configuration of a job with this name.
    objectstore.upload_checkpoint(prefix, fake_checkpoint(old, 10), env, config_hash="another-config")
    assert (
        objectstore.restore_checkpoint(prefix, fresh, env, needs_optimizer=True, config_hash="another-config")
        == "checkpoint-10"
    )
    shutil.rmtree(fresh / "checkpoint-10")
    bucket.delete_object(Bucket=BUCKET, Key="resume/default/job/checkpoint-10/_KUBETUNE_COMPLETE")
    for step in (2, 4):  # this configuration's markers
        objectstore.upload_checkpoint(prefix, old / f"checkpoint-{step}", env, config_hash="this-config")
    objectstore.upload_checkpoint(prefix, old / "checkpoint-10", env, config_hash="another-config")
    assert (
        objectstore.restore_checkpoint(prefix, fresh, env, needs_optimizer=True, config_hash="this-config")
        == "checkpoint-4"
    )
    restored = fresh / "checkpoint-4"
    assert json.loads((restored / "trainer_state.json").read_text()) == {"global_step": 4}
    assert (restored / "optimizer.pt").read_bytes() == b"o" * 400
    assert sorted(p.name for p in fresh.iterdir()) == ["checkpoint-4"]  # no staging folder left
    # The volume now has a complete checkpoint of its own: the bucket is not asked again.
    assert objectstore.restore_checkpoint(prefix, fresh, env, needs_optimizer=True, config_hash="this-config") is None


def test_a_restored_checkpoint_is_not_uploaded_again_so_its_marker_survives_a_second_preemption(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,  # noqa: F811
) -> None:
    """Spot node A uploads checkpoint-4 and is preempted; pod B restores it onto a fresh volume and
    is preempted too, before it saved checkpoint-5.  B's uploader must not re-upload the restored
    checkpoint: re-uploading deletes the bucket's marker first (upload_folder), so a preemption in
    that window (here: every write refused after the delete) left the job nothing to resume from."""
    prefix = f"s3://{BUCKET}/restored/default/job/"
    objectstore.upload_checkpoint(prefix, fake_checkpoint(tmp_path / "pod-a", 4), s3_server.env(), config_hash="h")
    fresh = tmp_path / "pod-b"
    fresh.mkdir()
    assert (
        objectstore.restore_checkpoint(prefix, fresh, s3_server.env(), needs_optimizer=True, config_hash="h")
        == "checkpoint-4"
    )
    dying = s3_server.user(
        "dying", [statement(["s3:*"], ["*"]), statement(["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*"], "Deny")]
    )
    uploader = objectstore.CheckpointUploader(
        prefix, fresh, s3_server.env(dying), needs_optimizer=True, config_hash="h"
    )
    for _ in range(3):
        with contextlib.suppress(StorageError):
            uploader.poll()
    assert objectstore.newest_complete_remote(prefix, s3_server.env(), config_hash="h") is not None, (
        "pod C would start from step 0"
    )
    # A checkpoint whose files differ from the bucket's copy is still uploaded (its marker last).
    (fresh / "checkpoint-4" / "optimizer.pt").write_bytes(b"changed")
    uploader = objectstore.CheckpointUploader(prefix, fresh, s3_server.env(), needs_optimizer=True, config_hash="h")
    assert uploader.poll(final=True) == ["checkpoint-4"]
    assert objectstore.newest_complete_remote(prefix, s3_server.env(), config_hash="h") == (
        "checkpoint-4",
        fake_checkpoint_sizes(4) | {"optimizer.pt": 7},
    )


def test_half_written_checkpoints_set_aside_on_the_volume_are_not_uploaded_as_results(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """train.quarantine_incomplete renames a checkpoint a kill left half-written to
    .incomplete-checkpoint-N-<time> beside the results, and a restore killed midway leaves
    .checkpoint-N.restore: neither is a result of the job (they can be gigabytes)."""
    prefix = f"s3://{BUCKET}/results/default/job/"
    out = tmp_path / "out"
    fake_checkpoint(out, 6).rename(out / ".incomplete-checkpoint-6-1765000000")
    fake_checkpoint(out, 8).rename(out / ".checkpoint-8.restore")
    (out / "adapter_model.safetensors").write_bytes(b"adapter")
    (out / "trainer_log.jsonl").write_text("{}\n")
    objectstore.upload_results(prefix, out, s3_server.env())
    objectstore.mark_complete(prefix, out, s3_server.env())
    keys = sorted(str(o["Key"]) for o in objectstore.list_objects(bucket, BUCKET, "results/"))
    assert keys == [
        f"results/default/job/{k}" for k in (objectstore.MARKER, "adapter_model.safetensors", "trainer_log.jsonl")
    ]
    marker = json.loads(
        bucket.get_object(Bucket=BUCKET, Key=f"results/default/job/{objectstore.MARKER}")["Body"].read()
    )
    assert sorted(marker["files"]) == ["adapter_model.safetensors", "trainer_log.jsonl"]


def test_the_uploader_takes_a_checkpoint_only_when_complete_and_settled(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    prefix = f"s3://{BUCKET}/watch/default/job/"
    out = tmp_path / "out"
    uploader = objectstore.CheckpointUploader(prefix, out, s3_server.env(), needs_optimizer=True)
    ckpt = fake_checkpoint(out, 5)
    (ckpt / "trainer_state.json").unlink()  # still being written
    assert uploader.poll() == [] and uploader.poll() == []
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    assert uploader.poll() == []  # complete now, but seen once: it might still change
    assert uploader.poll() == ["checkpoint-5"]
    assert uploader.poll() == []  # uploaded once
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) == ("checkpoint-5", fake_checkpoint_sizes(5))


def test_one_transient_failure_during_training_does_not_end_the_checkpoint_uploads(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """A dropped connection (or a 503 beyond botocore's retries) while checkpoint-2 goes up.  The
    uploader used to stop for the rest of the training and, at the end or on a preemption stop,
    raise that old error instead of its final sweep: no later checkpoint reached the bucket."""
    from botocore.exceptions import EndpointConnectionError

    prefix = f"s3://{BUCKET}/transient/default/job/"
    out = tmp_path / "out"
    fake_checkpoint(out, 2)
    uploader = objectstore.CheckpointUploader(prefix, out, s3_server.env(), needs_optimizer=True, interval=0)
    real = objectstore.client(s3_server.env())

    class Flaky:
        """The first upload_file loses its connection; once a marker is written, training "ends"."""

        failed = False

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def upload_file(self, *args: Any) -> None:
            if not Flaky.failed:
                Flaky.failed = True
                raise EndpointConnectionError(endpoint_url=s3_server.endpoint)
            real.upload_file(*args)

        def put_object(self, **kwargs: Any) -> Any:
            got = real.put_object(**kwargs)
            uploader._stop.set()  # noqa: SLF001 - the training ended: the loop's next wait returns
            return got

    uploader._s3 = Flaky()  # noqa: SLF001
    uploader._loop()  # noqa: SLF001 - the background thread's body, here in the test's thread
    assert Flaky.failed
    uploader.stop()  # the final sweep, not the old transient error
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is not None


def test_a_trainer_without_boto3_refuses_s3_uris_with_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_boto(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto)
    with pytest.raises(StorageError, match=r"s3:// and gs:// URIs need boto3 .*kubetune\[train\]"):
        objectstore.stage_model(f"s3://{BUCKET}/models/tiny/", tmp_path, {})


@pytest.mark.slow
def test_the_trainer_ends_cloud_failures_with_the_uri_and_code_and_never_a_traceback_or_a_key(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    s3_server: S3Server,
    bucket: Any,  # noqa: F811
) -> None:
    """The trainer entrypoint, as a pod runs it: a missing dataset bucket is a DataError (exit 3),
    a key that may read but not write the outputs prefix a StorageError (exit 2), both before any
    training, in the failed stage line, the log and the run record."""
    from kubetune.api import contract
    from tests.support.trainerlib import run_trainer, stage_lines

    s3_server.s3().put_object(
        Bucket=BUCKET, Key="data/ok.jsonl", Body="".join(json.dumps(c) + "\n" for c in CHATS).encode()
    )
    reader = s3_server.user("trainer-reader", [statement(["s3:GetObject", "s3:ListBucket"], ["*"])])
    cases = [
        (
            "s3://no-such-bucket-x/data/ok.jsonl",
            s3_server.admin,
            contract.EXIT_DATA,
            "reading the dataset failed: NoSuchBucket",
        ),
        (
            f"s3://{BUCKET}/data/ok.jsonl",
            reader,
            contract.EXIT_CONFIG,
            f"s3://{BUCKET}/runs/default/s3-fail/: clearing the completion marker failed: AccessDenied",
        ),
    ]
    for i, (uri, keys, code, text) in enumerate(cases):
        manifest = {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": "s3-fail", "namespace": "default"},
            "spec": {
                "model": {"path": tiny_assets.model_path, "template": "qwen"},
                "datasets": [{"name": "chat", "uri": uri}],
                "resources": {"gpusPerNode": 0},
                "training": {"precision": "fp32", "maxSteps": 1},
                "storage": {
                    "outputs": {"claimName": "out", "uri": f"s3://{BUCKET}/runs/"},
                    "objectStore": {"endpoint": s3_server.endpoint},
                },
            },
        }
        pod = make_pod(tmp_path / str(i), manifest, tiny_assets)
        result = run_trainer({**pod.env, **s3_server.env(keys)}, timeout=scaled(120))
        log = result.stdout + result.stderr
        assert result.returncode == code, log[-3000:]
        failed = [s for s in stage_lines(result.stdout) if s["event"] == "failed"]
        assert failed[0]["stage"] == "data" and text in failed[0]["message"]
        assert "Traceback" not in log and keys.secret_access_key not in log and keys.access_key_id not in log
        record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
        assert record["exitCode"] == code and text in record["message"]


def test_a_store_with_a_private_ca_is_reached_through_the_ca_bundle_and_refused_without_it(tmp_path: Path) -> None:
    """spec.storage.objectStore.caBundle: the trainer verifies the endpoint against the mounted
    bundle (KUBETUNE_S3_CA_BUNDLE); without it the certificate is refused, permanently."""
    from tests.support.kt_s3 import private_ca

    server = S3Server(tls=private_ca(tmp_path / "pki"))
    try:
        s3 = server.s3()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="models/tiny/config.json", Body=b"{}")
        env = server.env()
        assert env["KUBETUNE_S3_ENDPOINT"].startswith("https://")
        assert objectstore.stage_model(f"s3://{BUCKET}/models/tiny/", tmp_path / "m", env)["downloaded"] == 1
        without = {k: v for k, v in env.items() if k != "KUBETUNE_S3_CA_BUNDLE"}
        with pytest.raises(StorageError, match=r"SSLError: .*give its CA in spec.storage.objectStore.caBundle") as err:
            objectstore.stage_model(f"s3://{BUCKET}/models/tiny/", tmp_path / "m2", without)
        assert err.value.exit_code == 2
        # `kubetune run --local` of the same spec: the ConfigMap is not mounted on a laptop, so the
        # rendered KUBETUNE_S3_CA_BUNDLE names no file; the shell's AWS_CA_BUNDLE is used instead.
        local = {**env, "KUBETUNE_S3_CA_BUNDLE": str(tmp_path / "not-mounted" / "ca.pem")}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_CA_BUNDLE", str(server.ca_bundle))
            assert (
                objectstore.stage_model(
                    f"s3://{BUCKET}/models/tiny/", tmp_path / "m3", {**local, "AWS_CA_BUNDLE": str(server.ca_bundle)}
                )["downloaded"]
                == 1
            )
        with pytest.raises(StorageError, match=r"caBundle: .*not-mounted/ca.pem does not exist.*AWS_CA_BUNDLE") as err:
            objectstore.stage_model(f"s3://{BUCKET}/models/tiny/", tmp_path / "m4", local)
        assert err.value.exit_code == 2
    finally:
        server.stop()


# --- the trainer's own failures around uploads: the completion marker, fail-fast, the stop sweep ---


def _s3_manifest(name: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"path": "m", "template": "qwen"},
            "datasets": [{"name": "d", "path": "d.jsonl"}],
            "resources": {"gpusPerNode": 0},
            "training": {"precision": "fp32"},
            "storage": {
                "outputs": {"claimName": "out", "uri": f"s3://{BUCKET}/runs/"},
                "objectStore": {"endpoint": endpoint, "region": "us-east-1"},
            },
        },
    }


class _ReadFails:
    """A client on the real server whose upload_file meets EIO reading the local file (an NFS
    outputs volume going away under the trainer: s3transfer opens and reads it)."""

    def __init__(self, real: Any, errno_: int = 5) -> None:
        self.real, self.errno_ = real, errno_

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def upload_file(self, filename: str, *args: Any, **kwargs: Any) -> None:
        import os

        raise OSError(self.errno_, os.strerror(self.errno_), filename)


def test_a_local_io_error_while_writing_the_completion_marker_fails_the_job_cleanly_and_leaves_no_marker(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """It used to escape main._mark_complete (which caught TrainerError only) as a raw OSError: a
    traceback after the run record said the job succeeded, and no final progress report."""
    from kubetune.api import contract
    from kubetune.trainer import main, record

    pod = make_pod(
        tmp_path,
        _s3_manifest("mark-eio", s3_server.endpoint),
        TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl"),
    )
    env = {**pod.env, **s3_server.env()}
    cfg = config.load(env)
    pod.output_dir.mkdir(parents=True, exist_ok=True)
    (pod.output_dir / "adapter_model.safetensors").write_bytes(b"adapter")
    record.write(
        cfg, image=None, started_at=record.now(), exit_code=0, message="trained", facts={"trainingCompleted": True}
    )
    prefix = main.outputs_prefix(cfg)
    assert prefix == f"s3://{BUCKET}/runs/default/mark-eio/"
    real = objectstore.client(env)

    monkeypatch.setattr(objectstore, "client", lambda _env: _ReadFails(real))
    code, message = main._mark_complete(
        cfg, env, contract.EXIT_OK, "trained", record.now(), {"trainingCompleted": True}
    )  # noqa: SLF001
    assert code == contract.EXIT_RETRYABLE  # an I/O error of the volume: the restart does not train again
    assert message.startswith(
        f"{prefix}: writing the completion marker failed on the local side: "
        f"{pod.output_dir / contract.RUN_RECORD_FILE}: "
    )
    assert "errno 5" in message
    on_volume = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert on_volume["exitCode"] == contract.EXIT_RETRYABLE and on_volume["message"] == message
    keys = [str(o["Key"]) for o in objectstore.list_objects(bucket, BUCKET, "runs/default/mark-eio/")]
    assert f"runs/default/mark-eio/{objectstore.MARKER}" not in keys

    # A volume that refuses the read (permission) is permanent: a restart would meet it again.
    monkeypatch.setattr(objectstore, "client", lambda _env: _ReadFails(real, errno_=13))
    code, message = main._mark_complete(cfg, env, contract.EXIT_OK, "trained", record.now(), {})  # noqa: SLF001
    assert code == contract.EXIT_CONFIG and "errno 13" in message


FAKE_TRAINING = """
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
stop = pathlib.Path(os.environ["KUBETUNE_STOP_FILE"])
for step in (1, 2):
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 100)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    print("saved", ckpt.name, flush=True)
    if step == 1:
        for _ in range(1200):  # "training" until stopped: 2 minutes at most
            if stop.exists():
                break
            time.sleep(0.1)
(out / "stopped-early").write_text(str(stop.exists()))
"""


def _fake_training_pod(
    tmp_path: Path,
    name: str,
    endpoint: str,
    store_env: dict[str, str],
    extra: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Pod, dict[str, str], Any, Any]:
    """The pod of job ``name`` writing to the S3 server at ``endpoint`` with ``store_env``'s keys (plus
    ``extra``), for main._train_uploading: the real train.run and its Child, with FAKE_TRAINING standing
    in for the LLaMA-Factory worker.  Returns (pod, env, config, distribution)."""
    from kubetune.trainer import distenv, train

    pod = make_pod(
        tmp_path,
        _s3_manifest(name, endpoint),
        TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl"),
    )
    env = {**pod.env, **store_env, **extra}
    cfg = config.load(env)
    pod.output_dir.mkdir(parents=True, exist_ok=True)
    dist = distenv.distribution_from_env(env, hostfile_text=None, default_port=cfg.job.spec.distributed.master_port)
    monkeypatch.setattr(
        train,
        "command",
        lambda _cfg, _dist, _args, child_env: (
            [sys.executable, "-c", FAKE_TRAINING, str(pod.output_dir)],
            dict(child_env),
        ),
    )
    return pod, env, cfg, dist


def test_a_denied_checkpoint_upload_stops_the_training_at_once_naming_the_field_and_the_fix(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """A permanent upload failure during training (here AccessDenied from the server's IAM) used
    to end the job only when training ended on its own, hours of GPU time later.  Now the
    uploader's failure stops the training child as a SIGTERM would (a stop checkpoint, then
    exit), and the job fails with exit 2 and a message naming the field, the bucket and the fix."""
    from kubetune.api import contract
    from kubetune.trainer import main

    no_put = s3_server.user(
        "no-put", [statement(["s3:*"], ["*"]), statement(["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/runs/*"], "Deny")]
    )
    pod, env, cfg, dist = _fake_training_pod(
        tmp_path, "denied", s3_server.endpoint, s3_server.env(no_put), {main.ENV_UPLOAD_INTERVAL: "0.05"}, monkeypatch
    )
    with pytest.raises(StorageError) as err:
        main._train_uploading(cfg, dist, env, None, env, main.outputs_prefix(cfg), None)  # noqa: SLF001
    text = str(err.value)
    assert err.value.exit_code == contract.EXIT_CONFIG
    assert text.startswith(
        "spec.storage.outputs.uri: uploading a checkpoint during training failed for good, so training was stopped"
    )
    assert f"s3://{BUCKET}/runs/default/denied/checkpoint-1/: uploading failed: AccessDenied" in text
    assert f"fix: allow s3:PutObject, s3:DeleteObject, s3:GetObject and s3:ListBucket on bucket '{BUCKET}'" in text
    assert no_put.secret_access_key not in text
    assert (pod.output_dir / "stopped-early").read_text() == "True"  # stopped by the uploader's failure, not at its end

    # The fixes the other permanent codes name.
    for code, fix in (
        ("NoSuchBucket", f"create bucket '{BUCKET}', or correct the bucket name in spec.storage.outputs.uri"),
        (
            "InvalidAccessKeyId",
            "correct the access key id in the Secret of spec.storage.objectStore.credentialsSecretRef",
        ),
    ):
        cause = StorageError(f"s3://{BUCKET}/runs/default/denied/checkpoint-1/: uploading failed: {code}: ...")
        assert (
            objectstore.permanent_upload_failure(f"s3://{BUCKET}/runs/default/denied/", cause)
            .args[0]
            .endswith(f"fix: {fix}")
        )


def test_throttling_during_training_is_retried_with_backoff_and_never_stops_the_training(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """503 SlowDown (after botocore's own three attempts) and a connection reset: the uploader
    waits longer each time, tries again, and uploads; ``failed`` (which stops training) stays clear."""
    from botocore.exceptions import ClientError, ConnectionClosedError

    prefix = f"s3://{BUCKET}/throttled/default/job/"
    out = tmp_path / "out"
    fake_checkpoint(out, 2)
    uploader = objectstore.CheckpointUploader(prefix, out, s3_server.env(), needs_optimizer=True, interval=0.01)
    real = objectstore.client(s3_server.env())
    waits: list[float] = []
    slow_down = ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "PutObject",
    )
    failures: list[BaseException] = [slow_down, slow_down, ConnectionClosedError(endpoint_url=s3_server.endpoint)]

    class Throttled:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def upload_file(self, *args: Any) -> None:
            if failures:
                raise failures.pop(0)
            real.upload_file(*args)

        def put_object(self, **kwargs: Any) -> Any:
            got = real.put_object(**kwargs)
            uploader._stop.set()  # noqa: SLF001 - the marker is up: "training" ends
            return got

    real_wait = uploader._stop.wait  # noqa: SLF001

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return real_wait(0)

    uploader._stop.wait = wait  # type: ignore[method-assign]  # noqa: SLF001
    uploader._s3 = Throttled()  # noqa: SLF001
    uploader._loop()  # noqa: SLF001
    assert not failures and not uploader.failed.is_set() and uploader.retries == 3
    assert waits[:2] == [0.01, 0.01] and waits[2:5] == [0.02, 0.04, 0.08]  # the backoff doubles after each failure
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is not None


def test_the_stop_sweep_after_a_sigterm_is_attempted_and_bounded_by_the_grace_period(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """After a preemption the stop checkpoint goes up within what is left of the pod's grace
    period (launch.stop_budgets); an upload that hangs beyond it no longer eats the run record's
    margin: the stop returns, says so, and the bucket has no marker for that checkpoint."""
    import threading
    import time

    from kubetune.api import contract
    from kubetune.trainer.launch import stop_budgets

    # terminationGracePeriodSeconds 300 renders KUBETUNE_STOP_GRACE_SECONDS 285 (podspec.environment).
    assert stop_budgets({contract.ENV_STOP_GRACE: "285"}, uploading=False) == (285.0, 285.0)
    assert stop_budgets({contract.ENV_STOP_GRACE: "285"}, uploading=True) == (137.5, 285.0)
    assert stop_budgets({contract.ENV_STOP_GRACE: "20"}, uploading=True) == (5.0, 20.0)
    # the minimum grace, 30 s (W = 15): the checkpoint on the volume gets all of it, not 5 s
    assert stop_budgets({contract.ENV_STOP_GRACE: "15"}, uploading=True) == (15.0, 15.0)

    prefix = f"s3://{BUCKET}/sweep/default/job/"
    out = tmp_path / "out"
    fake_checkpoint(out, 7)
    real = objectstore.client(s3_server.env())
    release, attempted = threading.Event(), threading.Event()

    class Hanging:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def upload_file(self, *args: Any) -> None:
            attempted.set()
            release.wait(60)  # a store that stopped answering midway
            real.upload_file(*args)

    uploader = objectstore.CheckpointUploader(prefix, out, s3_server.env(), needs_optimizer=True)
    uploader._s3 = Hanging()  # noqa: SLF001
    with pytest.raises(
        StorageError, match=r"final checkpoint upload did not finish within its \d+s left of the pod's grace period"
    ) as err:
        uploader.stop(deadline=time.monotonic() + 0.3)
    # tried (under load the attempt may start only after the 0.3 s deadline), and given up on while it still hung
    assert attempted.wait(scaled(10)) and not release.is_set()
    assert err.value.exit_code == contract.EXIT_RETRYABLE
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is None
    release.set()

    # With time enough, the same sweep uploads the stop checkpoint with its marker.
    uploader = objectstore.CheckpointUploader(prefix, out, s3_server.env(), needs_optimizer=True)
    assert uploader.stop(deadline=time.monotonic() + 60) == ["checkpoint-7"]
    assert objectstore.newest_complete_remote(prefix, s3_server.env()) is not None


def test_gs_uris_go_through_the_s3_api_of_the_endpoint_with_an_hmac_key_and_no_flexible_checksums(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """gs:// is Cloud Storage's S3-compatible XML API: the renderer points the trainer at
    https://storage.googleapis.com with region auto (unless the spec names an endpoint: here the
    moto server stands in for it), and the HMAC key arrives like an AWS key pair.  Requests to a
    store other than AWS carry no flexible-checksum headers (botocore >= 1.36 adds them by
    default; stores without them refuse the upload).  What only Cloud Storage itself can prove
    (its acceptance of these requests) is not tested here."""
    from kubetune.api import contract

    hmac = s3_server.user("gcs-hmac", [statement(["s3:*"], ["*"])])
    manifest = _s3_manifest("gcs-job", s3_server.endpoint)
    manifest["spec"]["datasets"] = [{"name": "chats", "uri": f"gs://{BUCKET}/gcs/chats.jsonl"}]
    manifest["spec"]["storage"]["outputs"]["uri"] = f"gs://{BUCKET}/gcs-runs/"
    manifest["spec"]["storage"]["objectStore"] = {"credentialsSecretRef": {"name": "gcs-hmac"}}
    pod = make_pod(
        tmp_path / "default", manifest, TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl")
    )
    assert (
        pod.env[contract.ENV_S3_ENDPOINT] == "https://storage.googleapis.com"
        and pod.env[contract.ENV_S3_REGION] == "auto"
    )

    manifest["spec"]["storage"]["objectStore"]["endpoint"] = s3_server.endpoint
    pod = make_pod(
        tmp_path / "moto", manifest, TinyAssets(tmp_path, tmp_path / "models", tmp_path / "datasets", "m", "d.jsonl")
    )
    assert pod.env[contract.ENV_S3_ENDPOINT] == s3_server.endpoint and pod.env[contract.ENV_S3_REGION] == "auto"
    env = {
        **pod.env,
        "KUBETUNE_S3_ACCESS_KEY_ID": hmac.access_key_id,
        "KUBETUNE_S3_SECRET_ACCESS_KEY": hmac.secret_access_key,
    }

    bucket.put_object(Bucket=BUCKET, Key="gcs/chats.jsonl", Body="".join(json.dumps(c) + "\n" for c in CHATS).encode())
    assert data.prepare(config.load(env), env) == {"chats": 2}

    s3 = objectstore.client(env)
    sent: list[dict[str, str]] = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    prefix = f"gs://{BUCKET}/gcs-runs/default/gcs-job/"
    objectstore.upload_checkpoint(prefix, fake_checkpoint(tmp_path / "out", 3), env, s3=s3)
    assert objectstore.newest_complete_remote(prefix, env)[0] == "checkpoint-3"  # type: ignore[index]
    assert len(sent) == 4  # three files, then the marker
    for headers in sent:
        names = {k.lower() for k in headers}
        assert not any(n.startswith("x-amz-checksum-") or n == "x-amz-sdk-checksum-algorithm" for n in names), names
        assert "aws-chunked" not in str(headers.get("Content-Encoding", ""))
    # The same client against AWS (no endpoint) keeps botocore's default: a checksum on every upload.
    aws = objectstore.client({k: v for k, v in env.items() if k != contract.ENV_S3_ENDPOINT})
    assert aws.meta.config.request_checksum_calculation == "when_supported"


def test_serve_and_plot_read_a_succeeded_jobs_results_from_the_bucket_and_refuse_an_unfinished_one(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    """A job whose outputs volume is gone (a cluster without ReadWriteMany, a laptop): `kubetune
    plot` and `kubetune serve --local` take <outputs.uri><namespace>/<job>/ and copy the results
    (never the checkpoints) once the job's marker says it succeeded; before that they refuse,
    naming the marker and what to do."""
    from kubetune import cli, localserve

    prefix = f"s3://{BUCKET}/served/default/lora-job/"
    out = tmp_path / "volume"
    fake_checkpoint(out, 4)
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    (out / "adapter_model.safetensors").write_bytes(b"adapter")
    (out / "trainer_log.jsonl").write_text(
        "".join(json.dumps({"current_steps": s, "loss": 2.0 / s}) + "\n" for s in (1, 2, 3, 4))
    )
    (out / "kubetune-run.json").write_text(
        json.dumps(
            {
                "job": {"name": "lora-job"},
                "trainArgs": {"template": "qwen", "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"},
            }
        )
    )
    for name, value in (
        ("AWS_ACCESS_KEY_ID", s3_server.admin.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", s3_server.admin.secret_access_key),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)  # the user's shell
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    objectstore.upload_results(prefix, out, s3_server.env())  # uploaded, but the job has not succeeded yet
    assert cli.main(["serve", "--local", prefix, "--endpoint", s3_server.endpoint]) == 1
    err = capsys.readouterr().err
    assert (
        f"kubetune serve: {prefix}: no _KUBETUNE_COMPLETE here: the job has not succeeded" in err
        and "use the job's outputs volume" in err
    )
    assert cli.main(["plot", prefix, "--endpoint", s3_server.endpoint]) == 2
    assert "no _KUBETUNE_COMPLETE here" in capsys.readouterr().err

    objectstore.mark_complete(prefix, out, s3_server.env())
    assert cli.main(["plot", prefix, "--endpoint", s3_server.endpoint, "-o", "loss.png"]) == 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(4 points from s3://" in capsys.readouterr().out

    folder = localserve.fetch_results(prefix, endpoint=s3_server.endpoint)
    assert folder == localserve.results_cache(prefix)
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "kubetune-run.json",
        "trainer_log.jsonl",
    ]
    target = localserve.resolve_target(str(folder))  # what serve --local loads next: the adapter on its base model
    assert (target.model, target.adapter, target.template, target.name) == (
        "Qwen/Qwen2.5-0.5B-Instruct",
        str(folder),
        "qwen",
        "lora-job",
    )
    assert (
        objectstore.download_results(
            prefix, folder, objectstore.shell_env(prefix, s3_server.endpoint, dict(__import__("os").environ))
        )
        == []
    )  # cached


def test_serve_from_a_bucket_after_the_job_ran_again_under_its_name_gets_the_new_results_not_the_cached_ones(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """A job deleted and created again with the same name writes to the same URI; a LoRA adapter
    of the same rank has the same size.  The cache (one folder per URI) must not hand the first
    run's weights to `kubetune serve --local`, nor keep a first-run file the second run did not
    produce (a merged model there would be served instead of the new adapter).  The cache is the
    user's alone: results of a private bucket are not left readable to others on a shared host."""
    from kubetune import localserve

    prefix = f"s3://{BUCKET}/rerun/default/same-name/"
    for name, value in (
        ("AWS_ACCESS_KEY_ID", s3_server.admin.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", s3_server.admin.secret_access_key),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "first", tmp_path / "second"
    for out, weights in ((first, b"A" * 64), (second, b"B" * 64)):
        out.mkdir()
        (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
        (out / "adapter_model.safetensors").write_bytes(weights)
    (first / "merged").mkdir()
    (first / "merged" / "model.safetensors").write_bytes(b"M" * 64)

    objectstore.upload_results(prefix, first, s3_server.env())
    objectstore.mark_complete(prefix, first, s3_server.env())
    folder = localserve.fetch_results(prefix, endpoint=s3_server.endpoint)
    assert (folder / "adapter_model.safetensors").read_bytes() == b"A" * 64
    assert (tmp_path / "cache" / "kubetune" / "outputs").stat().st_mode & 0o077 == 0, (
        "weights from a private bucket are not readable by other users"
    )

    s3_server.s3().delete_object(
        Bucket=BUCKET, Key="rerun/default/same-name/merged/model.safetensors"
    )  # the job's prefix is new
    objectstore.clear_marker(prefix, s3_server.env())
    objectstore.upload_results(prefix, second, s3_server.env())
    objectstore.mark_complete(prefix, second, s3_server.env())
    assert localserve.fetch_results(prefix, endpoint=s3_server.endpoint) == folder
    assert (folder / "adapter_model.safetensors").read_bytes() == b"B" * 64, (
        "the second run's adapter, not the cached first one"
    )
    assert not (folder / "merged" / "model.safetensors").exists(), "a file the second run did not produce is not served"
    assert (
        objectstore.download_results(
            prefix, folder, objectstore.shell_env(prefix, s3_server.endpoint, dict(__import__("os").environ))
        )
        == []
    )


def test_a_sigterm_during_training_uploads_the_stop_checkpoint_within_the_grace_period_not_after_it(
    tmp_path: Path,
    s3_server: S3Server,
    bucket: Any,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """The trainer as a preempted pod runs it: SIGTERM, the training child saves its stop
    checkpoint (checkpoint-2), and main._train_uploading's final sweep uploads it, bounded by what
    is left of the grace period (KUBETUNE_STOP_GRACE_SECONDS 5 here: terminationGracePeriodSeconds
    20).  The store hangs on that upload: the stop still ends (Retryable) while the upload hangs,
    where it used to wait for the upload, past the kubelet's SIGKILL."""
    import os
    import signal
    import threading

    from kubetune.api import contract
    from kubetune.trainer import main
    from kubetune.trainer.errors import Retryable

    pod, env, cfg, dist = _fake_training_pod(
        tmp_path,
        "preempted",
        s3_server.endpoint,
        s3_server.env(),
        {main.ENV_UPLOAD_INTERVAL: "0.05", contract.ENV_STOP_GRACE: "5"},
        monkeypatch,
    )
    real = objectstore.client(env)
    release, attempted = threading.Event(), threading.Event()

    class HangsOnTheStopCheckpoint:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def upload_file(self, filename: str, *args: Any) -> None:
            if "checkpoint-2" in filename:
                attempted.set()
                release.wait(120)
            real.upload_file(filename, *args)

    monkeypatch.setattr(objectstore, "client", lambda _env: HangsOnTheStopCheckpoint())
    prefix = main.outputs_prefix(cfg)
    assert prefix is not None

    def preempt() -> None:  # the kubelet, once checkpoint-1 is in the bucket
        while objectstore.newest_complete_remote(prefix, s3_server.env(), s3=real) is None:
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    try:
        with pytest.raises(Retryable, match="SIGTERM"):
            main._train_uploading(cfg, dist, env, None, env, prefix, None)  # noqa: SLF001
        assert attempted.is_set() and not release.is_set()  # the stop checkpoint was tried, and given up on in time
        assert objectstore.newest_complete_remote(prefix, s3_server.env(), s3=real) == (
            "checkpoint-1",
            fake_checkpoint_sizes(1, size=100),
        )  # checkpoint-2 has no marker: a restart resumes from checkpoint-1
    finally:
        release.set()


def test_a_node_clock_the_store_refuses_is_a_permanent_failure_naming_the_fix() -> None:
    """S3 answers 403 RequestTimeTooSkewed when the node's clock is more than 15 minutes off;
    botocore corrects no skew for S3, so backing off for the whole training would only hide it."""
    from botocore.exceptions import ClientError

    from kubetune.api import contract

    skewed = ClientError(
        {
            "Error": {
                "Code": "RequestTimeTooSkewed",
                "Message": "The difference between the request time and the current time is too large.",
            },
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "PutObject",
    )
    err = objectstore.failure(f"s3://{BUCKET}/runs/default/job/", skewed, {}, doing="uploading")
    assert err.exit_code != contract.EXIT_RETRYABLE
    assert "time sync" in str(err) and "RequestTimeTooSkewed" in str(err)


def test_a_denied_file_and_a_throttled_one_in_flight_together_report_the_denial(tmp_path: Path) -> None:
    """Two files fail at once, the earlier one (items order) with a 503 SlowDown and the other with
    AccessDenied: the upload reports the permanent denial (not retryable), so the checkpoint
    uploader stops instead of retrying a write it will never be allowed."""
    import threading

    from botocore.exceptions import ClientError

    from kubetune.api import contract

    both_in_flight = threading.Barrier(2, timeout=30)

    class Store:  # botocore's own ClientError, as a real client raises it from upload_file's PutObject
        def delete_object(self, **_: Any) -> None:
            pass

        def upload_file(self, filename: str, bucket: str, key: str) -> None:
            both_in_flight.wait()
            code, status = ("SlowDown", 503) if key.endswith("a.bin") else ("AccessDenied", 403)
            raise ClientError(
                {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
            )

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a")
    (folder / "b.bin").write_bytes(b"b")
    with pytest.raises(StorageError, match="AccessDenied") as caught:
        objectstore.upload_folder(f"s3://{BUCKET}/p/", folder, {}, s3=Store())
    assert caught.value.exit_code != contract.EXIT_RETRYABLE


def test_the_first_process_of_a_node_stages_a_bucket_model_and_the_others_get_its_folder(
    tmp_path: Path, s3_server: S3Server, bucket: Any
) -> None:  # noqa: F811
    """spec.model.uri through the trainer's model stage: local rank 0 mirrors the prefix into the models
    volume and publishes the folder for this launch; another process of the node (same parent) gets it."""
    import threading
    from types import SimpleNamespace

    from kubetune.trainer import model

    prefix = "models/staged-once/"
    bucket.put_object(Bucket=BUCKET, Key=prefix + "config.json", Body=b"{}")
    cfg: Any = SimpleNamespace(models_dir=tmp_path / "models")
    env = {**s3_server.env(), model.ENV_WAIT_TIMEOUT: str(scaled(20))}
    got: list[str] = []
    other = threading.Thread(
        target=lambda: got.append(model._stage_from_bucket(cfg, env, f"s3://{BUCKET}/{prefix}", local_zero=False))
    )  # noqa: SLF001
    other.start()
    first = model._stage_from_bucket(cfg, env, f"s3://{BUCKET}/{prefix}", local_zero=True)  # noqa: SLF001
    other.join(timeout=scaled(30))
    assert got == [first] and (Path(first) / "config.json").read_bytes() == b"{}"
    assert Path(first).is_relative_to(tmp_path / "models")  # the models volume, never the outputs
