"""``spec.serve`` rendering: vLLM Deployment + Service, KServe InferenceService / LLMInferenceService and a
KAITO Workspace, checked against kubernetes-validate (core objects) and the upstream CRDs in
../shared/upstream-crds (KServe v0.20, KAITO v0.12), and for what a user of the served model depends on."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import pytest
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import JobBuilder, _strict, crd_schema

from kubetune.api import contract
from kubetune.render.serving import VLLM_PORT, child_name, render_serving

UID = "0b4c5a52-6a3c-4a8e-9d8e-2f1f5b0c1d11"

SERVING_CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve/serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    ("serving.kserve.io/v1alpha1", "LLMInferenceService"): (
        "kserve/serving.kserve.io_llminferenceservices.yaml",
        "v1alpha1",
    ),
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
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
            }
        }
    },
}

KSERVE_KEYS = {"name": "s3-credentials", "accessKeyIdKey": "awsAccessKeyID", "secretAccessKeyKey": "awsSecretAccessKey"}
"""A Secret KServe v0.20.0 reads S3 keys from (pkg/credentials/s3/s3_secret.go:17-18)."""

PODS = {"spec__imagePullSecrets": [{"name": "registry"}], "spec__serviceAccountName": "trainer"}

CASES = {
    "vllm-adapter-hub-base": job(),
    "vllm-merged": job(spec__export={"enabled": True}),
    "vllm-full-2-gpus": job(
        {"gpus": 2, "replicas": 3, "maxModelLen": 4096, "cpu": "8", "memory": "64Gi"}, spec__method="full"
    ),
    "vllm-adapter-path-base": job(
        spec__model={"path": "base/qwen", "template": "qwen"},
        spec__storage={"outputs": {"claimName": "out", "subPath": "runs"}, "models": {"claimName": "models"}},
    ),
    "kserve-merged": job({"engine": "kserve"}, spec__export={"enabled": True}),
    "kserve-adapter": job({"engine": "kserve", "servedModelName": "support-bot"}),
    "kaito-adapter": job({"engine": "kaito", "kaito": {"instanceType": "Standard_NC24ads_A100_v4"}}),
    "kaito-legacy-preset-gated": job(
        {"engine": "kaito", "kaito": {"preset": "phi-4"}, "maxModelLen": 8192},
        spec__model={"name": "microsoft/phi-4", "template": "phi4"},
        spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"},
        spec__lora={"rank": 64},
        spec__scheduling=SCHEDULING,
    ),
    "vllm-scheduled": job(spec__scheduling=SCHEDULING),
    "kserve-merged-scheduled": job(
        {"engine": "kserve"}, spec__export={"enabled": True}, spec__scheduling=SCHEDULING, **PODS
    ),
    "kserve-merged-bucket": job(
        {"engine": "kserve", "modelSource": "bucket"},
        spec__export={"enabled": True},
        spec__serviceAccountName="kserve-s3",
        spec__storage={
            "outputs": {"claimName": "out", "uri": "s3://ml-runs/finetune/"},
            "objectStore": {"endpoint": "https://minio.storage.svc:9000", "credentialsSecretRef": KSERVE_KEYS},
        },
    ),
    "vllm-adapter-bucket": job(
        {"modelSource": "bucket"},
        spec__storage={
            "outputs": {"claimName": "out", "uri": "gs://ml-runs/finetune/"},
            "objectStore": {"credentialsSecretRef": {"name": "hmac"}, "caBundle": {"name": "ca", "key": "ca.crt"}},
        },
    ),
    # issue 24: no outputs claim at all, the results only in the bucket
    "vllm-adapter-bucket-only": job(
        {"modelSource": "bucket"}, spec__storage={"outputs": {"uri": "s3://ml-runs/finetune/"}}
    ),
    "kserve-merged-bucket-only": job(
        {"engine": "kserve", "modelSource": "bucket", "kserve": {"kind": "InferenceService"}},
        spec__export={"enabled": True},
        spec__serviceAccountName="kserve-s3",
        spec__storage={"outputs": {"uri": "s3://ml-runs/finetune/"}},
    ),
    "kserve-adapter-scheduled": job(
        {"engine": "kserve", "gpus": 2, "maxModelLen": 4096, "cpu": "8", "memory": "96Gi"},
        spec__scheduling=SCHEDULING,
        **PODS,
    ),
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
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "name": built.name,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
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
    assert claims == {
        "outputs": {"claimName": "out", "readOnly": True},
        "models": {"claimName": "models", "readOnly": True},
    }
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
    assert (
        container["securityContext"]["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False
    )


def test_vllm_merged_and_full_models_are_served_under_the_served_name() -> None:
    merged = render_serving(CASES["vllm-merged"].build())
    args = _deployment(merged)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1].endswith("/merged") and "--enable-lora" not in args
    assert args[args.index("--served-model-name") + 1] == merged.served_model
    full = render_serving(CASES["vllm-full-2-gpus"].build())
    d = _deployment(full)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert d["spec"]["replicas"] == 3
    assert (
        c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2"
        and c["args"][c["args"].index("--max-model-len") + 1] == "4096"
    )
    assert c["resources"] == {
        "requests": {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"},
        "limits": {"nvidia.com/gpu": "2", "memory": "64Gi"},
    }


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
    pvc, config, copy = serving.prepare
    assert ws["inference"]["preset"] == {"name": built.spec.model.name}, "the preset defaults to the trained base"
    assert ws["inference"]["config"] == config["metadata"]["name"] and config["kind"] == "ConfigMap"
    (adapter,) = ws["inference"]["adapters"]
    assert adapter == {
        "source": {
            "name": built.name,
            "volumeSource": {"persistentVolumeClaim": {"claimName": pvc["metadata"]["name"], "readOnly": True}},
        }
    }
    assert (
        ws["resource"]["instanceType"] == "Standard_NC24ads_A100_v4" and ws["resource"]["labelSelector"]["matchLabels"]
    )
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = copy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "cp",
        "-v",
        "/source/adapter_config.json",
        "/source/adapter_model.safetensors",
        "/adapter/",
    ]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["outputs"] == {
        "name": "outputs",
        "mountPath": "/source",
        "readOnly": True,
        "subPath": f"{built.namespace}/{built.name}",
    }
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"]}
    assert claims == {
        "outputs": {"claimName": "outputs", "readOnly": True},
        "adapter": {"claimName": pvc["metadata"]["name"]},
    }
    assert (
        container["securityContext"]["readOnlyRootFilesystem"] is True
        and pod["securityContext"]["runAsNonRoot"] is True
    )


def test_kaito_copy_really_copies_the_adapter_files(tmp_path: Any) -> None:
    """The copy Job's command, run as is on a job folder laid out like the trainer's LoRA output."""
    import subprocess

    (container,) = render_serving(CASES["kaito-adapter"].build()).prepare[-1]["spec"]["template"]["spec"]["containers"]
    source, target = tmp_path / "source", tmp_path / "adapter"
    (source / "checkpoint-10").mkdir(parents=True)
    target.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_log.jsonl", "checkpoint-10/optimizer.pt"):
        (source / name).write_text(name)
    command = [
        part.replace("/source/", f"{source}/").replace("/adapter/", f"{target}/") for part in container["command"]
    ]
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


# --- issue 20 items 8-13 and issue 27 item 2: what KServe, KAITO and vLLM do with these objects -------------


def _problems(builder: JobBuilder) -> dict[str, str]:
    from kubetune.render import validate_object

    job_, problems = validate_object(builder.doc_copy())
    assert job_ is None, "refused"
    return {p.path: p.message for p in problems}


def _merge_maps(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch of nested maps (no lists): the overlay's keys win, the base's others stay."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            _merge_maps(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


HF_RUNTIME_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
"""kserve-huggingfaceserver's container resources (config/runtimes/kserve-huggingfaceserver.yaml:34-40 @v0.20.0)."""


