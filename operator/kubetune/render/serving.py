"""``spec.serve``: the serving objects of a Succeeded FineTuneJob (pure: no I/O, no cluster, no clock).

What is served (the same choice as ``kubetune serve --local``):

* method full/freeze: the model the job wrote, ``<outputs>/<namespace>/<name>``;
* lora/qlora with ``export.enabled``: the merged model, ``.../merged``;
* lora/qlora without export: the base model plus the adapter (vLLM
  ``--enable-lora --lora-modules <name>=<adapter dir>``, KServe
  ``spec.model.lora.adapters``, KAITO ``inference.adapters``); clients ask for
  the served model name and get base + adapter.

Engines:

* ``vllm``: a Deployment (vLLM's OpenAI server, readiness and startup probes
  on ``/health``, the job's PVCs mounted read-only, restricted security
  context) and a ClusterIP Service on port 8000.  The URL clients use is
  ``http://<service>.<namespace>.svc:8000/v1``.
* ``kserve``: an InferenceService (``serving.kserve.io/v1beta1``, Hugging Face
  runtime, ``storageUri: pvc://...``) for a full or merged model, or an
  LLMInferenceService (``serving.kserve.io/v1alpha1``) with
  ``model.lora.adapters`` for an adapter.  KServe reports the URL in the
  object's ``status.url``.
* ``kaito``: a Workspace (``kaito.sh/v1beta1``) on the KAITO preset named in
  ``spec.serve.kaito.preset`` with the adapter in ``inference.adapters``
  (``volumeSource``: a PVC of its own, read-only, filled first by a copy Job:
  see :func:`render_adapter_copy`; no ``strength``, which KAITO's vLLM runtime refuses).

How the operator uses this (``kubetune.controller.decide``, ``_serve``): once
the FineTuneJob has Succeeded (and, with ``when: evaluationImproves``, once
:func:`evaluation_verdict` says the trained model beats the base), it
server-side applies every object of ``render_serving(job, options).objects``
(each carries the FineTuneJob as controller ownerReference when
``job.metadata.uid`` is set), watches them, and reports
:func:`observed_state` in ``status.serving`` and the ``Serving`` condition.
``kubetune render`` prints the same objects after the training objects.

``render_serving`` raises ``ValueError`` only when ``spec.serve`` is unset;
every other problem is refused earlier by the CRD's rules and
``validate_object``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from kubetune.api import FineTuneJob, KaitoSpec, VolumeSpec
from kubetune.api.contract import API_VERSION, KIND, LABEL_JOB, LABEL_MANAGED_BY, MERGED_SUBDIR, SHM_DIR

from .podspec import HF_HOME_SUBDIR, container_security_context, placement, pod_security_context
from .types import RenderOptions

VLLM_IMAGE: Final = "vllm/vllm-openai:v0.11.0"
"""Default serving image (engine vllm): vLLM's OpenAI-compatible server."""
VLLM_PORT: Final = 8000
COMPONENT: Final = "serving"
SERVE_SUFFIX: Final = "-serve"
MODELS_MOUNT: Final = "/models"
OUTPUTS_MOUNT: Final = "/outputs"
CACHE_MOUNT: Final = "/cache"
LORA_RANKS: Final = (8, 16, 32, 64, 128, 256, 320, 512)
"""Values vLLM accepts for --max-lora-rank (vllm/config/lora.py:104-109 @0.11.0)."""
VLLM_USER: Final = "kubetune"
CHAT_TEMPLATE_FILE: Final = "chat_template.jinja"
"""Where a tokenizer's save_pretrained writes its chat template (transformers 5.6.0 utils/hub.py:69)."""

