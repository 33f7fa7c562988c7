"""The progress intake: rank 0 POSTs its progress to the operator (the push transport).

The design of Kubeflow Trainer's KEP-2779, with the operator as the only writer of status:

1. The renderer gives every training pod a *projected* ServiceAccount token whose only
   audience is ``kubetune`` (``contract.PROGRESS_AUDIENCE``), bound to the pod, valid for
   600 s and rotated by the kubelet; ``automountServiceAccountToken`` stays false.  The API
   server authenticates a ServiceAccount token only for its own audiences, so this token
   opens nothing there: the pod still has no Kubernetes credentials.
2. Rank 0 POSTs ``{"namespace", "name", "lines": [...]}`` to ``contract.PROGRESS_PATH`` with
   ``Authorization: Bearer <token>``; ``lines`` are the very ``kubetune.progress`` /
   ``kubetune.stage`` lines it also prints, parsed by the same ``read_log`` as a log tail.
3. The operator asks the API server about the token with a TokenReview (``spec.audiences:
   [kubetune]``; an answer whose ``status.audiences`` lacks ``kubetune`` is refused, as the
   TokenReview docs ask of audience-aware clients).  The answer names the ServiceAccount
   (``system:serviceaccount:<ns>:<sa>``) and the bound pod (``user.extra``
   ``authentication.kubernetes.io/pod-name`` and ``pod-uid``).
4. The report is accepted only when that pod is in the job's namespace, carries the job's
   label ``kubetune.io/finetunejob=<name>`` and has that uid (one LIST by label and name).

What a report can change: ``status.progress`` and Running <-> Exporting of that one job,
nothing else (terminal phases come from the Kubeflow job, never from the trainer); the
operator stays the only writer of status and validates every value (``parse_progress``).

Why plain HTTP inside the cluster is acceptable (TLS is available with
``--progress-tls-cert/--progress-tls-key``): what travels is a token that the API server
refuses, that expires within 10 minutes, and that can only ever report progress for the
pod's own job; someone who can read pod-network traffic could at worst replay or alter the
progress of that job until the token expires.  Anyone who can create pods in the job's
namespace is already trusted with that job (they can read its outputs volume and run code
as it), which is the same trust boundary as the log transport.  Use TLS (or a mesh with
mTLS) where the pod network itself is not trusted.

Cost: tokens that cannot pass (not a JWT, another audience, expired by their own claims)
are refused without asking the API server; a TokenReview is cached by the token's SHA-256 until the token expires (at
most ``review_cache_s``) and the pod check by pod uid, so a steady job costs one TokenReview per token rotation (the
kubelet rewrites the file at 80% of 600 s: one every ~8 minutes) and one pod LIST per pod.  Failed reviews are cached
briefly, TokenReviews share a global budget, and each pod has its own rate limit, so a flood of bad tokens cannot turn
into a flood of API requests.  Request bodies are capped (``max_body_bytes``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web

from kubetune.api.contract import LABEL_JOB, PROGRESS_AUDIENCE, PROGRESS_PATH
from kubetune.api.progressline import STAGE_EVENTS, parse_line

from .kube import ApiError, Kube, path
from .progress import LogReading, parse_progress, read_log

log = logging.getLogger(__name__)

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
SA_USER_PREFIX = "system:serviceaccount:"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")

Key = tuple[str, str]


class ProgressBoard:
    """The newest pushed report per FineTuneJob, in memory (lost on restart: the log tail is
    the fallback, and the trainer re-sends its state every minute)."""

    def __init__(self, max_jobs: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._latest: OrderedDict[Key, tuple[LogReading, float]] = OrderedDict()
        self._max = max_jobs
        self.on_update: Callable[[str, str], None] | None = None
        """Called after each record (the controller enqueues a reconcile of the key)."""

    def record(self, namespace: str, name: str, reading: LogReading, at: float) -> None:
        key = (namespace, name)
        with self._lock:
            self._latest[key] = (reading, at)
            self._latest.move_to_end(key)
            while len(self._latest) > self._max:
                self._latest.popitem(last=False)
        callback = self.on_update
        if callback is not None:
            try:
                callback(namespace, name)
            except Exception:  # a consumer's bug must not fail the trainer's request
                log.exception("progress board on_update(%s/%s) failed", namespace, name)

    def latest(self, namespace: str, name: str) -> tuple[LogReading, float] | None:
        with self._lock:
            return self._latest.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted job's report."""
        with self._lock:
            self._latest.pop((namespace, name), None)


