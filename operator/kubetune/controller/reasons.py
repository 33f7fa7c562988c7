"""Every status reason the operator reports, with its phase, condition and hint: one table.

``decide`` takes its reasons and hints from here and nowhere else; ``docs/status.md``
quotes this table (``tests/controller/test_docs_reasons.py`` fails when the two differ), and
``tests/controller/test_decide.py`` has one row per entry.  A hint says where to look or
what to change; it is appended to the specific message (``<what happened>: <hint>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.api import Phase
from kubetune.cluster.backends import BACKENDS
from kubetune.cluster.serving import ENGINES


@dataclass(frozen=True)
class Reason:
    name: str
    condition: str
    """The condition that carries it (``status`` True or False as ``holds``)."""
    holds: bool | None
    """None: the condition's status is Unknown."""
    phase: Phase | None
    """The phase it comes with (None: any phase; the condition alone reports it)."""
    meaning: str
    hint: str


REASONS: dict[str, Reason] = {
    r.name: r
    for r in (
        # --- Validated --------------------------------------------------------------------
        Reason("Valid", "Validated", True, None, "the spec passed the same checks as `kubetune validate`", ""),
        Reason(
            "InvalidSpec",
            "Validated",
            False,
            "Failed",
            "the spec is invalid; no children were created",
            "fix the fields named in the message; the job starts once the spec is valid",
        ),
        Reason(
            "ImmutableFieldChanged",
            "Validated",
            False,
            None,
            "a field that cannot change after start was edited; the running job keeps its original settings",
            "revert the edit, or create a new FineTuneJob with the new settings",
        ),
        Reason(
            "UpdateRejected",
            "Validated",
            False,
            None,
            "the API server or an admission webhook refused the edited spec's changes to the running children; "
            "the job keeps running with its previous settings and the change is retried with backoff",
            "read the refusal in the message; revert the edit, or fix what the refusal names",
        ),
        # --- Created ----------------------------------------------------------------------
        Reason("ChildrenCreated", "Created", True, None, "the ConfigMap and the Kubeflow job exist", ""),
        Reason(
            "KindNotInstalled",
            "Created",
            False,
            "Pending",
            "the cluster does not serve the child's kind; retried until it does",
            "install the Kubeflow controller named in the message (its CRDs and its Deployment)",
        ),
        Reason(
            "ChildRejected",
            "Created",
            False,
            "Failed",
            "the API server or an admission webhook refused a rendered child",
            "read the refusal in the message: usually a policy (PodSecurity, Kyverno/Gatekeeper) or a quota",
        ),
        # --- Feasible (kubetune.plan.feasibility; needs spec.resources.gpuMemory or gpuMemoryByProduct) ---
        Reason(
            "Fits",
            "Feasible",
            True,
            None,
            "the predicted peak memory per GPU fits the GPU memory (spec.resources.gpuMemory, "
            "or the operator's GPU table: built in, extended by the chart's gpuMemoryByProduct)",
            "",
        ),
        Reason(
            "InsufficientGPUMemory",
            "Feasible",
            False,
            "Pending",
            "the predicted peak memory per GPU exceeds the GPU memory; no children were created",
            "create the job again with the change the message suggests, or set spec.autoTune: "
            "true to let kubetune choose ZeRO stage, offload and micro-batch",
        ),
        Reason(
            "GPUMemoryUnknown",
            "Feasible",
            None,
            None,
            "the memory of one GPU is not known, so the predicted peak was not checked; "
            "the children are created anyway (the message names what is missing and the "
            "prediction when the model is known)",
            "set spec.resources.gpuMemory (e.g. 80Gi), or select the GPU with spec.scheduling.nodeSelector "
            "nvidia.com/gpu.product; a product the built-in GPU table lacks goes in the chart's gpuMemoryByProduct "
            "value (a local operator: --gpu-memory-by-product PRODUCT=QUANTITY)",
        ),
        Reason(
            "UnknownArchitecture",
            "Feasible",
            None,
            None,
            "the model's architecture is not in kubetune's catalogue, so the predicted peak was not checked; "
            "the children are created anyway",
            "the operator reads no model files: check the job before applying it with `kubetune plan FILE "
            "--gpu-memory GiB --model-config config.json` (the model's config.json, "
            "e.g. from its folder on the models volume), or use a catalogued model (`kubetune plan --list-models`)",
        ),
        Reason(
            "WaitingForJob",
            "Created",
            False,
            "Pending",
            "the job builds on another FineTuneJob (spec.model.fromJob or spec.training.ppo.rewardModel.fromJob) that "
            "has not Succeeded yet; no children were created",
            "nothing to do: the job starts when the FineTuneJob named in the message has Succeeded",
        ),
        # --- PrerequisitesReady -------------------------------------------------------------
        Reason(
            "PrerequisitesFound",
            "PrerequisitesReady",
            True,
            None,
            "every PVC and Kueue LocalQueue the spec names exists (a Pending claim counts: "
            "a WaitForFirstConsumer claim binds only once a pod uses it)",
            "",
        ),
        Reason(
            "PrerequisiteMissing",
            "PrerequisitesReady",
            False,
            None,
            "a PVC or Kueue LocalQueue the spec names does not exist (or a PVC is Lost); pods wait for it",
            "create it in the job's namespace (see the example's companion prerequisites file); nothing else to do",
        ),
        # --- Running=False while Pending ---------------------------------------------------
        Reason("PodsPending", "Running", False, "Pending", "the child exists; its pods have not started yet", ""),
        Reason(
            "Unschedulable",
            "Running",
            False,
            "Pending",
            "the scheduler cannot place a training pod",
            "no node has the requested GPUs/CPU/memory free: check spec.resources (gpuResourceName), "
            "spec.scheduling (nodeSelector, tolerations) and `kubectl describe node`",
        ),
        Reason(
            "VolumeNotReady",
            "Running",
            False,
            "Pending",
            "a training pod waits for a PersistentVolumeClaim that is missing or unbound",
            "create the PVC named in the message, or check its StorageClass/provisioner "
            "(`kubectl describe pvc`); multi-node jobs need ReadWriteMany",
        ),
        Reason(
            "SecretMissing",
            "Running",
            False,
            "Pending",
            "a Secret (or a key in it) that the pods reference does not exist",
            "create the Secret named in the message in the job's namespace "
            "(spec.hfTokenSecretRef, spec.env[].valueFrom.secretKeyRef)",
        ),
        Reason(
            "CreateContainerConfigError",
            "Running",
            False,
            "Pending",
            "the kubelet cannot build a training container's configuration",
            "check the ConfigMaps and Secrets that spec.env[].valueFrom references",
        ),
        Reason(
            "ImagePullBackOff",
            "Running",
            False,
            "Pending",
            "the training image cannot be pulled",
            "check spec.image (or the chart's trainer.image) and spec.imagePullSecrets",
        ),
        Reason(
            "ErrImagePull",
            "Running",
            False,
            "Pending",
            "the training image cannot be pulled",
            "check spec.image (or the chart's trainer.image) and spec.imagePullSecrets",
        ),
        Reason(
            "InvalidImageName",
            "Running",
            False,
            "Pending",
            "the training image reference is malformed",
            "check spec.image (or the chart's trainer.image)",
        ),
        Reason(
            "WaitingForQueue",
            "Running",
            False,
            "Pending",
            "Kueue holds the job (suspended) until it admits it",
            "`kubectl get workloads -n NAMESPACE` shows why (quota, ClusterQueue, ResourceFlavor); "
            "the LocalQueue must exist and Kueue's integration for the job's kind must be on",
        ),
        Reason(
            "ControllerNotRunning",
            "Running",
            False,
            "Pending",
            "no Kubeflow controller has acted on the child job within the grace period",
            "check that the controller of the child's kind runs (its Deployment and its logs)",
        ),
        # --- Running / Exporting --------------------------------------------------------------
        Reason("JobRunning", "Running", True, "Running", "training pods are running", ""),
        Reason(
            "Restarting",
            "Running",
            True,
            "Running",
            "a training pod exited with a retryable code; Kubeflow recreates it and training "
            "resumes from the newest checkpoint",
            "spec.runPolicy.backoffLimit bounds the retries; `kubectl logs` of the previous pod shows why it exited",
        ),
        Reason(
            "Exporting",
            "Exporting",
            True,
            "Exporting",
            "training finished; the adapter is being merged into the base model",
            "",
        ),
        # --- terminal ---------------------------------------------------------------------------
        Reason("JobSucceeded", "Succeeded", True, "Succeeded", "training (and export) finished", ""),
        Reason(
            "JobFailed",
            "Failed",
            True,
            "Failed",
            "the Kubeflow job failed (a training pod exited with a permanent code)",
            "`kubectl logs` of the failed pod; exit codes 1-127 (bad config, bad data, GPU OOM) are not retried",
        ),
        Reason(
            "OOMKilled",
            "Failed",
            True,
            "Failed",
            "a training container ran out of host memory",
            "raise spec.resources.memory, lower per-device batch size or cutoff length, or offload with ZeRO",
        ),
        Reason(
            "BackoffLimitExceeded",
            "Failed",
            True,
            "Failed",
            "training pods failed with retryable codes more often than spec.runPolicy.backoffLimit "
            "allows; the child job was suspended",
            "fix the cause named in the message (NCCL, rendezvous, host OOM), then create a new FineTuneJob",
        ),
        Reason(
            "JobDeleted",
            "Failed",
            True,
            "Failed",
            "the child job was deleted while the FineTuneJob ran",
            "create a new FineTuneJob to train again",
        ),
        Reason(
            "FromJobNotFound",
            "Failed",
            True,
            "Failed",
            "the FineTuneJob named by fromJob does not exist in the job's namespace; no children were created",
            "create the source job, then create this job again (one kubectl apply of both works)",
        ),
        Reason(
            "FromJobFailed",
            "Failed",
            True,
            "Failed",
            "the FineTuneJob named by fromJob failed; no children were created",
            "fix and re-run the source job, then create this job again",
        ),
        Reason(
            "FromJobUnusable",
            "Failed",
            True,
            "Failed",
            "the FineTuneJob named by fromJob cannot be built on (itself, another outputs volume and no outputs.uri, "
            "its bucket on another objectStore, a LoRA adapter the method cannot load, "
            "a reward model not from stage rm); no children were created",
            "make the change the message names, then create this job again",
        ),
        # --- EvaluationFailed (spec.evaluation; the phase is unchanged) ---------------------
        Reason(
            "EvaluationFailed",
            "EvaluationFailed",
            True,
            None,
            "spec.evaluation ran after training and failed; the trained model and the phase are kept "
            "(status.evaluation.message says why)",
            "read status.evaluation.message and the rank-0 log; the outputs are usable",
        ),
        # --- Serving (spec.serve; only after Succeeded; the phase stays Succeeded) ------------
        Reason(
            "ServingReady",
            "Serving",
            True,
            "Succeeded",
            "the serving objects report ready; status.serving.url and servedModel say where and what to ask",
            "",
        ),
        Reason(
            "ServingStarting",
            "Serving",
            False,
            "Succeeded",
            "the serving objects exist (owned by the FineTuneJob) and are not ready yet: image pull, weights loading",
            "`kubectl describe` the objects named in status.serving.objects; loading a large model takes minutes",
        ),
        Reason(
            "ServingKindNotInstalled",
            "Serving",
            False,
            "Succeeded",
            "spec.serve.engine needs a kind the cluster does not serve (KServe or KAITO is not "
            "installed); retried when it appears",
            "install the component named in the message, or set spec.serve.engine: vllm (a plain Deployment)",
        ),
        Reason(
            "ServingRejected",
            "Serving",
            False,
            "Succeeded",
            "the API server or an admission webhook refused a serving object",
            "read the refusal in the message (a quota, PodSecurity, a webhook), fix it, "
            "then edit spec.serve to try again",
        ),
        Reason(
            "AdapterCopyFailed",
            "Serving",
            False,
            "Succeeded",
            "engine kaito: the Job that copies the adapter to its own volume failed; no Workspace was created",
            "`kubectl logs job/<job>-adapter-copy` says why (the adapter files adapter_config.json and "
            "adapter_model.safetensors must be in the job's outputs folder); "
            "`kubectl delete job <job>-adapter-copy` copies again",
        ),
        Reason(
            "WaitingForEvaluation",
            "Serving",
            False,
            "Succeeded",
            "spec.serve.when is evaluationImproves and the evaluation result has not been read yet",
            "nothing to do while the rank-0 pod's log is readable; the result is also in "
            "kubetune-eval.json on the outputs volume",
        ),
        Reason(
            "EvaluationNotImproved",
            "Serving",
            False,
            "Succeeded",
            "spec.serve.when is evaluationImproves and the evaluation did not show the trained model beating "
            "the base model; nothing is served",
            "compare status.evaluation.trained with status.evaluation.base; "
            "set spec.serve.when: succeeded to serve it anyway",
        ),
        # --- Suspended ------------------------------------------------------------------------------
        Reason(
            "JobSuspended",
            "Suspended",
            True,
            "Suspended",
            "spec.suspend is true; pods are deleted, outputs and checkpoints kept",
            "set spec.suspend: false to resume from the newest checkpoint",
        ),
    )
}