VLLM_WRITABLE_ENV: Final = (
    # The root filesystem is read-only and the pod runs as uid 1000, which vllm/vllm-openai's image
    # does not define (its Dockerfile adds no user; read at a stored commit of docker/Dockerfile,
    # not at the v0.11.0 tag).  Everything vLLM, torch, Triton and the Hub write goes under the
    # "cache" emptyDir, in folders the init container makes:
    # - TMPDIR: vLLM calls tempfile.gettempdir() at import (model_executor/model_loader/weight_utils.py:63,
    #   its file locks, get_lock at :87-98) and for its IPC path (envs.py:457 VLLM_RPC_BASE_PATH);
    #   gettempdir() raises when no candidate folder is writable, so TMPDIR must exist;
    # - HOME, XDG_CACHE_HOME, VLLM_CACHE_ROOT, VLLM_CONFIG_ROOT (envs.py:422-437, default ~/.cache/vllm, ~/.config/vllm);
    # - TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR (torch's default is <gettempdir()>/torchinductor_<user>);
    # - USER: getpass.getuser() reads it before the passwd entry uid 1000 does not have;
    # - HF_MODULES_CACHE: transformers copies trust_remote_code modules there, by default <HF_HOME>/modules
    #   (transformers utils/hub.py, dynamic_module_utils.py init_hf_modules, 4.57.1 and 5.6.0 read), and
    #   HF_HOME may be the trainer's cache on the read-only models volume.
    {"name": "HOME", "value": CACHE_MOUNT},
    {"name": "USER", "value": VLLM_USER},
    {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
    {"name": "XDG_CONFIG_HOME", "value": f"{CACHE_MOUNT}/config"},
    {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_MOUNT}/vllm"},
    {"name": "VLLM_CONFIG_ROOT", "value": f"{CACHE_MOUNT}/config/vllm"},
    {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_MOUNT}/triton"},
    {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_MOUNT}/torchinductor"},
    {"name": "TMPDIR", "value": f"{CACHE_MOUNT}/tmp"},
    {"name": "HF_MODULES_CACHE", "value": f"{CACHE_MOUNT}/hf-modules"},
    {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
)
"""The vLLM container's environment for a read-only root (with HF_HOME, see render_vllm)."""


def vllm_cache_dirs_command(hf_home: str) -> list[str]:
    """The init container's command: make every folder VLLM_WRITABLE_ENV and HF_HOME name inside the cache emptyDir
    (a fixed list: no spec value)."""
    folders = [e["value"] for e in VLLM_WRITABLE_ENV if str(e["value"]).startswith(f"{CACHE_MOUNT}/")]
    if hf_home.startswith(f"{CACHE_MOUNT}/"):
        folders.append(hf_home)
    return ["mkdir", "-p", *folders]


@dataclass(frozen=True)
class Serving:
    """What ``spec.serve`` becomes."""

    engine: str
    objects: list[dict[str, Any]]
    served_model: str
    """The name clients send as ``model``."""
    url: str | None
    """The OpenAI base URL inside the cluster (vllm); None where the engine reports it in its own status."""
    model_uri: str
    """What is served: the model (merged, full, or the base)."""
    adapter_uri: str | None = None
    """The LoRA adapter served on top of the base, if any."""
    notes: list[str] = field(default_factory=list)
    prepare: list[dict[str, Any]] = field(default_factory=list)
    """Objects to create first, ending with a batch/v1 Job that must succeed before ``objects`` are
    created (engine kaito: the adapter's own PersistentVolumeClaim and the Job that copies the adapter into it)."""


@dataclass(frozen=True)
class _Source:
    model_path: str
    """Path inside the vLLM container (a mounted PVC) or a Hub id."""
    model_uri: str
    """The same as a KServe storage URI: pvc://claim/path or hf://id."""
    adapter_path: str | None
    adapter_uri: str | None
    hub_base: bool
    """The base is a Hub id (spec.model.name), not a folder."""


def child_name(name: str, suffix: str = SERVE_SUFFIX) -> str:
    """``<name><suffix>``, shortened with a stable hash to stay a DNS-1035 label (Service names: 63 characters)."""
    full = name + suffix
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def _in_volume(volume: VolumeSpec | None, relative: str) -> str:
    parts = [p for p in ((volume.sub_path if volume else None), relative) if p]
    return "/".join(p.strip("/") for p in parts)


def _source(job: FineTuneJob, namespace: str) -> _Source:
    spec = job.spec
    outputs = spec.storage.outputs
    job_rel = f"{namespace}/{job.name}"
    if spec.method in ("full", "freeze") or spec.export.enabled:
        rel = job_rel if spec.method in ("full", "freeze") else f"{job_rel}/{MERGED_SUBDIR}"
        return _Source(f"{OUTPUTS_MOUNT}/{rel}", f"pvc://{outputs.claim_name}/{_in_volume(outputs, rel)}", None, None, False)
    adapter_path = f"{OUTPUTS_MOUNT}/{job_rel}"
    adapter_uri = f"pvc://{outputs.claim_name}/{_in_volume(outputs, job_rel)}"
    if spec.model.path:
        models = spec.storage.models
        if models is None:
            raise ValueError("spec.model.path with spec.serve needs spec.storage.models (the volume the base is on)")
        base_path = f"{MODELS_MOUNT}/{spec.model.path}"
        base_uri = f"pvc://{models.claim_name}/{_in_volume(models, spec.model.path)}"
        return _Source(base_path, base_uri, adapter_path, adapter_uri, False)
    if spec.model.name is None:  # fromJob: refused by serving_problems (the base is only known after that job ran)
        raise ValueError("spec.serve of a LoRA adapter trained on spec.model.fromJob: set spec.export.enabled to serve the merged model")
    # hf://owner/model[:revision] as KServe's storage initializer reads it (python/storage/kserve_storage/kserve_storage.py:629-658 @v0.20.0).
    hub_uri = f"hf://{spec.model.name}" + (f":{spec.model.revision}" if spec.model.revision else "")
    return _Source(spec.model.name, hub_uri, adapter_path, adapter_uri, True)


def _labels(job: FineTuneJob) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kubetune", LABEL_MANAGED_BY: "kubetune", LABEL_JOB: job.name, "app.kubernetes.io/component": COMPONENT}


def _metadata(job: FineTuneJob, name: str, namespace: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(job)}
    if job.metadata.uid:
        meta["ownerReferences"] = [
            {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.metadata.uid, "controller": True, "blockOwnerDeletion": True}
        ]
    return meta


KSERVE_DEFAULT_CPU: Final = "4"
KSERVE_DEFAULT_MEMORY: Final = "32Gi"
"""engine kserve without spec.serve.cpu / memory.  KServe strategic-merges the ServingRuntime's container
into the predictor's (pkg/utils/container_merge.go:32-62 @v0.20.0, MergeContainerWithPatch), so limits
the predictor leaves out keep the runtime's: kserve-huggingfaceserver sets requests and limits of
cpu "1" and memory "2Gi" (config/runtimes/kserve-huggingfaceserver.yaml:34-40 @v0.20.0): a CPU request
above 1 would make the pod invalid, and 2Gi is an OOM for any LLM.  So both are always explicit."""


def _resources(job: FineTuneJob, *, explicit: bool = False) -> dict[str, Any]:
    """The serving container's resources; ``explicit`` (KServe): cpu and memory requests and limits always set."""
    serve = job.spec.serve
    assert serve is not None
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if serve.gpus:
        requests[job.spec.resources.gpu_resource_name] = limits[job.spec.resources.gpu_resource_name] = str(serve.gpus)
    cpu = serve.cpu or (KSERVE_DEFAULT_CPU if explicit else None)
    memory = serve.memory or (KSERVE_DEFAULT_MEMORY if explicit else None)
    if cpu:
        requests["cpu"] = cpu
        if explicit:
            limits["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


VLLM_MAX_LORA_RANK: Final = LORA_RANKS[-1]
"""vLLM 0.11 allows --max-lora-rank only from LORA_RANKS (vllm/config/lora.py:104-109) and refuses an
adapter whose rank is above it (vllm/lora/peft_helper.py:119-122); its default is 16 (config/lora.py:33)."""


def max_lora_rank(job: FineTuneJob) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds the job's LoRA rank (serving_problems refuses > 512)."""
    rank = job.spec.lora.rank if job.spec.lora else 8
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])



def _bnb_base(job: FineTuneJob) -> bool:
    """The adapter was trained on a 4-bit bitsandbytes base: serve the base quantized the same way.
    vLLM's in-flight bitsandbytes quantization is NF4 only (model_executor/model_loader/bitsandbytes_loader.py:414,651,660
    @0.11.0: quant_type="nf4"); serving_problems refuses fp4."""
    q = job.spec.quantization
    return job.spec.method == "qlora" and q is not None and q.bits == 4


def vllm_args(job: FineTuneJob, source: _Source, served: str) -> list[str]:
    serve = job.spec.serve
    assert serve is not None
    args = ["--model", source.model_path, "--host", "0.0.0.0", "--port", str(VLLM_PORT)]  # noqa: S104 - the pod's port, behind the Service
    if source.hub_base and job.spec.model.revision:
        # The revision the trainer downloaded (and, offline, the only one in the cache): vllm/engine/arg_utils.py:538.
        args += ["--revision", job.spec.model.revision]
    if source.adapter_path:
        # The base keeps its own name; the adapter is served under the job's served name.
        args += ["--served-model-name", f"{served}-base", "--enable-lora", "--lora-modules", f"{served}={source.adapter_path}"]
        args += ["--max-lora-rank", str(max_lora_rank(job))]
        # vLLM renders chat requests with the engine's tokenizer even for a LoRA request
        # (vllm/entrypoints/openai/serving_chat.py:188-193 @0.11.0: get_tokenizer() without the
        # lora_request); LLaMA-Factory puts the chat template it trained with into the tokenizer
        # (llamafactory 0.9.5 data/template.py:273-277, fix_jinja_template, called at :666) and the
        # Trainer saves that tokenizer beside the adapter (transformers trainer.py:3837, installed
        # version), its template as chat_template.jinja (transformers 5.6.0 tokenization_utils_base.py:3266-3279).
        # --chat-template <file> (vllm/entrypoints/chat_utils.py:1044-1078 @0.11.0, read as a file) serves with that
        # template.  Not --tokenizer <adapter dir>: the tokenizer_config.json transformers 5.6 writes
        # (extra_special_tokens as a list) does not load in the transformers 4.x vLLM 0.11 runs with
        # ("'list' object has no attribute 'keys'", measured with 4.57.1), so vLLM would not start.
        args += ["--chat-template", f"{source.adapter_path}/{CHAT_TEMPLATE_FILE}"]
        if _bnb_base(job):
            args += ["--quantization", "bitsandbytes"]  # the base the adapter was trained on
    else:
        args += ["--served-model-name", served]
    if serve.gpus > 1:
        args += ["--tensor-parallel-size", str(serve.gpus)]
    if serve.max_model_len:
        args += ["--max-model-len", str(serve.max_model_len)]
    if job.spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def serving_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    """What spec.serve would break at serving time, as (field, message) pairs (``checks`` reports them)."""
    serve, spec = job.spec.serve, job.spec
    if serve is None:
        return []
    problems: list[tuple[str, str]] = []
    adapter = spec.method in ("lora", "qlora") and not spec.export.enabled
    if adapter and spec.model.from_job is not None:
        problems.append(("spec.serve", "serving a LoRA adapter trained on spec.model.fromJob needs that job's model as the base, which is only known "
                         "once it ran: set spec.export.enabled to serve the merged model"))
    if adapter and spec.lora is not None and spec.lora.rank > VLLM_MAX_LORA_RANK:
        problems.append(("spec.lora.rank", f"is {spec.lora.rank}, but vLLM serves LoRA ranks up to {VLLM_MAX_LORA_RANK} (its largest --max-lora-rank): "
                         f"use a rank of at most {VLLM_MAX_LORA_RANK}, or set spec.export.enabled to serve the merged model"))
    quant = spec.quantization
    if adapter and spec.method == "qlora" and quant is not None and quant.bits == 4 and quant.type == "fp4":
        problems.append(("spec.quantization.type", "fp4: vLLM quantizes a base in flight to NF4 only, so the adapter would run on another base than it was trained on: "
                         "use type nf4, or set spec.export.enabled to serve the merged model"))
    if serve.engine == "kserve" and adapter and spec.model.name is not None and "/" not in spec.model.name:
        # KServe's storage initializer accepts only hf://owner/model[:revision]
        # (python/storage/kserve_storage/kserve_storage.py:629-636 @v0.20.0).
        problems.append(("spec.model.name", f"{spec.model.name!r} has no owner: KServe downloads hf://owner/model only; use the full Hub id "
                         "(for example openai-community/gpt2) or engine vllm"))
    if serve.engine == "kaito":
        problems += _kaito_problems(job)
    return problems


def _claim(name: str, volume: VolumeSpec) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}


