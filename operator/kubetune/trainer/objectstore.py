"""s3://, gs:// and az:// staging and uploads: datasets and the base model in, checkpoints and results out.

One code path for every object URI of a job, on boto3 (the train extra); az:// through
:class:`kubetune.trainer.azureblob.BlobStore`, which answers the same calls from azure-storage-blob.  LLaMA-Factory
0.9.5 can read a cloud dataset itself (``cloud_file_name`` in dataset_info.json: llamafactory/data/parser.py:141-142 ->
loader.py:70,128 -> data_utils.py:158-205 ``read_cloud_json``), but we do not use it: it needs s3fs (not in the image),
has no endpoint or CA option (``fsspec.filesystem("s3")`` with no client arguments, data_utils.py:161-162), tries
anonymous access first, lists one level only, reads JSON/JSONL alone into memory, and would bypass the record checks of
the data stage.  So s3:// datasets are staged here, like ``url`` datasets, into ``<name>.jsonl`` in the data folder, and
LLaMA-Factory reads a local file.

Layout under ``spec.storage.outputs.uri`` (``<uri><namespace>/<job>/``):

* ``checkpoint-N/...`` then ``checkpoint-N/_KUBETUNE_COMPLETE`` (written last, listing every
  file and its size): a checkpoint without the marker, or whose objects do not match it, is
  never resumed from;
* every other result file (adapter, merged/, logs, evaluation, run record), then
  ``_KUBETUNE_COMPLETE`` at the top, written last and only when the job succeeded.

Errors: every cloud failure becomes a :class:`StorageError` (or a DataError for a dataset)
naming the URI and the S3 error code; access keys never appear in a message (they are not in
botocore's error text, and are scrubbed anyway).  Throttling, 5xx and lost connections are
retryable (the pod restarts and resumes); denied access, wrong keys and missing buckets or
keys are permanent.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from kubetune.api import contract
from kubetune.api.objectstore import key_problem, split_uri

from . import azureblob, checkpoints
from .errors import DataError, StorageError

MARKER: Final = "_KUBETUNE_COMPLETE"
"""Completion marker object: written last, after every object it lists."""
ETAGS_FILE: Final = ".kubetune-etags.json"
"""Beside a staged model: the ETag of every object, so a restart downloads only what changed."""
SKIP_OUTPUTS: Final = (contract.DATA_SUBDIR, ".torch_extensions")
"""Folders of the outputs volume that are working state, not results (never uploaded)."""
_RETRYABLE_CODES: Final = frozenset(
    {
        # botocore's standard retry mode (botocore/retries/standard.py @1.44.18): transient codes
        # (TransientRetryableChecker, :463-467) and the throttling codes S3 sends (SlowDown,
        # ThrottledRetryableChecker, :510-525), plus S3's own 5xx codes.  Not RequestTimeTooSkewed: the
        # node's clock is off by more than S3's 15 minutes, and botocore corrects no skew for S3 (it
        # only ages retry headers, endpoint.py:150-163), so every later request fails the same way
        # until the node's clock is fixed: a permanent failure with that hint (``failure``).
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
        "429",
    }
)
"""Failures a later attempt can get past.  botocore already retried them (``mode: standard``,
3 attempts, exponential backoff with jitter: ExponentialBackoff, standard.py:344-400); what
reaches us outlived those attempts.  Also transient: HTTP status 429 (ThrottlingStatusCodeChecker,
:549) and >= 500 (:469), and a lost connection (ConnectionError/HTTPClientError, :470-473: a
reset is botocore's ConnectionClosedError, an HTTPClientError)."""
_CODE_IN_TEXT: Final = re.compile(r"An error occurred \(([A-Za-z0-9]+)\)")
TRANSFER_CONCURRENCY: Final = 10
"""Files below MULTIPART_THRESHOLD in flight at once, up or down.  ``aws s3 cp --recursive`` keeps
10 requests in flight over all its files (``max_concurrent_requests`` 10,
awscli/customizations/s3/transferconfig.py:19-22 @1.46.3); one ``upload_file``/``download_file``
call moves one file, so a loop of them moved a checkpoint of small files one request at a time.
10 is also botocore's connection pool per client (MAX_POOL_CONNECTIONS, botocore/endpoint.py:40
@1.44.18): more threads than that would open connections the pool then discards."""
MULTIPART_THRESHOLD: Final = 8 * 1024 * 1024
"""boto3's ``multipart_threshold`` (TransferConfig.DEFAULTS, boto3/s3/transfer.py:259-262
@1.44.18): a file this large already goes in 8 MiB parts, ``max_concurrency`` 10 at once, within
its one call, so such files are moved one after the other (10 requests in flight, not 100)."""
_T = TypeVar("_T")


# --- connection and errors ----------------------------------------------------------


def client(env: Mapping[str, str], uri: str | None = None) -> Any:
    """A boto3 S3 client for spec.storage.objectStore (kubetune.render.podspec.object_store_env);
    for an az:// ``uri`` an Azure :class:`~kubetune.trainer.azureblob.BlobStore` with the same calls.

    Without KUBETUNE_S3_ACCESS_KEY_ID/SECRET the SDK's default credential chain applies (IRSA's
    web identity token, AWS_* variables for ``kubetune run --local``).  A custom endpoint uses
    path-style addressing, which MinIO and Ceph RGW serve without wildcard DNS."""
    if uri is not None and uri.startswith("az://"):
        return azureblob.BlobStore(azureblob.service_client(env))
    try:
        import boto3  # noqa: PLC0415 - the train extra (and the trainer image)
        from botocore.config import Config  # noqa: PLC0415
    except ImportError:
        raise StorageError(
            "s3:// and gs:// URIs need boto3 in the trainer's environment (pip install 'kubetune[train]'); "
            "this image or venv does not have it"
        ) from None

    endpoint = env.get(contract.ENV_S3_ENDPOINT) or None
    # Another store than AWS (MinIO, Ceph RGW, Cloud Storage's XML API): checksums only where the
    # operation requires one.  botocore >= 1.36 adds a CRC checksum to every request that can
    # carry one by default ("when_supported": botocore/config.py:253-268, configprovider.py:181-191
    # @1.44.18) and s3transfer sets ChecksumAlgorithm on every upload_file unless the client says
    # "when_required" (s3transfer/manager.py:557-562 @0.19.3, the version in images/trainer/requirements.lock); stores
    # without the flexible-checksum headers refuse those uploads (Cloud Storage's XML API among them, per
    # milvus-io/milvus-storage#480, boto/s3transfer#327: not verified against GCS here). kubetune uses no operation
    # whose checksum is required (no DeleteObjects).
    checksums = (
        {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
        if endpoint
        else {}
    )
    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region_name": env.get(contract.ENV_S3_REGION) or None,
        "config": Config(
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else {},
            **checksums,
        ),
    }
    key_id, secret = env.get(contract.ENV_S3_ACCESS_KEY_ID), env.get(contract.ENV_S3_SECRET_ACCESS_KEY)
    if key_id and secret:
        kwargs.update(aws_access_key_id=key_id, aws_secret_access_key=secret)
    ca = env.get(contract.ENV_S3_CA_BUNDLE)
    if ca and os.path.isfile(ca):
        kwargs["verify"] = ca
    elif ca and not env.get("AWS_CA_BUNDLE"):
        # In a pod the ConfigMap is always mounted there (kubelet does not start a pod whose
        # ConfigMap key is missing); under `kubetune run --local` nothing is.
        raise StorageError(
            f"spec.storage.objectStore.caBundle: {ca} does not exist here (a pod mounts the ConfigMap there); "
            "for kubetune run --local, point AWS_CA_BUNDLE at the store's CA bundle (PEM) in your shell"
        )
    # else: no caBundle, or run --local with AWS_CA_BUNDLE, which boto3 reads itself when verify is
    # not given (botocore/configprovider.py:63, session.py:948-949 @1.44.18).
    return boto3.session.Session().client("s3", **kwargs)


def _client_for(env: Mapping[str, str], uri: str) -> Any:
    """The client for ``uri``'s store: Azure's for az://, else :func:`client` (boto3)."""
    return client(env, uri) if uri.startswith("az://") else client(env)


_AZURE_SECRETS: Final = (
    contract.ENV_AZURE_CONNECTION_STRING,
    contract.ENV_AZURE_ACCOUNT_KEY,
    azureblob.SHELL_CONNECTION_STRING,
    azureblob.SHELL_ACCOUNT_KEY,
)
_SECRET_PARTS: Final = re.compile(r"((?:AccountKey|SharedAccessSignature)=|\bsig=)[^;&\s'\"]+", re.IGNORECASE)


def _scrub(text: str, env: Mapping[str, str]) -> str:
    names = (
        contract.ENV_S3_ACCESS_KEY_ID,
        contract.ENV_S3_SECRET_ACCESS_KEY,
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        *_AZURE_SECRETS,
    )
    values = [env.get(name) or "" for name in names]
    # An Azure connection string: also each of its secret parts alone (the key, a SAS token).
    values += [
        part.split("=", 1)[1]
        for name in _AZURE_SECRETS
        for part in (env.get(name) or "").split(";")
        if part.lower().startswith(("accountkey=", "sharedaccesssignature="))
    ]
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return _SECRET_PARTS.sub(r"\1***", text)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a boto3/botocore failure (``NoSuchBucket``, ``AccessDenied``, ``404``...), or
    Azure's of an azure-storage-blob one (``ContainerNotFound``, ``AuthenticationFailed``...)."""
    azure = azureblob.error_code(exc)
    if azure:
        return azure
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and isinstance(exc, azureblob.cloud_errors()):
        return str(status)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    found = _CODE_IN_TEXT.search(str(exc))  # boto3's S3UploadFailedError keeps only the text
    if found:
        return found.group(1)
    return type(exc).__name__


def _unwrap(exc: BaseException) -> tuple[BaseException, bool]:
    """The failure boto3's transfer layer hides, and whether the wrapper itself says "transient".

    * ``download_file``: s3transfer tries a body that was cut or timed out again
      (S3_RETRYABLE_DOWNLOAD_ERRORS: socket errors, ReadTimeoutError, IncompleteReadError,
      ResponseStreamingError, s3transfer/utils.py:44-50, download.py:861-878 @0.19.3) and after
      the last attempt boto3 raises RetriesExceededError(last_exception)
      (boto3/s3/transfer.py:490-491, exceptions.py:74-77 @1.44.18): no code, no status, but only
      network faults ever get there, so it is transient whatever the last exception was.
    * ``upload_file``: boto3 raises S3UploadFailedError with the ClientError's text only, inside
      ``except ClientError`` (boto3/s3/transfer.py:457-460 @1.44.18): the ClientError, with its
      HTTP status (a MinIO 503 ``XMinioServerNotInitialized``, a 500 with any code), is the
      exception's ``__context__``."""
    try:
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError  # noqa: PLC0415
        from botocore.exceptions import ClientError  # noqa: PLC0415
    except ImportError:  # no boto3: client() has said so already
        return exc, False
    if isinstance(exc, RetriesExceededError):
        return (exc.last_exception if isinstance(exc.last_exception, BaseException) else exc), True
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        return exc.__context__, False
    return exc, False


def failure(
    uri: str, exc: BaseException, env: Mapping[str, str], *, doing: str, data: bool = False
) -> StorageError | DataError:
    """The StorageError (DataError when ``data``) for a failed S3 call on ``uri``."""
    exc, wrapped_transient = _unwrap(exc)
    code = error_code(exc)
    response = getattr(exc, "response", None)
    detail = response.get("Error", {}).get("Message", "") if isinstance(response, dict) else ""
    if not detail and isinstance(exc, azureblob.cloud_errors()):
        # Azure's message: the first line is the service's sentence; the rest (request id, time, the
        # string the server signed) is left out.
        detail = str(getattr(exc, "message", None) or exc).split("\n", 1)[0]
    if not detail:
        detail = str(exc).split(": ", 1)[-1] if _CODE_IN_TEXT.search(str(exc)) else str(exc)
    hints = {
        "InvalidAccessKeyId": "the access key id is wrong (spec.storage.objectStore.credentialsSecretRef)",
        "SignatureDoesNotMatch": "the secret access key is wrong (spec.storage.objectStore.credentialsSecretRef)",
        "NoSuchBucket": "the bucket does not exist",
        "RequestTimeTooSkewed": "this node's clock differs from the store's by too much: "
        "fix the node's time sync (NTP/chrony)",
        "NoSuchKey": "no such object",
        "404": "no such object",
        "AccessDenied": "the credentials are not allowed to do this (check the bucket policy / IAM role)",
        "403": "the credentials are not allowed to do this (check the bucket policy / IAM role)",
        "NoCredentialsError": "no credentials: set spec.storage.objectStore.credentialsSecretRef or workload "
        "identity (spec.serviceAccountName)",
        # Azure Blob (https://learn.microsoft.com/en-us/rest/api/storageservices/blob-service-error-codes and
        # common-rest-api-error-codes)
        "AuthenticationFailed": "the account key or SAS token is wrong (the connection string in "
        "spec.storage.objectStore.credentialsSecretRef)",
        "ContainerNotFound": "the container does not exist",
        "BlobNotFound": "no such blob",
        "AuthorizationPermissionMismatch": "the credentials are not allowed to do this (the SAS token's permissions, "
        "or the identity's role: Storage Blob Data Contributor)",
        # Azure answers a wrong account key AuthenticationFailed; Azurite answers it AuthorizationFailure with the same
        # "Server failed to authenticate" message (dist/src/blob/middlewares/AuthenticationMiddlewareFactory.js:25,
        # errors/StorageErrorFactory.js:155-158 @azurite 3.37.0), as Azure does for a SAS it refuses.
        "AuthorizationFailure": "the credentials were refused: a wrong account key or SAS token, "
        "or one not allowed to do this (its permissions, the identity's role, the account's network rules)",
        "ClientAuthenticationError": "no Azure token: check Azure Workload Identity (the ServiceAccount's "
        "azure.workload.identity/client-id and its federated credential)",
    }
    hint = hints.get(code)
    text = _scrub(f"{uri}: {doing} failed: {code}: {detail}" + (f" ({hint})" if hint else ""), env)
    if code == "SSLError":
        hint = "the endpoint's TLS certificate is not trusted: give its CA in spec.storage.objectStore.caBundle"
        text = _scrub(f"{uri}: {doing} failed: {code}: {detail} ({hint})", env)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(response, dict) else 0
    if isinstance(exc, azureblob.cloud_errors()):
        status = getattr(exc, "status_code", None) or 0
    transient = code != "SSLError" and (
        wrapped_transient
        or code in azureblob.TRANSIENT_CODES
        or code in _RETRYABLE_CODES
        or (isinstance(status, int) and (status >= 500 or status == 429))
        or _is_connection_error(exc)
    )
    err: StorageError | DataError = DataError(text) if data and not transient else StorageError(text)
    if transient:
        err.exit_code = contract.EXIT_RETRYABLE
    return err


def _is_connection_error(exc: BaseException) -> bool:
    if azureblob.is_connection_error(exc):
        return True
    from botocore.exceptions import ConnectionError as BotoConnectionError  # noqa: PLC0415
    from botocore.exceptions import HTTPClientError  # noqa: PLC0415 - ConnectionClosedError, ReadTimeoutError

    return isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError))


