"""Object storage (S3 and S3-compatible stores): the URIs in the spec and the connection block.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).

``s3://``: AWS S3, and MinIO / Ceph RGW / any S3 API through ``spec.storage.objectStore.endpoint``.
``gs://``: Google Cloud Storage through its S3-compatible XML API (endpoint
``https://storage.googleapis.com``, an HMAC key in place of the AWS key pair, V4 signatures:
https://cloud.google.com/storage/docs/interoperability and .../aws-simple-migration, read
2026-12-07); one job uses one store, so s3://, gs:// and az:// do not mix.  Every other scheme is
refused at admission with the field named, never accepted and ignored.

``az://container/blob-prefix``: Azure Blob Storage, with azure-storage-blob (not through S3).  The
URI names the container and the blob path only, the account comes from the credentials (the
connection string) or from ``spec.storage.objectStore.endpoint`` (``https://<account>.blob.core.windows.net``),
as adlfs, fsspec's Azure filesystem, reads ``az://`` (adlfs/spec.py:295 ``protocol = ("abfs", "az",
"abfss")``, :335-338 the account from ``account_name``/``AZURE_STORAGE_ACCOUNT_NAME`` or the
connection string ``AZURE_STORAGE_CONNECTION_STRING``, :412-450 ``_strip_protocol``: the URI's host
is the container @ fsspec/adlfs 6362b4f, the 2026.8.0 release).  Container names follow
https://learn.microsoft.com/en-us/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
(read 2026-12-07): 3-63 characters, lowercase letters, digits and ``-``, beginning with a letter or
digit, every ``-`` between two letters or digits (no ``--``, none at either end).

GCS bucket names follow https://cloud.google.com/storage/docs/naming-buckets (read 2026-12-07):
lowercase letters, digits, ``-``, ``_`` and ``.``, beginning and ending with a letter or digit,
3-63 characters (dotted names of up to 222 are refused here: not supported yet), not an IP
address, not starting with ``goog``, not containing ``google`` (or ``g00gle``).

Bucket names follow AWS's general purpose bucket naming rules
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html, read
2026-12-07): 3-63 characters of lowercase letters, digits, dots and hyphens, beginning
and ending with a letter or digit, no two adjacent periods, not formatted as an IP
address, not starting with ``xn--``, ``sthree-`` or ``amzn-s3-demo-``, not ending with
``-s3alias``, ``--ol-s3``, ``.mrap``, ``--x-s3`` or ``--table-s3``.  Keys may hold any
UTF-8 text in S3; kubetune additionally refuses ``.``/``..`` segments and empty
segments (``//``), because objects are staged to local files under the key's path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Final

from pydantic import Field

from .base import ApiModel, DNS1123Subdomain, Rule
from .env import ConfigMapKeyRef

__all__ = [
    "ObjectStoreCredentials",
    "ObjectStoreSpec",
    "ObjectUri",
    "GCS_ENDPOINT",
    "SCHEMES",
    "bucket_problem",
    "gcs_bucket_problem",
    "azure_container_problem",
    "key_problem",
    "model_cache_subdir",
    "split_uri",
    "uri_problem",
    "uri_rules",
]

ObjectUri = Annotated[
    str, Field(min_length=6, max_length=1024, pattern=r"^[a-z][a-z0-9+.-]*://[^\x00-\x20\x7f'\"`$\\]+$")
]
"""A URI such as s3://bucket/prefix/file.jsonl; the scheme and bucket are checked by uri_rules."""

_BUCKET_CHARS: Final = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_RESERVED_PREFIXES: Final = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES: Final = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_IP: Final = r"[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+"


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI; key may be '' or end with '/'."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` breaks AWS's general purpose bucket naming rules, or None."""
    if not re.fullmatch(_BUCKET_CHARS, bucket):
        return "3-63 lowercase letters, digits, dots or hyphens, beginning and ending with a letter or digit"
    if ".." in bucket:
        return "no two adjacent periods"
    if re.fullmatch(_IP, bucket):
        return "not formatted as an IP address"
    if bucket.startswith(_RESERVED_PREFIXES):
        return "not starting with xn--, sthree- or amzn-s3-demo-"
    if bucket.endswith(_RESERVED_SUFFIXES):
        return "not ending with -s3alias, --ol-s3, .mrap, --x-s3 or --table-s3"
    return None


_GCS_BUCKET_CHARS: Final = r"[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]"
SCHEMES: Final = ("s3://", "gs://", "az://")
_AZ_CONTAINER: Final = r"[a-z0-9]+(-[a-z0-9]+)*"
GCS_ENDPOINT: Final = "https://storage.googleapis.com"
"""Cloud Storage's XML API request endpoint (https://cloud.google.com/storage/docs/interoperability)."""


