"""Phases "scheduling" and "pod spec": what every training pod of the job shares.

Security: pods get the restricted Pod Security profile and no service account
token the API server accepts (``automountServiceAccountToken: false``).  Progress
goes to stdout (contract.PROGRESS_PREFIX), which the operator can read from the
pod log; when the operator names a progress intake (``RenderOptions.progress_url``)
the pods also get a projected token whose only audience is ``kubetune``, short-lived
and bound to the pod, that rank 0 presents to the operator (see
``kubetune.controller.intake``).  The API server refuses that token: its audience
is not one of the server's.
"""

from __future__ import annotations

from typing import Any, Final

from kubetune.api import FineTuneJob, OutputsVolumeSpec, SecretKeyRef, VolumeSpec
from kubetune.api.storage import DEFAULT_OUTPUTS_SIZE_LIMIT
from kubetune.api import contract
from kubetune.api.objectstore import AZURE_CONNECTION_STRING_KEY, GCS_ENDPOINT
from kubetune.api.spec import uses_object_store
from kubetune.api.contract import (
    ENV_CONFIG_DIR,
    ENV_DATASETS_DIR,
    ENV_HF_TOKEN,
    ENV_JOB,
    ENV_MODELS_DIR,
    ENV_NAMESPACE,
    ENV_NPROC_PER_NODE,
    ENV_OUTPUT_DIR,
    ENV_PROGRESS_TOKEN_FILE,
    ENV_PROGRESS_URL,
    PROGRESS_AUDIENCE,
    PROGRESS_TOKEN_DIR,
    PROGRESS_TOKEN_EXPIRATION_S,
    PROGRESS_TOKEN_FILE,
    ENV_STOP_GRACE,
    STOP_GRACE_MARGIN_SECONDS,
)

from .intermediate import Plan

RUN_AS_USER: Final = 1000
HF_HOME_SUBDIR: Final = "huggingface"
"""HF_HOME lives on the models volume, so a model is downloaded once per claim, not per run."""

TRAINER_COMMAND: Final = ["python", "-m", "kubetune.trainer"]


def placement(job: FineTuneJob) -> dict[str, Any]:
    """PodSpec fields every pod of the job takes (training and serving alike): spec.scheduling's
    nodeSelector, tolerations, affinity and priorityClassName, spec.imagePullSecrets, spec.serviceAccountName."""
    spec = job.spec
    pod: dict[str, Any] = {}
    s = spec.scheduling
    if s is not None:
        if s.node_selector:
            pod["nodeSelector"] = dict(sorted(s.node_selector.items()))
        if s.tolerations:
            pod["tolerations"] = [t.to_api() for t in s.tolerations]
        if s.affinity:
            pod["affinity"] = s.affinity.to_api()
        if s.priority_class_name:
            pod["priorityClassName"] = s.priority_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": p.name} for p in spec.image_pull_secrets]
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return pod


