"""The exact set of API calls the operator makes, as RBAC sees them.

``expected_api_calls.json`` is the contract with the Helm chart: its RBAC test
reads the file to prove the ClusterRole grants exactly these (group, resource,
subresource, verb) tuples.  This test drives one operator, deployed as the
chart deploys it (all namespaces, peering on), through every path (create,
progress, suspend, a rejected immutable change, success, failure, an invalid
job, an MPIJob, a TrainJob, a pushed progress report) and fails when the recorded set differs from the file.
Regenerate after an intended change with::

    KUBETUNE_UPDATE_API_CALLS=1 .venv/bin/python -m pytest tests/controller/test_api_calls.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

from tests.support.harness import FTJ, MPI, PTJ, example_job, eventually, uninstall_finetunejob_crd
from tests.support.apiserver.emulator import Cluster
from tests.support.apiserver.auth import TokenAuthority
from tests.support.kt_upstream import missing_message, upstream_crds_dir
from tests.support.kubeflow import pod_exits, progress_line, set_condition, stage_line, start_pod
from tests.support.pushlib import free_port, post
from tests.support.sweeplib import drive_a_sweep, install_sweep_crd
from tests.support.trainer_v2 import TJ, chart_runtime, install_trainer, trainer_reconciles, trainjob_finishes

from kubetune.api import contract
from kubetune.controller.runtime import OperatorConfig
from kubetune.render import RenderOptions

EXPECTED = Path(__file__).with_name("expected_api_calls.json")
NS = "team-a"


def phase(cluster: Cluster, name: str) -> str | None:
    return ((cluster.read(*FTJ, NS, name) or {}).get("status") or {}).get("phase")


SERVE_ENGINES = {
    "isvc": ({"engine": "kserve"}, True, ("serving.kserve.io/v1beta1", "inferenceservices")),
    "llmisvc": ({"engine": "kserve"}, False, ("serving.kserve.io/v1alpha1", "llminferenceservices")),
    "kaito": ({"engine": "kaito"}, False, ("kaito.sh/v1beta1", "workspaces")),
}


async def drive_every_path(cluster: Cluster, intake_url: str | None = None) -> None:
    await cluster.put_object(*FTJ, example_job("lora", serve={}))
    await eventually(lambda: phase(cluster, "lora") == "Pending", what="lora Pending")
    await set_condition(cluster, "PyTorchJob", NS, "lora", "Running")
    pod = await start_pod(cluster, "PyTorchJob", NS, "lora")
    cluster.append_log(NS, pod, progress_line(5, 10, 1.0), stage_line("export", "start"))
    await eventually(lambda: phase(cluster, "lora") == "Exporting", what="lora Exporting")
    if intake_url:  # then rank 0 pushes a report (TokenReview + the pod check)
        token = TokenAuthority(cluster).issue(NS, pod)
        lines = [progress_line(6, 10, 0.9), stage_line("export", "start")]
        assert await post(intake_url, token, {"namespace": NS, "name": "lora", "lines": lines}) == 204
        await eventually(
            lambda: (cluster.read(*FTJ, NS, "lora") or {})["status"]["progress"]["step"] == 6, what="pushed step 6"
        )
    await cluster.mutate(*FTJ, NS, "lora", lambda o: o["spec"].update(suspend=True))
    await cluster.mutate(*FTJ, NS, "lora", lambda o: o["spec"]["training"].update(epochs=9))
    await eventually(
        lambda: (cluster.read(*FTJ, NS, "lora") or {})["status"].get("observedGeneration") == 3, what="updates handled"
    )
    await set_condition(cluster, "PyTorchJob", NS, "lora", "Succeeded")
    await eventually(lambda: phase(cluster, "lora") == "Succeeded", what="lora Succeeded")
    await eventually(
        lambda: (
            cluster.read("apps/v1", "deployments", NS, "lora-serve")
            and cluster.read("v1", "services", NS, "lora-serve")
        ),
        what="lora served",
    )

    # spec.serve's other engines (their kinds are declared by the caller: KServe and KAITO installed).
    for name, (serve, export, resource) in SERVE_ENGINES.items():
        # KAITO reads the token at key HF_TOKEN; KServe's storage initializer gets it through the
        # template (no ServiceAccount).
        token = {"kaito": {"hfTokenSecretRef": {"name": "hf-token", "key": "HF_TOKEN"}}}.get(name, {})
        await cluster.put_object(*FTJ, example_job(name, serve=serve, export={"enabled": export}, **token))
        await eventually(lambda n=name: cluster.read(*PTJ, NS, n), what=f"{name} PyTorchJob")
        await set_condition(cluster, "PyTorchJob", NS, name, "Succeeded")
        if name == "kaito":  # the adapter is copied to its own claim first (a Job the Job controller completes)
            await eventually(
                lambda: cluster.read("batch/v1", "jobs", NS, "kaito-adapter-copy"), what="the adapter copy Job"
            )
            await cluster.mutate(
                "batch/v1",
                "jobs",
                NS,
                "kaito-adapter-copy",
                lambda o: o.update(status={"conditions": [{"type": "Complete", "status": "True"}]}),
            )
        await eventually(lambda n=name, r=resource: cluster.read(*r, NS, n), what=f"{name} served")

    spec = example_job("mpi")["spec"]
    await cluster.put_object(*FTJ, example_job("mpi", distributed={**spec["distributed"], "backend": "mpijob"}))
    await eventually(lambda: cluster.read(*MPI, NS, "mpi") and phase(cluster, "mpi") == "Pending", what="mpi Pending")
    await set_condition(cluster, "MPIJob", NS, "mpi", "Failed")
    await eventually(lambda: phase(cluster, "mpi") == "Failed", what="mpi Failed")

    await drive_a_sweep(cluster)  # a FineTuneSweep: its status, trials applied, one pruned (deleted), the best promoted

    uninstall_finetunejob_crd(cluster)  # a job today's CRD refuses, stored under an older one
    await cluster.put_object(*FTJ, example_job("invalid", method="qlora"))
    await eventually(lambda: phase(cluster, "invalid") == "Failed", what="invalid Failed")
    assert cluster.read(*PTJ, NS, "invalid") is None

    # A queued job (the LocalQueue is a prerequisite), suspended and resumed twice: the second
    # identical Event is counted on the first one (a PATCH of the Event).
    await cluster.put_object(*FTJ, example_job("queued", scheduling={"queueName": "gpu-queue"}))
    await eventually(lambda: phase(cluster, "queued") == "Pending", what="queued Pending")
    for suspend in (True, False, True):
        await cluster.mutate(*FTJ, NS, "queued", lambda o, s=suspend: o["spec"].update(suspend=s))
        await eventually(
            lambda: (
                (cluster.read(*FTJ, NS, "queued") or {})["status"].get("observedGeneration")
                == (cluster.read(*FTJ, NS, "queued") or {})["metadata"]["generation"]
            ),
            what="observed",
        )
    await eventually(
        lambda: any(e.get("count") == 2 for e in cluster.objects("v1", "events", NS)), what="a counted Event"
    )

    # A TrainJob (Trainer v2): created by server-side apply, followed to Succeeded. kubetune's runtime
    # appears now (the operator checks for it first, as Trainer's webhook refuses a TrainJob without it).
    cluster.store[(("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes"), None, "kubetune-llamafactory")] = {
        **chart_runtime(),
        "metadata": {"name": "kubetune-llamafactory", "uid": "rt-uid", "resourceVersion": "1", "generation": 1},
    }
    tj_spec = example_job("tj")["spec"]
    await cluster.put_object(*FTJ, example_job("tj", distributed={**tj_spec["distributed"], "backend": "trainjob"}))
    await eventually(lambda: cluster.read(*TJ, NS, "tj") and phase(cluster, "tj") == "Pending", what="tj Pending")
    await trainer_reconciles(cluster, NS, "tj")
    await eventually(lambda: phase(cluster, "tj") == "Running", what="tj Running")
    await trainjob_finishes(cluster, NS, "tj")
    await eventually(lambda: phase(cluster, "tj") == "Succeeded", what="tj Succeeded")

    # Retryable exits past the backoff limit: the child is suspended by a server-side apply.
    await cluster.put_object(
        *FTJ,
        example_job(
            "retries", runPolicy={"backoffLimit": 0}, distributed={**tj_spec["distributed"], "backend": "pytorchjob"}
        ),
    )
    await eventually(lambda: cluster.read(*PTJ, NS, "retries"), what="retries PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "retries", "Running")
    await start_pod(cluster, "PyTorchJob", NS, "retries")
    await pod_exits(cluster, "PyTorchJob", NS, "retries", 130)
    await eventually(lambda: phase(cluster, "retries") == "Failed", what="retries Failed")

    # The same with a Kueue queue: the child is deleted instead (Kueue resumes an admitted job it finds
    # suspended, jobframework/reconciler.go:621-635 @ v0.19.2), which is the operator's one delete.
    queued = example_job(
        "queued-retries",
        runPolicy={"backoffLimit": 0},
        scheduling={"queueName": "gpu-queue"},
        distributed={**tj_spec["distributed"], "backend": "pytorchjob"},
    )
    await cluster.put_object(*FTJ, queued)
    await eventually(lambda: cluster.read(*PTJ, NS, "queued-retries"), what="queued-retries PyTorchJob")
    await set_condition(cluster, "PyTorchJob", NS, "queued-retries", "Running")
    await start_pod(cluster, "PyTorchJob", NS, "queued-retries")
    await pod_exits(cluster, "PyTorchJob", NS, "queued-retries", 130)
    await eventually(lambda: phase(cluster, "queued-retries") == "Failed", what="queued-retries Failed")
    await eventually(lambda: cluster.read(*PTJ, NS, "queued-retries") is None, what="queued-retries' child deleted")


async def test_recorded_api_calls_match_the_committed_set(
    cluster: Cluster, operator: Any, config: OperatorConfig
) -> None:
    cluster.declare("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False, has_status=False)
    for _, _, (api_version, plural) in SERVE_ENGINES.values():
        cluster.declare(
            api_version,
            plural,
            {
                "inferenceservices": "InferenceService",
                "llminferenceservices": "LLMInferenceService",
                "workspaces": "Workspace",
            }[plural],
        )
    await cluster.put_object(
        "kopf.dev/v1",
        "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "kubetune"}},
    )
    # Trainer v2 without kubetune's runtime: backend auto (the default) asks for the runtime and
    # keeps the v1 scenarios on PyTorchJob; the "tj" job asks for a TrainJob by name.
    # Without the upstream CRDs (a clone standing alone) Trainer is played without its TrainJob schema
    # check, loudly: the calls are the same, since the operator's TrainJob passes that schema (checked
    # where the CRDs are: here in CI, and in tests/render/test_trainjob_render.py); one it refused
    # would change the calls, and this test would fail in CI. So the committed file is the same with
    # or without ../shared, and `.ci/regen --check` works in a clone.
    crds = upstream_crds_dir()
    if crds is None:
        warnings.warn(f"TrainJob schema check not played while recording: {missing_message()}", stacklevel=1)
    install_trainer(cluster, runtime=False, schema=crds is not None)
    install_sweep_crd(cluster)
    port = free_port()
    url = f"http://127.0.0.1:{port}{contract.PROGRESS_PATH}"
    options = RenderOptions(progress_url=url)
    await operator(
        dataclasses.replace(
            config, peering="kubetune", progress_port=port, progress_host="127.0.0.1", render_options=options
        )
    )
    await drive_every_path(cluster, url)

    recorded = sorted((c.as_json() for c in cluster.api_calls()), key=lambda c: json.dumps(c, sort_keys=True))
    if os.environ.get("KUBETUNE_UPDATE_API_CALLS"):  # update mode (.ci/regen): write the file, compare nothing
        EXPECTED.write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")
        return
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    assert recorded == expected, "the operator's API calls changed: update RBAC (charts/) and regenerate the file"


def test_committed_set_is_sorted_and_uses_rbac_verbs() -> None:
    calls = json.loads(EXPECTED.read_text(encoding="utf-8"))
    assert calls == sorted(calls, key=lambda c: json.dumps(c, sort_keys=True))
    assert {c["verb"] for c in calls} <= {"get", "list", "watch", "create", "update", "patch", "delete"}
    # children go by ownerReference; the deletes are a queued workload past its retry bound (Kueue
    # would resume it if suspended: kueue jobframework/reconciler.go:621-635 @ v0.19.2) and a sweep's
    # pruned trial (a FineTuneJob the sweep owns)
    deletes = {(c["group"], c["resource"]) for c in calls if c["verb"] == "delete"}
    assert deletes == {("kubeflow.org", "pytorchjobs"), ("kubetune.io", "finetunejobs")}, deletes
    assert not any(c["resource"] == "finetunejobs" and c["verb"] in ("update", "create") for c in calls)
