"""The emulated TokenReview answers as kube-apiserver does (see
tests/support/apiserver/auth.py for the upstream files)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from tests.support.apiserver.emulator import Cluster
from tests.support.apiserver.auth import API_AUDIENCES, TokenAuthority

NS = "team-a"


@pytest.fixture
async def pod(cluster: Cluster) -> str:
    await cluster.put_object(
        "v1",
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p0", "namespace": NS},
            "spec": {"serviceAccountName": "trainer"},
        },
    )
    return "p0"


async def review(
    cluster: Cluster, spec: dict[str, Any], url_tail: str = "/apis/authentication.k8s.io/v1/tokenreviews"
) -> tuple[int, dict[str, Any]]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    async with aiohttp.ClientSession() as session:
        # The operator's own credentials (the emulator authenticates every request like the real server).
        headers = {"Authorization": "Bearer test-token"}
        async with session.post(str(cluster.url).rstrip("/") + url_tail, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_a_pod_bound_token_for_its_audience(cluster: Cluster, pod: str) -> None:
    authority = TokenAuthority(cluster)
    token = authority.issue(NS, pod)
    code, answer = await review(cluster, {"token": token, "audiences": ["kubetune"]})
    assert code == 201
    status = answer["status"]
    assert status["authenticated"] is True and status["audiences"] == ["kubetune"]
    user = status["user"]
    assert user["username"] == f"system:serviceaccount:{NS}:trainer"
    assert user["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"]
    uid = cluster.read("v1", "pods", NS, pod)["metadata"]["uid"]  # type: ignore[index]
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == [pod]
    assert user["extra"]["authentication.kubernetes.io/pod-uid"] == [uid]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("no audiences: the API server's own", "token audiences [\"kubetune\"] is invalid for the target audiences"),
        ("api-audience token reviewed for kubetune", "is invalid for the target audiences [\"kubetune\"]"),
        ("expired", "service account token has expired"),
        ("altered", "error in cryptographic primitive"),
        ("pod deleted", "service account token has been invalidated"),
        ("garbage", "compact JWS format must have three parts"),
    ],
)
async def test_refused_tokens(cluster: Cluster, pod: str, case: str, error: str) -> None:
    authority = TokenAuthority(cluster)
    token, audiences = authority.issue(NS, pod), ["kubetune"]
    if case.startswith("no audiences"):
        audiences = []
    elif case.startswith("api-audience"):
        token = authority.issue(NS, pod, audiences=API_AUDIENCES)
    elif case == "expired":
        token = authority.issue(NS, pod, issued_at=time.time() - 601)
    elif case == "altered":
        token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    elif case == "pod deleted":
        await cluster.remove("v1", "pods", NS, pod)
    elif case == "garbage":
        token = "garbage"
    code, answer = await review(cluster, {"token": token, "audiences": audiences})
    assert code == 201
    assert not answer["status"].get("authenticated")
    assert answer["status"]["user"] == {}
    assert error in answer["status"]["error"]


async def test_bad_requests(cluster: Cluster, pod: str) -> None:
    TokenAuthority(cluster)
    code, answer = await review(cluster, {"audiences": ["kubetune"]})
    assert (code, answer["message"]) == (400, "token is required for TokenReview in authentication")
    with pytest.raises(ValueError, match="less than 10 minutes"):
        TokenAuthority(cluster).issue(NS, pod, expiration_seconds=60)
