"""az:// staging and uploads against a real Azure Blob protocol server (Azurite on loopback, Shared Key
and SAS authentication on): datasets and models in, checkpoints with their markers out, resume from the
newest complete checkpoint in the container, results read back; every failure a StorageError/DataError
with the URI and Azure's error code, never a key, a SAS signature or a traceback."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from tests.support.kt_azurite import KEY, Azurite, azurite  # noqa: F401 - azurite is a fixture
from kubetune.api import contract
from kubetune.trainer import azureblob, objectstore
from kubetune.trainer.errors import DataError, StorageError
from tests.support.httpserve import serving
from tests.support.trainerlib import TinyAssets, fake_checkpoint, make_pod

pytestmark = pytest.mark.train

CONTAINER = "kubetune-tests"
CHATS = [
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]},
]
WRONG_KEY = "d3Jvbmcta2V5LW5ldmVyLXNob3duLWluLWFueS1tZXNzYWdlLTAwMDAwMDAwMDA="


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> Any:  # noqa: F811
    client = azurite.service().get_container_client(CONTAINER)
    client.create_container()
    return client


def _names(container: Any, prefix: str) -> set[str]:
    return {b.name for b in container.list_blobs(name_starts_with=prefix)}


def test_az_datasets_model_checkpoints_resume_and_results_round_trip_through_azure_blob(
    tmp_path: Path, azurite: Azurite, container: Any
) -> None:  # noqa: F811
    env = azurite.env()
    lines = "".join(json.dumps(c) + "\n" for c in CHATS).encode()
    container.upload_blob("data/one.jsonl", lines)
    container.upload_blob("data/shards/a.jsonl", lines)
    container.upload_blob("data/shards/b.json", json.dumps(CHATS).encode())
    container.upload_blob("data/shards/README.md", b"not data")
    # A blob, then a prefix: every data file under it, in name order, named by its az:// URI.
    [(uri, path)] = objectstore.stage_dataset(f"az://{CONTAINER}/data/one.jsonl", tmp_path / "one", env)
    assert uri == f"az://{CONTAINER}/data/one.jsonl" and path.read_bytes() == lines
    staged = objectstore.stage_dataset(f"az://{CONTAINER}/data/shards/", tmp_path / "many", env)
    assert [u for u, _ in staged] == [f"az://{CONTAINER}/data/shards/a.jsonl", f"az://{CONTAINER}/data/shards/b.json"]

    # The base model: mirrored once, then only what changed (by ETag).
    container.upload_blob("models/tiny/config.json", b"{}")
    container.upload_blob("models/tiny/model.safetensors", b"x" * 3000)
    dest = tmp_path / "models" / "tiny"
    assert objectstore.stage_model(f"az://{CONTAINER}/models/tiny/", dest, env) == {
        "objects": 2,
        "downloaded": 2,
        "reused": 0,
    }
    container.upload_blob("models/tiny/model.safetensors", b"y" * 3000, overwrite=True)
    assert objectstore.stage_model(f"az://{CONTAINER}/models/tiny/", dest, env) == {
        "objects": 2,
        "downloaded": 1,
        "reused": 1,
    }
    assert (dest / "model.safetensors").read_bytes() == b"y" * 3000

    # Checkpoints, each with its marker last; a fresh working folder resumes from the newest complete one.
    prefix = f"az://{CONTAINER}/runs/default/job/"
    old = tmp_path / "old-pod"
    for step in (2, 4):
        objectstore.upload_checkpoint(prefix, fake_checkpoint(old, step, size=100 * step), env, config_hash="cfg")
    objectstore.upload_folder(f"{prefix}checkpoint-6/", fake_checkpoint(old, 6), env)  # the pod died before its marker
    assert f"runs/default/job/checkpoint-4/{objectstore.MARKER}" in _names(container, "runs/default/job/")
    fresh = tmp_path / "new-pod"
    fresh.mkdir()
    assert objectstore.restore_checkpoint(prefix, fresh, env, needs_optimizer=True, config_hash="cfg") == "checkpoint-4"
    assert (fresh / "checkpoint-4" / "optimizer.pt").read_bytes() == b"o" * 400
    assert (
        objectstore.upload_checkpoint(prefix, fresh / "checkpoint-4", env, config_hash="cfg") == 0
    )  # already there: its marker stays

    # Results, the job's marker last, read back as `kubetune serve --local` / `plot` do.
    (fresh / "adapter_model.safetensors").write_bytes(b"adapter")
    (fresh / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 4, "loss": 1.0}) + "\n")
    objectstore.upload_results(prefix, fresh, env)
    with pytest.raises(StorageError, match="no _KUBETUNE_COMPLETE here"):
        objectstore.download_results(prefix, tmp_path / "read", env)
    objectstore.mark_complete(prefix, fresh, env)
    shell = objectstore.shell_env(prefix, None, {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string()})
    assert sorted(objectstore.download_results(prefix, tmp_path / "read", shell)) == [
        "adapter_model.safetensors",
        "trainer_log.jsonl",
    ]
    assert objectstore.download_results(prefix, tmp_path / "read", shell) == []  # cached by ETag
    objectstore.clear_marker(prefix, env)
    objectstore.clear_marker(prefix, env)  # deleting a missing marker is fine, as on S3
    assert objectstore.MARKER not in {
        n.rsplit("/", 1)[-1] for n in _names(container, "runs/default/job/") if n.count("/") == 3
    }


def test_az_wrong_key_missing_container_and_blob_and_denied_write_each_give_their_error(
    tmp_path: Path, azurite: Azurite, container: Any
) -> None:  # noqa: F811
    container.upload_blob("data/x.jsonl", b"{}\n", overwrite=True)
    uri = f"az://{CONTAINER}/data/x.jsonl"
    wrong = azurite.connection_string(WRONG_KEY)
    cases = [
        # Azure itself answers a wrong Shared Key AuthenticationFailed (mapped too); Azurite 3.37.0 answers
        # AuthorizationFailure (dist/src/blob/middlewares/AuthenticationMiddlewareFactory.js:25)
        (azurite.env(wrong), uri, "AuthorizationFailure", "a wrong account key or SAS token"),
        (azurite.env(), "az://no-such-container/data/x.jsonl", "ContainerNotFound", "the container does not exist"),
    ]
    for env, where, code, hint in cases:
        with pytest.raises(DataError) as err:
            objectstore.stage_dataset(where, tmp_path / "scratch", env)
        text = str(err.value)
        assert text.startswith(f"{where}: reading the dataset failed: {code}: ") and hint in text, text
        assert WRONG_KEY not in text and KEY not in text and err.value.exit_code == 3
    with pytest.raises(DataError, match=rf"az://{CONTAINER}/data/missing.jsonl: no such object"):
        objectstore.stage_dataset(f"az://{CONTAINER}/data/missing.jsonl", tmp_path / "scratch", azurite.env())
    with pytest.raises(StorageError, match=rf"az://{CONTAINER}/models/missing/: no objects"):
        objectstore.stage_model(f"az://{CONTAINER}/models/missing/", tmp_path / "m", azurite.env())
    # A finished job whose listed result blob was deleted since: Azure's 404 of the HEAD, by its code.
    done = tmp_path / "done"
    done.mkdir()
    (done / "adapter_model.safetensors").write_bytes(b"a")
    objectstore.upload_results(f"az://{CONTAINER}/gone/", done, azurite.env())
    objectstore.mark_complete(f"az://{CONTAINER}/gone/", done, azurite.env())
    container.delete_blob("gone/adapter_model.safetensors")
    with pytest.raises(
        StorageError,
        match=rf"az://{CONTAINER}/gone/: downloading the job's results failed: BlobNotFound: .*no such blob",
    ):
        objectstore.download_results(f"az://{CONTAINER}/gone/", tmp_path / "r", azurite.env())

    # A SAS token that may read and list but not write: a denied write, permanent, naming the fix.
    reader = azurite.sas_connection_string(CONTAINER, read=True, write=False)
    sig = reader.split("sig=", 1)[1].split("&", 1)[0]
    out = tmp_path / "out"
    ckpt = fake_checkpoint(out, 2)
    with pytest.raises(StorageError) as err:
        objectstore.upload_checkpoint(f"az://{CONTAINER}/runs/default/job/", ckpt, azurite.env(reader))
    text = str(err.value)
    assert text.startswith(
        f"az://{CONTAINER}/runs/default/job/checkpoint-2/: uploading failed: AuthorizationPermissionMismatch"
    ), text
    assert sig not in text and err.value.exit_code == 2
    fatal = objectstore.permanent_upload_failure(f"az://{CONTAINER}/runs/default/job/", err.value)
    assert f"give these credentials write, delete, read and list on container '{CONTAINER}'" in str(fatal)


class _CutsOptimizerUploads(http.server.BaseHTTPRequestHandler):
    """A reverse proxy in front of Azurite that forwards everything but the upload of optimizer.pt,
    whose connection it closes after a few bytes, with no answer: a link lost midway."""

    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)

    def log_message(self, *_: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.command == "PUT" and "optimizer.pt" in self.path:
            self.rfile.read(min(length, 16))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            resp = upstream.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in ("transfer-encoding", "connection") and (
                    name.lower() != "content-length" or self.command == "HEAD"
                ):
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_PUT = do_DELETE = do_HEAD = _forward


@pytest.fixture
def cutting_proxy(azurite: Azurite) -> Iterator[str]:  # noqa: F811
    handler = type("Handler", (_CutsOptimizerUploads,), {"upstream": ("127.0.0.1", azurite.port)})
    with serving(handler) as url:
        yield f"{url}/devstoreaccount1"


def test_an_az_checkpoint_upload_cut_midway_is_retryable_and_leaves_no_completion_marker(
    tmp_path: Path, azurite: Azurite, container: Any, cutting_proxy: str
) -> None:  # noqa: F811
    from azure.storage.blob import BlobServiceClient

    prefix = f"az://{CONTAINER}/cut/default/job/"
    ckpt = fake_checkpoint(tmp_path / "out", 3)
    objectstore.upload_checkpoint(prefix, ckpt, azurite.env())
    assert objectstore.newest_complete_remote(prefix, azurite.env()) is not None
    (ckpt / "adapter_model.safetensors").write_bytes(b"v2")  # a re-save of the same step
    # The SDK's own retries (ExponentialRetry, 15 s backoff) are the library's; here one try shows what outlives them.
    conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint={cutting_proxy};"
    through_proxy = azureblob.BlobStore(BlobServiceClient.from_connection_string(conn, retry_total=0))
    with pytest.raises(StorageError) as err:
        objectstore.upload_checkpoint(prefix, ckpt, azurite.env(conn), s3=through_proxy)
    assert str(err.value).startswith(
        f"{prefix}checkpoint-3/: uploading failed: ServiceResponseError"
    ) or "ServiceRequestError" in str(err.value), str(err.value)
    assert err.value.exit_code == contract.EXIT_RETRYABLE and KEY not in str(err.value)
    names = _names(container, "cut/")
    assert "cut/default/job/checkpoint-3/adapter_model.safetensors" in names  # part of it went up
    assert not any(n.endswith(objectstore.MARKER) for n in names)  # the old marker went first, no new one
    assert objectstore.newest_complete_remote(prefix, azurite.env()) is None


def test_the_trainer_ends_a_denied_az_write_with_the_uri_and_code_and_never_a_traceback_or_a_secret(
    tmp_path: Path,
    tiny_assets: TinyAssets,
    azurite: Azurite,
    container: Any,  # noqa: F811
) -> None:
    """The trainer entrypoint, as a pod runs it with a connection-string Secret whose SAS may read but not
    write: a StorageError (exit 2) before any training, in the failed stage line, the log and the run record."""
    from tests.support.trainerlib import run_trainer, stage_lines

    container.upload_blob("data/ok.jsonl", "".join(json.dumps(c) + "\n" for c in CHATS).encode(), overwrite=True)
    reader = azurite.sas_connection_string(CONTAINER, read=True, write=False)
    manifest = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "az-fail", "namespace": "default"},
        "spec": {
            "model": {"path": tiny_assets.model_path, "template": "qwen"},
            "datasets": [{"name": "chat", "uri": f"az://{CONTAINER}/data/ok.jsonl"}],
            "resources": {"gpusPerNode": 0},
            "training": {"precision": "fp32", "maxSteps": 1},
            "storage": {
                "outputs": {"claimName": "out", "uri": f"az://{CONTAINER}/runs/"},
                "objectStore": {"credentialsSecretRef": {"name": "az-storage"}},
            },
        },
    }
    pod = make_pod(tmp_path, manifest, tiny_assets)
    result = run_trainer({**pod.env, **azurite.env(reader)}, timeout=scaled(120))
    log = result.stdout + result.stderr
    text = (
        f"az://{CONTAINER}/runs/default/az-fail/: clearing the completion marker failed: "
        "AuthorizationPermissionMismatch"
    )
    assert result.returncode == contract.EXIT_CONFIG, log[-3000:]
    failed = [s for s in stage_lines(result.stdout) if s["event"] == "failed"]
    assert failed[0]["stage"] == "data" and text in failed[0]["message"]
    sig = reader.split("sig=", 1)[1].split("&", 1)[0]
    assert "Traceback" not in log and sig not in log and KEY not in log
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["exitCode"] == contract.EXIT_CONFIG and text in record["message"]


def test_az_without_the_account_or_credentials_is_a_storage_error_naming_the_fix() -> None:
    with pytest.raises(StorageError, match="az:// needs the storage account"):
        objectstore.client({azureblob.SHELL_ACCOUNT_KEY: KEY}, "az://data/x")
    with pytest.raises(
        StorageError, match="az:// without credentials: set spec.storage.objectStore.credentialsSecretRef"
    ):
        objectstore.client({contract.ENV_S3_ENDPOINT: "https://acct.blob.core.windows.net"}, "az://data/x")
    with pytest.raises(StorageError, match="malformed") as err:
        objectstore.client({contract.ENV_AZURE_CONNECTION_STRING: f"AccountKey={KEY}"}, "az://data/x")
    assert KEY not in str(err.value)


class _Forward(http.server.BaseHTTPRequestHandler):
    """A plain reverse proxy to Azurite, listening on another address (a cluster Service's IP, say)."""

    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)
    log_message = _CutsOptimizerUploads.log_message
    _forward = _CutsOptimizerUploads._forward  # never cuts: nothing here uploads optimizer.pt
    do_GET = do_PUT = do_DELETE = do_HEAD = _forward


