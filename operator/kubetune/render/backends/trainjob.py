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

What goes where is fixed by the v2.3 API (pkg/apis/trainer/v1alpha1/trainjob_types.go):

* ``spec.trainer``: image, command, env, numNodes, numProcPerNode, resourcesPerNode.
* ``spec.runtimePatches`` (one entry, manager ``kubetune.io/operator``): pod labels and
  annotations, volumes, the container's mounts and security context, the pod's security context,
  nodeSelector, affinity, tolerations, imagePullSecrets, serviceAccountName, grace period.
* Not expressible on a TrainJob: the pod's priorityClassName and the container's imagePullPolicy
  (``check`` refuses them, naming the field); automountServiceAccountToken: false and the metrics
  port are set by the runtime itself.

Status: Trainer v2 reports conditions ``Suspended``, ``Complete`` and ``Failed`` (JobSet's
Completed/Failed copied over; pkg/runtime/framework/plugins/jobset/jobset.go ``Status``) and
``jobsStatus`` per replicated job; there is no Running condition, so "running" is a ready Job
(all its pods ready; an "active" Job may still have pending pods).

Kueue: a named queue becomes the ``kueue.x-k8s.io/queue-name`` label and ``spec.suspend`` is left
to Kueue, as for the v1 kinds: Kueue's TrainJob webhook suspends a queued TrainJob at creation and
appends its own runtimePatches entry (manager ``kueue.x-k8s.io/manager``), and admission unsuspends
it (kubernetes-sigs/kueue pkg/controller/jobs/trainjob/trainjob_webhook.go ``Default``,
trainjob_controller.go ``RunWithPodSetsInfo``); a value of ours, re-applied, would fight it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..plan import Plan
from ..podspec import TRAINER_COMMAND
from ..templating import render_manifest
from ..types import Problem
from .base import (
    ChildStatus,
    PodRef,
    RbacRule,
    WorkloadBackend,
    condition,
    newest_matching,
)
from .common import child_labels

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob

RUNTIME_NAME: Final = "kubetune-llamafactory"
ENABLE_RUNTIME: Final = (
    "helm upgrade kubetune charts/kubetune -n kubetune-system --reuse-values --set trainingRuntimes.enabled=true"
)
"""How the chart's release (docs/install.md's name and namespace; use yours) ships the runtime,
keeping every other value it was installed with (--reuse-values)."""
"""The ClusterTrainingRuntime the chart ships (charts/kubetune/templates/trainingruntimes.yaml)."""
PATCH_MANAGER: Final = "kubetune.io/operator"
"""Our runtimePatches entry (the list is keyed by manager; Kueue writes its own)."""
NODE: Final = "node"
"""Trainer's name for the trainer's replicated job and container (pkg/constants/constants.go ``Node``)."""

JOBSET_NAME_LABEL: Final = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL: Final = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL: Final = "jobset.sigs.k8s.io/job-index"
COMPLETION_INDEX_LABEL: Final = "batch.kubernetes.io/job-completion-index"
"""The indexed Job's pod label (Kubernetes >= 1.28): the node rank."""

_PATCHABLE_POD_FIELDS: Final = (
    "nodeSelector",
    "affinity",
    "tolerations",
    "imagePullSecrets",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
)
"""Pod fields of ours that Trainer v2.3's PodSpecPatch accepts (automountServiceAccountToken is
set false by the runtime; priorityClassName is refused by ``check``)."""


class TrainJobBackend:
    name: ClassVar[str] = "trainjob"
    api_version: ClassVar[str] = "trainer.kubeflow.org/v1alpha1"
    kind: ClassVar[str] = "TrainJob"
    plural: ClassVar[str] = "trainjobs"
    controller: ClassVar[str] = (
        f"Kubeflow Trainer v2 (TrainJob trainer.kubeflow.org/v1alpha1) and kubetune's ClusterTrainingRuntime {RUNTIME_NAME} "
        f"({ENABLE_RUNTIME})"
    )
    pod_job_label: ClassVar[str] = JOBSET_NAME_LABEL

    def build(self, plan: Plan) -> dict[str, Any]:
        spec = plan.job.spec
        return render_manifest(
            "trainjob.json.j2",
            plan=plan,
            labels=child_labels(plan),
            runtime=RUNTIME_NAME,
            manager=PATCH_MANAGER,
            suspend=plan.suspend,
            active_deadline_seconds=spec.run_policy.active_deadline_seconds,
            command=list(TRAINER_COMMAND),
            pod_fields={k: v for k, v in plan.pod_fields.items() if k in _PATCHABLE_POD_FIELDS},
        )

    def check(self, job: FineTuneJob) -> list[Problem]:
        problems = []
        s = job.spec.scheduling
        if s is not None and s.priority_class_name:
            problems.append(Problem(
                "spec.scheduling.priorityClassName",
                "a TrainJob cannot set the pods' priorityClassName (Trainer v2.3's runtimePatches have no such field): "
                "with Kueue use a WorkloadPriorityClass, or set backend: pytorchjob",
            ))
        if job.spec.image_pull_policy is not None:
            problems.append(Problem(
                "spec.imagePullPolicy",
                "a TrainJob cannot set the container's imagePullPolicy (Trainer v2.3's trainer and runtimePatches have no such field): "
                "remove it (the runtime uses IfNotPresent), or set backend: pytorchjob",
            ))
        return problems

    def status(self, child: Mapping[str, Any]) -> ChildStatus:
        """Complete > Failed > Suspended (conditions), then Running when a Job of the JobSet has all
        its pods ready (``status.jobsStatus[].ready``), else Created once Trainer wrote any status."""
        status = child.get("status") or {}
        for type_, state in (("Complete", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended")):
            cond = condition(child, type_)
            if cond is not None:
                return ChildStatus(state, str(cond.get("message") or ""), str(cond.get("lastTransitionTime") or "") or None)  # type: ignore[arg-type]
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
            {JOBSET_NAME_LABEL: job_name, REPLICATED_JOB_LABEL: NODE, JOB_INDEX_LABEL: "0", COMPLETION_INDEX_LABEL: str(index)},
            NODE,
            f"node pod (completion index {index}) of TrainJob",
        )

    def rbac(self) -> tuple[RbacRule, ...]:
        return (
            RbacRule("trainer.kubeflow.org", (self.plural,), ("list", "watch", "create", "patch")),
            # backend auto: does kubetune's runtime exist? (controller/discovery.py)
            RbacRule("trainer.kubeflow.org", ("clustertrainingruntimes",), ("get",), cluster=True),
        )

    def suspended(self, workload: Mapping[str, Any]) -> dict[str, Any]:
        stopped = copy.deepcopy(dict(workload))
        stopped["spec"]["suspend"] = True
        return stopped


_CONFORMS: WorkloadBackend = TrainJobBackend()
"""Static check (mypy) that the class implements the backend Protocol."""
