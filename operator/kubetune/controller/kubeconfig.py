"""Kubeconfig files read once, with kubectl's rules: the one loader of the operator, the CLI and the terminal commands.

kubectl (client-go's ``tools/clientcmd/loader.go`` @ v0.36.3) picks and merges files like this:

* ``--kubeconfig FILE`` (the explicit path) is read alone, unmerged, and must exist (loader.go:185-186,
  :208-212);
* otherwise every file of ``$KUBECONFIG`` (``filepath.SplitList``: split on ``os.pathsep``), in order,
  duplicates dropped (:164-168); without ``$KUBECONFIG``, ``~/.kube/config`` (:171-172);
* a missing file is skipped (:228-233), an empty one is an empty config (``Load``, :441-443), one that
  cannot be parsed is an error (:235-238);
* "The first file to set a particular map key wins and map key's value is never changed" (:190-194): a
  whole cluster, user or context entry comes from the first file that names it, none of its fields
  from a later file; ``current-context`` too comes from the first file that sets it.  (The code:
  the files merged last-to-first, :256-264, each merge replacing whole map entries and non-empty
  values with the later-merged file's, merge.go:25-29, and that result merged over the forward
  merge, :266-274.)
* relative paths inside a file are resolved against that file's folder (:195-196, ResolveLocalPaths
  :511-540): done here per entry (``_resolved``), so every reader gets absolute paths.

Only reading happens here (no credentials, no cluster contact, no kubernetes_asyncio import), so
``kubetune render`` can ask for the context's namespace cheaply; ``kube.load_connection`` hands
the merged entries to kubernetes_asyncio's loader for credentials (exec plugins and all).

When credentials are loaded again is decided here too, once, for both clients: the operator's
``kube.Kube`` (and through it kopf's login, ``handlers.login``) and the SDK's and CLI's
``terminal.Client``: :func:`should_reload` (before a request), :func:`retry_after_401` (after one),
and :class:`TokenFile` (a token file that kubelet rotates).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.safeyaml import InputError, read_documents

DEFAULT_FILE = "~/.kube/config"


class KubeconfigError(Exception):
    """A kubeconfig file kubectl would refuse too (an explicit file missing, one that cannot be parsed)."""


def kubeconfig_files(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The files kubectl reads, in precedence order (see the module docstring)."""
    if explicit:
        if not os.path.exists(explicit):
            raise KubeconfigError(f"kubeconfig {explicit}: no such file")
        return [explicit]
    env = os.environ if environ is None else environ
    listed = env.get("KUBECONFIG", "")
    if listed:
        return list(dict.fromkeys(p for p in listed.split(os.pathsep) if p))
    return [os.path.expanduser(DEFAULT_FILE)]


@dataclass(frozen=True)
class Entry:
    """One cluster, user or context entry and the file it came from (where its relative paths start)."""

    name: str
    value: Mapping[str, Any]
    file: str


@dataclass(frozen=True)
class Kubeconfig:
    """The merged view of the files, as kubectl sees it."""

    files: tuple[str, ...] = ()
    """The files actually read (missing ones skipped)."""
    current_context: str = ""
    clusters: Mapping[str, Entry] = field(default_factory=dict)
    users: Mapping[str, Entry] = field(default_factory=dict)
    contexts: Mapping[str, Entry] = field(default_factory=dict)

    @property
    def context(self) -> Mapping[str, Any]:
        """The current context's body (cluster, user, namespace); empty when unset or unknown."""
        entry = self.contexts.get(self.current_context)
        return entry.value if entry is not None else {}

    @property
    def namespace(self) -> str | None:
        """The current context's namespace, as kubectl's default for ``-n``."""
        value = self.context.get("namespace")
        return str(value) if value else None


