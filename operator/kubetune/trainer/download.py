"""``spec.datasets[].url``: one file over HTTPS, downloaded whole, checked, then renamed into place.

* TLS is verified against the system CAs plus, when the job sets
  ``spec.storage.objectStore.caBundle``, that bundle (mounted like the S3 endpoint's CA at
  ``KUBETUNE_S3_CA_BUNDLE``), plus ``SSL_CERT_FILE`` for ``kubetune run --local``.
* The bytes received must match the response's Content-Length (a connection cut midway is a
  retryable failure, never short data) and, when given, ``spec.datasets[].sha256``.
* The file is written to a temporary name beside the target and renamed only after both checks:
  a reader never sees a partial or unverified file.  A failed download restarts from the first
  byte (no Range requests: the file is read once per job).
* Redirects from https:// to http:// are refused unless the file is pinned by sha256.

Errors: 404/410 and 401/403, a certificate that does not verify and a digest mismatch are
DataErrors (exit 3, a restart cannot help); 429/5xx, timeouts and lost connections are
Retryable (the pod restarts).  Messages name the field and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from kubetune.api import contract

from .errors import DataError, Retryable

TIMEOUT_S = 60.0
"""Seconds a connect or a read may stall before the download counts as lost (retryable)."""
FIELD = "spec.datasets[].url"


def ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """System CAs, plus the job's private CA (objectStore.caBundle) and SSL_CERT_FILE when present."""
    context = ssl.create_default_context()
    for name in (contract.ENV_S3_CA_BUNDLE, "SSL_CERT_FILE"):
        path = env.get(name)
        if path and os.path.isfile(path):
            context.load_verify_locations(cafile=path)
    return context


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and newurl.startswith("http://") and not self.pinned:
            raise DataError(f"{req.full_url}: the server redirects to plain http ({newurl}); refused: point {FIELD} at the https:// address, or pin the file with spec.datasets[].sha256")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _tls_failure(url: str, exc: BaseException, env: Mapping[str, str]) -> DataError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        have = "spec.storage.objectStore.caBundle is set but does not verify it" if env.get(contract.ENV_S3_CA_BUNDLE) else (
            "give its CA in spec.storage.objectStore.caBundle (kubetune run --local: SSL_CERT_FILE in your shell)"
        )
        return DataError(f"{url}: the server's TLS certificate is not trusted ({exc.verify_message or exc}): {have}")
    return DataError(f"{url}: TLS failed: {exc}")


def fetch(url: str, target: Path, env: Mapping[str, str], *, sha256: str | None = None) -> dict[str, Any]:
    """Download ``url`` to ``target`` (checked, then renamed into place); returns its size and digest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl_context(env)), _NoDowngrade(pinned=sha256 is not None)
    )
    request = urllib.request.Request(url, headers={"User-Agent": "kubetune-trainer", "Accept-Encoding": "identity"})
    digest, got = hashlib.sha256(), 0
    try:
        with opener.open(request, timeout=TIMEOUT_S) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and length.isdigit() and got != int(length):
            raise Retryable(f"{url}: the download was cut short ({got} of {length} bytes); a restart downloads it again")
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise DataError(
                f"{url}: SHA-256 of the downloaded file is {actual}, spec.datasets[].sha256 says {sha256}: "
                "the file changed on the server, or the digest is wrong"
            )
        os.replace(tmp, target)
        return {"bytes": got, "sha256": actual}
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise Retryable(f"{url}: server answered {exc.code} {exc.reason}; a restart tries again") from None
        hints = {
            404: f"no such file: check {FIELD}",
            410: f"the file is gone: check {FIELD}",
            401: "url datasets are fetched without credentials: make the file public, or keep it in a bucket (spec.datasets[].uri)",
            403: "url datasets are fetched without credentials: make the file public, or keep it in a bucket (spec.datasets[].uri)",
        }
        raise DataError(f"{url}: server answered {exc.code} {exc.reason} ({hints.get(exc.code, f'check {FIELD}')})") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise _tls_failure(url, exc.reason, env) from None
        raise Retryable(f"{url}: download failed: {exc.reason}") from None
    except ssl.SSLError as exc:
        raise _tls_failure(url, exc, env) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        raise Retryable(f"{url}: download failed: {type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
