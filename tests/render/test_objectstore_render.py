"""spec.storage.objectStore and the s3:// URIs as rendered: the access key reaches the pods only as
secretKeyRef environment (never a value, never the command line), the CA bundle as a read-only
ConfigMap mount, the bucket model as a folder on the models volume that the trainer stages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune.api import FineTuneJob, contract
from kubetune.api.objectstore import GCS_ENDPOINT, model_cache_subdir
from kubetune.render import RenderOptions, render, validate_object
from kubetune.render.chain import Failed, ModelSource, resolve_from_job
from tests.support.renderlib import pod_templates, valid_job

STORE = {
    "endpoint": "https://minio.storage.svc:9000",
    "region": "eu-west-1",
    "credentialsSecretRef": {"name": "s3-credentials", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"},
    "caBundle": {"name": "minio-ca", "key": "ca.crt"},
}


def _job(name: str = "s3-job", **spec: Any) -> FineTuneJob:
    return valid_job(
        name,
        {
            "model": {"uri": "s3://models-bucket/qwen/", "template": "qwen"},
            "datasets": [{"name": "d", "uri": "s3://data-bucket/chat/"}],
            "storage": {"outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/ft/"}, "objectStore": STORE},
            **spec,
        },
    )


def test_credentials_reach_the_pods_only_by_secret_reference() -> None:
    rendered = render(_job())
    text = json.dumps(rendered.workload)
    for template in pod_templates(rendered.workload).values():
        [container] = template["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["KUBETUNE_S3_ACCESS_KEY_ID"] == {
            "name": "KUBETUNE_S3_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "id"}},
        }
        assert env["KUBETUNE_S3_SECRET_ACCESS_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "s3-credentials", "key": "secret"}
        }
        assert (
            env["KUBETUNE_S3_ENDPOINT"]["value"] == "https://minio.storage.svc:9000"
            and env["KUBETUNE_S3_REGION"]["value"] == "eu-west-1"
        )
        assert env["KUBETUNE_S3_CA_BUNDLE"]["value"] == f"{contract.S3_CA_BUNDLE_DIR}/ca.pem"
        # No URI, endpoint or key name on the command line: the trainer reads its ConfigMap.
        assert not any("s3" in arg.lower() for arg in container.get("command", []) + container.get("args", []))
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["kubetune-s3-ca"] == {
            "name": "kubetune-s3-ca",
            "mountPath": contract.S3_CA_BUNDLE_DIR,
            "readOnly": True,
        }
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["kubetune-s3-ca"]["configMap"] == {
            "name": "minio-ca",
            "items": [{"key": "ca.crt", "path": "ca.pem"}],
        }
        assert template["spec"]["automountServiceAccountToken"] is False
    assert '"AWS_ACCESS_KEY_ID"' not in text  # kubetune's own names: a user's AWS_* stay theirs


def test_workload_identity_renders_no_credentials_and_keeps_the_service_account() -> None:
    job = _job(
        serviceAccountName="trainer-irsa", storage={"outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/ft/"}}
    )
    for template in pod_templates(render(job).workload).values():
        names = {e["name"] for e in template["spec"]["containers"][0]["env"]}
        assert not names & {"KUBETUNE_S3_ACCESS_KEY_ID", "KUBETUNE_S3_SECRET_ACCESS_KEY", "KUBETUNE_S3_ENDPOINT"}
        assert template["spec"]["serviceAccountName"] == "trainer-irsa"


def test_bucket_model_and_dataset_become_local_files_the_trainer_stages() -> None:
    rendered = render(_job())
    layout = contract.Layout()
    assert (
        rendered.train_args["model_name_or_path"]
        == f"{layout.models_dir}/{model_cache_subdir('s3://models-bucket/qwen/')}"
    )
    info = json.loads(rendered.files[contract.DATASET_INFO_FILE])
    assert (
        info["d"]["file_name"] == "d.jsonl" and "cloud_file_name" not in info["d"]
    )  # staged by kubetune, not read by LLaMA-Factory
    spec = json.loads(rendered.files[contract.SPEC_FILE])
    assert spec["spec"]["datasets"][0]["uri"] == "s3://data-bucket/chat/"  # where the trainer reads it


def test_from_job_on_an_adapter_over_a_bucket_model_is_refused_until_exported() -> None:
    child = _job(
        name="dpo", model={"fromJob": "sft", "template": "qwen"}, storage={"outputs": {"claimName": "outputs"}}
    )
    source = _job(name="sft").to_api()
    source["status"] = {"phase": "Succeeded"}
    got = resolve_from_job(child, source)
    assert isinstance(got, Failed) and got.reason == "SourceModelInBucket" and "export.enabled" in got.message
    source["spec"]["export"] = {"enabled": True}
    assert isinstance(resolve_from_job(child, source), ModelSource)
    args = render(child, RenderOptions(model_source=resolve_from_job(child, source))).train_args  # type: ignore[arg-type]
    assert args["model_name_or_path"] == "/data/outputs/ml/sft/merged"


# --- outputs only in the bucket: no outputs claim (issue 24) --------------------------------------

BUCKET_ONLY = {"outputs": {"uri": "s3://runs-bucket/ft/"}, "objectStore": STORE}


def _lists_named(obj: Any, key: str) -> list[list[Any]]:
    """Every list under ``key`` at any depth of a rendered object, whatever the backend's nesting."""
    if isinstance(obj, dict):
        own = [obj[key]] if isinstance(obj.get(key), list) else []
        return own + [found for value in obj.values() for found in _lists_named(value, key)]
    if isinstance(obj, list):
        return [found for value in obj for found in _lists_named(value, key)]
    return []


