"""The SDK's transport against answers the emulator does not give: byte-exact Status bodies of the real API
server (a missing namespace, a 422 with causes), a watch stream cut mid-chunk, redirects to another host,
a kubeconfig ``proxy-url``, and an exec plugin that hands out a new client certificate.  A small
standard-library HTTP server in a thread plays each; every answer cites where the real one comes from."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import example_job

import kubetune

NS = "team-a"
JOB_PATH = f"/apis/kubetune.io/v1alpha1/namespaces/{NS}/finetunejobs/qwen-lora"
DISCOVERY = {"kind": "APIResourceList", "groupVersion": "kubetune.io/v1alpha1", "resources": [{"name": "finetunejobs", "namespaced": True, "kind": "FineTuneJob"}]}

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


def stored_job(phase: str, rv: str) -> dict[str, Any]:
    doc = example_job("qwen-lora", NS)
    doc["metadata"].update(uid="u-1", resourceVersion=rv, generation=1)
    doc["status"] = {"phase": phase, "observedGeneration": 1}
    return doc


def reply(h: http.server.BaseHTTPRequestHandler, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)


# --- typed errors from the real Status bodies ----------------------------------------------------------


def test_creating_in_a_namespace_that_does_not_exist_says_so_not_job_not_found(tmp_path: Path) -> None:
    """The NamespaceLifecycle admission plugin answers a write into a missing namespace with NotFound for the
    namespace (k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go:163-169, errors.NewNotFound:
    k8s.io/apimachinery/pkg/api/errors/errors.go:145-157; Kubernetes 1.36 vendored in openshift/microshift @ 8e16b12)."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if h.path == "/apis/kubetune.io/v1alpha1":
            return reply(h, 200, DISCOVERY)
        reply(h, 404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": 'namespaces "team-a" not found', "reason": "NotFound", "details": {"name": NS, "kind": "namespaces"}, "code": 404})

    with serve(handle) as url:
        client = kubetune.Client(kubeconfig=kubeconfig(tmp_path / "kc", url))
        with pytest.raises(kubetune.KubetuneError) as err:
            client.create(kubetune.FineTuneJob.from_api(example_job("qwen-lora", NS)))
    assert not isinstance(err.value, kubetune.JobNotFound), "the job was being created: the namespace is what is missing"
    assert err.value.status == 404 and 'namespaces "team-a" not found' in err.value.message
    assert "kubectl create namespace team-a" in err.value.hint


def test_a_422_names_each_refused_field_as_a_problem(tmp_path: Path) -> None:
    """errors.NewInvalid puts one cause (field, message) per refused field in details.causes
    (k8s.io/apimachinery/pkg/api/errors/errors.go:284-310)."""
    causes = [
        {"reason": "FieldValueInvalid", "message": "Invalid value: 0: spec.lora.rank in body should be greater than or equal to 1", "field": "spec.lora.rank"},
        {"reason": "FieldValueForbidden", "message": "Forbidden: spec.method is immutable", "field": "spec.method"},
    ]
    message = 'FineTuneJob.kubetune.io "qwen-lora" is invalid: [spec.lora.rank: Invalid value: 0: ..., spec.method: Forbidden: spec.method is immutable]'

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        reply(h, 422, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": "Invalid", "details": {"name": "qwen-lora", "group": "kubetune.io", "kind": "FineTuneJob", "causes": causes}, "code": 422})

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
        final = client.wait("qwen-lora", timeout=60)
    assert final.status is not None and final.status.phase == "Succeeded"
    assert len(watches) == 2 and all("resourceVersion=10" in w for w in watches), "resumed from the last version seen"


# --- credentials: redirects, proxies, rotated client certificates -------------------------------------


