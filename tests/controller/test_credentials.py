"""Credentials that expire are reloaded: exec plugins (EKS, GKE, OIDC helpers) and rotated token files.

A real exec plugin (tests/support/exec_plugin.py, run by kubernetes_asyncio's
ExecProvider, as kubectl would run aws-iam-authenticator)
hands out a new short-lived token on every run; the emulated API server accepts
only tokens that the plugin issued and that have not expired, and answers 401
otherwise, like a real server with an OIDC issuer or a token webhook.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import io
import json
import os
import shutil
import sys
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import FTJ, PTJ, example_job, eventually
from tests.support.apiserver.emulator import ClientCertificates, Cluster, Tokens, serve_tls
from tests.support.certs import make_pki
from tests.support.kt_time import ForwardClock, scaled
from tests.support.plugin_kubeconfig import NS, expiring_tokens, issued_tokens, write_kubeconfig

from kubetune import terminal
from kubetune.controller import execplugin, kubeconfig
from kubetune.controller import kube as kube_module
from kubetune.controller.kube import Connection, Kube, load_connection
from kubetune.controller.runtime import OperatorConfig


async def configmaps(kube: Kube) -> list[dict[str, Any]]:
    """One authenticated LIST through the operator's client (any call would do: the credentials are the point)."""
    items, _, _ = await kube.list_chunk("v1", "configmaps", NS, "a=b")
    return items


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_exec_plugin_credentials_carry_their_expiry_and_reload(tmp_path: Path, api_version: str) -> None:
    path, issued = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600, api_version=api_version)
    conn = load_connection(str(path))
    assert conn.token == issued_tokens(issued)[0]
    assert conn.kubeconfig == str(path) and conn.default_namespace == NS
    assert conn.expires_at is not None and 590 < conn.expires_at - time.time() <= 600
    assert not conn.stale()
    assert conn.stale(now=conn.expires_at - 1)  # reloaded ahead of expiry, not after a failure
    again = conn.refreshed()
    assert again.token == issued_tokens(issued)[1] != conn.token


def test_exec_plugin_client_certificate_is_loaded(tmp_path: Path) -> None:
    path, _ = write_kubeconfig(tmp_path, "https://127.0.0.1:1", ttl=600)
    doc = json.loads(path.read_text(encoding="utf-8"))
    pki = make_pki(tmp_path / "pki", users=("user-1",))
    pem_cert, pem_key = pki["user-1.crt"].read_text(encoding="utf-8"), pki["user-1.key"].read_text(encoding="utf-8")
    doc["users"][0]["user"]["exec"]["env"] += [
        {"name": "KT_CLIENT_CERT", "value": pem_cert},
        {"name": "KT_CLIENT_KEY", "value": pem_key},
    ]
    path.write_text(json.dumps(doc), encoding="utf-8")
    conn = load_connection(str(path))
    assert conn.token is None and conn.cert_path and conn.key_path
    assert Path(conn.cert_path).read_text(encoding="utf-8") == pem_cert
    assert Path(conn.key_path).read_text(encoding="utf-8") == pem_key
    assert conn.expires_at is not None


def plugin_env(path: Path, **env: str) -> dict[str, Any]:
    """The kubeconfig at ``path`` with ``env`` added to its exec plugin's environment (rewritten); its document."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["exec"]["env"] += [{"name": k, "value": v} for k, v in env.items()]
    path.write_text(json.dumps(doc), encoding="utf-8")
    return dict(doc)


def test_an_exec_plugins_login_prompt_on_stderr_reaches_the_users_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """kubelogin and other plugins print a device code or login URL on stderr and wait; client-go hands the
    plugin the caller's stderr (exec.go:212-213, :459-463 @ v0.36.3).  kubernetes_asyncio's ExecProvider
    piped it and showed it only when the plugin failed, so the user never saw the prompt."""
    path, issued = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600)
    plugin_env(path, KT_PROMPT="To sign in, open https://login.example/device and enter ABCD-EFGH")
    conn = load_connection(str(path))
    assert conn.token == issued_tokens(issued)[0]
    assert "open https://login.example/device and enter ABCD-EFGH" in capfd.readouterr().err


def test_provide_cluster_info_hands_the_plugin_the_cluster_as_client_go_does(tmp_path: Path) -> None:
    """``provideClusterInfo: true``: KUBERNETES_EXEC_INFO carries ``spec.cluster`` (exec.go:441-447 @ v0.36.3,
    rest.ConfigToExecCluster), the CA file's bytes as certificate-authority-data and the cluster's
    ``client.authentication.k8s.io/exec`` extension as ``config``; ``spec.interactive`` false (Never)."""
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    path, _ = write_kubeconfig(tmp_path, "https://10.0.0.1:6443", ttl=600)
    dump = tmp_path / "info.json"
    doc = plugin_env(path, KT_EXEC_INFO_DUMP=str(dump))
    doc["users"][0]["user"]["exec"]["provideClusterInfo"] = True
    doc["clusters"][0]["cluster"].update(
        {
            "certificate-authority": str(ca),
            "tls-server-name": "api.example",
            "proxy-url": "http://proxy.example:3128",
            "extensions": [
                {"name": "other", "extension": {"x": 1}},
                {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "kt", "region": "eu"}},
            ],
        }
    )
    path.write_text(json.dumps(doc), encoding="utf-8")
    load_connection(str(path))
    info = json.loads(dump.read_text(encoding="utf-8"))
    assert info["apiVersion"] == "client.authentication.k8s.io/v1" and info["kind"] == "ExecCredential"
    assert info["spec"] == {
        "interactive": False,
        "cluster": {
            "server": "https://10.0.0.1:6443",
            "tls-server-name": "api.example",
            "certificate-authority-data": base64.standard_b64encode(ca.read_bytes()).decode(),
            "proxy-url": "http://proxy.example:3128",
            "config": {"audience": "kt", "region": "eu"},
        },
    }


def test_interactive_mode_always_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    """interactiveMode Always needs a terminal on stdin (exec.go:241-244 @ v0.36.3); pytest's stdin is none."""
    path, issued = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["exec"]["interactiveMode"] = "Always"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(Exception, match="standard input is not a terminal"):
        load_connection(str(path))
    assert not issued.exists(), "the plugin never ran"


