"""Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1, Trainer v2.3) on kubetune's runtime.

The TrainJob references the ClusterTrainingRuntime ``kubetune-llamafactory`` that the chart ships
(``trainingRuntimes.enabled``): a JobSet with one replicated job ``node`` (container ``node``) under
Trainer's torch ML policy.  Trainer's controller turns TrainJob + runtime into a JobSet; the JobSet
controller creates one Job per node; their pods carry JobSet's labels
(``jobset.sigs.k8s.io/jobset-name`` = the TrainJob's name, ``jobset.sigs.k8s.io/replicatedjob-name``,
``jobset.sigs.k8s.io/job-index``; kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go).
The replicated job ``node`` has one Job (replicas 1) of ``numNodes`` indexed pods; node rank N is
the pod with completion index N (``batch.kubernetes.io/job-completion-index``, which is also where the
torch plugin takes ``PET_NODE_RANK`` from and why ``PET_MASTER_ADDR`` is ``<name>-node-0-0.<name>``;
pkg/runtime/framework/plugins/torch/torch.go, pkg/runtime/framework/plugins/jobset/builder.go).

Status: Trainer v2 reports conditions ``Suspended``, ``Complete`` and ``Failed`` (JobSet's
Completed/Failed copied over; pkg/runtime/framework/plugins/jobset/jobset.go ``Status``) and
``jobsStatus`` per replicated job; there is no Running condition, so "running" is a ready Job
(all its pods ready; an "active" Job may still have pending pods).

What may change on a running TrainJob: ``refused_changes``.  Rendering: :mod:`kubetune.render.backends.trainjob`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from ..rbac import RbacRule
from .base import ChildStatus, PodRef, WorkloadBackend, condition, newest_matching

RUNTIME_NAME: Final = "kubetune-llamafactory"
"""The ClusterTrainingRuntime the chart ships (charts/kubetune/templates/trainingruntimes.yaml)."""
ENABLE_RUNTIME: Final = (
    "helm upgrade kubetune charts/kubetune -n kubetune-system --reuse-values --set trainingRuntimes.enabled=true"
)
"""How the chart's release (docs/install.md's name and namespace; use yours) ships the runtime,
keeping every other value it was installed with (--reuse-values)."""
PATCH_MANAGER: Final = "kubetune.io/operator"
"""Our runtimePatches entry (the list is keyed by manager; Kueue writes its own)."""
NODE: Final = "node"
"""Trainer's name for the trainer's replicated job and container (pkg/constants/constants.go ``Node``)."""

JOBSET_NAME_LABEL: Final = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL: Final = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL: Final = "jobset.sigs.k8s.io/job-index"
COMPLETION_INDEX_LABEL: Final = "batch.kubernetes.io/job-completion-index"
"""The indexed Job's pod label (Kubernetes >= 1.28): the node rank."""

IMMUTABLE_POD_PATCH_FIELDS: Final = (
    "serviceAccountName",
    "volumes",
    "initContainers",
    "containers",
    "imagePullSecrets",
    "securityContext",
    "terminationGracePeriodSeconds",
)
"""PodSpecPatch fields whose CRD rule is ``self == oldSelf`` (trainjob_types.go:393, 401, 409, 417,
425, 431, 460 @ v2.3.0): never changeable, suspended or not."""
IMMUTABLE_SPEC_FIELDS: Final = {
    "trainer": 114,
    "runtimeRef": 104,
    "initializer": 109,
    "activeDeadlineSeconds": 138,
    "managedBy": 150,
}
"""TrainJob spec fields with ``self == oldSelf`` (trainjob_types.go line @ v2.3.0)."""