@dataclass(frozen=True)
class IntakeSettings:
    max_body_bytes: int = 16 * 1024
    """A report is a few hundred bytes; anything over this is answered 413 unread."""
    max_lines: int = 16
    read_timeout_s: float = 10.0
    pod_rate_per_s: float = 0.5
    """Sustained reports per pod (the trainer sends at most one per 5 s)."""
    pod_burst: int = 10
    review_rate_per_s: float = 20.0
    """TokenReviews per second for tokens not in the cache, all pods together."""
    review_burst: int = 50
    review_cache_s: float = 600.0
    """Longest a TokenReview answer is trusted (never past the token's own expiry)."""
    failed_review_cache_s: float = 30.0
    pod_cache_s: float = 3600.0
    """How long "pod uid U belongs to job N" is trusted once checked."""
    cache_entries: int = 10_000


class Refused(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Identity:
    """Who a verified token belongs to."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


class _Bucket:
    """Token bucket."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), now

    def take(self, now: float) -> float:
        """0 when allowed, else seconds until the next token."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _bounded_put(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, NOT verified.  Used only to skip a TokenReview for a token that
    could never pass one (not a JWT, another audience, expired), and, after a TokenReview
    accepted the token (its signature covers ``exp``), to know how long to trust the answer."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_expiry(token: str) -> float | None:
    exp = (unverified_claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def _hopeless(token: str, now: float) -> str | None:
    """Why a token cannot pass the TokenReview, judged from its unverified claims; None: ask."""
    claims = unverified_claims(token)
    if claims is None:
        return "not a ServiceAccount token (JWT)"
    aud = claims.get("aud")
    if PROGRESS_AUDIENCE not in ([aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []):
        return "the token is not for the audience kubetune"
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp <= now:
        return "the token has expired"
    return None


class TokenVerifier:
    """TokenReview with the ``kubetune`` audience, cached by token hash until the token expires."""

    def __init__(self, kube: Kube, settings: IntakeSettings, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self._cache: OrderedDict[str, tuple[Identity | Refused, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Identity]] = {}
        self._budget = _Bucket(settings.review_rate_per_s, settings.review_burst, clock())
        self.reviews = 0
        """TokenReviews sent (for tests and the benchmark)."""

    async def verify(self, token: str) -> Identity:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            if isinstance(cached[0], Refused):
                raise cached[0]
            return cached[0]
        if digest in self._inflight:  # the same token twice at once: one review
            return await asyncio.shield(self._inflight[digest])
        if (why := _hopeless(token, now)) is not None:
            raise Refused(401, why)  # no API request for what the API server would refuse anyway
        wait = self._budget.take(now)
        if wait:
            raise Refused(429, "too many new tokens to review; retry later", retry_after=wait)
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            identity = await self._review(token, digest, now)
            future.set_result(identity)
            return identity
        except Refused as exc:
            future.set_exception(exc)
            raise
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            refused = Refused(503, f"token review unavailable: {type(exc).__name__}", retry_after=10)
            future.set_exception(refused)
            raise refused from exc
        finally:
            del self._inflight[digest]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved here: no "exception never retrieved" warning

    async def _review(self, token: str, digest: str, now: float) -> Identity:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": token, "audiences": [PROGRESS_AUDIENCE]},
        }
        try:
            self.reviews += 1
            answer = await self.kube.create("authentication.k8s.io/v1", "tokenreviews", body)
        except ApiError as exc:
            log.warning("TokenReview failed: %s", exc)
            raise Refused(503, "token review unavailable; retry later", retry_after=10) from exc
        status = answer.get("status") or {}
        try:
            identity = _identity(status)
        except Refused as refused:
            _bounded_put(
                self._cache, digest, (refused, now + self.settings.failed_review_cache_s), self.settings.cache_entries
            )
            raise
        expiry = token_expiry(token)
        until = min(now + self.settings.review_cache_s, expiry if expiry is not None else now + 60.0)
        _bounded_put(self._cache, digest, (identity, until), self.settings.cache_entries)
        return identity


def _identity(status: dict[str, Any]) -> Identity:
    """The pod a TokenReview status vouches for, or Refused(401/403)."""
    if not status.get("authenticated"):
        raise Refused(401, "token not accepted for audience kubetune")
    if PROGRESS_AUDIENCE not in (status.get("audiences") or []):
        # An audience-unaware authenticator (e.g. a webhook) would accept API-server tokens too.
        raise Refused(401, "the token review did not confirm the kubetune audience")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(SA_USER_PREFIX) or username.count(":") != 3:
        raise Refused(403, "not a ServiceAccount token")
    namespace, service_account = username[len(SA_USER_PREFIX) :].split(":")
    extra = user.get("extra") or {}
    pod_name, pod_uid = extra.get(POD_NAME_EXTRA) or [], extra.get(POD_UID_EXTRA) or []
    if len(pod_name) != 1 or len(pod_uid) != 1:
        raise Refused(403, "the token is not bound to a pod")
    return Identity(namespace, service_account, str(pod_name[0]), str(pod_uid[0]))


class PodCheck:
    """Is pod (name, uid) one of job N's pods?  One LIST by label and name, cached by uid."""

    def __init__(self, kube: Kube, settings: IntakeSettings, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str, str], tuple[bool, float]] = OrderedDict()
        self.lists = 0

    async def belongs(self, namespace: str, job: str, identity: Identity) -> bool:
        key = (namespace, job, identity.pod_uid)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        params = {"labelSelector": f"{LABEL_JOB}={job}", "fieldSelector": f"metadata.name={identity.pod_name}"}
        try:
            self.lists += 1
            result = await self.kube.request("list", "GET", path("v1", "pods", namespace), params=params)
        except ApiError as exc:
            log.warning("pod check for %s/%s failed: %s", namespace, job, exc)
            raise Refused(503, "pod check unavailable; retry later", retry_after=10) from exc
        ok = any((p.get("metadata") or {}).get("uid") == identity.pod_uid for p in result.get("items") or [])
        ttl = self.settings.pod_cache_s if ok else self.settings.failed_review_cache_s
        _bounded_put(self._cache, key, (ok, now + ttl), self.settings.cache_entries)
        return ok


