"""The contract between the renderer (which writes pods) and the trainer (which runs in them).

Both sides import these names, so a path or variable renamed on one side cannot
silently break the other.  The trainer imports only ``kubetune.api``; this is
why the contract lives here and not in ``render``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .progressline import PROGRESS_PREFIX as PROGRESS_PREFIX
from .progressline import STAGE_PREFIX as STAGE_PREFIX

# Mount points inside the training containers.
CONFIG_DIR: Final = "/etc/kubetune"
"""The job's ConfigMap, read-only."""
DATASETS_DIR: Final = "/data/datasets"
MODELS_DIR: Final = "/data/models"
OUTPUTS_DIR: Final = "/data/outputs"
SHM_DIR: Final = "/dev/shm"
"""In-memory emptyDir (spec.resources.sharedMemorySize) for dataloader workers and NCCL."""
SCRATCH_DIR: Final = "/tmp/kubetune"
"""Writable scratch (emptyDir): the root filesystem is read-only."""

# Files in CONFIG_DIR (keys of the ConfigMap).
SPEC_FILE: Final = "finetunejob.json"
"""The validated FineTuneJob (apiVersion, kind, name, namespace, spec) as JSON."""
TRAIN_ARGS_FILE: Final = "train.yaml"
"""LLaMA-Factory training arguments; paths in it use the mount points above."""
EXPORT_ARGS_FILE: Final = "export.yaml"
"""LLaMA-Factory export (merge) arguments, when export is enabled."""
DEEPSPEED_FILE: Final = "ds_config.json"
ACCELERATE_FILE: Final = "accelerate.yaml"
DATASET_INFO_FILE: Final = "dataset_info.json"
"""LLaMA-Factory dataset registry; the trainer copies it next to the converted data."""
EVAL_ARGS_FILE: Final = "evaluate.json"
"""spec.evaluation: the LLaMA-Factory runs of the evaluate stage, ``{"runs": [{"model": "trained"|"base",
"mode": "eval"|"predict", "args": {...}}], "perplexity": bool}``."""

# Under the job's output folder.
RUN_RECORD_FILE: Final = "kubetune-run.json"
EVAL_RESULTS_FILE: Final = "kubetune-eval.json"
"""The evaluate stage's results (kubetune.api.EvaluationStatus as JSON), beside the outputs."""
EVAL_SUBDIR: Final = "eval"
"""LLaMA-Factory's own eval/predict outputs (eval_results.json, generated_predictions.jsonl)."""
MERGED_SUBDIR: Final = "merged"
TENSORBOARD_SUBDIR: Final = "runs"
"""TensorBoard event files (spec.tracking.tensorboard)."""
DATA_SUBDIR: Final = "data"
"""Converted datasets, written once per job by rank 0."""

