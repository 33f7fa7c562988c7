"""A real S3 protocol server on loopback for the s3:// tests: moto's server mode (moto[server],
pinned in pyproject's test extra), in its own process, with IAM authentication ON.

``INITIAL_NO_AUTH_ACTION_COUNT`` (moto/settings.py) lets the first N requests through without
credentials; after them every request is authenticated against moto's IAM (unknown access key
-> InvalidAccessKeyId, wrong secret -> SignatureDoesNotMatch) and authorised against the user's
IAM policy (AccessDenied), as S3 does.  The first three requests create an admin user with an
allow-all policy and its access key; everything after that uses real credentials.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.certs import make_pki
from tests.support.kt_time import scaled, stop_process

ADMIN_ACTIONS = 3  # CreateUser, PutUserPolicy, CreateAccessKey


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


class S3Server:
    """One moto server process; ``admin`` is an allow-all IAM user's access key."""

    def __init__(self, tls: tuple[str, str, str] | None = None) -> None:
        """``tls``: (CA bundle, server certificate, server key) PEM files: serve HTTPS with them."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.ca_bundle = tls[0] if tls else None
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(ADMIN_ACTIONS))
        ssl = ["-c", tls[1], "-k", tls[2]] if tls else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port), *ssl],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                context = __import__("ssl").create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1, context=context).close()  # noqa: S310 - loopback
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        iam = self._client("iam", Keys("bootstrap", "bootstrap"))
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(_policy(["*"], ["*"])))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def _client(self, service: str, keys: Keys) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            verify=self.ca_bundle if self.ca_bundle else None,
        )

    def s3(self, keys: Keys | None = None) -> Any:
        return self._client("s3", keys or self.admin)

    def user(self, name: str, statements: list[dict[str, Any]]) -> Keys:
        """A new IAM user with exactly these policy statements, and its access key."""
        iam = self._client("iam", self.admin)
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name, PolicyName="p", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements})
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def env(self, keys: Keys | None = None) -> dict[str, str]:
        """The trainer's environment for this server (what spec.storage.objectStore renders)."""
        keys = keys or self.admin
        env = {
            "KUBETUNE_S3_ENDPOINT": self.endpoint,
            "KUBETUNE_S3_REGION": "us-east-1",
            "KUBETUNE_S3_ACCESS_KEY_ID": keys.access_key_id,
            "KUBETUNE_S3_SECRET_ACCESS_KEY": keys.secret_access_key,
        }
        if self.ca_bundle:
            env["KUBETUNE_S3_CA_BUNDLE"] = self.ca_bundle
        return env

    def stop(self) -> None:
        stop_process(self.process)


def private_ca(folder: Path) -> tuple[str, str, str]:
    """A private certificate authority and a server certificate it signed for 127.0.0.1 (what a
    MinIO with an in-house CA serves), valid for a day: (CA bundle, certificate, key) PEM paths."""
    import datetime

    pki = make_pki(folder, users=(), valid=datetime.timedelta(days=1))
    return str(pki["ca.crt"]), str(pki["server.crt"]), str(pki["server.key"])


def _policy(actions: list[str], resources: list[str], effect: str = "Allow") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": actions, "Resource": resources}]}


def statement(actions: list[str], resources: list[str], effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": actions, "Resource": resources}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A fresh moto server per test module (buckets and users do not leak between modules)."""
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
