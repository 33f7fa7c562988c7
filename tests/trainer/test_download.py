"""spec.datasets[].url against real HTTP and HTTPS servers on loopback (python's http.server in a
thread; the HTTPS one with a certificate of a private CA, given the way spec.storage.objectStore.caBundle
reaches the pod): the file is verified (Content-Length, sha256) before it is used, never left
half-written, and each failure is the error a user can act on."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.httpserve import serving
from tests.support.kt_s3 import private_ca
from kubetune.api import DatasetSpec, contract
from kubetune.trainer import data, download
from kubetune.trainer.errors import DataError, Retryable

CHATS = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]
BODY = "".join(json.dumps(c) + "\n" for c in CHATS).encode()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files from the folder; /denied/* answers 403, /short/* promises more bytes than it sends,
    /downgrade/* redirects to a plain http:// address."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/denied/"):
            self.send_error(403, "Forbidden")
        elif self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY) + 100))
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif self.path.startswith("/flaky/"):
            self._flaky()
        elif self.path.startswith("/aligned/"):
            self._aligned()
        elif self.path.startswith("/stall/"):
            self._stall()
        elif self.path.startswith("/downgrade/"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/chat.jsonl")
            self.end_headers()
        else:
            super().do_GET()

    def _send_from(self, start: int) -> None:
        """A 206 with BIG from `start` on (Content-Range says where the body starts)."""
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(BIG) - 1}/{len(BIG)}")
        self.send_header("Content-Length", str(len(BIG) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        self.wfile.write(BIG[start:])

    def _send_headers_of_whole(self) -> None:
        """A 200's headers for all of BIG (the body is the caller's: all, or a part before a drop)."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(BIG)))
        self.send_header("ETag", '"v1"')
        self.end_headers()

    ranges: list[str | None] = []
    """The Range header of every /flaky/ request."""

    def _resume_or_half(self) -> bool:
        """Records the Range; a resume (Range with If-Range "v1") is answered from where it asks
        (True); any other request gets a 200 for all of BIG with only its first half sent (False)."""
        _Handler.ranges.append(self.headers.get("Range"))
        asked = self.headers.get("Range", "")
        if asked.startswith("bytes=") and self.headers.get("If-Range") == '"v1"':
            self._send_from(int(asked[len("bytes=") :].rstrip("-")))
            return True
        self._send_headers_of_whole()
        self.wfile.write(BIG[: len(BIG) // 2])
        return False

    def _flaky(self) -> None:
        """The first answer stops halfway (the connection drops); later ones honour Range/If-Range."""
        if not self._resume_or_half():
            self.close_connection = True

    def _aligned(self) -> None:
        """Like /flaky/, but a range is answered from the 4 KiB block it falls in: a 206 whose
        Content-Range says where its body starts, which is not where the client asked."""
        _Handler.ranges.append(self.headers.get("Range"))
        half = len(BIG) // 2
        asked = self.headers.get("Range", "")
        if asked.startswith("bytes="):
            start = int(asked[len("bytes=") :].rstrip("-")) // 4096 * 4096
            self._send_from(start)
            return
        self._send_headers_of_whole()
        self.wfile.write(BIG[: half if len(_Handler.ranges) == 1 else len(BIG)])
        self.close_connection = True

    stall = threading.Event()

    def _stall(self) -> None:
        """The first answer sends half and then stalls with the connection open (a peer gone
        silent, a NAT entry dropped): only the read timeout notices; later ones honour Range."""
        if not self._resume_or_half():
            self.wfile.flush()
            _Handler.stall.wait(30)  # until the test is done with it
            self.close_connection = True


BIG = BODY * 2000


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(http base, https base, CA bundle): one plain and one TLS server on the same folder."""
    root = tmp_path_factory.mktemp("www")
    (root / "chat.jsonl").write_bytes(BODY)
    ca, cert, key = private_ca(tmp_path_factory.mktemp("pki"))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    files = functools.partial(_Handler, directory=str(root))
    with serving(files) as plain_url, serving(files, tls) as secure_url:
        yield plain_url, secure_url, ca


def test_an_https_file_of_a_private_ca_is_downloaded_verified_and_renamed_into_place(
    tmp_path: Path, sites: tuple[str, str, str]
) -> None:
    _, https, ca = sites
    env = {contract.ENV_S3_CA_BUNDLE: ca}  # what spec.storage.objectStore.caBundle renders
    target = tmp_path / "d" / "chat.jsonl"
    got = download.fetch(f"{https}/chat.jsonl", target, env, sha256=hashlib.sha256(BODY).hexdigest())
    assert got == {"bytes": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest()}
    assert target.read_bytes() == BODY and sorted(p.name for p in target.parent.iterdir()) == ["chat.jsonl"]
    # The data stage's reader, with the spec's sha256: records come from the verified file.
    spec = DatasetSpec.model_validate(
        {"name": "web", "url": f"{https}/chat.jsonl", "sha256": hashlib.sha256(BODY).hexdigest()}
    )
    assert list(data._remote_records(spec, env, tmp_path / "scratch")) == CHATS  # noqa: SLF001
    assert not (tmp_path / "scratch").exists()


def test_a_file_whose_digest_differs_is_refused_and_leaves_nothing(tmp_path: Path, sites: tuple[str, str, str]) -> None:
    http_url, _, _ = sites
    target = tmp_path / "chat.jsonl"
    with pytest.raises(
        DataError, match=r"SHA-256 of the downloaded file is [0-9a-f]{64}, spec.datasets\[\].sha256 says 0{64}"
    ) as err:
        download.fetch(f"{http_url}/chat.jsonl", target, {}, sha256="0" * 64)
    assert err.value.exit_code == contract.EXIT_DATA
    assert list(tmp_path.iterdir()) == []


def test_an_untrusted_certificate_is_a_data_error_naming_the_ca_bundle_not_a_retry(
    tmp_path: Path, sites: tuple[str, str, str]
) -> None:
    """It used to be Retryable (exit 130): the pod restarted backoffLimit times against a
    certificate that can never verify."""
    _, https, _ = sites
    with pytest.raises(
        DataError, match=r"TLS certificate is not trusted .*give its CA in spec.storage.objectStore.caBundle"
    ) as err:
        download.fetch(f"{https}/chat.jsonl", tmp_path / "chat.jsonl", {})
    assert err.value.exit_code == contract.EXIT_DATA
    assert list(tmp_path.iterdir()) == []


def test_missing_and_denied_files_name_the_field_and_the_fix(tmp_path: Path, sites: tuple[str, str, str]) -> None:
    http_url, https, ca = sites
    with pytest.raises(DataError, match=r"server answered 404 .*no such file: check spec.datasets\[\].url"):
        download.fetch(f"{http_url}/nope.jsonl", tmp_path / "a.jsonl", {})
    with pytest.raises(
        DataError,
        match=r"server answered 403 .*without credentials: make the file public, "
        r"or keep it in a bucket \(spec.datasets\[\].uri\)",
    ):
        download.fetch(f"{https}/denied/chat.jsonl", tmp_path / "a.jsonl", {contract.ENV_S3_CA_BUNDLE: ca})
    with pytest.raises(DataError, match=r"redirects to plain http .*refused"):
        download.fetch(f"{https}/downgrade/chat.jsonl", tmp_path / "a.jsonl", {contract.ENV_S3_CA_BUNDLE: ca})
    assert list(tmp_path.iterdir()) == []


def test_a_download_cut_short_is_retryable_and_never_short_data(tmp_path: Path, sites: tuple[str, str, str]) -> None:
    """The body ends before Content-Length: http.client reports it, or we count it; either way
    the restart downloads again, and no file is there to be read as a complete dataset."""
    http_url, _, _ = sites
    with pytest.raises(Retryable) as err:
        download.fetch(f"{http_url}/short/chat.jsonl", tmp_path / "chat.jsonl", {})
    assert err.value.exit_code == contract.EXIT_RETRYABLE
    assert list(tmp_path.iterdir()) == []


def test_a_download_cut_midway_resumes_where_it_stopped_and_is_verified_whole(
    tmp_path: Path, sites: tuple[str, str, str]
) -> None:
    http_url, _, _ = sites
    _Handler.ranges.clear()
    target = tmp_path / "chat.jsonl"
    got = download.fetch(f"{http_url}/flaky/chat.jsonl", target, {}, sha256=hashlib.sha256(BIG).hexdigest())
    assert target.read_bytes() == BIG and got["bytes"] == len(BIG)
    assert _Handler.ranges == [None, f"bytes={len(BIG) // 2}-"]  # the second request asked only for the rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl"]


def test_a_partial_answer_that_starts_elsewhere_than_asked_is_never_taken_for_the_whole_file(
    tmp_path: Path, sites: tuple[str, str, str]
) -> None:
    """Before: a 206 whose Content-Range did not start where the download stopped counted as "the
    server sent it all again", so the tail of the file (from the server's block boundary) was
    written as the whole file and, matching its own Content-Length, used as the dataset.  Now the
    download starts over without a range and the file is the server's whole file."""
    assert (len(BIG) // 2) % 4096, "the cut must fall inside a block for the server to answer elsewhere"
    http_url, _, _ = sites
    _Handler.ranges.clear()
    target = tmp_path / "chat.jsonl"
    got = download.fetch(f"{http_url}/aligned/chat.jsonl", target, {})
    assert target.read_bytes() == BIG and got["bytes"] == len(BIG)
    assert _Handler.ranges[:2] == [None, f"bytes={len(BIG) // 2}-"] and _Handler.ranges[-1] is None


def test_a_download_that_stalls_midway_resumes_after_the_read_timeout(
    tmp_path: Path, sites: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a read that timed out midway was not among the cuts tried again in the process (the
    pod restarted and downloaded the whole file again), and the bytes of the read it interrupted
    were lost; now it resumes from what had arrived, like a dropped connection.  (TIMEOUT_S is
    lowered so the test does not wait a minute.)"""
    http_url, _, _ = sites
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    _Handler.ranges.clear()
    _Handler.stall.clear()
    target = tmp_path / "chat.jsonl"
    try:
        got = download.fetch(f"{http_url}/stall/chat.jsonl", target, {}, sha256=hashlib.sha256(BIG).hexdigest())
    finally:
        _Handler.stall.set()
    assert target.read_bytes() == BIG and got["bytes"] == len(BIG)
    first, then = _Handler.ranges
    assert first is None and then not in (None, "bytes=0-"), _Handler.ranges  # resumed from what had arrived