def _mount(name: str, path: str, volume: VolumeSpec) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": True}
    if volume.sub_path:
        mount["subPath"] = volume.sub_path
    return mount


def render_vllm(job: FineTuneJob, namespace: str, served: str, source: _Source) -> tuple[list[dict[str, Any]], str]:
    serve = job.spec.serve
    assert serve is not None
    name = child_name(job.name)
    storage = job.spec.storage
    volumes = [_claim("outputs", storage.outputs)]
    mounts = [_mount("outputs", OUTPUTS_MOUNT, storage.outputs)]
    hf_home = f"{CACHE_MOUNT}/huggingface"
    env: list[dict[str, Any]] = []
    if storage.models is not None:
        volumes.append(_claim("models", storage.models))
        mounts.append(_mount("models", MODELS_MOUNT, storage.models))
        if source.hub_base:
            hf_home = f"{MODELS_MOUNT}/{HF_HOME_SUBDIR}"  # the trainer's download, read-only: nothing is fetched again
            env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if source.hub_base and storage.models is None and job.spec.hf_token_secret_ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": job.spec.hf_token_secret_ref.selector()}})
    env += [{"name": "HF_HOME", "value": hf_home}, *(dict(e) for e in VLLM_WRITABLE_ENV)]
    volumes += [{"name": "cache", "emptyDir": {}}, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    mounts += [{"name": "cache", "mountPath": CACHE_MOUNT}, {"name": "dshm", "mountPath": SHM_DIR}]
    image = serve.image or VLLM_IMAGE
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container: dict[str, Any] = {
        "name": "vllm",
        "image": image,
        "args": vllm_args(job, source, served),
        "env": env,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        # Loading weights takes minutes: the startup probe allows 30 min before liveness counts.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 4},
        "resources": _resources(job),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    # An emptyDir starts empty: the folders the env above names are made before vLLM starts.
    init: dict[str, Any] = {
        "name": "cache-dirs",
        "image": image,
        "command": vllm_cache_dirs_command(hf_home),
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_MOUNT}],
    }
    if job.spec.image_pull_policy:
        container["imagePullPolicy"] = init["imagePullPolicy"] = job.spec.image_pull_policy
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "initContainers": [init],
        "containers": [container],
        "volumes": volumes,
        **placement(job),
    }
    selector = {LABEL_JOB: job.name, "app.kubernetes.io/component": COMPONENT}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(job, name, namespace),
        "spec": {
            "replicas": serve.replicas,
            "selector": {"matchLabels": selector},
            # One GPU set per replica: never run the old and the new pod side by side on a full node.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": _labels(job)}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, name, namespace),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}]},
    }
    return [deployment, service], f"http://{name}.{namespace}.svc:{VLLM_PORT}/v1"


