"""Plays Kubeflow Trainer v2.3 (TrainJob controller, JobSet, the kubelet) and Kueue's TrainJob
webhook against the emulated cluster.

Followed upstream files (read, not copied):

* kubeflow/trainer v2.3.0
  - pkg/apis/trainer/v1alpha1/trainjob_types.go: condition types Suspended, Complete, Failed;
    ``self == oldSelf`` (immutable) on spec.runtimeRef, spec.initializer, spec.trainer,
    spec.activeDeadlineSeconds, spec.managedBy;
  - pkg/controller/trainjob_controller.go ``setSuspendedCondition``: Suspended=True reason Suspended
    "TrainJob is suspended", then Suspended=False reason Resumed "TrainJob is resumed";
  - pkg/runtime/framework/plugins/jobset/jobset.go ``Status``: JobSet's Completed/Failed conditions
    copied as Complete/Failed; ``jobsStatus`` per replicated job (ready/succeeded/failed/active/suspended);
  - pkg/runtime/framework/plugins/torch/torch.go: PET_* reserved (pkg/constants TorchRunReservedEnvNames),
    node rank from the Job completion index, master ``<name>-node-0-0.<name>``.
* kubernetes-sigs/jobset v0.12.0: pod labels jobset.sigs.k8s.io/{jobset-name,replicatedjob-name,job-index}
  (api/jobset/v1alpha2/jobset_types.go); Completed "AllJobsCompleted" / "jobset completed successfully",
  Failed "FailedJobs" / "jobset failed due to one or more job failures" (pkg/constants/constants.go).
  The torch runtime's replicated job ``node`` is one indexed Job of numNodes pods
  (``batch.kubernetes.io/job-completion-index``), named ``<name>-node-0-<index>-<suffix>``.
* kubernetes-sigs/kueue pkg/controller/jobs/trainjob/trainjob_webhook.go ``Default``: a TrainJob with
  a queue-name label is suspended at creation and gets a runtimePatches entry of manager
  ``kueue.x-k8s.io/manager``; trainjob_controller.go ``RunWithPodSetsInfo`` unsuspends it on admission.

Strict where the real server is: a TrainJob is checked against the upstream v2.3 CRD schema with
unknown fields refused (server-side apply refuses fields the schema does not declare), PET_* names
in spec.trainer.env are refused (Trainer's validating webhook), runtimePatches need a domain-prefixed
manager and change only while the TrainJob is suspended before or after the update
(pkg/runtime/framework/plugins/jobset/jobset.go), and the immutable fields stay immutable.  The controller steps are driven by the tests (like kubeflow.py), not by a loop.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from emulator import ApiError, Cluster, Obj
from kt_upstream import require_upstream_crds

TJ = ("trainer.kubeflow.org/v1alpha1", "trainjobs")
CTR = ("trainer.kubeflow.org/v1alpha1", "clustertrainingruntimes")
RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
IMMUTABLE = ("runtimeRef", "initializer", "trainer", "activeDeadlineSeconds", "managedBy")
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_MANAGER = "kueue.x-k8s.io/manager"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schema_errors(obj: Obj) -> list[str]:
    """The strict upstream-schema validator of tests/render/renderlib.py (needs the upstream CRDs:
    install_trainer checks that they are there before the emulator calls this)."""
    from renderlib import schema_errors

    return schema_errors(obj)


def _trainjob_admission_without_schema(new: Obj, old: Obj | None) -> None:
    """Trainer's admission without the upstream schema check (only where the CRDs are absent and
    the caller asked for it: see install_trainer)."""
    _trainjob_admission(new, old, schema=False)


def _trainjob_admission(new: Obj, old: Obj | None, *, schema: bool = True) -> None:
    body = {k: v for k, v in new.items() if k != "status"}
    body["metadata"] = {k: v for k, v in (new.get("metadata") or {}).items() if k in ("name", "namespace", "labels", "annotations", "ownerReferences")}
    errors = _schema_errors(body) if schema else []
    if errors:
        raise ApiError(422, "Invalid", f'TrainJob.trainer.kubeflow.org "{new["metadata"].get("name")}" is invalid: ' + "; ".join(errors[:5]))
    reserved = sorted({e.get("name") for e in ((new.get("spec") or {}).get("trainer") or {}).get("env") or []} & RESERVED_ENV)
    if reserved:
        raise ApiError(422, "Invalid", f"admission webhook refused: spec.trainer.env must not set {', '.join(reserved)} (reserved by the torch plugin)")
    for patch in (new.get("spec") or {}).get("runtimePatches") or []:
        # pkg/runtime/framework/plugins/jobset/jobset.go Validate: a domain-prefixed manager.
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^/].*", str(patch.get("manager", ""))):
            raise ApiError(422, "Invalid", f"spec.runtimePatches.manager: Invalid value: {patch.get('manager')!r}: must be a domain-prefixed path")
    if old is not None:
        # ... checkRuntimePatchesImmutability: runtimePatches change only while suspended before or after.
        suspended = lambda o: (o.get("spec") or {}).get("suspend") is True
        if (old.get("spec") or {}).get("runtimePatches") != (new.get("spec") or {}).get("runtimePatches") and not (suspended(old) or suspended(new)):
            raise ApiError(422, "Invalid", "spec.runtimePatches: Forbidden: RuntimePatches can only be modified when the TrainJob is suspended before or after the update")
        for field in IMMUTABLE:
            if (old.get("spec") or {}).get(field) != (new.get("spec") or {}).get(field):
                raise ApiError(422, "Invalid", f'TrainJob.trainer.kubeflow.org "{new["metadata"].get("name")}" is invalid: spec.{field}: Invalid value: field is immutable')


def _kueue_webhook(new: Obj, old: Obj | None) -> None:
    """Kueue's TrainJob defaulting webhook (create only, for a job with a queue name)."""
    if old is not None or not ((new.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL):
        return
    spec = new.setdefault("spec", {})
    spec["suspend"] = True
    patches = [p for p in spec.get("runtimePatches") or [] if p.get("manager") != KUEUE_MANAGER]
    spec["runtimePatches"] = [*patches, {"manager": KUEUE_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {}}}}]