@pytest.mark.parametrize("name", ["kserve-merged", "kserve-adapter", "kserve-adapter-scheduled"])
def test_kserve_resources_survive_the_runtime_merge(name: str) -> None:
    """KServe strategic-merges the runtime's container into ours (pkg/utils/container_merge.go:32-62 @v0.20.0):
    limits we leave out keep the runtime's 1 CPU / 2Gi, an OOM for an LLM and invalid under a larger request."""
    from kubetune.plan.quantity import parse_quantity

    (obj,) = render_serving(CASES[name].build()).objects
    container = (
        obj["spec"]["predictor"]["model"]
        if obj["kind"] == "InferenceService"
        else obj["spec"]["template"]["containers"][0]
    )
    merged = _merge_maps(HF_RUNTIME_RESOURCES, container["resources"])
    for resource in ("cpu", "memory"):
        assert resource in container["resources"]["limits"] and resource in container["resources"]["requests"]
        assert parse_quantity(str(merged["requests"][resource])) <= parse_quantity(str(merged["limits"][resource]))
    assert parse_quantity(merged["limits"]["memory"]) >= parse_quantity("32Gi")


@pytest.mark.parametrize("name", ["kserve-merged-scheduled", "kserve-adapter-scheduled"])
def test_kserve_pods_are_placed_like_the_training_pods(name: str) -> None:
    """issue 27.2: the InferenceService's predictor inlines a PodSpec (pkg/apis/serving/v1beta1/predictor.go:84
    @v0.20.0), the LLMInferenceService's spec.template is one (llm_inference_service_types.go:164)."""
    (obj,) = render_serving(CASES[name].build()).objects
    pod = obj["spec"]["predictor"] if obj["kind"] == "InferenceService" else obj["spec"]["template"]
    for field in ("nodeSelector", "tolerations", "affinity"):
        assert pod[field] == SCHEDULING[field]
    assert pod["imagePullSecrets"] == [{"name": "registry"}] and pod["serviceAccountName"] == "trainer"