SWEEP_REASONS: dict[str, Reason] = {
    r.name: r
    for r in (
        # --- Validated ----------------------------------------------------------------------
        Reason(
            "SweepValid",
            "Validated",
            True,
            None,
            "the FineTuneSweep's spec and template passed the operator's checks",
            "",
        ),
        Reason(
            "InvalidSweep",
            "Validated",
            False,
            "Failed",
            "the sweep's spec (or its template) is invalid; no trials were created",
            "fix the field named in the message; the sweep starts once its spec is valid",
        ),
        # --- Running: why the sweep waits -------------------------------------------------------
        Reason(
            "TrialsQueued",
            "Running",
            False,
            None,
            "every trial asked so far is Pending: queued in Kueue or waiting for its pods",
            "`kubectl get finetunejobs -l kubetune.io/finetunesweep=NAME` shows each trial's reason "
            "(WaitingForQueue, Unschedulable, ...)",
        ),
        Reason(
            "ParallelismReached",
            "Running",
            True,
            "Running",
            "spec.parallelism trials run at once; the next trial is asked when one finishes or is pruned",
            "",
        ),
        Reason(
            "WaitingForTrialEvaluation",
            "Running",
            True,
            "Running",
            "a trial's FineTuneJob Succeeded and its evaluation result (the objective) has not been read yet; "
            "after 10 minutes without it the trial counts as Failed",
            "nothing to do while the trial's rank-0 pod log is readable; "
            "its status.evaluation shows the result when read",
        ),
        Reason(
            "TrialsRunning",
            "Running",
            True,
            "Running",
            "trials run and no more are asked for now (spec.maxTrials asked, or the sampler waits for their results)",
            "",
        ),
        # --- terminal -------------------------------------------------------------------------
        Reason(
            "SweepSucceeded",
            "Succeeded",
            True,
            "Succeeded",
            "every trial finished; status.bestTrial and status.bestValue name the best one",
            "",
        ),
        Reason(
            "MaxFailedTrialsReached",
            "Failed",
            True,
            "Failed",
            "more trials failed than spec.maxFailedTrials allows; the trials still running were stopped",
            "read the failed trials' messages in status.trials (and their FineTuneJobs), "
            "fix the template, then create a new sweep",
        ),
        Reason(
            "NoTrialSucceeded",
            "Failed",
            True,
            "Failed",
            "the sweep ended without one trial that reported the objective",
            "read the trials' messages in status.trials; spec.evaluation must produce spec.objective.metric",
        ),
        # --- Promoted (spec.promote: serve) ----------------------------------------------------
        Reason(
            "WinnerPromoted",
            "Promoted",
            True,
            "Succeeded",
            "the best trial's FineTuneJob got the template's spec.serve; its status.serving says where it is served",
            "",
        ),
        Reason(
            "WinnerMissing",
            "Promoted",
            False,
            "Succeeded",
            "spec.promote is serve but the best trial's FineTuneJob no longer exists; nothing is served",
            "create a FineTuneJob from the best trial's parameters (status.trials) with spec.serve",
        ),
        # --- Serving (spec.promote: serve): the winner FineTuneJob's Serving condition, mirrored ----
        *(
            Reason(
                r.name,
                "Serving",
                r.holds,
                "Succeeded",
                f"the best trial's FineTuneJob reports it (its Serving condition, mirrored): {r.meaning}",
                r.hint,
            )
            for r in REASONS.values()
            if r.condition == "Serving"
        ),
    )
}
"""FineTuneSweep reasons (``controller/sweeps/decide.py``): a table of their own, quoted in docs/status.md."""


