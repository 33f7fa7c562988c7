"""The FineTuneJob status: what the operator reports back.

Follows the Kubernetes API conventions: a coarse ``phase`` for humans and
printer columns, ``conditions`` (type/status/reason/message/observedGeneration/
lastTransitionTime) for machines, and ``observedGeneration`` so a client can
tell whether the status already reflects its last spec change.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel

Phase = Literal["Pending", "Running", "Exporting", "Succeeded", "Failed", "Suspended"]
TERMINAL_PHASES: tuple[Phase, ...] = ("Succeeded", "Failed")


class Condition(ApiModel):
    """A metav1.Condition."""

    model_config = ApiModel.model_config | {"strict": False}

    type: Annotated[str, Field(max_length=316)]
    """Condition type, e.g. Validated, Running, Succeeded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase machine-readable cause, e.g. InvalidSpec, JobRunning, PodsPending."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail: what happened and what to do."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation the condition was computed from."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""


class Progress(ApiModel):
    """Live training progress, published by the trainer from LLaMA-Factory's trainer_log.jsonl."""

    model_config = ApiModel.model_config | {"strict": False}

    step: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps done."""
    total_steps: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps planned (stays the same across resumes)."""
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    """step / totalSteps in percent."""
    epoch: Annotated[float, Field(ge=0)] | None = None
    """Fractional epoch reached."""
    loss: float | None = None
    """Training loss at the last logged step."""
    learning_rate: float | None = None
    """Learning rate at the last logged step."""
    eval_loss: float | None = None
    (
        "Loss on the held-out split (spec.training.valSize) at the last evaluation during training (every "
        "training.evalSteps); a FineTuneSweep's pruner reads it."
    )
    eval_step: Annotated[int, Field(ge=0)] | None = None
    """Optimizer step of that evaluation."""
    eta_seconds: Annotated[int, Field(ge=0)] | None = None
    """Estimated seconds to the end of training."""
    summary: Annotated[str, Field(max_length=64)] = ""
    """Short form for `kubectl get`, e.g. `120/1000 (12%)`."""
    updated_at: str | None = None
    """When the trainer last reported (RFC 3339)."""


def percent_text(percent: float, decimals: int = 0) -> str:
    """``99%`` for 99.6: progress percentages are rounded down everywhere (status, ``kubetune get``
    and ``watch``), so nothing claims 100 % before the last step."""
    scale = 10**decimals
    shown = math.floor(percent * scale + 1e-9) / scale  # 1e-9: 0.29 * 100 is 28.999999999999996
    return f"{shown:.{decimals}f}%"


def percent_of(step: int, total: int) -> float:
    """status.progress.percent: ``step`` of ``total`` in percent with two decimals, rounded down like
    ``percent_text`` (round() made 99999 of 100000 steps 100.0, a full bar one step early)."""
    return min(100.0, math.floor(10000.0 * step / total + 1e-9) / 100) if total > 0 else 0.0


def progress_summary(step: int, total: int) -> str:
    """``120/1000 (12%)``: status.progress.summary (``kubectl get ftj``'s PROGRESS column) and
    ``kubetune watch``'s line."""
    if total <= 0:
        return f"{step}"
    return f"{step}/{total} ({percent_text(100.0 * step / total)})"


class ChildRef(ApiModel):
    """The Kubeflow job running the training."""

    model_config = ApiModel.model_config | {"strict": False}

    api_version: str
    """e.g. kubeflow.org/v1."""
    kind: str
    """PyTorchJob, MPIJob or TrainJob."""
    name: str
    """Name in the FineTuneJob's namespace."""
    selection: Annotated[str, Field(max_length=1024)] | None = None
    """With spec.distributed.backend auto: why the operator chose this kind (what API discovery found)."""