def test_az_account_key_with_a_path_style_endpoint_off_loopback_reaches_the_account(
    tmp_path: Path, azurite: Azurite, container: Any
) -> None:  # noqa: F811
    """accountKeyKey with endpoint http://<a cluster IP or Service>:10000/devstoreaccount1 (Azurite deployed in the
    cluster): the SDK reads the account from the path only on localhost/127.0.0.1 and refused it as "malformed";
    the account is the path's first segment, and the key signs for it."""
    container.upload_blob(
        "pathstyle/one.jsonl", b"".join(json.dumps(c).encode() + b"\n" for c in CHATS), overwrite=True
    )
    handler = type("Handler", (_Forward,), {"upstream": ("127.0.0.1", azurite.port)})
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            contract.ENV_AZURE_ACCOUNT_KEY: KEY,
            contract.ENV_S3_ENDPOINT: f"http://127.0.0.2:{server.server_address[1]}/devstoreaccount1",
        }
        staged = objectstore.stage_dataset(f"az://{CONTAINER}/pathstyle/one.jsonl", tmp_path / "data", env)
    finally:
        server.shutdown()
        server.server_close()
    [(uri, local)] = staged
    assert (
        uri == f"az://{CONTAINER}/pathstyle/one.jsonl"
        and [json.loads(line) for line in local.read_text().splitlines()] == CHATS
    )