_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def read_kubeconfig(files: Sequence[str]) -> Kubeconfig:
    """Merge ``files`` in order, the first value winning (see the module docstring)."""
    read: list[str] = []
    current = ""
    merged: dict[str, dict[str, Entry]] = {section: {} for section in _SECTIONS}
    for name in files:
        if not os.path.exists(name):
            continue  # loader.go:228-233
        try:
            docs = read_documents(name)  # bounded like a manifest: a kubeconfig is YAML from anywhere too
        except InputError as exc:
            raise KubeconfigError(f"error loading config file {name!r}: {exc}") from exc
        doc = docs[0] if docs else None
        if doc is None:
            doc = {}  # an empty file is an empty config (loader.go:441-443)
        if not isinstance(doc, dict):
            raise KubeconfigError(f"error loading config file {name!r}: not a kubeconfig (a mapping)")
        read.append(name)
        current = current or str(doc.get("current-context") or "")
        for section, body in _SECTIONS.items():
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") is not None and isinstance(item.get(body) or {}, dict):
                    value = _resolved(section, item.get(body) or {}, name)
                    merged[section].setdefault(str(item["name"]), Entry(str(item["name"]), value, name))
    return Kubeconfig(tuple(read), current, merged["clusters"], merged["users"], merged["contexts"])


_FILE_FIELDS = {"clusters": ("certificate-authority",), "users": ("client-certificate", "client-key", "tokenFile")}


def _resolved(section: str, value: Mapping[str, Any], file: str) -> Mapping[str, Any]:
    """``value`` with its relative file paths made absolute against ``file``'s folder, as client-go's
    ResolveLocalPaths does for every entry of the merged config (loader.go:511-540): a cluster's
    certificate-authority; a user's client-certificate, client-key, tokenFile, and its exec command
    when that has a path separator (GetClusterFileReferences/GetAuthInfoFileReferences, :605-616).
    Done here, per entry, because kubernetes_asyncio resolves a user's certificate and key against the
    CLUSTER's file (``_load_cluster_info``, config/kube_config.py:436-458 @ 36.1.0): wrong once they come
    from two files."""
    fields = _FILE_FIELDS.get(section)
    if not fields:
        return value
    base = os.path.abspath(os.path.dirname(file))
    out = dict(value)
    for key in fields:
        ref = out.get(key)
        if isinstance(ref, str) and ref and not os.path.isabs(ref):
            out[key] = os.path.join(base, ref)
    exec_ = out.get("exec")
    if section == "users" and isinstance(exec_, dict):
        command = exec_.get("command")
        if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
            out["exec"] = {**exec_, "command": os.path.join(base, command)}
    return out


def load_kubeconfig(explicit: str | None = None) -> Kubeconfig:
    """The kubeconfig kubectl would use: ``--kubeconfig`` alone, else ``$KUBECONFIG``'s files
    merged, else ~/.kube/config."""
    return read_kubeconfig(kubeconfig_files(explicit))


def kubeconfig_namespace(explicit: str | None = None) -> str:
    """The current context's namespace, "default" when none is set or nothing can be read."""
    try:
        return load_kubeconfig(explicit).namespace or "default"
    except KubeconfigError:
        return "default"


# --- when credentials are loaded again (both clients) ----------------------------------------------

REFRESH_EARLY_S = 60.0
"""At most this long before expiry, credentials are reloaded."""

TOKEN_FILE_PERIOD_S = 60.0
"""A token file's token is treated as expiring this long after it was read (then read again)."""

clock: Callable[[], float] = time.time
"""The rule's clock (epoch seconds). Tests set it to stand at a point of the rule instead of sleeping."""
monotonic: Callable[[], float] = time.monotonic
"""The back-off's clock (:class:`ReloadBackoff`), replaceable by a test as :data:`clock` is."""


def should_reload(expires_at: float | None, loaded_at: float, now: float | None = None) -> bool:
    """Whether credentials that expire at ``expires_at`` (epoch seconds; None: never) and were loaded at
    ``loaded_at`` must be loaded again before the next request: once they are within a fifth of their
    lifetime of expiry, at most :data:`REFRESH_EARLY_S` (a 10-minute exec token: 60 s early; a 2 s one:
    0.4 s early).

    client-go's exec authenticator keeps its credentials until they have expired (``credsExpired``:
    ``a.now().After(a.exp)``, zero expiry never expires; ``getCreds`` runs the plugin again only then:
    plugin/pkg/client/auth/exec/exec.go:386-391, :401-414 @ v0.36.3), and its token-file source reads
    again ``leeway`` (10 s) before the token's expiry (transport/token_source.go:162-176).  Reloading
    early, as client-go's file source does, keeps a request from being sent with a token that expires in
    flight or by the server's clock (skew): a 401 then never happens in normal operation."""
    if expires_at is None:
        return False
    now = clock() if now is None else now
    early = min(REFRESH_EARLY_S, max(expires_at - loaded_at, 0.0) / 5)
    return now >= expires_at - early


