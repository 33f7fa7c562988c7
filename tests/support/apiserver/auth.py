"""ServiceAccount tokens and TokenReview for the emulated API server.

Plays two parts of a real cluster for the progress push transport:

* the kubelet + TokenRequest (``issue``): a projected ServiceAccount token for a pod, as the
  kubelet requests it for a ``serviceAccountToken`` volume source.  Follows
  kubernetes/kubernetes pkg/registry/core/serviceaccount/storage/token.go (the bound pod must
  exist, run as that ServiceAccount and have that uid; ``expirationSeconds`` at least 600, from
  pkg/apis/authentication/validation) and pkg/serviceaccount/claims.go ``Claims`` (iss, sub,
  aud, iat, nbf, exp, jti and the ``kubernetes.io`` private claims with namespace,
  serviceaccount {name, uid} and pod {name, uid}).
* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (``review``): follows
  pkg/registry/authentication/tokenreview/storage.go (201 with the review; 400 without a token
  or with a namespace), the JWT authenticator pkg/serviceaccount/jwt.go (issuer and signature;
  the token's audiences must intersect ``spec.audiences``, or the API server's own audiences
  when none are given; ``status.audiences`` is that intersection), the claim validator in
  claims.go (expired, not yet valid, ServiceAccount or bound pod gone or with another uid:
  "service account token has been invalidated"), and the user of
  staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go (username
  ``system:serviceaccount:NS:SA``, the ServiceAccount's uid, groups ``system:serviceaccounts``,
  ``system:serviceaccounts:NS`` and ``system:authenticated``, extra ``pod-name``, ``pod-uid``
  and ``credential-id``).  A failed review is answered 201 with ``status.error`` and no user,
  as the real server does.

Difference, on purpose: tokens are signed with HMAC-SHA256 and an in-memory key instead of the
cluster's RSA/ECDSA signing key.  Clients of TokenReview never check signatures themselves, and
a token altered or signed by anyone else still fails the review.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import kmock
from tests.support.apiserver.emulator import ApiError, Cluster

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
"""The API server's own audiences (--api-audiences defaults to the issuer)."""
TOKENREVIEWS = ("authentication.k8s.io", "v1", "tokenreviews")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    """Issues pod-bound ServiceAccount tokens and answers TokenReviews like kube-apiserver."""

    def __init__(self, cluster: Cluster, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self.service_accounts: dict[tuple[str, str], str] = {}
        """(namespace, name) -> uid; created on first use, like the ServiceAccount controller's ``default``."""
        self.reviews: list[dict[str, Any]] = []
        cluster.virtual[TOKENREVIEWS] = self._handle

    # --- TokenRequest, as the kubelet makes it for a projected volume --------------------

    def service_account_uid(self, namespace: str, name: str) -> str:
        return self.service_accounts.setdefault((namespace, name), str(uuid.uuid4()))

    def issue(
        self,
        namespace: str,
        pod: str,
        *,
        audiences: tuple[str, ...] = ("kubetune",),
        expiration_seconds: int = 600,
        issued_at: float | None = None,
    ) -> str:
        """The token the kubelet would write into the pod's projected volume."""
        if expiration_seconds < 600:
            raise ValueError("spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes")
        obj = self.cluster.read("v1", "pods", namespace, pod)
        if obj is None:
            raise ValueError(f'pods "{pod}" not found')
        sa = (obj.get("spec") or {}).get("serviceAccountName") or "default"
        now = int(self.clock() if issued_at is None else issued_at)
        claims = {
            "aud": list(audiences),
            "exp": now + expiration_seconds,
            "iat": now,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": pod, "uid": obj["metadata"]["uid"]},
                "serviceaccount": {"name": sa, "uid": self.service_account_uid(namespace, sa)},
            },
            "nbf": now,
            "sub": f"system:serviceaccount:{namespace}:{sa}",
        }
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "HS256", "kid": "emulator"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"

    # --- TokenReview -------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request, verb: str) -> aiohttp.web.StreamResponse:
        try:
            if verb != "create":
                raise ApiError(
                    405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({verb})"
                )
            if request.namespace:
                raise ApiError(400, "BadRequest", f"namespace is not allowed on this type: {request.namespace}")
            body = request.data if isinstance(request.data, dict) else {}
            spec = body.get("spec") or {}
            token = spec.get("token") or ""
            if not token:
                raise ApiError(400, "BadRequest", "token is required for TokenReview in authentication")
            status = self.review(token, list(spec.get("audiences") or []))
        except ApiError as exc:
            return Cluster._error(exc)
        answer = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec"),
            "status": status,
        }
        self.reviews.append(answer)
        return aiohttp.web.json_response(answer, status=201)

    def review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """status of a TokenReview of ``token`` for ``audiences`` (empty: the API server's own)."""
        try:
            return self._authenticate(token, audiences or list(API_AUDIENCES))
        except _Invalid as exc:
            return {"user": {}, "error": f"[invalid bearer token, {exc}]"}

    def _authenticate(self, token: str, wanted: list[str]) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _Invalid("square/go-jose: compact JWS format must have three parts")
        try:
            claims = json.loads(_unb64(parts[1]))
            mac = _unb64(parts[2])
        except ValueError as exc:
            raise _Invalid("square/go-jose: error in cryptographic primitive") from exc
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            raise _Invalid("token issuer is not trusted")
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise _Invalid("square/go-jose: error in cryptographic primitive")
        token_auds = claims.get("aud") or []
        token_auds = [token_auds] if isinstance(token_auds, str) else list(token_auds)
        common = [a for a in wanted if a in token_auds]
        if not common:
            raise _Invalid(
                f"token audiences {json.dumps(token_auds)} is invalid for the target audiences {json.dumps(wanted)}"
            )
        now = self.clock()
        if now > claims["exp"]:
            raise _Invalid("service account token has expired")
        if now < claims.get("nbf", 0):
            raise _Invalid("service account token is not valid yet")
        private = claims["kubernetes.io"]
        namespace, sa, pod = private["namespace"], private["serviceaccount"], private.get("pod")
        if self.service_accounts.get((namespace, sa["name"])) != sa["uid"]:
            raise _Invalid(f"service account UID does not match claim ({sa['uid']})")
        extra: dict[str, list[str]] = {"authentication.kubernetes.io/credential-id": [f"JTI={claims['jti']}"]}
        if pod is not None:
            current = self.cluster.read("v1", "pods", namespace, pod["name"])
            if current is None or current["metadata"].get("deletionTimestamp"):
                raise _Invalid("service account token has been invalidated")
            if current["metadata"]["uid"] != pod["uid"]:
                raise _Invalid(
                    f"pod UID ({current['metadata']['uid']}) does not match service account "
                    f"pod ref claim ({pod['uid']})"
                )
            extra["authentication.kubernetes.io/pod-name"] = [pod["name"]]
            extra["authentication.kubernetes.io/pod-uid"] = [pod["uid"]]
        return {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{namespace}:{sa['name']}",
                "uid": sa["uid"],
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                "extra": extra,
            },
            "audiences": common,
        }


class _Invalid(Exception):
    pass
