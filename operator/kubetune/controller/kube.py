"""A small async Kubernetes client for the few calls the operator makes itself.

Why its own request path: kopf already ships aiohttp, and the operator needs only a few calls:
server-side apply, get, delete, a status merge patch, LIST pages and WATCH streams (the informers in
``cache``), a pod log tail, create (Events, TokenReviews), and raw requests for the rest (an Event's
count patch, API discovery, the peering object, a LocalQueue's presence); kubernetes_asyncio's
generated client costs about 2.5x its CPU per job (docs/architecture.md, "The Kubernetes client
library").  Credentials come from kubernetes_asyncio, kubetune's one Kubernetes client library: its
``KubeConfigLoader``, imported lazily, turns the kubeconfig (which files and how they merge:
``kubeconfig``, kubectl's rules) into credentials, so exec plugins and every kubeconfig form work as
with kubectl (``load_connection``, ``_load_credentials``); kopf logs in with the same
credentials (see ``main``), so both halves talk to the same server as the same
identity.  Credentials that expire (exec plugins, rotated ServiceAccount tokens)
are reloaded shortly before they expire and after a 401, here and in kopf's
login handler (``handlers.login``), which kopf calls again when its own
requests get a 401.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from . import execplugin
from . import kubeconfig as _rule
from .kubeconfig import (
    Entry,
    Kubeconfig,
    KubeconfigError,
    ReloadBackoff,
    TokenFile,
    kubeconfig_files,
    read_kubeconfig,
    retry_after_401,
    should_reload,
    still_valid,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "kubetune"
"""The one field manager of every server-side apply the operator sends."""

Items = list[dict[str, Any]]
"""A LIST's items."""

SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate.

    Credentials that expire are reloaded (see :meth:`refreshed`): a connection
    loaded from a kubeconfig remembers the file, so an exec plugin (EKS, GKE,
    OIDC helpers) runs again and ``tokenFile`` is read again; in-cluster, the
    ServiceAccount token file, which kubelet rotates, is re-read.

    The files a loaded connection names in kubetune's private folder (``*-data``, a plugin's certificate)
    exist as long as it, or a copy of it (``dataclasses.replace``, ``copy``), does: they are held by its
    ``private_files`` (``_adopt``), which copies share.  A client keeps the connection it builds TLS contexts from.
    """

    server: str
    token: str | None = None
    token_file: str | None = None
    """Re-read periodically and on a 401: in-cluster (bound) tokens rotate."""
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False
    proxy: str | None = None
    """The kubeconfig cluster's ``proxy-url`` (kubectl sends every request of that cluster through it);
    used by both clients (kubetune.terminal's urllib opener, the operator's aiohttp requests)."""
    tls_server_name: str | None = None
    """The kubeconfig cluster's ``tls-server-name``: the name the server's certificate is checked against
    (and sent as SNI) instead of the server URL's host, as kubectl's rest.Config.TLSClientConfig.ServerName
    and kubernetes_asyncio's ``server_hostname`` (client/rest.py:60,155-156)."""
    default_namespace: str | None = None
    kubeconfig: str | None = None
    """The kubeconfig files these credentials came from (``os.pathsep``-separated, as $KUBECONFIG),
    merged again to refresh them."""
    expires_at: float | None = None
    """When the credentials expire (epoch seconds; an exec plugin's ``status.expirationTimestamp``)."""
    loaded_at: float = 0.0
    """When they were loaded (epoch seconds): refresh a fifth of their lifetime early, at most 60 s."""
    private_files: _PrivateFiles | None = field(default=None, repr=False, compare=False)
    """The private files this connection names, held while it or a copy of it lives (set by ``_adopt``)."""
    clock: Callable[[], float] = field(default=lambda: _rule_clock(), repr=False, compare=False)
    """What ``expires_at`` and ``loaded_at`` are compared with (epoch seconds); kept by :meth:`refreshed`.
    Tests pass a clock they move forward instead of sleeping until a token expires; by default the
    rule's own clock (``kubeconfig.clock``), read at each call."""

    def stale(self, now: float | None = None) -> bool:
        """Whether the credentials expire soon enough to reload them before the next call
        (``kubeconfig.should_reload``: the one rule of both clients, on this connection's clock)."""
        return should_reload(self.expires_at, self.loaded_at, self.clock() if now is None else now)

    def refreshed(self) -> Connection:
        """The same connection with credentials loaded again (blocking: may run an exec plugin)."""
        if self.kubeconfig:
            return _connection_from(self.kubeconfig.split(os.pathsep), self.clock)
        return self  # a static token or client certificate; a token file is re-read by Kube itself

    @property
    def refreshable(self) -> bool:
        """Whether reloading can give other credentials (a kubeconfig or a token file to read again)."""
        return bool(self.kubeconfig or self.token_file)


def _rule_clock() -> float:
    """``kubeconfig.clock`` as it is at each call (tests set it to stand at a point of the rule)."""
    return _rule.clock()