def install_trainer(cluster: Cluster, *, runtime: bool = True, kueue: bool = False, schema: bool = True) -> None:
    """Trainer v2.3's CRDs (served kinds + admission), optionally kubetune's runtime and Kueue's webhook.

    The admission checks every TrainJob against the upstream v2.3 CRD schema, which needs the upstream
    CRDs (tests/support/kt_upstream.py): where they are absent the calling test is skipped, with the
    message saying how to get them. ``schema=False`` plays Trainer without that one check, for the
    single caller whose result cannot depend on it (test_api_calls.py records which API calls are
    made; a TrainJob the schema refuses would fail that test where the CRDs are, i.e. in CI)."""
    admission = _trainjob_admission
    if schema:
        require_upstream_crds("trainer/trainer.kubeflow.org_trainjobs.yaml")
    else:
        admission = _trainjob_admission_without_schema
    cluster.declare(*TJ, "TrainJob")
    cluster.declare(*CTR, "ClusterTrainingRuntime", namespaced=False)
    key = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
    cluster.admission[key] = [admission] + ([_kueue_webhook] if kueue else [])
    if runtime:
        cluster.store[(("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes"), None, "kubetune-llamafactory")] = {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "ClusterTrainingRuntime",
            "metadata": {"name": "kubetune-llamafactory", "uid": "rt-uid", "resourceVersion": "1", "generation": 1},
            "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}},
        }


def _set_conditions(obj: Obj, *conds: dict[str, Any]) -> None:
    """meta.SetStatusCondition: replace by type, keep lastTransitionTime unless the status flips."""
    status = obj.setdefault("status", {})
    current = {c["type"]: c for c in status.get("conditions") or []}
    for cond in conds:
        before = current.get(cond["type"])
        when = before["lastTransitionTime"] if before and before["status"] == cond["status"] else _now()
        current[cond["type"]] = {**cond, "lastTransitionTime": when}
    status["conditions"] = list(current.values())


