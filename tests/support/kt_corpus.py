"""FineTuneJobs that must be accepted or rejected, shared by the agreement tests.

Each entry is built from :func:`base` by a patch of dotted paths
(``"spec.resources.gpusPerNode": -1``; ``DELETE`` removes a key; a number is a
list index).  An invalid entry names the field a user should be pointed at.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetune.api import FineTuneJob

DELETE = object()


def base() -> dict[str, Any]:
    """The smallest useful FineTuneJob: LoRA on a Hub model with a Hub dataset."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "qwen-lora", "namespace": "ml"},
        "spec": {
            "model": {"name": "Qwen/Qwen1.5-1.8B", "template": "qwen"},
            "datasets": [{"name": "deita", "hub": "hkust-nlp/deita-10k-v0"}],
            "storage": {"outputs": {"claimName": "outputs"}},
        },
    }


def pydantic_verdict(obj: dict[str, Any]) -> tuple[FineTuneJob | None, list[str]]:
    """The parsed job, or the rejection as "loc: message" lines (rule field paths included)."""
    try:
        return FineTuneJob.from_api(obj), []
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            lines.append(f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
            for rule in (err.get("ctx") or {}).get("rules", []):
                lines.append(f"{'.'.join(map(str, err['loc']))}{rule['fieldPath']}: {rule['message']}")
        return None, lines


def patched(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    for dotted, value in patch.items():
        keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split(".")]
        node: Any = obj
        for key in keys[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(key, {})
            else:
                node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        elif isinstance(node, list) and keys[-1] == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return obj


@dataclass(frozen=True)
class Case:
    id: str
    patch: dict[str, Any]
    field: str = ""
    """For an invalid case: camelCase path fragment the rejection must name."""

    @property
    def obj(self) -> dict[str, Any]:
        return patched(base(), self.patch)


_Q4 = {"bits": 4}
_DS = {"launcher": "deepspeed", "zeroStage": 2}

VALID = [
    Case("minimal-lora", {}),
    Case(
        "s3-model-data-outputs",
        {
            "spec.model": {"uri": "s3://models.example-corp/qwen2.5-0.5b/", "template": "qwen"},
            "spec.datasets": [
                {"name": "one", "uri": "s3://data-bucket/chat/train.jsonl"},
                {"name": "many", "uri": "s3://data-bucket/chat/shards/"},
            ],
            "spec.evaluation": {"datasets": [{"name": "heldout", "uri": "s3://data-bucket/chat/test.jsonl"}]},
            "spec.storage": {
                "outputs": {"claimName": "outputs", "uri": "s3://runs-bucket/finetune/"},
                "objectStore": {
                    "endpoint": "https://minio.storage.svc:9000",
                    "region": "eu-west-1",
                    "credentialsSecretRef": {"name": "s3-credentials"},
                    "caBundle": {"name": "minio-ca", "key": "ca.crt"},
                },
            },
        },
    ),
    Case(
        "s3-outputs-workload-identity",
        {"spec.storage.outputs.uri": "s3://runs-bucket/", "spec.serviceAccountName": "trainer-irsa"},
    ),
    Case(
        "gcs-model-data-outputs-hmac",
        {
            "spec.model": {"uri": "gs://ml_models-eu/qwen2.5-0.5b/", "template": "qwen"},
            "spec.datasets.0": {"name": "chats", "uri": "gs://ml_data/chat/"},
            "spec.storage": {
                "outputs": {"claimName": "outputs", "uri": "gs://ml-runs.example.com/finetune/"},
                "objectStore": {"credentialsSecretRef": {"name": "gcs-hmac"}},
            },
        },
    ),
    Case(
        "azure-model-data-outputs-connection-string",
        {
            "spec.model": {"uri": "az://models/qwen2.5-0.5b/", "template": "qwen"},
            "spec.datasets.0": {"name": "chats", "uri": "az://training-data-2026/chat/train.jsonl"},
            "spec.storage": {
                "outputs": {"claimName": "outputs", "uri": "az://runs/finetune/"},
                "objectStore": {"credentialsSecretRef": {"name": "az-storage"}},
            },
        },
    ),
    Case(
        "azure-account-key-with-endpoint",
        {
            "spec.datasets.0": {"name": "chats", "uri": "az://a1b/chat/"},
            "spec.storage": {
                "outputs": {"claimName": "outputs", "uri": "az://" + "r" * 63 + "/"},
                "objectStore": {
                    "endpoint": "https://acct.blob.core.windows.net",
                    "credentialsSecretRef": {"name": "az-key", "accountKeyKey": "key"},
                },
            },
        },
    ),
    Case(
        "azure-workload-identity",
        {
            "spec.storage": {
                "outputs": {"claimName": "outputs", "uri": "az://runs/"},
                "objectStore": {"endpoint": "https://acct.blob.core.windows.net"},
            },
            "spec.serviceAccountName": "trainer-wi",
        },
    ),
    Case(
        "url-datasets-https-pinned-private-ca",
        {
            "spec.datasets.0": {"name": "web", "url": "https://data.example.com/chat/train.jsonl", "sha256": "a" * 64},
            "spec.datasets.1": {"name": "mirror", "url": "http://mirror.internal/chat.jsonl", "sha256": "b" * 64},
            "spec.datasets.2": {"name": "laptop", "url": "http://127.0.0.1:8000/chat.jsonl"},
            "spec.storage.objectStore": {"caBundle": {"name": "corp-ca", "key": "ca.crt"}},
        },
    ),
    Case("qlora-4bit-zero2", {"spec.method": "qlora", "spec.quantization": _Q4, "spec.distributed": _DS}),
    Case(
        "qlora-8bit-zero2",
        {"spec.method": "qlora", "spec.quantization": {"bits": 8, "doubleQuant": False}, "spec.distributed": _DS},
    ),
    Case(
        "full-zero3-offload-all-16-gpus",
        {
            "spec.method": "full",
            "spec.resources": {"nodes": 2, "gpusPerNode": 8, "memory": "512Gi", "cpu": "64"},
            "spec.distributed": {"zeroStage": 3, "offload": "all"},
            "spec.training.learningRate": 1e-5,
        },
    ),
    Case("freeze", {"spec.method": "freeze", "spec.freeze": {"trainableLayers": -4, "trainableModules": ["mlp"]}}),
    Case("cpu-fp32", {"spec.resources.gpusPerNode": 0, "spec.training.precision": "fp32"}),
    Case(
        "tracking-all-three",
        {
            "spec.tracking": {
                "mlflow": {
                    "trackingUri": "http://mlflow.mlflow.svc:5000",
                    "usernameSecretRef": {"name": "mlflow", "key": "user"},
                    "passwordSecretRef": {"name": "mlflow", "key": "password"},
                },
                "wandb": {"project": "p", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}},
            }
        },
    ),
    Case(
        "rdma-multinode",
        {
            "spec.resources": {"nodes": 4, "gpusPerNode": 8, "extra": {"rdma/ib": 1}},
            "spec.scheduling": {"podAnnotations": {"k8s.v1.cni.cncf.io/networks": "ib-net"}},
            "spec.training": {
                "ligerKernel": True,
                "packing": "neat",
                "optimizer": "adamw_torch",
                "saveSteps": 200,
                "saveTotalLimit": 5,
            },
            "spec.runPolicy": {"terminationGracePeriodSeconds": 900},
        },
    ),
    Case("tracking-tensorboard-off", {"spec.tracking": {"tensorboard": {"enabled": False}}}),
    Case("wandb-env-without-wandb-tracking", {"spec.env": [{"name": "WANDB_MODE", "value": "offline"}]}),
    Case("mpijob-deepspeed", {"spec.distributed": {"backend": "mpijob", "launcher": "deepspeed", "zeroStage": 2}}),
    Case("accelerate-fsdp", {"spec.method": "full", "spec.distributed": {"launcher": "accelerate", "fsdp": True}}),
    Case(
        "local-model-and-data",
        {
            "spec.model": {"path": "models/qwen-1.8b", "template": "qwen"},
            "spec.datasets": [
                {"name": "mine", "path": "sets/2024/chat.jsonl", "tags": {"roleTag": "from", "contentTag": "value"}},
                {"name": "web", "url": "https://example.com/data/train.jsonl", "maxSamples": 1000},
            ],
            "spec.storage": {
                "datasets": {"claimName": "data", "readOnly": True},
                "models": {"claimName": "models", "subPath": "hf"},
                "outputs": {"claimName": "outputs"},
            },
        },
    ),
    Case(
        "pretraining-on-alpaca-text",
        {
            "spec.training.stage": "pt",
            "spec.datasets.0": {
                "name": "wiki",
                "hub": "wikitext",
                "subset": "wikitext-2-raw-v1",
                "format": "alpaca",
                "columns": {"prompt": "text"},
            },
        },
    ),
    Case(
        "env-secrets-image",
        {
            "spec.env": [
                {"name": "WANDB_PROJECT", "value": "ft"},
                {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}},
                {"name": "EXTRA", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "extra"}}},
            ],
            "spec.hfTokenSecretRef": {"name": "hf-token"},
            "spec.image": "registry.example.com/kubetune/trainer:0.1.0@sha256:abc123",
            "spec.imagePullPolicy": "IfNotPresent",
            "spec.imagePullSecrets": [{"name": "regcred"}],
            "spec.serviceAccountName": "trainer",
        },
    ),
    Case(
        "scheduling-suspended",
        {
            "spec.scheduling": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
                "priorityClassName": "batch-high",
                "queueName": "team-a",
            },
            "spec.suspend": True,
            "spec.runPolicy": {"backoffLimit": 0, "activeDeadlineSeconds": 86400, "ttlSecondsAfterFinished": 3600},
        },
    ),
    Case(
        "extra-args-mixed-scalars",
        {
            "spec.extraArgs": {
                "neftune_noise_alpha": 5,
                "use_dora": True,
                "loraplus_lr_ratio": 16.0,
                "optim": "adamw_torch",
            }
        },
    ),
    Case("integer-learning-rate", {"spec.training.learningRate": 1}),
    Case(
        "nulls-mean-unset", {"spec.method": None, "spec.lora": None, "spec.training": {"maxSteps": None, "epochs": 1}}
    ),
    Case("name-of-51-characters", {"metadata.name": "a" * 51}),
    Case(
        "hyperparameters-and-eval",
        {
            "spec.training": {
                "epochs": 0.5,
                "maxSteps": 1000,
                "perDeviceBatchSize": 4,
                "gradientAccumulationSteps": 2,
                "scheduler": "cosine_with_min_lr",
                "warmupRatio": 0.03,
                "cutoffLength": 4096,
                "valSize": 0.05,
                "evalSteps": 100,
                "attention": "fa2",
            },
            "spec.lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["q_proj", "v_proj"]},
            "spec.export": {"enabled": True, "shardSizeGB": 2},
        },
    ),
    Case(
        "with-status",
        {
            "status": {
                "phase": "Running",
                "gpus": 8,
                "progress": {"step": 12, "totalSteps": 100, "loss": 1.25, "summary": "12/100 (12%)"},
            }
        },
    ),
    Case("serve-vllm-defaults", {"spec.serve": {}}),
    Case(
        "serve-kserve-llm-adapter",
        {
            "spec.serve": {
                "engine": "kserve",
                "gpus": 2,
                "replicas": 2,
                "servedModelName": "support-bot",
                "maxModelLen": 4096,
            }
        },
    ),
    Case(
        "serve-kaito-adapter",
        {"spec.serve": {"engine": "kaito", "kaito": {"instanceType": "Standard_NC24ads_A100_v4"}}},
    ),
    Case(
        "serve-when-evaluation-improves",
        {"spec.evaluation": {"valSize": 0.1, "baseModel": True}, "spec.serve": {"when": "evaluationImproves"}},
    ),
    Case(
        "serve-merged-inferenceservice",
        {"spec.export.enabled": True, "spec.serve": {"engine": "kserve", "kserve": {"kind": "InferenceService"}}},
    ),
    Case(
        "serve-vllm-from-bucket",
        {"spec.storage.outputs.uri": "s3://runs-bucket/", "spec.serve": {"modelSource": "bucket"}},
    ),
    # Outputs only in the bucket (issue 24): no outputs claim, an emptyDir of the pod
    Case("outputs-bucket-only", {"spec.storage.outputs": {"uri": "s3://runs-bucket/finetune/"}}),
    Case(
        "outputs-bucket-only-sized",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/finetune/", "sizeLimit": "500Gi"}},
    ),
    Case(
        "outputs-bucket-only-served-from-bucket",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/"}, "spec.serve": {"modelSource": "bucket"}},
    ),
    Case(
        "model-from-job-object-store-only-for-the-source",
        {
            "spec.model": {"fromJob": "qwen-sft", "template": "qwen"},
            "spec.storage.objectStore": {"endpoint": "https://minio.storage.svc:9000"},
        },
    ),
    Case(
        "dpo-sharegpt-ranking",
        {
            "spec.training.stage": "dpo",
            "spec.training.preference": {"beta": 0.2, "loss": "sigmoid", "ftx": 0.1, "labelSmoothing": 0.1},
            "spec.datasets": [
                {
                    "name": "prefs",
                    "hub": "org/prefs",
                    "ranking": True,
                    "columns": {"chosen": "better", "rejected": "worse"},
                }
            ],
        },
    ),
    Case(
        "orpo-alpaca-ranking",
        {
            "spec.training.stage": "dpo",
            "spec.training.preference": {"loss": "orpo"},
            "spec.datasets": [{"name": "p", "hub": "o/p", "format": "alpaca", "ranking": True}],
        },
    ),
    Case(
        "simpo-with-gamma",
        {
            "spec.training.stage": "dpo",
            "spec.training.preference": {"loss": "simpo", "simpoGamma": 1.0},
            "spec.datasets": [{"name": "p", "hub": "o/p", "ranking": True}],
        },
    ),
    Case(
        "reward-model", {"spec.training.stage": "rm", "spec.datasets": [{"name": "p", "hub": "o/p", "ranking": True}]}
    ),
    Case(
        "kto-with-weights",
        {
            "spec.training.stage": "kto",
            "spec.training.kto": {"desirableWeight": 1.0, "undesirableWeight": 1.33},
            "spec.training.preference": {"beta": 0.1},
            "spec.datasets": [{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}],
        },
    ),
    Case(
        "ppo-with-reward-job",
        {
            "spec.training.stage": "ppo",
            "spec.training.ppo": {
                "rewardModel": {"fromJob": "qwen-rm"},
                "epochs": 2,
                "targetKl": 3.0,
                "maxNewTokens": 64,
            },
        },
    ),
    Case(
        "ppo-with-hub-reward-model",
        {"spec.training.stage": "ppo", "spec.training.ppo": {"rewardModel": {"name": "org/rm-7b"}}},
    ),
    Case(
        "model-from-job",
        {
            "spec.model": {"fromJob": "qwen-sft", "template": "qwen"},
            "spec.training.stage": "dpo",
            "spec.datasets": [{"name": "p", "hub": "o/p", "ranking": True}],
        },
    ),
    Case(
        "evaluation-held-out-with-generation",
        {"spec.evaluation": {"valSize": 0.1, "generation": True, "maxNewTokens": 256, "baseModel": True}},
    ),
    Case(
        "evaluation-named-datasets-capped",
        {"spec.evaluation": {"datasets": [{"name": "heldout", "hub": "o/test"}], "maxSamples": 50}},
    ),
    Case(
        "evaluation-named-datasets",
        {"spec.evaluation": {"datasets": [{"name": "heldout", "hub": "o/test", "split": "test"}]}},
    ),
    Case(
        "with-evaluation-status",
        {
            "status": {
                "phase": "Succeeded",
                "evaluation": {
                    "state": "Succeeded",
                    "summary": "ppl 3.1 (base 9.8)",
                    "trained": {"evalLoss": 1.13, "perplexity": 3.1},
                    "base": {"perplexity": 9.8},
                },
            }
        },
    ),
]

