"""Rendering a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1, Trainer v2.3) on kubetune's runtime.

How the TrainJob runs in the cluster (the chart's ClusterTrainingRuntime ``kubetune-llamafactory``, the
JobSet it becomes, its pods' labels, node ranks, status): :mod:`kubetune.cluster.backends.trainjob`.

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
* What may change on a running TrainJob: ``refused_changes`` of :mod:`kubetune.cluster.backends.trainjob`.

Kueue: a named queue becomes the ``kueue.x-k8s.io/queue-name`` label and ``spec.suspend`` is left
to Kueue, as for the v1 kinds: Kueue's TrainJob webhook suspends a queued TrainJob at creation and
appends its own runtimePatches entry (manager ``kueue.x-k8s.io/manager``), and admission unsuspends
it (kubernetes-sigs/kueue pkg/controller/jobs/trainjob/trainjob_webhook.go ``Default``,
trainjob_controller.go ``RunWithPodSetsInfo``); a value of ours, re-applied, would fight it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Final

from kubetune.cluster.backends.trainjob import NODE, PATCH_MANAGER, RUNTIME_NAME, TrainJobBackend

from ..intermediate import Plan
from ..podspec import TRAINER_COMMAND
from ..templating import render_manifest
from ..types import Problem
from .base import WorkloadRenderer
from .common import child_labels

if TYPE_CHECKING:
    from kubetune.api import FineTuneJob

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


class TrainJobRenderer:
    name: ClassVar[str] = TrainJobBackend.name

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


_CONFORMS: WorkloadRenderer = TrainJobRenderer()
"""Static check (mypy) that the class implements the renderer Protocol."""