def load_connection(kubeconfig: str | None = None, *, clock: Callable[[], float] | None = None) -> Connection:
    """The kubeconfig's credentials, else (in a pod, the kubeconfig empty) the in-cluster ServiceAccount's.

    Which files, and how they merge, is kubectl's rule (``kubeconfig.load_kubeconfig``: ``kubeconfig``
    alone when given, as ``--kubeconfig``; else every file of ``$KUBECONFIG``, the first value
    winning; else ~/.kube/config): the same view ``kubetune render`` takes its namespace from.  The
    merged entries go to kubernetes_asyncio's loader (``_load_credentials``), so every form kubectl knows
    works: token, tokenFile, client certificates, ``proxy-url``, ``tls-server-name``, and exec plugins
    (ExecCredential client.authentication.k8s.io/v1 and v1beta1, with ``status.expirationTimestamp``, a
    token or a client certificate and key).  Blocking (it may run an exec plugin), callable from any
    thread, one with a running event loop included (a notebook): see ``_run_to_completion``.

    In a pod, the ServiceAccount's token file, CA and namespace are read here rather than by
    kubernetes_asyncio's ``InClusterConfigLoader`` (config/incluster_config.py:38-116 @ 36.1.0): that one
    needs ``KUBERNETES_SERVICE_PORT`` set (:61-71; kubetune defaults it to 443), keeps the token untrimmed
    with "Bearer " in front (:110-116) and re-reads it only through its own client's
    ``refresh_api_key_hook`` (:99-108); kubetune's clients re-read the file themselves (``TokenFile``).
    """
    clock = clock or _rule_clock
    files = kubeconfig_files(kubeconfig)
    # kubectl's order (client-go tools/clientcmd/merged_client_builder.go:96-124 @ v0.36.3): the merged
    # kubeconfig, and the in-cluster config only when that is empty (no file, or no cluster in them) and
    # a ServiceAccount token is mounted (client_config.go:668-673). A ~/.kube/config in a notebook pod
    # wins over the pod's ServiceAccount; a $KUBECONFIG naming no existing file falls back to it.
    in_pod = not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.isfile(SA_TOKEN)
    if in_pod and not read_kubeconfig(files).clusters:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        namespace = open(SA_NAMESPACE, encoding="utf-8").read().strip() if os.path.exists(SA_NAMESPACE) else None
        return Connection(
            server=f"https://{host}:{port}",
            token_file=SA_TOKEN,
            ca_path=SA_CA,
            default_namespace=namespace,
            clock=clock,
        )
    return _connection_from(files, clock)


def _connection_from(files: list[str], clock: Callable[[], float] | None = None) -> Connection:
    """Credentials of the current context of ``files`` merged (also how ``Connection.refreshed`` reloads).

    Blocking, from any thread: kubernetes_asyncio's loader is async (it runs an exec plugin as an asyncio
    subprocess), so it runs to completion on an event loop of its own (:func:`_run_to_completion`)."""
    return _run_to_completion(lambda: _load_credentials(files, clock or _rule_clock))


def _run_to_completion(make: Callable[[], Coroutine[Any, Any, Connection]]) -> Connection:
    """``make()``'s coroutine run on a loop of its own: in this thread when it is a worker thread with no
    loop (the operator's reload thread, ``_in_thread``), otherwise in a thread of its own that this one
    waits for.  A thread whose loop is running (a notebook's kernel, ``asyncio.to_thread``'s caller, an
    async SDK user) cannot ``asyncio.run`` (RuntimeError: "cannot be called from a running event loop"),
    and the main thread of the CLI keeps its own event-loop state and SIGINT handler untouched (Ctrl-C
    still interrupts the wait: ``Thread.join`` is interruptible)."""
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if not running and threading.current_thread() is not threading.main_thread():
        return asyncio.run(make())
    outcome: list[Connection] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(asyncio.run(make()))
        except BaseException as exc:  # noqa: BLE001 - raised again in the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="kubetune-credentials", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


_NO_USER = "kubetune:no-user"
"""The user a context without one (or naming one no file defines) gets: an empty one, so the client sends no
credentials and the API server decides (401, or the anonymous user where that is on).  kubernetes_asyncio
builds FileOrData(self._user, "client-certificate", ...) for every https cluster (config/kube_config.py:443-458
@ kubernetes_asyncio 36.1.0), a TypeError when the context has no user (set_active_context leaves it None,
:177-190)."""