def test_vllm_and_copy_pods_carry_pull_secrets_service_account_and_placement() -> None:
    built = job(spec__scheduling=SCHEDULING, **PODS).build()
    pod = _deployment(render_serving(built))["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}] and pod["serviceAccountName"] == "trainer"
    kaito = job(
        {"engine": "kaito"},
        spec__scheduling=SCHEDULING,
        spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"},
        **PODS,
    ).build()
    copy_pod = render_serving(kaito).prepare[-1]["spec"]["template"]["spec"]
    # The copy mounts the (often ReadWriteOnce) outputs claim: it must land where the training pods did.
    for field in ("nodeSelector", "tolerations", "affinity"):
        assert copy_pod[field] == SCHEDULING[field]


def test_llminferenceservice_carries_gpus_context_and_the_adapters_chat_template() -> None:
    (llm,) = render_serving(CASES["kserve-adapter-scheduled"].build()).objects
    assert llm["spec"]["parallelism"] == {"tensor": 2}
    (main,) = llm["spec"]["template"]["containers"]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e["value"] for e in main["env"]}
    extra = env["VLLM_ADDITIONAL_ARGS"].split()
    # KServe mounts a pvc:// adapter at /mnt/lora/<name> (workload_lora.go:41,95 @v0.20.0).
    built = CASES["kserve-adapter-scheduled"].build()
    assert extra[extra.index("--chat-template") + 1] == f"/mnt/lora/{built.name}/chat_template.jinja"
    assert "--tokenizer" not in extra
    assert extra[extra.index("--max-model-len") + 1] == "4096"


