"""The emulated API server (tests/support/apiserver/emulator.py) made fit for the real helm and kubectl.

`Cluster` already answers resource requests with the API server's semantics. The real helm 4.1.4
and kubectl 1.37 binaries need four more things a real kube-apiserver has, added here:

* ``/version`` says v1.36.0 (kmock says v1.26, below the chart's ``kubeVersion``);
* core discovery names its group version ``v1`` (kmock writes ``/v1``, which client-go's
  RESTMapper, k8s.io/client-go/restmapper/discovery.go GetAPIGroupResources, never matches);
* ``/openapi/v3``: the discovery document and, per group version, the PATCH operations with the
  ``fieldValidation`` query parameter. Helm builds its objects with field validation "Strict";
  k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go then leaves validation to the
  server when the PATCH operation of the object's kind lists that parameter (as every
  Kubernetes >= 1.27 does). This emulator does NOT validate fields: schemas are checked
  elsewhere (tests/api, kubernetes-validate);
* request bodies in protobuf (``application/vnd.kubernetes.protobuf``): client-go's typed
  clientset sends them, e.g. Helm's release Secrets (pkg/storage/driver/secrets.go). Only what
  a Secret or ConfigMap carries is decoded (metadata name/namespace/resourceVersion/labels/
  annotations, data, type), following k8s.io/api/core/v1/generated.proto;
* a created CustomResourceDefinition serves its resource, as the apiextensions-apiserver does
  once the CRD is Established (here at once); a deleted one stops serving it and its objects go.

Not modelled: server-side apply field ownership and its conflicts (a second manager applying a
different value to an owned field is refused by a real server, accepted here).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from multidict import CIMultiDict

from tests.support.apiserver.emulator import (
    ApiError,
    Cluster,
    Obj,
    ResKey,
    list_options_errors,
    options_invalid,
    query_bool,
)

PROTOBUF = "application/vnd.kubernetes.protobuf"
_NAMESPACE_URL = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")

# The kinds a `helm install` of charts/kubetune writes, plus what kubectl and helm read.
BUILTIN_KINDS = [
    ("v1", "namespaces", "Namespace", False, True),
    ("v1", "secrets", "Secret", True, False),
    ("v1", "configmaps", "ConfigMap", True, False),
    ("v1", "serviceaccounts", "ServiceAccount", True, False),
    ("v1", "services", "Service", True, True),
    ("v1", "pods", "Pod", True, True),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True),
    ("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, False),
    ("v1", "events", "Event", True, False),
    ("apps/v1", "deployments", "Deployment", True, True),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False, False),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False, False),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True, False),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True, False),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
]


# --- protobuf: just enough of the wire format for Secrets and ConfigMaps ---------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, Any]]:
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        yield number, value


def _entries(items: list[bytes]) -> dict[str, bytes]:
    out = {}
    for item in items:
        entry = dict(_fields(item))
        out[entry.get(1, b"").decode()] = entry.get(2, b"")
    return out


def _object_meta(data: bytes) -> Obj:
    meta: Obj = {}
    labels: list[bytes] = []
    annotations: list[bytes] = []
    names = {1: "name", 2: "generateName", 3: "namespace", 6: "resourceVersion"}
    for number, value in _fields(data):
        if number in names and value:  # proto3 strings: empty means unset
            meta[names[number]] = value.decode()
        elif number == 11:
            labels.append(value)
        elif number == 12:
            annotations.append(value)
    if labels:
        meta["labels"] = {k: v.decode() for k, v in _entries(labels).items()}
    if annotations:
        meta["annotations"] = {k: v.decode() for k, v in _entries(annotations).items()}
    return meta


def decode_protobuf(body: bytes) -> Obj | None:
    """A protobuf-encoded Secret or ConfigMap (runtime.Unknown envelope) as its JSON form; None
    for DeleteOptions (the emulator's deletes take no options: no cascading, no grace period)."""
    if body[:4] != b"k8s\x00":
        raise ApiError(415, "UnsupportedMediaType", "protobuf body without the k8s envelope")
    envelope = dict(_fields(body[4:]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    kind = type_meta.get(2, b"").decode()
    if kind == "DeleteOptions":
        return None
    if kind not in ("Secret", "ConfigMap"):
        raise ApiError(415, "UnsupportedMediaType", f"protobuf {kind or 'object'} is not emulated: send JSON")
    obj: Obj = {"apiVersion": type_meta.get(1, b"v1").decode(), "kind": kind}
    data: list[bytes] = []
    for number, value in _fields(envelope.get(2, b"")):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            data.append(value)
        elif number == 3 and kind == "Secret" and value:
            obj["type"] = value.decode()
    if data:
        entries = _entries(data)
        if kind == "Secret":
            obj["data"] = {k: base64.b64encode(v).decode() for k, v in entries.items()}
        else:
            obj["data"] = {k: v.decode() for k, v in entries.items()}
    return obj


def _gv(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _openapi_path(gv: str) -> str:
    return f"apis/{gv}" if "/" in gv else f"api/{gv}"


@attrs.define(kw_only=True)
class HelmCluster(Cluster):
    """`Cluster` plus what helm and kubectl need (see the module doc)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for api_version, plural, kind, namespaced, has_status in BUILTIN_KINDS:
            self.declare(api_version, plural, kind, namespaced=namespaced, has_status=has_status)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.content_type == PROTOBUF:
            headers = CIMultiDict(raw_request.headers)
            headers["Content-Type"] = "application/json"
            raw_request = raw_request.clone(headers=headers)
            body = await raw_request.read()
            try:
                obj = decode_protobuf(body) if body else None
                decoded = json.dumps(obj).encode() if obj is not None else b""
            except ApiError as exc:
                return self._error(exc)
            raw_request._read_bytes = decoded  # the JSON body kmock then parses
        if raw_request.path.rstrip("/") == "/api/v1/namespaces":
            # kmock cannot parse the namespaces collection (parsing.py parse_path reads the segment after
            # "namespaces" as a namespace, and there is none): served here, before kmock, with the same checks.
            data = await raw_request.read()
            if (refused := self._unauthorized(raw_request)) is not None:
                return refused
            # From the bytes read: after read(), aiohttp's can_read_body is False (the payload is at EOF), so a
            # POST of a namespace (kubectl create namespace) reached _namespace without its body and got 405.
            body = json.loads(data) if data else None
            return await self._namespace(raw_request, None, body, dict(raw_request.query))
        return await super().__call__(raw_request)

    async def _serve_server_version(self, request: Any) -> Any:
        return {"major": "1", "minor": "36", "gitVersion": "v1.36.0", "platform": "linux/amd64"}

    async def _serve_version(self, request: Any) -> Any:
        doc = await super()._serve_version(request)
        if isinstance(doc, dict) and str(doc.get("groupVersion", "")).startswith("/"):
            doc["groupVersion"] = doc["groupVersion"][1:]
        return doc

    def _openapi_v3(self, path: str) -> Obj | None:
        gvs = sorted({_gv(g, v) for g, v, _ in self.kinds})
        if path == "/openapi/v3":
            return {
                "paths": {_openapi_path(gv): {"serverRelativeURL": f"/openapi/v3/{_openapi_path(gv)}"} for gv in gvs}
            }
        wanted = path.removeprefix("/openapi/v3/").removeprefix("apis/").removeprefix("api/")
        paths = {}
        for (group, version, plural), kind in self.kinds.items():
            if _gv(group, version) != wanted:
                continue
            prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
            scope = "/namespaces/{namespace}" if kind.namespaced else ""
            paths[f"{prefix}{scope}/{plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            return None
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.36.0"},
            "paths": paths,
            "components": {},
        }

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:  # type: ignore[override]
        raw = request._raw_request
        if raw is not None and raw.path.startswith("/openapi/v3"):
            doc = self._openapi_v3(raw.path)
            if doc is None:
                return self._error(ApiError(404, "NotFound", f"{raw.path} not found"))
            return aiohttp.web.json_response(doc)
        if raw is not None and (match := _NAMESPACE_URL.match(raw.path)):
            return await self._namespace(raw, match.group(1), request.data, dict(request.params))
        return await super()._handle(request)

    async def _namespace(
        self, raw: Any, name: str | None, body: Any, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        """/api/v1/namespaces[/NAME]: kmock reads NAME as a namespace, not as the object's name."""
        res: ResKey = ("", "v1", "namespaces")
        method = raw.method.upper()
        try:
            if method == "PATCH" and name:
                obj, status = await self._patch((res, None, name), raw.content_type, body, None, params)
                return aiohttp.web.json_response(obj, status=status)
            if method == "GET" and name:  # a named GET ignores watch (requestinfo.go:223-245 @ v0.36.3)
                return aiohttp.web.json_response(self._fetch((res, None, name)))
            if method == "GET":  # a list, or a watch with watch=true, with the options checked as for any kind
                watching = query_bool(params, "watch")
                if errors := list_options_errors(params, watching):
                    raise options_invalid("ListOptions", errors)
                if watching:
                    return await self._watch(raw, res, None, params)
                return aiohttp.web.json_response(self._list(res, None, params))
            if method == "POST" and not name and isinstance(body, dict):
                return aiohttp.web.json_response(await self._create(res, None, body, keep_status=True), status=201)
            if method == "DELETE" and name:
                return aiohttp.web.json_response(await self._delete((res, None, name)))
            raise ApiError(405, "MethodNotAllowed", f"{method} on namespaces is not emulated")
        except ApiError as exc:
            return self._error(exc)

    async def _create(self, res: ResKey, ns: str | None, body: Obj, *, keep_status: bool, **fields: Any) -> Obj:
        if res == ("", "v1", "namespaces"):
            # Every new namespace is Active, however it was created (POST or a server-side apply): the
            # namespace strategy's PrepareForCreate sets the status (kubernetes pkg/registry/core/namespace/
            # strategy.go; read through the code search, not at a pinned tag).
            body, keep_status = {**body, "status": {"phase": "Active"}}, True
        created = await super()._create(res, ns, body, keep_status=keep_status, **fields)
        if res[2] == "customresourcedefinitions":
            spec = created["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    self.declare(
                        f"{spec['group']}/{version['name']}",
                        spec["names"]["plural"],
                        spec["names"]["kind"],
                        namespaced=spec["scope"] == "Namespaced",
                        has_status="status" in (version.get("subresources") or {}),
                    )
        return created

    async def _delete(self, key: Any) -> Obj:
        deleted = await super()._delete(key)
        if key[0][2] == "customresourcedefinitions" and key not in self.store:
            spec = deleted["spec"]
            for version in spec["versions"]:
                res = (spec["group"], version["name"], spec["names"]["plural"])
                async with self._cond():
                    for obj_key in [k for k in self.store if k[0] == res]:
                        self._commit(obj_key, self.store[obj_key], "DELETED")
                self.kinds.pop(res, None)
                self.resources.pop(f"{spec['group']}/{version['name']}/{spec['names']['plural']}", None)
        return deleted


class ServedCluster:
    """A HelmCluster on 127.0.0.1 in its own thread and event loop, so that blocking helm and
    kubectl subprocesses can talk to it from the test; ``kubeconfig`` points them at it."""

    def __init__(self, workdir: Path) -> None:
        self.cluster = HelmCluster()
        self.workdir = workdir
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="helm-api", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.cluster, kmock.Server(self.cluster, host="127.0.0.1"):
            self.url = str(self.cluster.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServedCluster:
        self._thread.start()
        assert self._ready.wait(30), "the emulated API server did not start"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: emulator, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: admin, user: {token: test-token}}]\n"
            "contexts: [{name: emulator, context: {cluster: emulator, user: admin, namespace: default}}]\n"
            "current-context: emulator\n",
            encoding="utf-8",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def read(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        return self.cluster.read(api_version, plural, namespace, name)

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine of the cluster (e.g. ``mutate``, as a kubelet would) on its loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Obj]:
        return self.cluster.objects(api_version, plural, namespace)

    def env(self) -> dict[str, str]:
        """Environment for helm/kubectl: this cluster, and caches inside the test's folder."""
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm-config"),
            "HELM_DATA_HOME": str(self.workdir / "helm-data"),
        }


@contextmanager
def served_cluster(workdir: Path) -> Iterator[ServedCluster]:
    with ServedCluster(workdir) as served:
        yield served