KSERVE_LORA_MOUNT_ROOT: Final = "/mnt/lora"
"""Where KServe's LLMInferenceService mounts a LoRA adapter: /mnt/lora/<adapter name, [^a-zA-Z0-9._-] -> '-'>
(pkg/controller/v1alpha2/llmisvc/workload_lora.go:41,48,95 @v0.20.0); served names are DNS labels, so unchanged."""


def render_kserve(job: FineTuneJob, namespace: str, served: str, source: _Source) -> list[dict[str, Any]]:
    serve = job.spec.serve
    assert serve is not None
    kind = serve.kserve.kind if serve.kserve and serve.kserve.kind else ("LLMInferenceService" if source.adapter_uri else "InferenceService")
    resources = _resources(job, explicit=True)
    # Placement, pull secrets and the ServiceAccount: the predictor inlines a PodSpec
    # (pkg/apis/serving/v1beta1/predictor.go:84 @v0.20.0, `PodSpec json:",inline"`), the
    # LLMInferenceService's template is a PodSpec (pkg/apis/serving/v1alpha1/llm_inference_service_types.go:164).
    # KServe strategic-merges the predictor's PodSpec over the runtime's nodeSelector, affinity,
    # tolerations and imagePullSecrets (pkg/controller/v1beta1/inferenceservice/utils/utils.go:267-293
    # @v0.20.0, MergePodSpec), and appends the predictor's args to the runtime's (utils.go:259-260), so
    # our --model_name follows the runtime's --model_name={{.Name}} and, parsed last, wins.
    pod_fields = placement(job)
    if kind == "InferenceService":
        if source.adapter_uri:
            raise ValueError("spec.serve.kserve.kind InferenceService serves one model: merge the adapter (spec.export.enabled) or use LLMInferenceService")
        model: dict[str, Any] = {
            "modelFormat": {"name": "huggingface"},
            "storageUri": source.model_uri,
            "args": [f"--model_name={served}"] + ([f"--max_model_len={serve.max_model_len}"] if serve.max_model_len else []),
            "resources": resources,
        }
        isvc = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": _metadata(job, job.name, namespace),
            "spec": {"predictor": {"minReplicas": serve.replicas, "maxReplicas": serve.replicas, **pod_fields, "model": model}},
        }
        return [isvc]
    llm_model: dict[str, Any] = {"uri": source.model_uri, "name": f"{served}-base" if source.adapter_uri else served}
    # vLLM flags go in VLLM_ADDITIONAL_ARGS, which KServe's vLLM config passes to `vllm serve`
    # (config/llmisvcconfig/config-llm-template.yaml:166-179 @v0.20.0); container args would replace the
    # config's own (a strategic merge replaces a list without a patch strategy).  Every value here is an
    # integer, a fixed word or a path built from a DNS label: nothing the shell there could expand.
    extra: list[str] = []
    if source.adapter_uri:
        llm_model["lora"] = {"adapters": [{"name": served, "uri": source.adapter_uri}], "maxRank": max_lora_rank(job)}
        extra += ["--chat-template", f"{KSERVE_LORA_MOUNT_ROOT}/{served}/{CHAT_TEMPLATE_FILE}"]  # the adapter's chat template (see vllm_args)
        if _bnb_base(job):
            extra += ["--quantization", "bitsandbytes"]
    if serve.max_model_len:
        extra += ["--max-model-len", str(serve.max_model_len)]
    main: dict[str, Any] = {"name": "main", "resources": resources}
    if extra:
        main["env"] = [{"name": "VLLM_ADDITIONAL_ARGS", "value": " ".join(extra)}]
    spec: dict[str, Any] = {"model": llm_model, "replicas": serve.replicas}
    if serve.gpus > 1:
        spec["parallelism"] = {"tensor": serve.gpus}  # llm_inference_service_types.go:530-534, --tensor-parallel-size
    spec["template"] = {**pod_fields, "containers": [main]}
    if source.hub_base and job.spec.hf_token_secret_ref is not None:
        # The base is downloaded by KServe's storage initializer.  The template may set env on the init
        # container named storage-initializer (pkg/apis/serving/v1alpha2/llm_inference_service_types.go:166-170
        # @v0.20.0), which KServe strategic-merges into the one it builds (pkg/controller/v1alpha2/llmisvc/
        # workload_storage.go:398,432-445); huggingface_hub reads HF_TOKEN.  No ServiceAccount secret needed.
        token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": job.spec.hf_token_secret_ref.selector()}}
        spec["template"]["initContainers"] = [{"name": "storage-initializer", "env": [token]}]
    llmisvc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": _metadata(job, job.name, namespace),
        "spec": spec,
    }
    return [llmisvc]


