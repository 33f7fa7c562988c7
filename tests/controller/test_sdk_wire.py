"""The SDK's transport against answers the emulator does not give: byte-exact Status bodies of the real API
server (a missing namespace, a 422 with causes), a watch stream cut mid-chunk, redirects to another host,
a kubeconfig ``proxy-url``, and an exec plugin that hands out a new client certificate.  A small
standard-library HTTP server in a thread plays each; every answer cites where the real one comes from."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled

from tests.support.certs import make_pki
from tests.support.harness import example_job
from tests.support.httpserve import serving

import kubetune

NS = "team-a"
JOB_PATH = f"/apis/kubetune.io/v1alpha1/namespaces/{NS}/finetunejobs/qwen-lora"
DISCOVERY = {
    "kind": "APIResourceList",
    "groupVersion": "kubetune.io/v1alpha1",
    "resources": [{"name": "finetunejobs", "namespaced": True, "kind": "FineTuneJob"}],
}

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


def stored_job(phase: str, rv: str) -> dict[str, Any]:
    doc = example_job("qwen-lora", NS)
    doc["metadata"].update(uid="u-1", resourceVersion=rv, generation=1)
    doc["status"] = {"phase": phase, "observedGeneration": 1}
    return doc


def reply(
    h: http.server.BaseHTTPRequestHandler, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


@contextmanager
def serve(handle: Handler, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """An HTTP(S) server on 127.0.0.1 whose every request goes to ``handle``; yields its URL."""

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            handle(self)

        do_PATCH = do_DELETE = do_POST = do_GET

    with serving(H, tls) as url:
        yield url


def kubeconfig(path: Path, server: str, user: str = "{token: s3cret-token}", cluster_extra: str = "") -> str:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"{cluster_extra}}}}}]
users: [{{name: u, user: {user}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: {NS}}}}}]
current-context: c
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture(autouse=True)
def _no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(var, raising=False)


# --- typed errors from the real Status bodies ----------------------------------------------------------


def test_creating_in_a_namespace_that_does_not_exist_says_so_not_job_not_found(tmp_path: Path) -> None:
    """The NamespaceLifecycle admission plugin answers a write into a missing namespace with NotFound for the
    namespace (k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go:163-169, errors.NewNotFound:
    k8s.io/apimachinery/pkg/api/errors/errors.go:145-157; Kubernetes 1.36 vendored in
    openshift/microshift @ 8e16b12)."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if h.path == "/apis/kubetune.io/v1alpha1":
            return reply(h, 200, DISCOVERY)
        reply(
            h,
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": 'namespaces "team-a" not found',
                "reason": "NotFound",
                "details": {"name": NS, "kind": "namespaces"},
                "code": 404,
            },
        )

    with serve(handle) as url:
        client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
        with pytest.raises(kubetune.KubetuneError) as err:
            client.create(kubetune.FineTuneJob.from_api(example_job("qwen-lora", NS)))
    assert not isinstance(err.value, kubetune.JobNotFound), (
        "the job was being created: the namespace is what is missing"
    )
    assert err.value.status == 404 and 'namespaces "team-a" not found' in err.value.message
    assert "kubectl create namespace team-a" in err.value.hint


def test_a_422_names_each_refused_field_as_a_problem(tmp_path: Path) -> None:
    """errors.NewInvalid puts one cause (field, message) per refused field in details.causes
    (k8s.io/apimachinery/pkg/api/errors/errors.go:284-310)."""
    causes = [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 0: spec.lora.rank in body should be greater than or equal to 1",
            "field": "spec.lora.rank",
        },
        {"reason": "FieldValueForbidden", "message": "Forbidden: spec.method is immutable", "field": "spec.method"},
    ]
    message = (
        'FineTuneJob.kubetune.io "qwen-lora" is invalid: [spec.lora.rank: Invalid value: 0: ..., spec.method: '
        'Forbidden: spec.method is immutable]'
    )

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        reply(
            h,
            422,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": "Invalid",
                "details": {"name": "qwen-lora", "group": "kubetune.io", "kind": "FineTuneJob", "causes": causes},
                "code": 422,
            },
        )

    with serve(handle) as url:
        client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
        with pytest.raises(kubetune.InvalidSpec) as err:
            client.create(kubetune.FineTuneJob.from_api(example_job("qwen-lora", NS)))
    assert err.value.status == 422
    assert err.value.problems == [f"spec.lora.rank: {causes[0]['message']}", f"spec.method: {causes[1]['message']}"]


