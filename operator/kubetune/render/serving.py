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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kubetune.api import FineTuneJob, VolumeSpec
from kubetune.api.contract import API_VERSION, KIND, LABEL_JOB, LABEL_MANAGED_BY, MERGED_SUBDIR, SHM_DIR

from .podspec import HF_HOME_SUBDIR, container_security_context, pod_security_context
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
"""Values vLLM accepts for --max-lora-rank."""


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
        assert models is not None, "spec.model.path implies spec.storage.models (API rule)"
        base_path = f"{MODELS_MOUNT}/{spec.model.path}"
        base_uri = f"pvc://{models.claim_name}/{_in_volume(models, spec.model.path)}"
        return _Source(base_path, base_uri, adapter_path, adapter_uri, False)
    assert spec.model.name is not None
    return _Source(spec.model.name, f"hf://{spec.model.name}", adapter_path, adapter_uri, True)


def _labels(job: FineTuneJob) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kubetune", LABEL_MANAGED_BY: "kubetune", LABEL_JOB: job.name, "app.kubernetes.io/component": COMPONENT}


def _metadata(job: FineTuneJob, name: str, namespace: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(job)}
    if job.metadata.uid:
        meta["ownerReferences"] = [
            {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.metadata.uid, "controller": True, "blockOwnerDeletion": True}
        ]
    return meta


def _gpu_resources(job: FineTuneJob) -> dict[str, Any]:
    serve = job.spec.serve
    assert serve is not None
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if serve.gpus:
        requests[job.spec.resources.gpu_resource_name] = limits[job.spec.resources.gpu_resource_name] = str(serve.gpus)
    if serve.cpu:
        requests["cpu"] = serve.cpu
    if serve.memory:
        requests["memory"] = limits["memory"] = serve.memory
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _max_lora_rank(job: FineTuneJob) -> int:
    rank = job.spec.lora.rank if job.spec.lora else 8
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])