def gcs_bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` breaks Cloud Storage's bucket name requirements, or None."""
    if not re.fullmatch(_GCS_BUCKET_CHARS, bucket):
        return (
            "3-63 lowercase letters, digits, dashes, underscores or dots, beginning and ending with a letter or digit"
        )
    if re.fullmatch(_IP, bucket):
        return "not formatted as an IP address"
    if bucket.startswith("goog") or "google" in bucket or "g00gle" in bucket:
        return "not starting with goog, not containing google"
    return None


def azure_container_problem(container: str) -> str | None:
    """Why ``container`` breaks Azure's container naming rules, or None."""
    if not 3 <= len(container) <= 63 or not re.fullmatch(_AZ_CONTAINER, container):
        return "3-63 lowercase letters, digits or hyphens, beginning and ending with a letter or digit, no '--'"
    return None


def uri_problem(uri: str | None) -> str | None:
    """Why an s3://, gs:// or az:// URI is unusable (bucket naming, key segments), or None.
    Other schemes: see uri_rules."""
    if uri is None or not uri.startswith(SCHEMES):
        return None
    bucket, key = split_uri(uri)
    if uri.startswith("az://"):
        why = azure_container_problem(bucket)
        if why is not None:
            return f"container name {bucket!r} must be {why} (Azure container naming rules)"
        return key_problem(key)
    if uri.startswith("gs://"):
        why = gcs_bucket_problem(bucket)
        if why is not None:
            return f"bucket name {bucket!r} must be {why} (Cloud Storage bucket naming rules)"
        return key_problem(key)
    why = bucket_problem(bucket)
    if why is not None:
        return f"bucket name {bucket!r} must be {why} (AWS bucket naming rules)"
    return key_problem(key)


def key_problem(key: str) -> str | None:
    """Why a key (or prefix) cannot be staged to a local path, or None."""
    segments = key.split("/")
    if any(s in (".", "..") for s in segments) or any(s == "" for s in segments[:-1]):
        return "the key must not hold '.', '..' or empty ('//') segments"
    return None


# CEL (RE2, no look-around) versions of the same rules.
_CEL_BUCKET = (
    "self.uri.matches('^s3://" + _BUCKET_CHARS + "(/|$)')"
    " && !self.uri.matches('^s3://[^/]*[.][.]')"
    " && !self.uri.matches('^s3://" + _IP + "(/|$)')"
    " && !self.uri.matches('^s3://(xn--|sthree-|amzn-s3-demo-)')"
    " && !self.uri.matches('^s3://[^/]*(-s3alias|--ol-s3|[.]mrap|--x-s3|--table-s3)(/|$)')"
)
_CEL_KEY = (
    "!self.uri.matches('^(s3|gs|az)://[^/]+/(.*/)?[.][.]?(/|$)') && !self.uri.matches('^(s3|gs|az)://[^/]+/(.*/)?/')"
)
_CEL_AZ_CONTAINER = (
    "self.uri.matches('^az://" + _AZ_CONTAINER + "(/|$)') && self.uri.matches('^az://[a-z0-9-]{3,63}(/|$)')"
)
_CEL_GCS_BUCKET = (
    "self.uri.matches('^gs://" + _GCS_BUCKET_CHARS + "(/|$)')"
    " && !self.uri.matches('^gs://" + _IP + "(/|$)')"
    " && !self.uri.matches('^gs://goog') && !self.uri.matches('^gs://[^/]*(google|g00gle)')"
)


def _bucket_rule(name: str, scheme: str, cel: str, problem: Callable[[str], str | None], message: str) -> Rule:
    """The rule on the bucket (container) of a ``scheme`` URI: ``cel`` for the API server, ``problem``
    (None: a good name) for Python, both applied only to URIs of that scheme."""
    return Rule(
        name=name,
        cel=f"!has(self.uri) || !self.uri.startsWith('{scheme}') || ({cel})",
        message=message,
        field_path=".uri",
        check=lambda m: m.uri is None or not m.uri.startswith(scheme) or problem(split_uri(m.uri)[0]) is None,
    )


def uri_rules(field: str, *, prefix_example: str | None = None) -> tuple[Rule, ...]:
    """The admission rules of a model's ``uri`` attribute; ``field`` names it in messages.
    ``prefix_example``: the URI names a folder (a model, the outputs), so it must end with '/'
    (the example goes into the message)."""
    rules = [
        Rule(
            name="object-uri-scheme",
            cel="!has(self.uri) || self.uri.startsWith('s3://') || self.uri.startsWith('gs://') || self.uri.startsWith('az://')",
            message=f"{field}: only s3:// (AWS S3, or MinIO/Ceph and other S3 APIs through "
            "spec.storage.objectStore.endpoint), gs:// (Google Cloud Storage, "
            "with an HMAC key) and az://<container>/<path> (Azure Blob Storage) URIs are supported: "
            "copy the files to such a store or onto a volume",
            field_path=".uri",
            check=lambda m: m.uri is None or m.uri.startswith(SCHEMES),
        ),
        _bucket_rule(
            "object-uri-gcs-bucket",
            "gs://",
            _CEL_GCS_BUCKET,
            gcs_bucket_problem,
            f"{field}: the bucket name must follow Cloud Storage's bucket naming rules: "
            "3-63 lowercase letters, digits, dashes, underscores or dots, "
            "beginning and ending with a letter or digit, not an IP address, "
            "not starting with goog, not containing google",
        ),
        _bucket_rule(
            "object-uri-azure-container",
            "az://",
            _CEL_AZ_CONTAINER,
            azure_container_problem,
            f"{field}: az:// URIs are az://<container>/<path> (the storage account comes from "
            "spec.storage.objectStore: the connection string or the endpoint), "
            "and the container name must follow Azure's container naming rules: 3-63 lowercase letters, "
            "digits or hyphens, beginning and ending with a letter or digit, no '--'",
        ),
        _bucket_rule(
            "object-uri-bucket",
            "s3://",
            _CEL_BUCKET,
            bucket_problem,
            f"{field}: the bucket name must follow AWS's bucket naming rules: 3-63 lowercase letters, digits, "
            "dots or hyphens, beginning and ending with a letter or digit, no '..', not an IP address, "
            "not starting with xn--/sthree-/amzn-s3-demo-, not ending with "
            "-s3alias/--ol-s3/.mrap/--x-s3/--table-s3",
        ),
        Rule(
            name="object-uri-key",
            cel="!has(self.uri) || " + _CEL_KEY,
            message=f"{field}: the key must not hold '.', '..' or empty ('//') segments (objects are staged "
            "to local files under their key)",
            field_path=".uri",
            check=lambda m: m.uri is None or not m.uri.startswith(SCHEMES) or key_problem(split_uri(m.uri)[1]) is None,
        ),
    ]
    if prefix_example is not None:
        rules.append(
            Rule(
                name="object-uri-prefix",
                cel="!has(self.uri) || self.uri.endsWith('/')",
                message=f"{field} names a folder (a key prefix): end it with '/', e.g. {prefix_example}",
                field_path=".uri",
                check=lambda m: m.uri is None or m.uri.endswith("/"),
            )
        )
    return tuple(rules)


class ObjectStoreCredentials(ApiModel):
    """A Secret in the job's namespace holding an S3 access key (or, for az://, an Azure Storage connection string or
    account key); it reaches the pods only as secretKeyRef environment."""

    name: DNS1123Subdomain
    """Secret name."""
    access_key_id_key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        "AWS_ACCESS_KEY_ID"
    )
    """Key of the access key id inside the Secret."""
    secret_access_key_key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        "AWS_SECRET_ACCESS_KEY"
    )
    """Key of the secret access key inside the Secret."""
    connection_string_key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] | None = (
        None
    )
    (
        "az:// only: key of the Azure Storage connection string inside the Secret (it names the account; "
        "an account key or a SAS token). Unset: AZURE_STORAGE_CONNECTION_STRING. Not read when accountKeyKey is set."
    )
    account_key_key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] | None = None
    (
        "az:// only: key of the storage account key inside the Secret, instead of a connection string; "
        "the account is then the one of spec.storage.objectStore.endpoint (https://<account>.blob.core.windows.net)."
    )


class ObjectStoreSpec(ApiModel):
    """How the trainer reaches the s3://, gs:// or az:// URIs of the job (spec.model.uri, spec.datasets[].uri,
    spec.storage.outputs.uri)."""

    endpoint: (
        Annotated[
            str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f'\"`$\\/]+(/[^\x00-\x20\x7f'\"`$\\]*)?$")
        ]
        | None
    ) = None
    (
        "S3 API address of an S3-compatible store (MinIO, Ceph RGW), e.g. `https://minio.storage.svc:9000`. Unset: "
        "AWS S3. For az://: the Blob service of the storage account, `https://<account>.blob.core.windows.net` (needed "
        "unless the connection string names the account)."
    )
    region: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9-]+$")] | None = None
    """Region of the buckets, e.g. `eu-west-1`. Unset: the SDK's default (us-east-1 for a custom endpoint)."""
    credentials_secret_ref: ObjectStoreCredentials | None = None
    (
        "Secret with the access key (keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY by default; "
        "for az:// AZURE_STORAGE_CONNECTION_STRING, or accountKeyKey). Unset: the AWS SDK's default chain in the pod, "
        "e.g. workload identity (IRSA) through spec.serviceAccountName; for az://, "
        "Azure Workload Identity through spec.serviceAccountName."
    )
    ca_bundle: ConfigMapKeyRef | None = None
    (
        "ConfigMap key holding the PEM CA bundle of a store with a private certificate authority; "
        "mounted read-only and used to verify the endpoint's TLS certificate."
    )


AZURE_CONNECTION_STRING_KEY: Final = "AZURE_STORAGE_CONNECTION_STRING"
"""The Secret key of the connection string when connectionStringKey is unset (the name adlfs and Azure's tools read)."""

MODEL_CACHE_SUBDIR: Final = ".kubetune-object-models"


def model_cache_subdir(uri: str) -> str:
    """Folder (relative to the models volume) that a spec.model.uri is staged into: one per URI;
    the trainer keeps the objects' ETags beside it and downloads only what changed."""
    return f"{MODEL_CACHE_SUBDIR}/{hashlib.sha256(uri.encode()).hexdigest()[:16]}"