def with_hint(reason: str, message: str) -> str:
    """``message`` followed by the reason's hint (when it has one)."""
    hint = (REASONS.get(reason) or SWEEP_REASONS[reason]).hint
    return f"{message}: {hint}" if hint else message


CONTROLLERS = {
    **{b.kind: b.controller for b in BACKENDS.values()},
    **{e.kinds[0].kind: e.controller for e in ENGINES.values() if e.controller},
}
"""Who acts on each child kind (cluster/backends) and on each serving engine's main kind (cluster/serving):
named by KindNotInstalled, ControllerNotRunning and ServingKindNotInstalled."""


def retryable_exit_code(code: int) -> bool:
    """The training-operator's rule for ``restartPolicy: ExitCode`` (pkg/util/train/train_util.go,
    ``IsRetryableExitCode``: ``exitCode >= 128``): signals (137 host OOM kill, 143 SIGTERM) and the
    trainer's 130 (NCCL/rendezvous) are retried; 1-127 are permanent."""
    return code >= 128


def table_markdown(reasons: dict[str, Reason] | None = None) -> str:
    """The reasons table as docs/status.md quotes it (generated; do not edit by hand); ``reasons``:
    another table (SWEEP_REASONS), REASONS when not given."""
    rows = ["| Reason | Condition | Phase | Meaning | What to do |", "| --- | --- | --- | --- | --- |"]
    for r in (REASONS if reasons is None else reasons).values():
        cond = f"{r.condition}={'Unknown' if r.holds is None else 'True' if r.holds else 'False'}"
        rows.append(f"| `{r.name}` | {cond} | {r.phase or 'any'} | {r.meaning} | {r.hint or '-'} |")
    return "\n".join(rows)