def test_exec_plugins_run_with_no_stdout_or_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process without sys.stdout/sys.stdin (pythonw, some daemons): kubernetes_asyncio's ExecProvider called
    ``sys.stdout.isatty()`` (config/exec_provider.py:70 @ 36.1.0), an AttributeError."""
    path, issued = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["exec"]["interactiveMode"] = "IfAvailable"
    path.write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stdin", None)
    assert load_connection(str(path)).token == issued_tokens(issued)[0]


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_a_plugin_answering_a_token_and_a_certificate_keeps_both(
    cluster: Cluster, tmp_path: Path, which: str
) -> None:
    """client-go keeps the token and the certificate (newCreds, exec.go:505-520 @ v0.36.3); kubernetes_asyncio
    kept the token alone (config/kube_config.py:358-385 @ 36.1.0).  Both reach the API server: the certificate
    in the TLS handshake (its CommonName authenticates), the token as the bearer header."""
    pki = make_pki(tmp_path / "pki", users=("user-1",))
    cluster.authenticate = Tokens()
    cluster.client_certificates = ClientCertificates()
    async with serve_tls(cluster, str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"])) as server:
        path, _ = write_kubeconfig(tmp_path, str(server.url).rstrip("/"), ttl=600)
        doc = plugin_env(
            path,
            KT_CLIENT_CERT=pki["user-1.crt"].read_text(encoding="utf-8"),
            KT_CLIENT_KEY=pki["user-1.key"].read_text(encoding="utf-8"),
            KT_ALSO_TOKEN="kt-token-and-cert",
        )
        doc["clusters"][0]["cluster"]["certificate-authority"] = str(pki["ca.crt"])
        path.write_text(json.dumps(doc), encoding="utf-8")
        conn = await asyncio.to_thread(load_connection, str(path))
        assert conn.token == "kt-token-and-cert" and conn.cert_path
        if which == "operator":
            kube = Kube(conn)
            try:
                assert await configmaps(kube) == []
            finally:
                await kube.close()
        else:
            await asyncio.to_thread(terminal.Client(conn).get, f"/api/v1/namespaces/{NS}/configmaps")
    assert [(a.user, a.token, a.accepted) for a in cluster.auth_log] == [("user-1", "kt-token-and-cert", True)]


def test_a_hung_plugin_is_killed_at_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that never answers is killed after execplugin.DEADLINE_S (kubernetes_asyncio's ExecProvider and
    client-go wait forever: config/exec_provider.py:85-93 @ 36.1.0, exec.go:471 @ v0.36.3)."""
    monkeypatch.setattr(execplugin, "DEADLINE_S", 0.5)
    path, _ = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600)
    hang = tmp_path / "hang"
    hang.write_text("", encoding="utf-8")
    plugin_env(path, KT_HANG=str(hang))
    with pytest.raises(Exception, match="did not finish within 0.5 s and was killed"):
        load_connection(str(path))
    pid = int(Path(f"{hang}.runs").read_text(encoding="utf-8").split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone (and reaped), though its hang file is still there


def test_data_fields_are_written_again_when_their_files_were_removed(tmp_path: Path) -> None:
    """certificate-authority-data and client-certificate/-key-data go to kubetune's own private files, written
    on each load: kubernetes_asyncio remembered one temp path per content and refused it once a /tmp cleaner
    had removed it ("File does not exists", config/kube_config.py:102-126 @ 36.1.0), every later reload."""
    pki = make_pki(tmp_path / "pki", users=("user-1",))

    def b64(name: str) -> str:
        return base64.standard_b64encode(pki[name].read_bytes()).decode()

    config = {
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {"name": "u", "user": {"client-certificate-data": b64("user-1.crt"), "client-key-data": b64("user-1.key")}}
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config), encoding="utf-8")
    first = load_connection(str(path))
    files = {"ca.crt": first.ca_path, "user-1.crt": first.cert_path, "user-1.key": first.key_path}
    for name, file in files.items():
        assert file and Path(file).read_bytes() == pki[name].read_bytes()
        assert Path(file).stat().st_mode & 0o077 == 0, "owner-only"
        Path(file).unlink()  # aged out of /tmp
    again = load_connection(str(path))
    for name, file in {"ca.crt": again.ca_path, "user-1.crt": again.cert_path, "user-1.key": again.key_path}.items():
        assert file and Path(file).read_bytes() == pki[name].read_bytes()
    shutil.rmtree(Path(str(again.ca_path)).parent)  # the whole folder gone too
    third = load_connection(str(path))
    assert third.ca_path and Path(third.ca_path).read_bytes() == pki["ca.crt"].read_bytes()


def test_plugin_certificate_rotations_leave_no_open_descriptors_and_no_old_files(tmp_path: Path) -> None:
    """kubernetes_asyncio's temp file for each new plugin certificate leaked mkstemp's descriptor
    (config/kube_config.py:105 @ 36.1.0): one per rotation, for the process's life."""
    pki = make_pki(tmp_path / "pki", users=tuple(f"user-{n}" for n in range(1, 8)))
    path = cert_plugin_kubeconfig(tmp_path, "https://127.0.0.1:1", pki, ttl=600, clock=ForwardClock(tmp_path / "clock"))
    conn = load_connection(str(path))
    fds = len(os.listdir("/proc/self/fd"))
    for n in range(2, 8):
        fresh = conn.refreshed()
        assert fresh.cert_path and Path(fresh.cert_path).read_bytes() == pki[f"user-{n}.crt"].read_bytes()
        replaced = (conn.cert_path, conn.key_path)
        conn = fresh  # the replaced connection's last reference: its files go with it
        for file in replaced:
            assert file and not Path(file).exists(), "the replaced certificate's files are removed"
    assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.parametrize("own", ["token", "tokenFile", "client-certificate"])
def test_a_users_own_token_or_certificate_wins_over_its_exec_plugin(tmp_path: Path, own: str) -> None:
    """client-go installs the exec plugin only when the user has no token, token file, basic auth or client
    certificate (exec.go:319-321 @ v0.36.3), as the kubernetes package read token before exec;
    kubernetes_asyncio runs exec first (config/kube_config.py:239-247 @ 36.1.0), so the plugin's identity won."""
    path, issued = write_kubeconfig(tmp_path, "https://127.0.0.1:1", ttl=600)
    pki = make_pki(tmp_path / "pki", users=("user-1",))
    (tmp_path / "token").write_text("kt-from-file\n", encoding="utf-8")
    doc = json.loads(path.read_text(encoding="utf-8"))
    user = doc["users"][0]["user"]
    if own == "token":
        user["token"] = "kt-static"
    elif own == "tokenFile":
        user["tokenFile"] = str(tmp_path / "token")
    else:
        user["client-certificate"], user["client-key"] = str(pki["user-1.crt"]), str(pki["user-1.key"])
    path.write_text(json.dumps(doc), encoding="utf-8")
    conn = load_connection(str(path))
    assert not issued.exists(), "the exec plugin never ran"
    assert conn.expires_at is None
    if own == "token":
        assert conn.token == "kt-static"
    elif own == "tokenFile":
        assert conn.token is None and conn.token_file == str(tmp_path / "token")
        assert Kube(conn).bearer() == "kt-from-file"
    else:
        assert conn.token is None and conn.cert_path == str(pki["user-1.crt"])


@pytest.mark.parametrize("expired", [True, False])
def test_an_oidc_auth_provider_refresh_is_refused_and_never_sends_the_refresh_token(
    tmp_path: Path, expired: bool
) -> None:
    """kubernetes_asyncio refreshes an expired oidc id-token by posting the refresh-token over TLS that checks
    nothing (config/openid.py:27-30 @ 36.1.0; a TypeError with an idp CA).  kubetune refuses the refresh with
    the fix (an exec plugin such as kubelogin) and never contacts the issuer; a valid id-token is used as is."""
    import http.server
    import threading

    seen: list[str] = []

    class Issuer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_error(500)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    issuer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Issuer)
    threading.Thread(target=issuer.serve_forever, daemon=True).start()

    def b64url(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    exp = time.time() + (-3600 if expired else 3600)
    id_token = f"{b64url({'alg': 'none'})}.{b64url({'sub': 'alice', 'exp': int(exp)})}.sig"
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "auth-provider": {
                        "name": "oidc",
                        "config": {
                            "client-id": "kt",
                            "client-secret": "s",
                            "id-token": id_token,
                            "refresh-token": "kt-refresh-secret",
                            "idp-issuer-url": f"http://127.0.0.1:{issuer.server_address[1]}",
                        },
                    }
                },
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config), encoding="utf-8")
    try:
        if expired:
            with pytest.raises(Exception, match="does not refresh it.*exec plugin such as kubelogin"):
                load_connection(str(path))
        else:
            assert load_connection(str(path)).token == id_token
    finally:
        issuer.shutdown()
        issuer.server_close()
    assert seen == [], "the issuer was never asked"


async def test_client_reloads_before_expiry_and_after_a_401(cluster: Cluster, tmp_path: Path) -> None:
    ttl = 600
    clock, path, issued = expiring_tokens(cluster, tmp_path, ttl)
    kube = Kube(await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock)))
    try:
        assert await configmaps(kube) == []
        clock.advance(ttl + 1)  # the first token has expired by now
        assert not cluster.authenticate(issued_tokens(issued)[0])
        before, refreshes = len(issued_tokens(issued)), kube.refreshes
        results = await asyncio.gather(*(configmaps(kube) for _ in range(20)))
        assert results == [[]] * 20
        assert len(issued_tokens(issued)) == before + 1, "20 concurrent calls ran the plugin once"
        assert kube.refreshes == refreshes + 1
        assert all(a.accepted for a in cluster.auth_log), "reloaded ahead of expiry: no request was refused"

        issued.write_text("", encoding="utf-8")  # the issuer revokes every token it gave out
        assert await configmaps(kube) == []
        refused = [i for i, a in enumerate(cluster.auth_log) if not a.accepted]
        assert refused, "the revoked token was sent and refused"
        assert cluster.auth_log[refused[-1] + 1].accepted
        assert cluster.auth_log[refused[-1] + 1].token != cluster.auth_log[refused[-1]].token
    finally:
        await kube.close()


