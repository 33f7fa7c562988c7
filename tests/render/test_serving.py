"""``spec.serve`` rendering: vLLM Deployment + Service, KServe InferenceService / LLMInferenceService and a
KAITO Workspace, checked against kubernetes-validate (core objects) and the upstream CRDs in
../shared/upstream-crds (KServe v0.20, KAITO v0.12), and for what a user of the served model depends on."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import pytest
from kt_upstream import require_upstream_crds
from renderlib import JobBuilder, _strict, crd_schema

from kubetune.api import contract
from kubetune.render.serving import VLLM_PORT, child_name, render_serving

UID = "0b4c5a52-6a3c-4a8e-9d8e-2f1f5b0c1d11"

SERVING_CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve/serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    ("serving.kserve.io/v1alpha1", "LLMInferenceService"): ("kserve/serving.kserve.io_llminferenceservices.yaml", "v1alpha1"),
    ("kaito.sh/v1beta1", "Workspace"): ("kaito/kaito.sh_workspaces.yaml", "v1beta1"),
}


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    relative, version = SERVING_CRDS[(api_version, kind)]
    return jsonschema.Draft7Validator(_strict(crd_schema(relative, version)))


def check_schema(obj: dict[str, Any]) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in SERVING_CRDS:
        require_upstream_crds()
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(*key).iter_errors(obj)]
        assert errors == [], f"{obj['kind']} does not match the upstream CRD"
    else:
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def job(serve: dict[str, Any] | None = None, **changes: Any) -> JobBuilder:
    b = JobBuilder().set("metadata.uid", UID).set("spec.serve", serve if serve is not None else {})
    for dotted, value in changes.items():
        b = b.set(dotted.replace("__", "."), value)
    return b


SCHEDULING = {
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}},
}

CASES = {
    "vllm-adapter-hub-base": job(),
    "vllm-merged": job(spec__export={"enabled": True}),
    "vllm-full-2-gpus": job({"gpus": 2, "replicas": 3, "maxModelLen": 4096, "cpu": "8", "memory": "64Gi"}, spec__method="full"),
    "vllm-adapter-path-base": job(spec__model={"path": "base/qwen", "template": "qwen"}, spec__storage={"outputs": {"claimName": "out", "subPath": "runs"}, "models": {"claimName": "models"}}),
    "kserve-merged": job({"engine": "kserve"}, spec__export={"enabled": True}),
    "kserve-adapter": job({"engine": "kserve", "servedModelName": "support-bot"}),
    "kaito-adapter": job({"engine": "kaito", "kaito": {"preset": "qwen2.5-7b-instruct", "instanceType": "Standard_NC24ads_A100_v4"}}),
    "vllm-scheduled": job(spec__scheduling=SCHEDULING),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_serving_object_passes_its_schema_and_is_owned_by_the_job(name: str) -> None:
    built = CASES[name].build()
    serving = render_serving(built)
    assert serving.objects
    for obj in serving.prepare + serving.objects:
        check_schema(obj)
        assert obj["metadata"]["namespace"] == built.namespace
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "name": built.name, "uid": UID, "controller": True, "blockOwnerDeletion": True}
        ]
        assert obj["metadata"]["labels"][contract.LABEL_JOB] == built.name


def _deployment(serving: Any) -> dict[str, Any]:
    return next(o for o in serving.objects if o["kind"] == "Deployment")


def test_vllm_serves_base_plus_adapter_from_read_only_volumes() -> None:
    built = CASES["vllm-adapter-path-base"].build()
    serving = render_serving(built)
    deployment = _deployment(serving)
    service = next(o for o in serving.objects if o["kind"] == "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    ns, name = built.namespace, built.name
    assert args[args.index("--model") + 1] == "/models/base/qwen"
    assert "--enable-lora" in args and args[args.index("--lora-modules") + 1] == f"{name}=/outputs/{ns}/{name}"
    assert int(args[args.index("--max-lora-rank") + 1]) >= (built.spec.lora.rank if built.spec.lora else 8)
    assert serving.served_model == name and serving.adapter_uri == f"pvc://out/runs/{ns}/{name}"
    # Read-only claims and mounts; the outputs subPath is honoured as in training.
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"outputs": {"claimName": "out", "readOnly": True}, "models": {"claimName": "models", "readOnly": True}}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["outputs"] == {"name": "outputs", "mountPath": "/outputs", "readOnly": True, "subPath": "runs"}
    assert mounts["models"]["readOnly"] is True
    # Readiness on /health through the named port the Service targets.
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert service["spec"]["ports"] == [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert serving.url == f"http://{name}-serve.{ns}.svc:{VLLM_PORT}/v1"
    assert container["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False


def test_vllm_merged_and_full_models_are_served_under_the_served_name() -> None:
    merged = render_serving(CASES["vllm-merged"].build())
    args = _deployment(merged)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1].endswith("/merged") and "--enable-lora" not in args
    assert args[args.index("--served-model-name") + 1] == merged.served_model
    full = render_serving(CASES["vllm-full-2-gpus"].build())
    d = _deployment(full)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert d["spec"]["replicas"] == 3
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2" and c["args"][c["args"].index("--max-model-len") + 1] == "4096"
    assert c["resources"] == {"requests": {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"}, "limits": {"nvidia.com/gpu": "2", "memory": "64Gi"}}


def test_hub_base_reads_the_trainers_model_cache_offline() -> None:
    built = job(spec__storage={"outputs": {"claimName": "out"}, "models": {"claimName": "cache"}}).build()
    c = _deployment(render_serving(built))["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["args"][c["args"].index("--model") + 1] == built.spec.model.name
    assert env["HF_HOME"] == "/models/huggingface" and env["HF_HUB_OFFLINE"] == "1"


def test_kserve_picks_the_resource_by_what_is_served() -> None:
    merged = render_serving(CASES["kserve-merged"].build())
    (isvc,) = merged.objects
    assert isvc["kind"] == "InferenceService" and merged.url is None
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"].startswith("pvc://") and model["storageUri"].endswith("/merged")
    adapter = render_serving(CASES["kserve-adapter"].build())
    (llm,) = adapter.objects
    assert llm["kind"] == "LLMInferenceService"
    assert llm["spec"]["model"]["lora"]["adapters"] == [{"name": "support-bot", "uri": adapter.adapter_uri}]
    assert llm["spec"]["model"]["uri"].startswith("hf://")


def test_kaito_hands_the_adapter_to_the_workspace() -> None:
    """KAITO v0.12 mounts an adapter volume's root at /mnt/adapter/<source.name> and serves each folder
    there as an adapter (SetAdapterPuller, load_lora_adapters): the adapter is copied to the root of
    its own claim first, and no `strength` is set (its vLLM runtime refuses it)."""
    built = CASES["kaito-adapter"].build()
    serving = render_serving(built)
    (ws,) = serving.objects
    pvc, copy = serving.prepare
    assert ws["inference"]["preset"] == {"name": "qwen2.5-7b-instruct"}
    (adapter,) = ws["inference"]["adapters"]
    assert adapter == {"source": {"name": built.name, "volumeSource": {"persistentVolumeClaim": {"claimName": pvc["metadata"]["name"], "readOnly": True}}}}
    assert ws["resource"]["instanceType"] == "Standard_NC24ads_A100_v4" and ws["resource"]["labelSelector"]["matchLabels"]
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = copy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["cp", "-v", "/source/adapter_config.json", "/source/adapter_model.safetensors", "/adapter/"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["outputs"] == {"name": "outputs", "mountPath": "/source", "readOnly": True, "subPath": f"{built.namespace}/{built.name}"}
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"]}
    assert claims == {"outputs": {"claimName": "outputs", "readOnly": True}, "adapter": {"claimName": pvc["metadata"]["name"]}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True


def test_kaito_copy_really_copies_the_adapter_files(tmp_path: Any) -> None:
    """The copy Job's command, run as is on a job folder laid out like the trainer's LoRA output."""
    import subprocess

    (container,) = render_serving(CASES["kaito-adapter"].build()).prepare[1]["spec"]["template"]["spec"]["containers"]
    source, target = tmp_path / "source", tmp_path / "adapter"
    (source / "checkpoint-10").mkdir(parents=True)
    target.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_log.jsonl", "checkpoint-10/optimizer.pt"):
        (source / name).write_text(name)
    command = [part.replace("/source/", f"{source}/").replace("/adapter/", f"{target}/") for part in container["command"]]
    subprocess.run(command, check=True, capture_output=True)
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_long_job_names_give_valid_service_names() -> None:
    name = "a" * 52 + "-x" * 5
    assert len(child_name(name)) <= 63 and child_name(name).endswith("-serve")
    assert child_name(name) != child_name(name[:-1]) and child_name("short") == "short-serve"


def test_render_serving_without_serve_is_an_error() -> None:
    with pytest.raises(ValueError, match="spec.serve"):
        render_serving(JobBuilder().build())


def test_the_serving_pods_are_placed_like_the_training_pods() -> None:
    """spec.scheduling reaches the vLLM pods as plain API objects (found by the hostile-input fuzz:
    an affinity used to be passed on as a model object that no YAML or JSON writer could print)."""
    import json

    from kubetune.render import render

    built = job(spec__scheduling=SCHEDULING).build()
    pod = _deployment(render_serving(built))["spec"]["template"]["spec"]
    training = render(built).workload["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    for field in ("nodeSelector", "tolerations", "affinity"):
        assert pod[field] == training[field] == SCHEDULING[field]
    json.dumps(pod)