def _volumes(obj: Any) -> list[dict[str, Any]]:
    """Every entry of every pod ``volumes`` list in a rendered object."""
    return [v for volumes in _lists_named(obj, "volumes") for v in volumes if isinstance(v, dict)]


def _env_lists(obj: Any) -> list[list[dict[str, Any]]]:
    return _lists_named(obj, "env")


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob", "trainjob"])
def test_a_job_without_an_outputs_claim_writes_to_a_sized_empty_dir_on_every_backend(backend: str) -> None:
    job = _job(storage={**BUCKET_ONLY, "outputs": {"uri": "s3://runs-bucket/ft/", "sizeLimit": "80Gi"}})
    rendered = render(job, RenderOptions(backend=backend))  # type: ignore[arg-type]
    volumes = _volumes(rendered.workload)
    outputs = [v for v in volumes if v["name"] == "outputs"]
    assert outputs and all(v == {"name": "outputs", "emptyDir": {"sizeLimit": "80Gi"}} for v in outputs)
    assert not [v for v in volumes if "persistentVolumeClaim" in v]  # no claim at all: models is an emptyDir too
    # The keys still reach the pods only by secretKeyRef, the trainer learns where to upload from its ConfigMap.
    for env in _env_lists(rendered.workload):
        for e in env:
            if e["name"] in ("KUBETUNE_S3_ACCESS_KEY_ID", "KUBETUNE_S3_SECRET_ACCESS_KEY"):
                assert set(e) == {"name", "valueFrom"} and set(e["valueFrom"]) == {"secretKeyRef"}
    outputs_spec = json.loads(rendered.files[contract.SPEC_FILE])["spec"]["storage"]["outputs"]
    assert outputs_spec["uri"] == "s3://runs-bucket/ft/" and "claimName" not in outputs_spec
    # RBAC unchanged: the backend's rules name only its workload kind, never Secrets or volumes.
    from kubetune.cluster.backends import get_backend

    assert not [r for r in get_backend(backend).rbac() if set(r.resources) & {"secrets", "persistentvolumeclaims"}]


def test_the_outputs_empty_dir_has_a_default_size_limit() -> None:
    [outputs] = [v for v in _volumes(render(_job(storage=BUCKET_ONLY)).workload) if v["name"] == "outputs"]
    assert outputs == {"name": "outputs", "emptyDir": {"sizeLimit": "200Gi"}}