async def test_rotated_token_file_is_read_again_after_a_401(cluster: Cluster, tmp_path: Path) -> None:
    """In a pod, kubelet rotates the projected ServiceAccount token in place."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n", encoding="utf-8")
    cluster.authenticate = Tokens(static=("first",))
    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token_file=str(token_file)))
    try:
        assert await configmaps(kube) == []
        token_file.write_text("second\n", encoding="utf-8")  # rotated; the old one is no longer valid
        cluster.authenticate = Tokens(static=("second",))
        assert await configmaps(kube) == []
        assert [(a.token, a.accepted) for a in cluster.auth_log] == [
            ("first", True),
            ("first", False),
            ("second", True),
        ]
    finally:
        await kube.close()


async def test_a_401_storm_runs_the_exec_plugin_once_even_when_it_hands_back_the_same_token(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Many calls refused at once (a revoked token) reload the credentials once, not once per call.

    client-go's exec authenticator runs the plugin again after a 401 only if the credentials that got
    it are still the cached ones, compared by identity, not by token (``maybeRefreshCreds``:
    ``creds != a.cachedCreds``, plugin/pkg/client/auth/exec/exec.go:418-430 @ v0.36.3).  A plugin that
    caches its token hands back the same string: comparing tokens would run it once per refused call,
    one after another under the reload lock."""
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=600)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["exec"]["env"].append({"name": "KT_FIXED_TOKEN", "value": "kt-cached"})
    path.write_text(json.dumps(doc), encoding="utf-8")
    cluster.authenticate = Tokens()  # the token is revoked: every request is refused
    kube = Kube(await asyncio.to_thread(load_connection, str(path)))
    try:
        runs = len(issued_tokens(issued))
        results = await asyncio.gather(*(configmaps(kube) for _ in range(4)), return_exceptions=True)
        assert all("401" in str(r) for r in results), results
        assert len(issued_tokens(issued)) == runs + 1, "4 refused calls ran the plugin once"
        assert kube.refreshes == 1
    finally:
        await kube.close()


