"""az:// (Azure Blob Storage) for :mod:`kubetune.trainer.objectstore`, on azure-storage-blob.

``objectstore`` speaks the few S3 calls it needs (list, download, upload, put, delete, get, head);
:class:`BlobStore` answers the same calls from Azure's own client, so staging, checkpoints, the
completion markers, resume and the results read back take one code path for every store.  Azure's
failures stay Azure's: ``HttpResponseError.error_code`` (``AuthenticationFailed``,
``ContainerNotFound``, ``BlobNotFound``, ``AuthorizationPermissionMismatch``...) is what
``objectstore.failure`` names, with the URI.

Contracts relied on (azure-storage-blob 12.31.1, azure-core 1.41.0, as installed):

* the service's error code is set on every storage error as ``error_code`` (from the
  ``x-ms-error-code`` header or the XML body: azure/storage/blob/_shared/response_handlers.py:101-127,
  :188); 404 codes raise ResourceNotFoundError, AuthenticationFailed ClientAuthenticationError
  (:139-150);
* the client retries with ExponentialRetry(retry_total=3) unless told otherwise
  (_shared/base_client.py:506, _shared/policies.py:730-762); what reaches us outlived those tries;
* ``upload_blob`` of more than ``max_single_put_size`` (64 MiB, _shared/models.py:590) stages blocks
  and commits the block list last (_upload_helpers.py:92-93,188): an interrupted upload leaves no
  visible blob, and kubetune's marker is written after every blob it lists anyway;
* the account of an account key comes from the endpoint: ``<account>.blob.core.<suffix>``, or the
  first path segment on ``localhost``/``127.0.0.1`` (Azurite) (_shared/base_client.py:141-149,
  :429-432).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlparse

from kubetune.api import contract

from .errors import StorageError

MAX_CONCURRENCY: Final = 4
"""Parallel block transfers of one blob (the SDK's default is 1)."""
TRANSIENT_CODES: Final = frozenset(
    {"ServerBusy", "OperationTimedOut", "InternalError", "ServiceUnavailable", "IncompleteRead"}
)
"""Azure Blob error codes that a later attempt can get past (the 5xx codes of
https://learn.microsoft.com/en-us/rest/api/storageservices/blob-service-error-codes, also caught by status)."""
SHELL_CONNECTION_STRING: Final = "AZURE_STORAGE_CONNECTION_STRING"
SHELL_ACCOUNT_KEY: Final = "AZURE_STORAGE_ACCOUNT_KEY"
"""What `kubetune run --local`, `plot` and `serve --local` read from the user's shell (adlfs's names:
adlfs/spec.py:335-338 @fsspec/adlfs 6362b4f)."""


def service_client(env: Mapping[str, str]) -> Any:
    """A BlobServiceClient for the job's objectStore (kubetune.render.podspec.job_object_store_env):
    the connection string, else the account key with the endpoint, else Azure Workload Identity
    (AZURE_FEDERATED_TOKEN_FILE, set by AKS's webhook) with the endpoint.  Under `kubetune run --local`
    the Secret is not read: AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY of the shell."""
    try:
        from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - the train extra (and the trainer image)
    except ImportError:
        raise StorageError(
            "az:// URIs need azure-storage-blob in the trainer's environment (pip install 'kubetune[train]'); "
            "this image or venv does not have it"
        ) from None
    endpoint = env.get(contract.ENV_S3_ENDPOINT) or None
    kwargs: dict[str, Any] = {}
    ca = env.get(contract.ENV_S3_CA_BUNDLE)
    if ca:
        kwargs["connection_verify"] = ca  # azure-core's transport option: a CA bundle path
    try:
        # The pod's Secret first (kubetune's names), then the shell's (run --local, plot, serve --local).
        for conn_name, key_name in (
            (contract.ENV_AZURE_CONNECTION_STRING, contract.ENV_AZURE_ACCOUNT_KEY),
            (SHELL_CONNECTION_STRING, SHELL_ACCOUNT_KEY),
        ):
            if env.get(conn_name):
                return BlobServiceClient.from_connection_string(env[conn_name], **kwargs)
            if env.get(key_name):
                if endpoint is None:
                    break
                return BlobServiceClient(
                    account_url=endpoint, credential=_shared_key(endpoint, env[key_name]), **kwargs
                )
        if endpoint is None:
            raise StorageError(
                "az:// needs the storage account: a connection string "
                f"(spec.storage.objectStore.credentialsSecretRef; for kubetune run --local {SHELL_CONNECTION_STRING} "
                "in your shell) or spec.storage.objectStore.endpoint (https://<account>.blob.core.windows.net)"
            )
        if env.get("AZURE_FEDERATED_TOKEN_FILE"):
            return BlobServiceClient(account_url=endpoint, credential=_workload_identity(env, endpoint), **kwargs)
    except ValueError as exc:  # a malformed connection string or endpoint: never echo it (it holds the key)
        raise StorageError(
            f"spec.storage.objectStore: the Azure connection string or endpoint is malformed ({type(exc).__name__}); "
            "check the Secret of credentialsSecretRef"
        ) from None
    raise StorageError(
        "az:// without credentials: set spec.storage.objectStore.credentialsSecretRef (a connection string, "
        "or accountKeyKey), or Azure Workload Identity through spec.serviceAccountName (a ServiceAccount annotated "
        f"azure.workload.identity/client-id); for kubetune run --local, {SHELL_CONNECTION_STRING} in your shell"
    )


def _shared_key(endpoint: str, key: str) -> Any:
    """The account key as the SDK's Shared Key credential.  The SDK finds the account itself only in
    ``<account>.blob.core.<suffix>`` or, path-style, on a ``localhost``/``127.0.0.1`` endpoint
    (_shared/base_client.py:140-149); any other path-style endpoint (Azurite as a cluster Service,
    ``http://azurite.storage.svc:10000/devstoreaccount1``, or a proxy) raised "Unable to determine
    account name" (:429-432).  Path-style, the first path segment is the account (base_client.py:146-149,
    the same rule the SDK applies on loopback), given as the ``{"account_name", "account_key"}``
    credential it accepts (:433-440); the SDK signs with that name (:163-166)."""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    account = parsed.path.strip("/").split("/")[0]
    if ".blob.core." in parsed.netloc or not account:
        return key  # the SDK's own rule (or its own error, reported as a malformed endpoint)
    return {"account_name": account, "account_key": key}


def _workload_identity(env: Mapping[str, str], endpoint: str) -> Any:
    """Azure Workload Identity's credential from the variables its webhook injects.

    The webhook adds AZURE_CLIENT_ID only when the ServiceAccount carries the annotation
    azure.workload.identity/client-id, AZURE_TENANT_ID only when that annotation or the webhook's
    configured tenant gives one (it skips empty values: pkg/webhook/webhook.go:423-435,459-463
    @Azure/azure-workload-identity v1.6.0); WorkloadIdentityCredential then raises ValueError naming
    what is missing (azure/identity/_credentials/workload_identity.py:93-108, azure-identity as
    installed), and the SDK refuses a token over http:// (_shared/base_client.py:160-161).  Those are
    Workload Identity's problems, reported as such, not as a malformed connection string."""
    if not endpoint.lower().startswith("https://"):
        raise StorageError(
            f"spec.storage.objectStore.endpoint {endpoint!r}: Azure Workload Identity needs an https:// endpoint (https://<account>.blob.core.windows.net)"
        )
    try:
        from azure.identity import WorkloadIdentityCredential  # noqa: PLC0415
    except ImportError:
        raise StorageError(
            "az:// with Azure Workload Identity needs azure-identity in the trainer's environment "
            "(pip install 'kubetune[train]')"
        ) from None
    missing = [name for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID") if not env.get(name)]
    if missing:
        raise StorageError(
            f"az:// with Azure Workload Identity: the pod has no {' or '.join(missing)} (AKS's webhook sets "
            "them from the ServiceAccount of spec.serviceAccountName: annotate it "
            "azure.workload.identity/client-id: <the managed identity's or app's client id>, "
            "and azure.workload.identity/tenant-id unless the webhook knows the tenant)"
        )
    return WorkloadIdentityCredential(
        tenant_id=env["AZURE_TENANT_ID"],
        client_id=env["AZURE_CLIENT_ID"],
        token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
    )


def error_code(exc: BaseException) -> str | None:
    """Azure's error code of a storage failure (``ContainerNotFound``...), or None when it is not one."""
    code = getattr(exc, "error_code", None)
    if code is None:
        return None
    return str(getattr(code, "value", code))


class _Pages:
    def __init__(self, service: Any) -> None:
        self.service = service

    def paginate(self, *, Bucket: str, Prefix: str, Delimiter: str | None = None) -> Iterator[dict[str, Any]]:  # noqa: N803 - boto3's names
        from azure.storage.blob import BlobPrefix  # noqa: PLC0415

        container = self.service.get_container_client(Bucket)
        if Delimiter:
            contents, prefixes = [], []
            for item in container.walk_blobs(
                name_starts_with=Prefix or None, delimiter=Delimiter, include=["metadata"]
            ):
                if isinstance(item, BlobPrefix):
                    prefixes.append({"Prefix": str(item.name)})
                elif not _is_directory(item):
                    contents.append(_entry(item))
            yield {"Contents": contents, "CommonPrefixes": prefixes}
            return
        for page in container.list_blobs(name_starts_with=Prefix or None, include=["metadata"]).by_page():
            yield {"Contents": [_entry(b) for b in page if not _is_directory(b)]}


def _is_directory(blob: Any) -> bool:
    """A directory of an account with a hierarchical namespace (ADLS Gen2): the Blob API lists it as a
    zero-length blob named without a trailing ``/``, with metadata ``hdi_isfolder=true`` (what
    ``az storage blob list`` shows after ``az storage blob directory create`` on such an account:
    azure-cli's live test of ADLS blob directories, test_storage_adls_scenarios, read through the code
    index; Microsoft's answer "directories appear in the list as zero-length blobs",
    learn.microsoft.com/en-us/answers/questions/904103).  S3 has no such object: left in, a model or
    dataset folder with a sub-folder was staged as a file and its files then failed to download, and
    the merged model's clean-up deleted directories.  Only listed with ``include=["metadata"]``."""
    return str((getattr(blob, "metadata", None) or {}).get("hdi_isfolder", "")).lower() == "true"


def _entry(blob: Any) -> dict[str, Any]:
    return {"Key": str(blob.name), "Size": int(blob.size), "ETag": str(blob.etag)}


class BlobStore:
    """The S3 calls kubetune.trainer.objectstore makes, answered by Azure Blob Storage (container = bucket)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def _blob(self, container: str, name: str) -> Any:
        return self.service.get_blob_client(container, name)

    def get_paginator(self, operation: str) -> _Pages:
        if operation != "list_objects_v2":
            raise NotImplementedError(operation)
        return _Pages(self.service)

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        with open(filename, "wb") as out:
            self._blob(bucket, key).download_blob(max_concurrency=MAX_CONCURRENCY).readinto(out)

    def upload_file(self, filename: str, bucket: str, key: str) -> None:
        with open(filename, "rb") as data:
            self._blob(bucket, key).upload_blob(data, overwrite=True, max_concurrency=MAX_CONCURRENCY)

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803
        self._blob(Bucket, Key).upload_blob(Body, overwrite=True)

    def delete_object(self, *, Bucket: str, Key: str) -> None:  # noqa: N803
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

        try:
            self._blob(Bucket, Key).delete_blob()
        except ResourceNotFoundError as exc:
            # S3's DeleteObject of a missing key succeeds; a missing container still fails (as NoSuchBucket does).
            if error_code(exc) != "BlobNotFound":
                raise

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"Body": io.BytesIO(self._blob(Bucket, Key).download_blob().readall())}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        props = self._blob(Bucket, Key).get_blob_properties()
        return {"ETag": str(props.etag), "ContentLength": int(props.size)}


def cloud_errors() -> tuple[type[BaseException], ...]:
    try:
        from azure.core.exceptions import AzureError  # noqa: PLC0415
    except ImportError:
        return ()
    return (AzureError,)


def is_connection_error(exc: BaseException) -> bool:
    """A request that could not be sent or whose answer was cut (azure-core's ServiceRequestError,
    ServiceResponseError, IncompleteReadError): transient."""
    try:
        from azure.core.exceptions import IncompleteReadError, ServiceRequestError, ServiceResponseError  # noqa: PLC0415
    except ImportError:
        return False
    return isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError))