def retry_after_401(attempt: int, refreshable: bool) -> bool:
    """After a 401 to the ``attempt``-th sending of a request (1 first): reload the credentials and send
    it once more, when reloading can give other credentials (a kubeconfig to read again, with its exec
    plugin; a token file).  A 401 to the resent request, or to static credentials, is the caller's
    error (the SDK's ``Unauthorized``, the operator's ``ApiError``): one reload, never a loop.

    client-go on a 401 runs the exec plugin again unless another request already did
    (``maybeRefreshCreds``: exec.go:378-382, :416-430 @ v0.36.3) and drops a token file's cached token
    (``ResetTokenOlderThan``: transport/token_source.go:104-113, :197-204), but hands the 401 to its
    caller without resending; both kubetune clients resend once, so one expired or revoked token costs
    the caller nothing."""
    return attempt == 1 and refreshable


RELOAD_BACKOFF_S = (1.0, 60.0)
"""After a failed reload (an exec plugin's error), the next try waits this long, doubled per failure up to
the second value."""


class ReloadBackoff:
    """When a failed reload may be tried again, and whether the credentials in hand may still be used.

    A plugin that fails (its identity provider down, a network away) made both clients run it again before
    every request, and fail every request although the credentials they held had not expired: client-go keeps
    its cached credentials until they have expired (``credsExpired``/``getCreds``, exec.go:386-391, :401-414
    @ v0.36.3: it runs the plugin only then), so an early reload is kubetune's own and its failure must cost
    nothing while they are valid.  So: after a failure the plugin is not run again for
    :data:`RELOAD_BACKOFF_S` (1 s, doubling to 60 s); meanwhile, and when the reload failed, credentials
    that have not expired are kept (with a warning); expired ones (or a 401) make the failure the caller's
    error."""

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        """On the monotonic clock (:data:`monotonic`): a wall clock stepped back (NTP, a VM resumed) must not stretch
        the back-off (credentials' ``expires_at`` stays on the wall clock, as the issuer's timestamp is)."""
        self.last_error: BaseException | None = None

    def ready(self) -> bool:
        """Whether a reload may run now."""
        return monotonic() >= self.retry_at

    def remaining(self) -> float:
        """Seconds until a reload may run again (0 when it may now)."""
        return max(0.0, self.retry_at - monotonic())

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = exc
        first, most = RELOAD_BACKOFF_S
        self.retry_at = monotonic() + min(most, first * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures, self.retry_at, self.last_error = 0, 0.0, None


def still_valid(expires_at: float | None, now: float) -> bool:
    """Whether credentials that expire at ``expires_at`` (None: never) have not expired yet (client-go's
    ``credsExpired`` negated: exec.go:386-391 @ v0.36.3)."""
    return expires_at is None or now < expires_at


class TokenFile:
    """A bearer token read from a file that is rotated in place (the in-cluster ServiceAccount token, a
    kubeconfig ``tokenFile``): read again when :func:`should_reload` says so for a token taken to expire
    :data:`TOKEN_FILE_PERIOD_S` after its read (so every 48 s), and after a 401 (:meth:`reset`).
    client-go's file source: a token is kept one minute, read again 10 s before (``period``/``leeway``,
    transport/token_source.go:69-80 @ v0.36.3; kubelet rotates a projected token at 80 % of its
    10-minute lifetime), trimmed (:138-146)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._token: str | None = None
        self._read_at = 0.0
        self.reads = 0

    def bearer(self) -> str | None:
        """The token (None when the file cannot be read and none was read before: the server's 401 says so)."""
        if self._token is None or should_reload(self._read_at + TOKEN_FILE_PERIOD_S, self._read_at):
            try:
                with open(self.path, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError:
                return self._token  # client-go keeps the last token when a re-read fails (token_source.go:182-189)
            self._token, self._read_at, self.reads = token, clock(), self.reads + 1
        return self._token

    def reset(self) -> None:
        """Forget the token: the next :meth:`bearer` reads the file (after a 401: kubelet may have rotated it)."""
        self._token = None


__all__ = [
    "Entry",
    "Kubeconfig",
    "KubeconfigError",
    "ReloadBackoff",
    "kubeconfig_files",
    "kubeconfig_namespace",
    "load_kubeconfig",
    "read_kubeconfig",
    "retry_after_401",
    "should_reload",
    "still_valid",
    "TokenFile",
]
