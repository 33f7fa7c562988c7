"""spec.storage.objectStore and the s3:// URIs as rendered: the access key reaches the pods only as
secretKeyRef environment (never a value, never the command line), the CA bundle as a read-only
ConfigMap mount, the bucket model as a folder on the models volume that the trainer stages."""

from __future__ import annotations

import json
from typing import Any

from kubetune.api import FineTuneJob, contract
from kubetune.api.objectstore import model_cache_subdir
from kubetune.render import RenderOptions, render, validate_object
from kubetune.render.chain import Failed, ModelSource, resolve_from_job
from renderlib import pod_templates

STORE = {
    "endpoint": "https://minio.storage.svc:9000",
    "region": "eu-west-1",
    "credentialsSecretRef": {"name": "s3-credentials", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"},
    "caBundle": {"name": "minio-ca", "key": "ca.crt"},
}


def _job(name: str = "s3-job", **spec: Any) -> FineTuneJob:
    obj: dict[str, Any] = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": {"uri": "s3://models-bucket/qwen/", "template": "qwen"},
            "datasets": [{"name": "d", "uri": "s3://data-bucket/chat/"}],
            "storage": {"outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/ft/"}, "objectStore": STORE},
            **spec,
        },
    }
    job, problems = validate_object(obj)
    assert job is not None, problems
    return job


def test_credentials_reach_the_pods_only_by_secret_reference() -> None:
    rendered = render(_job())
    text = json.dumps(rendered.workload)
    for template in pod_templates(rendered.workload).values():
        [container] = template["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["KUBETUNE_S3_ACCESS_KEY_ID"] == {"name": "KUBETUNE_S3_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "id"}}}
        assert env["KUBETUNE_S3_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-credentials", "key": "secret"}}
        assert env["KUBETUNE_S3_ENDPOINT"]["value"] == "https://minio.storage.svc:9000" and env["KUBETUNE_S3_REGION"]["value"] == "eu-west-1"
        assert env["KUBETUNE_S3_CA_BUNDLE"]["value"] == f"{contract.S3_CA_BUNDLE_DIR}/ca.pem"
        # No URI, endpoint or key name on the command line: the trainer reads its ConfigMap.
        assert not any("s3" in arg.lower() for arg in container.get("command", []) + container.get("args", []))
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["kubetune-s3-ca"] == {"name": "kubetune-s3-ca", "mountPath": contract.S3_CA_BUNDLE_DIR, "readOnly": True}
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["kubetune-s3-ca"]["configMap"] == {"name": "minio-ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}
        assert template["spec"]["automountServiceAccountToken"] is False
    assert '"AWS_ACCESS_KEY_ID"' not in text  # kubetune's own names: a user's AWS_* stay theirs


def test_workload_identity_renders_no_credentials_and_keeps_the_service_account() -> None:
    job = _job(serviceAccountName="trainer-irsa", storage={"outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/ft/"}})
    for template in pod_templates(render(job).workload).values():
        names = {e["name"] for e in template["spec"]["containers"][0]["env"]}
        assert not names & {"KUBETUNE_S3_ACCESS_KEY_ID", "KUBETUNE_S3_SECRET_ACCESS_KEY", "KUBETUNE_S3_ENDPOINT"}
        assert template["spec"]["serviceAccountName"] == "trainer-irsa"


def test_bucket_model_and_dataset_become_local_files_the_trainer_stages() -> None:
    rendered = render(_job())
    layout = contract.Layout()
    assert rendered.train_args["model_name_or_path"] == f"{layout.models_dir}/{model_cache_subdir('s3://models-bucket/qwen/')}"
    info = json.loads(rendered.files[contract.DATASET_INFO_FILE])
    assert info["d"]["file_name"] == "d.jsonl" and "cloud_file_name" not in info["d"]  # staged by kubetune, not read by LLaMA-Factory
    spec = json.loads(rendered.files[contract.SPEC_FILE])
    assert spec["spec"]["datasets"][0]["uri"] == "s3://data-bucket/chat/"  # where the trainer reads it


def test_from_job_on_an_adapter_over_a_bucket_model_is_refused_until_exported() -> None:
    child = _job(name="dpo", model={"fromJob": "sft", "template": "qwen"}, storage={"outputs": {"claimName": "outputs"}})
    source = _job(name="sft").to_api()
    source["status"] = {"phase": "Succeeded"}
    got = resolve_from_job(child, source)
    assert isinstance(got, Failed) and got.reason == "SourceModelInBucket" and "export.enabled" in got.message
    source["spec"]["export"] = {"enabled": True}
    assert isinstance(resolve_from_job(child, source), ModelSource)
    args = render(child, RenderOptions(model_source=resolve_from_job(child, source))).train_args  # type: ignore[arg-type]
    assert args["model_name_or_path"] == "/data/outputs/ml/sft/merged"


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