INVALID = [
    Case(
        "dataset-abfs-uri",
        {
            "spec.datasets.0": {"name": "d", "uri": "abfs://container/data.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "azure-container-uppercase",
        {
            "spec.datasets.0": {"name": "d", "uri": "az://Data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "azure-container-double-hyphen",
        {
            "spec.datasets.0": {"name": "d", "uri": "az://my--data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "azure-container-trailing-hyphen",
        {
            "spec.model": {"uri": "az://models-/m/", "template": "qwen"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.model.uri",
    ),
    Case(
        "azure-container-too-short",
        {"spec.storage.outputs.uri": "az://ab/", "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}}},
        "spec.storage.outputs.uri",
    ),
    Case(
        "azure-container-too-long",
        {
            "spec.storage.outputs.uri": "az://" + "r" * 64 + "/",
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.storage.outputs.uri",
    ),
    Case(
        "azure-container-underscore",
        {
            "spec.storage.outputs.uri": "az://my_runs/",
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.storage.outputs.uri",
    ),
    Case(
        "azure-key-dotdot",
        {
            "spec.datasets.0": {"name": "d", "uri": "az://data/a/../b.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "azure-without-account",
        {"spec.datasets.0": {"name": "d", "uri": "az://data/x.jsonl"}, "spec.serviceAccountName": "wi"},
        "spec.storage.objectStore",
    ),
    Case(
        "azure-account-key-without-endpoint",
        {
            "spec.datasets.0": {"name": "d", "uri": "az://data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k", "accountKeyKey": "key"}},
        },
        "spec.storage.objectStore",
    ),
    Case(
        "s3-and-azure-in-one-job",
        {
            "spec.datasets.0": {"name": "d", "uri": "az://data/x.jsonl"},
            "spec.storage.outputs.uri": "s3://runs-bucket/",
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "one object store",
    ),
    Case(
        "gcs-bucket-google",
        {
            "spec.datasets.0": {"name": "d", "uri": "gs://my-google-data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "gcs-bucket-goog-prefix",
        {
            "spec.datasets.0": {"name": "d", "uri": "gs://goog-data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "gcs-bucket-uppercase",
        {
            "spec.datasets.0": {"name": "d", "uri": "gs://My_Data/x.jsonl"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.datasets[].uri",
    ),
    Case(
        "gcs-model-bucket-ip",
        {
            "spec.model": {"uri": "gs://10.0.0.1/m/", "template": "qwen"},
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.model.uri",
    ),
    Case(
        "gcs-outputs-bucket-g00gle",
        {
            "spec.storage.outputs.uri": "gs://runs-g00gle/",
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "spec.storage.outputs.uri",
    ),
    Case(
        "gcs-without-hmac-key",
        {"spec.datasets.0": {"name": "d", "uri": "gs://ml-data/x.jsonl"}, "spec.serviceAccountName": "gke-wi"},
        "spec.storage.objectStore.credentialsSecretRef",
    ),
    Case(
        "s3-and-gcs-in-one-job",
        {
            "spec.datasets.0": {"name": "d", "uri": "gs://ml-data/x.jsonl"},
            "spec.storage.outputs.uri": "s3://runs-bucket/",
            "spec.storage.objectStore": {"credentialsSecretRef": {"name": "k"}},
        },
        "one object store",
    ),
    Case(
        "dataset-url-plain-http",
        {"spec.datasets.0": {"name": "d", "url": "http://data.example.com/chat.jsonl"}},
        "spec.datasets[].url",
    ),
    Case(
        "dataset-url-http-loopback-lookalike",
        {"spec.datasets.0": {"name": "d", "url": "http://127.0.0.1.example.com/chat.jsonl"}},
        "spec.datasets[].url",
    ),
    Case(
        "dataset-sha256-without-url",
        {"spec.datasets.0": {"name": "d", "hub": "wikitext", "sha256": "a" * 64}},
        "spec.datasets[].sha256",
    ),
    Case(
        "dataset-sha256-not-hex",
        {"spec.datasets.0": {"name": "d", "url": "https://x.example.com/a.jsonl", "sha256": "A" * 64}},
        "sha256",
    ),
    Case(
        "object-store-endpoint-for-url-datasets-only",
        {
            "spec.datasets.0": {"name": "d", "url": "https://x.example.com/a.jsonl"},
            "spec.storage.objectStore": {"endpoint": "https://minio:9000", "caBundle": {"name": "ca", "key": "ca.crt"}},
        },
        "spec.storage.objectStore",
    ),
    Case(
        "dataset-bucket-uppercase",
        {"spec.datasets.0": {"name": "d", "uri": "s3://My_Bucket/data.jsonl"}},
        "spec.datasets[].uri",
    ),
    Case(
        "dataset-bucket-ip",
        {"spec.datasets.0": {"name": "d", "uri": "s3://192.168.5.4/data.jsonl"}},
        "spec.datasets[].uri",
    ),
    Case(
        "dataset-bucket-reserved-suffix",
        {"spec.datasets.0": {"name": "d", "uri": "s3://mybucket-s3alias/data.jsonl"}},
        "spec.datasets[].uri",
    ),
    Case(
        "dataset-key-dotdot",
        {"spec.datasets.0": {"name": "d", "uri": "s3://data-bucket/a/../b.jsonl"}},
        "spec.datasets[].uri",
    ),
    Case(
        "dataset-uri-and-hub",
        {"spec.datasets.0": {"name": "d", "hub": "o/d", "uri": "s3://data-bucket/d.jsonl"}},
        "spec.datasets",
    ),
    Case("model-abfss-uri", {"spec.model": {"uri": "abfss://container/models/", "template": "qwen"}}, "spec.model.uri"),
    Case(
        "model-bucket-adjacent-dots",
        {"spec.model": {"uri": "s3://models..corp/m/", "template": "qwen"}},
        "spec.model.uri",
    ),
    Case(
        "model-key-empty-segment",
        {"spec.model": {"uri": "s3://models-bucket/a//m/", "template": "qwen"}},
        "spec.model.uri",
    ),
    Case(
        "model-uri-not-a-prefix",
        {"spec.model": {"uri": "s3://models-bucket/qwen/model.safetensors", "template": "qwen"}},
        "spec.model.uri",
    ),
    Case(
        "model-uri-and-name",
        {"spec.model": {"uri": "s3://models-bucket/qwen/", "name": "Qwen/Qwen1.5-1.8B", "template": "qwen"}},
        "spec.model",
    ),
    Case("outputs-wasbs-uri", {"spec.storage.outputs.uri": "wasbs://runs/"}, "spec.storage.outputs.uri"),
    Case("outputs-az-without-account", {"spec.storage.outputs.uri": "az://runs/"}, "spec.storage.objectStore"),
    Case("outputs-bucket-xn", {"spec.storage.outputs.uri": "s3://xn--runs/"}, "spec.storage.outputs.uri"),
    Case("outputs-key-dot", {"spec.storage.outputs.uri": "s3://runs-bucket/./x/"}, "spec.storage.outputs.uri"),
    Case(
        "outputs-uri-not-a-prefix",
        {"spec.storage.outputs.uri": "s3://runs-bucket/finetune"},
        "spec.storage.outputs.uri",
    ),
    Case(
        "outputs-uri-multi-node",
        {"spec.storage.outputs.uri": "s3://runs-bucket/", "spec.resources": {"nodes": 2, "gpusPerNode": 8}},
        "spec.storage.outputs.uri",
    ),
    Case(
        "object-store-without-uri",
        {"spec.storage.objectStore": {"endpoint": "http://minio:9000"}},
        "spec.storage.objectStore",
    ),
    Case(
        "object-store-endpoint-not-http",
        {"spec.storage.outputs.uri": "s3://runs-bucket/", "spec.storage.objectStore": {"endpoint": "minio:9000"}},
        "spec.storage.objectStore.endpoint",
    ),
    Case(
        "model-uri-read-only-models-volume",
        {
            "spec.model": {"uri": "s3://models-bucket/qwen/", "template": "qwen"},
            "spec.storage.models": {"claimName": "models", "readOnly": True},
        },
        "spec.storage.models.readOnly",
    ),
    Case(
        "serve-from-bucket-model",
        {"spec.model": {"uri": "s3://models-bucket/qwen/", "template": "qwen"}, "spec.serve": {}},
        "spec.serve",
    ),
    Case("stage-enum", {"spec.training.stage": "grpo"}, "spec.training.stage"),
    Case(
        "preference-loss-enum",
        {"spec.training.stage": "dpo", "spec.training.preference": {"loss": "cpo"}, "spec.datasets.0.ranking": True},
        "spec.training.preference.loss",
    ),
    Case("dpo-without-ranking", {"spec.training.stage": "dpo"}, "spec.datasets"),
    Case("rm-without-ranking", {"spec.training.stage": "rm"}, "spec.datasets"),
    Case("ranking-with-sft", {"spec.datasets.0.ranking": True}, "spec.datasets"),
    Case("chosen-without-ranking", {"spec.datasets.0.columns": {"chosen": "a"}}, "spec.datasets[].columns"),
    Case("preference-with-sft", {"spec.training.preference": {"beta": 0.1}}, "spec.training.preference"),
    Case(
        "zero-beta",
        {"spec.training.stage": "dpo", "spec.training.preference": {"beta": 0}, "spec.datasets.0.ranking": True},
        "spec.training.preference.beta",
    ),
    Case(
        "simpo-gamma-with-sigmoid",
        {
            "spec.training.stage": "dpo",
            "spec.training.preference": {"simpoGamma": 0.5},
            "spec.datasets.0.ranking": True,
        },
        "spec.training.preference.simpoGamma",
    ),
    Case(
        "label-smoothing-with-orpo",
        {
            "spec.training.stage": "dpo",
            "spec.training.preference": {"loss": "orpo", "labelSmoothing": 0.1},
            "spec.datasets.0.ranking": True,
        },
        "spec.training.preference.labelSmoothing",
    ),
    Case(
        "kto-with-dpo-loss",
        {
            "spec.training.stage": "kto",
            "spec.training.preference": {"loss": "orpo"},
            "spec.datasets.0.columns": {"ktoTag": "label"},
        },
        "spec.training.preference.loss",
    ),
    Case("kto-without-label", {"spec.training.stage": "kto"}, "spec.datasets"),
    Case("kto-label-with-sft", {"spec.datasets.0.columns": {"ktoTag": "label"}}, "spec.datasets"),
    Case(
        "kto-settings-with-dpo",
        {"spec.training.stage": "dpo", "spec.training.kto": {}, "spec.datasets.0.ranking": True},
        "spec.training.kto",
    ),
    Case("ppo-without-reward-model", {"spec.training.stage": "ppo"}, "spec.training.ppo"),
    Case("ppo-settings-with-sft", {"spec.training.ppo": {"rewardModel": {"name": "o/rm"}}}, "spec.training.ppo"),
    Case(
        "reward-model-two-sources",
        {"spec.training.stage": "ppo", "spec.training.ppo": {"rewardModel": {"name": "o/rm", "fromJob": "rm-job"}}},
        "spec.training.ppo.rewardModel",
    ),
    Case(
        "reward-model-path-escapes",
        {"spec.training.stage": "ppo", "spec.training.ppo": {"rewardModel": {"path": "../x"}}},
        "spec.training.ppo.rewardModel.path",
    ),
    Case(
        "reward-job-is-policy-job",
        {
            "spec.model": {"fromJob": "sft", "template": "qwen"},
            "spec.training.stage": "ppo",
            "spec.training.ppo": {"rewardModel": {"fromJob": "sft"}},
        },
        "spec.training.ppo.rewardModel.fromJob",
    ),
    Case("model-from-job-and-name", {"spec.model.fromJob": "qwen-sft"}, "spec.model"),
    Case(
        "model-from-job-not-a-name", {"spec.model": {"fromJob": "Qwen SFT", "template": "qwen"}}, "spec.model.fromJob"
    ),
    Case("evaluation-without-source", {"spec.evaluation": {"generation": True}}, "spec.evaluation"),
    Case(
        "evaluation-two-sources",
        {"spec.evaluation": {"valSize": 0.1, "datasets": [{"name": "t", "hub": "o/t"}]}},
        "spec.evaluation",
    ),
    Case(
        "evaluation-max-samples-with-val-size",
        {"spec.evaluation": {"valSize": 0.1, "maxSamples": 50}},
        "spec.evaluation.maxSamples",
    ),
    Case(
        "kto-evaluation-without-label",
        {
            "spec.training.stage": "kto",
            "spec.datasets": [{"name": "k", "hub": "o/k", "columns": {"ktoTag": "label"}}],
            "spec.evaluation": {"datasets": [{"name": "e", "hub": "o/e"}]},
        },
        "spec.evaluation.datasets",
    ),
    Case(
        "evaluation-with-ppo",
        {
            "spec.training.stage": "ppo",
            "spec.training.ppo": {"rewardModel": {"name": "o/rm"}},
            "spec.evaluation": {"valSize": 0.1},
        },
        "spec.evaluation",
    ),
    Case(
        "generation-with-dpo",
        {
            "spec.training.stage": "dpo",
            "spec.datasets.0.ranking": True,
            "spec.evaluation": {"valSize": 0.1, "generation": True},
        },
        "spec.evaluation.generation",
    ),
    Case(
        "evaluation-split-twice",
        {"spec.training.valSize": 0.1, "spec.evaluation": {"valSize": 0.1}},
        "spec.evaluation.valSize",
    ),
    Case(
        "evaluation-dataset-name-clash",
        {"spec.evaluation": {"datasets": [{"name": "deita", "hub": "o/t"}]}},
        "spec.evaluation.datasets",
    ),
    Case(
        "evaluation-dataset-not-ranking-for-dpo",
        {
            "spec.training.stage": "dpo",
            "spec.datasets.0.ranking": True,
            "spec.evaluation": {"datasets": [{"name": "t", "hub": "o/t"}]},
        },
        "spec.evaluation.datasets",
    ),
    Case("evaluation-val-size-one", {"spec.evaluation": {"valSize": 1.0}}, "spec.evaluation.valSize"),
    Case("method-enum", {"spec.method": "superlora"}, "spec.method"),
    Case("backend-enum", {"spec.distributed.backend": "slurm"}, "spec.distributed.backend"),
    Case("precision-enum", {"spec.training.precision": "fp8"}, "spec.training.precision"),
    Case("scheduler-enum", {"spec.training.scheduler": "exponential"}, "spec.training.scheduler"),
    Case("quantization-3-bits", {"spec.method": "qlora", "spec.quantization": {"bits": 3}}, "spec.quantization.bits"),
    Case(
        "quantization-bits-as-string",
        {"spec.method": "qlora", "spec.quantization": {"bits": "4"}},
        "spec.quantization.bits",
    ),
    Case("qlora-without-quantization", {"spec.method": "qlora"}, "spec.quantization"),
    Case("quantization-with-lora", {"spec.quantization": _Q4}, "spec.quantization"),
    Case(
        "8bit-with-zero3",
        {
            "spec.method": "qlora",
            "spec.quantization": {"bits": 8},
            "spec.distributed": {"launcher": "deepspeed", "zeroStage": 3},
        },
        "spec.quantization.bits",
    ),
    Case("negative-learning-rate", {"spec.training.learningRate": -1e-5}, "spec.training.learningRate"),
    Case("string-learning-rate", {"spec.training.learningRate": "1e-5"}, "spec.training.learningRate"),
    Case("zero-epochs", {"spec.training.epochs": 0}, "spec.training.epochs"),
    Case("zero-nodes", {"spec.resources.nodes": 0}, "spec.resources.nodes"),
    Case("negative-gpus-per-node", {"spec.resources.gpusPerNode": -1}, "spec.resources.gpusPerNode"),
    Case("fractional-gpus-per-node", {"spec.resources.gpusPerNode": 2.5}, "spec.resources.gpusPerNode"),
    Case("unknown-field", {"spec.trainng": {"epochs": 1}}, "spec.trainng"),
    Case("snake-case-field", {"spec.resources.gpus_per_node": 2}, "spec.resources.gpus_per_node"),
    Case("lora-block-with-full", {"spec.method": "full", "spec.lora": {"rank": 8}}, "spec.lora"),
    Case("freeze-block-with-lora", {"spec.freeze": {"trainableLayers": 2}}, "spec.freeze"),
    Case(
        "fp16-on-cpu", {"spec.resources.gpusPerNode": 0, "spec.training.precision": "fp16"}, "spec.training.precision"
    ),
    Case(
        "zero-on-cpu",
        {"spec.resources.gpusPerNode": 0, "spec.training.precision": "fp32", "spec.distributed.zeroStage": 2},
        "spec.distributed.zeroStage",
    ),
    Case(
        "mpijob-with-torchrun",
        {"spec.distributed": {"backend": "mpijob", "launcher": "torchrun"}},
        "spec.distributed.launcher",
    ),
    Case(
        "torchrun-with-zero",
        {"spec.distributed": {"launcher": "torchrun", "zeroStage": 2}},
        "spec.distributed.zeroStage",
    ),
    Case(
        "offload-all-with-stage-2", {"spec.distributed": {"zeroStage": 2, "offload": "all"}}, "spec.distributed.offload"
    ),
    Case(
        "offload-optimizer-with-stage-1",
        {"spec.distributed": {"zeroStage": 1, "offload": "optimizer"}},
        "spec.distributed.offload",
    ),
    Case(
        "fsdp-with-torchrun",
        {"spec.method": "full", "spec.distributed": {"launcher": "torchrun", "fsdp": True}},
        "spec.distributed.fsdp",
    ),
    Case(
        "duplicate-dataset-names",
        {"spec.datasets": [{"name": "d", "hub": "a/b"}, {"name": "d", "hub": "c/d"}]},
        "spec.datasets",
    ),
    Case("no-datasets", {"spec.datasets": []}, "spec.datasets"),
    Case("dataset-hub-and-path", {"spec.datasets.0.path": "local.jsonl"}, "spec.datasets"),
    Case("dataset-without-source", {"spec.datasets.0.hub": DELETE}, "spec.datasets"),
    Case(
        "dataset-path-escapes-volume",
        {"spec.datasets.0": {"name": "d", "path": "sets/../../etc/passwd"}},
        "spec.datasets[].path",
    ),
    Case(
        "dataset-path-command-substitution",
        {"spec.datasets.0": {"name": "d", "path": "$(curl evil)"}},
        "spec.datasets.0.path",
    ),
    Case(
        "dataset-url-command-substitution",
        {"spec.datasets.0": {"name": "d", "url": "https://x.io/$(id).json"}},
        "spec.datasets.0.url",
    ),
    Case("dataset-name-too-long", {"spec.datasets.0.name": "d" * 129}, "spec.datasets.0.name"),
    Case(
        "alpaca-with-tags",
        {"spec.datasets.0.format": "alpaca", "spec.datasets.0.tags": {"roleTag": "from"}},
        "spec.datasets[].tags",
    ),
    Case(
        "alpaca-with-sharegpt-columns",
        {"spec.datasets.0.format": "alpaca", "spec.datasets.0.columns": {"messages": "turns"}},
        "spec.datasets[].columns",
    ),
    Case("sharegpt-with-alpaca-columns", {"spec.datasets.0.columns": {"prompt": "q"}}, "spec.datasets[].columns"),
    Case(
        "dataset-revision-with-path",
        {"spec.datasets.0": {"name": "d", "path": "a.jsonl", "revision": "main"}},
        "spec.datasets[].revision",
    ),
    Case("pretraining-on-sharegpt", {"spec.training.stage": "pt"}, "spec.datasets"),
    Case("reserved-env-name", {"spec.env": [{"name": "MASTER_ADDR", "value": "evil"}]}, "spec.env[].name"),
    Case("reserved-env-prefix", {"spec.env": [{"name": "PET_NNODES", "value": "9"}]}, "spec.env[].name"),
    Case(
        "env-value-and-value-from",
        {"spec.env": [{"name": "TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
        "spec.env[]",
    ),
    Case(
        "env-value-from-two-sources",
        {
            "spec.env": [
                {
                    "name": "T",
                    "valueFrom": {"secretKeyRef": {"name": "s"}, "configMapKeyRef": {"name": "c", "key": "k"}},
                }
            ]
        },
        "spec.env[].valueFrom",
    ),
    Case("duplicate-env", {"spec.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec.env"),
    Case("yaml-injection-in-template", {"spec.model.template": "qwen\nmalicious: true"}, "spec.model.template"),
    Case("trailing-newline-in-template", {"spec.model.template": "qwen\n"}, "spec.model.template"),
    Case("shell-injection-in-image", {"spec.image": "x; rm -rf /"}, "spec.image"),
    Case("model-hub-id-traversal", {"spec.model.name": "../../etc"}, "spec.model.name"),
    Case(
        "model-path-escapes-volume",
        {"spec.model": {"path": "../other-team/model", "template": "qwen"}},
        "spec.model.path",
    ),
    Case("model-name-and-path", {"spec.model.path": "models/x"}, "spec.model"),
    Case(
        "model-revision-with-path",
        {"spec.model": {"path": "models/x", "template": "qwen", "revision": "main"}},
        "spec.model.revision",
    ),
    Case("model-without-template", {"spec.model.template": DELETE}, "spec.model.template"),
    Case("missing-storage", {"spec.storage": DELETE}, "spec.storage"),
    Case("eval-steps-without-val-size", {"spec.training.evalSteps": 100}, "spec.training.evalSteps"),
    Case("export-with-full", {"spec.method": "full", "spec.export.enabled": True}, "spec.export.enabled"),
    Case("lora-dropout-one", {"spec.lora": {"dropout": 1.0}}, "spec.lora.dropout"),
    Case(
        "toleration-operator-enum",
        {"spec.scheduling.tolerations": [{"key": "k", "operator": "Maybe"}]},
        "spec.scheduling.tolerations.0.operator",
    ),
    Case(
        "node-selector-key-too-long", {"spec.scheduling.nodeSelector": {"k" * 400: "v"}}, "spec.scheduling.nodeSelector"
    ),
    Case("suspend-as-string", {"spec.suspend": "yes"}, "spec.suspend"),
    Case("secret-name-not-dns", {"spec.hfTokenSecretRef": {"name": "Bad_Name"}}, "spec.hfTokenSecretRef.name"),
    Case("name-too-long", {"metadata.name": "a" * 52}, "metadata.name"),
    Case("name-not-a-dns-label", {"metadata.name": "Qwen.LoRA"}, "metadata.name"),
    Case("spec-is-null", {"spec": None}, "spec"),
    Case("claim-name-null", {"spec.storage.outputs.claimName": None}, "spec.storage.outputs.claimName"),
    # Strict field validation refuses an unknown field whatever its value, null included (kube-apiserver
    # v1.36, issue 22); a null in a known field is pruned instead (nulls-mean-unset above).
    Case("unknown-field-null", {"spec.model.bogus": None}, "spec.model.bogus"),
    Case("unknown-spec-field-null", {"spec.nonsense": None}, "spec.nonsense"),
    # Hostile and careless input (issue 12): what the API server's core/v1 validation refuses in a pod.
    Case("subpath-escapes-claim", {"spec.storage.outputs.subPath": "../../x"}, "spec.storage.outputs.subPath"),
    Case(
        "datasets-subpath-escapes",
        {"spec.storage.datasets": {"claimName": "d", "subPath": "a/../../b"}},
        "spec.storage.datasets.subPath",
    ),
    Case(
        "models-subpath-escapes",
        {"spec.storage.models": {"claimName": "m", "subPath": ".."}},
        "spec.storage.models.subPath",
    ),
    Case("gpu-resource-memory", {"spec.resources.gpuResourceName": "memory"}, "spec.resources.gpuResourceName"),
    Case("gpu-resource-without-domain", {"spec.resources.gpuResourceName": "gpu"}, "spec.resources.gpuResourceName"),
    Case("quantity-two-dots", {"spec.resources.memory": "1.2.3"}, "spec.resources.memory"),
    Case("quantity-negative", {"spec.resources.sharedMemorySize": "-5Gi"}, "spec.resources.sharedMemorySize"),
    Case("quantity-dots", {"spec.resources.cpu": "..."}, "spec.resources.cpu"),
    Case("quantity-zero", {"spec.resources.memory": "0"}, "spec.resources.memory"),
    Case(
        "toleration-exists-with-value",
        {"spec.scheduling.tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        "spec.scheduling.tolerations.0.value",
    ),
    Case(
        "toleration-seconds-without-noexecute",
        {"spec.scheduling.tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        "spec.scheduling.tolerations.0.effect",
    ),
    Case(
        "toleration-empty-key-equal",
        {"spec.scheduling.tolerations": [{"key": "", "operator": "Equal", "value": "v"}]},
        "spec.scheduling.tolerations.0.operator",
    ),
    Case(
        "toleration-bad-key",
        {"spec.scheduling.tolerations": [{"key": "a b", "operator": "Exists"}]},
        "spec.scheduling.tolerations.0.key",
    ),
    Case(
        "toleration-seconds-overflow",
        {"spec.scheduling.tolerations": [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 2**63}]},
        "spec.scheduling.tolerations.0.tolerationSeconds",
    ),
    Case("node-selector-bad-key", {"spec.scheduling.nodeSelector": {"a b": "v"}}, "spec.scheduling.nodeSelector"),
    Case("node-selector-bad-value", {"spec.scheduling.nodeSelector": {"k": "-v"}}, "spec.scheduling.nodeSelector.k"),
    Case(
        "ttl-overflows-int32",
        {"spec.runPolicy.ttlSecondsAfterFinished": 2**31},
        "spec.runPolicy.ttlSecondsAfterFinished",
    ),
    Case("max-steps-overflows-int32", {"spec.training.maxSteps": 2**40}, "spec.training.maxSteps"),
    Case("env-value-nul", {"spec.env": [{"name": "A", "value": "a\x00b"}]}, "spec.env.0.value"),
    Case("env-reserved-home", {"spec.env": [{"name": "HOME", "value": "/root"}]}, "spec.env.0.name"),
    Case(
        "env-reserved-pythonunbuffered", {"spec.env": [{"name": "PYTHONUNBUFFERED", "value": "0"}]}, "spec.env.0.name"
    ),
    Case(
        "affinity-unknown-field",
        {"spec.scheduling.affinity": {"nodeAfinity": {}}},
        "spec.scheduling.affinity.nodeAfinity",
    ),
    Case(
        "affinity-in-without-values",
        {
            "spec.scheduling.affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In"}]}]
                    }
                }
            }
        },
        "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.0.matchExpressions.0.values",
    ),
    Case(
        "affinity-gt-not-integer",
        {
            "spec.scheduling.affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["x"]}]}]
                    }
                }
            }
        },
        "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.0.matchExpressions.0.values",
    ),
    Case(
        "affinity-no-terms",
        {
            "spec.scheduling.affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
            }
        },
        "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
    ),
    Case(
        "affinity-weight-zero",
        {
            "spec.scheduling.affinity": {
                "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {}}]}
            }
        },
        "spec.scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution.0.weight",
    ),
    Case(
        "pod-affinity-exists-with-values",
        {
            "spec.scheduling.affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "zone",
                            "labelSelector": {
                                "matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]
                            },
                        }
                    ]
                }
            }
        },
        "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.labelSelector.matchExpressions.0.values",
    ),
    Case(
        "pod-affinity-bad-label-key",
        {
            "spec.scheduling.affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "zone", "labelSelector": {"matchLabels": {"-bad": "x"}}}
                    ]
                }
            }
        },
        "spec.scheduling.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.labelSelector.matchLabels",
    ),
    Case(
        "pod-affinity-bad-namespace-selector-key",
        {
            "spec.scheduling.affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "zone", "namespaceSelector": {"matchLabels": {"a b": "x"}}}
                    ]
                }
            }
        },
        "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.namespaceSelector.matchLabels",
    ),
    Case(
        "pod-affinity-without-topology-key",
        {
            "spec.scheduling.affinity": {
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}
            }
        },
        "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.topologyKey",
    ),
    # spec.serve (issue 13)
    Case("serve-when-evaluation-without-evaluation", {"spec.serve": {"when": "evaluationImproves"}}, "spec.serve.when"),
    Case(
        "serve-when-evaluation-without-base",
        {"spec.evaluation": {"valSize": 0.1}, "spec.serve": {"when": "evaluationImproves"}},
        "spec.serve.when",
    ),
    Case("serve-kaito-two-gpus", {"spec.serve": {"engine": "kaito", "gpus": 2}}, "spec.serve.engine"),
    Case(
        "serve-kaito-path-base",
        {
            "spec.model": {"path": "models/qwen", "template": "qwen"},
            "spec.storage.models": {"claimName": "models"},
            "spec.serve": {"engine": "kaito"},
        },
        "spec.serve.engine",
    ),
    Case(
        "serve-kaito-settings-on-vllm", {"spec.serve": {"kaito": {"preset": "Qwen/Qwen1.5-1.8B"}}}, "spec.serve.engine"
    ),
    Case(
        "serve-image-on-kserve",
        {"spec.serve": {"engine": "kserve", "image": "vllm/vllm-openai:v0.11.0"}},
        "spec.serve.image",
    ),
    # spec.serve.modelSource bucket (issue 24.4): refused by kubectl apply, not after training
    Case("serve-bucket-without-outputs-uri", {"spec.serve": {"modelSource": "bucket"}}, "spec.serve.modelSource"),
    Case("outputs-neither-claim-nor-uri", {"spec.storage.outputs": {}}, "spec.storage.outputs.claimName"),
    Case(
        "outputs-subpath-without-claim",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/", "subPath": "team"}},
        "spec.storage.outputs.subPath",
    ),
    Case(
        "outputs-read-only-without-claim",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/", "readOnly": True}},
        "spec.storage.outputs.subPath",
    ),
    Case("outputs-size-limit-with-claim", {"spec.storage.outputs.sizeLimit": "10Gi"}, "spec.storage.outputs.sizeLimit"),
    Case(
        "outputs-size-limit-not-a-quantity",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/", "sizeLimit": "lots"}},
        "spec.storage.outputs.sizeLimit",
    ),
    Case(
        "serve-volume-without-outputs-claim",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/"}, "spec.serve": {}},
        "spec.serve.modelSource",
    ),
    Case(
        "serve-kaito-without-outputs-claim",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/"}, "spec.serve": {"engine": "kaito"}},
        "spec.serve.modelSource",
    ),
    Case(
        "outputs-bucket-only-multi-node",
        {"spec.storage.outputs": {"uri": "s3://runs-bucket/"}, "spec.resources": {"nodes": 2, "gpusPerNode": 8}},
        "spec.storage.outputs.uri",
    ),
    Case(
        "serve-bucket-kaito",
        {"spec.storage.outputs.uri": "s3://runs-bucket/", "spec.serve": {"engine": "kaito", "modelSource": "bucket"}},
        "spec.serve.modelSource",
    ),
    Case(
        "serve-kaito-merged-model",
        {"spec.export.enabled": True, "spec.serve": {"engine": "kaito"}},
        "spec.serve.engine",
    ),
    Case(
        "serve-inferenceservice-with-adapter",
        {"spec.serve": {"engine": "kserve", "kserve": {"kind": "InferenceService"}}},
        "spec.serve.kserve.kind",
    ),
    Case(
        "serve-path-base-without-models-volume",
        {"spec.model": {"path": "models/qwen", "template": "qwen"}, "spec.serve": {}},
        "spec.storage.models",
    ),
    Case("serve-zero-replicas", {"spec.serve": {"replicas": 0}}, "spec.serve.replicas"),
    Case("serve-engine-unknown", {"spec.serve": {"engine": "triton"}}, "spec.serve.engine"),
    Case(
        "serve-kaito-node-label-key-too-long",
        {"spec.serve": {"engine": "kaito", "kaito": {"preset": "p", "nodeLabels": {"k" * 400: "v"}}}},
        "spec.serve.kaito.nodeLabels",
    ),
    Case(
        "mlflow-user-without-password",
        {"spec.tracking.mlflow": {"trackingUri": "http://m:5000", "usernameSecretRef": {"name": "m"}}},
        "spec.tracking.mlflow.passwordSecretRef",
    ),
    Case(
        "mlflow-token-and-basic-auth",
        {
            "spec.tracking.mlflow": {
                "trackingUri": "http://m:5000",
                "tokenSecretRef": {"name": "m"},
                "usernameSecretRef": {"name": "m"},
                "passwordSecretRef": {"name": "m"},
            }
        },
        "spec.tracking.mlflow.tokenSecretRef",
    ),
    Case(
        "mlflow-uri-not-http",
        {"spec.tracking.mlflow": {"trackingUri": "file:///tmp/x"}},
        "spec.tracking.mlflow.trackingUri",
    ),
    Case(
        "extra-resource-repeats-gpu",
        {"spec.resources": {"gpusPerNode": 8, "extra": {"nvidia.com/gpu": 8}}},
        "spec.resources.extra",
    ),
    Case("extra-resource-unprefixed", {"spec.resources": {"extra": {"ib": 1}}}, "spec.resources.extra"),
    # IsQualifiedName: each label of the domain prefix is at most 63 characters (the map key shares
    # gpuResourceName's type)
    Case(
        "extra-resource-domain-label-too-long",
        {"spec.resources": {"extra": {"a" * 64 + ".example.com/ib": 1}}},
        "spec.resources.extra",
    ),
    Case(
        "pod-annotation-bad-key", {"spec.scheduling.podAnnotations": {"a b/c": "v"}}, "spec.scheduling.podAnnotations"
    ),
    Case("packing-enum", {"spec.training.packing": "tight"}, "spec.training.packing"),
    Case(
        "grace-too-short",
        {"spec.runPolicy": {"terminationGracePeriodSeconds": 5}},
        "spec.runPolicy.terminationGracePeriodSeconds",
    ),
    Case("wandb-without-api-key", {"spec.tracking.wandb": {"project": "p"}}, "spec.tracking.wandb.apiKeySecretRef"),
    Case(
        "wandb-env-beside-wandb-tracking",
        {
            "spec.tracking.wandb": {"project": "p", "apiKeySecretRef": {"name": "w"}},
            "spec.env": [{"name": "WANDB_API_KEY", "value": "k"}],
        },
        "spec.env",
    ),
]