# --- watch: a stream cut by a proxy -------------------------------------------------------------------


def test_wait_survives_a_watch_stream_cut_mid_chunk(tmp_path: Path) -> None:
    """A proxy or load balancer that drops the connection in the middle of a chunk makes http.client raise
    IncompleteRead (an HTTPException, not an OSError) while the watch is read: wait() watches again from
    the last resourceVersion and sees the job succeed."""
    watches: list[str] = []

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path == JOB_PATH:
            return reply(h, 200, stored_job("Running", "10"))
        if "watch=true" not in h.path:
            return reply(h, 404, {"kind": "Status", "code": 404, "message": "unexpected " + h.path})
        watches.append(h.path)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if len(watches) == 1:
            h.wfile.write(b"400\r\n{\"type\":\"MODI")  # a chunk announced as 1024 bytes, then the connection is gone
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        event = json.dumps({"type": "MODIFIED", "object": stored_job("Succeeded", "11")}).encode() + b"\n"
        h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))

    with serve(handle) as url:
        client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
        final = client.wait("qwen-lora", timeout=scaled(60))
    assert final.status is not None and final.status.phase == "Succeeded"
    assert len(watches) == 2 and all("resourceVersion=10" in w for w in watches), "resumed from the last version seen"


def test_a_followed_log_cut_by_a_proxy_is_a_kubetune_error_not_a_raw_http_exception(tmp_path: Path) -> None:
    """logs(follow=True) holds one stream for as long as the pod runs; a proxy that cuts it inside a chunk
    raised http.client.IncompleteRead out of the SDK (and a traceback out of kubetune logs -f)."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path == JOB_PATH:
            job = stored_job("Running", "10")
            job["status"]["job"] = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "qwen-lora"}
            return reply(h, 200, job)
        if h.path.startswith(f"/api/v1/namespaces/{NS}/pods?"):
            return reply(
                h,
                200,
                {
                    "kind": "PodList",
                    "items": [
                        {"metadata": {"name": "qwen-lora-master-0", "creationTimestamp": "2026-12-07T00:00:00Z"}}
                    ],
                },
            )
        if h.path.startswith(f"/api/v1/namespaces/{NS}/pods/qwen-lora-master-0/log?"):
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.wfile.write(b"6\r\nstep 1\r\n" + b"400\r\nstep 2")  # then the connection is gone
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        reply(h, 404, {"kind": "Status", "code": 404, "message": "unexpected " + h.path})

    with serve(handle) as url:
        client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
        lines: list[str] = []
        with pytest.raises(kubetune.KubetuneError) as err:
            for line in client.logs("qwen-lora", follow=True):
                lines.append(line)
    assert (
        "log stream of pod team-a/qwen-lora-master-0 was cut" in err.value.message
        and "IncompleteRead" in err.value.message
    )


# --- credentials: redirects, proxies, rotated client certificates -------------------------------------


def test_a_redirect_to_another_host_does_not_carry_the_bearer_token(tmp_path: Path) -> None:
    """Go's HTTP client (kubectl's) keeps Authorization on a redirect only to the same host or a subdomain
    (net/http/client.go shouldCopyHeaderOnRedirect); urllib would send it anywhere.  E.g. a gateway in front
    of the API server that sends the client to a login page on another host."""
    seen: dict[str, str | None] = {}

    def elsewhere(h: http.server.BaseHTTPRequestHandler) -> None:
        seen[h.path] = h.headers.get("Authorization")
        reply(h, 200, stored_job("Running", "10"))

    with serve(elsewhere) as other:
        targets = {"/other-host": other.replace("127.0.0.1", "localhost") + "/login"}

        def api(h: http.server.BaseHTTPRequestHandler) -> None:
            seen[h.path] = h.headers.get("Authorization")
            if h.path in targets:
                h.send_response(302)
                h.send_header("Location", targets[h.path])
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            reply(h, 200, stored_job("Running", "10"))

        with serve(api) as url:
            targets["/same-host"] = url + "/landing"
            client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
            for path in ("/other-host", "/same-host"):
                client._http.get(path)
    assert seen["/other-host"] == seen["/same-host"] == "Bearer s3cret-token"
    assert seen["/login"] is None, "the token went to another host"
    assert seen["/landing"] == "Bearer s3cret-token", "a redirect on the same host keeps it, as kubectl's does"


def test_the_kubeconfigs_proxy_url_carries_every_request(tmp_path: Path) -> None:
    """clusters[].cluster.proxy-url (read by kubernetes_asyncio's loader: config/kube_config.py:463-464 @ 36.1.0):
    kubectl sends that cluster's requests through it.  Here the API server's name does not even resolve:
    only the proxy can reach it."""
    proxied: list[str] = []

    def proxy(h: http.server.BaseHTTPRequestHandler) -> None:
        proxied.append(h.path)  # a forward proxy gets the absolute URL
        if h.path == "http://kubernetes.invalid:6443" + JOB_PATH:
            return reply(h, 200, stored_job("Running", "10"))
        reply(h, 502, {"message": "bad gateway"})

    with serve(proxy) as url:
        config = kubeconfig(tmp_path / "kc", "http://kubernetes.invalid:6443", cluster_extra=f', proxy-url: "{url}"')
        job = kubetune.Client(kubeconfig=config).get("qwen-lora")
    assert job.name == "qwen-lora" and proxied == ["http://kubernetes.invalid:6443" + JOB_PATH]


def test_an_exec_plugins_new_client_certificate_is_used_after_a_401(tmp_path: Path) -> None:
    """An exec plugin may answer with a client certificate (ExecCredential status.clientCertificateData /
    clientKeyData; teleport's tsh does).  When the API server refuses the old one (401), the SDK runs the
    plugin again and must present the new certificate, not the TLS context built for the first."""
    files = make_pki(tmp_path)  # ca.crt, server and user-1/user-2 certificates, in tmp_path
    runs = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        f"""import json, pathlib
runs = pathlib.Path({str(runs)!r})
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
user = "user-1" if n == 1 else "user-2"
d = pathlib.Path({str(tmp_path)!r})
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "status": {{"clientCertificateData": (d / f"{{user}}.crt").read_text(),
               "clientKeyData": (d / f"{{user}}.key").read_text()}}}}))
""",
        encoding="utf-8",
    )
    users: list[str] = []

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        peer = h.connection.getpeercert() or {}  # type: ignore[attr-defined]
        cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        users.append(cn)
        if cn != "user-2":  # user-1's certificate was revoked: 401, as for an expired credential
            return reply(
                h,
                401,
                {
                    "kind": "Status",
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                {"Connection": "close"},
            )
        reply(h, 200, stored_job("Running", "10"), {"Connection": "close"})

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files["ca.crt"]))
    tls.load_cert_chain(str(files["server.crt"]), str(files["server.key"]))
    tls.verify_mode = ssl.CERT_REQUIRED
    with serve(handle, tls) as url:
        user = (
            f"{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {sys.executable}, args: "
            f"[{plugin}], interactiveMode: Never}}}}"
        )
        config = kubeconfig(
            tmp_path / "kc", url, user=user, cluster_extra=f', certificate-authority: "{files["ca.crt"]}"'
        )
        job = kubetune.Client(kubeconfig=config).get("qwen-lora")
    assert job.name == "qwen-lora" and users == ["user-1", "user-2"]
