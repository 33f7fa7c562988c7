"""Engine ``vllm``: a Deployment running vLLM's OpenAI server and a ClusterIP Service on port 8000.

The Deployment has readiness and startup probes on ``/health``, mounts the job's PVCs read-only and
runs with the restricted security context.  The URL clients use is
``http://<service>.<namespace>.svc:8000/v1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from kubetune.api import FineTuneJob, OutputsVolumeSpec, VolumeSpec
from kubetune.api import contract
from kubetune.api.contract import LABEL_JOB, SHM_DIR
from kubetune.cluster.serving.vllm import VllmEngine

from ..intermediate import azure_workload_identity_labels
from ..podspec import (
    HF_HOME_SUBDIR,
    S3_CA_FILE,
    S3_CA_VOLUME,
    container_security_context,
    job_object_store_env,
    placement,
    pod_security_context,
)
from . import kserve
from .base import (
    CHAT_TEMPLATE_FILE,
    COMPONENT,
    MODELS_MOUNT,
    OUTPUTS_MOUNT,
    Serving,
    EngineRenderer,
    Source,
    bnb_base,
    child_name,
    labels,
    max_lora_rank,
    metadata,
    resources,
)

if TYPE_CHECKING:
    from ..types import RenderOptions

RESULTS_MOUNT: Final = "/results"
RESULTS_DIR: Final = f"{RESULTS_MOUNT}/job"
"""spec.serve.modelSource bucket: the emptyDir mounted at RESULTS_MOUNT; the fetch-results init container copies
the job's results into RESULTS_DIR, a folder of it (download_results keeps its ETag record beside that folder)."""
VLLM_IMAGE: Final = "vllm/vllm-openai:v0.11.0"
"""Default serving image (engine vllm): vLLM's OpenAI-compatible server."""
VLLM_PORT: Final = 8000
CACHE_MOUNT: Final = "/cache"
VLLM_USER: Final = "kubetune"