_PERMANENT_ERRNOS: Final = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}
)


def local_failure(uri: str, exc: OSError, *, doing: str) -> StorageError:
    """A StorageError for a failure of the local side of a transfer: reading a file of the
    outputs volume for an upload (EIO, ESTALE on NFS, a file removed under us), or writing a
    download (ENOSPC).  Permission, read-only and full-disk errors are permanent (exit 2); the
    others retryable (exit 130: the pod restarts; a run whose training completed does not train
    again, see kubetune.trainer.main.already_trained)."""
    where = f" {exc.filename}" if exc.filename else ""
    err = StorageError(f"{uri}: {doing} failed on the local side:{where}: {exc.strerror or exc} (errno {exc.errno})")
    if exc.errno not in _PERMANENT_ERRNOS:
        err.exit_code = contract.EXIT_RETRYABLE
    return err


def _cloud_errors() -> tuple[type[BaseException], ...]:
    try:
        from boto3.exceptions import Boto3Error  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415
    except ImportError:  # client() has said so already, as a StorageError
        return (*azureblob.cloud_errors(), ConnectionError, TimeoutError)
    return (ClientError, BotoCoreError, Boto3Error, *azureblob.cloud_errors(), ConnectionError, TimeoutError)


@contextlib.contextmanager
def _guard(uri: str, env: Mapping[str, str], *, doing: str, data: bool = False) -> Iterator[None]:
    try:
        yield
    except _cloud_errors() as exc:
        raise failure(uri, exc, env, doing=doing, data=data) from None
    except OSError as exc:  # after the cloud errors: ConnectionError and TimeoutError are OSErrors too
        raise local_failure(uri, exc, doing=doing) from None


