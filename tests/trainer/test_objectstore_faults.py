"""Faults of a real S3 protocol exchange, on loopback: an endpoint that answers the listing and
HEAD like S3 and then closes the connection in the middle of every object body, and refuses
every PUT with a 503 the way MinIO does while it starts.

That is what a flaky link, a load balancer's idle cut or a node under memory pressure looks like
to the trainer: boto3 itself tries the cut body again (s3transfer/download.py:861-878 @0.19.3,
S3_RETRYABLE_DOWNLOAD_ERRORS, s3transfer/utils.py:44-50) and, after its last attempt, raises
boto3.exceptions.RetriesExceededError (boto3/s3/transfer.py:490-491 @1.44.18), a Boto3Error that
carries neither an S3 error code nor an HTTP status.
"""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.api import contract
from kubetune.trainer import objectstore
from kubetune.trainer.errors import StorageError
from tests.support.httpserve import serving

pytestmark = pytest.mark.train

BODY = b'{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}\n' * 50
KEY = "data/train.jsonl"


class _CutsBodies(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gets = 0

    def log_message(self, *_: object) -> None:
        pass

    def _object_headers(self) -> None:
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")

    def _xml(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self._object_headers()
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if "list-type=2" in self.path:
            listing = (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>b</Name><Prefix>{KEY}</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
                f'<Contents><Key>{KEY}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"0123456789abcdef0123456789abcdef"</ETag>'
                f"<Size>{len(BODY)}</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>"
            )
            self._xml(200, listing)
            return
        type(self).gets += 1
        self.send_response(200)
        self._object_headers()
        self.end_headers()
        self.wfile.write(BODY[: len(BODY) // 3])  # then the connection drops
        self.wfile.flush()
        self.close_connection = True

    def do_PUT(self) -> None:  # noqa: N802
        """MinIO while it starts or lost its quorum: 503 with its own code, which is in no list of
        botocore's (minio/minio cmd/api-errors.go: ErrServerNotInitialized, "XMinioServerNotInitialized",
        http.StatusServiceUnavailable; read through the code index, tag not checked)."""
        self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        error = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>XMinioServerNotInitialized</Code>'
            "<Message>Server not initialized, please try again.</Message><Resource>/b</Resource>"
            "<RequestId>1</RequestId></Error>"
        )
        self._xml(503, error)


@pytest.fixture
def cutting_endpoint() -> Iterator[str]:
    _CutsBodies.gets = 0
    with serving(_CutsBodies) as url:
        yield url


def _env(endpoint: str) -> dict[str, str]:
    return {
        contract.ENV_S3_ENDPOINT: endpoint,
        contract.ENV_S3_REGION: "us-east-1",
        contract.ENV_S3_ACCESS_KEY_ID: "AKIDEXAMPLEKEY",
        contract.ENV_S3_SECRET_ACCESS_KEY: "secret-never-printed",
    }


def test_an_upload_refused_with_a_5xx_of_a_code_botocore_does_not_know_is_retryable(
    tmp_path: Path, cutting_endpoint: str
) -> None:
    """Before: boto3's S3UploadFailedError kept only the text, so the 503 was lost and an unknown
    code counted as permanent: a MinIO restart during training stopped the training for good
    (CheckpointUploader's abort) or failed the results upload with exit 2.  Now: retryable."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "adapter_model.safetensors").write_bytes(b"w" * 100)
    with pytest.raises(StorageError) as caught:
        objectstore.upload_folder("s3://b/runs/default/job/", tmp_path / "out", _env(cutting_endpoint))
    assert "XMinioServerNotInitialized" in str(caught.value)
    assert caught.value.exit_code == contract.EXIT_RETRYABLE, str(caught.value)


def test_a_dataset_download_cut_on_every_attempt_is_retryable_not_a_data_error(
    tmp_path: Path, cutting_endpoint: str
) -> None:
    """Before: the RetriesExceededError had no code and no status, so the cut counted as
    permanent, and for a dataset as a DataError (exit 3: "fix the data"), failing the job for good
    on a network blip.  Now: a retryable StorageError (the pod restarts and downloads again)."""
    env = _env(cutting_endpoint)
    with pytest.raises(StorageError) as caught:
        objectstore.stage_dataset(f"s3://b/{KEY}", tmp_path / "scratch", env)
    assert _CutsBodies.gets >= 2, "boto3 tries a cut body again before giving up"
    assert caught.value.exit_code == contract.EXIT_RETRYABLE, str(caught.value)
    assert f"s3://b/{KEY}: reading the dataset failed" in str(caught.value)
    assert "secret-never-printed" not in str(caught.value)
    assert not list((tmp_path / "scratch").iterdir()), "no partial file is left to be read as data"