VLLM_WRITABLE_ENV: Final = (
    # The root filesystem is read-only and the pod runs as uid 1000, which vllm/vllm-openai's image
    # does not define (its Dockerfile adds no user; read at a stored commit of docker/Dockerfile,
    # not at the v0.11.0 tag).  Everything vLLM, torch, Triton and the Hub write goes under the
    # "cache" emptyDir, in folders the init container makes:
    # - TMPDIR: vLLM calls tempfile.gettempdir() at import (model_executor/model_loader/weight_utils.py:63,
    #   its file locks, get_lock at :87-98) and for its IPC path (envs.py:457 VLLM_RPC_BASE_PATH);
    #   gettempdir() raises when no candidate folder is writable, so TMPDIR must exist;
    # - HOME, XDG_CACHE_HOME, VLLM_CACHE_ROOT, VLLM_CONFIG_ROOT (envs.py:422-437, default
    #   ~/.cache/vllm, ~/.config/vllm);
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


def vllm_args(job: FineTuneJob, source: Source, served: str) -> list[str]:
    serve = job.spec.serve
    assert serve is not None
    args = ["--model", source.model_path, "--host", "0.0.0.0", "--port", str(VLLM_PORT)]  # noqa: S104 - the pod's port, behind the Service
    if source.hub_base and job.spec.model.revision:
        # The revision the trainer downloaded (and, offline, the only one in the cache): vllm/engine/arg_utils.py:538.
        args += ["--revision", job.spec.model.revision]
    if source.adapter_path:
        # The base keeps its own name; the adapter is served under the job's served name.
        args += [
            "--served-model-name",
            f"{served}-base",
            "--enable-lora",
            "--lora-modules",
            f"{served}={source.adapter_path}",
        ]
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
        if bnb_base(job):
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


def _claim(name: str, volume: VolumeSpec | OutputsVolumeSpec) -> dict[str, Any]:
    # An outputs spec without claimName is refused with spec.serve unless modelSource is bucket
    # (rule serve-without-claim-from-bucket), which never mounts the outputs.
    return {"name": name, "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}


def _mount(name: str, path: str, volume: VolumeSpec | OutputsVolumeSpec) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": True}
    if volume.sub_path:
        mount["subPath"] = volume.sub_path
    return mount


def bucket_source(job: FineTuneJob, namespace: str, source: Source) -> Source:
    """``source`` read from the fetch-results emptyDir instead of the outputs volume: the job's folder
    <outputs>/<namespace>/<job>/ and its bucket prefix <outputs.uri><namespace>/<job>/ hold the same results."""
    uri = job.spec.storage.outputs.uri
    assert uri is not None
    folder, prefix = f"{OUTPUTS_MOUNT}/{namespace}/{job.name}", f"{uri}{namespace}/{job.name}/"

    def moved(path: str | None) -> str | None:
        return None if path is None else RESULTS_DIR + path[len(folder) :] if path.startswith(folder) else path

    def uri_of(path: str | None, old: str | None) -> str | None:
        return old if path is None or not path.startswith(RESULTS_DIR) else prefix + path[len(RESULTS_DIR) + 1 :]

    model_path, adapter_path = moved(source.model_path), moved(source.adapter_path)
    assert model_path is not None
    return Source(
        model_path,
        uri_of(model_path, source.model_uri) or source.model_uri,
        adapter_path,
        uri_of(adapter_path, source.adapter_uri),
        source.hub_base,
    )


def fetch_results_init(
    job: FineTuneJob, namespace: str, trainer_image: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container (trainer image) that copies the job's marker-listed results from the bucket into
    the "results" emptyDir (``python -m kubetune.trainer.fetchresults``), and the volumes it needs besides it.
    The URI and credentials go in the environment (secretKeyRef), never on a command line."""
    uri = job.spec.storage.outputs.uri
    assert uri is not None
    env = [
        {"name": contract.ENV_RESULTS_URI, "value": f"{uri}{namespace}/{job.name}/"},
        {"name": contract.ENV_RESULTS_DIR, "value": RESULTS_DIR},
        {"name": "HOME", "value": RESULTS_MOUNT},
        *job_object_store_env(job),
    ]
    mounts: list[dict[str, Any]] = [{"name": "results", "mountPath": RESULTS_MOUNT}]
    volumes: list[dict[str, Any]] = []
    store = job.spec.storage.object_store
    if store is not None and store.ca_bundle is not None:
        volumes.append(
            {
                "name": S3_CA_VOLUME,
                "configMap": {
                    "name": store.ca_bundle.name,
                    "items": [{"key": store.ca_bundle.key, "path": S3_CA_FILE}],
                },
            }
        )
        mounts.append({"name": S3_CA_VOLUME, "mountPath": contract.S3_CA_BUNDLE_DIR, "readOnly": True})
    init: dict[str, Any] = {
        "name": "fetch-results",
        "image": job.spec.image or trainer_image,
        "command": ["python", "-m", "kubetune.trainer.fetchresults"],
        "env": env,
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": mounts,
    }
    return init, volumes


def render_vllm(
    job: FineTuneJob, namespace: str, served: str, source: Source, trainer_image: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    serve = job.spec.serve
    assert serve is not None
    name = child_name(job.name)
    storage = job.spec.storage
    fetch: dict[str, Any] | None = None
    if kserve.reads_bucket(job):
        assert trainer_image is not None
        fetch, volumes = fetch_results_init(job, namespace, trainer_image)
        volumes.append({"name": "results", "emptyDir": {}})
        mounts = [{"name": "results", "mountPath": RESULTS_MOUNT, "readOnly": True}]
    else:
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
    volumes += [
        {"name": "cache", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
    ]
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
        "resources": resources(job),
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
        if fetch:
            fetch["imagePullPolicy"] = job.spec.image_pull_policy
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "initContainers": [init, *([fetch] if fetch else [])],
        "containers": [container],
        "volumes": volumes,
        **placement(job),
    }
    selector = {LABEL_JOB: job.name, "app.kubernetes.io/component": COMPONENT}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(job, name, namespace),
        "spec": {
            "replicas": serve.replicas,
            "selector": {"matchLabels": selector},
            # One GPU set per replica: never run the old and the new pod side by side on a full node.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # fetch-results reads an az:// bucket with the job's credentials: Workload Identity's label too.
            "template": {
                "metadata": {"labels": {**labels(job), **(azure_workload_identity_labels(job) if fetch else {})}},
                "spec": pod,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service], f"http://{name}.{namespace}.svc:{VLLM_PORT}/v1"


class VllmRenderer:
    name: ClassVar[str] = VllmEngine.name
    engine: ClassVar[str] = VllmEngine.engine

    def render(self, job: FineTuneJob, namespace: str, served: str, source: Source, options: RenderOptions) -> Serving:
        if kserve.reads_bucket(job):
            if problems := self.check(job):
                raise ValueError("; ".join(f"{f}: {m}" for f, m in problems))
            source = bucket_source(job, namespace, source)
        objects, url = render_vllm(job, namespace, served, source, options.image)
        return Serving(self.engine, objects, served, url, source.model_uri, source.adapter_uri)

    def check(self, job: FineTuneJob) -> list[tuple[str, str]]:
        if kserve.reads_bucket(job) and job.spec.storage.outputs.uri is None:
            return [
                (
                    kserve.MODEL_SOURCE_FIELD,
                    "bucket serves the copy uploaded to spec.storage.outputs.uri, which is unset: "
                    "set outputs.uri or modelSource: volume",
                )
            ]
        return []


_CONFORMS: EngineRenderer = VllmRenderer()
