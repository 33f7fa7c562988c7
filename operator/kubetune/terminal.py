"""Following FineTuneJobs from the terminal: ``kubetune get``, ``watch``, ``logs`` and ``plot``.

They talk to the cluster through the user's kubeconfig (every form kubectl
reads, exec plugins included, via ``kubetune.controller.kube.load_connection``)
with a small synchronous client on the standard library: no aiohttp session,
no ``kubernetes`` API classes.  Everything is imported inside the commands, so
``kubetune --help`` pays nothing for them.

Screens: ``get`` prints a kubectl-style table whose lines are cut to the
terminal's width (kubectl does not wrap either); ``watch`` prints phase
changes and Events as lines and redraws one status line (bar, step, loss
sparkline, ETA) with carriage return + erase-line, shortened to fit the width
so it never wraps (a wrapped line is what garbles a redraw).  Without a
terminal, ``watch`` prints a plain progress line when the step changes.

Exit codes: ``watch`` 0 when the job Succeeded, 1 when it Failed or was
deleted, 2 on usage errors or when the API cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kubetune.api import contract
from kubetune.api.status import percent_text, progress_summary

if TYPE_CHECKING:
    import ssl

    from kubetune import sdk
    from kubetune.api import FineTuneJob
    from kubetune.api.sweep import FineTuneSweep

FTJ_PATH = f"/apis/{contract.API_VERSION}"
SPARK = "▁▂▃▄▅▆▇█"
TERMINAL_PHASES = {"Succeeded": 0, "Failed": 1}


class ApiError(Exception):
    """A non-2xx answer: ``status`` (0: no answer), and from the Status body the API server sends with it
    (k8s.io/apimachinery/pkg/apis/meta/v1 type Status) its ``message``, ``reason`` and ``details``
    (``kind``: the resource a NotFound names, ``causes``: the fields a 422 Invalid refuses)."""

    def __init__(self, status: int, message: str, reason: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{message} ({status})")
        self.status = status
        self.message = message
        self.reason = reason
        self.details: dict[str, Any] = details or {}


class Client:
    """A small synchronous client: JSON, watch streams, pod logs, and the few writes the SDK sends
    (server-side apply, merge patch, delete), with the kubeconfig's credentials."""

    def __init__(self, connection: Any) -> None:
        import threading  # noqa: PLC0415 - see _use

        from kubetune.controller.kubeconfig import ReloadBackoff  # noqa: PLC0415 - see _use

        self._backoff = ReloadBackoff()

        self.server = str(connection.server).rstrip("/")
        self.context: ssl.SSLContext | None = None
        self._opener: Any = None
        # One reload at a time, the check inside: the SDK calls one Client from several threads.  client-go's
        # exec authenticator holds its mutex across the expiry check and the plugin run (getCreds,
        # plugin/pkg/client/auth/exec/exec.go:401-414 @ v0.36.3), but runs the plugin only once the
        # credentials have expired; kubetune reloads ahead of expiry, so the lock only starts the run (see
        # _reload).  After a 401 it reloads only while the credentials that got it are still the current ones
        # (maybeRefreshCreds, :418-430).
        self._reloading = threading.Lock()
        self._pending: tuple[threading.Thread, list[BaseException]] | None = None
        """The reload under way (a thread of its own): one plugin at a time."""
        self._use(connection)

    def _use(self, connection: Any) -> None:
        """Talk with ``connection``'s credentials from now on: its bearer token, and its client certificate
        in a new TLS context (an exec plugin may hand out a new certificate each time it runs)."""
        import urllib.request  # noqa: PLC0415 - see below

        from kubetune.controller.kubeconfig import TokenFile  # noqa: PLC0415 - only commands that talk to a cluster pay

        self.conn = connection
        # read again by the operator's rule (kubeconfig.TokenFile); a new one (after a 401) reads the file now
        self._token_file = TokenFile(connection.token_file) if connection.token_file else None
        if self.server.startswith("https"):
            import ssl  # noqa: PLC0415 - ssl and urllib cost ~12 ms at start-up; only commands that talk to a cluster pay

            ctx = _tls_context(connection.ca_path, getattr(connection, "tls_server_name", None))
            if connection.cert_path:
                ctx.load_cert_chain(connection.cert_path, connection.key_path)
            if connection.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.context = ctx
        handlers: list[Any] = [_same_host_credentials()]
        if self.context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        proxy = getattr(connection, "proxy", None)
        if proxy:
            # The kubeconfig's clusters[].cluster.proxy-url, for this cluster's every request (as kubectl:
            # client-go rest.Config.Proxy); without it, urllib's default: $HTTPS_PROXY / $NO_PROXY.
            handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> Client:
        from kubetune.controller.kube import load_connection  # noqa: PLC0415 - only commands that talk to a cluster pay for it

        return cls(load_connection(kubeconfig))

    @property
    def default_namespace(self) -> str:
        return str(self.conn.default_namespace or "default")

    def _token(self) -> str | None:
        if self.conn.token:
            return str(self.conn.token)
        return self._token_file.bearer() if self._token_file is not None else None

    def open(
        self,
        path: str,
        params: dict[str, str] | None = None,
        timeout: float | None = 30,
        *,
        method: str = "GET",
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request (GET unless ``method``; ``body`` is sent as JSON); expiring credentials (exec plugins,
        rotated tokens) are reloaded before they expire and once after a 401, by the operator's rule
        (kubetune.controller.kubeconfig: ``should_reload``, ``retry_after_401``)."""
        from kubetune.controller.kubeconfig import retry_after_401  # noqa: PLC0415 - see _use

        if self.conn.stale():
            self._reload(None)
        sent = self.conn
        try:
            return self._open(path, params, timeout, method, body, content_type)
        except ApiError as exc:
            if exc.status != 401 or not retry_after_401(1, sent.refreshable):
                raise
            self._reload(sent)
            return self._open(path, params, timeout, method, body, content_type)

    def _reload(self, rejected: Any) -> None:
        """Load the credentials again, one run at a time: before a request when they are still stale
        (``rejected`` None), after a 401 when the connection that got it (``rejected``) is still the
        current one; otherwise another thread has just done it.  The lock is held only to decide and start
        the run: a reload ahead of expiry (credentials still valid, no 401) runs in a thread of its own while
        the current credentials serve (client-go runs the plugin only once they have expired, ``getCreds``,
        exec.go:386-391, :401-414 @ v0.36.3); a needed one is waited for outside the lock."""
        import threading  # noqa: PLC0415 - see _use

        from kubetune.controller.kubeconfig import still_valid  # noqa: PLC0415 - see _use

        with self._reloading:
            if not (self.conn.stale() if rejected is None else self.conn is rejected):
                return
            old = self.conn
            valid = rejected is None and still_valid(old.expires_at, old.clock())
            if self._pending is None:
                # A failed reload is not run again before its back-off ends, and credentials that have not
                # expired are kept meanwhile (kubeconfig.ReloadBackoff: the operator's rule too).
                if not self._backoff.ready():
                    if valid:
                        return
                    raise self._backoff.last_error or RuntimeError("reloading credentials failed")
                errors: list[BaseException] = []
                thread = threading.Thread(
                    target=self._run_reload, args=(old, errors), daemon=True, name="kubetune-credentials"
                )
                self._pending = (thread, errors)
                thread.start()
            thread, errors = self._pending
        if valid:
            return
        thread.join()
        if errors:  # the run failed: its error is the caller's (expired credentials, or a 401)
            raise errors[0]

    def _run_reload(self, old: Any, errors: list[BaseException]) -> None:
        """One reload (its own thread): install the fresh connection, or start the back-off."""
        import logging  # noqa: PLC0415 - see _use

        try:
            fresh = old.refreshed()
        except Exception as exc:
            errors.append(exc)
            with self._reloading:
                self._backoff.failed(exc)
                self._pending = None
            logging.getLogger(__name__).warning(
                "reloading credentials failed (%s); the current ones are used until they expire", exc
            )
            return
        with self._reloading:
            self._backoff.succeeded()
            # ``old``'s private files (a rotated plugin certificate's) are removed with the last reference to it
            # (kube._adopt), not here: another client of this process may hold the same file.
            self._use(fresh)
            self._pending = None

    def _open(
        self,
        path: str,
        params: dict[str, str] | None,
        timeout: float | None,
        method: str = "GET",
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        import urllib.error  # noqa: PLC0415 - see __init__
        import urllib.parse  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        url = self.server + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json, */*"})
        if data is not None:
            request.add_header("Content-Type", content_type)
        token = self._token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            try:
                status = json.loads(body)
            except ValueError:
                status = None
            if not isinstance(status, dict):
                raise ApiError(exc.code, body or str(exc.reason)) from None
            details = status.get("details")
            raise ApiError(
                exc.code,
                str(status.get("message") or body),
                str(status.get("reason") or ""),
                details if isinstance(details, dict) else None,
            ) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach the API server {self.server}: {exc.reason}") from None

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        with self.open(path, params) as resp:
            value = json.loads(resp.read())
        return value if isinstance(value, dict) else {}

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """A write (PATCH, POST, DELETE) and its JSON answer."""
        with self.open(path, params, method=method, body=body, content_type=content_type) as resp:
            value = json.loads(resp.read() or b"{}")
        return value if isinstance(value, dict) else {}

    def watch(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        with self.open(path, {**params, "watch": "true", "allowWatchBookmarks": "true"}, timeout=None) as resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)


def _tls_context(ca_path: str | None, server_name: str | None) -> ssl.SSLContext:
    """``ssl.create_default_context(cafile=ca_path)``; with the kubeconfig cluster's ``tls-server-name``, one
    that checks the server's certificate against (and sends as SNI) that name instead of the URL's host, as
    kubectl (rest.Config TLSClientConfig.ServerName) and kubernetes_asyncio (``server_hostname``,
    client/rest.py:60,155-156 @ 36.1.0) do.  urllib has no such option: http.client passes the URL's host
    to the context's ``wrap_socket`` (CPython 3.11 Lib/http/client.py, HTTPSConnection.connect), so the
    context puts the configured name there."""
    import ssl  # noqa: PLC0415 - see Client._use

    if not server_name:
        return ssl.create_default_context(cafile=ca_path)

    class NamedContext(ssl.SSLContext):
        def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["server_hostname"] = server_name
            return super().wrap_socket(sock, *args, **kwargs)

    ctx = NamedContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED, as the default context
    if ca_path:
        ctx.load_verify_locations(cafile=ca_path)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


def _same_site(initial: str, dest: str) -> bool:
    """Whether ``dest``'s host is ``initial``'s or a subdomain of it: where Go's HTTP client (kubectl's)
    still sends Authorization after a redirect (net/http/client.go shouldCopyHeaderOnRedirect and
    isDomainOrSubdomain; read in the search index's copies of golang/go, no tag)."""
    import urllib.parse  # noqa: PLC0415

    a, b = (urllib.parse.urlsplit(u).hostname or "" for u in (initial, dest))
    return b == a or (b.endswith("." + a) and not any(c in b for c in ":%"))


def _same_host_credentials() -> Any:
    """A redirect handler that keeps the bearer token only on the same host (or a subdomain), as
    kubectl's Go client does.  urllib copies every header but Content-Length and Content-Type onto the
    redirected request, whatever its host (CPython 3.11 Lib/urllib/request.py,
    HTTPRedirectHandler.redirect_request): a proxy or SSO gateway in front of the API server that
    redirects elsewhere would otherwise receive the user's token.  (A function, so that urllib is
    imported only by commands that talk to a cluster.)"""
    import urllib.request  # noqa: PLC0415

    class SameHostCredentials(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and not _same_site(req.full_url, new.full_url):
                new.remove_header("Authorization")
            return new

    return SameHostCredentials()


def jobs_path(namespace: str | None, name: str | None = None) -> str:
    base = f"{FTJ_PATH}/namespaces/{namespace}/{contract.PLURAL}" if namespace else f"{FTJ_PATH}/{contract.PLURAL}"
    return f"{base}/{name}" if name else base


SWEEP_PLURAL = "finetunesweeps"
SWEEP_WORDS = ("sweeps", "sweep", SWEEP_PLURAL, "finetunesweep", "fts")
"""``kubetune get sweeps [NAME]``: the words that name the FineTuneSweep kind (as kubectl's plural, singular and
short name)."""


def sweeps_path(namespace: str | None, name: str | None = None) -> str:
    base = f"{FTJ_PATH}/namespaces/{namespace}/{SWEEP_PLURAL}" if namespace else f"{FTJ_PATH}/{SWEEP_PLURAL}"
    return f"{base}/{name}" if name else base


# --- pure formatting ------------------------------------------------------------------------------


def bar(percent: float, width: int) -> str:
    """A progress bar of ``width`` cells (eighths of a cell resolution), rounded down like every
    percentage shown (``api.status.percent_text``): full only at 100 %."""
    width = max(width, 1)
    eighths = int(max(0.0, min(percent, 100.0)) / 100 * width * 8 + 1e-9)
    full, part = divmod(eighths, 8)
    cells = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return cells + "·" * (width - len(cells))


def sparkline(values: Sequence[float], width: int) -> str:
    values = list(values)[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(SPARK[min(int((v - lo) / span * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in values)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return duration(((now or datetime.now(timezone.utc)) - then).total_seconds())


def _progress(job: dict[str, Any]) -> dict[str, Any]:
    progress = (job.get("status") or {}).get("progress")
    return progress if isinstance(progress, dict) else {}


def job_rows(jobs: Sequence[dict[str, Any]], all_namespaces: bool, now: datetime | None = None) -> list[list[str]]:
    """``kubetune get`` rows (header first): kubectl get ftj's columns with a progress bar."""
    header = ["NAMESPACE"] * all_namespaces + ["NAME", "PHASE", "METHOD", "PROGRESS", "LOSS", "ETA", "AGE"]
    rows = [header]
    for job in jobs:
        meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
        p = _progress(job)
        percent = float(p.get("percent") or 0.0)
        progress = f"{bar(percent, 10)} {percent_text(percent):>4}" + (
            f" {p.get('step', 0)}/{p.get('totalSteps', 0)}" if p.get("totalSteps") else ""
        )
        loss = p.get("loss")
        running = status.get("phase") in ("Running", None, "Pending")
        row = [meta.get("namespace", "")] * all_namespaces + [
            str(meta.get("name", "")),
            str(status.get("phase") or "Pending"),
            str(spec.get("method", "")),
            progress if p else "-",
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
            duration(p.get("etaSeconds")) if running and p.get("etaSeconds") is not None else "-",
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append(row)
    return rows


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def sweep_rows(sweeps: Sequence[dict[str, Any]], all_namespaces: bool, now: datetime | None = None) -> list[list[str]]:
    """``kubetune get sweeps`` rows (header first): kubectl get fts's columns."""
    rows = [["NAMESPACE"] * all_namespaces + ["NAME", "PHASE", "TRIALS", "METRIC", "BEST", "BEST TRIAL", "AGE"]]
    for sweep in sweeps:
        meta, spec, status = sweep.get("metadata") or {}, sweep.get("spec") or {}, sweep.get("status") or {}
        objective: dict[str, Any] = spec["objective"] if isinstance(spec.get("objective"), dict) else {}
        rows.append(
            [meta.get("namespace", "")] * all_namespaces
            + [
                str(meta.get("name", "")),
                str(status.get("phase") or "Pending"),
                str(status.get("summary") or "-"),
                f"{objective.get('metric', '-')} ({objective.get('goal', 'minimize')})",
                _number(status.get("bestValue")),
                str(status.get("bestTrial") or "-"),
                age(meta.get("creationTimestamp"), now),
            ]
        )
    return rows


def trial_rows(sweep: dict[str, Any]) -> list[list[str]]:
    """One sweep's trials (header first): number, FineTuneJob, state, parameters, value, last eval loss, why."""
    status = sweep.get("status") or {}
    rows = [["#", "TRIAL", "STATE", "PARAMETERS", "VALUE", "LAST EVAL", "MESSAGE"]]
    for t in status.get("trials") or []:
        if not isinstance(t, dict):
            continue
        params = ", ".join(
            f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in (t.get("parameters") or {}).items()
        )
        last = (t.get("intermediate") or [{}])[-1] if t.get("intermediate") else {}
        best = " *" if t.get("name") == status.get("bestTrial") else ""
        rows.append(
            [
                str(t.get("number", "")),
                str(t.get("name", "")) + best,
                str(t.get("state", "")),
                params or "-",
                _number(t.get("value")),
                f"{_number(last.get('value'))}@{last.get('step')}" if last else "-",
                str(t.get("message") or ""),
            ]
        )
    return rows


def format_table(rows: Sequence[Sequence[str]], width: int | None) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if width:
        lines = [line[:width] for line in lines]
    return "\n".join(lines) + "\n"


def status_line(job: dict[str, Any], losses: Sequence[float], width: int) -> str:
    """One line that fits ``width`` columns: the least useful parts go first when it is narrow."""
    p = _progress(job)
    phase = str((job.get("status") or {}).get("phase") or "Pending")
    percent = float(p.get("percent") or 0.0)
    steps = f"{p.get('step', 0)}/{p.get('totalSteps', 0)}" if p.get("totalSteps") else ""
    loss = p.get("loss")
    parts = {
        "phase": phase,
        "pct": f"{percent_text(percent, 1):>6}",
        "steps": steps,
        "loss": f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "",
        "spark": sparkline(losses, 16) if len(losses) > 1 else "",
        "eta": f"eta {duration(p.get('etaSeconds'))}" if p.get("etaSeconds") is not None and phase == "Running" else "",
    }
    order = ["phase", "pct", "steps", "loss", "spark", "eta"]
    for drop in ([], ["spark"], ["spark", "eta"], ["spark", "eta", "steps"], ["spark", "eta", "steps", "loss"]):
        text = " ".join(parts[k] for k in order if parts[k] and k not in drop)
        room = width - 1 - len(text) - 1  # never write the last column: some terminals wrap there
        if room >= 8 or drop == ["spark", "eta", "steps", "loss"]:
            bar_width = min(max(room, 0), 30)
            line = (bar(percent, bar_width) + " " + text) if bar_width >= 4 else text
            return line[: max(width - 1, 1)]
    return ""  # pragma: no cover


# --- commands -------------------------------------------------------------------------------------


def _terminal_width(stream: TextIO) -> int | None:
    if not stream.isatty():
        return None
    return shutil.get_terminal_size((80, 24)).columns


def _sdk_client(args: argparse.Namespace) -> sdk.Client:
    """The SDK's client: these commands are its clients, so they print what it returns (kubetune/sdk.py)."""
    from kubetune import sdk  # noqa: PLC0415 - sdk imports this module

    return sdk.Client(getattr(args, "namespace", None), getattr(args, "kubeconfig", None))


def _fail(command: str, exc: Exception) -> int:
    """One line (the SDK error's message and hint); exit 1 for a missing job or pod, else 2."""
    print(f"kubetune {command}: {exc}", file=sys.stderr)
    return 1 if getattr(exc, "status", None) == 404 else 2


def _api_dict(job: FineTuneJob | FineTuneSweep) -> dict[str, Any]:
    """A typed job as the API shape the screens below read (camelCase, no nulls).  A job the model refuses
    (``sdk.read_job``) holds its spec as plain dicts: serialised as they are, without pydantic's warning."""
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return job.to_api()


def cmd_get(args: argparse.Namespace) -> int:
    if args.name in SWEEP_WORDS:
        return _get_sweeps(args)
    if args.name in ("ftj", "finetunejobs", "finetunejob"):  # kubectl's form: `kubetune get ftj [NAME]`
        args.name, args.sweep = args.sweep, None
    if getattr(args, "sweep", None):
        print(
            f"kubetune get: one NAME, or a kind (sweeps, ftj) and a NAME; got {args.name} {args.sweep}", file=sys.stderr
        )
        return 2
    got = _get(
        args,
        "FineTuneJobs",
        lambda c: [c.get(args.name)] if args.name else c.list(all_namespaces=args.all_namespaces),
        job_rows,
    )
    return got if isinstance(got, int) else 0


def _get(
    args: argparse.Namespace,
    kind: str,
    read: Callable[[sdk.Client], Sequence[FineTuneJob | FineTuneSweep]],
    rows: Callable[[list[dict[str, Any]], bool], list[list[str]]],
) -> list[dict[str, Any]] | int:
    """``kubetune get`` of ``kind``: the objects ``read`` returns, as the API server serves them, drawn as
    the table of their ``rows`` (with a NAMESPACE column when read in every namespace), or a line on
    stderr saying there are none; returned.  The exit code instead when the SDK failed."""
    from kubetune.sdk import KubetuneError  # noqa: PLC0415

    try:
        client = _sdk_client(args)
        ns = None if args.all_namespaces else client.namespace
        found = read(client)
    except KubetuneError as exc:
        return _fail("get", exc)
    objs = [_api_dict(o) for o in found]
    if not objs:
        print(f"No {kind} found in {'any namespace' if ns is None else ns + ' namespace'}.", file=sys.stderr)
    else:
        sys.stdout.write(format_table(rows(objs, ns is None), _terminal_width(sys.stdout)))
    return objs


def _get_sweeps(args: argparse.Namespace) -> int:
    """``kubetune get sweeps``: the sweeps as kubectl get fts shows them; with a NAME, also its trials."""
    got = _get(
        args,
        "FineTuneSweeps",
        lambda c: [c.get_sweep(args.sweep)] if args.sweep else c.list_sweeps(all_namespaces=args.all_namespaces),
        sweep_rows,
    )
    if isinstance(got, int):
        return got
    if args.sweep and got:
        sys.stdout.write("\n" + format_table(trial_rows(got[0]), _terminal_width(sys.stdout)))
    return 0


class _Screen:
    """Lines scroll above; one status line is redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._status = ""
        self._plain_step: Any = None

    def line(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((80, 24)).columns
            self.out.write("\r\x1b[2K" + text[: max(width - 1, 1)] + "\n" + self._status)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def status(self, job: dict[str, Any], losses: Sequence[float]) -> None:
        if self.tty:
            self._status = status_line(job, losses, shutil.get_terminal_size((80, 24)).columns)
            self.out.write("\r\x1b[2K" + self._status)
        else:
            p = _progress(job)
            if p and p.get("step") != self._plain_step:
                self._plain_step = p.get("step")
                loss = p.get("loss")
                text = f"progress {progress_summary(int(p.get('step') or 0), int(p.get('totalSteps') or 0))}"
                text += f" loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
                text += f" eta {duration(p.get('etaSeconds'))}" if p.get("etaSeconds") is not None else ""
                self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self._status:
            self.out.write("\n")
            self.out.flush()


def _event_key(event: dict[str, Any]) -> tuple[str, Any]:
    return (
        str((event.get("metadata") or {}).get("uid") or (event.get("metadata") or {}).get("name")),
        event.get("count"),
    )


def event_time(event: dict[str, Any]) -> datetime | None:
    """When the Event last happened, from its own fields (k8s.io/api/core/v1/types.go, type Event,
    read in openshift/microshift's vendored Kubernetes 1.36 @ 8e16b12, lines 7579-7650):
    ``series.lastObservedTime`` (events.k8s.io series), ``lastTimestamp`` (core, seconds),
    ``eventTime`` (MicroTime), ``firstTimestamp``, else the object's creationTimestamp."""
    for value in (
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
    return None


def event_stamp(event: dict[str, Any]) -> str:
    """The Event's own time in local time: HH:MM:SS today, with the date before today; now when it has none."""
    return _local_stamp(event_time(event))


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow one job until it Succeeds (exit 0) or Fails (exit 1): the SDK's ``Client.watch``, drawn."""
    from kubetune.sdk import KubetuneError  # noqa: PLC0415

    screen = _Screen(sys.stdout)
    losses: list[float] = []
    phase: str | None = None
    last_step: Any = None
    try:
        client = _sdk_client(args)
        for update in client.watch(args.name, events=True, events_interval=args.events_interval):
            if update.kind == "event" and update.event is not None:
                e = update.event
                stamp = _local_stamp(e.time)
                screen.line(f"{stamp} {e.type} {e.reason}: {e.message}")
                continue
            if update.kind == "deleted":
                screen.line(f"FineTuneJob {client.namespace}/{args.name} was deleted")
                screen.close()
                return 1
            if update.phase != phase or phase is None:
                phase = update.phase
                screen.line(
                    f"{time.strftime('%H:%M:%S')} phase {phase}" + (f": {update.message}" if update.message else "")
                )
            if update.loss is not None and update.step != last_step:
                losses.append(update.loss)
                last_step = update.step
            job = _api_dict(update.job) if update.job is not None else {}
            screen.status(job, losses)
            if update.finished:
                screen.close()
                return TERMINAL_PHASES[update.phase]
    except KubetuneError as exc:
        screen.close()
        return _fail("watch", exc)
    except KeyboardInterrupt:
        screen.close()
        return 130
    screen.close()
    return 2  # pragma: no cover - watch ends only at a terminal phase or deletion


def _local_stamp(when: datetime | None) -> str:
    """An Event's own time in local time: HH:MM:SS today, with the date before today; now when it has none."""
    if when is None:
        return time.strftime("%H:%M:%S")
    local = when.astimezone()
    return local.strftime("%H:%M:%S" if local.date() == datetime.now().astimezone().date() else "%Y-%m-%d %H:%M:%S")


def pod_for_rank(kind: str, rank: int | None) -> tuple[str, int, str]:
    """(replica type, replica index, container) of a Kubeflow v1 job's pod whose log holds a rank's
    output (kept for scripts; ``find_pod`` asks the child's backend, which knows every kind)."""
    from kubetune.cluster.backends import backend_for_kind
    from kubetune.cluster.backends.kubeflow import KUBEFLOW_REPLICA_INDEX_LABEL, KUBEFLOW_REPLICA_TYPE_LABEL

    backend = backend_for_kind(kind) or backend_for_kind("PyTorchJob")
    assert backend is not None
    ref = backend.pod_for_rank("", rank)
    return str(ref.labels[KUBEFLOW_REPLICA_TYPE_LABEL]), int(ref.labels[KUBEFLOW_REPLICA_INDEX_LABEL]), ref.container


def find_pod(client: Client, ns: str, job: dict[str, Any], rank: int | None) -> tuple[str | None, str, str]:
    """(pod name or None, container, what was looked for) of the pod holding ``rank``'s output.

    The child's backend (cluster/backends) says which labels that pod carries: PyTorchJob Master /
    Worker N-1, MPIJob Launcher / Worker N, TrainJob node job N."""
    from kubetune.cluster.backends import BACKENDS, backend_for_kind, get_backend

    child = (job.get("status") or {}).get("job") or {}
    name = str(child.get("name") or job["metadata"]["name"])
    backend = backend_for_kind(str(child.get("kind") or ""))
    if backend is None:
        wanted = str(((job.get("spec") or {}).get("distributed") or {}).get("backend") or "auto").lower()
        backend = get_backend(wanted) if wanted in BACKENDS or wanted == "auto" else get_backend("pytorchjob")
    ref = backend.pod_for_rank(name, rank)
    selector = ",".join(f"{k}={v}" for k, v in ref.labels.items())
    pods = client.get(f"/api/v1/namespaces/{ns}/pods", {"labelSelector": selector}).get("items") or []
    newest = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))[-1:] or [None]
    return (newest[0]["metadata"]["name"] if newest[0] else None), ref.container, f"{ref.description} {ns}/{name}"


def cmd_logs(args: argparse.Namespace) -> int:
    from kubetune.sdk import KubetuneError, NoPodYet  # noqa: PLC0415

    try:
        client = _sdk_client(args)
        for chunk in client.log_stream(args.name, rank=args.rank, follow=args.follow, tail=args.tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except NoPodYet as exc:
        print(f"kubetune logs: {exc}", file=sys.stderr)
        return 1
    except KubetuneError as exc:
        return _fail("logs", exc)
    except KeyboardInterrupt:
        return 130
    return 0


def read_losses(source: str, client_args: argparse.Namespace) -> tuple[list[tuple[int, float]], str]:
    """(step, loss) pairs and where they came from: a local output folder's trainer_log.jsonl, else the
    cluster (the SDK's ``read_trainer_log`` and ``Client.metrics``)."""
    from kubetune import sdk  # noqa: PLC0415

    if source.startswith(
        ("s3://", "gs://", "az://")
    ):  # <spec.storage.outputs.uri><namespace>/<job>/ of a job that succeeded
        from kubetune import localserve  # noqa: PLC0415
        from kubetune.trainer.errors import TrainerError  # noqa: PLC0415

        try:
            folder = localserve.fetch_results(
                source, endpoint=getattr(client_args, "endpoint", None), only=("trainer_log.jsonl",)
            )
        except (TrainerError, OSError) as exc:
            raise sdk.KubetuneError(str(exc)) from None
        rows = sdk.read_trainer_log(folder / "trainer_log.jsonl")
        return rows.losses(), source
    path = Path(source)
    log = path / "trainer_log.jsonl" if path.is_dir() else path
    rows = sdk.read_trainer_log(log) if log.is_file() else _sdk_client(client_args).metrics(source)
    return rows.losses(), rows.source


def cmd_plot(args: argparse.Namespace) -> int:
    from kubetune.sdk import KubetuneError, loss_figure  # noqa: PLC0415

    try:
        points, where = read_losses(args.source, args)
    except KubetuneError as exc:
        return _fail("plot", exc)
    if not points:
        print(
            f"kubetune plot: no loss values in {args.source} (a finished job's outputs folder has trainer_log.jsonl)",
            file=sys.stderr,
        )
        return 1
    losses = [loss for _, loss in points]
    fig = loss_figure(points, f"{Path(args.source).name if Path(args.source).exists() else args.source}: training loss")
    out = Path(args.output or f"{Path(args.source).name or 'loss'}-loss.png")
    fig.savefig(out)
    print(
        f"{out}  ({len(points)} point{'s' if len(points) != 1 else ''} from {where}; "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f})"
    )
    if len(points) == 1:
        print(
            "only the latest point is known (the training pod is gone); "
            "give the job's outputs folder for the whole curve",
            file=sys.stderr,
        )
    return 0


def add_commands(sub: Any) -> None:
    """Register get/watch/logs/plot on the ``kubetune`` parser (called by kubetune.cli)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
        p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")

    p = sub.add_parser(
        "get",
        help="list FineTuneJobs with their progress (like kubectl get ftj); `get sweeps [NAME]`: "
        "FineTuneSweeps and a sweep's trials",
    )
    p.add_argument(
        "name", nargs="?", metavar="NAME", help="a FineTuneJob; or sweeps (then an optional sweep NAME), or ftj NAME"
    )
    p.add_argument("sweep", nargs="?", metavar="SWEEP", help=argparse.SUPPRESS)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    common(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "watch", help="follow a FineTuneJob: progress bar, loss, ETA, phases, Events; exit 0 Succeeded, 1 Failed"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--events-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("logs", help="print the training log of a FineTuneJob (rank 0's pod unless --rank)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="stream the log until the pod ends")
    p.add_argument(
        "--rank",
        type=int,
        help="node rank (PyTorchJob: 0 Master, N Worker N-1; MPIJob: Worker N; default: the pod with rank 0's output)",
    )
    p.add_argument("--tail", type=int, help="only the last N lines")
    common(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("plot", help="plot the training loss as a PNG, from a job's outputs folder or from the cluster")
    p.add_argument(
        "source",
        metavar="OUTPUT_DIR|URI|NAME",
        help="a job's output folder (trainer_log.jsonl), its results in a bucket "
        "(<spec.storage.outputs.uri><namespace>/<job>/, s3://, gs:// or az://), "
        "or a FineTuneJob name (rank 0's progress lines while its pod exists, else the latest point in status)",
    )
    p.add_argument("-o", "--output", help="PNG file (default: <name>-loss.png)")
    p.add_argument("--endpoint", help="S3 API endpoint for a bucket URI (the spec's storage.objectStore.endpoint)")
    common(p)
    p.set_defaults(func=cmd_plot)
