"""The Trainer v2 TrainJob backend: golden files, the upstream v2.3 schema, what goes where, Kueue.

The schema is Kubeflow Trainer v2.3.0's TrainJob CRD (../shared/upstream-crds/trainer/), made strict
(an unknown field fails here instead of being pruned by the API server).  Its CEL rules are not
evaluated here (immutability rules only bite on update; the managedBy rule only checks a field we
leave unset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetune.api.contract import KUEUE_QUEUE_LABEL, LABEL_JOB
from kubetune.render import RenderOptions, render, validate_object
from kubetune.cluster.backends.trainjob import (
    COMPLETION_INDEX_LABEL,
    JOB_INDEX_LABEL,
    JOBSET_NAME_LABEL,
    REPLICATED_JOB_LABEL,
    RUNTIME_NAME,
)
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import (
    TRAINJOB_OPTIONS,
    JobBuilder,
    example_files,
    example_id,
    golden_text,
    load_example,
    schema_errors,
    trainjob_golden_path,
)

EXAMPLES = example_files()
# Trainer v2.3 reserves these for its torch plugin and refuses a trainer.env that sets them
# (pkg/constants/constants.go TorchRunReservedEnvNames).
RESERVED = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}


def trainjob(job: Any, options: RenderOptions = TRAINJOB_OPTIONS) -> dict[str, Any]:
    return render(job, options).workload


def node_pod(w: dict[str, Any]) -> dict[str, Any]:
    patch = w["spec"]["runtimePatches"][0]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"
    return dict(rjob["template"]["spec"]["template"])


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_trainjob_golden(example: Path) -> None:
    golden = trainjob_golden_path(example)
    assert golden.exists(), (
        f"no TrainJob golden file for {example_id(example)}: run .venv/bin/python -m tests.support.update_golden"
    )
    assert golden_text(example, TRAINJOB_OPTIONS) == golden.read_text(encoding="utf-8"), (
        f"{example_id(example)} renders differently as a TrainJob; if intended, "
        "run .venv/bin/python -m tests.support.update_golden and review the diff"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_every_rendered_trainjob_passes_the_upstream_v2_3_schema(example: Path) -> None:
    require_upstream_crds()
    job = load_example(example)
    try:
        w = trainjob(job)
    except ValueError as exc:
        # Only a field a TrainJob cannot express is a reason to refuse, and the refusal names it.
        priority = job.spec.scheduling is not None and job.spec.scheduling.priority_class_name
        ttl = job.spec.run_policy.ttl_seconds_after_finished is not None
        assert (priority and "priorityClassName" in str(exc)) or (ttl and "ttlSecondsAfterFinished" in str(exc)), exc
        return
    assert (w["apiVersion"], w["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert schema_errors(w) == []


def test_image_command_env_resources_and_topology_go_through_spec_trainer() -> None:
    job = (
        JobBuilder()
        .set("spec.resources", {"nodes": 4, "gpusPerNode": 8, "memory": "200Gi"})
        .set("spec.image", "registry.local/trainer:1")
        .build()
    )
    w = trainjob(job)
    t = w["spec"]["trainer"]
    assert t["image"] == "registry.local/trainer:1"
    assert t["command"] == ["python", "-m", "kubetune.trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (4, 8)
    assert t["resourcesPerNode"]["limits"] == {"memory": "200Gi", "nvidia.com/gpu": 8}
    names = {e["name"] for e in t["env"]}
    assert "KUBETUNE_CONFIG_DIR" in names and not names & RESERVED
    assert w["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": RUNTIME_NAME,
    }
    pod = node_pod(w)
    assert pod["metadata"]["labels"][LABEL_JOB] == "demo", (
        "our labels reach the pods (the pod informer selects on them)"
    )
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "node"
    assert {m["name"] for m in container["volumeMounts"]} >= {"config", "outputs", "dshm", "scratch"}
    assert {v["name"] for v in pod["spec"]["volumes"]} == {m["name"] for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "priorityClassName" not in pod["spec"] and "automountServiceAccountToken" not in pod["spec"]


def test_placement_goes_through_the_runtime_patch() -> None:
    job = (
        JobBuilder()
        .set(
            "spec.scheduling",
            {
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        )
        .set("spec.serviceAccountName", "trainer")
        .build()
    )
    spec = node_pod(trainjob(job))["spec"]
    assert spec["nodeSelector"] == {"gpu": "h100"}
    assert spec["tolerations"][0]["key"] == "gpu"
    assert spec["serviceAccountName"] == "trainer"
    assert spec["terminationGracePeriodSeconds"] == 300


KUEUE = [
    # id, spec.suspend, queue, expected spec.suspend (None: absent, Kueue's webhook sets it), queue label
    ("running", False, None, False, None),
    ("suspended", True, None, True, None),
    ("queued", False, "gpu-queue", None, "gpu-queue"),
    ("queued-suspended", True, "gpu-queue", None, "gpu-queue"),
]


@pytest.mark.parametrize(("suspend", "queue", "expected", "label"), [k[1:] for k in KUEUE], ids=[k[0] for k in KUEUE])
def test_kueue_queue_label_and_suspend(
    suspend: bool, queue: str | None, expected: bool | None, label: str | None
) -> None:
    b = JobBuilder().set("spec.suspend", suspend)
    if queue:
        b.set("spec.scheduling", {"queueName": queue})
    w = trainjob(b.build())
    assert w["spec"].get("suspend") == expected
    assert w["metadata"]["labels"].get(KUEUE_QUEUE_LABEL) == label


REFUSED = [
    ("spec.scheduling", {"priorityClassName": "high"}, "spec.scheduling.priorityClassName"),
    ("spec.imagePullPolicy", "Always", "spec.imagePullPolicy"),
]


@pytest.mark.parametrize(("field", "value", "path"), REFUSED, ids=[r[2] for r in REFUSED])
def test_fields_a_trainjob_cannot_carry_are_refused_naming_the_field(field: str, value: Any, path: str) -> None:
    doc = JobBuilder().set(field, value).set("spec.distributed", {"backend": "trainjob"}).doc_copy()
    job, problems = validate_object(doc)
    assert job is None and [p.path for p in problems] == [path]
    assert "backend: pytorchjob" in problems[0].message
    with pytest.raises(ValueError, match="TrainJob cannot"):
        render(JobBuilder().set(field, value).build(), TRAINJOB_OPTIONS)
    # The same job is fine on PyTorchJob.
    assert render(JobBuilder().set(field, value).build()).workload["kind"] == "PyTorchJob"


def test_rank0_pod_is_completion_index_0_of_the_node_job() -> None:
    from kubetune.cluster.backends import BACKENDS

    b = BACKENDS["trainjob"]

    def pod(name: str, index: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
        labels = {
            JOBSET_NAME_LABEL: "ft",
            REPLICATED_JOB_LABEL: "node",
            JOB_INDEX_LABEL: "0",
            COMPLETION_INDEX_LABEL: index,
        }
        return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}}

    pods = [pod("ft-node-1-0", "1"), pod("ft-node-0-0-old", "0"), pod("ft-node-0-0-new", "0", "2026-01-02T00:00:00Z")]
    assert b.rank0_pod(pods)["metadata"]["name"] == "ft-node-0-0-new"  # type: ignore[index]
    assert b.rank0_pod([pod("ft-node-1-0", "1")]) is None
    ref = b.pod_for_rank("ft", 2)
    assert dict(ref.labels) == {
        JOBSET_NAME_LABEL: "ft",
        REPLICATED_JOB_LABEL: "node",
        JOB_INDEX_LABEL: "0",
        COMPLETION_INDEX_LABEL: "2",
    }
    assert ref.container == "node"


def test_the_plain_trainjob_in_the_docs_passes_the_upstream_schema_and_fits_our_runtime() -> None:
    """docs/trainjob.md shows a TrainJob written by hand against kubetune-llamafactory: it must be valid."""
    import re

    import yaml
    from tests.support.renderlib import REPO

    require_upstream_crds()
    text = (REPO / "docs" / "trainjob.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "kind: TrainJob" in b]
    assert len(blocks) == 1
    doc = blocks[0]
    assert schema_errors(doc) == []
    assert doc["spec"]["runtimeRef"]["name"] == RUNTIME_NAME
    (patch,) = doc["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert rjob["name"] == "node" and [c["name"] for c in pod["containers"]] == ["node"]
    assert not any("env" in c for c in pod["containers"]), "Trainer refuses env patches on container node"
    assert {m["name"] for m in pod["containers"][0]["volumeMounts"]} == {v["name"] for v in pod["volumes"]}
    assert not {e["name"] for e in doc["spec"]["trainer"]["env"]} & RESERVED
    _applies_as_written_into_any_namespace(text, doc, pod)


def domain_prefixed_path_errors(value: str) -> list[str]:
    """k8s.io/apimachinery/pkg/util/validation IsDomainPrefixedPath (validation.go:88-118, read in
    openshift/microshift's vendored Kubernetes 1.36 @ 8e16b12), which Trainer v2.3's TrainJob
    validation applies to every runtimePatches[].manager (pkg/runtime/framework/plugins/jobset/jobset.go:176)."""
    import re

    host, sep, rest = value.partition("/")
    if not sep or not host or not rest:
        return [f"{value!r}: must be a domain-prefixed path (such as \"acme.io/foo\")"]
    errors = []
    if len(host) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", host):
        errors.append(f"{host!r}: not a DNS-1123 subdomain")
    if not re.fullmatch(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+", rest):
        errors.append(f"{rest!r}: Invalid path")
    return errors


def _applies_as_written_into_any_namespace(text: str, doc: dict[str, Any], pod: dict[str, Any]) -> None:
    """`kubectl apply -n NS -f` of the block works in any NS: no namespace of its own, no team's name
    in a path; a 2-node job's claim is ReadWriteMany in the prerequisites file the page names."""
    import re

    from kubetune.api import load_documents
    from tests.support.renderlib import REPO

    assert "namespace" not in doc["metadata"]
    assert "team-a" not in yaml.safe_dump(doc)
    for patch in doc["spec"]["runtimePatches"]:
        assert domain_prefixed_path_errors(patch["manager"]) == [], patch["manager"]
    env = doc["spec"]["trainer"]["env"]
    names = [e["name"] for e in env]
    out = next(e for e in env if e["name"] == "KUBETUNE_OUTPUT_DIR")["value"]
    # $(VAR) expands only to a variable defined earlier in the list (Kubernetes dependent env vars);
    # Trainer v2.3 keeps spec.trainer.env in order (pkg/apply/apply.go:37-41 UpsertEnvVars, 79-87 upsert)
    for ref in re.findall(r"\$\((\w+)\)", out):
        assert ref in names[: names.index("KUBETUNE_OUTPUT_DIR")]
        assert next(e for e in env if e["name"] == ref)["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.namespace"}
        }
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    [prereqs] = set(re.findall(r"kubectl apply -n NS -f (examples/prerequisites/[\w-]+\.yaml)", text))
    modes = {
        d["metadata"]["name"]: d["spec"]["accessModes"]
        for d in load_documents((REPO / prereqs).read_text(encoding="utf-8"))
        if d and d["kind"] == "PersistentVolumeClaim"
    }
    for claim in claims:
        assert claim in modes, f"{claim} is not in {prereqs}"
        if doc["spec"]["trainer"]["numNodes"] > 1:
            assert modes[claim] == ["ReadWriteMany"], (
                f"{claim}: {modes[claim]} cannot be mounted by {doc['spec']['trainer']['numNodes']} nodes"
            )