def test_vllm_serves_the_adapter_with_the_chat_template_it_was_trained_with(tmp_path: Any) -> None:
    """vLLM renders a LoRA chat request with the engine's tokenizer (serving_chat.py:188-193 @0.11.0), so the
    adapter's chat template is given with --chat-template, a file the trainer's tokenizer save really writes.
    Not --tokenizer <adapter dir>: the trainer image's transformers 5.6 writes a tokenizer_config.json
    (extra_special_tokens as a list) that the transformers 4.x of vLLM 0.11's image cannot load
    ('list' object has no attribute 'keys', measured with 4.57.1), so vLLM would not start."""
    from transformers import AutoTokenizer

    from kubetune.trainer.tiny import CHATML_TEMPLATE, build_tokenizer

    built = job().build()
    args = _deployment(render_serving(built))["spec"]["template"]["spec"]["containers"][0]["args"]
    adapter_dir = args[args.index("--lora-modules") + 1].split("=", 1)[1]
    assert "--tokenizer" not in args
    template_file = args[args.index("--chat-template") + 1]
    assert template_file.startswith(adapter_dir + "/")
    # What LLaMA-Factory's trainer leaves in the adapter folder: its tokenizer (with the template it
    # trained with), saved by transformers' Trainer._save (processing_class.save_pretrained).
    build_tokenizer(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    tokenizer.save_pretrained(str(tmp_path / "adapter"))
    saved = tmp_path / "adapter" / template_file[len(adapter_dir) + 1 :]
    assert saved.is_file() and saved.read_text() == CHATML_TEMPLATE


@pytest.mark.parametrize(("rank", "expected"), [(8, 8), (17, 32), (64, 64), (300, 320), (512, 512)])
def test_the_lora_rank_reaches_every_engine(rank: int, expected: int) -> None:
    """vLLM's default --max-lora-rank is 16 (vllm/config/lora.py:33) and a larger adapter is refused
    (lora/peft_helper.py:119-122); KAITO never raises it, so it goes into the inference.config ConfigMap."""
    vllm = render_serving(job(spec__lora={"rank": rank}).build())
    args = _deployment(vllm)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert int(args[args.index("--max-lora-rank") + 1]) == expected
    (llm,) = render_serving(job({"engine": "kserve"}, spec__lora={"rank": rank}).build()).objects
    assert llm["spec"]["model"]["lora"]["maxRank"] == expected
    kaito = render_serving(
        job(
            {"engine": "kaito"}, spec__lora={"rank": rank}, spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"}
        ).build()
    )
    config = next(o for o in kaito.prepare if o["kind"] == "ConfigMap")
    import yaml

    assert yaml.safe_load(config["data"]["inference_config.yaml"]) == {"vllm": {"max-lora-rank": str(expected)}}


@pytest.mark.parametrize("engine", ["vllm", "kserve", "kaito"])
def test_a_lora_rank_vllm_cannot_serve_is_refused(engine: str) -> None:
    problems = _problems(
        job({"engine": engine}, spec__lora={"rank": 1024}, spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"})
    )
    assert "512" in problems["spec.lora.rank"]
    job(
        {"engine": engine} if engine != "kaito" else {"engine": "vllm"},
        spec__lora={"rank": 1024},
        spec__export={"enabled": True},
    ).build()  # merged: no adapter


def test_kaito_presets_as_kaito_v0_12_accepts_them() -> None:
    """IsValidPreset (pkg/utils/plugin/plugin.go:111-129 @v0.12.0): a legacy short name or any org/name."""
    legacy = CASES["kaito-legacy-preset-gated"].build()
    (ws,) = render_serving(legacy).objects
    assert ws["inference"]["preset"] == {"name": "phi-4", "presetOptions": {"modelAccessSecret": "hf"}}
    by_id = job(
        {"engine": "kaito", "kaito": {"preset": "qwen/qwen1.5-1.8b"}},
        spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"},
    ).build()
    assert render_serving(by_id).objects[0]["inference"]["preset"]["name"] == "qwen/qwen1.5-1.8b"
    config = next(o for o in render_serving(legacy).prepare if o["kind"] == "ConfigMap")
    import yaml

    assert yaml.safe_load(config["data"]["inference_config.yaml"])["vllm"] == {
        "max-lora-rank": "64",
        "max-model-len": "8192",
    }


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        (
            {"spec__serve": {"engine": "kaito", "kaito": {"preset": "qwen2.5-7b-instruct"}}},
            "spec.serve.kaito.preset",
            "not a KAITO v0.12 preset",
        ),
        (
            {"spec__serve": {"engine": "kaito", "kaito": {"preset": "phi-4"}}},
            "spec.serve.kaito.preset",
            "not the base the adapter was trained on",
        ),
        (
            {"spec__serve": {"engine": "kaito", "kaito": {"preset": "Qwen/Qwen2.5-7B-Instruct"}}},
            "spec.serve.kaito.preset",
            "Qwen/Qwen1.5-1.8B",
        ),
        (
            {
                "spec__model": {"path": "base", "template": "qwen"},
                "spec__storage": {"outputs": {"claimName": "o"}, "models": {"claimName": "m"}},
            },
            "spec.serve.engine",
            "spec.model.name",
        ),
        ({"spec__model": {"fromJob": "base-sft", "template": "qwen"}}, "spec.serve.engine", "spec.model.name"),
        ({"spec__hfTokenSecretRef": {"name": "hf", "key": "token"}}, "spec.hfTokenSecretRef.key", "HF_TOKEN"),
        ({"spec__serve": {"engine": "kaito", "gpus": 2}}, "spec.serve.engine", "gpus"),
        ({"spec__serve": {"engine": "kaito", "replicas": 2}}, "spec.serve.engine", "replicas"),
        (
            {"spec__model": {"name": "Qwen/Qwen1.5-1.8B", "revision": "v1", "template": "qwen"}},
            "spec.model.revision",
            "kaito",
        ),
    ],
    ids=[
        "unknown-short-name",
        "other-model",
        "other-id",
        "model-path",
        "from-job",
        "token-key",
        "gpus",
        "replicas",
        "revision",
    ],
)
def test_kaito_refuses_what_it_would_not_serve_as_trained(changes: dict[str, Any], field: str, words: str) -> None:
    builder = job({"engine": "kaito"}, spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"})
    for dotted, value in changes.items():
        builder = builder.set(dotted.replace("__", "."), value)
    problems = _problems(builder)
    assert words in problems[field], problems


def test_kaito_adapter_volume_names_fit_a_dns_label() -> None:
    """KAITO names the pod volume adapter-volume-<source.name> (preset_inferences.go:931 @v0.12.0)."""
    built = job(
        {"engine": "kaito", "servedModelName": "a" * 60},
        metadata__name="b" * 51,
        spec__hfTokenSecretRef={"name": "hf", "key": "HF_TOKEN"},
    ).build()
    serving = render_serving(built)
    (adapter,) = serving.objects[0]["inference"]["adapters"]
    assert (
        len(f"adapter-volume-{adapter['source']['name']}") <= 63 and serving.served_model == adapter["source"]["name"]
    )
    for obj in serving.prepare + serving.objects:
        check_schema(obj)


def test_the_pinned_revision_is_served_offline() -> None:
    """With HF_HUB_OFFLINE the cache holds only the revision the trainer downloaded (vllm
    arg_utils.py:538 --revision)."""
    built = job(
        spec__model={"name": "Qwen/Qwen1.5-1.8B", "revision": "v1.0", "template": "qwen"},
        spec__storage={"outputs": {"claimName": "out"}, "models": {"claimName": "cache"}},
    ).build()
    c = _deployment(render_serving(built))["spec"]["template"]["spec"]["containers"][0]
    assert (
        c["args"][c["args"].index("--revision") + 1] == "v1.0" and {"name": "HF_HUB_OFFLINE", "value": "1"} in c["env"]
    )


def test_kserve_downloads_the_pinned_revision() -> None:
    """KServe's storage initializer reads hf://owner/model[:revision]
    (python/storage/kserve_storage/kserve_storage.py:629-658 @v0.20.0)."""
    built = job(
        {"engine": "kserve"}, spec__model={"name": "Qwen/Qwen1.5-1.8B", "revision": "v1.0", "template": "qwen"}
    ).build()
    (llm,) = render_serving(built).objects
    assert llm["spec"]["model"]["uri"] == "hf://Qwen/Qwen1.5-1.8B:v1.0"
    check_schema(llm)
    # A Hub id without an owner is refused there ("Expected 'hf://owner/model[:revision]'"): refused here first.
    assert (
        "owner"
        in _problems(job({"engine": "kserve"}, spec__model={"name": "gpt2", "template": "default"}))["spec.model.name"]
    )


def test_an_adapter_on_another_jobs_output_is_refused_not_a_crash() -> None:
    """fromJob + lora without export + spec.serve used to raise AssertionError (operator crash loop,
    `kubetune render` crash)."""
    builder = job(spec__model={"fromJob": "base-sft", "template": "qwen"})
    assert "spec.export.enabled" in _problems(builder)["spec.serve"]
    from kubetune.api import FineTuneJob

    unchecked = FineTuneJob.from_api(builder.doc_copy())
    with pytest.raises(ValueError, match="spec.export.enabled"):
        render_serving(unchecked)
    assert render_serving(
        job(spec__model={"fromJob": "base-sft", "template": "qwen"}, spec__export={"enabled": True}).build()
    ).model_uri.endswith("/merged")


def test_fp4_qlora_is_not_served_on_an_nf4_base() -> None:
    """vLLM's in-flight bitsandbytes quantization is NF4 only (bitsandbytes_loader.py:414,651,660 @0.11.0)."""
    qlora = {"spec__method": "qlora", "spec__quantization": {"bits": 4, "type": "fp4"}}
    assert "nf4" in _problems(job(**qlora))["spec.quantization.type"]
    nf4 = job(spec__method="qlora", spec__quantization={"bits": 4}).build()
    args = _deployment(render_serving(nf4))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--quantization") + 1] == "bitsandbytes"
    job(spec__export={"enabled": True}, **qlora).build()  # merged: served as trained


def test_kserve_hands_the_hub_token_to_its_storage_initializer() -> None:
    """An LLMInferenceService's template may set env on the init container named storage-initializer
    (pkg/apis/serving/v1alpha2/llm_inference_service_types.go:166-170 @v0.20.0); KServe strategic-merges it
    into the storage initializer it builds (pkg/controller/v1alpha2/llmisvc/workload_storage.go:398,432-445),
    which downloads hf:// with huggingface_hub.  So no ServiceAccount is needed, and any Secret key works."""
    built = job({"engine": "kserve"}, spec__hfTokenSecretRef={"name": "hf", "key": "token"}).build()
    (llm,) = render_serving(built).objects
    (init,) = llm["spec"]["template"]["initContainers"]
    assert init == {
        "name": "storage-initializer",
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    }
    check_schema(llm)
    # A merged model is read from the outputs volume: no download, no token.
    merged = job(
        {"engine": "kserve", "kserve": {"kind": "LLMInferenceService"}},
        spec__export={"enabled": True},
        spec__hfTokenSecretRef={"name": "hf", "key": "token"},
    ).build()
    assert "initContainers" not in render_serving(merged).objects[0]["spec"]["template"]


def test_remote_code_is_copied_into_the_writable_cache_not_the_read_only_hub_cache() -> None:
    """transformers copies a trust_remote_code model's .py files into HF_MODULES_CACHE, by default
    <HF_HOME>/modules (transformers/utils/hub.py, dynamic_module_utils.py init_hf_modules: os.makedirs,
    touch __init__.py), and HF_HOME is the trainer's cache on the models volume, mounted read-only."""
    built = job(
        spec__model={"name": "Qwen/Qwen1.5-1.8B", "template": "qwen", "trustRemoteCode": True},
        spec__storage={"outputs": {"claimName": "out"}, "models": {"claimName": "cache"}},
    ).build()
    pod = _deployment(render_serving(built))["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HF_HOME"].startswith("/models/") and "--trust-remote-code" in pod["containers"][0]["args"]
    writable = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if not m.get("readOnly")}
    assert any(env["HF_MODULES_CACHE"].startswith(w + "/") for w in writable)
    assert env["HF_MODULES_CACHE"] in pod["initContainers"][0]["command"]