def vllm_args(job: FineTuneJob, source: _Source, served: str) -> list[str]:
    serve = job.spec.serve
    assert serve is not None
    args = ["--model", source.model_path, "--host", "0.0.0.0", "--port", str(VLLM_PORT)]  # noqa: S104 - the pod's port, behind the Service
    if source.adapter_path:
        # The base keeps its own name; the adapter is served under the job's served name.
        args += ["--served-model-name", f"{served}-base", "--enable-lora", "--lora-modules", f"{served}={source.adapter_path}"]
        args += ["--max-lora-rank", str(_max_lora_rank(job))]
        if job.spec.method == "qlora" and job.spec.quantization is not None and job.spec.quantization.bits == 4:
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
    cache = f"{CACHE_MOUNT}/huggingface"
    env: list[dict[str, Any]] = []
    if storage.models is not None:
        volumes.append(_claim("models", storage.models))
        mounts.append(_mount("models", MODELS_MOUNT, storage.models))
        if source.hub_base:
            cache = f"{MODELS_MOUNT}/{HF_HOME_SUBDIR}"  # the trainer's download, read-only: nothing is fetched again
            env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if source.hub_base and storage.models is None and job.spec.hf_token_secret_ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": job.spec.hf_token_secret_ref.selector()}})
    env += [
        {"name": "HF_HOME", "value": cache},
        # The root filesystem is read-only: vLLM's, Triton's and torch's caches go to an emptyDir.
        {"name": "HOME", "value": CACHE_MOUNT},
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_MOUNT}/vllm"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_MOUNT}/triton"},
        {"name": "TMPDIR", "value": f"{CACHE_MOUNT}/tmp"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    volumes += [{"name": "cache", "emptyDir": {}}, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    mounts += [{"name": "cache", "mountPath": CACHE_MOUNT}, {"name": "dshm", "mountPath": SHM_DIR}]
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container: dict[str, Any] = {
        "name": "vllm",
        "image": serve.image or VLLM_IMAGE,
        "args": vllm_args(job, source, served),
        "env": env,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        # Loading weights takes minutes: the startup probe allows 30 min before liveness counts.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 4},
        "resources": _gpu_resources(job),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if job.spec.image_pull_policy:
        container["imagePullPolicy"] = job.spec.image_pull_policy
    pod: dict[str, Any] = {"securityContext": pod_security_context(), "automountServiceAccountToken": False, "containers": [container], "volumes": volumes}
    scheduling = job.spec.scheduling
    if scheduling is not None:
        if scheduling.node_selector:
            pod["nodeSelector"] = dict(scheduling.node_selector)
        if scheduling.tolerations:
            pod["tolerations"] = [t.to_api() for t in scheduling.tolerations]
        if scheduling.affinity:
            pod["affinity"] = scheduling.affinity.to_api()
        if scheduling.priority_class_name:
            pod["priorityClassName"] = scheduling.priority_class_name
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


def render_kserve(job: FineTuneJob, namespace: str, served: str, source: _Source) -> list[dict[str, Any]]:
    serve = job.spec.serve
    assert serve is not None
    kind = serve.kserve.kind if serve.kserve and serve.kserve.kind else ("LLMInferenceService" if source.adapter_uri else "InferenceService")
    resources = _gpu_resources(job)
    if kind == "InferenceService":
        if source.adapter_uri:
            raise ValueError("spec.serve.kserve.kind InferenceService serves one model: merge the adapter (spec.export.enabled) or use LLMInferenceService")
        model: dict[str, Any] = {
            "modelFormat": {"name": "huggingface"},
            "storageUri": source.model_uri,
            "args": [f"--model_name={served}"] + ([f"--max_model_len={serve.max_model_len}"] if serve.max_model_len else []),
        }
        if resources:
            model["resources"] = resources
        isvc = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": _metadata(job, job.name, namespace),
            "spec": {"predictor": {"minReplicas": serve.replicas, "maxReplicas": serve.replicas, "model": model}},
        }
        return [isvc]
    llm_model: dict[str, Any] = {"uri": source.model_uri, "name": f"{served}-base" if source.adapter_uri else served}
    if source.adapter_uri:
        llm_model["lora"] = {"adapters": [{"name": served, "uri": source.adapter_uri}], "maxRank": _max_lora_rank(job)}
    main: dict[str, Any] = {"name": "main"}
    if resources:
        main["resources"] = resources
    llmisvc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": _metadata(job, job.name, namespace),
        "spec": {"model": llm_model, "replicas": serve.replicas, "template": {"containers": [main]}},
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
    assert serve is not None and serve.kaito is not None
    outputs = job.spec.storage.outputs
    claim = child_name(job.name, ADAPTER_SUFFIX)
    pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": serve.kaito.adapter_volume_size}}}
    if serve.kaito.adapter_storage_class_name:
        pvc_spec["storageClassName"] = serve.kaito.adapter_storage_class_name
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
    if job.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": p.name} for p in job.spec.image_pull_secrets]
    copy_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job, child_name(job.name, ADAPTER_COPY_SUFFIX), namespace),
        "spec": {"backoffLimit": 3, "template": {"metadata": {"labels": _labels(job)}, "spec": pod}},
    }
    return [pvc, copy_job]


def render_kaito(job: FineTuneJob, namespace: str, served: str, source: _Source) -> list[dict[str, Any]]:
    serve = job.spec.serve
    assert serve is not None and serve.kaito is not None
    resource: dict[str, Any] = {"labelSelector": {"matchLabels": dict(serve.kaito.node_labels)}}
    if serve.kaito.instance_type:
        resource["instanceType"] = serve.kaito.instance_type
    inference: dict[str, Any] = {"preset": {"name": serve.kaito.preset}}
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


def observed_state(engine: str, obj: Mapping[str, Any] | None) -> tuple[bool, str | None, str]:
    """What a watched serving object says: (ready, URL it reports, a short description).

    * Deployment (vllm): ready when at least one replica of its current generation is ready
      (``status.observedGeneration``, ``readyReplicas``; apps/v1 DeploymentStatus);
    * InferenceService / LLMInferenceService (kserve): the ``Ready`` condition and
      ``status.url`` (KServe's knative-style status); the OpenAI routes are under
      ``/openai/v1`` (Hugging Face runtime) or ``/v1`` (LLMInferenceService);
    * Workspace (kaito): the ``InferenceReady`` condition (pkg/utils/consts in KAITO);
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
        objects = render_kaito(job, namespace, served, source)
        prepare = render_adapter_copy(job, namespace, options)
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
