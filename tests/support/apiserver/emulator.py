"""A realistic Kubernetes API layer on top of kmock, for the operator's integration tests.

kmock 0.8 gives an HTTP server on loopback, request parsing, request recording
and API discovery.  Its stateful emulator is too naive for an operator test
(see /work/shared/notes/environment-facts.md): no uid/resourceVersion/
generation, 200 on create, no status subresource, watches that replay stale
ADDED events, no selectors, no server-side apply, 500 for a failed JSON-patch
``test``.  An operator "passing" against that proves little, so this module
keeps kmock's server and discovery (``KubernetesScaffold``) and answers every
resource request from its own store with the API server's semantics:

* uid, resourceVersion (one global counter), generation (bumped on spec
  changes only), creationTimestamp, namespace taken from the URL, 201 on create;
* 409 AlreadyExists on a duplicate create, 409 Conflict on a stale
  ``metadata.resourceVersion`` in a patch, 404 NotFound, 422 on a failed
  JSON-patch ``test``;
* a real ``/status`` subresource: writes to the main resource ignore status,
  writes to ``/status`` change nothing else;
* merge patch, JSON patch, strategic merge (treated as merge: the operator sends
  none) and real server-side apply (tests/support/apiserver/ssa.py, after
  structured-merge-diff): ``metadata.managedFields`` kept on every write (Apply
  entries for appliers; Update entries, manager from ``fieldManager`` or the
  User-Agent, for everything else), list-map/set/atomic merges by the kind's
  schema (the installed CRD, the Kubernetes OpenAPI for built-in kinds), fields
  an applier stopped sending removed unless another manager owns them, 409
  Conflict naming the managers and fields without ``force``, ownership taken
  with it;
* finalizers and deletionTimestamp; garbage collection only when ``garbage_collect`` is set
  (background propagation: see ``_collect_garbage``);
* list with labelSelector/fieldSelector and a list resourceVersion; watch from
  a resourceVersion replays only newer events (410 Gone below the compaction
  point), without one it starts with ADDED for current objects; a watch's
  selectors turn a change that makes an object match into ADDED and one that
  makes it stop matching into DELETED, as the real server does (``watch_event``);
* ``pods/log`` with ``tailLines`` from lines the test appends;
* a CustomResourceDefinition is created or updated only if it passes
  apiextensions' creation-time checks (``_admit``, tests/support/apiserver/crd.py);
* fault injection (status code for the next N matching calls), dropping every
  open watch, and a record of every call as an RBAC tuple;
* bearer-token authentication when ``authenticate`` is set: a request without a
  token the authenticator accepts (unknown or expired) is answered 401
  Unauthorized with a Status, before anything else, discovery included, as
  k8s.io/apiserver pkg/endpoints/filters/authentication.go does.  Served over
  TLS with a client CA (``serve_tls``), a verified client certificate is a user
  too (``ClientCertificates``, the x509 authenticator).  A watch that
  is already open stays open when its token expires (the real server checks
  credentials once per request).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import datetime
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from tests.support.apiserver import ssa, validation
from tests.support.apiserver.crd import creation_errors

Obj = dict[str, Any]
ResKey = tuple[str, str, str]  # group, version, plural
ObjKey = tuple[ResKey, str | None, str]  # resource, namespace, name


@dataclass(frozen=True, order=True)
class ApiCall:
    """One request as RBAC sees it."""

    group: str
    version: str
    resource: str
    verb: str
    namespaced: bool
    subresource: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "verb": self.verb,
            "namespaced": self.namespaced,
            "subresource": self.subresource,
        }


@dataclass(frozen=True)
class Kind:
    kind: str
    namespaced: bool = True
    has_status: bool = True


@dataclass
class Fault:
    """Answer the next ``times`` matching calls with ``status`` instead of serving them."""

    verb: str
    resource: str
    status: int
    times: int = 1
    subresource: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    res: ResKey
    type: str
    obj: Obj
    prev: Obj | None = None
    """The stored object before this change (None for a create): a watch's selectors filter both the new and
    the previous state (watch_event below)."""


def watch_event(event: WatchEvent, passes: Callable[[Obj], bool]) -> tuple[str, Obj] | None:
    """What a watch whose selectors ``passes`` tests sends for one stored change, as the API server decides it
    from the new and the previous object (k8s.io/apiserver @ v0.36.3: the watch cache's
    pkg/storage/cacher/cache_watcher.go:374-398 convertToWatchEvent, the previous object kept by
    watch_cache.go:311-320; without the cache, pkg/storage/etcd3/watcher.go:595-637 transform with the
    previous object decoded at the event's revision, 722-733):

    * the new object passes and the previous did not (or there was none): ADDED with the new object;
    * both pass: MODIFIED with the new object;
    * the previous passed and the new does not, or the change is a deletion: DELETED with the *previous*
      object at the event's resourceVersion (cache_watcher.go:389-397, watcher.go:595-602 and 632-636);
    * neither passes: nothing."""
    new_passes = event.type != "DELETED" and passes(event.obj)
    old_passes = event.prev is not None and passes(event.prev)
    if new_passes:
        return ("MODIFIED" if old_passes else "ADDED"), event.obj
    if old_passes:
        assert event.prev is not None
        gone = copy.deepcopy(event.prev)
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return "DELETED", gone
    return None


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details


def query_bool(params: Any, key: str) -> bool:
    """A boolean query parameter (watch, follow, force, sendInitialEvents) as the API server reads it:
    absent is false; "0" and "false" in any case are false; anything else ("true", "True", "1", "") is true
    (Convert_Slice_string_To_bool and Convert_Slice_string_To_Pointer_bool,
    k8s.io/apimachinery pkg/runtime/conversion.go:83-116 @ v0.36.3). kubernetes_asyncio sends ``watch=True``.
    Go's strings.EqualFold folds more than ASCII ("falſe", with U+017F, is false too): casefold agrees with
    it for "false"."""
    value = params.get(key)
    return value is not None and value != "0" and value.casefold() != "false"


def options_invalid(kind: str, errors: list[str]) -> ApiError:
    """A query-parameter options struct refused: errors.NewInvalid(GroupKind{meta.k8s.io, kind}, "", errs)
    (k8s.io/apiserver pkg/endpoints/handlers/patch.go:124-128 and get.go:217-219 @ v0.36.3)."""
    return ApiError(422, "Invalid", f'{kind}.meta.k8s.io "" is invalid: ' + ", ".join(errors))


def list_options_errors(params: dict[str, str], watch: bool) -> list[str]:
    """ValidateListOptions with the WatchList feature on (beta, on by default since 1.34: k8s.io/apiserver
    pkg/features/kube_features.go:536-542 @ v0.36.3), k8s.io/apimachinery
    pkg/apis/meta/internalversion/validation/validation.go:28-76 @ v0.36.3. A parameter counts where it is
    present, whatever its value (sendInitialEvents is a *bool)."""
    errors = []
    match = params.get("resourceVersionMatch", "")
    initial = "sendInitialEvents" in params
    rvm = "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden"
    if not watch:
        if match:
            if not params.get("resourceVersion"):
                errors.append(f"{rvm} unless resourceVersion is provided")
            if params.get("continue"):
                errors.append(f"{rvm} when continue is provided")
            if match not in ("Exact", "NotOlderThan"):
                supported = '"Exact", "NotOlderThan", ""'
                errors.append(f'resourceVersionMatch: Unsupported value: "{match}": supported values: {supported}')
            if match == "Exact" and params.get("resourceVersion") == "0":
                exact = '"exact" is forbidden'
                errors.append(rvm.replace("is forbidden", exact) + ' for resourceVersion "0"')
        if initial:
            errors.append("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
        return errors
    if initial and match != "NotOlderThan":
        errors.append(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        )
    if match:
        if not initial:
            errors.append(f"{rvm} for watch unless sendInitialEvents is provided")
        if match != "NotOlderThan":
            errors.append(f'resourceVersionMatch: Unsupported value: "{match}": supported values: "NotOlderThan"')
        if params.get("continue"):
            errors.append(f"{rvm} when continue is provided")
    return errors


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")] if path else []


def _json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 JSON patch; a failed ``test`` raises 422 like the API server."""
    doc = copy.deepcopy(doc)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node: Any = doc
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    for op in ops:
        kind, path = op["op"], op["path"]
        try:
            if kind == "test":
                if get(path) != op.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: test failed at {path}",
                    )
                continue
            if kind in ("remove", "replace", "move"):
                source = op["from"] if kind == "move" else path
                node, key = parent(source)
                value = node.pop(int(key)) if isinstance(node, list) else node.pop(key)
                if kind == "replace":
                    op = {**op, "op": "add"}
                elif kind == "move":
                    op = {"op": "add", "path": path, "value": value}
                else:
                    continue
            if op["op"] in ("add", "copy"):
                value = copy.deepcopy(get(op["from"])) if op["op"] == "copy" else copy.deepcopy(op["value"])
                node, key = parent(path)
                if isinstance(node, list):
                    node.insert(len(node) if key == "-" else int(key), value)
                else:
                    node[key] = value
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json patch {kind} {path}: {exc!r}") from exc
    return doc