@pytest.mark.parametrize(
    ("outputs", "field", "words"),
    [
        ({}, "spec.storage.outputs.claimName", "set one of them"),
        ({"uri": "s3://runs-bucket/ft/", "subPath": "team-a"}, "spec.storage.outputs.subPath", "set claimName"),
        ({"claimName": "outputs", "sizeLimit": "10Gi"}, "spec.storage.outputs.sizeLimit", "remove sizeLimit"),
    ],
)
def test_outputs_without_a_claim_are_refused_where_they_cannot_work(
    outputs: dict[str, Any], field: str, words: str
) -> None:
    obj = _job().to_api()
    obj["spec"]["storage"]["outputs"] = outputs
    job, problems = validate_object(obj)
    assert job is None and any(p.path == field and words in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("serve", "accepted"),
    [
        ({"engine": "vllm"}, False),  # would mount the outputs claim
        ({"engine": "kserve", "kserve": {"kind": "InferenceService"}}, False),  # pvc://
        ({"engine": "kaito", "modelSource": "bucket"}, False),
        ({"engine": "vllm", "modelSource": "bucket"}, True),
    ],
)
def test_serving_a_job_without_an_outputs_claim_needs_model_source_bucket(
    serve: dict[str, Any], accepted: bool
) -> None:
    obj = _job(storage=BUCKET_ONLY).to_api()
    obj["spec"]["model"] = {"name": "Qwen/Qwen2.5-0.5B-Instruct", "template": "qwen"}
    obj["spec"]["serve"] = serve
    job, problems = validate_object(obj)
    if accepted:
        assert job is not None, problems
        return
    assert job is None and any(p.path == "spec.serve.modelSource" for p in problems), problems
    assert any("outputs" in p.message for p in problems)


def test_a_multi_node_job_without_an_outputs_claim_is_refused_naming_the_shards_and_the_fix() -> None:
    obj = _job(storage=BUCKET_ONLY).to_api()
    obj["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 8}
    job, problems = validate_object(obj)
    assert job is None
    [problem] = [p for p in problems if p.path == "spec.storage.outputs.uri"]
    assert "checkpoint shards" in problem.message and "ReadWriteMany claim" in problem.message


def _succeeded(job: FineTuneJob) -> dict[str, Any]:
    obj = job.to_api()
    obj["status"] = {"phase": "Succeeded"}
    return obj


def test_from_job_of_a_source_with_outputs_only_in_a_bucket_downloads_its_results() -> None:
    layout = contract.Layout()
    source = _job(name="sft", storage=BUCKET_ONLY, export={"enabled": True})
    child = _job(name="dpo", model={"fromJob": "sft", "template": "qwen"}, storage=BUCKET_ONLY)
    got = resolve_from_job(child, _succeeded(source))
    results = "s3://runs-bucket/ft/ml/sft/"
    folder = f"{layout.models_dir}/{model_cache_subdir(results)}"
    assert got == ModelSource("sft", f"{folder}/merged", kind="merged", stage="sft", results_uri=results)
    rendered = render(child, RenderOptions(model_source=got))  # type: ignore[arg-type]
    assert rendered.train_args["model_name_or_path"] == f"{folder}/merged"
    for template in pod_templates(rendered.workload).values():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env[contract.ENV_SOURCE_RESULTS_URI] == {"name": contract.ENV_SOURCE_RESULTS_URI, "value": results}
        assert "sft" not in json.dumps(template["spec"]["volumes"])  # nothing of the source is mounted
    # An adapter (no export): the base as the source named it, the adapter from the bucket copy.
    adapter = resolve_from_job(
        child,
        _succeeded(_job(name="sft", model={"name": "Qwen/Qwen2.5-0.5B", "template": "qwen"}, storage=BUCKET_ONLY)),
    )
    assert adapter == ModelSource(
        "sft", "Qwen/Qwen2.5-0.5B", adapter=folder, kind="adapter", stage="sft", results_uri=results
    )


def test_from_job_on_the_same_claim_still_reads_the_volume_and_a_source_without_claim_never_does() -> None:
    with_claim = {"outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/ft/"}, "objectStore": STORE}
    source = _job(name="sft", storage=with_claim, export={"enabled": True})
    child = _job(name="dpo", model={"fromJob": "sft", "template": "qwen"}, storage=with_claim)
    assert resolve_from_job(child, _succeeded(source)) == ModelSource(
        "sft", "/data/outputs/ml/sft/merged", kind="merged", stage="sft"
    )
    # Two jobs without claims: their emptyDirs are each pod's own, so the bucket it is.
    got = resolve_from_job(
        _job(name="dpo", model={"fromJob": "sft", "template": "qwen"}, storage=BUCKET_ONLY),
        _succeeded(_job(name="sft", storage=BUCKET_ONLY, export={"enabled": True})),
    )
    assert isinstance(got, ModelSource) and got.results_uri == "s3://runs-bucket/ft/ml/sft/"


