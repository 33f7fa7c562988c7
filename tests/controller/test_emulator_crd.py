"""The emulated API server refuses a CustomResourceDefinition the real one refuses (tests/support/apiserver/crd.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.apiserver.emulator import Cluster

from kubetune.api.crd import crd

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def cluster(cluster: Cluster) -> Cluster:
    """No CRD installed yet: these tests install it."""
    cluster.store.pop((("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "finetunejobs.kubetune.io"))
    return cluster


async def post(cluster: Cluster, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer test-token"}
    async with cluster.request("POST", CRDS, data=json.dumps(body), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_committed_crd_is_created(cluster: Cluster) -> None:
    doc = yaml.safe_load((ROOT / "crds" / "kubetune.io_finetunejobs.yaml").read_text(encoding="utf-8"))
    status, created = await post(cluster, doc)
    assert status == 201, created
    assert created["metadata"]["name"] == "finetunejobs.kubetune.io"


async def test_crd_whose_rules_fail_on_a_default_is_refused_and_not_stored(cluster: Cluster) -> None:
    """What a real v1.36 server answered to the first release's CRD (`distributed: {default: {}}`)."""
    doc = crd()
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["distributed"][
        "default"
    ] = {}
    status, answer = await post(cluster, doc)
    assert status == 422 and answer["reason"] == "Invalid"
    assert 'CustomResourceDefinition.apiextensions.k8s.io "finetunejobs.kubetune.io" is invalid' in answer["message"]
    assert "properties[distributed].default" in answer["message"]
    assert "spec.distributed.offload: optimizer needs zeroStage 2 or 3" in answer["message"]
    assert cluster.objects("apiextensions.k8s.io/v1", "customresourcedefinitions") == []


async def test_update_to_an_invalid_crd_is_refused(cluster: Cluster) -> None:
    assert (await post(cluster, crd()))[0] == 201
    doc = crd()
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"].append(
        {"rule": "self.nope == 1", "message": "m"}
    )
    headers = {"Content-Type": "application/merge-patch+json", "Authorization": "Bearer test-token"}
    async with cluster.request(
        "PATCH", f"{CRDS}/finetunejobs.kubetune.io", data=json.dumps(doc), headers=headers
    ) as resp:
        assert resp.status == 422
        assert "undefined field 'nope'" in (await resp.json())["message"]