def test_az_workload_identity_without_the_client_id_names_the_service_account_annotation_not_a_secret(
    tmp_path: Path,
) -> None:
    """The webhook injects AZURE_CLIENT_ID only from the ServiceAccount's azure.workload.identity/client-id
    (pkg/webhook/webhook.go:459-463 @ v1.6.0 skips empty values): without it the job failed with "the Azure
    connection string or endpoint is malformed ... check the Secret of credentialsSecretRef", a Secret it has not."""
    token = tmp_path / "token"
    token.write_text("eyJ.not-a-real.token")
    env = {
        contract.ENV_S3_ENDPOINT: "https://acct.blob.core.windows.net",
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
    }
    with pytest.raises(StorageError) as err:
        objectstore.stage_dataset("az://data/x.jsonl", tmp_path / "d", env)
    assert "AZURE_CLIENT_ID" in str(err.value) and "azure.workload.identity/client-id" in str(err.value), str(err.value)
    assert "credentialsSecretRef" not in str(err.value) and "malformed" not in str(err.value)
    with pytest.raises(StorageError, match=r"Workload Identity needs an https:// endpoint"):
        objectstore.client(
            {
                **env,
                "AZURE_CLIENT_ID": "11111111-0000-0000-0000-000000000000",
                contract.ENV_S3_ENDPOINT: "http://acct.blob.core.windows.net",
            },
            "az://data/x",
        )
    # All three present: a client for the account, authenticating with the federated token (no request made here).
    store = objectstore.client({**env, "AZURE_CLIENT_ID": "11111111-0000-0000-0000-000000000000"}, "az://data/x")
    assert (
        store.service.account_name == "acct" and type(store.service.credential).__name__ == "WorkloadIdentityCredential"
    )