def test_from_job_from_a_bucket_needs_the_same_object_store() -> None:
    source = _job(name="sft", storage=BUCKET_ONLY, export={"enabled": True})
    other = {"outputs": {"claimName": "outputs"}, "objectStore": {**STORE, "endpoint": "https://other-minio:9000"}}
    child = _job(
        name="dpo", model={"fromJob": "sft", "template": "qwen"}, datasets=[{"name": "d", "hub": "x/y"}], storage=other
    )
    got = resolve_from_job(child, _succeeded(source))
    assert isinstance(got, Failed) and got.reason == "FromJobOtherStore" and "spec.storage.objectStore" in got.message
    # A job on a claim with no URI of its own may still carry objectStore to reach the source's bucket.
    reader = _job(
        name="dpo",
        model={"fromJob": "sft", "template": "qwen"},
        datasets=[{"name": "d", "hub": "x/y"}],
        storage={"outputs": {"claimName": "outputs"}, "objectStore": STORE},
    )
    assert isinstance(resolve_from_job(reader, _succeeded(source)), ModelSource)


def _az_job(store: dict[str, Any], **spec: Any) -> FineTuneJob:
    return _job(
        "az-job",
        model={"uri": "az://models/qwen/", "template": "qwen"},
        datasets=[{"name": "d", "uri": "az://training-data/chat/"}],
        storage={"outputs": {"claimName": "outputs", "uri": "az://runs/ft/"}, "objectStore": store},
        **spec,
    )