async def test_a_hung_exec_plugin_fails_calls_with_an_error_and_is_never_run_twice_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An exec plugin that never answers (no deadline in kubernetes_asyncio's ExecProvider nor in client-go) made
    every call of the operator wait on the reload lock forever, silently. Now a call fails after
    ``reload_timeout_s`` with a transient CredentialsError, the next call waits on the same run (one
    plugin at a time), and once the plugin answers its credentials are used."""
    ttl = 600
    clock = ForwardClock(tmp_path / "clock")
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=ttl, clock=clock)
    hang = tmp_path / "hang"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["exec"]["env"].append({"name": "KT_HANG", "value": str(hang)})
    path.write_text(json.dumps(doc), encoding="utf-8")
    cluster.authenticate = Tokens(issued=str(issued), clock=clock)
    kube = Kube(
        await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock)), reload_timeout_s=0.3
    )
    try:
        assert await configmaps(kube) == []
        hang.write_text("", encoding="utf-8")  # the next run of the plugin hangs
        clock.advance(ttl + 1)
        for _ in range(2):
            with pytest.raises(Exception, match="CredentialsError.*no answer within 0.3 s"):
                await configmaps(kube)
        assert Path(f"{hang}.runs").read_text(encoding="utf-8").count("run") == 2, (
            "the load, then one hung reload: never a second"
        )
        hang.unlink()  # the plugin answers
        assert await eventually_ok(lambda: configmaps(kube)) == []
        assert Path(f"{hang}.runs").read_text(encoding="utf-8").count("run") == 2
        assert cluster.auth_log[-1].accepted and cluster.auth_log[-1].token == issued_tokens(issued)[-1]
    finally:
        hang.unlink(missing_ok=True)
        await kube.close()


async def until_sent(call: Callable[[], Awaitable[Any]], cluster: Cluster, token: Callable[[], str]) -> None:
    """Call until a request carries ``token()`` (a reload run in the background is installed when it ends)."""
    deadline = time.monotonic() + scaled(20)
    while True:
        await call()
        if cluster.auth_log[-1].token == token():
            return
        assert time.monotonic() < deadline, "the reloaded token was never sent"
        await asyncio.sleep(0.05)


async def eventually_ok(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()``'s result once it stops raising (a scaled deadline, as eventually's)."""
    deadline = time.monotonic() + scaled(20)
    while True:
        try:
            return await call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def one_client(
    cluster: Cluster,
    tmp_path: Path,
    which: str,
    clock: ForwardClock,
    ttl: float,
    reload_timeout_s: float | None = None,
    **plugin: str,
) -> tuple[Kube, Path, Callable[[], Awaitable[Any]]]:
    """The operator's client (to close), the plugin's record of issued tokens, and one authenticated LIST
    through the operator's client or the SDK's (``which``), whose exec plugin issues tokens of ``ttl``
    seconds by ``clock`` and runs with the ``plugin`` environment (KT_FAIL, KT_HANG...)."""
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=ttl, clock=clock)
    plugin_env(path, **plugin)
    cluster.authenticate = Tokens(issued=str(issued), clock=clock)
    conn = await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock))
    kube = Kube(conn) if reload_timeout_s is None else Kube(conn, reload_timeout_s=reload_timeout_s)
    client = terminal.Client(conn)

    async def call() -> Any:
        if which == "operator":
            return await configmaps(kube)
        return await asyncio.to_thread(client.get, f"/api/v1/namespaces/{NS}/configmaps")

    return kube, issued, call


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_a_failing_plugin_leaves_valid_credentials_in_use_and_is_not_rerun_on_every_call(
    cluster: Cluster, tmp_path: Path, which: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that fails while the credentials in hand have not expired (a reload ahead of expiry): both
    clients failed every call and ran the plugin again before each one.  client-go keeps its credentials
    until they expire (exec.go:386-391, :401-414 @ v0.36.3).  Now the current ones are used with a warning,
    and the plugin runs again only after a back-off (kubeconfig.ReloadBackoff, 1 s doubling)."""
    ttl = 600
    mono = [0.0]
    monkeypatch.setattr(kubeconfig, "monotonic", lambda: mono[0])
    clock = ForwardClock(tmp_path / "clock")
    fail = tmp_path / "fail"
    kube, issued, call = await one_client(cluster, tmp_path, which, clock, ttl, KT_FAIL=str(fail))

    def runs() -> int:
        return Path(f"{fail}.runs").read_text(encoding="utf-8").count("run")

    try:
        await call()
        fail.write_text("", encoding="utf-8")
        clock.advance(ttl - 30)  # within the last fifth (60 s): reloaded ahead of expiry, still valid
        await call()  # the token in hand, still valid, is used; the reload runs in the background
        await eventually(lambda: "reloading credentials failed" in caplog.text, what="the reload failed")
        for _ in range(3):
            await call()  # the token in hand, still valid, is used
        assert runs() == 2, "the load, then one failed reload: not one per call"
        clock.advance(1.5)
        mono[0] += 1.5  # past the first back-off (1 s, monotonic)
        await call()
        await eventually(lambda: runs() == 3 and caplog.text.count("reloading credentials failed") == 2)
        fail.unlink()  # the identity provider is back
        clock.advance(2.5)
        mono[0] += 2.5  # past the second back-off (2 s)
        await call()
        await eventually(lambda: len(issued_tokens(issued)) == 2, what="the background reload's token")
        await until_sent(call, cluster, lambda: issued_tokens(issued)[-1])
        assert runs() == 4
        assert cluster.auth_log[-1].accepted and cluster.auth_log[-1].token == issued_tokens(issued)[-1]
        assert all(a.accepted for a in cluster.auth_log)
    finally:
        await kube.close()


async def test_static_token_refused_is_an_error_without_a_retry(cluster: Cluster) -> None:
    kube = Kube(Connection(server=str(cluster.url).rstrip("/"), token="wrong"))
    try:
        with pytest.raises(Exception, match="401 Unauthorized"):
            await configmaps(kube)
        assert len(cluster.auth_log) == 1
    finally:
        await kube.close()


async def test_operator_keeps_working_across_token_rotations(
    cluster: Cluster, operator: Any, config: OperatorConfig, tmp_path: Path
) -> None:
    """Jobs are reconciled and get status across several expiries; kopf's own watch re-logs in.

    The first expiry is real time: kopf compares ConnectionInfo.expiration with its own clock
    (``datetime.datetime.now`` in Vault.expire/_expire, kopf/_cogs/structs/credentials.py:367,379
    @ 1.45.2; nothing to inject) and logs in again before its next request. The later ones move the
    server's and the operator's clock (ForwardClock) instead of waiting: kopf, whose clock says the
    token is still good, sends it, gets a 401 and logs in again (the login handler reloads)."""
    ttl = 2.0
    clock, path, issued = expiring_tokens(cluster, tmp_path, ttl)
    connection = await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock))
    await operator(OperatorConfig(**{**config.__dict__, "connection": connection}))

    rotations = 3
    for i in range(rotations + 1):
        name = f"job-{i}"
        await cluster.put_object(*FTJ, example_job(name=name, namespace=NS))
        await eventually(lambda: cluster.read(*PTJ, NS, name), what=f"the PyTorchJob of {name}")
        await eventually(
            lambda: ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("phase") == "Pending",
            what=f"the status of {name}",
        )
        if i == 0:
            await asyncio.sleep(ttl + 0.3)  # every token issued so far has expired, by kopf's clock too
        elif i < rotations:
            clock.advance(ttl + 0.3)  # every token issued so far has expired, by the server's clock
        if i < rotations:
            await cluster.drop_watches()  # kopf must open its watch again, with a fresh token

    watches = [a for a in cluster.auth_log if a.watch]
    accepted_watch_tokens = {a.token for a in watches if a.accepted}
    assert len(accepted_watch_tokens) >= rotations, "kopf's watch reconnected with a new token after each expiry"
    assert len(set(issued_tokens(issued))) >= rotations + 1
    # After the last expiry, the operator still writes to the API server with a valid token.
    last = cluster.auth_log[-1]
    assert last.accepted


async def test_expired_kubeconfig_token_is_replaced_by_rewriting_the_file(cluster: Cluster, tmp_path: Path) -> None:
    """docs/install.md's local operator: a kubeconfig with a `kubectl create token` token. Once the
    server refuses it (expired), running the doc's `set-credentials` line again is enough: the next
    401 reloads the file, without restarting the operator."""
    path = tmp_path / "kubetune.kubeconfig"

    def write(token: str) -> None:
        _kubeconfig(path, {"server": str(cluster.url).rstrip("/")}, {"token": token})

    write("first-token")
    cluster.authenticate = Tokens(static=("first-token",))
    kube = Kube(await asyncio.to_thread(load_connection, str(path)))
    try:
        assert await configmaps(kube) == []
        cluster.authenticate = Tokens(static=("second-token",))  # the first one expired
        write("second-token")  # the user ran set-credentials again
        assert await configmaps(kube) == []
        assert [a.token for a in cluster.auth_log][-2:] == ["first-token", "second-token"]
    finally:
        await kube.close()


# --- one rule for both clients ------------------------------------------------------------------
# The operator's Kube (async) and the SDK's/CLI's terminal.Client (sync) reload credentials by the same
# functions (kubetune.controller.kubeconfig: should_reload, retry_after_401, TokenFile).  Each test runs
# the same steps through either client; the rule's clock is set to points of the rule instead of sleeping.


def client_for(
    which: str, connection: Connection
) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """One authenticated call through the operator's or the SDK's client, and how to close it."""
    if which == "operator":
        kube = Kube(connection)
        return (lambda: configmaps(kube)), kube.close
    client = terminal.Client(connection)

    async def nothing() -> None:
        return None

    return (lambda: asyncio.to_thread(client.get, f"/api/v1/namespaces/{NS}/configmaps")), nothing


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_both_clients_reload_before_expiry_and_once_after_a_401(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=600)
    cluster.authenticate = Tokens(issued=str(issued))
    conn = await asyncio.to_thread(load_connection, str(path))
    assert conn.expires_at is not None
    early = min(kubeconfig.REFRESH_EARLY_S, (conn.expires_at - conn.loaded_at) / 5)
    assert early == 60.0  # a 10-minute token is reloaded a minute before it expires
    call, close = client_for(which, conn)
    try:
        await call()
        monkeypatch.setattr(kubeconfig, "clock", lambda: conn.expires_at - early - 1)
        await call()
        assert len(issued_tokens(issued)) == 1, "outside the window: the plugin's token is kept"
        monkeypatch.setattr(kubeconfig, "clock", lambda: conn.expires_at - early + 1)
        await call()  # served by the still-valid token while the plugin runs in the background
        await eventually(lambda: len(issued_tokens(issued)) == 2, what="inside the window: the plugin ran again")
        await until_sent(call, cluster, lambda: issued_tokens(issued)[1])  # the next requests have the new token
        assert all(a.accepted for a in cluster.auth_log), "reloaded ahead of expiry: no request was refused"
        monkeypatch.setattr(kubeconfig, "clock", time.time)

        issued.write_text("", encoding="utf-8")  # the issuer revokes every token it gave out
        await call()
        assert [a.accepted for a in cluster.auth_log][-2:] == [False, True], "one 401, one reload, the request resent"
        assert len(issued_tokens(issued)) == 1  # the file was emptied, then the reload's token

        cluster.authenticate = Tokens()  # now the server refuses every token, fresh ones too
        seen = len(cluster.auth_log)
        with pytest.raises(Exception) as refused:
            await call()
        assert getattr(refused.value, "status", None) == 401, refused.value
        assert [a.accepted for a in cluster.auth_log[seen:]] == [False, False], (
            "one reload and one resend, then the error"
        )
        assert len(issued_tokens(issued)) == 2, "the plugin ran once for that 401, not in a loop"
    finally:
        await close()


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    """A kubeconfig (JSON, which is YAML) with one context ``kt`` (namespace NS) of ``cluster`` and ``user``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kt",
        "clusters": [{"name": "kt", "cluster": cluster}],
        "contexts": [{"name": "kt", "context": {"cluster": "kt", "user": "u", "namespace": NS}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _rotating_token_file(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Callable[[float], None]]:
    """A token file holding "first", a server that accepts "first" and "second" (kubelet-style: the old
    token stays valid until it expires), and the clients' clock stopped; ``at(s)`` moves it s seconds on."""
    token_file = tmp_path / "token"
    token_file.write_text("first\n", encoding="utf-8")
    cluster.authenticate = Tokens(static=("first", "second"))
    t0 = time.time()

    def at(seconds: float) -> None:
        monkeypatch.setattr(kubeconfig, "clock", lambda: t0 + seconds)

    at(0)
    return token_file, at


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_both_clients_read_a_rotated_token_file_on_the_same_rule(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """In a pod, kubelet rotates the ServiceAccount token file in place: read again 48 s after a read
    (kept 60 s, a fifth of that early) and right after a 401."""
    token_file, at = _rotating_token_file(cluster, tmp_path, monkeypatch)
    call, close = client_for(which, Connection(server=str(cluster.url).rstrip("/"), token_file=str(token_file)))
    try:
        await call()
        token_file.write_text("second\n", encoding="utf-8")
        at(47)
        await call()
        at(49)
        await call()
        assert [a.token for a in cluster.auth_log] == ["first", "first", "second"]

        token_file.write_text("third\n", encoding="utf-8")  # rotated, and the old token revoked at once
        cluster.authenticate = Tokens(static=("third",))
        await call()
        assert [(a.token, a.accepted) for a in cluster.auth_log][-2:] == [("second", False), ("third", True)]
    finally:
        await close()


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_a_kubeconfig_token_file_is_read_again_on_the_same_rule(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """A kubeconfig user's ``tokenFile`` (a token a sidecar or agent rotates) is a file kubectl reads again
    too: client-go keeps it as BearerTokenFile (tools/clientcmd/client_config.go:277-287 @ v0.36.3) and
    reads it through the cached file source (transport/round_trippers.go:295-308, token_source.go:67-82).
    The kubernetes package (and kubernetes_asyncio) read it once into a static token, so the operator and
    the SDK sent the old token until a 401, although docs/install.md says the file is read again every 48 s."""
    token_file, at = _rotating_token_file(cluster, tmp_path, monkeypatch)
    config = _kubeconfig(
        tmp_path / "kubeconfig", {"server": str(cluster.url).rstrip("/")}, {"tokenFile": str(token_file)}
    )
    call, close = client_for(which, await asyncio.to_thread(load_connection, str(config)))
    try:
        await call()
        token_file.write_text("second\n", encoding="utf-8")
        at(49)
        await call()
        assert [(a.token, a.accepted) for a in cluster.auth_log] == [("first", True), ("second", True)], (
            "read again, no 401 needed"
        )
    finally:
        await close()


# --- kubernetes_asyncio's loader: client certificates, tls-server-name, a running event loop ----------


def cert_plugin_kubeconfig(tmp_path: Path, server: str, pki: dict[str, Path], ttl: float, clock: ForwardClock) -> Path:
    """A kubeconfig whose exec plugin (client.authentication.k8s.io/v1) answers a client certificate and key,
    user-1's on its first run, user-2's on the next, each expiring ``ttl`` seconds after it ran (by ``clock``)."""
    path, _ = write_kubeconfig(tmp_path, server, ttl=ttl, clock=clock)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["clusters"][0]["cluster"]["certificate-authority"] = str(pki["ca.crt"])
    doc["users"][0]["user"]["exec"]["env"].append({"name": "KT_CLIENT_CERT_DIR", "value": str(pki["ca.crt"].parent)})
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


async def test_an_exec_plugins_client_certificate_is_the_operators_mtls_identity_and_renewed_at_its_expiry(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An exec plugin may answer with a client certificate and key instead of a token (ExecCredential
    status.clientCertificateData/clientKeyData, with expirationTimestamp; teleport's tsh, some OIDC
    helpers).  The operator's client must present it in its TLS handshake, and run the plugin again before
    the certificate's expirationTimestamp: kubernetes_asyncio's own loader keeps that timestamp only beside a
    token (config/kube_config.py:358-363 @ 36.1.0), so a plain migration would send the expired certificate.
    The emulated API server authenticates the certificate's CommonName (x509 authenticator) and refuses
    every bearer token here, so only the certificate can get a request in."""
    ttl = 600
    clock = ForwardClock(tmp_path / "clock")
    pki = make_pki(tmp_path / "pki")
    cluster.authenticate = Tokens()  # no token is accepted
    cluster.client_certificates = ClientCertificates(clock=clock)
    async with serve_tls(cluster, str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"])) as server:
        path = cert_plugin_kubeconfig(tmp_path, str(server.url).rstrip("/"), pki, ttl, clock)
        kube = Kube(await asyncio.to_thread(functools.partial(load_connection, str(path), clock=clock)))
        try:
            assert kube.connection.token is None
            assert await configmaps(kube) == []
            clock.advance(ttl + 1)  # user-1's credentials have expired (by the plugin's word)
            assert await configmaps(kube) == []
        finally:
            await kube.close()
    assert [(a.user, a.accepted) for a in cluster.auth_log] == [("user-1", True), ("user-2", True)], (
        "the plugin's certificate authenticated each request, the second run's after the first expired"
    )


def private_contents(folder: Path) -> set[bytes]:
    """What kubetune's private files hold now; a file given back meanwhile (an earlier test's connection
    garbage collected as this one reads) is skipped."""
    out = set()
    for p in folder.iterdir():
        try:
            out.add(p.read_bytes())
        except FileNotFoundError:
            pass
    return out


def plugin_repeating_certificates(tmp_path: Path) -> dict[str, Path]:
    """A PKI for ``cert_plugin_kubeconfig`` whose plugin hands out user-1's certificate on its first two runs
    and user-3's on the next two (user-2 and user-4 are copies): a plugin that caches its certificate until
    it expires, as kubelogin and tsh do, so two clients of one process loading one after the other get the
    same one."""
    pki = make_pki(tmp_path / "pki", users=("user-1", "user-3"))
    for same, copy in (("user-1", "user-2"), ("user-3", "user-4")):
        for suffix in ("crt", "key"):
            shutil.copy(pki[f"{same}.{suffix}"], pki["ca.crt"].parent / f"{copy}.{suffix}")
    return pki


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_a_client_rotating_its_plugin_certificate_leaves_the_file_another_client_still_uses(
    cluster: Cluster, tmp_path: Path, which: str
) -> None:
    """Two clients of one process (the operator's and kopf's login, two Kube, the SDK and the CLI in a notebook)
    that got the same certificate from the plugin share one private file (named by its content).  When one
    rotated, it removed that file, and the other's next TLS context failed (FileNotFoundError) although its
    certificate was still valid.  The emulated API server authenticates only client certificates here."""
    pki = plugin_repeating_certificates(tmp_path)
    cluster.authenticate = Tokens()  # no token is accepted
    cluster.client_certificates = ClientCertificates()
    async with serve_tls(cluster, str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"])) as server:
        path = cert_plugin_kubeconfig(tmp_path, str(server.url).rstrip("/"), pki, 600, ForwardClock(tmp_path / "c"))
        rotating = Kube(await asyncio.to_thread(load_connection, str(path)))  # the plugin's run 1: user-1
        other = await asyncio.to_thread(load_connection, str(path))  # run 2: user-1 again
        shared = (other.cert_path, other.key_path)
        assert shared == (rotating.connection.cert_path, rotating.connection.key_path), "one file for both"
        try:
            assert await configmaps(rotating) == []
            await rotating.fresh_connection(rejected="")  # as after a 401 to its certificate: run 3, user-3
            assert rotating.connection.cert_path not in shared
            call, close = client_for(which, other)  # its TLS context is built now, from the shared file
            try:
                await call()
            finally:
                await close()
            assert await configmaps(rotating) == []
        finally:
            await rotating.close()
    assert [(a.user, a.accepted) for a in cluster.auth_log] == [("user-1", True), ("user-1", True), ("user-3", True)]
    del other, call, close  # the last client using user-1's certificate is gone: so are its files
    gc.collect()
    for file in shared:
        assert file and not Path(file).exists(), "no leak once no connection uses it"


def test_a_rotated_away_certificate_shared_by_two_connections_is_removed_when_the_last_one_goes(tmp_path: Path) -> None:
    """The shared file stays while one connection of the process still uses it, and goes with the last one:
    no leak of rotated-away certificates and keys in the private folder (a CA from an http cluster's
    certificate-authority-data, which the loader never reads, is not kept either)."""
    pki = plugin_repeating_certificates(tmp_path)
    path = cert_plugin_kubeconfig(tmp_path, "https://127.0.0.1:1", pki, 600, ForwardClock(tmp_path / "c"))
    first, second = load_connection(str(path)), load_connection(str(path))  # user-1, user-1
    shared = (first.cert_path, first.key_path)
    assert shared == (second.cert_path, second.key_path)
    first = first.refreshed()  # user-3
    assert first.cert_path and Path(first.cert_path).read_bytes() == pki["user-3.crt"].read_bytes()
    for file in shared:
        assert file and Path(file).read_bytes() in (pki["user-1.crt"].read_bytes(), pki["user-1.key"].read_bytes())
    second = second.refreshed()  # user-3 again: both now use user-3's files
    assert (second.cert_path, second.key_path) == (first.cert_path, first.key_path)
    for file in shared:
        assert file and not Path(file).exists(), "nobody uses user-1's certificate any more: removed"
    folder = Path(str(first.cert_path)).parent
    first_paths = {first.cert_path, first.key_path}
    del first
    assert {str(p) for p in folder.iterdir()} >= first_paths, "still used by the second connection"
    del second
    assert not first_paths & {str(p) for p in folder.iterdir()}, "gone with the last connection"

    doc = json.loads(path.read_text(encoding="utf-8"))
    ca = base64.standard_b64encode(pki["ca.crt"].read_bytes()).decode()
    doc["clusters"][0]["cluster"] = {"server": "http://127.0.0.1:1", "certificate-authority-data": ca}
    doc["users"][0]["user"] = {"token": "kt-static"}
    path.write_text(json.dumps(doc), encoding="utf-8")
    plain = load_connection(str(path))  # written (its *-data), never read: the server is http
    assert plain.ca_path is None and plain.token == "kt-static"
    assert pki["ca.crt"].read_bytes() not in private_contents(folder), "the unread CA is not kept"


def test_a_copy_of_a_connection_keeps_the_files_it_names_after_the_original_goes(tmp_path: Path) -> None:
    """``dataclasses.replace`` (another namespace for the same cluster), ``copy`` and ``deepcopy`` of a loaded
    connection name the same private files: they stay while any copy is alive, and go with the last one."""
    import copy
    import dataclasses
    import gc

    pki = plugin_repeating_certificates(tmp_path)
    path = cert_plugin_kubeconfig(tmp_path, "https://127.0.0.1:1", pki, 600, ForwardClock(tmp_path / "c"))
    original = load_connection(str(path))
    files = [original.cert_path, original.key_path]
    copies = [
        dataclasses.replace(original, default_namespace="team-a"),
        copy.copy(original),
        copy.deepcopy(original),
    ]
    del original
    gc.collect()
    for i, kept in enumerate(copies):
        assert [kept.cert_path, kept.key_path] == files
        assert all(f and Path(f).is_file() for f in files), f"copy {i}: its files went with the original"
    del copies, kept
    gc.collect()
    assert not any(f and Path(f).exists() for f in files), "gone with the last copy"


def test_a_failed_load_leaves_no_private_file_behind(tmp_path: Path) -> None:
    """A load that fails after writing the cluster's certificate-authority-data (its exec plugin failing: the
    identity provider down) gives its file back: it stayed in the private folder for the process's life."""
    pki = make_pki(tmp_path / "pki", users=())
    path, _ = write_kubeconfig(tmp_path, "https://127.0.0.1:1", ttl=600)
    fail = tmp_path / "fail"
    fail.write_text("", encoding="utf-8")
    doc = plugin_env(path, KT_FAIL=str(fail))
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.standard_b64encode(
        pki["ca.crt"].read_bytes()
    ).decode()
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(Exception, match="exit"):
        load_connection(str(path))
    folder = Path(str(kube_module._private_dir))
    assert pki["ca.crt"].read_bytes() not in private_contents(folder)
    fail.unlink()  # the provider is back: the same load works, its CA in a private file
    conn = load_connection(str(path))
    assert conn.ca_path and Path(conn.ca_path).read_bytes() == pki["ca.crt"].read_bytes()


async def test_kopfs_login_keeps_the_certificate_files_it_was_handed_until_it_logs_in_again(tmp_path: Path) -> None:
    """kopf gets file paths from the operator's login handler and builds its SSL context from them only at its
    first request with them (Vault.extended's factory, kopf/_cogs/structs/credentials.py:294-297 ->
    ConnectionInfo.as_ssl_context, :122-164 @ 1.45.2).  The operator's client rotating its plugin
    certificate before then removed the files under kopf; they now stay until kopf logs in again."""
    import kopf

    from kubetune.controller import handlers

    pki = make_pki(tmp_path / "pki", users=("user-1", "user-2"))
    path = cert_plugin_kubeconfig(tmp_path, "https://127.0.0.1:1", pki, 600, ForwardClock(tmp_path / "c"))
    kube = Kube(await asyncio.to_thread(load_connection, str(path)))  # the plugin's run 1: user-1
    registry = kopf.OperatorRegistry()
    handlers.register(registry, types.SimpleNamespace(kube=kube), None)  # type: ignore[arg-type]  # login uses rt.kube
    (login,) = [h.fn for h in registry._activities.get_all_handlers() if h.activity.value == "authentication"]
    info = await login()
    await kube.fresh_connection(rejected="")  # the operator's client rotates (run 2: user-2)
    gc.collect()
    assert info.certificate_path != kube.connection.cert_path
    info.as_ssl_context()  # kopf's first request with the login it got: its certificate is still there
    handed = (info.certificate_path, info.private_key_path)
    again = await login()  # kopf logs in again: user-2's files now; user-1's used by nobody
    assert again.certificate_path == kube.connection.cert_path
    again.as_ssl_context()
    gc.collect()
    for file in handed:
        assert file and not Path(file).exists(), "no leak once kopf has logged in again"


async def test_the_operators_client_presents_its_certificate_with_insecure_skip_tls_verify(
    cluster: Cluster, tmp_path: Path
) -> None:
    """insecure-skip-tls-verify skips checking the server's certificate, not sending the user's: the operator's
    client used aiohttp's ssl=False then, which presents no client certificate, so every call got a 401."""
    pki = make_pki(tmp_path / "pki", users=("user-1",))
    cluster.authenticate = Tokens()  # no token is accepted: only the certificate gets a request in
    cluster.client_certificates = ClientCertificates()
    async with serve_tls(cluster, str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"])) as server:
        config = {
            "clusters": [
                {"name": "c", "cluster": {"server": str(server.url).rstrip("/"), "insecure-skip-tls-verify": True}}
            ],
            "users": [
                {
                    "name": "u",
                    "user": {"client-certificate": str(pki["user-1.crt"]), "client-key": str(pki["user-1.key"])},
                }
            ],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": NS}}],
            "current-context": "c",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(config), encoding="utf-8")
        kube = Kube(await asyncio.to_thread(load_connection, str(path)))
        try:
            assert kube.connection.insecure
            assert await configmaps(kube) == []
        finally:
            await kube.close()
    assert [(a.user, a.accepted) for a in cluster.auth_log] == [("user-1", True)]


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_both_clients_check_the_server_certificate_against_tls_server_name(
    cluster: Cluster, tmp_path: Path, which: str
) -> None:
    """clusters[].cluster.tls-server-name: the API server's certificate names "api.kt.internal", not the
    address in ``server`` (an API server reached by IP, through a tunnel or a load balancer).  kubectl then
    checks the certificate against that name (rest.Config TLSClientConfig.ServerName), as kubernetes_asyncio
    reads it (config/kube_config.py:461-462) and uses it (client/rest.py:60,155-156 @ 36.1.0); without it,
    the certificate does not match 127.0.0.1 and no request gets through."""
    pki = make_pki(tmp_path / "pki", users=(), server_names=("api.kt.internal",))
    async with serve_tls(cluster, str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"])) as server:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kt",
            "clusters": [
                {
                    "name": "kt",
                    "cluster": {
                        "server": str(server.url).rstrip("/"),
                        "certificate-authority": str(pki["ca.crt"]),
                        "tls-server-name": "api.kt.internal",
                    },
                }
            ],
            "contexts": [{"name": "kt", "context": {"cluster": "kt", "user": "u", "namespace": NS}}],
            "users": [{"name": "u", "user": {"token": "test-token"}}],
        }
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(config), encoding="utf-8")
        call, close = client_for(which, await asyncio.to_thread(load_connection, str(path)))
        try:
            result = await call()
            assert (result if which == "operator" else result["items"]) == []
        finally:
            await close()
        assert [a.accepted for a in cluster.auth_log] == [True]

        del config["clusters"][0]["cluster"]["tls-server-name"]  # type: ignore[index]
        path.write_text(json.dumps(config), encoding="utf-8")
        call, close = client_for(which, await asyncio.to_thread(load_connection, str(path)))
        try:
            with pytest.raises(Exception, match="(?i)certificate"):
                await call()
        finally:
            await close()
        assert len(cluster.auth_log) == 1, "the handshake failed: nothing reached the server"


async def test_the_sdks_client_loads_and_reloads_credentials_inside_a_running_event_loop(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a notebook every cell runs inside the kernel's running event loop, and the SDK is synchronous.
    kubernetes_asyncio's loader is async; ``asyncio.run`` there raises "cannot be called from a running event
    loop".  The SDK's client must load the kubeconfig (running the exec plugin) and reload it before expiry
    from such a thread.  The cell runs in a thread of its own with its own running loop, while the
    emulated API server is served by the test's loop."""
    path, issued = write_kubeconfig(tmp_path, str(cluster.url).rstrip("/"), ttl=600)
    cluster.authenticate = Tokens(issued=str(issued))

    def notebook_cell() -> tuple[dict[str, Any], dict[str, Any]]:
        async def cell() -> tuple[dict[str, Any], dict[str, Any]]:
            asyncio.get_running_loop()  # as in a kernel: this thread's loop is running
            client = terminal.Client.from_kubeconfig(str(path))
            first = client.get(f"/api/v1/namespaces/{NS}/configmaps")
            assert client.conn.expires_at is not None
            # expired by the client's clock: the call waits for the reload (ahead of expiry it would run in
            # the background while the valid token serves)
            monkeypatch.setattr(kubeconfig, "clock", lambda: client.conn.expires_at + 1)
            second = client.get(f"/api/v1/namespaces/{NS}/configmaps")
            return first, second

        return asyncio.run(cell())

    first, second = await asyncio.to_thread(notebook_cell)
    assert first["items"] == second["items"] == []
    assert len(issued_tokens(issued)) == 2, "loaded, then reloaded before expiry, from inside the running loop"
    assert [(a.token, a.accepted) for a in cluster.auth_log] == [(t, True) for t in issued_tokens(issued)]


async def test_the_operators_client_sends_every_request_through_the_kubeconfigs_proxy_url(
    cluster: Cluster, tmp_path: Path
) -> None:
    """clusters[].cluster.proxy-url (kubernetes_asyncio: config/kube_config.py:463-464, sent as ``proxy=`` on
    every request, client/rest.py:73,147-148 @ 36.1.0): the operator's client, like the SDK's
    (test_sdk_wire), reaches the API server only through it.  The server's name does not resolve; the
    emulator's own port plays the forward proxy (an HTTP forward proxy gets the absolute URL; aiohttp's
    server routes on its path)."""
    proxied = {"server": "http://kubernetes.invalid:6443", "proxy-url": str(cluster.url).rstrip("/")}
    path = _kubeconfig(tmp_path / "kubeconfig", proxied, {"token": "test-token"})
    kube = Kube(await asyncio.to_thread(load_connection, str(path)))
    try:
        assert await configmaps(kube) == []
    finally:
        await kube.close()
    assert [(a.path, a.accepted) for a in cluster.auth_log] == [(f"/api/v1/namespaces/{NS}/configmaps", True)]


@pytest.mark.parametrize("context", [{"cluster": "kt"}, {"cluster": "kt", "user": "nobody"}])
def test_a_context_without_a_known_user_loads_without_credentials(tmp_path: Path, context: dict[str, str]) -> None:
    """A context with no user (or one no file defines) against an https cluster: kubernetes_asyncio's loader
    fails with a TypeError there (FileOrData of a None user, config/kube_config.py:443-458 @ 36.1.0); the
    user gets a connection with no credentials instead, and the API server's answer (401) says the rest."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "current-context": "kt",
                "clusters": [{"name": "kt", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "contexts": [{"name": "kt", "context": context}],
            }
        ),
        encoding="utf-8",
    )
    conn = load_connection(str(path))
    assert (conn.server, conn.token, conn.token_file, conn.cert_path) == ("https://127.0.0.1:6443", None, None, None)


async def test_the_operator_with_kopf_works_through_the_kubeconfigs_proxy_url_alone(
    cluster: Cluster, operator: Any, config: OperatorConfig, tmp_path: Path
) -> None:
    """The whole operator (its own client and kopf's watches, logged in by handlers.login) behind a
    kubeconfig ``proxy-url``, with an API server name that does not resolve: a job is reconciled and kopf's
    peering and watches get through (kopf.ConnectionInfo.proxy_url, sent as aiohttp's ``proxy``:
    kopf/_cogs/structs/credentials.py:85 and kopf/_cogs/clients/auth.py:101-110 @ 1.45.2)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "current-context": "kt",
                "clusters": [
                    {
                        "name": "kt",
                        "cluster": {
                            "server": "http://kubernetes.invalid:6443",
                            "proxy-url": str(cluster.url).rstrip("/"),
                        },
                    }
                ],
                "contexts": [{"name": "kt", "context": {"cluster": "kt", "user": "u", "namespace": NS}}],
                "users": [{"name": "u", "user": {"token": "test-token"}}],
            }
        ),
        encoding="utf-8",
    )
    connection = await asyncio.to_thread(load_connection, str(path))
    await operator(OperatorConfig(**{**config.__dict__, "connection": connection}))
    await cluster.put_object(*FTJ, example_job(name="job-0", namespace=NS))
    await eventually(lambda: cluster.read(*PTJ, NS, "job-0"), what="the PyTorchJob of job-0")
    await eventually(
        lambda: ((cluster.read(*FTJ, NS, "job-0") or {}).get("status") or {}).get("phase") == "Pending",
        what="the status of job-0",
    )
    kopf_watches = [a for a in cluster.auth_log if a.watch and "finetunejobs" in a.path]
    assert kopf_watches and all(a.accepted for a in cluster.auth_log)


def plugin_exec(issued: Path, **env: str) -> dict[str, Any]:
    """An exec entry running the test plugin (tests/support/exec_plugin.py) with ``env``, for run_plugin."""
    from tests.support.plugin_kubeconfig import PLUGIN

    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(PLUGIN)],
        "interactiveMode": "Never",
        "env": [{"name": "KT_ISSUED", "value": str(issued)}, *({"name": k, "value": v} for k, v in env.items())],
    }


def test_a_plugins_prompt_reaches_a_notebooks_stderr_and_its_failure_carries_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ipykernel ``sys.stderr`` is the cell's stream and fd 2 the kernel's own log: handing the plugin
    fd 2 (what client-go's os.Stderr means in a terminal, exec.go:212-213 @ v0.36.3) lost a device-code prompt.
    A stderr that is no terminal now gets the plugin's stderr relayed, and a failure's message carries it."""
    cell = io.StringIO()
    monkeypatch.setattr(sys, "stderr", cell)
    issued = tmp_path / "issued"
    status = execplugin.run_plugin(plugin_exec(issued, KT_PROMPT="open https://login.example/device: ABCD"), {})
    assert status["token"] == issued_tokens(issued)[0]
    assert "open https://login.example/device: ABCD" in cell.getvalue()
    fail = tmp_path / "fail"
    fail.write_text("", encoding="utf-8")
    with pytest.raises(execplugin.ExecPluginError, match="exit code 1:\n.*identity provider is unreachable"):
        execplugin.run_plugin(plugin_exec(issued, KT_FAIL=str(fail)), {})


def test_an_env_entry_without_value_is_empty_and_one_without_name_is_refused(tmp_path: Path) -> None:
    """kubectl requires only an env entry's name (clientcmd/validation.go:318-322 @ v0.36.3): a missing value
    raised KeyError; now it is the empty string, and an entry with no name is refused naming it."""
    issued, dump = tmp_path / "issued", tmp_path / "info"
    exec_config = plugin_exec(issued, KT_EXEC_INFO_DUMP=str(dump))
    exec_config["env"].append({"name": "KT_PROMPT"})  # empty: the plugin prints no prompt
    assert execplugin.run_plugin(exec_config, {})["token"] == issued_tokens(issued)[0]
    exec_config["env"].append({"value": "x"})
    with pytest.raises(execplugin.ExecPluginError, match=r"env entry \{'value': 'x'\}.*has no name"):
        execplugin.run_plugin(exec_config, {})


def test_a_bad_certificate_from_a_plugin_is_refused_naming_the_plugin(tmp_path: Path) -> None:
    """client-go parses the pair right after the run (tls.X509KeyPair, "failed parsing client key/certificate",
    exec.go:505-520 @ v0.36.3); kubetune wrote it to files and failed only at the first TLS handshake."""
    pki = make_pki(tmp_path / "pki", users=("user-1", "user-2"))
    cert, key = pki["user-1.crt"].read_text(encoding="utf-8"), pki["user-1.key"].read_text(encoding="utf-8")
    good = execplugin.run_plugin(plugin_exec(tmp_path / "i", KT_CLIENT_CERT=cert, KT_CLIENT_KEY=key), {})
    assert good["clientCertificateData"] == cert
    other_key = pki["user-2.key"].read_text(encoding="utf-8")
    for bad_cert, bad_key in (
        (cert, other_key),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", key),
    ):
        with pytest.raises(execplugin.ExecPluginError, match=f"plugin {sys.executable}: failed parsing client key"):
            execplugin.run_plugin(plugin_exec(tmp_path / "i", KT_CLIENT_CERT=bad_cert, KT_CLIENT_KEY=bad_key), {})


def test_a_shell_plugins_background_child_holding_stdout_is_killed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell wrapper that leaves a child holding its stdout: killing only the shell at the deadline left the
    child (and the wait on stdout) behind.  A non-interactive plugin now runs in its own session and the whole
    group is killed; the message says the plugin exited but its child kept stdout open."""
    monkeypatch.setattr(execplugin, "DEADLINE_S", 0.5)
    child = tmp_path / "child.pid"
    script = tmp_path / "plugin.sh"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {child}\nexit 0\n", encoding="utf-8")
    script.chmod(0o700)
    exec_config = {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script), "interactiveMode": "Never"}
    with pytest.raises(
        execplugin.ExecPluginError, match="exited, but a child it started kept its stdout open within 0.5 s"
    ):
        execplugin.run_plugin(exec_config, {})
    pid = int(child.read_text(encoding="utf-8"))

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")  # killed, waiting for init to reap it

    asyncio.run(eventually(gone, what="the plugin's background child killed"))


def test_a_wall_clock_stepped_back_does_not_stretch_the_reload_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The back-off after a failed reload ran on the wall clock (the connection's clock): a clock stepped back
    an hour (NTP, a resumed VM) kept the plugin from running again for that hour.  It is monotonic now."""
    monkeypatch.setattr(kubeconfig, "RELOAD_BACKOFF_S", (0.05, 0.05))
    backoff = kubeconfig.ReloadBackoff()
    backoff.failed(RuntimeError("identity provider down"))
    assert not backoff.ready()
    stepped_back = time.time() - 3600
    monkeypatch.setattr(time, "time", lambda: stepped_back)
    monkeypatch.setattr(kubeconfig, "clock", lambda: stepped_back)
    asyncio.run(eventually(backoff.ready, what="the back-off over, 0.05 s later"))
    assert backoff.remaining() == 0.0


@pytest.mark.parametrize("which", ["operator", "sdk"])
async def test_a_slow_plugin_ahead_of_expiry_does_not_hold_calls_whose_credentials_are_valid(
    cluster: Cluster, tmp_path: Path, which: str
) -> None:
    """A reload ahead of expiry ran the plugin inside the reload lock: every call waited for it (the operator's
    failed after reload_timeout_s, one after another; the SDK's blocked) although the token in hand was good.
    client-go runs the plugin only once its credentials have expired (``getCreds``, exec.go:386-391, :401-414
    @ v0.36.3).  Now such a reload runs in the background and calls go on with the valid token; once it has
    expired, calls get the new one."""
    ttl = 600
    clock = ForwardClock(tmp_path / "clock")
    hang = tmp_path / "hang"
    kube, issued, call = await one_client(cluster, tmp_path, which, clock, ttl, reload_timeout_s=0.3, KT_HANG=str(hang))

    def runs() -> int:
        return Path(f"{hang}.runs").read_text(encoding="utf-8").count("run") if Path(f"{hang}.runs").exists() else 0

    try:
        hang.write_text("", encoding="utf-8")  # the next run of the plugin waits (a slow login)
        clock.advance(ttl - 30)  # inside the reload window (the last fifth), the token still valid
        # a convergence deadline: before, the SDK's calls waited for the plugin (until the hang file goes)
        await asyncio.wait_for(asyncio.gather(*(call() for _ in range(5))), scaled(20))
        first = issued_tokens(issued)[0]
        assert [(a.token, a.accepted) for a in cluster.auth_log] == [(first, True)] * 5
        await eventually(lambda: runs() == 2, what="the load, then one reload started in the background")
        hang.unlink()  # the plugin answers
        await eventually(lambda: len(issued_tokens(issued)) == 2, what="the background reload's token")
        clock.advance(31)  # the first token has expired
        await call()
        assert cluster.auth_log[-1].accepted and cluster.auth_log[-1].token == issued_tokens(issued)[1]
        assert runs() == 2, "the load, then one plugin run for all those calls"
    finally:
        hang.unlink(missing_ok=True)
        await kube.close()


def test_a_v1_plugin_without_interactive_mode_and_an_unknown_api_version_are_refused(tmp_path: Path) -> None:
    """kubectl defaults interactiveMode (to IfAvailable) only for v1beta1 (clientcmd api/v1/defaults.go:27-36
    @ v0.36.3) and refuses a v1 exec entry without it (validation.go:323-330); client-go accepts only the
    v1 and v1beta1 ExecCredential versions (exec.go:76-79, :171-174).  kubetune ran both."""
    issued = tmp_path / "issued"
    exec_config = plugin_exec(issued)
    del exec_config["interactiveMode"]
    with pytest.raises(execplugin.ExecPluginError, match="interactiveMode must be specified"):
        execplugin.run_plugin(exec_config, {})
    exec_config["apiVersion"] = "client.authentication.k8s.io/v1beta1"  # defaulted to IfAvailable
    assert execplugin.run_plugin(exec_config, {})["token"] == issued_tokens(issued)[0]
    exec_config["apiVersion"] = "client.authentication.k8s.io/v2"
    with pytest.raises(execplugin.ExecPluginError, match="invalid apiVersion 'client.authentication.k8s.io/v2'"):
        execplugin.run_plugin(exec_config, {})
    assert len(issued_tokens(issued)) == 1, "refused before the plugin ran"


def test_a_client_certificate_without_its_key_does_not_silence_the_exec_plugin(tmp_path: Path) -> None:
    """client-go skips the plugin only for a user with cert auth, a certificate AND its key
    (HasCertAuth, transport/config.go:115-117; exec.go:319-321 @ v0.36.3): a certificate alone left kubetune
    with neither the plugin's identity nor a usable certificate."""
    pki = make_pki(tmp_path / "pki", users=("user-1",))
    path, issued = write_kubeconfig(tmp_path, "http://127.0.0.1:1", ttl=600)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["users"][0]["user"]["client-certificate"] = str(pki["user-1.crt"])
    path.write_text(json.dumps(doc), encoding="utf-8")
    conn = load_connection(str(path))
    assert conn.token == issued_tokens(issued)[0], "the plugin ran and its token is used"


def test_only_the_current_contexts_user_and_cluster_data_are_written_to_files(tmp_path: Path) -> None:
    """Every user's and cluster's *-data (other people's client keys included) was written to kubetune's
    private files on each load; only the current context's are read (kubernetes_asyncio's loader takes
    self._user and self._cluster, config/kube_config.py:213-250, :429-464 @ 36.1.0)."""
    pki = make_pki(tmp_path / "pki", users=("user-1", "user-2"))

    def b64(name: str) -> str:
        return base64.standard_b64encode(pki[name].read_bytes()).decode()

    def user(n: int) -> dict[str, Any]:
        return {"client-certificate-data": b64(f"user-{n}.crt"), "client-key-data": b64(f"user-{n}.key")}

    config = {
        "clusters": [
            {"name": "a", "cluster": {"server": "https://127.0.0.1:1", "certificate-authority-data": b64("ca.crt")}},
            {
                "name": "b",
                "cluster": {"server": "https://127.0.0.1:2", "certificate-authority-data": b64("user-2.crt")},
            },
        ],
        "users": [{"name": "u1", "user": user(1)}, {"name": "u2", "user": user(2)}],
        "contexts": [
            {"name": "a", "context": {"cluster": "a", "user": "u1"}},
            {"name": "b", "context": {"cluster": "b", "user": "u2"}},
        ],
        "current-context": "a",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config), encoding="utf-8")
    conn = load_connection(str(path))
    assert conn.key_path and Path(conn.key_path).read_bytes() == pki["user-1.key"].read_bytes()
    written = private_contents(Path(conn.key_path).parent)
    assert pki["user-2.key"].read_bytes() not in written, "the other user's key was never written"
    assert pki["user-2.crt"].read_bytes() not in written, "nor the other cluster's CA or user's certificate"