BUCKET = {
    "outputs": {"claimName": "out", "uri": "s3://ml-runs/finetune/"},
    "objectStore": {"credentialsSecretRef": {"name": "s3-credentials"}},
}


def test_kserve_inferenceservice_downloads_the_merged_model_from_the_bucket() -> None:
    """issue 24.4: modelSource bucket points the InferenceService at the merged model the trainer uploaded to
    <outputs.uri><namespace>/<job>/merged/ (trainer/objectstore.py job_prefix), which KServe's storage initializer
    downloads with boto3 (python/storage/kserve_storage/kserve_storage.py:504-560 @v0.20.0) using the keys of the
    Secrets the predictor's ServiceAccount lists (pkg/credentials/service_account_credentials.go:214-266): the
    predictor runs as spec.serviceAccountName, and the outputs volume is not read."""
    built = CASES["kserve-merged-bucket"].build()
    serving = render_serving(built)
    (isvc,) = serving.objects
    check_schema(isvc)
    predictor = isvc["spec"]["predictor"]
    uri = f"s3://ml-runs/finetune/{built.namespace}/{built.name}/merged/"
    assert predictor["model"]["storageUri"] == uri and serving.model_uri == uri
    assert predictor["serviceAccountName"] == "kserve-s3"
    assert "out" not in str(isvc)  # no pvc:// of the outputs claim
    # The default stays the outputs volume.
    volume = job({"engine": "kserve"}, spec__export={"enabled": True}, spec__storage=BUCKET).build()
    assert (
        render_serving(volume).objects[0]["spec"]["predictor"]["model"]["storageUri"]
        == f"pvc://out/{built.namespace}/{built.name}/merged"
    )


