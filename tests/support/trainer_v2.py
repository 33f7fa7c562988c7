"""Plays Kubeflow Trainer v2.3 (its CRD rules, webhooks and TrainJob controller), JobSet v0.12 (its
webhook, the kubelet's pods) and Kueue v0.19.2 (its TrainJob webhook and job reconciler) against the
emulated cluster.  Every behaviour names the upstream file:line it plays, read at the tag (not copied):

kubeflow/trainer v2.3.0
  T1 pkg/apis/trainer/v1alpha1/trainjob_types.go: the CRD (/work/shared/upstream-crds/trainer, the
     same rules): metadata.name RFC 1035 and <= 63 (:36-37); ``self == oldSelf`` on spec.runtimeRef,
     initializer, trainer, activeDeadlineSeconds, managedBy (:104-150), runtimePatches[].manager (:299)
     and the PodSpecPatch fields serviceAccountName, volumes, initContainers, containers,
     imagePullSecrets, securityContext, terminationGracePeriodSeconds (:390-463); runtimePatches is a
     list-map keyed by manager (:120-121), replicatedJobs by name (:338-339).  Played by evaluating the
     upstream CRD's schema and CEL (tests/support/apiserver/validation.py); transition rules run on list-map items
     correlated by their keys, as the API server does (k8s.io/apiextensions-apiserver CEL validation;
     not read here: the correlation is the documented behaviour of x-kubernetes-list-type map).
  T2 pkg/webhooks/trainjob_webhook.go:45-92 ``Default``: runtimePatches[].time is set to now on create
     when unset; on update an entry equal to the old one but for time keeps the old time, a changed or
     new one gets now.  Its validator (:94 name ``validator.trainjob.trainer.kubeflow.org``; :110-134)
     runs the runtime's ValidateObjects:
  T3 pkg/runtime/core/clustertrainingruntime.go:99-108: the ClusterTrainingRuntime must exist.
  T4 pkg/runtime/framework/plugins/torch/torch.go:69-76: no PET_* env in spec.trainer.env.
  T5 pkg/runtime/framework/plugins/jobset/jobset.go:172-209: runtimePatches change only while the
     TrainJob is suspended before or after the update, and not while the JobSet still has an active
     replicated job (:214-251); managers are domain-prefixed paths (:176); patches name only replicated
     jobs and containers of the runtime (:181-202) and set no env on the ``node`` container (:203-206).
  T6 pkg/runtime/core/trainingruntime.go:251-290: the runtime's JobSet template is strategic-merge
     patched with each runtimePatches entry in list order.
  T7 pkg/controller/trainjob_controller.go:107-119: a failed creation of the JobSet is only an Event
     ``TrainJobResourcesCreationFailed`` "TrainJob resources reconciliation failed: ..." on the TrainJob.
  T8 pkg/controller/trainjob_controller.go ``setSuspendedCondition`` and plugins/jobset/jobset.go
     ``Status`` (conditions Suspended/Complete/Failed, jobsStatus), as before.
kubernetes-sigs/jobset v0.12.0
  J1 pkg/webhooks/jobset_webhook.go:234-255 with pkg/util/placement/placement.go:14-22: the longest
     Job name ``<js>-<rjob>-<replicas-1>`` and, for an Indexed job, pod name
     ``<js>-<rjob>-<replicas-1>-<completions-1>-abcde`` must be DNS-1035 labels; over 63 characters the
     message is "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters"
     (:65-67).  Indexed is JobSet's default (:120-123); Trainer names the JobSet after the TrainJob
     (plugins/jobset/jobset.go:413) and sets completions to numNodes (:302-323).
kubernetes-sigs/kueue v0.19.2
  K1 pkg/controller/jobs/trainjob/trainjob_webhook.go:65 (mutating, verbs=create) and :70-104: EVERY
     created TrainJob gets a runtimePatches entry of manager ``kueue.x-k8s.io/manager`` appended
     (with an empty JobSet spec patch); it is suspended when Kueue manages it (a queue-name label).
  K2 pkg/controller/jobs/trainjob/trainjob_controller.go:243-290 ``RunWithPodSetsInfo``: on admission
     Kueue replaces its entry's replicatedJobs with one patch per pod set carrying the flavor's
     nodeSelector and tolerations (pkg/podset/podset.go:78-91: the flavors' tolerations only), updates
     the TrainJob while it is suspended, then unsuspends it.
  K3 pkg/controller/jobframework/reconciler.go:621-635: a suspended job whose Workload is admitted is
     started again ("Job admitted, unsuspending").  A deleted TrainJob takes its Workload (owned by it)
     with it: nothing is left to re-admit.
controller-runtime v0.24.1 and the API server
  W1 pkg/webhook/admission/validator_custom.go:143-150 and response.go:35-37,63-83: a validator's
     error becomes a denial with code 403, reason Forbidden and the error as message; the API server
     answers it as ``<resource> "<name>" is forbidden: admission webhook "<webhook>" denied the request:
     <message>`` (k8s.io/apiserver pkg/admission/plugin/webhook/errors/statuserror.go ToStatusErr, read
     through the code search index, release not pinned).  A field.ErrorList's aggregate joins several
     errors as ``[a, b]`` (k8s.io/apimachinery util/errors; not read here).

Order of a write, as in the API server: defaults from the schema, mutating webhooks (Kueue's, then
Trainer's time; the order between the two webhook configurations is not read here), schema + CEL,
then the validating webhooks.  The controllers' steps are driven by the tests, not by a loop.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from tests.support.apiserver import validation
from tests.support.apiserver.emulator import ApiError, Cluster, Obj
from tests.support.kt_upstream import require_upstream_crds

TJ = ("trainer.kubeflow.org/v1alpha1", "trainjobs")
CTR = ("trainer.kubeflow.org/v1alpha1", "clustertrainingruntimes")
RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_MANAGER = "kueue.x-k8s.io/manager"
TRAINER_WEBHOOK = "validator.trainjob.trainer.kubeflow.org"
RUNTIME = "kubetune-llamafactory"
_DOMAIN_PREFIXED = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^/].*")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_STATE: dict[int, dict[str, Any]] = {}
"""Per cluster: the runtime's template, Kueue on/off, admitted TrainJobs."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    """The upstream CRD's openAPIV3Schema (renderlib.crd_schema: tests/support/kt_upstream.py finds the
    folder, and the calling test is skipped with how to get it where it is absent)."""
    from tests.support import renderlib

    relative, version = renderlib.WORKLOAD_CRDS[("trainer.kubeflow.org/v1alpha1", kind)]
    return renderlib.crd_schema(relative, version)


def _state(cluster: Cluster) -> dict[str, Any]:
    return _STATE.setdefault(id(cluster), {"kueue": False, "admitted": {}, "runtime": None})


# --- T1: the CRD's schema and CEL, with list-map correlation for transition rules ----------------


def _type_of(schema: Mapping[str, Any]) -> str:
    return str(schema.get("type") or "object")


def _transition_errors(new: Any, old: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """Transition rules (``oldSelf``) wherever the node exists in both objects; list-map items are
    paired by their keys, other lists are not correlated (their items' transition rules do not run)."""
    errors: list[str] = []
    for entry in schema.get(validation.RULES, []):
        if validation.is_transition(entry["rule"]):
            activation = {
                "self": validation.to_cel(new, dict(schema)),
                "oldSelf": validation.to_cel(old, dict(schema)),
            }
            if not validation.holds(entry["rule"], activation):
                errors.append(f'{path.lstrip(".")}: Invalid value: "{_type_of(schema)}": {entry["message"]}')
    if isinstance(new, dict) and isinstance(old, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new and key in old:
                errors += _transition_errors(new[key], old[key], sub, f"{path}.{key}")
    elif isinstance(new, list) and isinstance(old, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(new):
            match = by_key.get(tuple(item.get(k) for k in keys)) if isinstance(item, dict) else None
            if match is not None:
                errors += _transition_errors(item, match, schema.get("items") or {}, f"{path}[{i}]")
    return errors


def _crd_verdict(new: Obj, old: Obj | None) -> None:
    """The API server's schema, defaulting and CEL for a TrainJob write; refuses with 422 Invalid."""
    schema = _schema("TrainJob")
    body = {k: v for k, v in new.items() if k != "status"}
    stored, errors = validation.admitted(body, schema)
    if old is not None and not errors:
        old_body = {k: v for k, v in old.items() if k != "status"}
        errors = _transition_errors(stored, old_body, schema, "")
    if errors:
        raise ApiError(
            422,
            "Invalid",
            f'TrainJob.trainer.kubeflow.org "{new["metadata"].get("name")}" is invalid: ' + "; ".join(errors),
        )
    new.update({k: v for k, v in stored.items() if k != "metadata"})  # defaults (spec.suspend, spec.managedBy)


# --- W1: a validating webhook's denial ----------------------------------------------------------


def denial(resource: str, name: str, webhook: str, errors: list[str]) -> ApiError:
    """controller-runtime's 403 as the API server returns it (W1)."""
    message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return ApiError(
        403,
        "Forbidden",
        f'{resource} "{name}" is forbidden: admission webhook "{webhook}" denied the request: {message}',
    )


# --- K1, T2: mutating webhooks ------------------------------------------------------------------


def _kueue_default(new: Obj, old: Obj | None, cluster: Cluster) -> None:
    """K1: on create only; every TrainJob gets Kueue's entry; a queued one is suspended."""
    if old is not None or not _state(cluster)["kueue"]:
        return
    spec = new.setdefault("spec", {})
    if ((new.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL):
        spec["suspend"] = True
    spec["runtimePatches"] = [
        *(spec.get("runtimePatches") or []),
        {"manager": KUEUE_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {}}}},
    ]


def _trainer_default(new: Obj, old: Obj | None) -> None:
    """T2: runtimePatches[].time."""
    now = _now()
    patches = (new.get("spec") or {}).get("runtimePatches") or []
    if old is None:
        for patch in patches:
            patch.setdefault("time", now)
        return
    before = {p.get("manager"): p for p in (old.get("spec") or {}).get("runtimePatches") or []}
    for patch in patches:
        previous = before.get(patch.get("manager"))
        if previous is not None:
            same = {k: v for k, v in previous.items() if k != "time"} == {k: v for k, v in patch.items() if k != "time"}
            if same and "time" in previous:
                patch["time"] = previous["time"]
            elif not same:
                patch["time"] = now
        else:
            patch.setdefault("time", now)


# --- T3-T5: Trainer's validating webhook ------------------------------------------------------


def _trainer_validate(new: Obj, old: Obj | None, cluster: Cluster) -> None:
    name = new["metadata"].get("name", "")
    spec = new.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    runtime = cluster.read(*CTR, None, str(ref.get("name")))
    if runtime is None:  # T3
        raise denial(
            "trainjobs.trainer.kubeflow.org",
            name,
            TRAINER_WEBHOOK,
            [
                f"spec.RuntimeRef: Invalid value: {json.dumps(ref, sort_keys=True)}: "
                f'clustertrainingruntimes.trainer.kubeflow.org "{ref.get("name")}" not found: '
                "specified clusterTrainingRuntime must be created before the TrainJob is created"
            ],
        )
    errors: list[str] = []
    reserved = sorted({e.get("name") for e in (spec.get("trainer") or {}).get("env") or []} & RESERVED_ENV)
    if reserved:  # T4
        errors.append(
            "spec.trainer.env: Invalid value: ...: must not have reserved envs, "
            f"invalid envs configured: [{' '.join(reserved)}]"
        )
    patches = spec.get("runtimePatches") or []
    if old is not None and patches != ((old.get("spec") or {}).get("runtimePatches") or []):  # T5 :214-251
        if not (spec.get("suspend") is True or (old.get("spec") or {}).get("suspend") is True):
            errors.append(
                "spec.runtimePatches: Forbidden: RuntimePatches can only be modified when the TrainJob is "
                "suspended before or after the update"
            )
        else:
            for rjob in (old.get("status") or {}).get("jobsStatus") or []:  # the JobSet's status, as Trainer copies it
                if int(rjob.get("active") or 0) > 0:
                    errors.append(
                        "spec.runtimePatches: Forbidden: RuntimePatches cannot be modified when the JobSet's "
                        f"ReplicatedJob {rjob.get('name')} is still active"
                    )
    containers = {
        rj["name"]: {c["name"] for c in rj["template"]["spec"]["template"]["spec"].get("containers") or []}
        for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]
    }
    for patch in patches:  # T5 :175-209
        if not _DOMAIN_PREFIXED.fullmatch(str(patch.get("manager", ""))):
            errors.append(
                f"spec.runtimePatches.manager: Invalid value: {json.dumps(patch.get('manager'))}: "
                "must be a domain-prefixed path (such as \"acme.io/foo\")"
            )
        for rjob in (
            (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs")
        ) or []:
            if rjob.get("name") not in containers:
                errors.append(
                    "spec.runtimePatches: Invalid value: ...: must not have replicated job that doesn't "
                    "exist in the runtime job template"
                )
                continue
            pod = (((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in pod.get("containers") or []:
                if c.get("name") not in containers[rjob["name"]]:
                    errors.append(
                        "spec.runtimePatches: Invalid value: ...: must not have container that doesn't exist in "
                        f"the runtime job {rjob['name']}"
                    )
                elif c.get("env") and c.get("name") == "node":
                    errors.append(
                        "spec.runtimePatches: Invalid value: ...: must not have envs for the dataset-initializer, "
                        "model-initializer, node containers"
                    )
    if errors:
        raise denial("trainjobs.trainer.kubeflow.org", name, TRAINER_WEBHOOK, errors)


def _trainjob_admission(cluster: Cluster, *, schema: bool = True) -> Any:
    def admit(new: Obj, old: Obj | None) -> None:
        if schema:
            validation.apply_defaults(new.setdefault("spec", {}), _schema("TrainJob")["properties"]["spec"])
        _kueue_default(new, old, cluster)
        _trainer_default(new, old)
        if schema:
            _crd_verdict(new, old)
        _trainer_validate(new, old, cluster)

    return admit


def install_trainer(cluster: Cluster, *, runtime: bool = True, kueue: bool = False, schema: bool = True) -> None:
    """Trainer v2.3's CRDs (served kinds + admission), optionally kubetune's runtime (the chart's,
    rendered by helm) and Kueue (its TrainJob webhook and reconciler).

    The admission plays the API server's schema, defaults and CEL from the upstream v2.3 CRD, which
    needs the upstream CRDs (tests/support/kt_upstream.py): where they are absent the calling test is
    skipped, with the message saying how to get them. ``schema=False`` plays Trainer without those
    (webhooks only), for the single caller whose result cannot depend on them (test_api_calls.py
    records which API calls are made; a TrainJob the schema refuses would fail that test where the
    CRDs are, i.e. in CI, and the newcomer test proves the recording is the same without them)."""
    if schema:
        require_upstream_crds("trainer/trainer.kubeflow.org_trainjobs.yaml")
    cluster.declare(*TJ, "TrainJob")
    cluster.declare(*CTR, "ClusterTrainingRuntime", namespaced=False)
    _state(cluster).update(kueue=kueue)
    cluster.admission[("trainer.kubeflow.org", "v1alpha1", "trainjobs")] = [_trainjob_admission(cluster, schema=schema)]
    if runtime:
        cluster.store[(("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes"), None, RUNTIME)] = {
            **chart_runtime(),
            "metadata": {"name": RUNTIME, "uid": "rt-uid", "resourceVersion": "1", "generation": 1},
        }


def chart_runtime() -> dict[str, Any]:
    """kubetune's ClusterTrainingRuntime as the chart renders it (helm template, cached per session)."""
    global _CHART_RUNTIME
    if _CHART_RUNTIME is None:
        import subprocess
        from pathlib import Path

        import yaml

        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(  # noqa: S603 - fixed argv
            [
                str(root / ".tools" / "bin" / "helm"),
                "template",
                "kt",
                str(root / "charts" / "kubetune"),
                "--set",
                "trainingRuntimes.enabled=true",
                "--api-versions",
                "trainer.kubeflow.org/v1alpha1/ClusterTrainingRuntime",
                "--show-only",
                "templates/trainingruntimes.yaml",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        _CHART_RUNTIME = yaml.safe_load(out)
    return copy.deepcopy(_CHART_RUNTIME)


_CHART_RUNTIME: dict[str, Any] | None = None


# --- T6: the pods' template, the runtime patched in order ---------------------------------------

_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "replicatedJobs": "name",
}
"""Lists that a strategic-merge patch merges by key (the patchMergeKey tags of k8s.io/api core/v1 PodSpec
and Container, and JobSetSpec.ReplicatedJobs; read through the Kubernetes docs "Update API Objects in Place
Using kubectl patch", which also says PodSpec.tolerations has no patch strategy: the patch replaces it)."""


def _smp(target: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for k, v in patch.items():
            out[k] = _smp(target.get(k), v, k) if k in target else copy.deepcopy(v)
        return out
    if isinstance(target, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        mk = _MERGE_KEYS[key]
        out = [copy.deepcopy(t) for t in target]
        for item in patch:
            i = next((n for n, t in enumerate(out) if t.get(mk) == item.get(mk)), None)
            if i is None:
                out.append(copy.deepcopy(item))
            else:
                out[i] = _smp(out[i], item)
        return out
    return copy.deepcopy(patch)


def pod_template(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The pod template of the replicated job ``node`` after every runtimePatches entry (T6)."""
    job = cluster.read(*TJ, namespace, name)
    runtime = cluster.read(*CTR, None, RUNTIME)
    assert job is not None and runtime is not None
    spec = runtime["spec"]["template"]["spec"]
    for patch in job["spec"].get("runtimePatches") or []:
        spec = _smp(spec, (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")) or {})
    node = next(r for r in spec["replicatedJobs"] if r["name"] == "node")
    return dict(node["template"]["spec"]["template"])


# --- T7, T8, J1: the controller, JobSet and the kubelet -----------------------------------------


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
    """``GenPodName(<job>, node, 0, <index>)`` plus the Job controller's 5 random characters (J1)."""
    return f"{job}-node-0-{index}-x7k2p"


def jobset_refusal(name: str, nodes: int) -> str | None:
    """JobSet's webhook message for the TrainJob's JobSet (J1), None when it is admitted."""
    errors = []
    for candidate, too_long in (
        (f"{name}-node-0", "JobSet name is too long, job names generated for this JobSet will exceed 63 characters"),
        (
            f"{name}-node-0-{nodes - 1}-abcde",
            "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters",
        ),
    ):
        if len(candidate) > 63:
            errors.append(f'spec.replicatedJobs[0].name: Invalid value: "{name}-node-0": {too_long}')
        elif not _DNS1035.fullmatch(candidate):
            errors.append(
                f'spec.replicatedJobs[0].name: Invalid value: "{name}-node-0": '
                "a DNS-1035 label must consist of lower case alphanumeric "
                "characters or '-', start with an alphabetic character, and end with an alphanumeric character"
            )
    if not errors:
        return None
    return str(denial("jobsets.jobset.x-k8s.io", name, "vjobset.kb.io", errors).message)


async def trainer_reconciles(cluster: Cluster, namespace: str, name: str) -> None:
    """Trainer's TrainJob controller + JobSet: suspended -> Suspended condition and no pods;
    running -> Resumed (when it was suspended), one Running pod per node, jobsStatus active/ready.
    A JobSet refused by its webhook (J1) leaves only an Event (T7)."""
    job = cluster.read(*TJ, namespace, name)
    assert job is not None, f"no TrainJob {namespace}/{name}"
    nodes = int(((job["spec"].get("trainer") or {}).get("numNodes")) or 1)
    refused = jobset_refusal(name, nodes)
    if refused is not None:
        await cluster.put_object(
            "v1",
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.trainer", "namespace": namespace},
                "involvedObject": {"apiVersion": TJ[0], "kind": "TrainJob", "name": name, "namespace": namespace},
                "type": "Warning",
                "reason": "TrainJobResourcesCreationFailed",
                "message": f"TrainJob resources reconciliation failed: {refused}",
            },
        )
        return
    if job["spec"].get("suspend"):
        for i in range(nodes):
            if cluster.read("v1", "pods", namespace, pod_name(name, i)):
                await cluster.remove("v1", "pods", namespace, pod_name(name, i))

        def suspended(obj: Obj) -> None:
            _set_conditions(
                obj, {"type": "Suspended", "status": "True", "reason": "Suspended", "message": "TrainJob is suspended"}
            )
            obj["status"]["jobsStatus"] = [
                {"name": "node", "ready": 0, "succeeded": 0, "failed": 0, "active": 0, "suspended": 1}
            ]

        await cluster.mutate(*TJ, namespace, name, suspended)
        return

    def running(obj: Obj) -> None:
        if any(
            c["type"] == "Suspended" and c["status"] == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        ):
            _set_conditions(
                obj, {"type": "Suspended", "status": "False", "reason": "Resumed", "message": "TrainJob is resumed"}
            )
        obj.setdefault("status", {})["jobsStatus"] = [
            {"name": "node", "ready": 1, "succeeded": 0, "failed": 0, "active": 1, "suspended": 0}
        ]

    await cluster.mutate(*TJ, namespace, name, running)
    template = pod_template(cluster, namespace, name)
    for i in range(nodes):
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "jobset.sigs.k8s.io/jobset-name": name,
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "jobset.sigs.k8s.io/job-index": "0",
            "batch.kubernetes.io/job-completion-index": str(i),
            "batch.kubernetes.io/job-name": f"{name}-node-0",
        }
        pod_spec = {k: v for k, v in template["spec"].items() if k in ("nodeSelector", "tolerations", "affinity")}
        await cluster.put_object(
            "v1",
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name(name, i), "namespace": namespace, "labels": labels},
                "spec": {"containers": [{"name": "node"}], **pod_spec},
                "status": {"phase": "Running", "containerStatuses": [{"name": "node", "state": {"running": {}}}]},
            },
        )


async def trainjob_finishes(cluster: Cluster, namespace: str, name: str, *, exit_code: int = 0) -> None:
    """The pods end; JobSet reports Completed (exit 0) or Failed, which Trainer copies to the TrainJob."""
    job = cluster.read(*TJ, namespace, name)
    assert job is not None
    nodes = int(((job["spec"].get("trainer") or {}).get("numNodes")) or 1)
    phase = "Succeeded" if exit_code == 0 else "Failed"
    for i in range(nodes):
        code = exit_code if i == 0 else 0

        def ended(pod: Obj, code: int = code) -> None:
            pod["status"] = {
                "phase": phase if code else "Succeeded",
                "containerStatuses": [
                    {
                        "name": "node",
                        "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}},
                    }
                ],
            }

        await cluster.mutate("v1", "pods", namespace, pod_name(name, i), ended)

    ok = exit_code == 0
    if ok:
        type_, reason, message = "Complete", "AllJobsCompleted", "jobset completed successfully"
    else:
        type_, reason, message = "Failed", "FailedJobs", "jobset failed due to one or more job failures"

    def finished(obj: Obj) -> None:
        _set_conditions(obj, {"type": type_, "status": "True", "reason": reason, "message": message})
        obj["status"]["jobsStatus"] = [
            {"name": "node", "ready": 0, "succeeded": int(ok), "failed": int(not ok), "active": 0, "suspended": 0}
        ]

    await cluster.mutate(*TJ, namespace, name, finished)


# --- K2, K3: Kueue's reconciler -----------------------------------------------------------------


async def kueue_admits(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    tolerations: list[dict[str, Any]] | None = None,
    node_labels: dict[str, str] | None = None,
) -> None:
    """Kueue admits the Workload on a flavor with these tolerations and node labels: K2, then Trainer resumes."""
    _state(cluster)["admitted"][(namespace, name)] = True

    def run_with_pod_sets_info(obj: Obj) -> None:
        kueue = next(
            p for p in obj["spec"]["runtimePatches"] if p["manager"] == KUEUE_MANAGER
        )  # "kueue runtime patch not found" otherwise
        pod_spec = {k: v for k, v in (("nodeSelector", node_labels or {}), ("tolerations", tolerations or [])) if v}
        kueue["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"] = [
            {"name": "node", "template": {"spec": {"template": {"metadata": {}, "spec": pod_spec}}}}
        ]

    await _update(cluster, namespace, name, run_with_pod_sets_info)  # while suspended (trainjob_controller.go:282-286)
    await _update(cluster, namespace, name, lambda o: o["spec"].update(suspend=False))
    await trainer_reconciles(cluster, namespace, name)


async def kueue_reconciles(cluster: Cluster, namespace: str, name: str) -> bool:
    """K3: a suspended TrainJob whose Workload is admitted is unsuspended. Returns whether it acted."""
    job = cluster.read(*TJ, namespace, name)
    if job is None:
        _state(cluster)["admitted"].pop((namespace, name), None)  # the Workload went with its owner
        return False
    if job["spec"].get("suspend") and _state(cluster)["admitted"].get((namespace, name)):
        await _update(cluster, namespace, name, lambda o: o["spec"].update(suspend=False))
        await trainer_reconciles(cluster, namespace, name)
        return True
    return False


async def _update(cluster: Cluster, namespace: str, name: str, change: Any) -> Obj:
    """A client's update of the TrainJob (through admission, like Kueue's c.Update)."""
    key = (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), namespace, name)

    def apply(old: Obj) -> Obj:
        new = copy.deepcopy(old)
        change(new)
        return new

    return await cluster._write(key, apply, None, None)


async def node_pod_fails(cluster: Cluster, namespace: str, name: str, exit_code: int) -> None:
    """Node 0's container exits with ``exit_code`` and the Job controller replaces the pod (a new uid):
    the runtime's podFailurePolicy fails the Job only for 1-127 (charts/kubetune/templates/trainingruntimes.yaml),
    so a retryable code (128-255) counts against the Job's backoffLimit (100) and the pod is recreated."""
    pod = pod_name(name, 0)
    terminated = {
        "exitCode": exit_code,
        "reason": "Error",
        "startedAt": "2026-11-28T12:00:00Z",
        "finishedAt": "2026-11-28T12:05:00Z",
    }

    def failed(obj: Obj) -> None:
        obj["status"] = {
            "phase": "Failed",
            "containerStatuses": [{"name": "node", "state": {"terminated": terminated}}],
        }

    old = await cluster.mutate("v1", "pods", namespace, pod, failed)
    await cluster.remove("v1", "pods", namespace, pod)
    replacement = {k: copy.deepcopy(old[k]) for k in ("apiVersion", "kind", "spec")}
    replacement["metadata"] = {k: copy.deepcopy(old["metadata"][k]) for k in ("name", "namespace", "labels")}
    replacement["status"] = {"phase": "Running", "containerStatuses": [{"name": "node", "state": {"running": {}}}]}
    await cluster.put_object("v1", "pods", replacement)