ADAPTER_SUFFIX: Final = "-adapter"
ADAPTER_COPY_SUFFIX: Final = "-adapter-copy"
ADAPTER_FILES: Final = ("adapter_config.json", "adapter_model.safetensors")
"""What PEFT saves for a LoRA adapter (LLaMA-Factory saves safetensors) and what KAITO's vLLM loads."""


def render_adapter_copy(job: FineTuneJob, namespace: str, options: RenderOptions) -> list[dict[str, Any]]:
    """The adapter's own PersistentVolumeClaim and a Job that copies the adapter files into its root.

    Why: KAITO v0.12 mounts an adapter's ``volumeSource`` whole at ``/mnt/adapter/<name>``
    (pkg/workspace/inference/preset_inferences.go, ``SetAdapterPuller``: no subPath) and its vLLM
    launcher serves every folder of /mnt/adapter as one adapter
    (presets/workspace/inference/vllm/inference_api.py, ``load_lora_adapters``), so the adapter
    must be at the root of a volume; in the outputs volume it is in ``<namespace>/<job>/``.
    The copy runs the trainer image with a fixed command: the job's folder reaches it only as
    the outputs mount's subPath, never on a command line."""
    serve = job.spec.serve
    assert serve is not None
    kaito = serve.kaito or KaitoSpec()
    outputs = job.spec.storage.outputs
    claim = child_name(job.name, ADAPTER_SUFFIX)
    pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": kaito.adapter_volume_size}}}
    if kaito.adapter_storage_class_name:
        pvc_spec["storageClassName"] = kaito.adapter_storage_class_name
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(job, claim, namespace), "spec": pvc_spec}
    source = _in_volume(outputs, f"{namespace}/{job.name}")
    container: dict[str, Any] = {
        "name": "copy",
        "image": job.spec.image or options.image,
        "command": ["cp", "-v", *(f"/source/{f}" for f in ADAPTER_FILES), "/adapter/"],
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [
            {"name": "outputs", "mountPath": "/source", "readOnly": True, "subPath": source},
            {"name": "adapter", "mountPath": "/adapter"},
        ],
    }
    if job.spec.image_pull_policy:
        container["imagePullPolicy"] = job.spec.image_pull_policy
    pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [
            {"name": "outputs", "persistentVolumeClaim": {"claimName": outputs.claim_name, "readOnly": True}},
            {"name": "adapter", "persistentVolumeClaim": {"claimName": claim}},
        ],
    }
    # Placed like the training pods: a ReadWriteOnce outputs claim binds in their zone, so the copy runs there too.
    pod.update(placement(job))
    copy_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job, child_name(job.name, ADAPTER_COPY_SUFFIX), namespace),
        "spec": {"backoffLimit": 3, "template": {"metadata": {"labels": _labels(job)}, "spec": pod}},
    }
    return [pvc, copy_job]


