"""The real operator against the emulated API server with an s3:// job (examples/finetune-lora-s3.yaml):
the access key reaches the training pods only by secretKeyRef, and the operator never asks the
API server for a Secret (its RBAC stays as it is: tests/chart/test_chart_rbac.py)."""

from __future__ import annotations

from typing import Any

from tests.support.harness import CM, FTJ, PTJ, ROOT, eventually
from tests.support.apiserver.emulator import Cluster

from kubetune.api import load_documents

NS = "team-s3"


def _s3_example() -> dict[str, Any]:
    doc = next(load_documents((ROOT / "examples/finetune-lora-s3.yaml").read_text(encoding="utf-8")))
    doc["metadata"]["namespace"] = NS
    return doc


async def test_an_s3_job_gets_its_keys_only_by_reference_and_the_operator_reads_no_secret(
    cluster: Cluster, operator: Any
) -> None:
    # A cluster that serves Secrets and holds this one: the emulator records every request to them.
    cluster.declare("v1", "secrets", "Secret", has_status=False)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials", "namespace": NS},
        "data": {"AWS_ACCESS_KEY_ID": "QUtJQUVYQU1QTEU=", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0LXZhbHVl"},
    }
    await cluster.put_object("v1", "secrets", secret)
    await operator()
    await cluster.put_object(*FTJ, _s3_example())
    ptj = await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora-s3"), what="the PyTorchJob")
    [template] = [spec["template"] for spec in ptj["spec"]["pytorchReplicaSpecs"].values()]
    [container] = template["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_S3_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["KUBETUNE_S3_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert all("value" not in e for e in env.values() if "valueFrom" in e)
    cm = cluster.read(*CM, NS, "qwen-lora-s3-kubetune")
    assert (
        cm is not None and "s3://ml-runs/finetune/" in cm["data"]["finetunejob.json"]
    )  # the trainer reads the URIs there
    # Every request the operator made, as RBAC sees it: none touches Secrets; no value reached a child.
    assert [c for c in cluster.api_calls() if c.resource == "secrets"] == [], (
        "the operator must never read or write a Secret"
    )
    children = repr([ptj, cm])
    assert "c2VjcmV0LXZhbHVl" not in children and "secret-value" not in children and "AKIAEXAMPLE" not in children


async def test_a_job_without_an_outputs_claim_gets_an_empty_dir_and_its_bucket_in_status(
    cluster: Cluster, operator: Any
) -> None:
    """examples/finetune-lora-s3-bucket-only.yaml (issue 24): no outputs claim; the pod's outputs
    folder is an emptyDir with the spec's sizeLimit, status.output names the bucket prefix and no
    claim, and still no Secret is read."""
    cluster.declare("v1", "secrets", "Secret", has_status=False)
    doc = next(load_documents((ROOT / "examples/finetune-lora-s3-bucket-only.yaml").read_text(encoding="utf-8")))
    doc["metadata"]["namespace"] = NS
    await operator()
    await cluster.put_object(*FTJ, doc)
    ptj = await eventually(lambda: cluster.read(*PTJ, NS, "qwen-lora-s3-only"), what="the PyTorchJob")
    [template] = [spec["template"] for spec in ptj["spec"]["pytorchReplicaSpecs"].values()]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["outputs"] == {"name": "outputs", "emptyDir": {"sizeLimit": "50Gi"}}
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v] == [
        "model-cache"
    ]
    job = await eventually(
        lambda: (j := cluster.read(*FTJ, NS, "qwen-lora-s3-only")) and j.get("status", {}).get("output") and j,
        what="status.output",
    )
    assert job["status"]["output"] == {
        "path": f"{NS}/qwen-lora-s3-only",
        "uri": f"s3://ml-runs/finetune/{NS}/qwen-lora-s3-only/",
    }
    assert [c for c in cluster.api_calls() if c.resource == "secrets"] == []