class OutputLocation(ApiModel):
    """Where the results are."""

    model_config = ApiModel.model_config | {"strict": False}

    claim_name: str | None = None
    (
        "PersistentVolumeClaim holding the outputs; unset when spec.storage.outputs has no claimName (the "
        "outputs are then only in uri)."
    )
    path: str
    (
        "Folder inside the claim (or the pod's outputs emptyDir): checkpoints, adapter, "
        "trainer_log.jsonl, kubetune-run.json."
    )
    uri: str | None = None
    (
        "With spec.storage.outputs.uri: the bucket prefix the results are uploaded to, "
        "<outputs.uri><namespace>/<job>/ (complete once its _KUBETUNE_COMPLETE exists)."
    )
    merged_path: str | None = None
    """Folder of the merged model, when export is enabled."""


class AutoTuneSettings(ApiModel):
    """The settings spec.autoTune chose."""

    model_config = ApiModel.model_config | {"strict": False}

    zero_stage: Annotated[int, Field(ge=0, le=3)]
    """distributed.zeroStage used."""
    offload: Literal["none", "optimizer", "all"]
    """distributed.offload used."""
    per_device_batch_size: Annotated[int, Field(ge=1)]
    """training.perDeviceBatchSize used."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1)]
    """training.gradientAccumulationSteps used (the global batch is kept)."""


class AutoTuneStatus(ApiModel):
    """What spec.autoTune chose and why (kubetune.plan.autotune)."""

    model_config = ApiModel.model_config | {"strict": False}

    changed: bool = False
    """Whether any setting differs from the spec as written."""
    settings: AutoTuneSettings | None = None
    """The chosen zeroStage, offload, perDeviceBatchSize and gradientAccumulationSteps."""
    reasons: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=8)] | None = None
    """Why: the predicted peak memory per GPU before and after."""


class EvaluationMetrics(ApiModel):
    """Metrics of one evaluated model (LLaMA-Factory's eval_results.json / predict_results.json)."""

    model_config = ApiModel.model_config | {"strict": False}

    eval_loss: float | None = None
    """Mean loss on the held-out data."""
    perplexity: float | None = None
    """exp(evalLoss); stages pt and sft."""
    bleu4: float | None = None
    """BLEU-4 of generated answers against the references (0-100), generation mode."""
    rouge1: float | None = None
    """ROUGE-1 F (0-100), generation mode."""
    rouge2: float | None = None
    """ROUGE-2 F (0-100), generation mode."""
    rouge_l: float | None = None
    """ROUGE-L F (0-100), generation mode."""
    samples: Annotated[int, Field(ge=0)] | None = None
    """Held-out records evaluated."""


class EvaluationStatus(ApiModel):
    """Outcome of spec.evaluation, written by the trainer after training and export."""

    model_config = ApiModel.model_config | {"strict": False}

    state: Literal["Succeeded", "Failed"]
    """Whether the evaluation ran; a failed evaluation keeps the trained model and the job's phase."""
    trained: EvaluationMetrics | None = None
    """Metrics of the trained model."""
    base: EvaluationMetrics | None = None
    """The same metrics of the base model (spec.evaluation.baseModel)."""
    summary: Annotated[str, Field(max_length=128)] = ""
    """Short form for `kubectl get -o wide`, e.g. `ppl 12.1 (base 40.3)`."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Why the evaluation failed, when it did."""
    path: str | None = None
    """The results file beside the outputs (kubetune-eval.json)."""


EVALUATE_STAGE = "evaluate"


def evaluation_from_stage(event: dict[str, object]) -> EvaluationStatus | None:
    """status.evaluation from one trainer stage line (``kubetune.stage {...}``), or None.

    The trainer's evaluate stage ends with ``{"stage": "evaluate", "event": "end",
    "evaluation": {...}}`` whether the evaluation succeeded or failed (a failed
    evaluation is never a failed stage: the job keeps its phase); the operator
    copies the object into status.evaluation and, when ``state`` is Failed, sets a
    condition ``EvaluationFailed`` with ``message``."""
    if event.get("stage") != EVALUATE_STAGE or event.get("event") != "end":
        return None
    raw = event.get("evaluation")
    if not isinstance(raw, dict):
        return None
    try:
        return EvaluationStatus.model_validate(raw)
    except ValueError:
        return None


class ServingObjectRef(ApiModel):
    """One serving object the operator created (owned by the FineTuneJob)."""

    model_config = ApiModel.model_config | {"strict": False}

    api_version: str
    """e.g. apps/v1, serving.kserve.io/v1beta1, kaito.sh/v1beta1."""
    kind: str
    """Deployment, Service, InferenceService, LLMInferenceService or Workspace."""
    name: str
    """Name in the FineTuneJob's namespace."""


class ServingStatus(ApiModel):
    """Where spec.serve serves the trained model (set once the serving objects exist)."""

    model_config = ApiModel.model_config | {"strict": False}

    engine: Literal["vllm", "kserve", "kaito"]
    """spec.serve.engine."""
    url: str | None = None
    (
        "OpenAI base URL inside the cluster (vllm: the Service's; kserve: the object's status.url; kaito: "
        "the Workspace's Service), once known."
    )
    served_model: Annotated[str, Field(max_length=253)]
    """The name clients send as `model`."""
    model: str | None = None
    """What is served: the merged or fully trained model, or the base the adapter runs on (pvc:// or hf:// URI)."""
    adapter: str | None = None
    """The LoRA adapter served on top of the base (pvc:// URI), when not merged."""
    ready: bool = False
    """Whether the serving objects report ready (Deployment replicas ready, KServe/KAITO Ready condition)."""
    objects: Annotated[list[ServingObjectRef], Field(max_length=8)] | None = None
    """The objects created for it."""


class Retries(ApiModel):
    """Training pods that exited with a retryable code (>= 128) and were recreated by Kubeflow.

    Counted by the operator (the training-operator does not count ``restartPolicy: ExitCode``
    replicas against ``runPolicy.backoffLimit``); kept here so the count survives operator
    restarts and pod replacement.
    """

    model_config = ApiModel.model_config | {"strict": False}

    count: Annotated[int, Field(ge=0)] = 0
    """Retryable pod failures so far; more than spec.runPolicy.backoffLimit fails the job."""
    last_exit_code: int | None = None
    """Exit code of the newest counted failure."""
    last_pod: Annotated[str, Field(max_length=253)] | None = None
    """Pod of the newest counted failure."""
    last_reason: Annotated[str, Field(max_length=1024)] | None = None
    (
        "Why the kubelet evicted that pod, when it did (its status.message; "
        "an outputs emptyDir past spec.storage.outputs.sizeLimit names that field)."
    )
    counted_pods: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=128)] | None = None
    """UIDs of the pods already counted (so a failure is never counted twice)."""