# Environment the renderer sets on every training container.
ENV_CONFIG_DIR: Final = "KUBETUNE_CONFIG_DIR"
ENV_JOB: Final = "KUBETUNE_JOB"
ENV_NAMESPACE: Final = "KUBETUNE_NAMESPACE"
ENV_OUTPUT_DIR: Final = "KUBETUNE_OUTPUT_DIR"
ENV_DATASETS_DIR: Final = "KUBETUNE_DATASETS_DIR"
ENV_MODELS_DIR: Final = "KUBETUNE_MODELS_DIR"
ENV_NPROC_PER_NODE: Final = "NPROC_PER_NODE"
ENV_HF_TOKEN: Final = "HF_TOKEN"
ENV_METRICS_PORT: Final = "KUBETUNE_METRICS_PORT"
(
    "Global rank 0 serves Prometheus metrics on this port (kubetune.trainer.metrics); "
    "the container port is named `metrics`."
)
METRICS_PORT: Final = 9464
ENV_S3_ENDPOINT: Final = "KUBETUNE_S3_ENDPOINT"
ENV_S3_REGION: Final = "KUBETUNE_S3_REGION"
ENV_S3_ACCESS_KEY_ID: Final = "KUBETUNE_S3_ACCESS_KEY_ID"
ENV_S3_SECRET_ACCESS_KEY: Final = "KUBETUNE_S3_SECRET_ACCESS_KEY"
ENV_S3_CA_BUNDLE: Final = "KUBETUNE_S3_CA_BUNDLE"
"""spec.storage.objectStore as the trainer reads it (kubetune.trainer.objectstore).  kubetune's
own names, not AWS_*: a user's AWS_* variables (e.g. MLflow's artifact store) stay theirs.  The
two keys arrive only as valueFrom.secretKeyRef; unset, boto3's default chain applies (IRSA, and
AWS_* in the environment for `kubetune run --local`)."""
ENV_AZURE_CONNECTION_STRING: Final = "KUBETUNE_AZURE_STORAGE_CONNECTION_STRING"
ENV_AZURE_ACCOUNT_KEY: Final = "KUBETUNE_AZURE_STORAGE_ACCOUNT_KEY"
"""az://: the connection string or the account key, only as valueFrom.secretKeyRef.  The account's Blob
endpoint is ENV_S3_ENDPOINT (spec.storage.objectStore.endpoint) and its CA ENV_S3_CA_BUNDLE.  Unset:
Azure Workload Identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE from AKS's
webhook), or AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT_KEY in the shell of
`kubetune run --local` (the names adlfs reads)."""
S3_CA_BUNDLE_DIR: Final = "/etc/kubetune/s3-ca"
ENV_RESULTS_URI: Final = "KUBETUNE_RESULTS_URI"
ENV_RESULTS_DIR: Final = "KUBETUNE_RESULTS_DIR"
"""``python -m kubetune.trainer.fetchresults`` (spec.serve.modelSource bucket, engine vllm): the job's
results prefix <outputs.uri><namespace>/<job>/ and the folder its marker-listed files are copied into."""
ENV_SOURCE_RESULTS_URI: Final = "KUBETUNE_SOURCE_RESULTS_URI"
"""spec.model.fromJob read from a bucket: the source job's results prefix <outputs.uri><namespace>/<job>/;
the trainer's model stage downloads the files its completion marker lists into the models folder
(kubetune.render.chain.source_folder) before training."""
ENV_STOP_GRACE: Final = "KUBETUNE_STOP_GRACE_SECONDS"
"""Seconds the trainer gives its training processes, after a SIGTERM, to save a checkpoint
and stop before it kills them: the pod's grace period less a margin for the run record."""
STOP_GRACE_MARGIN_SECONDS: Final = 15

# Trainer exit codes; the renderer maps them onto the Kubeflow restart policy
# (ExitCode: 1-127 permanent, 128-255 retryable, per the training-operator).
EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2
"""Bad configuration: permanent, do not restart."""
EXIT_DATA: Final = 3
"""Bad or missing data: permanent."""
EXIT_TRAINING: Final = 4
"""Training crashed for a reason a restart will not fix (e.g. CUDA OOM)."""
EXIT_RETRYABLE: Final = 130
"""Rendezvous/NCCL failure, preemption, lost node: restart and resume from the newest checkpoint."""

# What the default trainer image (images/trainer) can run.  The renderer's
# validation refuses settings that need anything else unless spec.image names
# another image; the trainer checks the running image itself before any stage.
IMAGE_PACKAGES: Final = frozenset(
    {"llamafactory", "deepspeed", "bitsandbytes", "liger-kernel", "tensorboard", "mlflow-skinny", "wandb"}
)
"""Optional packages of the default trainer image (each pinned in images/trainer/pins.txt)."""
ARG_PACKAGES: Final[dict[str, tuple[str, str]]] = {
    "use_unsloth": ("unsloth", "unsloth"),
    "fp8": ("torchao", "torchao"),
    "use_galore": ("galore_torch", "galore-torch"),
    "use_apollo": ("apollo_torch", "apollo-torch"),
    "use_badam": ("badam", "badam"),
    "use_adam_mini": ("adam_mini", "adam-mini"),
    "use_swanlab": ("swanlab", "swanlab"),
    "use_mod": ("MoD", "mixture-of-depth"),
    "use_kt": ("ktransformers", "ktransformers"),
    "use_ray": ("ray", "ray"),
    "enable_liger_kernel": ("liger_kernel", "liger-kernel"),
}
"""LLaMA-Factory arguments that need an optional package when true: argument -> (module, pip package)."""
ATTENTION_PACKAGES: Final[dict[str, tuple[str, str]]] = {
    "fa2": ("flash_attn", "flash-attn"),
    "fa3": ("flash_attn_interface", "flash-attn-3"),
}
"""spec.training.attention values that need a package: value -> (module, pip package)."""