KAITO_LEGACY_PRESETS: Final = {
    "phi-4": "microsoft/phi-4",
    "phi-4-mini-instruct": "microsoft/phi-4-mini-instruct",
    "llama-3.1-8b-instruct": "meta-llama/llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct": "meta-llama/llama-3.3-70b-instruct",
    "deepseek-r1-distill-llama-8b": "deepseek-ai/deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b": "deepseek-ai/deepseek-r1-distill-qwen-14b",
    "deepseek-r1-0528": "deepseek-ai/deepseek-r1-0528",
    "deepseek-v3-0324": "deepseek-ai/deepseek-v3-0324",
    "phi-3-mini-4k-instruct": "microsoft/phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct": "microsoft/phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct": "microsoft/phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct": "microsoft/phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct": "microsoft/phi-3.5-mini-instruct",
    "qwen2.5-coder-7b-instruct": "qwen/qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct": "qwen/qwen2.5-coder-32b-instruct",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gemma-3-4b-instruct": "google/gemma-3-4b-it",
    "gemma-3-27b-instruct": "google/gemma-3-27b-it",
    "mistral-7b": "mistralai/mistral-7b-v0.3",
    "mistral-7b-instruct": "mistralai/mistral-7b-instruct-v0.3",
    "ministral-3-3b-instruct": "mistralai/ministral-3-3b-instruct-2512",
    "ministral-3-8b-instruct": "mistralai/ministral-3-8b-instruct-2512",
    "ministral-3-14b-instruct": "mistralai/ministral-3-14b-instruct-2512",
    "mistral-large-3-675b-instruct": "mistralai/mistral-large-3-675b-instruct-2512",
}
"""KAITO v0.12's legacy short preset names and the Hub ids they stand for (pkg/utils/plugin/plugin.go:47-73
@v0.12.0, LegacyBuiltinToCatalog).  IsValidPreset (plugin.go:111-129) accepts these (case-insensitively) or
any ``org/name``; ResolveHFModelID (plugin.go:132-138) maps a legacy name to its id."""

KAITO_ADAPTER_NAME_MAX: Final = 63 - len("adapter-volume-")
"""KAITO names an adapter's pod volume ``adapter-volume-<source.name>`` (pkg/workspace/inference/preset_inferences.go:931
@v0.12.0), and a volume name is a DNS label of at most 63 characters."""
KAITO_CONFIG_SUFFIX: Final = "-kaito-config"
KAITO_CONFIG_KEY: Final = "inference_config.yaml"
"""KAITO reads the Workspace's inference.config ConfigMap's ``inference_config.yaml`` (pkg/model/interface.go:55,
api/v1beta1/inference_config_validation.go:72-80 @v0.12.0); its ``vllm:`` map becomes ``--<key> <value>`` flags of
vLLM (presets/workspace/inference/vllm/inference_api.py:134-145)."""
KAITO_TOKEN_KEY: Final = "HF_TOKEN"
"""presetOptions.modelAccessSecret is read at key HF_TOKEN (pkg/workspace/inference/preset_inferences.go:855-859 @v0.12.0)."""


def kaito_preset(job: FineTuneJob) -> str:
    """The Workspace's preset: spec.serve.kaito.preset, else spec.model.name."""
    serve = job.spec.serve
    preset = serve.kaito.preset if serve is not None and serve.kaito is not None else None
    return preset or job.spec.model.name or ""


def _kaito_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    preset, base = kaito_preset(job), job.spec.model.name
    if base is None:
        return problems  # the API rule serve-kaito-hub-base says it
    field = "spec.serve.kaito.preset"
    if "/" not in preset and preset.lower() not in KAITO_LEGACY_PRESETS:
        problems.append((field, f"{preset!r} is not a KAITO v0.12 preset: use the base model's Hub id ({base}, the default) or a legacy short name "
                         f"such as {', '.join(sorted(KAITO_LEGACY_PRESETS)[:3])}"))
    elif KAITO_LEGACY_PRESETS.get(preset.lower(), preset).lower() != base.lower():
        problems.append((field, f"{preset!r} is not the base the adapter was trained on ({base}): KAITO would serve the adapter on another model; "
                         "remove the preset (it defaults to spec.model.name) or train on the preset's model"))
    if job.spec.model.revision:
        problems.append(("spec.model.revision", "engine kaito downloads its preset's model at the revision KAITO chooses: remove the revision or use engine vllm"))
    ref = job.spec.hf_token_secret_ref
    if ref is not None and ref.key != KAITO_TOKEN_KEY:
        problems.append(("spec.hfTokenSecretRef.key", f"engine kaito reads the Hub token of presetOptions.modelAccessSecret at key {KAITO_TOKEN_KEY}: "
                         f"store the token under {KAITO_TOKEN_KEY} in Secret {ref.name} and set key: {KAITO_TOKEN_KEY}"))
    return problems


