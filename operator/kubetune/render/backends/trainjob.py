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
* Not expressible on a TrainJob: the pod's priorityClassName, the container's imagePullPolicy and
  runPolicy.ttlSecondsAfterFinished (``check`` refuses them, naming the field); automountServiceAccountToken:
  false is set by the runtime itself.
* Names: an RFC 1035 label whose longest JobSet pod name fits 63 characters (``check``; ``auto`` falls
  back to PyTorchJob and says why).
* Kueue and tolerations: refused together (``check``): Kueue's own runtimePatches entry comes after
  ours and replaces the pods' tolerations with its flavor's.
* What may change on a running TrainJob: ``refused_changes``.

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
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..intermediate import Plan
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

TRAINJOB_NAME: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""A TrainJob's name is an RFC 1035 label (no leading digit): the CRD's XValidation
(pkg/apis/trainer/v1alpha1/trainjob_types.go:36-37 @ kubeflow/trainer v2.3.0)."""
POD_NAME_LIMIT: Final = 63
"""JobSet's webhook refuses a JobSet whose longest pod name ``GenPodName(js, rjob, maxJobIndex,
maxPodIndex) + "-abcde"`` is not a DNS-1035 label of <= 63 characters (pkg/webhooks/jobset_webhook.go:243-255,
pkg/util/placement/placement.go:20-21 ``<jobset>-<rjob>-<jobIndex>-<podIndex>`` @ kubernetes-sigs/jobset v0.12.0);
the JobSet is named after the TrainJob (pkg/runtime/framework/plugins/jobset/jobset.go:413 @ trainer v2.3.0),
the runtime's replicated job ``node`` has 1 replica (job index 0) and, Indexed by JobSet's defaulting
(jobset_webhook.go:120-123), numNodes completions (jobset.go:302-323 SyncParallelCount)."""

IMMUTABLE_POD_PATCH_FIELDS: Final = (
    "serviceAccountName",
    "volumes",
    "initContainers",
    "containers",
    "imagePullSecrets",
    "securityContext",
    "terminationGracePeriodSeconds",
)
"""PodSpecPatch fields whose CRD rule is ``self == oldSelf`` (trainjob_types.go:393, 401, 409, 417, 425, 431, 460
@ v2.3.0): never changeable, suspended or not."""
IMMUTABLE_SPEC_FIELDS: Final = {
    "trainer": 114,
    "runtimeRef": 104,
    "initializer": 109,
    "activeDeadlineSeconds": 138,
    "managedBy": 150,
}
"""TrainJob spec fields with ``self == oldSelf`` (trainjob_types.go line @ v2.3.0)."""
QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"


def longest_pod_name(name: str, nodes: int) -> str:
    """The name JobSet's webhook checks for the TrainJob ``name`` with ``nodes`` nodes (jobset_webhook.go:246-249)."""
    return f"{name}-{NODE}-0-{nodes - 1}-abcde"


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
        "Kubeflow Trainer v2 (TrainJob trainer.kubeflow.org/v1alpha1) and kubetune's ClusterTrainingRuntime "
        f"{RUNTIME_NAME} ({ENABLE_RUNTIME})"
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
            problems.append(
                Problem(
                    "spec.scheduling.priorityClassName",
                    "a TrainJob cannot set the pods' priorityClassName (Trainer v2.3's runtimePatches have no such "
                    "field): with Kueue use a WorkloadPriorityClass, or set backend: pytorchjob",
                )
            )
        rp = job.spec.run_policy
        if rp.ttl_seconds_after_finished is not None:
            problems.append(
                Problem(
                    "spec.runPolicy.ttlSecondsAfterFinished",
                    "a TrainJob cannot delete itself after it finished (Trainer v2.3's TrainJob spec has no "
                    "ttlSecondsAfterFinished, pkg/apis/trainer/v1alpha1/trainjob_types.go TrainJobSpec): "
                    "remove it, or set backend: pytorchjob",
                )
            )
        if s is not None and s.tolerations and s.queue_name:
            problems.append(
                Problem(
                    "spec.scheduling.tolerations",
                    "a TrainJob queued in Kueue (spec.scheduling.queueName) loses these tolerations when Kueue admits "
                    "it: Kueue writes its ResourceFlavor's tolerations into its own runtimePatches entry, after ours, "
                    "and Trainer applies the entries in order as strategic-merge patches in which tolerations are "
                    "replaced, not merged: put the tolerations on the ResourceFlavor, or set backend: "
                    "pytorchjob (Kueue adds the flavor's tolerations to the PyTorchJob's pods)",
                )
            )
        name = job.name
        if not TRAINJOB_NAME.match(name):
            problems.append(
                Problem(
                    "metadata.name",
                    "a TrainJob's name must be an RFC 1035 label (start with a letter; Trainer v2.3's TrainJob CRD): "
                    f"{name!r} starts with a digit; rename the FineTuneJob, or set backend: pytorchjob",
                )
            )
        pod = longest_pod_name(name, job.spec.resources.nodes)
        if len(pod) > POD_NAME_LIMIT:
            longest = POD_NAME_LIMIT - (len(pod) - len(name))
            problems.append(
                Problem(
                    "metadata.name",
                    "a TrainJob's pods are named <name>-node-0-<node>-<5 random characters> (JobSet), "
                    f"at most {POD_NAME_LIMIT} characters: with {job.spec.resources.nodes} node(s) the name may have "
                    f"at most {longest} characters, {name!r} has {len(name)} ({pod!r} is {len(pod)}); "
                    "shorten the name, or set backend: pytorchjob",
                )
            )
        if job.spec.image_pull_policy is not None:
            problems.append(
                Problem(
                    "spec.imagePullPolicy",
                    "a TrainJob cannot set the container's imagePullPolicy (Trainer v2.3's trainer and runtimePatches "
                    "have no such field): remove it (the runtime uses IfNotPresent), or set backend: pytorchjob",
                )
            )
        return problems

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
