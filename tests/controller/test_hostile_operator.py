"""The operator fed hostile FineTuneJobs (issue 12) through the emulated API server keeps serving.

The emulator, like a cluster whose CRD is older or was applied without its schema, stores
whatever it is given, so the operator sees these objects as JSON.  Each must end Failed with
Validated=False naming a field, in a bounded message, with no children; a good job created
after them must still start.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from tests.support.harness import CM, FTJ, PTJ, example_job, eventually
from tests.support.apiserver.emulator import Cluster

NS = "team-a"


def _deep(n: int) -> Any:
    value: Any = {}
    for _ in range(n):
        value = {"nodeAffinity": value}
    return value


def _with(name: str, **changes: Any) -> dict[str, Any]:
    doc = example_job(name)
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return doc


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "h-deep": (_with("h-deep", spec__scheduling={"affinity": _deep(300)}), "spec.scheduling.affinity"),
    "h-big-affinity": (
        _with(
            "h-big-affinity",
            spec__scheduling={
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v" * 60] * 10_000}]}
                            ]
                        }
                    }
                }
            },
        ),
        "spec.scheduling.affinity",
    ),
    "h-expanded-alias": (_with("h-expanded-alias", spec__bomb=[["lol"] * 100] * 3000), "spec"),
    "h-escape-key": (_with("h-escape-key", spec__extraArgs={"\x1b[2J\nforged": 1}), "spec.extraArgs"),
    "h-huge-value": (_with("h-huge-value", spec__method="m" * 100_000), "spec.method"),
    "h-gpu-memory": (
        _with("h-gpu-memory", spec__resources={"gpuResourceName": "memory"}),
        "spec.resources.gpuResourceName",
    ),
    "h-int-overflow": (
        _with("h-int-overflow", spec__runPolicy={"activeDeadlineSeconds": 2**70}),
        "spec.runPolicy.activeDeadlineSeconds",
    ),
    "h-nul-env": (_with("h-nul-env", spec__env=[{"name": "A", "value": "a\x00b"}]), "spec.env[0].value"),
    "h-reserved-env": (_with("h-reserved-env", spec__env=[{"name": "HOME", "value": "/"}]), "spec.env[0].name"),
    "h-spec-list": (_with("h-spec-list", spec=[1, 2, 3]), "spec"),
    "h-configmap-too-big": (
        _with("h-configmap-too-big", spec__env=[{"name": f"V{i}", "value": "\x01" * 4096} for i in range(64)]),
        "spec",
    ),
    "h-many-problems": (
        _with("h-many-problems", spec__env=[{"name": f"bad name {i}", "value": "x"} for i in range(64)]),
        "spec.env",
    ),
}


@pytest.fixture
async def cluster(cluster: Cluster) -> Cluster:
    """A cluster whose FineTuneJob CRD has no schema (the module doc): the conftest one without its CRD."""
    cluster.store.pop((("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "finetunejobs.kubetune.io"))
    return cluster


def _status(cluster: Cluster, name: str) -> dict[str, Any]:
    return (cluster.read(*FTJ, NS, name) or {}).get("status") or {}


async def test_hostile_jobs_are_rejected_with_a_field_and_the_operator_keeps_serving(
    cluster: Cluster, operator: Any
) -> None:
    await operator()
    for obj, _ in HOSTILE.values():
        await cluster.put_object(*FTJ, obj)
    await cluster.put_object(*FTJ, example_job("good"))
    await eventually(
        lambda: _status(cluster, "good").get("phase") == "Pending", timeout=60, what="the good job is served"
    )
    for name, (_, field) in HOSTILE.items():
        await eventually(lambda n=name: _status(cluster, n).get("phase") == "Failed", timeout=60, what=f"{name} Failed")
        validated = next(c for c in _status(cluster, name)["conditions"] if c["type"] == "Validated")
        assert validated["status"] == "False" and validated["reason"] == "InvalidSpec", (name, validated)
        assert field in validated["message"], (name, validated["message"][:300])
        assert "\x1b" not in validated["message"] and "\n" not in validated["message"]
        assert len(validated["message"]) < 50_000, (name, len(validated["message"]))
    # Settled: the rejected jobs are not re-handled in a loop (oversized specs are kept as a digest).
    versions = {n: cluster.read(*FTJ, NS, n)["metadata"]["resourceVersion"] for n in HOSTILE}
    await asyncio.sleep(3)
    changed = [n for n in HOSTILE if cluster.read(*FTJ, NS, n)["metadata"]["resourceVersion"] != versions[n]]
    assert changed == []
    assert [p["metadata"]["name"] for p in cluster.objects(*PTJ)] == ["good"]
    assert [c["metadata"]["name"] for c in cluster.objects(*CM)] == ["good-kubetune"]


def _fuzz_corpus(count: int) -> list[dict[str, Any]]:
    """The fuzz test's inputs (derandomized) that a YAML reader turns into an object: what kubectl
    would send.  Each gets its own name in the test namespace."""
    from hypothesis import HealthCheck, given, settings
    from tests.support.kt_hostile import hostile_manifest

    from kubetune.api.safeyaml import InputError, decode, load_documents

    found: list[dict[str, Any]] = []

    @settings(
        max_examples=count * 3, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=hostile_manifest())
    def collect(case: tuple[str, bytes]) -> None:
        try:
            docs = list(load_documents(decode(case[1])))
        except InputError:
            return
        if len(found) < count and docs and isinstance(docs[0], dict):
            found.append(docs[0])

    collect()
    out = []
    for i, doc in enumerate(found):
        doc = copy.deepcopy(doc)
        doc["apiVersion"], doc["kind"] = "kubetune.io/v1alpha1", "FineTuneJob"
        doc["metadata"] = {"name": f"fuzz-{i}", "namespace": NS}
        out.append(doc)
    return out


async def test_the_fuzz_corpus_through_the_operator_ends_failed_or_pending_and_others_are_served(
    cluster: Cluster, operator: Any
) -> None:
    corpus = _fuzz_corpus(16)
    assert len(corpus) >= 8
    await operator()
    for doc in corpus:
        await cluster.put_object(*FTJ, doc)
    await cluster.put_object(*FTJ, example_job("good"))
    await eventually(
        lambda: _status(cluster, "good").get("phase") == "Pending", timeout=60, what="the good job is served"
    )
    for doc in corpus:
        name = doc["metadata"]["name"]
        await eventually(
            lambda n=name: _status(cluster, n).get("phase") in ("Failed", "Pending"), timeout=60, what=f"{name} handled"
        )
        validated = next(c for c in _status(cluster, name)["conditions"] if c["type"] == "Validated")
        if _status(cluster, name)["phase"] == "Failed":
            assert validated["status"] == "False" and validated["message"], (name, validated)
            assert "\n" not in validated["message"] and "\x1b" not in validated["message"]
        else:
            assert validated["status"] == "True"
    phases = [_status(cluster, d["metadata"]["name"])["phase"] for d in corpus]
    print(
        f"fuzz corpus through the operator: {len(corpus)} jobs, {phases.count('Failed')} Failed, "
        f"{phases.count('Pending')} Pending"
    )