def test_az_credentials_reach_the_pods_only_by_secret_reference_and_workload_identity_by_the_webhook_label() -> None:
    """az://: the connection string (or the account key) by secretKeyRef only; without a Secret, the pods carry the
    label Azure Workload Identity's webhook selects (charts/workload-identity-webhook/templates/
    azure-wi-webhook-mutating-webhook-configuration-mutatingwebhookconfiguration.yaml:27 @v1.6.0) and still no
    API-server token."""
    cases = {
        "connection string": ({"credentialsSecretRef": {"name": "az-storage"}}, {}),
        "account key": (
            {
                "endpoint": "https://acct.blob.core.windows.net",
                "credentialsSecretRef": {"name": "az-key", "accountKeyKey": "key"},
            },
            {},
        ),
        "workload identity": ({"endpoint": "https://acct.blob.core.windows.net"}, {"serviceAccountName": "trainer-wi"}),
    }
    for what, (store, spec) in cases.items():
        rendered = render(_az_job(store, **spec))
        for template in pod_templates(rendered.workload).values():
            [container] = template["spec"]["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert not any(n.startswith("KUBETUNE_S3_ACCESS") or n.startswith("KUBETUNE_S3_SECRET") for n in env), what
            labels = template["metadata"]["labels"]
            assert template["spec"]["automountServiceAccountToken"] is False
            if what == "connection string":
                assert env[contract.ENV_AZURE_CONNECTION_STRING]["valueFrom"] == {
                    "secretKeyRef": {"name": "az-storage", "key": "AZURE_STORAGE_CONNECTION_STRING"}
                }
                assert contract.ENV_S3_ENDPOINT not in env and "azure.workload.identity/use" not in labels
            elif what == "account key":
                assert env[contract.ENV_AZURE_ACCOUNT_KEY]["valueFrom"] == {
                    "secretKeyRef": {"name": "az-key", "key": "key"}
                }
                assert (
                    env[contract.ENV_S3_ENDPOINT]["value"] == "https://acct.blob.core.windows.net"
                    and contract.ENV_AZURE_CONNECTION_STRING not in env
                )
                assert "azure.workload.identity/use" not in labels
            else:
                assert contract.ENV_AZURE_CONNECTION_STRING not in env and contract.ENV_AZURE_ACCOUNT_KEY not in env
                assert (
                    labels["azure.workload.identity/use"] == "true"
                    and template["spec"]["serviceAccountName"] == "trainer-wi"
                )


def test_from_job_of_a_gcs_source_gets_cloud_storage_endpoint_without_a_gs_uri_of_its_own() -> None:
    """A source whose results are in gs:// (read through Cloud Storage's XML API: its pods get the
    endpoint and region auto from its gs:// URIs) and a child with no URI of its own, on the same
    objectStore: the child's pods read the same bucket, so they get the same endpoint and region,
    instead of being refused for lacking an explicit endpoint or sent to AWS S3."""
    gcs_store = {"credentialsSecretRef": {"name": "gcs-hmac"}}
    hub = [{"name": "d", "hub": "x/y"}]
    source = _job(
        name="sft",
        model={"name": "Qwen/Qwen2.5-0.5B", "template": "qwen"},
        datasets=hub,
        storage={"outputs": {"uri": "gs://runs-bucket/ft/"}, "objectStore": gcs_store},
        export={"enabled": True},
    )
    child = _job(
        name="dpo",
        model={"fromJob": "sft", "template": "qwen"},
        datasets=hub,
        storage={"outputs": {"claimName": "outputs"}, "objectStore": gcs_store},
    )
    got = resolve_from_job(child, _succeeded(source))
    assert isinstance(got, ModelSource) and got.results_uri == "gs://runs-bucket/ft/ml/sft/", got
    rendered = render(child, RenderOptions(model_source=got))
    for template in pod_templates(rendered.workload).values():
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env[contract.ENV_S3_ENDPOINT] == GCS_ENDPOINT and env[contract.ENV_S3_REGION] == "auto"


def test_streaming_a_bucket_dataset_is_refused_at_admission_naming_the_dataset_and_the_fix() -> None:
    """LLaMA-Factory 0.9.5 cannot stream from a bucket (render/checks.py streaming_problems cites
    where): the trainer would download the whole dataset before training, which streaming was
    asked for to avoid.  Refused with the field, the dataset and the fix; streaming a volume
    dataset, and a bucket dataset without streaming, stay valid."""
    base = _job().to_api()
    streaming = {**base, "spec": {**base["spec"], "extraArgs": {"streaming": True}, "training": {"maxSteps": 100}}}
    streaming["spec"]["evaluation"] = {"datasets": [{"name": "held", "uri": "s3://data-bucket/eval.jsonl"}]}
    job, problems = validate_object(streaming)
    assert job is None
    [problem] = [p for p in problems if p.path == "spec.extraArgs.streaming"]
    assert "cannot stream a dataset from a bucket" in problem.message
    assert "spec.datasets[0].uri (d)" in problem.message and "spec.evaluation.datasets[0].uri (held)" in problem.message
    assert "remove streaming" in problem.message and "spec.datasets[].path" in problem.message

    on_volume = {**streaming, "spec": {**streaming["spec"], "datasets": [{"name": "d", "path": "chat.jsonl"}]}}
    del on_volume["spec"]["evaluation"]
    on_volume["spec"]["storage"] = {**on_volume["spec"]["storage"], "datasets": {"claimName": "datasets"}}
    job, problems = validate_object(on_volume)
    assert job is not None and problems == []
    job, problems = validate_object({**streaming, "spec": {**streaming["spec"], "extraArgs": {"streaming": False}}})
    assert job is not None and problems == []


def test_streaming_given_as_a_string_gets_the_type_problem_only() -> None:
    """``streaming: "no"`` is refused for its type (LLaMA-Factory wants true or false); the bucket
    dataset problem would tell the user they asked for streaming, which "no" or "0" did not."""
    base = _job().to_api()
    for value in ("no", "0", "FALSE"):
        doc = {**base, "spec": {**base["spec"], "extraArgs": {"streaming": value}, "training": {"maxSteps": 100}}}
        job, problems = validate_object(doc)
        assert job is None
        assert [p.message for p in problems if p.path == "spec.extraArgs.streaming"] == [
            f"LLaMA-Factory expects true or false here, got {value!r}"
        ]