def kaito_adapter_name(served: str) -> str:
    """The adapter's source.name (what clients send as model), short enough for KAITO's volume name."""
    if len(served) <= KAITO_ADAPTER_NAME_MAX:
        return served
    digest = hashlib.sha256(served.encode()).hexdigest()[:8]
    return f"{served[: KAITO_ADAPTER_NAME_MAX - 9].rstrip('-')}-{digest}"


def render_kaito_config(job: FineTuneJob, namespace: str) -> dict[str, Any]:
    """The Workspace's inference.config ConfigMap: vLLM flags KAITO does not set itself.  KAITO enables LoRA
    (pkg/model/interface.go:448-450) but leaves --max-lora-rank at vLLM's 16 (vllm/config/lora.py:33), which
    refuses any larger adapter (vllm/lora/peft_helper.py:119-122)."""
    serve = job.spec.serve
    assert serve is not None
    flags: dict[str, str] = {"max-lora-rank": str(max_lora_rank(job))}
    if serve.max_model_len:
        flags["max-model-len"] = str(serve.max_model_len)
    if _bnb_base(job):
        flags["quantization"] = "bitsandbytes"
    text = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in flags.items())
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, child_name(job.name, KAITO_CONFIG_SUFFIX), namespace),
        "data": {KAITO_CONFIG_KEY: f"vllm:\n{text}"},
    }