class TrainJobBackend:
    name: ClassVar[str] = "trainjob"
    api_version: ClassVar[str] = "trainer.kubeflow.org/v1alpha1"
    kind: ClassVar[str] = "TrainJob"
    plural: ClassVar[str] = "trainjobs"
    controller: ClassVar[str] = (
        "Kubeflow Trainer v2 (TrainJob trainer.kubeflow.org/v1alpha1) and kubetune's ClusterTrainingRuntime "
        f"{RUNTIME_NAME} ({ENABLE_RUNTIME})"
    )
    pod_job_label: ClassVar[str] = JOBSET_NAME_LABEL

    def status(self, child: Mapping[str, Any]) -> ChildStatus:
        """Complete > Failed > Suspended (conditions), then Running when a Job of the JobSet has all
        its pods ready (``status.jobsStatus[].ready``), else Created once Trainer wrote any status."""
        status = child.get("status") or {}
        for type_, state in (("Complete", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended")):
            cond = condition(child, type_)
            if cond is not None:
                return ChildStatus(
                    state,  # type: ignore[arg-type]
                    str(cond.get("message") or ""),
                    str(cond.get("lastTransitionTime") or "") or None,
                )
        jobs = status.get("jobsStatus") or []
        # JobSet's counts are of Jobs: "active" has a pod running *or pending*; "ready" has all its
        # pods ready or done (api/jobset/v1alpha2/jobset_types.go ReplicatedJobStatus).
        if any(int(j.get("ready") or 0) > 0 for j in jobs):
            return ChildStatus("Running", "training pods are running")
        if jobs or status.get("conditions"):
            return ChildStatus("Created")
        return ChildStatus(None, acted=False)

    def rank0_pod(self, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        return newest_matching(pods, {REPLICATED_JOB_LABEL: NODE, JOB_INDEX_LABEL: "0", COMPLETION_INDEX_LABEL: "0"})

    def pod_for_rank(self, job_name: str, rank: int | None) -> PodRef:
        """Node rank N is the pod with completion index N of Job 0 of the replicated job ``node``."""
        index = rank or 0
        return PodRef(
            {
                JOBSET_NAME_LABEL: job_name,
                REPLICATED_JOB_LABEL: NODE,
                JOB_INDEX_LABEL: "0",
                COMPLETION_INDEX_LABEL: str(index),
            },
            NODE,
            f"node pod (completion index {index}) of TrainJob",
        )

    def rbac(self) -> tuple[RbacRule, ...]:
        return (
            # delete: a job past its retry bound that Kueue manages is deleted, not suspended (controller/decide.py)
            RbacRule("trainer.kubeflow.org", (self.plural,), ("list", "watch", "create", "patch", "delete")),
            # backend auto: does kubetune's runtime exist? (controller/discovery.py)
            RbacRule("trainer.kubeflow.org", ("clustertrainingruntimes",), ("get",), cluster=True),
        )

    def suspended(self, workload: Mapping[str, Any]) -> dict[str, Any]:
        stopped = copy.deepcopy(dict(workload))
        stopped["spec"]["suspend"] = True
        return stopped

    def refused_changes(
        self, running: Mapping[str, Any], wanted: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[str]:
        """Trainer v2.3 refuses (kubeflow/trainer v2.3.0):

        * any change of the immutable spec fields (``self == oldSelf``, trainjob_types.go:104-150), among
          them ``spec.trainer``: image, command, env, nodes, processes and resources;
        * any change of the immutable PodSpecPatch fields in our runtimePatches entry (volumes, containers,
          securityContext, ...; trainjob_types.go:390-463), suspended or not;
        * any other change of runtimePatches (placement, pod labels and annotations) unless the TrainJob
          is suspended before or after the update and its JobSet has no active Job any more
          (pkg/runtime/framework/plugins/jobset/jobset.go:214-251 ``checkRuntimePatchesImmutability``, run
          by the validating webhook; the API server answers 403).  The JobSet's replicated-job counts are
          read from the TrainJob's ``status.jobsStatus`` (Trainer copies them, plugins/jobset/jobset.go ``Status``).
          So suspending and moving a running job are two edits: suspend, wait for Suspended, then move.
        """
        old_spec, new_spec = running.get("spec") or {}, wanted.get("spec") or {}
        refused = [
            f"TrainJob spec.{field} is immutable (trainjob_types.go:{line} @ kubeflow/trainer v2.3.0)"
            for field, line in IMMUTABLE_SPEC_FIELDS.items()
            if old_spec.get(field) != new_spec.get(field)
        ]
        old_patch, new_patch = _our_pod_patch(running), _our_pod_patch(wanted)
        old_pod, new_pod = old_patch.get("spec") or {}, new_patch.get("spec") or {}
        refused += [
            f"TrainJob runtimePatches[{PATCH_MANAGER}] pod spec.{field} is immutable "
            "(trainjob_types.go PodSpecPatch @ v2.3.0)"
            for field in IMMUTABLE_POD_PATCH_FIELDS
            if old_pod.get(field) != new_pod.get(field)
        ]
        placement = [
            f
            for f in sorted(set(old_pod) | set(new_pod))
            if f not in IMMUTABLE_POD_PATCH_FIELDS and old_pod.get(f) != new_pod.get(f)
        ]
        placement += ["pod labels and annotations"] if old_patch.get("metadata") != new_patch.get("metadata") else []
        if not placement:
            return refused
        suspended = (observed.get("spec") or {}).get("suspend") is True or new_spec.get("suspend") is True
        active = [
            str(j.get("name"))
            for j in (observed.get("status") or {}).get("jobsStatus") or ()
            if int(j.get("active") or 0) > 0
        ]
        if not suspended or active:
            refused.append(
                f"TrainJob runtimePatches ({', '.join(placement)}) may change only while the TrainJob is suspended "
                "and none of its Jobs is active (pkg/runtime/framework/plugins/jobset/jobset.go:214-251 @ "
                f"v2.3.0{'; active: ' + ', '.join(active) if active else ''}): set spec.suspend: true alone first, "
                "and change them once the job is Suspended"
            )
        return refused


def _our_pod_patch(trainjob: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template (metadata and spec) of our runtimePatches entry for the replicated job ``node``."""
    for patch in (trainjob.get("spec") or {}).get("runtimePatches") or ():
        if patch.get("manager") != PATCH_MANAGER:
            continue
        for rjob in (
            (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs")
        ) or ():
            if rjob.get("name") == NODE:
                return (((rjob.get("template") or {}).get("spec") or {}).get("template")) or {}
    return {}


_CONFORMS: WorkloadBackend = TrainJobBackend()
"""Static check (mypy) that the class implements the backend Protocol."""