# --- listing and downloading ----------------------------------------------------------


def list_objects(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (Key, Size, ETag), in key order."""
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return sorted(out, key=lambda o: str(o["Key"]))


def _local_path(dest: Path, relative: str) -> Path:
    """``dest/relative`` for a key below a prefix; keys that would leave ``dest`` are refused."""
    if not relative or key_problem(relative) is not None or relative.endswith("/"):
        raise ValueError(f"object key {relative!r} cannot be staged as a file")
    return dest / relative


def _download(s3: Any, bucket: str, key: str, target: Path) -> None:
    """To a temporary file first, renamed when complete: a dropped connection never leaves a short file.

    The temporary name is unique per call, not per PID: two pods staging one spec.model.uri into a
    shared (ReadWriteMany) models volume each have their own PID namespace and often the same PID,
    and a shared name let one pod rename the other's file away (FileNotFoundError).  s3transfer
    itself writes to ``<name>.<8 random hex digits>`` and renames that onto our name
    (s3transfer/utils.py:330-335, download.py:169,975 @0.19.3), so the name must be ours alone."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex}")
    try:
        s3.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _transfer_all(work: Callable[[_T], None], items: Sequence[tuple[_T, int]]) -> None:
    """``work(item)`` for every (item, size in bytes): files of MULTIPART_THRESHOLD or more one after
    the other (each is already moved in parts, several at once), the smaller ones up to
    TRANSFER_CONCURRENCY at once.  After a failure no further item starts, those under way finish,
    and the failure of the first failed item (in ``items`` order) is raised here, in the caller's
    thread (its ``_guard`` turns it into a StorageError).  Daemon threads, as the checkpoint
    uploader's own.  boto3's upload_file/download_file still run each request in its transfer
    manager's ThreadPoolExecutor (s3transfer/futures.py:426 @0.19.3), whose workers the interpreter
    joins at exit whatever their daemon flag: kubetune.trainer.__main__ therefore ends the process
    with os._exit while one of these threads is still alive (an upload abandoned at the SIGTERM
    deadline of CheckpointUploader.stop), or the kubelet's SIGKILL would replace main's exit code."""
    small = [item for item, size in items if size < MULTIPART_THRESHOLD]
    _each(work, small)
    for item, size in items:
        if size >= MULTIPART_THRESHOLD:
            work(item)