class FineTuneJobStatus(ApiModel):
    """Observed state of a FineTuneJob. Written only by the operator."""

    model_config = ApiModel.model_config | {"strict": False}

    phase: Phase | None = None
    """Pending, Running, Exporting, Succeeded, Failed or Suspended."""
    conditions: Annotated[list[Condition], Field(max_length=32)] | None = None
    """Detailed state; see Condition."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation last acted on by the operator."""
    gpus: Annotated[int, Field(ge=0)] | None = None
    """Total GPUs requested (nodes x gpusPerNode); shown by `kubectl get`."""
    progress: Progress | None = None
    """Live training progress."""
    start_time: str | None = None
    """When training pods first ran (RFC 3339)."""
    completion_time: str | None = None
    """When the job reached Succeeded or Failed (RFC 3339)."""
    job: ChildRef | None = None
    """The child Kubeflow job."""
    config_map: str | None = None
    """Name of the ConfigMap with train.yaml, ds_config.json and dataset_info.json."""
    output: OutputLocation | None = None
    """Where to find the results."""
    auto_tune: AutoTuneStatus | None = None
    """With spec.autoTune: the ZeRO stage, offload and micro-batch kubetune chose, and why."""
    retries: Retries | None = None
    """Retryable training pod failures, against spec.runPolicy.backoffLimit."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Latest human-readable summary (same as the most relevant condition's message)."""
    evaluation: EvaluationStatus | None = None
    """Results of spec.evaluation (mirrored from the trainer's evaluate stage)."""
    serving: ServingStatus | None = None
    (
        "Where spec.serve serves the trained model (the Serving condition says whether it is "
        "ready, or why nothing is served)."
    )