def render_kaito(job: FineTuneJob, namespace: str, served: str, source: _Source) -> list[dict[str, Any]]:
    serve = job.spec.serve
    assert serve is not None
    kaito = serve.kaito or KaitoSpec()
    resource: dict[str, Any] = {"labelSelector": {"matchLabels": dict(kaito.node_labels)}}
    if kaito.instance_type:
        resource["instanceType"] = kaito.instance_type
    preset: dict[str, Any] = {"name": kaito_preset(job)}
    if job.spec.hf_token_secret_ref is not None:
        preset["presetOptions"] = {"modelAccessSecret": job.spec.hf_token_secret_ref.name}  # gated presets need it
    inference: dict[str, Any] = {"preset": preset, "config": child_name(job.name, KAITO_CONFIG_SUFFIX)}
    if source.adapter_uri:
        # No `strength`: KAITO's default vLLM runtime refuses Workspaces that set it
        # (pkg/model/interface.go, PresetParam.Validate: "vLLM does not support adapter strength").
        # The adapter is served under the folder's name, source.name (load_lora_adapters).
        claim = child_name(job.name, ADAPTER_SUFFIX)
        inference["adapters"] = [{"source": {"name": served, "volumeSource": {"persistentVolumeClaim": {"claimName": claim, "readOnly": True}}}}]
    return [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": _metadata(job, job.name, namespace), "resource": resource, "inference": inference}]


SERVICE_PORTS: Final = {"vllm": VLLM_PORT, "kaito": 80}


def evaluation_verdict(evaluation: Mapping[str, Any] | None) -> tuple[bool | None, str]:
    """Whether ``status.evaluation`` shows the trained model beating the base model.

    ``(None, why)``: no result yet; ``(False, why)``: it does not (or cannot be told);
    ``(True, why)``: it does.  The rule: a lower eval loss than the base (LLaMA-Factory's
    ``eval_loss`` on the same held-out data), and in generation mode also a ROUGE-L no lower
    than the base's; without eval losses (generation only), a higher ROUGE-L, else BLEU-4.
    """
    if not evaluation:
        return None, "no evaluation result yet"
    if evaluation.get("state") != "Succeeded":
        return False, f"the evaluation failed: {evaluation.get('message') or 'no message'}"
    trained, base = evaluation.get("trained") or {}, evaluation.get("base")
    if not base:
        return False, "the base model was not evaluated (spec.evaluation.baseModel), so nothing shows an improvement"
    facts: list[str] = []
    improved: bool | None = None
    if isinstance(trained.get("evalLoss"), (int, float)) and isinstance(base.get("evalLoss"), (int, float)):
        improved = trained["evalLoss"] < base["evalLoss"]
        facts.append(f"eval loss {trained['evalLoss']:.4g} {'<' if improved else '>='} base {base['evalLoss']:.4g}")
    for key, name in (("rougeL", "ROUGE-L"), ("bleu4", "BLEU-4")):
        t, b = trained.get(key), base.get(key)
        if not isinstance(t, (int, float)) or not isinstance(b, (int, float)):
            continue
        better = t >= b if improved is not None else t > b
        facts.append(f"{name} {t:.4g} {'>=' if t >= b else '<'} base {b:.4g}")
        improved = better if improved is None else (improved and better)
        break  # one generation metric decides: ROUGE-L when present
    if improved is None:
        return False, "the evaluation has no metric measured on both the trained and the base model"
    return improved, "; ".join(facts)


def _true(conditions: Any, type_: str) -> bool:
    return any(isinstance(c, Mapping) and c.get("type") == type_ and c.get("status") == "True" for c in conditions or [])


KSERVE_WORKLOAD_PORT: Final = 8000
"""The LLMInferenceService workload Service's only port (pkg/controller/v1alpha2/llmisvc/workload.go:139-148 @v0.20.0)."""


def _with_port(url: str, port: int) -> str:
    """``url`` with ``port`` when it names none."""
    parts = urlsplit(url)
    if parts.port is not None or not parts.hostname:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def observed_state(engine: str, obj: Mapping[str, Any] | None) -> tuple[bool, str | None, str]:
    """What a watched serving object says: (ready, URL it reports, a short description).

    * Deployment (vllm): ready when at least one replica of its current generation is ready
      (``status.observedGeneration``, ``readyReplicas``; apps/v1 DeploymentStatus);
    * InferenceService / LLMInferenceService (kserve): the ``Ready`` condition and
      ``status.url`` (KServe's knative-style status), else (LLMInferenceService without a router)
      the first of ``status.addresses``; the OpenAI routes are under
      ``/openai/v1`` (Hugging Face runtime) or ``/v1`` (LLMInferenceService);
    * Workspace (kaito): the ``InferenceReady`` condition (api/v1beta1/condition_types.go:30 @v0.12.0);
      KAITO serves the Workspace through a Service of the same name on port 80.
    """
    if obj is None:
        return False, None, "not created yet"
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    kind = obj.get("kind")
    if kind == "Deployment":
        current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        ready = int(status.get("readyReplicas") or 0)
        wanted = int((obj.get("spec") or {}).get("replicas") or 1)
        return current and ready >= 1, None, f"{ready}/{wanted} replicas ready"
    if engine == "kserve":
        url = status.get("url")
        if not url and kind == "LLMInferenceService":
            # Without spec.router, KServe fills only status.addresses, with the workload Service's
            # in-cluster URL (pkg/controller/v1alpha2/llmisvc/router.go:354-370 @v0.20.0).
            # That URL carries no port, but the workload Service listens on 8000 only (llmisvc/workload.go:139-148
            # @v0.20.0), so the port is added: the URL reported is one that answers.
            addresses = [str(a.get("url")) for a in status.get("addresses") or [] if isinstance(a, Mapping) and a.get("url")]
            url = _with_port(addresses[0], KSERVE_WORKLOAD_PORT) if addresses else None
        suffix = "/openai/v1" if kind == "InferenceService" else "/v1"
        ready = _true(status.get("conditions"), "Ready")
        return ready, (f"{str(url).rstrip('/')}{suffix}" if url else None), "Ready" if ready else "not Ready yet"
    ready = _true(status.get("conditions"), "InferenceReady")
    name, namespace = meta.get("name"), meta.get("namespace")
    return ready, f"http://{name}.{namespace}.svc:{SERVICE_PORTS['kaito']}/v1", "InferenceReady" if ready else "inference not ready yet"


def render_serving(job: FineTuneJob, options: RenderOptions | None = None) -> Serving:
    """The serving objects for ``job.spec.serve`` (see the module docstring for how decide uses it)."""
    serve = job.spec.serve
    if serve is None:
        raise ValueError("spec.serve is not set: nothing to serve")
    options = options or RenderOptions()
    namespace = job.metadata.namespace or options.default_namespace
    served = serve.served_model_name or job.name
    source = _source(job, namespace)
    notes: list[str] = []
    url: str | None = None
    prepare: list[dict[str, Any]] = []
    if serve.engine == "vllm":
        objects, url = render_vllm(job, namespace, served, source)
    elif serve.engine == "kserve":
        objects = render_kserve(job, namespace, served, source)
    else:
        served = kaito_adapter_name(served)
        objects = render_kaito(job, namespace, served, source)
        pvc, copy_job = render_adapter_copy(job, namespace, options)
        # KAITO's webhook refuses a Workspace whose inference.config ConfigMap is missing
        # (api/v1beta1/inference_config_validation.go:64-70 @v0.12.0): it is written first.
        prepare = [pvc, render_kaito_config(job, namespace), copy_job]
        notes.append(f"the adapter ({', '.join(ADAPTER_FILES)} from {source.adapter_uri}) is copied to PersistentVolumeClaim "
                     f"{prepare[0]['metadata']['name']} before the Workspace is created")
    return Serving(serve.engine, objects, served, url, source.model_uri, source.adapter_uri, notes, prepare)


def manifests(job: FineTuneJob, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """What ``kubetune render`` prints for one job: the training objects, then (with spec.serve)
    the serving objects.  Applied together (GitOps without the operator), the serving pods start
    before the model exists and restart until training has written it; with the operator, apply
    the FineTuneJob instead and it creates them once the job has Succeeded."""
    from .pipeline import render  # noqa: PLC0415 - pipeline is the heavier module; serving stays importable alone

    objects = list(render(job, options).objects)
    if job.spec.serve is not None:
        serving = render_serving(job, options)
        objects += serving.prepare + serving.objects
    return objects
