"""The typed intermediate every render phase reads and fills in.

Why an intermediate: phases (defaults -> training files -> scheduling -> pod
spec -> backend build) each own one concern and only touch their fields, so every
backend (PyTorchJob, MPIJob and Trainer v2 TrainJob alike: ``render/backends``) reuses
everything up to the build.

The class is ``Plan`` (a render plan); the GPU memory planner is another thing, the
``kubetune.plan`` package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune.api import FineTuneJob
from kubetune.api.spec import Launcher, uses_object_store

from .types import RenderOptions

AZURE_WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"


def azure_workload_identity_labels(job: FineTuneJob) -> dict[str, str]:
    """The pod label of a job whose az:// URIs are reached by Azure Workload Identity (no Secret), else none.

    Its mutating webhook selects only pods labelled azure.workload.identity/use: "true" (objectSelector,
    charts/workload-identity-webhook/templates/azure-wi-webhook-mutating-webhook-configuration-mutatingwebhookconfiguration.yaml:27
    @Azure/azure-workload-identity v1.6.0) and then injects AZURE_CLIENT_ID, AZURE_TENANT_ID,
    AZURE_FEDERATED_TOKEN_FILE (pkg/webhook/consts.go:49-52) and a projected token of audience
    api://AzureADTokenExchange (consts.go:61, webhook.go:500-501), which the API server does not accept:
    automountServiceAccountToken stays false."""
    store = job.spec.storage.object_store
    if (
        store is not None
        and store.credentials_secret_ref is None
        and any(u.startswith("az://") for u in uses_object_store(job.spec))
    ):
        return {AZURE_WORKLOAD_IDENTITY_LABEL: "true"}
    return {}


@dataclass
class Plan:
    job: FineTuneJob
    options: RenderOptions
    name: str
    namespace: str
    output_dir: str
    backend: str
    """The backend actually rendered (a key of cluster.backends.BACKENDS; never auto)."""
    launcher: Launcher
    image: str
    queue: str | None
    labels: dict[str, str]
    owner_references: list[dict[str, Any]]
    config_map_name: str

    # filled by phase "training"
    train_args: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    # filled by phase "scheduling": pod-level fields shared by every replica
    pod_fields: dict[str, Any] = field(default_factory=dict)

    # filled by phase "pod spec"
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    pod_security_context: dict[str, Any] = field(default_factory=dict)
    container_security_context: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus_per_node(self) -> int:
        return self.job.spec.resources.gpus_per_node

    @property
    def nodes(self) -> int:
        return self.job.spec.resources.nodes

    @property
    def procs_per_node(self) -> int:
        """Training processes per pod: one per GPU, one on CPU."""
        return max(self.gpus_per_node, 1)

    @property
    def suspend(self) -> bool | None:
        """runPolicy.suspend, or None when Kueue owns it (a queue is named)."""
        return None if self.queue else self.job.spec.suspend

    def pod_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"labels": dict(self.labels)}
        meta["labels"].update(azure_workload_identity_labels(self.job))
        s = self.job.spec.scheduling
        if s is not None and s.pod_annotations:
            meta["annotations"] = dict(sorted(s.pod_annotations.items()))
        return meta
