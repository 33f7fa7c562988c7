"""Applying the rendered children, and what the FineTuneJob's status says about them.

Create-or-adopt is one server-side apply per child (field manager
``kubetune``, ``force=true``): the names are deterministic (``<name>`` and
``<name>-kubetune``), so re-running any handler, after any crash, converges on
the same two objects and never duplicates one; an object that already exists
(created before a crash, or by ``kubetune render | kubectl apply``) is adopted,
because the rendered ownerReference makes it ours.  Only the fields kubetune
renders are owned: the Kubeflow controller's status and defaults, and Kueue's
``runPolicy.suspend`` (the renderer omits it when a queue is named), stay theirs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubetune.api import FineTuneJob, FineTuneJobSpec
from kubetune.api.contract import SPEC_FILE
from kubetune.render import Rendered

from .kube import Kube

PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("kubeflow.org/v1", "PyTorchJob"): "pytorchjobs",
    ("kubeflow.org/v2beta1", "MPIJob"): "mpijobs",
}


def plural_of(api_version: str, kind: str) -> str:
    try:
        return PLURALS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"kubetune does not manage {kind} {api_version}") from None


async def apply_children(kube: Kube, rendered: Rendered) -> None:
    """Server-side apply every child, the ConfigMap first (pods must never start without it)."""
    for obj in rendered.objects:
        await kube.apply(obj["apiVersion"], plural_of(obj["apiVersion"], obj["kind"]), obj)


def child_ref(rendered: Rendered) -> dict[str, str]:
    w = rendered.workload
    return {"apiVersion": w["apiVersion"], "kind": w["kind"], "name": w["metadata"]["name"]}


def output_location(job: FineTuneJob) -> dict[str, str]:
    """Where the results are, as a path inside the outputs claim (<subPath>/<namespace>/<name>)."""
    outputs = job.spec.storage.outputs
    folder = f"{job.namespace}/{job.name}"
    if outputs.sub_path:
        folder = f"{outputs.sub_path.rstrip('/')}/{folder}"
    out = {"claimName": outputs.claim_name, "path": folder}
    if job.spec.export.enabled:
        out["mergedPath"] = f"{folder}/merged"
    return out


def gpus(job: FineTuneJob) -> int:
    return job.spec.resources.nodes * job.spec.resources.gpus_per_node


async def applied_spec(kube: Kube, rendered: Rendered) -> FineTuneJobSpec | None:
    """The spec the running children were rendered from (the ConfigMap's finetunejob.json).

    Immutable-field checks compare against this rather than kopf's last-handled
    copy: after a rejected change kopf's copy holds the rejected spec, the
    ConfigMap still holds the one the pods run.
    """
    meta = rendered.config_map["metadata"]
    cm = await kube.get("v1", "configmaps", meta["namespace"], meta["name"])
    text = ((cm or {}).get("data") or {}).get(SPEC_FILE)
    if not text:
        return None
    try:
        return FineTuneJob.from_api(json.loads(text)).spec
    except ValueError:
        return None


def strip_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as a user wrote it: validation must not depend on what the operator reported."""
    return {k: v for k, v in obj.items() if k != "status"}