_SELECTOR = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in [*parts, current] if p.strip()]


def label_match(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality- and set-based label selectors."""
    if not selector:
        return True
    for term in _split_selector(selector):
        m = _SELECTOR.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        neg, key, op, value, setop, values = m.groups()
        if setop:
            options = {v.strip() for v in values.split(",")}
            ok = (labels.get(key) in options) if setop == "in" else (labels.get(key) not in options)
        elif op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        else:
            ok = (key in labels) != bool(neg)
        if not ok:
            return False
    return True


def field_match(selector: str | None, obj: Obj) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        negate = key.endswith("!")
        key = key.rstrip("!=")
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if (str(node) == value.lstrip("=")) == negate:
            return False
    return True


CRDS: ResKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_ROOT_META = ("apiVersion", "kind", "metadata")
_RESET_MAIN: tuple[ssa.FPath, ...] = ((("f", "status"),),)
"""Reset fields of a main resource with a status subresource (customresource/strategy.go 132-142)."""
_RESET_STATUS: tuple[ssa.FPath, ...] = ((("f", "metadata"),), (("f", "spec"),))
"""Reset fields of ``/status`` (customresource/status_strategy.go 48-65)."""


def _admit(res: ResKey, obj: Obj) -> None:
    """Server-side validation the emulator reproduces: a CustomResourceDefinition gets apiextensions'
    creation-time checks (tests/support/apiserver/crd.py: structural schema, pruned and valid defaults, CEL
    rules on every default, compilation, cost budgets), on create and on update alike (the real
    server relaxes some of them on update for problems the stored CRD already had; not emulated)."""
    if res != CRDS:
        return
    errors = creation_errors(obj)
    if errors:
        name = obj.get("metadata", {}).get("name", "")
        raise ApiError(
            422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' + "; ".join(errors)
        )


_CEL_CACHE: dict[tuple[int, str], tuple[str, ...]] = {}


def _cel_errors(new: Obj, old: Obj | None, schema: dict[str, Any]) -> list[str]:
    """The CRD's CEL rules with validation ratcheting on update (validation.cel_errors), memoised per
    value (cel-python takes ~0.2 s for a FineTuneJob)."""
    key = (id(schema), json.dumps([new, old], sort_keys=True, default=str))
    cached = _CEL_CACHE.get(key)
    if cached is not None:
        return list(cached)
    errors = validation.cel_errors(new, schema, old=old)
    _CEL_CACHE[key] = tuple(errors)
    return errors


@dataclass(frozen=True)
class AuthAttempt:
    method: str
    path: str
    watch: bool
    token: str | None
    accepted: bool
    user: str | None = None
    """The client certificate's CommonName, when one authenticated the request."""


class ClientCertificates:
    """The API server's x509 authenticator (--client-ca-file): a client certificate that verifies against
    the client CA authenticates its subject's CommonName; no certificate (or an empty CN) is no answer, and
    the next authenticator (tokens) decides; one that does not verify (expired: ``clock`` is past its
    notAfter) is refused with 401.  (k8s.io/apiserver pkg/authentication/request/x509/x509.go
    ``Authenticator.AuthenticateRequest`` and ``CommonNameUserConversion``, read in the search index's copy
    of kubernetes/kubernetes at commit 04bbfcef, no tag.)  The chain itself is verified by the TLS layer of
    ``serve_tls`` (a CA and ``CERT_OPTIONAL``: a certificate is asked for, not required, as the API server's
    listener does); its validity is checked here again against ``clock``, the test's clock, so a test can
    expire a certificate without waiting."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def __call__(self, peercert: dict[str, Any] | None) -> tuple[bool | None, str | None]:
        """(accepted, user): accepted None when there is no certificate to judge."""
        import ssl

        if not peercert:
            return None, None
        cn = next((v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        if not cn:
            return None, None
        now = self.clock()
        valid = ssl.cert_time_to_seconds(peercert["notBefore"]) <= now < ssl.cert_time_to_seconds(peercert["notAfter"])
        return valid, cn


def serve_tls(cluster: Cluster, server_cert: str, server_key: str, client_ca: str) -> Any:
    """``cluster`` served over HTTPS (an async context manager, like ``kmock.Server(cluster)``), asking
    clients for a certificate signed by ``client_ca``: another server of the same handler (kmock serves one
    handler from several), entered inside ``async with cluster``."""
    import ssl

    import aiohttp.test_utils

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    tls.load_cert_chain(server_cert, server_key)
    tls.verify_mode = ssl.CERT_OPTIONAL

    class Server(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            await super().start_server(loop, ssl=tls, **kwargs)

    return kmock.Server(cluster, server_cls=Server)


class Tokens:
    """A token authenticator: static tokens, plus tokens an issuer (the tests' exec plugin) logs
    as JSON lines ``{"token": ..., "expires": <epoch seconds>}`` in ``issued`` (an OIDC issuer
    or a token webhook in a real cluster).  Unknown and expired tokens are refused; ``clock`` (epoch
    seconds) is the server's clock, a test's ``TestClock`` to expire tokens without waiting."""

    def __init__(
        self, static: tuple[str, ...] = (), issued: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.static = set(static)
        self.issued = issued
        self.clock = clock

    def __call__(self, token: str | None) -> bool:
        if token is None:
            return False
        if token in self.static:
            return True
        if self.issued is None:
            return False
        try:
            lines = open(self.issued, encoding="utf-8").read().splitlines()
        except FileNotFoundError:
            return False
        for line in lines:
            entry = json.loads(line)
            if entry["token"] == token:
                return bool(entry["expires"] > self.clock())
        return False


_VERB_BY_METHOD = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesScaffold):
    """kmock's server and discovery + a store with the API server's semantics (see module doc)."""

    kinds: dict[ResKey, Kind] = attrs.field(factory=dict)
    store: dict[ObjKey, Obj] = attrs.field(factory=dict)
    history: list[WatchEvent] = attrs.field(factory=list)
    _history_rvs: list[int] = attrs.field(factory=list)
    compacted_rv: int = 0
    calls: list[ApiCall] = attrs.field(factory=list)
    call_log: list[tuple[str, str, int]] = attrs.field(factory=list)
    faults: list[Fault] = attrs.field(factory=list)
    logs: dict[tuple[str, str], list[str]] = attrs.field(factory=dict)
    rv: int = 100
    _changed: asyncio.Condition | None = attrs.field(default=None)
    _drops: int = 0
    open_watches: int = 0
    watching: dict[str, int] = attrs.field(factory=dict)
    """Open watches per resource plural."""
    log_errors: dict[tuple[str, str], tuple[int, str, str]] = attrs.field(factory=dict)
    """pods/log answers an error Status for these (namespace, pod): (code, reason, message)."""
    expired_watches: int = 0
    """Watches answered 410 Gone (resumed from a compacted resourceVersion)."""
    authenticate: Callable[[str | None], bool] | None = None
    """Bearer-token check (None: no authentication, every request is allowed)."""
    client_certificates: ClientCertificates | None = None
    """The x509 authenticator, tried before the tokens (served by ``serve_tls``); None: certificates unused."""
    auth_log: list[AuthAttempt] = attrs.field(factory=list)
    garbage_collect: bool = False
    """Delete dependents whose owners are all gone, as kube-controller-manager's garbage collector does."""
    virtual: dict[ResKey, Callable[[kmock.Request, str], Any]] = attrs.field(factory=dict)
    """Resources with no storage, served by a plug-in (auth.py: TokenReview): (request, verb) -> response."""
    _types: dict[ResKey, tuple[Any, ssa.Typ]] = attrs.field(factory=dict)
    _deduced: ssa.Typ = attrs.field(factory=ssa.deduced_type)
    admission: dict[ResKey, list[Callable[[Obj, Obj | None], None]]] = attrs.field(factory=dict)
    """Admission plug-ins per resource (trainer_v2: schema, CEL immutability, Kueue's webhook), called
    as (new object, old object or None on create) on every create and main-resource write; they may
    mutate the new object (a mutating webhook) or raise ApiError (a refusal)."""

    # --- setup ---------------------------------------------------------------

    def declare(
        self, api_version: str, plural: str, kind: str, *, namespaced: bool = True, has_status: bool = True
    ) -> None:
        group, _, version = api_version.rpartition("/")
        self.kinds[(group, version, plural)] = Kind(kind, namespaced, has_status)
        verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
        self.resources[f"{api_version}/{plural}" if group else f"v1/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=verbs,
            subresources={"status"} if has_status else set(),
        )

    # --- direct access for tests (plays other controllers) ----------------------

    def read(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        group, _, version = api_version.rpartition("/")
        obj = self.store.get(((group, version, plural), namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Obj]:
        group, _, version = api_version.rpartition("/")
        return [
            copy.deepcopy(o)
            for (res, ns, _), o in sorted(self.store.items(), key=lambda kv: str(kv[0]))
            if res == (group, version, plural) and (namespace is None or ns == namespace)
        ]

    async def put_object(self, api_version: str, plural: str, obj: Obj, *, manager: str = "test-client") -> Obj:
        """Create an object as another client would (a user's kubectl apply, the Kubeflow controller);
        its fields are owned by ``manager`` (an Update entry, as for any create)."""
        group, _, version = api_version.rpartition("/")
        res = (group, version, plural)
        ns = obj.get("metadata", {}).get("namespace") if self.kinds[res].namespaced else None
        return await self._create(res, ns, copy.deepcopy(obj), keep_status=True, manager=manager)

    async def mutate(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        fn: Callable[[Obj], None],
        *,
        manager: str = "test-controller",
    ) -> Obj:
        """Change a stored object in place (e.g. a child's status), as its controller would: the
        change is an Update by ``manager`` (changes to status as a ``status`` subresource Update),
        so a later apply that sends the fields it set conflicts with it."""
        group, _, version = api_version.rpartition("/")
        key = ((group, version, plural), namespace, name)
        async with self._cond():
            old = self.store[key]
            new = copy.deepcopy(old)
            fn(new)
            managers = ssa.decode(old["metadata"].get("managedFields"))
            has_status = self.kinds[key[0]].has_status
            typ = self._type(key[0], new)
            managers = ssa.update(old, new, typ, managers, manager, api_version, "", _RESET_MAIN if has_status else ())
            if has_status:
                managers = ssa.update(old, new, typ, managers, manager, api_version, "status", _RESET_STATUS)
            self._set_managed(new, managers)
            if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            return self._commit(key, new, "MODIFIED")

    async def remove(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        group, _, version = api_version.rpartition("/")
        await self._delete(((group, version, plural), namespace, name))

    def append_log(self, namespace: str, pod: str, *lines: str) -> None:
        self.logs.setdefault((namespace, pod), []).extend(lines)

    def inject(
        self,
        verb: str,
        resource: str,
        status: int,
        times: int = 1,
        *,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Fault:
        fault = Fault(verb, resource, status, times, subresource, name)
        self.faults.append(fault)
        return fault

    async def drop_watches(self, *, compact: bool = False) -> None:
        """End every open watch stream (as an API server restart would); optionally expire history."""
        async with self._cond():
            self._drops += 1
            if compact:  # as if unrelated writes happened and etcd compacted past them
                self.rv += 1
                self.compacted_rv = self.rv
            self._changed_cond().notify_all()

    def api_calls(self) -> set[ApiCall]:
        return set(self.calls)

    # --- the request path ----------------------------------------------------

    def _changed_cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _cond(self) -> asyncio.Condition:
        return self._changed_cond()

    def _unauthorized(self, raw_req: aiohttp.web.BaseRequest | None) -> aiohttp.web.StreamResponse | None:
        """The 401 for a request whose bearer token ``authenticate`` refuses (None: go on); each attempt logged."""
        if self.authenticate is None or raw_req is None:
            return None
        header = raw_req.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        # The union of authenticators, x509 and tokens: "The entire chain is tried until one succeeds"
        # (k8s.io/apiserver pkg/authentication/request/union/union.go New, AuthenticateRequest; read in
        # the search index's copy of kubernetes/kubernetes at commit 2af2c553, no tag): an expired
        # certificate (an error) or none (no answer) leaves the decision to the token.
        by_cert, user = (None, None)
        if self.client_certificates is not None and raw_req.transport is not None:
            by_cert, user = self.client_certificates(raw_req.transport.get_extra_info("peercert"))
        accepted = bool(by_cert) or self.authenticate(token)
        watch = query_bool(raw_req.query, "watch")
        self.auth_log.append(
            AuthAttempt(raw_req.method, raw_req.path, watch, token, accepted, user if by_cert else None)
        )
        return None if accepted else self._error(ApiError(401, "Unauthorized", "Unauthorized"))

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:  # type: ignore[override]
        if (refused := self._unauthorized(request._raw_request)) is not None:
            return refused
        res = request.resource
        if res is None or res.plural is None:
            return await super()._handle(request)
        raw = request._raw_request
        assert raw is not None
        key: ResKey = (res.group or "", res.version or "", res.plural)
        if key not in self.kinds and key not in self.virtual:
            return self._error(
                ApiError(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
            )
        params = dict(request.params)
        method = raw.method.upper()
        watching = query_bool(params, "watch")
        if method == "GET":
            # watch=true makes a GET a watch only without a name: a named GET stays a get and its handler ignores
            # the parameter (apiserver pkg/endpoints/request/requestinfo.go:223-245 @ v0.36.3).
            verb = "get" if request.name else ("watch" if watching else "list")
        elif method == "DELETE" and not request.name:
            verb = "deletecollection"
        else:
            verb = _VERB_BY_METHOD.get(method, method.lower())
        self.calls.append(ApiCall(key[0], key[1], key[2], verb, request.namespace is not None, request.subresource))
        if key in self.virtual:
            response: aiohttp.web.StreamResponse = await self.virtual[key](request, verb)
            self.call_log.append((verb, key[2], response.status))
            return response
        kind = self.kinds[key]
        # create.go 259-283 managerOrUserAgent: the fieldManager parameter, else the User-Agent up to its first "/".
        manager = params.get("fieldManager") or raw.headers.get("User-Agent", "").split("/")[0]
        try:
            self._check_faults(verb, key[2], request.subresource, request.name)
            ns = request.namespace if kind.namespaced else None
            if verb in ("list", "watch") and (errors := list_options_errors(params, verb == "watch")):
                raise options_invalid("ListOptions", errors)
            if verb == "watch":
                return await self._watch(raw, key, ns, params)
            if verb == "list":
                result, status = self._list(key, ns, params), 200
            elif verb == "get" and request.subresource == "log":
                if query_bool(params, "follow"):
                    return await self._follow_log(raw, ns, request.name or "", params)
                return self._log(ns, request.name or "", params, raw.headers.get("Accept", ""))
            elif verb == "get":
                result, status = self._fetch((key, ns, request.name or "")), 200
            elif verb == "create":
                body = request.data if isinstance(request.data, dict) else {}
                strict = params.get("fieldValidation") == "Strict"
                result, status = (
                    await self._create(key, ns, body, keep_status=False, manager=manager, strict=strict),
                    201,
                )
            elif verb == "patch":
                result, status = await self._patch(
                    (key, ns, request.name or ""), raw.content_type, request.data, request.subresource, params, manager
                )
            elif verb == "update":
                strict = params.get("fieldValidation") == "Strict"
                result, status = (
                    await self._update(
                        (key, ns, request.name or ""), request.data, request.subresource, manager, strict=strict
                    ),
                    200,
                )
            elif verb == "delete":
                result, status = await self._delete((key, ns, request.name or "")), 200
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        except ApiError as exc:
            self.call_log.append((verb, key[2], exc.code))
            return self._error(exc)
        self.call_log.append((verb, key[2], status))
        return aiohttp.web.json_response(result, status=status)

    def _check_faults(self, verb: str, plural: str, subresource: str | None, name: str | None) -> None:
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.verb == verb
                and fault.resource == plural
                and fault.subresource == subresource
                and (fault.name is None or fault.name == name)
            ):
                fault.times -= 1
                reason = {409: "AlreadyExists", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
                raise ApiError(fault.status, reason.get(fault.status, "Injected"), f"injected failure {fault.status}")

    @staticmethod
    def _error(exc: ApiError) -> aiohttp.web.Response:
        headers = {"Retry-After": "1"} if exc.code == 429 else None
        body = {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": exc.code,
            "reason": exc.reason,
            "message": exc.message,
        }
        if exc.details is not None:
            body["details"] = exc.details
        return aiohttp.web.json_response(body, status=exc.code, headers=headers)

    # --- store operations ----------------------------------------------------

    def _commit(self, key: ObjKey, obj: Obj, event: str) -> Obj:
        prev = copy.deepcopy(self.store.get(key))  # before obj (which may be the stored dict) gets its new version
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if event == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        self.history.append(WatchEvent(self.rv, key[0], event, copy.deepcopy(obj), prev))
        self._history_rvs.append(self.rv)
        self._changed_cond().notify_all()
        return copy.deepcopy(obj)

    def _collect_garbage(self) -> None:
        """Background cascading deletion (the default of ``kubectl delete``), following
        kube-controller-manager's pkg/controller/garbagecollector/garbagecollector.go
        (``attemptToDeleteItem``): a dependent none of whose ownerReferences names a live
        object (same uid, in the dependent's namespace or cluster-scoped) is deleted; one with a
        live owner left is kept.  The real collector is asynchronous and reaches dependents of
        dependents in later passes; here it runs to a fixed point at once.  Finalizers on a
        dependent are honoured (deletionTimestamp set, object kept)."""
        while True:
            live = {o["metadata"].get("uid") for o in self.store.values()}
            doomed = [
                (key, obj)
                for key, obj in self.store.items()
                if (refs := obj["metadata"].get("ownerReferences"))
                and not any(r.get("uid") in live for r in refs)
                and not obj["metadata"].get("deletionTimestamp")
            ]
            if not doomed:
                return
            for key, obj in doomed:
                if obj["metadata"].get("finalizers"):
                    new = copy.deepcopy(obj)
                    new["metadata"]["deletionTimestamp"] = _now()
                    self._commit(key, new, "MODIFIED")
                else:
                    self._commit(key, copy.deepcopy(obj), "DELETED")

    def _fetch(self, key: ObjKey) -> Obj:
        obj = self.store.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[0][2]} "{key[2]}" not found')
        return copy.deepcopy(obj)

    def _list(self, res: ResKey, ns: str | None, params: dict[str, str]) -> Obj:
        matches = [
            (n or "", name, o)
            for (r, n, name), o in self.store.items()
            if r == res
            and (ns is None or n == ns)
            and label_match(params.get("labelSelector"), o["metadata"].get("labels") or {})
            and field_match(params.get("fieldSelector"), o)
        ]
        items = [copy.deepcopy(o) for _, _, o in sorted(matches, key=lambda m: (m[0], m[1]))]
        kind = self.kinds[res].kind
        return {
            "apiVersion": f"{res[0]}/{res[1]}".lstrip("/"),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    # --- field management (ssa.py) ---------------------------------------------

    def _type(self, res: ResKey, obj: Obj) -> ssa.Typ:
        """The schema server-side apply merges by: the installed CRD's, else the Kubernetes OpenAPI of a
        built-in kind, else the deduced type of a schemaless custom resource."""
        crd = self.store.get((CRDS, None, f"{res[2]}.{res[0]}")) if res[0] else None
        if crd is not None:
            cached = self._types.get(res)
            rv = crd["metadata"].get("resourceVersion")
            if cached is None or cached[0] != rv:
                schema = next(
                    (
                        (v.get("schema") or {}).get("openAPIV3Schema")
                        for v in crd["spec"].get("versions") or []
                        if v.get("name") == res[1]
                    ),
                    None,
                )
                cached = self._types[res] = (rv, ssa.crd_type(schema) if schema else ssa.deduced_type())
            return cached[1]
        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
        return ssa.builtin_type(api_version, self.kinds[res].kind) or self._deduced

    def _crd_schema(self, res: ResKey) -> dict[str, Any] | None:
        """The served version's openAPIV3Schema of the resource's installed CRD (None: no CRD or no schema)."""
        crd = self.store.get((CRDS, None, f"{res[2]}.{res[0]}")) if res[0] else None
        if crd is None:
            return None
        for version in crd["spec"].get("versions") or []:
            if version.get("name") == res[1]:
                schema: dict[str, Any] | None = (version.get("schema") or {}).get("openAPIV3Schema")
                return schema
        return None

    def _unknown(self, res: ResKey, obj: Obj) -> list[str]:
        """Fields the CRD's schema does not declare (metadata is ObjectMeta, checked elsewhere)."""
        schema = self._crd_schema(res)
        if schema is None:
            return []
        # sorted, as pruning/algorithm.go 41 returns them; apiVersion, kind and metadata at the root are
        # never pruned (algorithm.go 29-53, isResourceRoot)
        return sorted(
            p.lstrip(".")
            for p in validation.unknown_fields({k: v for k, v in obj.items() if k not in _ROOT_META}, schema)
        )

    def _admit_cr(self, res: ResKey, new: Obj, old: Obj | None) -> Obj:
        """A custom resource as apiextensions-apiserver stores it: unknown fields pruned
        (pkg/apiserver/schema/pruning/algorithm.go, validation.pruned), nulls dropped, defaults
        applied, then the OpenAPI and CEL checks, transition rules on update (validation.py);
        an error is 422 Invalid as pkg/registry/customresource/validator.go answers."""
        schema = self._crd_schema(res)
        if schema is None:
            return new
        meta = new.get("metadata")
        body = validation.pruned({k: v for k, v in new.items() if k not in _ROOT_META}, schema)
        body.update({k: new[k] for k in ("apiVersion", "kind") if k in new})
        validation.prune_nulls(body, schema)
        validation.apply_defaults(body, schema)
        stored = {**body, "metadata": meta} if meta is not None else body
        checked = {**stored, "metadata": {k: v for k, v in (meta or {}).items() if k in ("name", "generateName")}}
        errors = validation.schema_errors(
            checked, {**schema, "properties": {**schema.get("properties", {}), "metadata": {"type": "object"}}}
        )
        if not errors:
            errors = _cel_errors(checked, old, schema)
            if old is not None and not errors:
                previous = {**{k: v for k, v in old.items() if k != "metadata"}, "metadata": checked["metadata"]}
                errors = validation.transition_errors(checked, previous, schema)
        if errors:
            kind = self.kinds[res].kind
            raise ApiError(
                422,
                "Invalid",
                f'{kind}.{res[0]} "{(meta or {}).get("name", "")}" is invalid: '
                + ", ".join(e.lstrip(".") for e in errors),
            )
        return stored

    @staticmethod
    def _set_managed(obj: Obj, managers: ssa.Managers) -> None:
        entries = ssa.encode(managers)
        if entries:
            obj["metadata"]["managedFields"] = entries
        else:
            obj["metadata"].pop("managedFields", None)

    def _reset(self, res: ResKey, subresource: str | None) -> tuple[ssa.FPath, ...]:
        if not self.kinds[res].has_status:
            return ()
        return _RESET_STATUS if subresource == "status" else _RESET_MAIN

    # --- store operations (writes) ---------------------------------------------

    async def _create(
        self,
        res: ResKey,
        ns: str | None,
        body: Obj,
        *,
        keep_status: bool,
        manager: str = "",
        managers: ssa.Managers | None = None,
        strict: bool = False,
    ) -> Obj:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value (generateName is not emulated)")
        if ns is not None and meta.get("namespace") not in (None, ns):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        key = (res, ns, name)
        _admit(res, body)
        if self.kinds[res].has_status and not keep_status:
            body.pop("status", None)
        unknown = self._unknown(res, body) if strict else []
        if unknown:  # create.go 118-139 with rest.go 245-253; runtime/error.go 138-148; customresource_handler.go 1340
            kind, version = self.kinds[res].kind, res[1]
            raise ApiError(
                400,
                "BadRequest",
                f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: '
                + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        body = self._admit_cr(res, body, None)
        meta = body["metadata"]
        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
        if managers is None:
            # Tracked from creation on (fieldmanager.go 57-75, probability 1): the creator owns every field.
            typ = self._type(res, body)
            managers = ssa.update({}, body, typ, ssa.Managers(), manager, api_version, "", self._reset(res, None))
            if keep_status and self.kinds[res].has_status:
                managers = ssa.update({}, body, typ, managers, manager, api_version, "status", _RESET_STATUS)
        self._set_managed(body, managers)
        for plugin in self.admission.get(res, ()):
            plugin(body, None)  # after the field manager: webhook changes are owned by no one (create.go 199-203)
        async with self._cond():
            if key in self.store:
                raise ApiError(409, "AlreadyExists", f'{res[2]} "{name}" already exists')
            if ns is not None:
                meta["namespace"] = ns
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
            meta.pop("resourceVersion", None)
            return self._commit(key, body, "ADDED")

    async def _patch(
        self,
        key: ObjKey,
        content_type: str,
        patch: Any,
        subresource: str | None,
        params: dict[str, str],
        manager: str = "",
    ) -> tuple[Obj, int]:
        if content_type == "application/apply-patch+yaml":
            return await self._apply(key, patch, subresource, params)
        if content_type == "application/json-patch+json":
            apply = lambda old: _json_patch(old, patch)  # noqa: E731
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            apply = lambda old: _merge(old, patch)  # noqa: E731
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
        if "force" in params:  # a *bool: present at all, even force=false (validation.go:198-201 @ v0.36.3)
            raise options_invalid("PatchOptions", ["force: Forbidden: may not be specified for non-apply patch"])
        precondition = (patch or {}).get("metadata", {}).get("resourceVersion") if isinstance(patch, dict) else None
        strict = "patch" if params.get("fieldValidation") == "Strict" else ""
        return await self._write(key, apply, subresource, precondition, manager, strict=strict), 200

    async def _apply(self, key: ObjKey, patch: Any, subresource: str | None, params: dict[str, str]) -> tuple[Obj, int]:
        """Server-side apply (k8s.io/apiserver pkg/endpoints/handlers/patch.go 500-537, then ssa.apply)."""
        manager = params.get("fieldManager")
        if not manager:
            raise ApiError(
                422,  # ValidatePatchOptions, answered as Invalid (patch.go:124-128 @ v0.36.3)
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
        force = query_bool(params, "force")
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "error decoding YAML: the applied configuration is not an object")
        res = key[0]
        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
        if patch.get("apiVersion") != api_version or patch.get("kind") != self.kinds[res].kind:
            raise ApiError(
                400,
                "BadRequest",
                "Incorrect version specified in apply patch. Specified patch version: "
                f"{patch.get('apiVersion')}, expected: {api_version}",
            )
        if (patch.get("metadata") or {}).get("managedFields") is not None:
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        unknown = self._unknown(res, patch)
        if unknown and params.get("fieldValidation") == "Strict":  # patch.go 518-526
            raise ApiError(
                400,
                "BadRequest",
                "error strict decoding YAML: strict decoding error: "
                + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        if unknown:  # pruned before merging, so no one owns a field the server does not keep
            schema = self._crd_schema(res) or {}
            kept = {k: patch[k] for k in _ROOT_META if k in patch}
            patch = {**validation.pruned({k: v for k, v in patch.items() if k not in _ROOT_META}, schema), **kept}
        reset = self._reset(res, subresource)
        typ = self._type(res, patch)
        if key not in self.store and subresource is None:
            try:
                merged, managers = ssa.apply(None, patch, typ, ssa.Managers(), manager, api_version, "", force, reset)
            except ssa.ApplyInvalid as exc:
                raise ApiError(422, "Invalid", f"{self.kinds[res].kind} \"{key[2]}\" is invalid: {exc}") from exc
            return await self._create(res, key[1], merged, keep_status=False, managers=managers), 201

        def apply_to(old: Obj) -> Obj:
            try:
                merged, managers = ssa.apply(
                    old,
                    patch,
                    typ,
                    ssa.decode(old["metadata"].get("managedFields")),
                    manager,
                    api_version,
                    subresource or "",
                    force,
                    reset,
                )
            except ssa.Conflict as exc:
                message, causes = ssa.conflict_message(exc.conflicts)
                raise ApiError(409, "Conflict", message, {"causes": causes}) from exc
            except ssa.ApplyInvalid as exc:
                raise ApiError(422, "Invalid", f"{self.kinds[res].kind} \"{key[2]}\" is invalid: {exc}") from exc
            self._set_managed(merged, managers)
            return merged

        precondition = (patch.get("metadata") or {}).get("resourceVersion")
        return await self._write(key, apply_to, subresource, precondition, applied=True), 200

    async def _update(
        self, key: ObjKey, body: Any, subresource: str | None, manager: str = "", *, strict: bool = False
    ) -> Obj:
        rv = (body or {}).get("metadata", {}).get("resourceVersion")
        return await self._write(
            key, lambda old: copy.deepcopy(body), subresource, rv, manager, strict="update" if strict else ""
        )

    async def _write(
        self,
        key: ObjKey,
        apply: Callable[[Obj], Obj],
        subresource: str | None,
        precondition_rv: str | None,
        manager: str = "",
        *,
        applied: bool = False,
        strict: str = "",
    ) -> Obj:
        """An update or patch by ``manager``; ``applied``: ``apply`` is a server-side apply that
        sets managedFields itself."""
        async with self._cond():
            old = self.store.get(key)
            if old is None:
                raise ApiError(404, "NotFound", f'{key[0][2]} "{key[2]}" not found')
            if precondition_rv is not None and precondition_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {key[0][2]} "{key[2]}": the object has been modified; '
                    'please apply your changes to the latest version and try again',
                )
            changed = apply(old)
            unknown = self._unknown(key[0], changed) if strict else []
            if unknown:
                kind, problems = self.kinds[key[0]].kind, ", ".join(f'unknown field "{u}"' for u in unknown)
                if strict == "update":  # handlers/update.go 108-127: decoded like a create, 400
                    raise ApiError(
                        400,
                        "BadRequest",
                        f'{kind} in version "{key[0][1]}" cannot be handled as a {kind}: '
                        f'strict decoding error: {problems}',
                    )
                raise ApiError(
                    422, "Invalid", f"patch: Invalid value: the patched object: strict decoding error: {problems}"
                )  # patch.go 339-364
            new = copy.deepcopy(old)
            if subresource == "status":
                new["status"] = changed.get("status")
                if new["status"] is None:
                    new.pop("status")
                if applied:
                    new["metadata"]["managedFields"] = (changed.get("metadata") or {}).get("managedFields")
            elif subresource is None:
                status = old.get("status")
                new = changed
                frozen = {
                    k: old["metadata"].get(k)
                    for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp")
                }
                new.setdefault("metadata", {}).update({k: v for k, v in frozen.items() if v is not None})
                if self.kinds[key[0]].has_status:
                    new.pop("status", None)
                    if status is not None:
                        new["status"] = status
                body_keys = lambda o: {
                    k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")
                }  # noqa: E731
                if body_keys(new) != body_keys(old):
                    new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            else:
                raise ApiError(404, "NotFound", f"no subresource {subresource}")
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            new = self._admit_cr(key[0], new, old)
            if not applied:
                # fieldmanager.go 77-108: the request's managedFields if it sent some (main resource
                # only), else the live ones.
                sent = (new.get("metadata") or {}).get("managedFields") if subresource is None else None
                managers = ssa.decode(sent or old["metadata"].get("managedFields"))
                if (
                    old["metadata"].get("managedFields") or sent
                ):  # skipnonapplied.go 53-72: untracked objects stay untracked
                    api_version = f"{key[0][0]}/{key[0][1]}" if key[0][0] else key[0][1]
                    managers = ssa.update(
                        old,
                        new,
                        self._type(key[0], new),
                        managers,
                        manager,
                        api_version,
                        subresource or "",
                        self._reset(key[0], subresource),
                    )
                self._set_managed(new, managers)
            if subresource is None:
                _admit(key[0], new)
                for plugin in self.admission.get(key[0], ()):
                    plugin(new, old)
            if new == old:
                return copy.deepcopy(old)  # a no-op write does not bump the resourceVersion
            meta = new["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                # The update that empties the finalizers is not written: the stored object is deleted
                # (apiserver pkg/registry/generic/registry/store.go:780-784 and 598-619 @ v0.36.3), so a watch's
                # DELETED event carries the stored object, finalizers and all (watch_event sends ``prev``).
                self._commit(key, new, "DELETED")
                if self.garbage_collect:
                    self._collect_garbage()
                return copy.deepcopy(new)
            return self._commit(key, new, "MODIFIED")

    async def _delete(self, key: ObjKey) -> Obj:
        async with self._cond():
            obj = self.store.get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f'{key[0][2]} "{key[2]}" not found')
            if obj["metadata"].get("finalizers"):
                if obj["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(obj)
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = _now()
                return self._commit(key, new, "MODIFIED")
            deleted = self._commit(key, copy.deepcopy(obj), "DELETED")
            if self.garbage_collect:
                self._collect_garbage()
            return deleted

    # --- pods/log and watch ------------------------------------------------------

    def _log(self, ns: str | None, pod: str, params: dict[str, str], accept: str) -> aiohttp.web.Response:
        error: ApiError | None = None
        if ((("", "v1", "pods"), ns, pod)) not in self.store:
            error = ApiError(404, "NotFound", f'pods "{pod}" not found')
        elif (ns or "", pod) in self.log_errors:
            error = ApiError(*self.log_errors[(ns or "", pod)])
        if error is not None:
            # The API server answers errors as a Status object; a client that accepts only
            # text/plain gets 406 instead (apiserver content negotiation,
            # k8s.io/apiserver/pkg/endpoints/handlers/negotiation), seen on a real v1.36 server.
            if not any(t in accept for t in ("application/json", "*/*", "application/*")):
                raise ApiError(
                    406,
                    "NotAcceptable",
                    "only the following media types are accepted: application/json, application/yaml, "
                    "application/vnd.kubernetes.protobuf",
                )
            raise error
        lines = self.logs.get((ns or "", pod), [])
        tail = params.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) else []
        self.call_log.append(("get", "pods/log", 200))
        return aiohttp.web.Response(text="".join(line + "\n" for line in lines), content_type="text/plain")

    async def _follow_log(
        self, raw: Any, ns: str | None, pod: str, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        """``follow=true``: the lines so far (after ``tailLines``), then new ones as they are appended, until the
        pod stops running (kubelet's follow ends when the container exits: pkg/kubelet/kuberuntime/logs/logs.go)."""
        key = (("", "v1", "pods"), ns, pod)
        if key not in self.store:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found')
        self.call_log.append(("get", "pods/log", 200))
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        lines = self.logs.get((ns or "", pod), [])
        tail = params.get("tailLines")
        sent = max(len(lines) - int(tail), 0) if tail is not None else 0
        try:
            while True:
                lines = self.logs.get((ns or "", pod), [])
                if len(lines) > sent:
                    await response.write("".join(line + "\n" for line in lines[sent:]).encode())
                    sent = len(lines)
                obj = self.store.get(key)
                if obj is None or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    lines = self.logs.get((ns or "", pod), [])
                    if len(lines) > sent:
                        await response.write("".join(line + "\n" for line in lines[sent:]).encode())
                    return response
                await asyncio.sleep(0.05)
        except ConnectionResetError:  # the client went away
            return response

    async def _watch(self, raw: Any, res: ResKey, ns: str | None, params: dict[str, str]) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        drops = self._drops
        selector, fields = params.get("labelSelector"), params.get("fieldSelector")

        def wanted(obj: Obj) -> bool:
            # Both selectors filter a watch as they filter a list; a change is sent as ADDED, MODIFIED or
            # DELETED by whether its previous and its new object pass (watch_event: an object that starts
            # matching is ADDED, one that stops is DELETED, cache_watcher.go:374-398 @ v0.36.3).
            meta = obj.get("metadata", {})
            return (
                (ns is None or meta.get("namespace") == ns)
                and label_match(selector, meta.get("labels") or {})
                and field_match(fields, obj)
            )

        async def send(event: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

        since = params.get("resourceVersion")
        # sendInitialEvents (validated with resourceVersionMatch=NotOlderThan in _handle): true sends the
        # current state as ADDED events from the newest version, false sends none and starts at
        # resourceVersion, or at the newest when there is none (k8s.io/apiserver pkg/storage/cacher/cacher.go
        # 1293-1304 getWatchCacheResourceVersion @ v0.36.3). Not emulated: SetListOptionsDefaults
        # (apimachinery pkg/apis/meta/internalversion/defaults.go:25-38 @ v0.36.3) turns a legacy watch
        # (resourceVersion "" or "0", neither parameter) into sendInitialEvents=true on a 1.34+ server, so
        # with allowWatchBookmarks the real server ends its initial ADDED events with the bookmark below too.
        initial = query_bool(params, "sendInitialEvents") if "sendInitialEvents" in params else None
        self.open_watches += 1
        self.watching[res[2]] = self.watching.get(res[2], 0) + 1
        try:
            if initial is False:
                position = int(since) if since and since != "0" else self.rv
            elif since and since != "0" and initial is None:
                position = int(since)
                if position < self.compacted_rv:
                    gone = {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "code": 410,
                        "reason": "Expired",
                        "message": f"too old resource version: {position} ({self.compacted_rv})",
                    }
                    await send("ERROR", gone)
                    self.expired_watches += 1
                    return response
            else:
                position = self.rv
                for (r, _, _), obj in sorted(self.store.items(), key=lambda kv: str(kv[0])):
                    if r == res and wanted(obj):
                        await send("ADDED", copy.deepcopy(obj))
                if initial and query_bool(params, "allowWatchBookmarks"):
                    # Streaming list (client-go's WatchList, used by helm 4's status watcher): the
                    # initial ADDED events end with a BOOKMARK annotated k8s.io/initial-events-end,
                    # as k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go sends it, only where
                    # bookmarks are allowed (cacher.go:1280-1282 and 1337-1338 @ v0.36.3).
                    api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
                    end = {"k8s.io/initial-events-end": "true"}
                    await send(
                        "BOOKMARK",
                        {
                            "kind": self.kinds[res].kind,
                            "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(position), "annotations": end},
                        },
                    )
            deadline = asyncio.get_running_loop().time() + float(params.get("timeoutSeconds") or 3600)
            while True:
                async with self._cond():
                    pending = self.history[bisect.bisect_right(self._history_rvs, position) :]
                    if not pending:
                        if self._drops != drops:
                            return response
                        timeout = deadline - asyncio.get_running_loop().time()
                        if timeout <= 0:
                            return response
                        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                        # lands as the condition is notified (bpo-42130, fixed in 3.12); this loop then watched on for
                        # an hour and the test loop's teardown (_cancel_all_tasks) hung on it.
                        try:
                            async with asyncio.timeout(min(timeout, 1.0)):
                                await self._changed_cond().wait()
                        except TimeoutError:
                            pass
                        continue
                for event in pending:
                    position = event.rv
                    if event.res == res and (sent := watch_event(event, wanted)) is not None:
                        await send(*sent)
                if self._drops != drops:
                    return response
        except ConnectionResetError:  # the client went away
            return response
        # A cancelled handler stays cancelled (no `except CancelledError: return`): swallowing it kept
        # aiohttp's connection task in its keep-alive loop on a socket a stopped operator left open,
        # and the test loop's teardown (asyncio.runners._cancel_all_tasks) then waited for it forever.
        finally:
            self.open_watches -= 1
            self.watching[res[2]] -= 1