async def _load_credentials(files: list[str], clock: Callable[[], float]) -> Connection:
    """kubernetes_asyncio's KubeConfigLoader fed kubectl's merged entries (``kubeconfig.read_kubeconfig``).

    Contracts relied on, read in kubernetes_asyncio 36.1.0 (the installed package):

    * ``KubeConfigLoader(config_dict=ConfigNode, config_base_path=None)`` takes each entry's relative paths
      from its own ConfigNode's ``path`` (``_get_base_path``, config/kube_config.py:422-427); kubetune hands
      it absolute paths anyway (``kubeconfig._resolved``), since ``_load_cluster_info`` resolves the user's
      client-certificate/-key against the CLUSTER's file (:436-458).
    * ``load_and_set(Configuration)`` (:484-487): authentication first (:213-250: gcp and oidc
      auth-providers, then ``exec``, then ``token``/``tokenFile``, then username/password), then the
      cluster (:429-464): ``host`` (server, trailing "/" cut), ``ssl_ca_cert`` (a file: kubetune writes the
      ``*-data`` fields to its own files first, ``_materialized``), ``cert_file``/``key_file`` (the user's, unless
      the exec plugin gave them), ``verify_ssl`` (``insecure-skip-tls-verify``), ``tls_server_name``
      (``tls-server-name``) and ``proxy`` (``proxy-url``), copied to the Configuration by ``_set_config``
      (:466-482); the bearer token goes to ``api_key["BearerToken"]`` as "Bearer <token>" (:467-468).
    * Its client uses them as kubectl does: one TLS context with the CA and client certificate,
      ``server_hostname=tls_server_name`` and ``proxy=proxy`` on every request (client/rest.py:54-74,
      :147-156); kubetune's two clients do the same with the Connection's fields.
    * An exec plugin: see ``_loader_class``.

    The private files the load writes (``*-data``, a plugin's certificate) belong to the Connection it
    builds (``_adopt``), or are given back when it fails.
    """
    loaded_at = clock()
    merged = read_kubeconfig(files)
    if not merged.files:
        raise KubeconfigError(
            f"no kubeconfig found (looked for {os.pathsep.join(files)}; set KUBECONFIG or run inside a cluster)"
        )

    taken: list[str] = []  # the private files this load writes (_private_file), held for it until _adopt
    try:
        conn = await _loaded(files, merged, loaded_at, clock, taken)
    except BaseException:
        _release(taken)
        raise
    _adopt(conn, taken)
    return conn


async def _loaded(
    files: list[str], merged: Kubeconfig, loaded_at: float, clock: Callable[[], float], taken: list[str]
) -> Connection:
    """``_load_credentials``'s work; the private files it writes are appended to ``taken``."""
    from kubernetes_asyncio.client import Configuration  # noqa: PLC0415 - lazy: only clients that log in pay
    from kubernetes_asyncio.config import kube_config as _kube_config  # noqa: PLC0415

    kube_config: Any = _kube_config  # untyped in places (ConfigNode's values): Any keeps strict mypy honest

    def entries(section: str, body: str, found: Mapping[str, Entry], current: str) -> list[Any]:
        # Each entry keeps its own file as its ConfigNode's path (where its relative paths start), as
        # kubernetes_asyncio's KubeConfigMerger does (config/kube_config.py:618-627).  The merge itself is
        # kubectl's (kubeconfig.read_kubeconfig): KubeConfigMerger takes current-context from the LAST file
        # that sets it (:613-614), kubectl from the first.  Only the current context's user and cluster get
        # their *-data written to private files: the loader reads no other entry (_load_authentication,
        # _load_cluster_info read self._user and self._cluster, config/kube_config.py:213-250, :429-464 @ 36.1.0).
        return [
            kube_config.ConfigNode(
                f"{e.file}/{section}[{e.name}]",
                {"name": e.name, body: _materialized(section, e.value, taken) if e.name == current else dict(e.value)},
                e.file,
            )
            for e in found.values()
        ]

    contexts: list[dict[str, Any]] = [{"name": e.name, "context": dict(e.value)} for e in merged.contexts.values()]
    users = entries("users", "user", merged.users, str(merged.context.get("user") or ""))
    for ctx in contexts:
        if str(ctx["context"].get("user") or "") not in merged.users:
            ctx["context"]["user"] = _NO_USER
    users.append(kube_config.ConfigNode(_NO_USER, {"name": _NO_USER, "user": {}}, merged.files[0]))
    root = kube_config.ConfigNode(
        merged.files[0],
        {
            "current-context": merged.current_context,
            "clusters": entries("clusters", "cluster", merged.clusters, str(merged.context.get("cluster") or "")),
            "users": users,
            "contexts": contexts,
        },
        merged.files[0],
    )
    cfg = Configuration()
    loader = _loader_class()(config_dict=root, config_base_path=None)
    loader.private_files = taken
    await loader.load_and_set(cfg)
    auth = str((cfg.api_key or {}).get("BearerToken") or "")
    # A token (a kubeconfig token, a plugin's) is trimmed, as client-go trims a tokenFile's
    # (transport/token_source.go:135-139 @ v0.36.3); kubernetes_asyncio keeps a file's trailing newline
    # (FileOrData.as_data, config/kube_config.py:129-140).  "Basic" (username/password) is not a bearer
    # token: kubetune's clients send only bearer tokens, so such a user gets no credentials, as before.
    token = auth.split(" ", 1)[1].strip() if auth.lower().startswith("bearer ") else None
    # A user's tokenFile stays a file, read again on the rule of kubeconfig.TokenFile, as kubectl keeps it
    # (BearerTokenFile: tools/clientcmd/client_config.go:277-287, then the cached file source,
    # transport/round_trippers.go:295-308 and token_source.go:67-82 @ v0.36.3): kubernetes_asyncio reads
    # it once into a static token (_load_user_token, config/kube_config.py:397-410). (Made absolute by
    # kubeconfig._resolved.)
    user = merged.users.get(str(merged.context.get("user") or ""))
    token_file = user.value.get("tokenFile") if user is not None else None  # wins over exec (_has_static_auth)
    if isinstance(token_file, str) and token_file:
        token = None
    else:
        token_file = None
    return Connection(
        server=str(cfg.host),
        token=token,
        token_file=token_file,
        ca_path=cfg.ssl_ca_cert,
        cert_path=cfg.cert_file,
        key_path=cfg.key_file,
        insecure=not cfg.verify_ssl,
        proxy=cfg.proxy or None,
        tls_server_name=cfg.tls_server_name or None,
        default_namespace=merged.namespace,
        kubeconfig=os.pathsep.join(files),
        expires_at=loader.expires_at,
        loaded_at=loaded_at,
        clock=clock,
    )


