"""Shared helpers for the renderer tests: example discovery, a fluent job builder, schemas."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from kubetune.api import FineTuneJob, contract, load_documents
from kubetune.render import RenderOptions, render, validate_object
from kubetune.render.output import to_yaml
from kubetune.render.serving import manifests

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GOLDEN = REPO / "tests" / "render" / "golden"


def valid_job(name: str, spec: dict[str, Any], namespace: str = "ml") -> FineTuneJob:
    """The FineTuneJob ``name`` with ``spec``, validated as the operator validates it: no problems."""
    head = {"apiVersion": contract.API_VERSION, "kind": contract.KIND}
    job, problems = validate_object({**head, "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    assert job is not None and not problems, problems
    return job


def example_files() -> list[Path]:
    """Every FineTuneJob example (examples/argocd holds Argo CD manifests and
    examples/prerequisites the objects the jobs need, not jobs; a FineTuneSweep example such as
    sweep-lr.yaml renders nothing itself: tests/sweep/test_sweep_example.py checks it)."""
    skip = {
        "argocd",
        "prerequisites",
        "recipes",
    }  # recipes: several jobs per file (tests/render/test_posttrain_render.py)
    return sorted(
        p
        for p in EXAMPLES.rglob("*.yaml")
        if not skip & set(p.relative_to(EXAMPLES).parts)
        and "\nkind: FineTuneSweep\n" not in p.read_text(encoding="utf-8")
    )


def example_id(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def golden_path(path: Path) -> Path:
    return GOLDEN / path.relative_to(EXAMPLES)


def load_example(path: Path) -> FineTuneJob:
    docs = [
        d
        for d in load_documents(path.read_text(encoding="utf-8"))
        if isinstance(d, dict) and d.get("kind") == "FineTuneJob"
    ]
    assert len(docs) == 1, f"{path}: expected one FineTuneJob"
    job, problems = validate_object(docs[0])
    assert job is not None and not problems, f"{path}: {problems}"
    return job


OPERATOR_OPTIONS = RenderOptions(progress_url="http://kt-kubetune.kubetune-system.svc:8082/v1/progress")
"""What the chart's operator renders with (--progress-url): pods get the push transport's token."""
OPERATOR_EXAMPLES = ("finetune-lora.yaml", "finetune-multinode-mpijob.yaml")
"""Examples also kept as golden files rendered with OPERATOR_OPTIONS, under golden/operator/."""


def operator_golden_path(path: Path) -> Path:
    return GOLDEN / "operator" / path.relative_to(EXAMPLES)


TRAINJOB_OPTIONS = RenderOptions(backend="trainjob")
"""Every example is also kept rendered as a Trainer v2 TrainJob, under golden/trainjob/."""


def trainjob_golden_path(path: Path) -> Path:
    return GOLDEN / "trainjob" / path.relative_to(EXAMPLES)


def golden_text(path: Path, options: RenderOptions | None = None) -> str:
    """What update_golden.py writes for one example: its rendered objects as YAML (or, when the
    backend option refuses the job, the refusal as a YAML comment: what ``kubetune render`` prints)."""
    job = load_example(path)
    # As `kubetune render` prints it (spec.serve's objects after the training ones); the operator's
    # goldens hold only what it creates at start (it creates the serving objects after success).
    try:
        objects = render(job, options).objects if options is not None else manifests(job)
    except ValueError as exc:
        if options is None or options.backend is None:
            raise
        return f"# kubetune render --backend {options.backend} refuses this job: {exc}\n"
    text = to_yaml(objects)
    assert list(yaml.safe_load_all(text)) == objects  # the golden file is exactly the objects
    return str(text)


BASE_SPEC: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "demo", "namespace": "team-a"},
    "spec": {
        "model": {"name": "Qwen/Qwen1.5-1.8B", "template": "qwen"},
        "datasets": [{"name": "chats", "path": "chats.jsonl"}],
        "storage": {"outputs": {"claimName": "outputs"}},
    },
}


class JobBuilder:
    """Fluent FineTuneJob documents for table-driven tests: ``JobBuilder().set("spec.method", "full").build()``."""

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self.doc = copy.deepcopy(base or BASE_SPEC)

    def set(self, dotted: str, value: Any) -> JobBuilder:
        node = self.doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
        return self

    def unset(self, dotted: str) -> JobBuilder:
        node = self.doc
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node.pop(last, None)
        return self

    def doc_copy(self) -> dict[str, Any]:
        return copy.deepcopy(self.doc)

    def build(self) -> FineTuneJob:
        job, problems = validate_object(self.doc_copy())
        assert job is not None, problems
        return job


@functools.cache
def crd_schema(relative: str, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one version of an upstream CRD (kt_upstream.py finds the folder;
    the calling test is skipped, with a message saying how to get them, where they are absent)."""
    from tests.support.kt_upstream import (
        require_upstream_crds,
    )  # here, not at the top: update_golden.py imports this module outside pytest

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(require_upstream_crds(relative).read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return dict(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{relative} has no version {version}")


WORKLOAD_CRDS = {
    ("kubeflow.org/v1", "PyTorchJob"): ("training-operator/kubeflow.org_pytorchjobs.yaml", "v1"),
    ("kubeflow.org/v2beta1", "MPIJob"): ("mpi-operator/kubeflow.org_mpijobs.yaml", "v2beta1"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): ("trainer/trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"): (
        "trainer/trainer.kubeflow.org_clustertrainingruntimes.yaml",
        "v1alpha1",
    ),
}


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """jsonschema errors of a rendered Kubeflow job against the upstream CRD's openAPIV3Schema."""
    validator = _validator(obj["apiVersion"], obj["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    import jsonschema

    relative, version = WORKLOAD_CRDS[(api_version, kind)]
    return jsonschema.Draft7Validator(_strict(crd_schema(relative, version)))


def _strict(schema: Any) -> Any:
    """The API server prunes unknown fields silently; in tests an unknown field is a bug, so
    forbid additional properties wherever the schema lists properties (and does not preserve unknowns)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def pod_templates(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = workload["spec"].get("pytorchReplicaSpecs") or workload["spec"].get("mpiReplicaSpecs")
    return {role: spec["template"] for role, spec in specs.items()}