@pytest.mark.parametrize(
    ("serve", "changes", "words"),
    [
        ({}, {}, "spec.serviceAccountName"),
        (
            {},
            {"spec__serviceAccountName": "sa", "spec__method": "full", "spec__export": {"enabled": False}},
            "checkpoint-N/",
        ),
        (
            {},
            {
                "spec__serviceAccountName": "sa",
                "spec__storage": {
                    "outputs": {"claimName": "out", "uri": "gs://ml-runs/finetune/"},
                    "objectStore": {"credentialsSecretRef": {"name": "hmac"}},
                },
            },
            "Application Default Credentials",
        ),
        ({}, {"spec__serviceAccountName": "sa", "spec__storage": {"outputs": {"claimName": "out"}}}, "outputs.uri"),
        # KServe v0.20.0 reads Azure Blob only as https://<account>.blob.core.windows.net/... with a service principal
        # or AZURE_STORAGE_ACCESS_KEY (kserve_storage.py:51-54,1122-1162; pkg/credentials/azure/azure_secret.go:24-45)
        (
            {},
            {
                "spec__serviceAccountName": "sa",
                "spec__storage": {
                    "outputs": {"claimName": "out", "uri": "az://ml-runs/finetune/"},
                    "objectStore": {"credentialsSecretRef": {"name": "az"}},
                },
            },
            "not the job's connection string",
        ),
        (
            {},
            {
                "spec__serviceAccountName": "sa",
                "spec__storage": {
                    **BUCKET,
                    "objectStore": {"credentialsSecretRef": {"name": "s"}, "caBundle": {"name": "ca", "key": "ca.crt"}},
                },
            },
            "caBundle",
        ),
        ({"kind": "LLMInferenceService"}, {"spec__serviceAccountName": "sa"}, "kind InferenceService"),
        # kubetune's default key names (AWS_ACCESS_KEY_ID...): KServe v0.20.0 skips a Secret without awsSecretAccessKey
        # (pkg/credentials/service_account_credentials.go:281-293) and the storage initializer
        # downloads without credentials
        (
            {},
            {"spec__serviceAccountName": "sa"},
            "accessKeyIdKey: awsAccessKeyID, secretAccessKeyKey: awsSecretAccessKey",
        ),
    ],
)
def test_kserve_bucket_source_refuses_what_kserve_could_not_download(
    serve: dict[str, Any], changes: dict[str, Any], words: str
) -> None:
    changes = {"spec__export": {"enabled": True}, "spec__storage": BUCKET, **changes}
    builder = job({"engine": "kserve", "modelSource": "bucket", **({"kserve": serve} if serve else {})}, **changes)
    problems = _problems(builder)
    assert words in problems["spec.serve.modelSource"], problems