def schedule(plan: Plan) -> None:
    """Phase 3: nodeSelector, tolerations, affinity, priority, pull secrets, service account."""
    spec = plan.job.spec
    pod = placement(plan.job)
    pod["automountServiceAccountToken"] = False
    # Time for the trainer to finish the step and write a checkpoint after a SIGTERM.
    pod["terminationGracePeriodSeconds"] = spec.run_policy.termination_grace_period_seconds
    plan.pod_fields = pod


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def environment(plan: Plan) -> list[dict[str, Any]]:
    layout = plan.options.layout
    spec = plan.job.spec
    env = [
        _env(ENV_CONFIG_DIR, layout.config_dir),
        _env(ENV_JOB, plan.name),
        _env(ENV_NAMESPACE, plan.namespace),
        _env(ENV_OUTPUT_DIR, plan.output_dir),
        _env(ENV_DATASETS_DIR, layout.datasets_dir),
        _env(ENV_MODELS_DIR, layout.models_dir),
        _env(ENV_NPROC_PER_NODE, str(plan.procs_per_node)),
        _env(contract.ENV_METRICS_PORT, str(contract.METRICS_PORT)),
        _env(ENV_STOP_GRACE, str(spec.run_policy.termination_grace_period_seconds - STOP_GRACE_MARGIN_SECONDS)),
        _env("HF_HOME", f"{layout.models_dir}/{HF_HOME_SUBDIR}"),
        # The root filesystem is read-only: every cache and temp file goes to scratch.
        _env("HOME", layout.scratch_dir),
        _env("TMPDIR", layout.scratch_dir),
        _env("TRITON_CACHE_DIR", f"{layout.scratch_dir}/triton"),
        # On the job's outputs volume, not the per-pod scratch emptyDir: an op DeepSpeed must
        # JIT-compile (a derived image with a compiler; kubetune's image prebuilds its ops, see
        # kubetune.trainer.opcheck) is compiled once per job, not again after every restart.
        _env("TORCH_EXTENSIONS_DIR", f"{plan.output_dir}/.torch_extensions"),
        _env("MPLCONFIGDIR", f"{layout.scratch_dir}/matplotlib"),
        _env("PYTHONUNBUFFERED", "1"),
    ]
    if plan.options.progress_url:
        env += [_env(ENV_PROGRESS_URL, plan.options.progress_url), _env(ENV_PROGRESS_TOKEN_FILE, PROGRESS_TOKEN_FILE)]
    if spec.hf_token_secret_ref is not None:
        env.append({"name": ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": spec.hf_token_secret_ref.selector()}})
    env.extend(object_store_env(plan))
    source = plan.options.model_source
    if spec.model.from_job is not None and source is not None and source.results_uri is not None:
        # The source's results come from its bucket (kubetune.render.chain), with this job's objectStore.
        env.append(_env(contract.ENV_SOURCE_RESULTS_URI, source.results_uri))
    env.extend(tracking_env(plan))
    for var in spec.env or ():
        env.append(var.to_api())
    return env


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def object_store_env(plan: Plan) -> list[dict[str, Any]]:
    """spec.storage.objectStore for the trainer: endpoint/region/CA path as values, the access key
    only by secretKeyRef (the operator never reads the Secret).  A spec.model.fromJob source read
    from its bucket (kubetune.render.chain) counts as one of the job's URIs: a gs:// source gets
    Cloud Storage's endpoint here like the source's own pods did."""
    source = plan.options.model_source
    read = (
        (source.results_uri,)
        if plan.job.spec.model.from_job is not None and source is not None and source.results_uri is not None
        else ()
    )
    return job_object_store_env(plan.job, also=read)


def job_object_store_env(job: FineTuneJob, *, also: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """:func:`object_store_env` of a job (also the serving pods' fetch-results init container);
    ``also``: URIs the pods read besides the spec's own."""
    store = job.spec.storage.object_store
    if store is None:
        return []
    env: list[dict[str, Any]] = []
    # gs://: Cloud Storage's XML API, which takes S3 requests signed with an HMAC key
    # (https://cloud.google.com/storage/docs/interoperability); region "auto" for the V4 signature
    # unless the spec names one.  An explicit endpoint still wins (a test server, a proxy).
    gcs = any(u.startswith("gs://") for u in (*uses_object_store(job.spec), *also))
    endpoint = store.endpoint if store.endpoint is not None else (GCS_ENDPOINT if gcs else None)
    region = store.region if store.region is not None else ("auto" if gcs else None)
    if endpoint is not None:
        env.append(_env(contract.ENV_S3_ENDPOINT, endpoint))
    if region is not None:
        env.append(_env(contract.ENV_S3_REGION, region))
    creds = store.credentials_secret_ref
    azure = any(u.startswith("az://") for u in uses_object_store(job.spec))
    if creds is not None and azure:
        # az://: the connection string (it names the account), or the account key with the endpoint's account.
        if creds.account_key_key is not None:
            env.append(
                _secret_env(contract.ENV_AZURE_ACCOUNT_KEY, SecretKeyRef(name=creds.name, key=creds.account_key_key))
            )
        else:
            env.append(
                _secret_env(
                    contract.ENV_AZURE_CONNECTION_STRING,
                    SecretKeyRef(name=creds.name, key=creds.connection_string_key or AZURE_CONNECTION_STRING_KEY),
                )
            )
    elif creds is not None:
        env.append(
            _secret_env(contract.ENV_S3_ACCESS_KEY_ID, SecretKeyRef(name=creds.name, key=creds.access_key_id_key))
        )
        env.append(
            _secret_env(
                contract.ENV_S3_SECRET_ACCESS_KEY, SecretKeyRef(name=creds.name, key=creds.secret_access_key_key)
            )
        )
    if store.ca_bundle is not None:
        env.append(_env(contract.ENV_S3_CA_BUNDLE, f"{contract.S3_CA_BUNDLE_DIR}/{S3_CA_FILE}"))
    return env


S3_CA_FILE: Final = "ca.pem"
S3_CA_VOLUME: Final = "kubetune-s3-ca"


def tracking_env(plan: Plan) -> list[dict[str, Any]]:
    """spec.tracking as the environment transformers' MLflow and W&B callbacks read; secrets by reference."""
    tracking = plan.job.spec.tracking
    env: list[dict[str, Any]] = []
    if tracking.mlflow is not None:
        m = tracking.mlflow
        env.append(_env("MLFLOW_TRACKING_URI", m.tracking_uri))
        env.append(_env("MLFLOW_EXPERIMENT_NAME", m.experiment or plan.namespace))
        if m.username_secret_ref is not None and m.password_secret_ref is not None:
            env.append(_secret_env("MLFLOW_TRACKING_USERNAME", m.username_secret_ref))
            env.append(_secret_env("MLFLOW_TRACKING_PASSWORD", m.password_secret_ref))
        if m.token_secret_ref is not None:
            env.append(_secret_env("MLFLOW_TRACKING_TOKEN", m.token_secret_ref))
    if tracking.wandb is not None:
        w = tracking.wandb
        env.append(_env("WANDB_PROJECT", w.project))
        if w.entity is not None:
            env.append(_env("WANDB_ENTITY", w.entity))
        if w.base_url is not None:
            env.append(_env("WANDB_BASE_URL", w.base_url))
        env.append(_secret_env("WANDB_API_KEY", w.api_key_secret_ref))
        # The root filesystem is read-only; W&B's run files go to scratch.
        env.append(_env("WANDB_DIR", plan.options.layout.scratch_dir))
        if plan.job.metadata.uid:
            # A restarted pod continues the same W&B run instead of starting a new one.
            env.append(_env("WANDB_RUN_ID", plan.job.metadata.uid))
            env.append(_env("WANDB_RESUME", "allow"))
    return env


def user_env_names(plan: Plan) -> list[str]:
    return [v.name for v in plan.job.spec.env or ()]


def _claim(name: str, volume: VolumeSpec | None) -> dict[str, Any]:
    if volume is None:
        return {"name": name, "emptyDir": {}}
    return {"name": name, "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": volume.read_only}}


def outputs_volume(outputs: OutputsVolumeSpec) -> dict[str, Any]:
    """The outputs claim, or without claimName (outputs.uri is then set) an emptyDir of the pod.

    The emptyDir's ``sizeLimit`` is "the total amount of local storage required for this EmptyDir
    volume" (EmptyDirVolumeSource's description in the core/v1 schema kubernetes-validate ships for
    v1.36.0, emptydirvolumesource-v1.json); the kubelet's eviction manager evicts the pod once the
    volume's use exceeds it, with immediateEvictionGracePeriodSeconds = 1 (emptyDirLimitEviction in
    pkg/kubelet/eviction/eviction_manager.go, read through the search tool's copy of kubernetes,
    not at a pinned tag), so no stop checkpoint is written.
    The pod's restart then resumes from the newest checkpoint uploaded to outputs.uri
    (kubetune.trainer.objectstore.restore_checkpoint)."""
    if outputs.claim_name is not None:
        return {
            "name": "outputs",
            "persistentVolumeClaim": {"claimName": outputs.claim_name, "readOnly": outputs.read_only},
        }
    return {"name": "outputs", "emptyDir": {"sizeLimit": outputs.size_limit or DEFAULT_OUTPUTS_SIZE_LIMIT}}


def _mount(
    name: str, path: str, volume: VolumeSpec | OutputsVolumeSpec | None, *, read_only: bool = False
) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": name, "mountPath": path}
    if volume is not None and volume.sub_path:
        mount["subPath"] = volume.sub_path
    if read_only or (volume is not None and volume.read_only):
        mount["readOnly"] = True
    return mount


def volumes(plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts): config, datasets, models, outputs, /dev/shm, scratch."""
    storage = plan.job.spec.storage
    layout = plan.options.layout
    vols = [
        {"name": "config", "configMap": {"name": plan.config_map_name}},
        _claim("datasets", storage.datasets),
        _claim("models", storage.models),
        outputs_volume(storage.outputs),
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": plan.job.spec.resources.shared_memory_size}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts = [
        _mount("config", layout.config_dir, None, read_only=True),
        _mount("datasets", layout.datasets_dir, storage.datasets),
        _mount("models", layout.models_dir, storage.models),
        _mount("outputs", layout.outputs_dir, storage.outputs),
        _mount("dshm", contract.SHM_DIR, None),
        _mount("scratch", layout.scratch_dir, None),
    ]
    store = plan.job.spec.storage.object_store
    if store is not None and store.ca_bundle is not None:
        ca = store.ca_bundle
        vols.append(
            {"name": S3_CA_VOLUME, "configMap": {"name": ca.name, "items": [{"key": ca.key, "path": S3_CA_FILE}]}}
        )
        mounts.append(_mount(S3_CA_VOLUME, contract.S3_CA_BUNDLE_DIR, None, read_only=True))
    if plan.options.progress_url:
        vols.append(progress_token_volume())
        mounts.append(_mount(PROGRESS_TOKEN_VOLUME, PROGRESS_TOKEN_DIR, None, read_only=True))
    return vols, mounts


PROGRESS_TOKEN_VOLUME: Final = "kubetune-progress-token"


def progress_token_volume() -> dict[str, Any]:
    """A projected ServiceAccount token for the operator's intake only.

    Audience ``kubetune``: the API server authenticates only tokens whose audience is
    one of its own (``--api-audiences``), so this token opens nothing there.  The
    kubelet requests it bound to the pod (a TokenReview reports the pod's name and
    uid) and rewrites the file at 80% of ``expirationSeconds`` (600, the minimum).
    """
    token = {"audience": PROGRESS_AUDIENCE, "expirationSeconds": PROGRESS_TOKEN_EXPIRATION_S, "path": "token"}
    return {"name": PROGRESS_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def resources(plan: Plan, *, gpus: bool = True) -> dict[str, Any]:
    """Requests = limits (Guaranteed-style) for what the spec sets; GPUs and extra devices as limits."""
    r = plan.job.spec.resources
    limits: dict[str, Any] = {}
    if r.cpu is not None:
        limits["cpu"] = r.cpu
    if r.memory is not None:
        limits["memory"] = r.memory
    if gpus and r.gpus_per_node > 0:
        limits[r.gpu_resource_name] = r.gpus_per_node
    if gpus:
        for name, count in sorted((r.extra or {}).items()):
            limits[name] = count
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
        requests = {k: v for k, v in limits.items() if k in ("cpu", "memory")}
        if requests:
            out["requests"] = requests
    return out


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root: bool = True) -> dict[str, Any]:
    """The restricted profile, RDMA jobs included: no capability is added back.

    IPC_LOCK used to be added for RDMA (verbs pin the buffers they register), but the training
    containers run as uid 1000, and a capability in ``capabilities.add`` reaches only the bounding
    and inheritable sets of a non-root process, never its permitted/effective sets (the container
    runtime clears them on the switch to a non-root user; kubernetes/kubernetes#56374 shows
    ``CapPrm: 0 / CapEff: 0`` with the capability only in CapBnd/CapInh). So it granted nothing and
    only pushed RDMA jobs out of the restricted Pod Security level. What verbs need is the memlock
    limit (RLIMIT_MEMLOCK), which the node's container runtime sets (docs/networking.md)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_pod_spec(plan: Plan) -> None:
    """Phase 4: environment, volumes, resources and security contexts of the training containers."""
    plan.env = environment(plan)
    plan.volumes, plan.volume_mounts = volumes(plan)
    plan.resources = resources(plan)
    plan.pod_security_context = pod_security_context()
    plan.container_security_context = container_security_context()