def _each(work: Callable[[_T], None], items: Sequence[_T]) -> None:
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    queue = iter(enumerate(items))
    lock = threading.Lock()
    errors: dict[int, BaseException] = {}

    def worker() -> None:
        while True:
            with lock:
                nxt = None if errors else next(queue, None)
            if nxt is None:
                return
            index, item = nxt
            try:
                work(item)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                with lock:
                    errors[index] = exc

    threads = [
        threading.Thread(target=worker, name=f"kubetune-transfer-{n}", daemon=True)
        for n in range(min(TRANSFER_CONCURRENCY, len(items)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise _to_report(errors)


def _to_report(errors: Mapping[int, BaseException]) -> BaseException:
    """The first permanent store failure (denied, no bucket, wrong keys), else the first failure, in
    items order: with files in flight at once a 503 on one file and an AccessDenied on another both
    happen, and reporting the 503 would have the checkpoint uploader retry a denied write forever
    (CheckpointUploader._loop stops only on a permanent one)."""
    ordered = [errors[index] for index in sorted(errors)]
    for exc in ordered:
        if isinstance(exc, _cloud_errors()) and failure("", exc, {}, doing="").exit_code != contract.EXIT_RETRYABLE:
            return exc
    return ordered[0]


DATA_SUFFIXES: Final = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def stage_dataset(uri: str, scratch: Path, env: Mapping[str, str], s3: Any | None = None) -> list[tuple[str, Path]]:
    """Download a dataset object, or every data file under a prefix, into ``scratch``; returns
    (object URI, local file) in key order.  Failures are DataErrors naming the URI and the S3 error code."""
    bucket, key = split_uri(uri)
    scratch.mkdir(parents=True, exist_ok=True)
    with _guard(uri, env, doing="reading the dataset", data=True):
        s3 = s3 or _client_for(env, uri)
        if key and not key.endswith("/"):
            objects = [o for o in list_objects(s3, bucket, key) if o["Key"] == key]
            if objects:
                if not key.endswith(DATA_SUFFIXES):
                    raise DataError(f"{uri}: unsupported file type (use .json, .jsonl, .parquet, .csv or .arrow)")
                target = scratch / f"0{Path(key).suffix}"
                _download(s3, bucket, key, target)
                return [(uri, target)]
            key += "/"  # s3://bucket/folder names the folder's objects too
        objects = [o for o in list_objects(s3, bucket, key) if str(o["Key"]).endswith(DATA_SUFFIXES)]
        if not objects:
            raise DataError(f"{uri}: no such object, and no .json/.jsonl/.parquet/.csv/.arrow object under that prefix")
        files = [
            (f"{uri.split('://', 1)[0]}://{bucket}/{obj['Key']}", scratch / f"{i:06d}{Path(str(obj['Key'])).suffix}")
            for i, obj in enumerate(objects)
        ]
        _transfer_all(
            lambda job: _download(s3, bucket, job[0], job[1]),
            [
                ((str(obj["Key"]), target), int(obj.get("Size", 0)))
                for obj, (_, target) in zip(objects, files, strict=True)
            ],
        )
        return files


def stage_model(uri: str, dest: Path, env: Mapping[str, str], s3: Any | None = None) -> dict[str, Any]:
    """Mirror the model prefix ``uri`` into ``dest``, downloading only objects whose ETag changed
    since the last staging (kept in ``dest/.kubetune-etags.json``, written last).  Returns what
    was done."""
    bucket, prefix = split_uri(uri)
    with _guard(uri, env, doing="downloading the base model"):
        s3 = s3 or _client_for(env, uri)
        objects = [o for o in list_objects(s3, bucket, prefix) if not str(o["Key"]).endswith("/")]
        if not objects:
            raise StorageError(
                f"{uri}: no objects under this prefix (spec.model.uri must name a folder holding config.json)"
            )
        try:
            known = json.loads((dest / ETAGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        etags: dict[str, str] = {}
        wanted: list[tuple[tuple[str, Path], int]] = []
        for obj in objects:
            relative = str(obj["Key"])[len(prefix) :]
            try:
                target = _local_path(dest, relative)
            except ValueError as exc:
                raise StorageError(f"{uri}: {exc}") from None
            etag = str(obj.get("ETag", ""))
            etags[relative] = etag
            if known.get(relative) == etag and target.is_file() and target.stat().st_size == obj.get("Size"):
                continue
            wanted.append(((str(obj["Key"]), target), int(obj.get("Size", 0))))
        _transfer_all(lambda job: _download(s3, bucket, job[0], job[1]), wanted)
        fetched = len(wanted)
        for stale in set(known) - set(etags):
            with contextlib.suppress(OSError, ValueError):
                _local_path(dest, stale).unlink()
    if not (dest / "config.json").is_file():
        raise StorageError(
            f"{uri}: the prefix holds no config.json (spec.model.uri must name a Hugging Face model folder)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{ETAGS_FILE}.tmp-{uuid.uuid4().hex}"  # unique: see _download
    tmp.write_text(json.dumps(etags, sort_keys=True), encoding="utf-8")
    os.replace(tmp, dest / ETAGS_FILE)
    return {"objects": len(objects), "downloaded": fetched, "reused": len(objects) - fetched}


# --- uploading ----------------------------------------------------------------------


def job_prefix(outputs_uri: str, namespace: str, job: str) -> str:
    """``<outputs.uri><namespace>/<job>/``: where one job's results go."""
    return f"{outputs_uri}{namespace}/{job}/"


def _files(folder: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or path.is_symlink() or relative.split("/")[0] in skip:
            continue
        out.append((relative, path))
    return out


def upload_folder(
    prefix_uri: str,
    folder: Path,
    env: Mapping[str, str],
    *,
    skip: tuple[str, ...] = (),
    s3: Any | None = None,
    marker: Mapping[str, Any] | None = None,
) -> int:
    """Upload every file of ``folder`` under ``prefix_uri``; then, when ``marker`` is given, the
    completion marker (the file list and sizes, plus ``marker``) last.  An existing marker is
    deleted first, so a re-upload is never marked complete while it is under way.  Returns the bytes sent."""
    bucket, prefix = split_uri(prefix_uri)
    with _guard(prefix_uri, env, doing="uploading"):
        files = _files(folder, skip)
        s3 = s3 or _client_for(env, prefix_uri)
        if marker is not None:
            s3.delete_object(Bucket=bucket, Key=prefix + MARKER)
        _transfer_all(
            lambda job: s3.upload_file(str(job[1]), bucket, prefix + job[0]),
            [((r, p), p.stat().st_size) for r, p in files],
        )
        sent = sum(path.stat().st_size for _, path in files)
        if marker is not None:
            body = dict(marker)
            body["files"] = {relative: path.stat().st_size for relative, path in files}
            s3.put_object(Bucket=bucket, Key=prefix + MARKER, Body=json.dumps(body, sort_keys=True).encode())
    return sent


def upload_checkpoint(
    prefix_uri: str, folder: Path, env: Mapping[str, str], s3: Any | None = None, *, config_hash: str | None = None
) -> int:
    """One complete local checkpoint to ``<prefix_uri><checkpoint-N>/``, its marker last.  The marker
    carries the hash of the training configuration that wrote it (kubetune.trainer.fingerprint), so a
    restart resumes only its own configuration's checkpoints."""
    uri = f"{prefix_uri}{folder.name}/"
    marker = {"checkpoint": folder.name, "configHash": config_hash}
    s3 = s3 or _guarded_client(uri, env)
    if _already_there(uri, folder, env, s3, marker):
        return 0
    return upload_folder(uri, folder, env, s3=s3, marker=marker)


def _already_there(uri: str, folder: Path, env: Mapping[str, str], s3: Any, marker: Mapping[str, Any]) -> bool:
    """The bucket holds this very checkpoint already: its marker names the same configuration and
    the same files and sizes, and every object is there with that size (a checkpoint restored from
    the bucket, or still on a volume a restarted pod mounts again).  Uploading it again would delete
    the marker first (:func:`upload_folder`), leaving the job nothing to resume from while the
    upload runs, exactly when a preemption is likely."""
    bucket, prefix = split_uri(uri)
    with _guard(uri, env, doing="uploading"):
        want = {relative: path.stat().st_size for relative, path in _files(folder)}
        there = _read_marker(s3, bucket, prefix + MARKER)
        if there is None or there.get("files") != want or any(there.get(k) != v for k, v in marker.items()):
            return False
        present = {str(o["Key"])[len(prefix) :]: o.get("Size") for o in list_objects(s3, bucket, prefix)}
    return all(present.get(f) == size for f, size in want.items())


def _read_marker(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except _cloud_errors() as exc:
        if error_code(exc) in ("NoSuchKey", "404", "BlobNotFound"):
            return None
        raise
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def newest_complete_remote(
    prefix_uri: str, env: Mapping[str, str], s3: Any | None = None, *, config_hash: str | None = None
) -> tuple[str, dict[str, int]] | None:
    """(``checkpoint-N``, its files and sizes) of the newest checkpoint under ``prefix_uri`` whose
    marker exists, names ``config_hash`` (when given) and whose objects match the marker's list;
    None when there is none."""
    bucket, prefix = split_uri(prefix_uri)
    with _guard(prefix_uri, env, doing="looking for checkpoints"):
        s3 = s3 or _client_for(env, prefix_uri)
        names: list[tuple[int, str]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"])[len(prefix) :].rstrip("/")
                if (m := re.fullmatch(r"checkpoint-(\d+)", name)) is not None:
                    names.append((int(m.group(1)), name))
        for _, name in sorted(names, reverse=True):
            marker = _read_marker(s3, bucket, f"{prefix}{name}/{MARKER}")
            if marker is None or not isinstance(marker.get("files"), dict):
                continue
            if config_hash is not None and marker.get("configHash") != config_hash:
                continue  # written by another configuration of a job with this name
            present = {
                str(o["Key"])[len(prefix) + len(name) + 1 :]: o.get("Size")
                for o in list_objects(s3, bucket, f"{prefix}{name}/")
            }
            if all(present.get(f) == size for f, size in marker["files"].items()):
                return name, {str(k): int(v) for k, v in marker["files"].items()}
    return None


def restore_checkpoint(
    prefix_uri: str,
    output_dir: Path,
    env: Mapping[str, str],
    *,
    needs_optimizer: bool,
    s3: Any | None = None,
    config_hash: str | None = None,
) -> str | None:
    """When ``output_dir`` holds no complete checkpoint, download the newest complete one of this
    configuration from the bucket into it (a fresh volume after preemption); returns its name, or None."""
    if checkpoints.newest_complete(output_dir, needs_optimizer=needs_optimizer) is not None:
        return None
    s3 = s3 or _guarded_client(prefix_uri, env)
    found = newest_complete_remote(prefix_uri, env, s3, config_hash=config_hash)
    if found is None:
        return None
    name, files = found
    bucket, prefix = split_uri(prefix_uri)
    staging = output_dir / f".{name}.restore"
    shutil.rmtree(staging, ignore_errors=True)
    with _guard(f"{prefix_uri}{name}/", env, doing="downloading the checkpoint"):
        wanted: list[tuple[tuple[str, Path], int]] = []
        for relative, size in files.items():
            try:
                wanted.append(((f"{prefix}{name}/{relative}", _local_path(staging, relative)), size))
            except ValueError as exc:
                raise StorageError(f"{prefix_uri}{name}/: {exc}") from None
        _transfer_all(lambda job: _download(s3, bucket, job[0], job[1]), wanted)
    final = output_dir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return name


def _guarded_client(uri: str, env: Mapping[str, str]) -> Any:
    with _guard(uri, env, doing="connecting"):
        return _client_for(env, uri)


def upload_results(prefix_uri: str, output_dir: Path, env: Mapping[str, str], *, s3: Any | None = None) -> int:
    """Every result of the job (not the checkpoints, which go by :class:`CheckpointUploader`, nor
    working state), without the top-level marker: see :func:`mark_complete`.

    Objects under ``<prefix>merged/`` that the local merged model does not hold (an earlier run under
    the job's name, on another base: other shard names) are deleted after the upload: KServe's storage
    initializer downloads every object under storageUri ``<prefix>merged/``, not what the marker lists
    (python/storage/kserve_storage/kserve_storage.py:533-559 @v0.20.0)."""
    skip = _not_results(output_dir)
    sent = upload_folder(prefix_uri, output_dir, env, skip=skip, s3=s3)
    merged = contract.MERGED_SUBDIR
    if merged in skip:
        return sent
    bucket, prefix = split_uri(prefix_uri)
    keep = (
        {f"{prefix}{merged}/{relative}" for relative, _ in _files(output_dir / merged)}
        if (output_dir / merged).is_dir()
        else set()
    )
    with _guard(prefix_uri, env, doing="removing an earlier run's merged model files"):
        s3 = s3 or _client_for(env, prefix_uri)
        for obj in list_objects(s3, bucket, f"{prefix}{merged}/"):
            if str(obj["Key"]) not in keep:
                s3.delete_object(Bucket=bucket, Key=str(obj["Key"]))
    return sent


def _not_results(output_dir: Path) -> tuple[str, ...]:
    """Top-level entries of the job's folder that are not results: working state (SKIP_OUTPUTS),
    the checkpoints (uploaded one by one, each with its marker), checkpoints a kill left
    half-written and train.quarantine_incomplete set aside (``.incomplete-checkpoint-N-<time>``),
    and a restore a kill interrupted (``.checkpoint-N.restore``, see restore_checkpoint), and the
    merged model of an earlier export that a retried export set aside (``.merged.old-<time>``) or a
    kill left half-written (``.merged.partial-<pid>``; trainer/export.py run): listed in the marker,
    spec.serve.modelSource bucket's fetch-results would download a second merged model."""
    merged = contract.MERGED_SUBDIR
    patterns = ("checkpoint-*", ".incomplete-*", ".checkpoint-*.restore", f".{merged}.old-*", f".{merged}.partial-*")
    return (*SKIP_OUTPUTS, *sorted({p.name for pattern in patterns for p in output_dir.glob(pattern)}))


def mark_complete(prefix_uri: str, output_dir: Path, env: Mapping[str, str], *, s3: Any | None = None) -> None:
    """The run record again (it was rewritten after the results upload), then the job's marker, last."""
    bucket, prefix = split_uri(prefix_uri)
    with _guard(prefix_uri, env, doing="writing the completion marker"):
        files = _files(output_dir, _not_results(output_dir))
        s3 = s3 or _client_for(env, prefix_uri)
        record = output_dir / contract.RUN_RECORD_FILE
        if record.is_file():
            s3.upload_file(str(record), bucket, prefix + contract.RUN_RECORD_FILE)
        body = {"files": {r: p.stat().st_size for r, p in files}}
        s3.put_object(Bucket=bucket, Key=prefix + MARKER, Body=json.dumps(body, sort_keys=True).encode())


def clear_marker(prefix_uri: str, env: Mapping[str, str], s3: Any | None = None) -> None:
    """A (re)started job is not complete until it says so again."""
    bucket, prefix = split_uri(prefix_uri)
    with _guard(prefix_uri, env, doing="clearing the completion marker"):
        (s3 or _client_for(env, prefix_uri)).delete_object(Bucket=bucket, Key=prefix + MARKER)


_FIXES: Final = {
    "InvalidAccessKeyId": "correct the access key id in the Secret of spec.storage.objectStore.credentialsSecretRef",
    "SignatureDoesNotMatch": "correct the secret access key in the Secret of "
    "spec.storage.objectStore.credentialsSecretRef",
    "NoSuchBucket": "create bucket {bucket!r}, or correct the bucket name in spec.storage.outputs.uri",
    "AccessDenied": "allow s3:PutObject, s3:DeleteObject, s3:GetObject and s3:ListBucket on bucket {bucket!r} for "
    "these credentials (bucket policy or IAM role; spec.serviceAccountName for workload identity)",
    "403": "allow s3:PutObject, s3:DeleteObject, s3:GetObject and s3:ListBucket on bucket "
    "{bucket!r} for these credentials",
    "NoCredentialsError": "set spec.storage.objectStore.credentialsSecretRef, "
    "or workload identity through spec.serviceAccountName",
    "AuthenticationFailed": "correct the account key or SAS token of the connection string in the Secret of "
    "spec.storage.objectStore.credentialsSecretRef",
    "ContainerNotFound": "create container {bucket!r} in the storage account, "
    "or correct the container name in spec.storage.outputs.uri",
    "AuthorizationPermissionMismatch": "give these credentials write, delete, read and list on container {bucket!r} "
    "(a SAS token with racwdl, or the Storage Blob Data Contributor role for workload identity)",
    "AuthorizationFailure": "correct the account key or SAS token in the Secret of "
    "spec.storage.objectStore.credentialsSecretRef, or give these credentials write, delete, "
    "read and list on container {bucket!r} (and check the account's network rules)",
}

UPLOAD_BACKOFF_MAX_S: Final = 120.0
"""Longest wait between two tries of a checkpoint upload that failed transiently during training."""


def permanent_upload_failure(prefix_uri: str, exc: StorageError) -> StorageError:
    """The error a permanent checkpoint-upload failure during training ends the job with: names
    spec.storage.outputs.uri, the bucket and the fix; keeps the exit code (2)."""
    bucket, _ = split_uri(prefix_uri)
    code = next((c for c in _FIXES if f"failed: {c}:" in str(exc)), None)
    fix = (
        _FIXES[code].format(bucket=bucket)
        if code
        else f"check spec.storage.outputs.uri (bucket {bucket!r}) and spec.storage.objectStore"
    )
    err = StorageError(
        f"spec.storage.outputs.uri: uploading a checkpoint during training failed for good, so training was stopped "
        f"(its stop checkpoint stays on the outputs volume): {exc}; fix: {fix}"
    )
    err.exit_code = exc.exit_code
    return err


class CheckpointUploader:
    """Rank 0, during training: uploads each complete checkpoint once its files stopped changing
    between two looks (transformers writes a checkpoint's files one after the other), each with its
    marker last.  ``stop`` does a final pass after training (or after a preemption stop).

    A transient failure (throttling, 5xx, a lost connection that outlived botocore's own retries)
    is tried again at the next look, after a backoff doubling from ``interval`` up to
    UPLOAD_BACKOFF_MAX_S.  A permanent one (wrong keys, no bucket, a denied write) would fail
    every later upload the same way: the uploader stops, keeps the error and sets ``failed``,
    which stops the training at once (kubetune.trainer.launch.Child.run's abort)."""

    def __init__(
        self,
        prefix_uri: str,
        output_dir: Path,
        env: Mapping[str, str],
        *,
        needs_optimizer: bool,
        interval: float = 5.0,
        config_hash: str | None = None,
    ) -> None:
        self.prefix_uri, self.output_dir, self.env, self.config_hash = prefix_uri, output_dir, env, config_hash
        self.needs_optimizer, self.interval = needs_optimizer, interval
        self.uploaded: dict[str, str] = {}
        self.error: StorageError | None = None
        self.failed = threading.Event()
        """Set when a permanent failure ended the uploads (``error`` says which)."""
        self.retries = 0
        """Transient failures met during training (each tried again after a backoff)."""
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._s3: Any | None = None

    def _fingerprint(self, folder: Path) -> str:
        stats = [(r, p.stat().st_size, p.stat().st_mtime_ns) for r, p in _files(folder)]
        return hashlib.sha256(json.dumps(stats).encode()).hexdigest()

    def poll(self, *, final: bool = False) -> list[str]:
        """Upload the checkpoints that are complete (and, unless ``final``, unchanged since the last poll)."""
        done = []
        for folder in sorted(self.output_dir.glob("checkpoint-*")):
            if not checkpoints.is_complete(folder, needs_optimizer=self.needs_optimizer):
                continue
            try:
                stamp = self._fingerprint(folder)
            except OSError:
                continue  # rotated away (save_total_limit) while we looked
            if self.uploaded.get(folder.name) == stamp:
                continue
            if not final and self._seen.get(folder.name) != stamp:
                self._seen[folder.name] = stamp
                continue
            if self._s3 is None:
                self._s3 = _guarded_client(self.prefix_uri, self.env)
            upload_checkpoint(self.prefix_uri, folder, self.env, s3=self._s3, config_hash=self.config_hash)
            self.uploaded[folder.name] = stamp
            done.append(folder.name)
        return done

    def _loop(self) -> None:
        wait, failures = self.interval, 0
        while not self._stop.wait(wait):
            try:
                self.poll()
                wait, failures = self.interval, 0
            except StorageError as exc:
                if exc.exit_code != contract.EXIT_RETRYABLE:
                    # Denied, wrong keys, no bucket: every later upload would fail the same way.
                    self.error = permanent_upload_failure(self.prefix_uri, exc)
                    self.failed.set()
                    return
                # A lost connection, throttling, a 5xx: the checkpoint is not marked uploaded, so a
                # later look tries again, after a backoff (SlowDown asks for fewer requests).
                failures += 1
                self.retries += 1
                wait = min(self.interval * 2**failures, UPLOAD_BACKOFF_MAX_S)
                print(
                    f"kubetune trainer: checkpoint upload failed, trying again in {wait:.0f}s: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
            except OSError:
                continue  # the volume changed under the look (a checkpoint rotated away): look again

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kubetune-checkpoint-upload", daemon=True)
        self._thread.start()

    def stop(self, *, sweep: bool = True, deadline: float | None = None) -> list[str]:
        """Stop the background uploads; with ``sweep``, upload what is complete now.  Raises the
        permanent StorageError the background uploads met, or the sweep's own failure (a transient
        one met during training was retried by the next look, and again by the sweep).

        ``deadline`` (time.monotonic()) bounds the whole stop, after a SIGTERM: the pod is killed at
        the end of its grace period (kubetune.trainer.launch.stop_budgets).  An upload still under
        way then is left to its daemon thread (it dies with the process); its checkpoint has no
        marker in the bucket, so it is never resumed from, and a retryable StorageError says so."""
        self._stop.set()
        if deadline is None:
            if self._thread is not None:
                self._thread.join()
            if self.error is not None:
                raise self.error
            return self.poll(final=True) if sweep else []
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self.error is not None:
            raise self.error
        if not sweep:
            return []
        result: list[list[str]] = []
        failure: list[BaseException] = []

        def sweep_once() -> None:
            try:
                result.append(self.poll(final=True))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                failure.append(exc)

        budget = deadline - time.monotonic()
        if self._thread is None or not self._thread.is_alive():
            worker = threading.Thread(target=sweep_once, name="kubetune-final-upload", daemon=True)
            worker.start()
            worker.join(max(0.0, budget))
            if failure:
                raise failure[0]
            if result:
                return result[0]
        err = StorageError(
            f"{self.prefix_uri}: the final checkpoint upload did not finish within its {max(0.0, budget):.0f}s left "
            "of the pod's grace period; that checkpoint has no completion marker in the bucket (it stays on the "
            "outputs volume); raise spec.runPolicy.terminationGracePeriodSeconds to give it more time"
        )
        err.exit_code = contract.EXIT_RETRYABLE
        raise err


# --- reading a finished job's results back (kubetune serve --local / plot on a bucket URI) ----


def shell_env(uri: str, endpoint: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The client environment for a command run in a user's shell: the keys from the shell (AWS_*
    or ~/.aws, boto3's default chain; for az:// AZURE_STORAGE_CONNECTION_STRING, or
    AZURE_STORAGE_ACCOUNT_KEY with ``endpoint``), the endpoint from ``endpoint`` (the spec's
    objectStore.endpoint), else for gs:// Cloud Storage's XML API with region auto."""
    from kubetune.api.objectstore import GCS_ENDPOINT  # noqa: PLC0415

    env = dict(environ)
    if endpoint:
        env[contract.ENV_S3_ENDPOINT] = endpoint
    elif uri.startswith("gs://"):
        env[contract.ENV_S3_ENDPOINT] = GCS_ENDPOINT
        env.setdefault(contract.ENV_S3_REGION, "auto")
    return env


def download_results(
    prefix_uri: str, dest: Path, env: Mapping[str, str], *, only: tuple[str, ...] | None = None, s3: Any | None = None
) -> list[str]:
    """Copy a job's results (``<outputs.uri><namespace>/<job>/``) into ``dest``: every file its
    completion marker lists (the results, never the checkpoints), or just ``only``.  A job without
    the marker has not succeeded, or its upload is under way: StorageError, nothing used.  Returns
    the files fetched.

    ``dest`` is a cache kept per URI, and a job created again under its name writes to the same
    URI: a file is reused only when its object's ETag is the one recorded when it was fetched
    (beside ``dest``, in ``<dest>.etags.json``, so that ``dest`` holds only the job's files; as
    :func:`stage_model` does; one HEAD per file, which
    s3:GetObject allows), never on its size alone (a LoRA adapter of the same rank has the same
    size); a file fetched for an earlier run that this run's marker does not list is removed."""
    if not prefix_uri.endswith("/"):
        prefix_uri += "/"
    bucket, prefix = split_uri(prefix_uri)
    fetched: list[str] = []
    with _guard(prefix_uri, env, doing="downloading the job's results"):
        s3 = s3 or _client_for(env, prefix_uri)
        marker = _read_marker(s3, bucket, prefix + MARKER)
        if marker is None or not isinstance(marker.get("files"), dict):
            raise StorageError(
                f"{prefix_uri}: no {MARKER} here: the job has not succeeded, its upload is under way, "
                "or this is not <spec.storage.outputs.uri><namespace>/<job>/; use the job's outputs volume, "
                "or wait for the job to succeed"
            )
        files = {str(k): int(v) for k, v in marker["files"].items()}
        try:
            known = json.loads(dest.with_name(dest.name + ".etags.json").read_text(encoding="utf-8"))
            known = {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        etags = {relative: etag for relative, etag in known.items() if relative in files}
        for stale in sorted(set(known) - set(files)):  # fetched for an earlier run under this URI
            with contextlib.suppress(ValueError, OSError):
                _local_path(dest, stale).unlink()
        wanted: list[tuple[tuple[str, Path, int], int]] = []
        for relative, size in sorted(files.items()):
            if only is not None and relative not in only:
                continue
            try:
                wanted.append(((relative, _local_path(dest, relative), size), size))
            except ValueError as exc:
                raise StorageError(f"{prefix_uri}: {exc}") from None

        def fetch(job: tuple[str, Path, int]) -> None:
            relative, target, size = job
            etag = str(s3.head_object(Bucket=bucket, Key=prefix + relative).get("ETag", ""))
            if etag and known.get(relative) == etag and target.is_file() and target.stat().st_size == size:
                return
            etags.pop(relative, None)  # one key per job: no two threads touch one entry
            _download(s3, bucket, prefix + relative, target)
            got = target.stat().st_size
            if got != size:
                # The object is not the one the marker listed: the job was created again under its name and
                # is uploading anew (its start deleted the marker, trainer/main.py _data_stage clear_marker,
                # after this call read it). Its old and new files must not be mixed into one model folder.
                with contextlib.suppress(OSError):
                    target.unlink()
                raise StorageError(
                    f"{prefix_uri}{relative}: {MARKER} lists {size} bytes, the object has {got} now: "
                    "the job's results changed while they were read (the job is running again under its "
                    "name); wait for it to succeed"
                )
            etags[relative] = etag
            fetched.append(relative)

        _transfer_all(fetch, wanted)
        fetched.sort()
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.etags.json.tmp-{uuid.uuid4().hex}")  # unique: see _download
        tmp.write_text(json.dumps(etags, sort_keys=True), encoding="utf-8")
        os.replace(tmp, dest.with_name(dest.name + ".etags.json"))
    return fetched
