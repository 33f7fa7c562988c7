"""The chart's Kubeflow Trainer v2 runtime, rendered by the real helm binary.

It must pass the upstream Trainer v2.3 ClusterTrainingRuntime schema (strict: an unknown field fails
here instead of being pruned), be off by default, refuse to render before the Trainer CRDs exist,
and match what kubetune's TrainJobs reference and patch (runtime name, replicated job and container
names: Trainer refuses a patch of a container the runtime lacks).
"""

from __future__ import annotations

from typing import Any

from tests.support.kt_upstream import require_upstream_crds
from tests.support import renderlib
from tests.support.chartlib import find, needs_helm, one, template, template_error
from kubetune.api.contract import METRICS_PORT
from kubetune.render import RenderOptions, render
from kubetune.cluster.backends.trainjob import NODE, RUNTIME_NAME

pytestmark = needs_helm

API = "trainer.kubeflow.org/v1alpha1/ClusterTrainingRuntime"


def runtime() -> dict[str, Any]:
    return one(template("--set", "trainingRuntimes.enabled=true", "--api-versions", API), "ClusterTrainingRuntime")


def test_off_by_default() -> None:
    assert find(template(), "ClusterTrainingRuntime") == []


def test_refused_before_the_trainer_crds_exist() -> None:
    error = template_error("--set", "trainingRuntimes.enabled=true")
    assert "Kubeflow Trainer v2 CRDs" in error and "--api-versions" in error


def test_runtime_passes_the_upstream_v2_3_schema() -> None:
    require_upstream_crds("trainer/trainer.kubeflow.org_clustertrainingruntimes.yaml")
    assert renderlib.schema_errors(runtime()) == []


def test_runtime_is_what_kubetunes_trainjobs_reference_and_patch() -> None:
    rt = runtime()
    assert rt["metadata"]["name"] == RUNTIME_NAME
    assert "torch" in rt["spec"]["mlPolicy"]
    (rjob,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == NODE
    assert rjob["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    job = rjob["template"]["spec"]
    # The trainer's exit-code contract (as PyTorchJob's restartPolicy ExitCode): 1-127 fail the Job at once.
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["operator"] == "NotIn"
    assert rule["onExitCodes"]["values"] == list(range(128, 256)) and rule["onExitCodes"]["containerName"] == NODE
    assert job["backoffLimit"] >= 100, "the FineTuneJob's backoffLimit (at most 100) decides, not the Job's"
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == NODE
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
    assert pod["automountServiceAccountToken"] is False

    doc = renderlib.JobBuilder().build()
    w = render(doc, RenderOptions(backend="trainjob")).workload
    assert w["spec"]["runtimeRef"]["name"] == rt["metadata"]["name"]
    for patch in w["spec"]["runtimePatches"]:
        for patched in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            assert patched["name"] == rjob["name"]
            names = {c["name"] for c in patched["template"]["spec"]["template"]["spec"]["containers"]}
            assert names <= {c["name"] for c in pod["containers"]}