def _has_static_auth(user: Mapping[str, Any]) -> bool:
    """Whether a user's own credentials win over its exec plugin (client-go exec.go:319-321 @ v0.36.3:
    ``HasTokenAuth() || HasBasicAuth() || HasCertAuth()``, transport/config.go:105-117 @ v0.36.3): a token or
    token file, a username, or a client certificate WITH its key (a certificate alone is no cert auth)."""
    cert = user.get("client-certificate") or user.get("client-certificate-data")
    key = user.get("client-key") or user.get("client-key-data")
    return bool(user.get("token") or user.get("tokenFile") or user.get("username") or (cert and key))


_DATA_FIELDS = {
    "clusters": (("certificate-authority-data", "certificate-authority"),),
    "users": (("client-certificate-data", "client-certificate"), ("client-key-data", "client-key")),
}
_private_dir: str | None = None
_private_lock = threading.RLock()
"""Guards the folder, the files and their counts.  Re-entrant: a connection's finalizer (``_adopt``) may run
in whichever thread drops the last reference, cyclic garbage collection inside a locked section included."""
_private_refs: dict[str, int] = {}
"""Per private file, how many holders it has: each live Connection built from it (``_adopt``) and each load
still in progress that wrote it.  One file serves every client of the process whose certificate, key or CA has
the same content (the operator's client, kopf's login, several ``Kube`` or SDK clients in a notebook), so a file
is removed only when its count falls to 0, never because one client rotated away from it."""