def test_az_directories_of_a_hierarchical_namespace_account_are_not_staged_as_files(
    tmp_path: Path, azurite: Azurite, container: Any
) -> None:  # noqa: F811
    """An ADLS Gen2 account (hierarchical namespace) lists each directory through the Blob API as a zero-length
    blob with metadata hdi_isfolder=true (azure-cli's live ADLS test: `storage blob list` after `directory
    create` gives one entry, metadata.hdi_isfolder 'true').  Azurite has no hierarchical namespace: those
    entries are written here as the service lists them.  A model folder with a sub-folder stages its files."""
    for name in ("hns/model", "hns/model/tokenizer"):
        container.upload_blob(name, b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
    container.upload_blob("hns/model/config.json", b'{"model_type": "qwen2"}', overwrite=True)
    container.upload_blob("hns/model/tokenizer/vocab.json", b"{}", overwrite=True)
    dest = tmp_path / "model"
    objectstore.stage_model(f"az://{CONTAINER}/hns/model/", dest, azurite.env())
    assert (dest / "config.json").read_bytes() == b'{"model_type": "qwen2"}'
    assert (dest / "tokenizer").is_dir() and (dest / "tokenizer" / "vocab.json").read_bytes() == b"{}"
    container.upload_blob("hns/data", b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
    container.upload_blob("hns/data/part", b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
    container.upload_blob(
        "hns/data/part/a.jsonl", b"".join(json.dumps(c).encode() + b"\n" for c in CHATS), overwrite=True
    )
    staged = objectstore.stage_dataset(f"az://{CONTAINER}/hns/data/", tmp_path / "data", azurite.env())
    assert [uri for uri, _ in staged] == [f"az://{CONTAINER}/hns/data/part/a.jsonl"]