# Labels and annotations.
GROUP: Final = "kubetune.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FineTuneJob"
PLURAL: Final = "finetunejobs"
LABEL_JOB: Final = "kubetune.io/finetunejob"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"


@dataclass(frozen=True)
class Layout:
    """Where the job's folders are, inside a pod (the defaults) or on a laptop.

    The renderer writes these paths into train.yaml and the environment; the
    trainer reads them back from the environment.  ``kubetune run --local``
    passes a Layout of local folders so the very same renderer output runs on
    the user's machine.
    """

    config_dir: str = CONFIG_DIR
    datasets_dir: str = DATASETS_DIR
    models_dir: str = MODELS_DIR
    outputs_dir: str = OUTPUTS_DIR
    scratch_dir: str = SCRATCH_DIR

    def job_output_dir(self, namespace: str, name: str) -> str:
        """The job's own folder on the outputs volume: <outputs>/<namespace>/<name>."""
        return f"{self.outputs_dir}/{namespace}/{name}"


# Progress transport: the trainer (rank 0 only) prints `kubetune.progress {json}` and
# `kubetune.stage {json}` lines on stdout; the operator reads them from the rank-0 pod's log
# (pods/log) or receives them pushed (see the push transport below).  The format, its writers and
# its reader live in kubetune.api.progressline; PROGRESS_PREFIX and STAGE_PREFIX are re-exported
# here (imported at the top).

# Push transport (optional; KEP-2779 style): when the operator renders pods with a progress URL,
# rank 0 also POSTs its protocol lines there, authenticated by a projected ServiceAccount token
# whose only audience is PROGRESS_AUDIENCE (the API server refuses such a token). The operator
# verifies it with a TokenReview and checks the token's bound pod belongs to the job it reports
# for. Without a URL (kubetune render, run --local) nothing is mounted and the log stays the
# only transport.
ENV_PROGRESS_URL: Final = "KUBETUNE_PROGRESS_URL"
ENV_PROGRESS_TOKEN_FILE: Final = "KUBETUNE_PROGRESS_TOKEN_FILE"
PROGRESS_AUDIENCE: Final = "kubetune"
PROGRESS_TOKEN_DIR: Final = "/var/run/secrets/kubetune"
PROGRESS_TOKEN_FILE: Final = f"{PROGRESS_TOKEN_DIR}/token"
PROGRESS_TOKEN_EXPIRATION_S: Final = 600
"""The shortest lifetime the API server allows; the kubelet rotates the file at 80% of it."""
PROGRESS_PATH: Final = "/v1/progress"
"""Path of the operator's intake; body: {"namespace", "name", "lines": [protocol lines]}."""


# LLaMA-Factory's dataset_info.json defaults (src/llamafactory/data/parser.py:27-64 @v0.9.5, class
# DatasetAttr): the renderer writes them out in full (render/configs.py says why) and the trainer's
# record check reads records with the same mapping (trainer/datachecks.py).
LF_ALPACA_COLUMNS: Final = {"prompt": "instruction", "query": "input", "response": "output"}
LF_SHAREGPT_COLUMNS: Final = {"messages": "conversations"}
LF_SHAREGPT_TAGS: Final = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
