"""A real Azure Blob protocol server on loopback for the az:// tests: Azurite, Microsoft's Azure
Storage emulator (npm package ``azurite``, pinned in .ci/install-tools, installed into
``.tools/azurite``), in its own process, with Shared Key and SAS authentication as Azure does it.

Account: Azurite's well-known development account, a public constant of its documentation
(node_modules/azurite/README.md "Default Storage Account", lines 699-704 @3.37.0): name
``devstoreaccount1`` and the key below.  Endpoint ``http://127.0.0.1:<port>/devstoreaccount1``
(path-style: the account is the first path segment on an IP host, README "Endpoint & Connection
URL"; azure-storage-blob reads it so too, _shared/base_client.py:143-149 @12.31.1).

``--skipApiVersionCheck`` (README "Skip API Version Check"): azure-storage-blob 12.31.1 sends
x-ms-version 2026-10-06 (azure/storage/blob/_serialize.py:68), Azurite 3.37.0 implements up to
2026-06-06 (dist/src/blob/utils/constants.js BLOB_API_VERSION) and refuses newer versions by
default.  Only the version header check is skipped; authentication, SAS permissions, container
and blob semantics stay Azurite's.  ``--loose`` is not used (unsupported headers stay errors).
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled, stop_process

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MISSING = f"{AZURITE.relative_to(ROOT)} missing: run `bash .ci/install-tools` (npm install of azurite; CI always does)"


class Azurite:
    """One azurite-blob process on a free loopback port."""

    def __init__(self) -> None:
        if not AZURITE.is_file() or shutil.which("node") is None:
            pytest.skip(MISSING)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/{ACCOUNT}"
        self.workspace = tempfile.mkdtemp(prefix="kt-azurite-")
        self.process = subprocess.Popen(
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                self.workspace,
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"},  # only the default account
        )
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}?comp=list", timeout=1).close()  # noqa: S310 - loopback
                break
            except urllib.error.HTTPError:
                break  # 403 to an unsigned request: it is up and authenticating
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("azurite did not start") from None
                time.sleep(0.1)

    def connection_string(self, key: str = KEY) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={self.endpoint};"

    def sas_connection_string(self, container: str, *, read: bool = True, write: bool = False) -> str:
        """A connection string holding a container SAS token with only these permissions."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        sas = generate_container_sas(
            ACCOUNT,
            container,
            account_key=KEY,
            permission=ContainerSasPermissions(read=read, list=read, write=write, create=write, delete=write),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        )
        return f"BlobEndpoint={self.endpoint};SharedAccessSignature={sas}"

    def service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string())

    def env(self, connection_string: str | None = None) -> dict[str, str]:
        """The trainer's environment for this server (what spec.storage.objectStore renders with a
        connection-string Secret)."""
        return {"KUBETUNE_AZURE_STORAGE_CONNECTION_STRING": connection_string or self.connection_string()}

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.workspace, ignore_errors=True)


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    """A fresh Azurite per test module (containers do not leak between modules)."""
    server = Azurite()
    try:
        yield server
    finally:
        server.stop()