def pod_name(job: str, index: int = 0) -> str:
    return f"{job}-node-0-{index}-x7k2p"


async def trainer_reconciles(cluster: Cluster, namespace: str, name: str) -> None:
    """Trainer's TrainJob controller + JobSet: suspended -> Suspended condition and no pods;
    running -> Resumed (when it was suspended), one Running pod per node, jobsStatus active/ready."""
    job = cluster.read(*TJ, namespace, name)
    assert job is not None, f"no TrainJob {namespace}/{name}"
    nodes = int(((job["spec"].get("trainer") or {}).get("numNodes")) or 1)
    if job["spec"].get("suspend"):
        for i in range(nodes):
            if cluster.read("v1", "pods", namespace, pod_name(name, i)):
                await cluster.remove("v1", "pods", namespace, pod_name(name, i))

        def suspended(obj: Obj) -> None:
            _set_conditions(obj, {"type": "Suspended", "status": "True", "reason": "Suspended", "message": "TrainJob is suspended"})
            obj["status"]["jobsStatus"] = [{"name": "node", "ready": 0, "succeeded": 0, "failed": 0, "active": 0, "suspended": 1}]

        await cluster.mutate(*TJ, namespace, name, suspended)
        return

    def running(obj: Obj) -> None:
        if any(c["type"] == "Suspended" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or []):
            _set_conditions(obj, {"type": "Suspended", "status": "False", "reason": "Resumed", "message": "TrainJob is resumed"})
        obj.setdefault("status", {})["jobsStatus"] = [{"name": "node", "ready": 1, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}]

    await cluster.mutate(*TJ, namespace, name, running)
    template = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    for i in range(nodes):
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "jobset.sigs.k8s.io/jobset-name": name,
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "jobset.sigs.k8s.io/job-index": "0",
            "batch.kubernetes.io/job-completion-index": str(i),
            "batch.kubernetes.io/job-name": f"{name}-node-0",
            "trainer.kubeflow.org/trainjob-ancestor-step": "trainer",
        }
        await cluster.put_object("v1", "pods", {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name(name, i), "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "node"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "node", "state": {"running": {}}}]},
        })


async def trainjob_finishes(cluster: Cluster, namespace: str, name: str, *, exit_code: int = 0) -> None:
    """The pods end; JobSet reports Completed (exit 0) or Failed, which Trainer copies to the TrainJob."""
    job = cluster.read(*TJ, namespace, name)
    assert job is not None
    nodes = int(((job["spec"].get("trainer") or {}).get("numNodes")) or 1)
    phase = "Succeeded" if exit_code == 0 else "Failed"
    for i in range(nodes):
        code = exit_code if i == 0 else 0

        def ended(pod: Obj, code: int = code) -> None:
            pod["status"] = {"phase": phase if code else "Succeeded", "containerStatuses": [
                {"name": "node", "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]}

        await cluster.mutate("v1", "pods", namespace, pod_name(name, i), ended)

    def finished(obj: Obj) -> None:
        if exit_code == 0:
            _set_conditions(obj, {"type": "Complete", "status": "True", "reason": "AllJobsCompleted", "message": "jobset completed successfully"})
            obj["status"]["jobsStatus"] = [{"name": "node", "ready": 0, "succeeded": 1, "failed": 0, "active": 0, "suspended": 0}]
        else:
            _set_conditions(obj, {"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "jobset failed due to one or more job failures"})
            obj["status"]["jobsStatus"] = [{"name": "node", "ready": 0, "succeeded": 0, "failed": 1, "active": 0, "suspended": 0}]

    await cluster.mutate(*TJ, namespace, name, finished)


async def kueue_admits(cluster: Cluster, namespace: str, name: str) -> None:
    """Kueue admits the workload: spec.suspend false (its RunWithPodSetsInfo), then Trainer resumes."""
    await cluster.mutate(*TJ, namespace, name, lambda o: o["spec"].update(suspend=False))
    await trainer_reconciles(cluster, namespace, name)