def _private_file(content: bytes, taken: list[str]) -> str:
    """``content`` in a file of kubetune's own: a private directory (``mkdtemp``: owner-only) made once per
    process and made again when something (a /tmp cleaner) removed it, the file named by its content's hash,
    written owner-only (0600) on every load and closed, so a file aged out of /tmp is back on the next
    reload.  kubernetes_asyncio's FileOrData instead remembers one ``mkstemp`` path per content for the
    process's life and refuses it once deleted ("File does not exists", config/kube_config.py:97-126 @
    36.1.0) and never closes the descriptor ``mkstemp`` returns (:105): one leaked per new certificate.

    The file's count goes up (before it is written: a holder dropping the same file meanwhile, in another
    thread or from a finalizer in this one, cannot remove it under the load) and the path is appended to
    ``taken``, the load's list: the Connection it builds takes the count over (``_adopt``), or a failed load
    gives it back (``_release``)."""
    import hashlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    global _private_dir
    with _private_lock:
        if _private_dir is None or not os.path.isdir(_private_dir):
            _private_dir = tempfile.mkdtemp(prefix="kubetune-creds-")
            atexit.register(shutil.rmtree, _private_dir, True)
        name = os.path.join(_private_dir, hashlib.sha256(content).hexdigest())
        _private_refs[name] = _private_refs.get(name, 0) + 1
        taken.append(name)
        fd = os.open(name + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(name + ".tmp", name)
        return name


def _release(paths: list[str]) -> None:
    """Give back one count of each private file in ``paths``; a file nobody holds any more is removed (a TLS
    context that loaded it keeps what it read)."""
    with _private_lock:
        for p in paths:
            left = _private_refs.get(p, 0) - 1
            if left > 0:
                _private_refs[p] = left
                continue
            _private_refs.pop(p, None)
            try:
                os.unlink(p)
            except OSError:
                pass  # already gone (a /tmp cleaner)


class _PrivateFiles:
    """A hold on private files (``_private_file``), given back when the last reference to it goes
    (``weakref.finalize``).  A Connection keeps it in a field, so ``dataclasses.replace`` and ``copy`` share
    it, and deep copies too (``__deepcopy__``): a copy naming the same files keeps them."""

    def __init__(self, paths: list[str]) -> None:
        import weakref  # noqa: PLC0415

        self.paths = tuple(paths)
        weakref.finalize(self, _release, list(paths)).atexit = False  # at exit the whole folder goes

    def __copy__(self) -> _PrivateFiles:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> _PrivateFiles:
        return self


def _adopt(conn: Connection, taken: list[str]) -> None:
    """Hand the private files a load wrote (``taken``) to the Connection it built: the ones it names (CA,
    client certificate, key) are held until neither it nor a copy of it is left, when no client can build a
    TLS context from them any more (``_PrivateFiles``: as soon as the last reference drops, a client
    replacing it after a rotation, or at the next garbage collection when it sat in a reference cycle); the
    ones it does not name (a user's client-certificate-data the plugin's certificate replaced, the CA of an
    http server, which the loader never reads) are given back now.  Not run at exit: the folder goes then
    (``atexit``, ``_private_file``)."""
    spare = list(taken)
    owned: list[str] = []
    for p in (conn.ca_path, conn.cert_path, conn.key_path):
        if p is not None and p in spare:
            spare.remove(p)
            owned.append(p)
    if owned:
        object.__setattr__(conn, "private_files", _PrivateFiles(owned))  # frozen: set once, here, before any use
    _release(spare)


def _materialized(section: str, value: Mapping[str, Any], taken: list[str]) -> dict[str, Any]:
    """``value`` with its ``*-data`` fields (base64, as kubectl reads them) written to private files and named
    by their file field instead, the data winning over a file as in FileOrData (config/kube_config.py:83-89);
    the files written are appended to ``taken`` (``_private_file``)."""
    out = dict(value)
    for data_key, file_key in _DATA_FIELDS.get(section, ()):
        data = out.pop(data_key, None)
        if data:
            import base64  # noqa: PLC0415

            out[file_key] = _private_file(base64.standard_b64decode(str(data)), taken)
    return out


@functools.cache
def _loader_class() -> type[Any]:
    """kubernetes_asyncio's loader with kubetune's exec step, defined on first use (the import is lazy)."""
    from kubernetes_asyncio.config import kube_config  # noqa: PLC0415 - lazy, see _load_credentials
    from kubernetes_asyncio.config.config_exception import ConfigException  # noqa: PLC0415
    from kubernetes_asyncio.config.dateutil import parse_rfc3339  # noqa: PLC0415

    base: Any = kube_config.KubeConfigLoader

    class Loader(base):  # type: ignore[misc]
        """kubernetes_asyncio's KubeConfigLoader with kubetune's exec step.

        Its own ``load_from_exec_plugin`` (config/kube_config.py:348-395 @ kubernetes_asyncio 36.1.0) runs
        ``ExecProvider`` (config/exec_provider.py:60-114), whose faults kubetune's runner fixes
        (``execplugin``: the plugin's stderr hidden unless it fails, no interactiveMode, no
        provideClusterInfo, no deadline); keeps ``expirationTimestamp`` only beside a token (:358-363), so a
        certificate-issuing plugin would never run again before its certificate expires; drops the token
        when a certificate comes too (:358-385); and runs before the user's own token or certificate
        (:239-247).  This override runs ``execplugin.run_plugin`` only for a user with no static
        credentials, keeps token, certificate and expiry, and hands certificates to the TLS context
        through kubetune's private files.  Everything else (gcp/oidc providers, token, tokenFile, the
        cluster) is kubernetes_asyncio's.

        kubernetes_asyncio reloads an exec token only from a polling task (``refresh_token``, :732-754) and
        never after a 401: kubetune reloads before expiry and once after a 401 (``kubeconfig.should_reload``,
        ``retry_after_401``, client-go's identity check in ``Kube.fresh_connection``).
        """

        expires_at: float | None = None
        private_files: list[str]
        """The load's list of private files written (``_private_file``), set by ``_load_credentials``."""

        async def _refresh_oidc(self, provider: Any) -> None:
            # kubernetes_asyncio refreshes an expired oidc id-token by posting the refresh-token to the issuer
            # through aiohttp.TCPConnector(verify_ssl=<an idp CA given>, ssl_context=<its temp file's NAME>)
            # (config/openid.py:27-30, called from config/kube_config.py:311-338 @ 36.1.0): without
            # idp-certificate-authority(-data) the refresh-token goes out over TLS that checks nothing, with
            # one aiohttp refuses the str as an SSLContext (TypeError).  So kubetune refuses the refresh.
            raise ConfigException(
                "oidc: the auth-provider's id-token has expired (or is missing) and kubetune does not refresh it "
                "with the refresh-token (kubernetes_asyncio would send it unverified); use an exec plugin such as "
                "kubelogin (kubectl oidc-login) in the kubeconfig's user instead, or put a fresh id-token in it"
            )

        async def load_from_exec_plugin(self) -> bool:
            user = self._user.value
            # A token, token file, username or client certificate of the user's own wins over its exec plugin,
            # which then never runs: client-go's UpdateTransportConfig returns before installing the plugin
            # when c.HasTokenAuth() || c.HasBasicAuth() || c.HasCertAuth() (exec.go:319-321 @ v0.36.3), as
            # the kubernetes package did; kubernetes_asyncio runs exec first (config/kube_config.py:239-247).
            if _has_static_auth(user):
                return False
            try:
                # kubetune's runner (execplugin.py: stderr to the caller, interactiveMode, provideClusterInfo,
                # a deadline), not kubernetes_asyncio's ExecProvider.
                status = execplugin.run_plugin(user["exec"], self._cluster.value if self._cluster else {})
            except execplugin.ExecPluginError as exc:
                raise ConfigException(str(exc)) from exc
            if status.get("token"):
                self.token = f"Bearer {status['token']}"
            if status.get("clientCertificateData"):
                # A token and a certificate are both kept, as client-go's newCreds (exec.go:505-520); PEM as
                # the plugin printed it, in kubetune's own private files (_private_file).
                self.cert_file = _private_file(str(status["clientCertificateData"]).encode(), self.private_files)
                self.key_file = _private_file(str(status["clientKeyData"]).encode(), self.private_files)
            stamp = status.get("expirationTimestamp")
            self.expires_at = parse_rfc3339(str(stamp)).timestamp() if stamp else None
            return True

    return Loader


def _in_thread(fn: Callable[[], Connection]) -> asyncio.Future[Connection]:
    """``fn()`` in a thread of its own (not the loop's executor, whose few threads a hung exec plugin
    would hold), its outcome as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Connection] = loop.create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # an outcome nobody waited for is no warning

    def settle(result: Connection | None, exc: BaseException | None) -> None:
        if not future.done():
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: Connection | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting call
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: the operator is gone

    threading.Thread(target=work, name="kubetune-credentials", daemon=True).start()
    return future


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying as is: throttling, server trouble, optimistic-lock conflicts, timeouts."""
        return self.status in (409, 429) or self.status >= 500 or self.status == 0


def path(api_version: str, plural: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """REST path of a collection, an object or a subresource."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    if sub:
        base += f"/{sub}"
    return base


@dataclass
class Kube:
    """The operator's own API calls. One aiohttp session, created in the operator's loop."""

    connection: Connection
    on_request: Callable[[str, str, int], None] = lambda verb, resource, status: None
    """Metrics hook: (RBAC verb, resource path tail, HTTP status)."""
    timeout_s: float = 30.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _token_file: TokenFile | None = field(default=None, init=False)
    reload_timeout_s: float = 30.0
    """How long a call waits for credentials being reloaded (an exec plugin running) before it fails."""
    _refreshing: asyncio.Lock | None = field(default=None, init=False)
    _reload: asyncio.Future[Connection] | None = field(default=None, init=False)
    """The reload under way (its own thread), kept across calls until it ends: one plugin at a time."""
    refreshes: int = field(default=0, init=False)
    """How many times credentials were reloaded (exec plugin run again, token file re-read)."""
    _backoff: ReloadBackoff = field(default_factory=ReloadBackoff, init=False)
    """When a failed reload may run again (kubeconfig.ReloadBackoff)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def bearer(self) -> str | None:
        path = self.connection.token_file
        if path:
            if self._token_file is None or self._token_file.path != path:
                self._token_file = TokenFile(path)
            return self._token_file.bearer()
        return self.connection.token

    async def fresh_connection(self, *, rejected: str | None = None, sent_at: int | None = None) -> Connection:
        """The connection with credentials that are not about to expire.

        ``rejected``: the bearer token (or "" for a client certificate) the API
        server just answered 401 to; the credentials are reloaded unless another
        caller already replaced them: its token differs, or (``sent_at``: the
        :attr:`refreshes` count when the refused request was sent) a reload happened
        since, even one that gave back the same token.  client-go reloads after a
        401 only while the credentials that got it are still the cached ones,
        compared by identity (exec.go:418-430 @ v0.36.3): a plugin that caches its
        token returns the same string, and a token comparison alone would run it once
        per refused request.  Reloading runs in a thread (an exec plugin is a
        process) and one at a time.
        """
        if rejected is None and not self.connection.stale():
            return self.connection  # the common case: no lock, no I/O
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:  # decides and starts a reload; never held while a plugin runs
            current = self.connection
            if rejected is not None and (
                (self.bearer() or "") != rejected or (sent_at is not None and self.refreshes != sent_at)
            ):
                return current  # someone else refreshed while this request was in flight
            if rejected is None and not current.stale():
                return current
            if self._token_file is not None:
                self._token_file.reset()  # re-read now: kubelet may have rotated it
            if self._reload is None:
                if not self._backoff.ready():
                    # a reload failed a moment ago: not run again before its back-off ends (kubeconfig.ReloadBackoff)
                    return self._keep_or_fail(current, rejected, self._backoff.last_error)
                self._reload = asyncio.ensure_future(self._reloaded(current))
                self._reload.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody may wait for it
            reload = self._reload
        # A reload only ahead of expiry (no 401, the credentials still valid) runs in the background and the
        # current credentials serve meanwhile: client-go runs the plugin only once its credentials have
        # expired (``getCreds``: cached creds while ``!a.credsExpired()``, exec.go:386-391, :401-414 @ v0.36.3),
        # so a slow plugin must not hold calls whose credentials are good.
        if rejected is None and still_valid(current.expires_at, current.clock()):
            return current
        # Needed (expired, or after a 401): wait for the shared run, outside the lock, so N callers wait
        # reload_timeout_s together, not one after another.  An exec plugin that does not answer (waiting on a
        # network, a browser login) is killed only after execplugin.DEADLINE_S (client-go waits forever:
        # cmd.Run(), exec.go:471 @ v0.36.3): a call fails with a transient error the caller retries, and the
        # next call waits on the same run, never a second plugin beside a hung one.
        try:
            return await asyncio.wait_for(asyncio.shield(reload), self.reload_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                0,
                "CredentialsError",
                f"reloading credentials: no answer within {self.reload_timeout_s:g} s (an exec plugin still "
                "running; waited for again on the next call)",
            ) from None
        except Exception as exc:  # a failing exec plugin, an unreadable kubeconfig: retried after a back-off
            return self._keep_or_fail(current, rejected, exc)

    async def _reloaded(self, current: Connection) -> Connection:
        """Run the reload (in a thread of its own) and install its connection; its failure starts the back-off."""
        try:
            fresh = await _in_thread(current.refreshed)
        except Exception as exc:
            self._reload = None
            self._backoff.failed(exc)
            log.warning(
                "reloading credentials failed (%r); the current ones, valid until their expiry, are used "
                "meanwhile; tried again in %.0f s",
                exc,
                self._backoff.remaining(),
            )
            raise
        old_session = None
        if (fresh.cert_path, fresh.key_path, fresh.ca_path, fresh.insecure) != (
            current.cert_path,
            current.key_path,
            current.ca_path,
            current.insecure,
        ):
            old_session, self._session = self._session, None  # its TLS context holds the old client certificate
        self.connection = fresh
        self.refreshes += 1
        self._backoff.succeeded()
        self._reload = None
        if old_session is not None:
            await old_session.close()
        # ``current``'s private files (a rotated plugin certificate's) go with the last reference to it
        # (_adopt), not here: another client of this process (kopf's login, an SDK client) may hold the
        # same content in the same file.
        return fresh

    def _keep_or_fail(self, current: Connection, rejected: str | None, exc: BaseException | None) -> Connection:
        """After a failed reload (or during its back-off): ``current`` while it is valid and was not refused
        (a reload ahead of expiry that failed costs nothing, kubeconfig.ReloadBackoff); else a transient error."""
        now = current.clock()
        if rejected is None and still_valid(current.expires_at, now):
            return current
        raise ApiError(
            0,
            "CredentialsError",
            f"reloading credentials failed: {exc!r} (tried again in {self._backoff.remaining():.0f} s)",
        ) from exc

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl: Any = None
            if self.connection.insecure and not self.connection.cert_path:
                ssl = False
            elif self.connection.insecure or self.connection.ca_path or self.connection.cert_path:
                import ssl as ssl_module

                ctx = ssl_module.create_default_context(
                    cafile=None if self.connection.insecure else self.connection.ca_path
                )
                if self.connection.insecure:
                    # insecure-skip-tls-verify skips checking the SERVER's certificate only: the client
                    # certificate is still presented (kubernetes_asyncio: verify_ssl False sets CERT_NONE on the
                    # one context that also loads cert_file, client/rest.py:54-64 @ 36.1.0); aiohttp's
                    # ssl=False would drop it.
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl_module.CERT_NONE
                if self.connection.cert_path:
                    ctx.load_cert_chain(self.connection.cert_path, self.connection.key_path)
                ssl = ctx
            self._session = aiohttp.ClientSession(
                base_url=self.connection.server.rstrip("/") + "/",
                connector=aiohttp.TCPConnector(ssl=ssl, limit=64),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self._session

    def _route(self) -> dict[str, Any]:
        """The kubeconfig cluster's ``proxy-url`` and ``tls-server-name`` for one request, as kubernetes_asyncio's
        client sends them (``proxy=``, ``server_hostname=``: client/rest.py:147-156 @ kubernetes_asyncio 36.1.0)."""
        route: dict[str, Any] = {}
        if self.connection.proxy:
            route["proxy"] = self.connection.proxy
        if self.connection.tls_server_name and self.connection.server.startswith("https"):
            route["server_hostname"] = self.connection.tls_server_name
        return route

    async def request(
        self,
        verb: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        await self.fresh_connection()
        data = None if body is None else json.dumps(body)
        resource = url.split("/namespaces/", 1)[-1].split("/", 1)[-1] if "/namespaces/" in url else url
        for attempt in (1, 2):
            # Logs: a JSON-accepting header, as kubectl sends. With "text/plain" alone the API server
            # answers 406 NotAcceptable whenever it has to return an error Status instead of log text
            # (e.g. the pod's node is gone), hiding the real 404.
            headers = {"Accept": "application/json, */*" if text else "application/json"}
            token, sent_at = self.bearer(), self.refreshes
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                async with self._get_session().request(
                    method, url.lstrip("/"), params=params, data=data, headers=headers, **self._route()
                ) as resp:
                    self.on_request(verb, resource, resp.status)
                    if resp.status == 401 and retry_after_401(attempt, self.connection.refreshable):
                        # Expired or revoked: reload credentials once and resend (kubeconfig.retry_after_401).
                        await resp.read()
                    elif resp.status >= 400:
                        raise await _api_error(resp)
                    else:
                        return await resp.text() if text else await resp.json(content_type=None)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                self.on_request(verb, resource, 0)
                raise ApiError(0, "ConnectionError", repr(exc)) from exc
            await self.fresh_connection(rejected=token or "", sent_at=sent_at)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the operator's calls --------------------------------------------------------

    async def apply(self, api_version: str, plural: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (create or adopt-and-update) with the kubetune field manager."""
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "patch",
            "PATCH",
            path(api_version, plural, meta.get("namespace"), meta["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> None:
        """Delete the object and, in the background, what it owns (gone already: done)."""
        try:
            await self.request(
                "delete",
                "DELETE",
                path(api_version, plural, namespace, name),
                body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request("get", "GET", path(api_version, plural, namespace, name))
            return result
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of /status. Put metadata.resourceVersion in ``patch`` for optimistic locking."""
        result: dict[str, Any] = await self.request(
            "patch",
            "PATCH",
            path(api_version, plural, namespace, name, "status"),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def pod_log(self, namespace: str, pod: str, container: str | None, tail_lines: int, limit_bytes: int) -> str:
        params = {"tailLines": str(tail_lines), "limitBytes": str(limit_bytes)}
        if container:
            params["container"] = container
        result: str = await self.request(
            "get", "GET", path("v1", "pods", namespace, pod, "log"), params=params, text=True
        )
        return result

    async def list_chunk(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[Items, str, str]:
        """One page of a LIST (``limit`` items at most; 0: all): the items, the list's resourceVersion and
        the ``continue`` token of the next page ("" on the last).  A server that does not page answers
        everything at once, without a token."""
        params: dict[str, str] = {}
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        if label_selector:
            params["labelSelector"] = label_selector
        result = await self.request("list", "GET", path(api_version, plural, namespace), params=params or None)
        meta = result.get("metadata") or {}
        return list(result.get("items") or []), str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout_s: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one WATCH from ``resource_version`` (bookmarks on), until the server ends it."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        await self.fresh_connection()  # expired credentials are reloaded first, as for every request
        headers = {"Accept": "application/json"}
        token, sent_at = self.bearer(), self.refreshes
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = path(api_version, plural, namespace)
        resource = url.rsplit("/", 1)[-1]
        try:
            async with self._get_session().get(
                url.lstrip("/"),
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_s + 30),
                **self._route(),
            ) as resp:
                self.on_request("watch", resource, resp.status)
                if resp.status == 401 and retry_after_401(1, self.connection.refreshable):
                    # Revoked before its expiry: reload now; the caller's retry watches with the new one.
                    error = await _api_error(resp)
                    await self.fresh_connection(rejected=token or "", sent_at=sent_at)
                    raise error
                if resp.status >= 400:
                    raise await _api_error(resp)
                buffer = b""
                async for chunk in resp.content.iter_any():  # no line-length limit (objects can be large)
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise ApiError(0, "ConnectionError", repr(exc)) from exc

    async def create(self, api_version: str, plural: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "create", "POST", path(api_version, plural, obj["metadata"].get("namespace")), body=obj
        )
        return result


async def _api_error(resp: aiohttp.ClientResponse) -> ApiError:
    try:
        status_obj = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        status_obj = {"message": (await resp.text())[:500]}
    retry_after = resp.headers.get("Retry-After")
    return ApiError(
        resp.status,
        str(status_obj.get("reason") or resp.reason or "Error"),
        str(status_obj.get("message") or ""),
        float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