def _trainjob_problems(name: str = "qwen-lora", **spec: Any) -> list[str]:
    from kubetune.api import load_documents
    from tests.support.renderlib import REPO
    from kubetune.render.backends import RENDERERS

    doc = next(load_documents((REPO / "examples" / "finetune-lora.yaml").read_text(encoding="utf-8")))
    doc["metadata"] = {"name": name, "namespace": "team-a"}
    doc["spec"].update(spec)
    job, problems = validate_object(doc)
    assert job is not None, problems
    return [f"{p.path}: {p.message}" for p in RENDERERS["trainjob"].check(job)]


def test_what_a_trainjob_cannot_carry_is_refused_naming_the_field_and_the_limit() -> None:
    assert _trainjob_problems() == []
    assert _trainjob_problems("a" * 48) == []  # <name>-node-0-0-abcde: 63 characters
    (long,) = _trainjob_problems("a" * 49)
    assert long.startswith("metadata.name: ") and "at most 48 characters" in long and "63" in long
    nodes = {"nodes": 12, "gpusPerNode": 8}
    (twelve,) = _trainjob_problems("a" * 48, resources=nodes)  # <name>-node-0-11-abcde: 64
    assert "at most 47 characters" in twelve
    (digit,) = _trainjob_problems("7b-lora")
    assert "RFC 1035" in digit and "starts with a digit" in digit
    (ttl,) = _trainjob_problems(runPolicy={"ttlSecondsAfterFinished": 60})
    assert ttl.startswith("spec.runPolicy.ttlSecondsAfterFinished: ")
    toleration = {"key": "team-a", "operator": "Exists", "effect": "NoSchedule"}
    (lost,) = _trainjob_problems(scheduling={"queueName": "gpu", "tolerations": [toleration]})
    assert lost.startswith("spec.scheduling.tolerations: ") and "Kueue" in lost
    assert _trainjob_problems(scheduling={"tolerations": [toleration]}) == []