def test_vllm_downloads_the_results_from_the_bucket_in_an_init_container() -> None:
    """issue 24.4: engine vllm with modelSource bucket mounts no outputs volume: the trainer image's
    fetch-results init container copies <outputs.uri><namespace>/<job>/ (the files its marker lists) into
    an emptyDir, with the objectStore settings the training pods get (keys by secretKeyRef, the CA mounted),
    and vLLM reads the adapter from there (tests/trainer/test_fetchresults.py runs that container's code)."""
    built = CASES["vllm-adapter-bucket"].build()
    serving = render_serving(built)
    pod = _deployment(serving)["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    fetch = next(c for c in pod["initContainers"] if c["name"] == "fetch-results")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in fetch["env"]}
    prefix = f"gs://ml-runs/finetune/{built.namespace}/{built.name}/"
    assert env["KUBETUNE_RESULTS_URI"] == prefix and env["KUBETUNE_S3_ENDPOINT"] == "https://storage.googleapis.com"
    assert env["KUBETUNE_S3_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "hmac", "key": "AWS_SECRET_ACCESS_KEY"}}
    from kubetune.render.types import RenderOptions

    assert fetch["image"] == RenderOptions().image  # the trainer image: it has boto3 and kubetune.trainer
    assert {"name": "kubetune-s3-ca", "mountPath": "/etc/kubetune/s3-ca", "readOnly": True} in fetch["volumeMounts"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--lora-modules") + 1] == f"{built.name}=/results/job"
    assert serving.adapter_uri == prefix


def test_bucket_serving_is_refused_where_nothing_reads_the_bucket() -> None:
    assert "outputs.uri" in _problems(job({"modelSource": "bucket"}))["spec.serve.modelSource"]
    kaito = job(
        {"engine": "kaito", "modelSource": "bucket", "kaito": {"instanceType": "Standard_NC24ads_A100_v4"}},
        spec__storage=BUCKET,
    )
    assert "engine kaito" in _problems(kaito)["spec.serve.modelSource"]


@pytest.mark.parametrize("name", ["vllm-adapter-bucket-only", "kserve-merged-bucket-only"])
def test_a_job_without_an_outputs_claim_is_served_from_its_bucket_with_no_claim_mounted(name: str) -> None:
    """issue 24: spec.storage.outputs has only uri; modelSource bucket serves the uploaded copy and
    nothing mounts (or names) an outputs claim."""
    built = CASES[name].build()
    serving = render_serving(built)
    text = json.dumps(serving.prepare + serving.objects)
    assert "persistentVolumeClaim" not in text and "pvc://" not in text
    assert f"s3://ml-runs/finetune/{built.namespace}/{built.name}/" in text


def test_vllm_reads_an_az_bucket_with_the_jobs_credentials_and_workload_identity_gets_its_webhook_label() -> None:
    """engine vllm, modelSource bucket, az://: the fetch-results init container gets the job's Azure settings; with
    Azure Workload Identity (no Secret) the pod carries azure.workload.identity/use: "true" (the webhook's
    objectSelector, charts/workload-identity-webhook/templates/azure-wi-webhook-mutating-webhook-configuration-
    mutatingwebhookconfiguration.yaml:27 @v1.6.0) and runs as spec.serviceAccountName, still
    without an API-server token."""
    outputs = {"claimName": "out", "uri": "az://ml-runs/finetune/"}
    wi = job(
        {"modelSource": "bucket"},
        spec__serviceAccountName="trainer-wi",
        spec__storage={"outputs": outputs, "objectStore": {"endpoint": "https://acct.blob.core.windows.net"}},
    ).build()
    template = _deployment(render_serving(wi))["spec"]["template"]
    fetch = next(c for c in template["spec"]["initContainers"] if c["name"] == "fetch-results")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in fetch["env"]}
    assert env["KUBETUNE_RESULTS_URI"] == f"az://ml-runs/finetune/{wi.namespace}/{wi.name}/"
    assert env[contract.ENV_S3_ENDPOINT] == "https://acct.blob.core.windows.net"
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert (
        template["spec"]["serviceAccountName"] == "trainer-wi"
        and template["spec"]["automountServiceAccountToken"] is False
    )
    keyed = job(
        {"modelSource": "bucket"},
        spec__storage={"outputs": outputs, "objectStore": {"credentialsSecretRef": {"name": "az"}}},
    ).build()
    template = _deployment(render_serving(keyed))["spec"]["template"]
    fetch = next(c for c in template["spec"]["initContainers"] if c["name"] == "fetch-results")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in fetch["env"]}
    assert env[contract.ENV_AZURE_CONNECTION_STRING] == {
        "secretKeyRef": {"name": "az", "key": "AZURE_STORAGE_CONNECTION_STRING"}
    }
    assert "azure.workload.identity/use" not in template["metadata"]["labels"]