def parse_report(raw: bytes, max_lines: int) -> tuple[str, str, LogReading]:
    """(namespace, name, reading) of a report body, or Refused(400).

    Strict where the log tail is lenient: every line must be a well-formed protocol line
    with valid values, or the whole report is refused and nothing changes.
    """
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Refused(400, "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    namespace, name, lines = body.get("namespace"), body.get("name"), body.get("lines")
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123.match(namespace):
        raise Refused(400, "namespace: a Kubernetes namespace name is required")
    if not isinstance(name, str) or not _LABEL_VALUE.match(name):
        raise Refused(400, "name: a FineTuneJob name is required")
    if not isinstance(lines, list) or not lines or len(lines) > max_lines:
        raise Refused(400, f"lines: a list of 1 to {max_lines} protocol lines is required")
    for i, line in enumerate(lines):
        if not isinstance(line, str) or "\n" in line or "\r" in line or not _valid_line(line):
            raise Refused(400, f"lines[{i}]: not a valid kubetune.progress or kubetune.stage line")
    return namespace, name, read_log("\n".join(lines))


def _valid_line(line: str) -> bool:
    parsed = parse_line(line)
    if parsed is None:
        return False
    if parsed.kind == "progress":
        return parse_progress(parsed.data) is not None
    return isinstance(parsed.data.get("stage"), str) and parsed.data.get("event") in STAGE_EVENTS


class IntakeServer:
    """``POST /v1/progress`` on its own port, in the operator's event loop."""

    def __init__(
        self,
        board: ProgressBoard,
        verifier: TokenVerifier,
        pods: PodCheck,
        *,
        host: str,
        port: int,
        settings: IntakeSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_result: Callable[[int], None] = lambda code: None,
        clock: Callable[[], float] = time.time,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.namespaces = namespaces
        """Accept reports only for jobs in these namespaces (the watched ones); empty: any."""
        self.board = board
        self.verifier = verifier
        self.pods = pods
        self.host = host
        self.port = port
        self.settings = settings or IntakeSettings()
        self.ssl_context = ssl_context
        self.on_result = on_result
        self.clock = clock
        self._limits: OrderedDict[str, _Bucket] = OrderedDict()
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(PROGRESS_PATH, self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info(
            "progress intake listening on %s:%d%s (%s)",
            self.host,
            self.port,
            PROGRESS_PATH,
            "TLS" if self.ssl_context else "plain HTTP",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            namespace, name, reading = await self._accept(request)
        except Refused as exc:
            self.on_result(exc.status)
            headers = {}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="kubetune"'
            if exc.retry_after is not None:
                headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
            if exc.status >= 500 or exc.status == 403:
                log.info("progress report refused (%d): %s", exc.status, exc.message)
            return aiohttp.web.json_response({"message": exc.message}, status=exc.status, headers=headers)
        self.board.record(namespace, name, reading, self.clock())
        self.on_result(204)
        return aiohttp.web.Response(status=204)

    async def _accept(self, request: aiohttp.web.Request) -> tuple[str, str, LogReading]:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, f"a report is at most {limit} bytes")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "a Bearer token (the projected kubetune token) is required")
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a cancellation that
            # arrives as the read completes (bpo-42130, fixed in 3.12), and a shutdown would then wait on this request.
            async with asyncio.timeout(self.settings.read_timeout_s):
                raw = await request.content.read(limit + 1)
        except TimeoutError as exc:
            raise Refused(408, "the body did not arrive in time") from exc
        if len(raw) > limit:
            raise Refused(413, f"a report is at most {limit} bytes")
        identity = await self.verifier.verify(token.strip())
        wait = self._rate(identity.pod_uid)
        if wait:
            raise Refused(429, "too many reports from this pod", retry_after=wait)
        namespace, name, reading = parse_report(raw, self.settings.max_lines)
        if namespace != identity.namespace:
            raise Refused(403, f"the token's pod is in namespace {identity.namespace}, not {namespace}")
        if self.namespaces and namespace not in self.namespaces:
            raise Refused(403, f"this operator does not watch namespace {namespace}")
        if not await self.pods.belongs(namespace, name, identity):
            raise Refused(403, f"pod {identity.pod_name} is not a pod of FineTuneJob {namespace}/{name}")
        return namespace, name, reading

    def _rate(self, pod_uid: str) -> float:
        now = self.clock()
        bucket = self._limits.get(pod_uid)
        if bucket is None:
            bucket = _Bucket(self.settings.pod_rate_per_s, self.settings.pod_burst, now)
            _bounded_put(self._limits, pod_uid, bucket, self.settings.cache_entries)
        return bucket.take(now)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def intake_for(
    kube: Kube,
    board: ProgressBoard,
    *,
    host: str,
    port: int,
    tls: tuple[str, str] | None = None,
    on_result: Callable[[int], None] = lambda code: None,
    settings: IntakeSettings | None = None,
    namespaces: tuple[str, ...] = (),
) -> IntakeServer:
    settings = settings or IntakeSettings()
    return IntakeServer(
        board,
        TokenVerifier(kube, settings),
        PodCheck(kube, settings),
        host=host,
        port=port,
        settings=settings,
        ssl_context=tls_context(*tls) if tls else None,
        on_result=on_result,
        namespaces=namespaces,
    )
