"""``spec.datasets[].url``: one file over HTTPS, downloaded whole, checked, then renamed into place.

* TLS is verified against the system CAs plus, when the job sets
  ``spec.storage.objectStore.caBundle``, that bundle (mounted like the S3 endpoint's CA at
  ``KUBETUNE_S3_CA_BUNDLE``), plus ``SSL_CERT_FILE`` for ``kubetune run --local``.
* The bytes received must match the response's Content-Length (a connection cut midway is a
  retryable failure, never short data) and, when given, ``spec.datasets[].sha256``.
* The file is written to a temporary name beside the target and renamed only after both checks:
  a reader never sees a partial or unverified file.  A connection cut midway is tried again up
  to ATTEMPTS times, resuming with a Range request when the server identified the file (a strong
  ETag or Last-Modified, sent back as If-Range); a server without ranges sends it all again.
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

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and newurl.startswith("http://") and not self.pinned:
            raise DataError(
                f"{req.full_url}: the server redirects to plain http ({newurl}); refused: "
                f"point {FIELD} at the https:// address, or pin the file with spec.datasets[].sha256"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _tls_failure(url: str, exc: BaseException, env: Mapping[str, str]) -> DataError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        have = (
            "spec.storage.objectStore.caBundle is set but does not verify it"
            if env.get(contract.ENV_S3_CA_BUNDLE)
            else (
                "give its CA in spec.storage.objectStore.caBundle (kubetune run --local: SSL_CERT_FILE in your shell)"
            )
        )
        return DataError(f"{url}: the server's TLS certificate is not trusted ({exc.verify_message or exc}): {have}")
    return DataError(f"{url}: TLS failed: {exc}")


ATTEMPTS = 3
"""Tries of one download in the process; a try after a cut resumes where the last one stopped."""


class _CutShort(Exception):
    """The body ended before Content-Length (the peer closed the connection)."""


class _Partial:
    """What a download has so far: bytes on disk, their digest, and what the server said they are."""

    def __init__(self) -> None:
        self.got = 0
        self.digest = hashlib.sha256()
        self.validator: str | None = None

    def restart(self) -> None:
        self.got, self.digest, self.validator = 0, hashlib.sha256(), None


def _get_once(opener: urllib.request.OpenerDirector, url: str, tmp: Path, part: _Partial) -> None:
    """One GET, resuming with Range and If-Range (HTTP range requests) when part holds bytes the
    server identified; a server that answers 200 (no ranges, or the file changed) starts over."""
    headers = {"User-Agent": "kubetune-trainer", "Accept-Encoding": "identity"}
    if part.got and part.validator:
        headers.update({"Range": f"bytes={part.got}-", "If-Range": part.validator})
    with opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
        resumed = resp.status == 206 and str(resp.headers.get("Content-Range", "")).startswith(f"bytes {part.got}-")
        if resp.status == 206 and not resumed:
            # Part of the file, but not from where the bytes on disk end (Content-Range says where
            # it starts; a server may answer from a block boundary, or with several parts):
            # never written as the whole file.  Start over, asking for all of it.
            asked = part.got
            part.restart()
            raise _CutShort(
                f"asked for bytes {asked}-, the server answered "
                f"{resp.headers.get('Content-Range') or 'parts without a Content-Range'}"
            )
        if not resumed:
            part.restart()
        etag = resp.headers.get("ETag")
        part.validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
        length = resp.headers.get("Content-Length")
        expected = part.got + int(length) if length is not None and length.isdigit() else None
        with open(tmp, "ab" if resumed else "wb") as out:
            try:
                # read1, not read: read(n) blocks until n bytes (or the end) and loses what it
                # got when the socket times out first (http/client.py:473, BufferedReader.read),
                # so a stall would leave nothing to resume from; read1 makes at most one system
                # call and returns b"" on an early close just as read does (http/client.py:651-665
                # @CPython 3.11.7).
                while chunk := resp.read1(1 << 20):
                    out.write(chunk)
                    part.digest.update(chunk)
                    part.got += len(chunk)
            finally:
                out.flush()
                os.fsync(out.fileno())
        if expected is not None and part.got != expected:
            raise _CutShort(f"{part.got} of {expected} bytes")


def fetch(url: str, target: Path, env: Mapping[str, str], *, sha256: str | None = None) -> dict[str, Any]:
    """Download ``url`` to ``target`` (checked, then renamed into place); returns its size and digest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl_context(env)), _NoDowngrade(pinned=sha256 is not None)
    )
    part = _Partial()
    try:
        for attempt in range(ATTEMPTS):
            try:
                _get_once(opener, url, tmp, part)
                break
            except (_CutShort, http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                # TimeoutError: a read that stalled past TIMEOUT_S, of the body or of the status
                # line (urllib wraps only the connect and the request's send in URLError:
                # urllib/request.py:1346-1352 @CPython 3.11.7), so a server that cannot be
                # reached is not tried again here, one that went silent is, resuming.
                if attempt == ATTEMPTS - 1:
                    raise Retryable(
                        f"{url}: the download was cut short ({exc}) {ATTEMPTS} times; a restart downloads it again"
                    ) from None
        actual = part.digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise DataError(
                f"{url}: SHA-256 of the downloaded file is {actual}, spec.datasets[].sha256 says {sha256}: "
                "the file changed on the server, or the digest is wrong"
            )
        os.replace(tmp, target)
        return {"bytes": part.got, "sha256": actual}
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise Retryable(f"{url}: server answered {exc.code} {exc.reason}; a restart tries again") from None
        hints = {
            404: f"no such file: check {FIELD}",
            410: f"the file is gone: check {FIELD}",
            401: "url datasets are fetched without credentials: make the file public, "
            "or keep it in a bucket (spec.datasets[].uri)",
            403: "url datasets are fetched without credentials: make the file public, "
            "or keep it in a bucket (spec.datasets[].uri)",
        }
        raise DataError(
            f"{url}: server answered {exc.code} {exc.reason} ({hints.get(exc.code, f'check {FIELD}')})"
        ) from None
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
