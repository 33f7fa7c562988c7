"""Jobs that build on jobs: ``spec.model.fromJob`` and ``spec.training.ppo.rewardModel.fromJob``.

Pure functions, no I/O.  :func:`resolve_from_job` is the whole decision the
operator (decide step), ``kubetune run --local`` and ``kubetune render`` make
about a referenced FineTuneJob; :func:`model_source_of` says what a job
leaves behind on its outputs volume once it has Succeeded:

* a merged model (``<outputs>/<ns>/<name>/merged``) when it exported one;
* for methods full/freeze, the job's output folder itself (a complete model);
* otherwise its base model plus its LoRA adapter (the output folder).

The referencing job mounts *its own* outputs claim, so a source read from the volume must
write to the same claim and subPath; the path is then the same in both pods.  A source on no
claim (its outputs live in a pod's emptyDir and in ``spec.storage.outputs.uri``) or on another
claim, that uploads to a bucket, is read from the bucket instead: :attr:`ModelSource.results_uri`
names its results prefix, and the trainer downloads the files its completion marker lists into
the models folder (kubetune.trainer.model.fetch_source, ETag-keyed as spec.model.uri is) before
training; the paths below point there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kubetune.api import FineTuneJob, LoraSpec
from kubetune.api.contract import MERGED_SUBDIR, Layout
from kubetune.api.objectstore import model_cache_subdir
from kubetune.api.spec import uses_object_store

WAITING_REASON = "WaitingForJob"


@dataclass(frozen=True)
class ModelSource:
    """What LLaMA-Factory loads for a job built on another job."""

    job: str
    """Name of the source FineTuneJob."""
    model: str
    """``model_name_or_path``: a Hub id or an absolute folder (in the pod's layout)."""
    adapter: str | None = None
    """``adapter_name_or_path``: the source's LoRA adapter folder, when it did not export a merged model."""
    revision: str | None = None
    trust_remote_code: bool = False
    kind: Literal["merged", "full", "adapter"] = "full"
    """merged model, complete model (methods full/freeze) or base + adapter."""
    stage: str = "sft"
    """The source job's training stage (a reward model for PPO must come from stage rm)."""
    results_uri: str | None = None
    """The source's results in a bucket (``<outputs.uri><namespace>/<job>/``) when it is read from
    there, not from the shared outputs volume: the trainer downloads what its ``_KUBETUNE_COMPLETE``
    lists into :func:`source_folder` first, where ``model``/``adapter`` point."""


def results_uri_of(source: FineTuneJob, namespace: str) -> str | None:
    """``<outputs.uri><namespace>/<job>/`` of a job that uploads its results, else None."""
    uri = source.spec.storage.outputs.uri
    return f"{uri}{namespace}/{source.name}/" if uri is not None else None


def source_folder(results_uri: str, layout: Layout) -> str:
    """Where the trainer puts a bucket source's results: beside spec.model.uri's staged models,
    one folder per results URI (kubetune.api.objectstore.model_cache_subdir)."""
    return f"{layout.models_dir}/{model_cache_subdir(results_uri)}"


@dataclass(frozen=True)
class Waiting:
    """The source exists but has not Succeeded yet: keep the job Pending (reason ``WaitingForJob``)."""

    message: str
    reason: str = WAITING_REASON


@dataclass(frozen=True)
class Failed:
    """The reference can never work: fail the job with this reason and message."""

    reason: str
    message: str


Resolution = ModelSource | Waiting | Failed


def model_source_of(
    source: FineTuneJob, namespace: str, layout: Layout, *, from_bucket: bool = False
) -> ModelSource | Failed:
    """What ``source`` leaves on the outputs volume when it succeeds (from its spec alone); with
    ``from_bucket``, where the trainer puts the copy it downloads from the source's outputs.uri."""
    spec = source.spec
    results = results_uri_of(source, namespace) if from_bucket else None
    out = source_folder(results, layout) if results is not None else layout.job_output_dir(namespace, source.name)
    stage = spec.training.stage
    if spec.export.enabled and spec.method in ("lora", "qlora"):
        # A reward model's export carries its value head (configs.export_args passes stage rm).
        return ModelSource(
            source.name,
            f"{out}/{MERGED_SUBDIR}",
            kind="merged",
            stage=stage,
            trust_remote_code=spec.model.trust_remote_code,
            results_uri=results,
        )
    if spec.method in ("full", "freeze"):
        return ModelSource(
            source.name,
            out,
            kind="full",
            stage=stage,
            trust_remote_code=spec.model.trust_remote_code,
            results_uri=results,
        )
    model = spec.model
    if model.from_job is not None:
        return Failed(
            "SourceNeedsExport",
            f"FineTuneJob {source.name} trains a LoRA adapter on top of FineTuneJob {model.from_job}; "
            f"set spec.export.enabled: true on {source.name} so the next job can load its merged model",
        )
    if model.uri is not None:
        return Failed(
            "SourceModelInBucket",
            f"FineTuneJob {source.name} trains a LoRA adapter on a base model in a bucket (spec.model.uri), "
            "which a later job cannot load yet; set spec.export.enabled: "
            f"true on {source.name} so the next job can load its merged model",
        )
    base = model.name if model.name is not None else f"{layout.models_dir}/{model.path}"
    return ModelSource(
        source.name,
        base,
        adapter=out,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        kind="adapter",
        stage=stage,
        results_uri=results,
    )


def _phase(obj: dict[str, Any]) -> str | None:
    status = obj.get("status")
    return status.get("phase") if isinstance(status, dict) else None


def _condition_message(obj: dict[str, Any]) -> str:
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    assert isinstance(status, dict)
    msg = status.get("message")
    return str(msg) if msg else "no message"


def resolve_from_job(
    job: FineTuneJob,
    source_obj: dict[str, Any] | None,
    *,
    reference: Literal["model", "rewardModel"] = "model",
    layout: Layout | None = None,
    assume_succeeded: bool = False,
    default_namespace: str = "default",
) -> Resolution:
    """Decide what a ``fromJob`` reference of ``job`` means now.

    ``source_obj`` is the referenced FineTuneJob as read from the API server
    (``metadata``, ``spec``, ``status``), or ``None`` when it does not exist in
    ``job``'s namespace.  ``reference`` picks ``spec.model.fromJob`` or
    ``spec.training.ppo.rewardModel.fromJob``.  ``assume_succeeded`` treats a
    source without status as Succeeded (``kubetune render`` of a recipe file,
    where both jobs are only manifests; ``run --local`` after the first ran).
    ``default_namespace``: the namespace of a job whose metadata names none.

    How the operator's decide step uses it, before rendering anything:

    * ``Waiting`` -> create no children; set phase ``Pending``, condition
      ``Created=False`` with ``reason=Waiting.reason`` (``WaitingForJob``) and
      ``message=Waiting.message``; re-check when the source changes (watch
      FineTuneJobs in the namespace, or requeue after a delay).
    * ``Failed`` -> phase ``Failed``, condition ``Failed=True`` with
      ``reason=Failed.reason`` and ``message=Failed.message``; terminal (the
      spec is immutable, a new job is needed).
    * ``ModelSource`` -> render with ``RenderOptions(model_source=...)`` (or
      ``reward_source=`` for the reward model) and proceed as for any job.

    Call it for both references when both are set; a ``Failed`` wins over a
    ``Waiting``.
    """
    layout = layout or Layout()
    namespace = job.metadata.namespace or default_namespace
    if reference == "model":
        name = job.spec.model.from_job
        field = "spec.model.fromJob"
    else:
        ppo = job.spec.training.ppo
        name = ppo.reward_model.from_job if ppo is not None else None
        field = "spec.training.ppo.rewardModel.fromJob"
    if name is None:
        return Failed("InvalidSpec", f"{field} is not set (caller bug)")
    source = _usable_source(job, source_obj, name, field, namespace, assume_succeeded)
    if not isinstance(source, FineTuneJob):
        return source
    from_bucket = not _same_volume(job, source)
    if from_bucket:
        problem = _bucket_source_problem(job, source, name, field)
        if problem is not None:
            return problem
    resolved = model_source_of(source, namespace, layout, from_bucket=from_bucket)
    if isinstance(resolved, Failed):
        return resolved
    if reference == "rewardModel":
        problem = _reward_model_problem(job, resolved, name, field, layout)
    else:
        problem = _continued_model_problem(job, source, resolved, name, field)
    return problem if problem is not None else resolved


def _usable_source(
    job: FineTuneJob, source_obj: dict[str, Any] | None, name: str, field: str, namespace: str, assume_succeeded: bool
) -> FineTuneJob | Failed | Waiting:
    """The referenced FineTuneJob once it exists, Succeeded, is valid and writes where ``job`` reads;
    else why not (Failed) or what it waits for (Waiting)."""
    if name == job.name:
        return Failed("InvalidFromJob", f"{field}: a FineTuneJob cannot build on itself")
    if source_obj is None:
        return Failed(
            "FromJobNotFound",
            f"{field}: FineTuneJob {name} does not exist in namespace {namespace}; "
            "create it first (one kubectl apply of both works)",
        )
    phase = _phase(source_obj)
    if phase == "Failed":
        return Failed(
            "FromJobFailed",
            f"{field}: FineTuneJob {name} failed ({_condition_message(source_obj)}); "
            "fix and re-run it, then re-create this job",
        )
    if phase != "Succeeded" and not assume_succeeded:
        return Waiting(
            f"waiting for FineTuneJob {name} to succeed (now {phase or 'not started'}); this job starts when it has"
        )
    try:
        source = FineTuneJob.from_api({**source_obj, "status": None} if "status" in source_obj else source_obj)
    except Exception as exc:  # noqa: BLE001 - pydantic's error names the field; the source's own problem
        return Failed("FromJobInvalid", f"{field}: FineTuneJob {name} is not a valid FineTuneJob: {exc}")
    src_out = source.spec.storage.outputs
    if not _same_volume(job, source) and src_out.uri is None:
        # Neither the same volume nor a bucket copy to read (a source without claimName always has outputs.uri).
        return Failed(
            "FromJobOtherVolume",
            f"{field}: FineTuneJob {name} writes to outputs claim "
            f"{src_out.claim_name!r}{' subPath ' + repr(src_out.sub_path) if src_out.sub_path else ''} and uploads "
            "nowhere; this job must use the same spec.storage.outputs to read it, "
            f"or {name} must set spec.storage.outputs.uri (then this job downloads its results from the bucket)",
        )
    return source


def _same_volume(job: FineTuneJob, source: FineTuneJob) -> bool:
    """Both jobs mount one outputs claim and subPath, so the source's folder is in this job's pods.
    Never for a source without a claim: its outputs emptyDir was its own pod's."""
    src_out, own_out = source.spec.storage.outputs, job.spec.storage.outputs
    return src_out.claim_name is not None and (src_out.claim_name, src_out.sub_path) == (
        own_out.claim_name,
        own_out.sub_path,
    )


def _bucket_source_problem(job: FineTuneJob, source: FineTuneJob, name: str, field: str) -> Failed | None:
    """Why ``job``'s trainer cannot download ``source``'s results from its outputs.uri, or None.

    The trainer reads the bucket with ``job``'s own spec.storage.objectStore (the pods get only
    their own Secret, by secretKeyRef), so it must be the source's, and of the same store."""
    src = source.spec
    if field != "spec.model.fromJob":
        return Failed(
            "FromJobOtherVolume",
            f"{field}: FineTuneJob {name} is not on this job's outputs claim (its outputs are in "
            f"{src.storage.outputs.uri}); a reward model is read from the shared outputs volume only: "
            "give both jobs the same spec.storage.outputs.claimName",
        )
    if src.storage.object_store != job.spec.storage.object_store:
        return Failed(
            "FromJobOtherStore",
            f"{field}: FineTuneJob {name}'s results are read from its bucket ({src.storage.outputs.uri}) with this "
            f"job's spec.storage.objectStore, which differs from {name}'s: set the same spec.storage.objectStore "
            "(endpoint, region, credentialsSecretRef, caBundle)",
        )
    scheme = str(src.storage.outputs.uri).split("://", 1)[0]
    own = uses_object_store(job.spec)
    if any(not u.startswith(f"{scheme}://") for u in own):
        return Failed(
            "FromJobOtherStore",
            f"{field}: FineTuneJob {name}'s results are in {src.storage.outputs.uri}, "
            f"but this job's URIs use another store; a job reaches one object store: use {scheme}:// URIs here too",
        )
    # A gs:// source needs no gs:// URI of this job's own: the renderer counts the source's results
    # URI as one of this job's (render/podspec.py object_store_env), so the pods get Cloud Storage's
    # endpoint and region auto as the source's did.
    return None


def _reward_model_problem(
    job: FineTuneJob, resolved: ModelSource, name: str, field: str, layout: Layout
) -> Failed | None:
    """Why the resolved model cannot be ``job``'s PPO reward model, or None."""
    if resolved.stage != "rm":
        return Failed(
            "FromJobNotRewardModel",
            f"{field}: FineTuneJob {name} has stage {resolved.stage}; "
            "a PPO reward model comes from a job with stage rm",
        )
    if resolved.kind == "adapter" and job.spec.method not in ("lora", "qlora"):
        return Failed(
            "FromJobAdapterMismatch",
            f"{field}: FineTuneJob {name} left a LoRA reward adapter, which LLaMA-Factory loads onto the policy only "
            "for method lora; use method lora or a full reward model",
        )
    if job.spec.model.from_job is None:
        policy = job.spec.model
        base = policy.name if policy.name is not None else f"{layout.models_dir}/{policy.path}"
        return reward_base_problem(job, ModelSource(job.name, base, revision=policy.revision), resolved)
    return None


def _continued_model_problem(
    job: FineTuneJob, source: FineTuneJob, resolved: ModelSource, name: str, field: str
) -> Failed | None:
    """Why ``job``'s method cannot continue from the resolved model (an adapter it cannot load, or
    LoRA settings that would be silently ignored), or None."""
    if resolved.kind == "adapter" and job.spec.method not in ("lora", "qlora"):
        return Failed(
            "FromJobAdapterMismatch",
            f"{field}: FineTuneJob {name} left a LoRA adapter without a merged model; "
            f"method {job.spec.method} cannot load adapters. Set spec.export.enabled: "
            f"true on {name}, or use method lora/qlora here",
        )
    if resolved.kind == "adapter" and source.spec.method == "qlora" and job.spec.method != "qlora":
        return Failed(
            "FromJobAdapterMismatch",
            f"{field}: FineTuneJob {name} trained its adapter on a quantized base (qlora); "
            "continue with method qlora, or export it first",
        )
    if (
        resolved.kind == "adapter"
        and job.spec.lora is not None
        and _lora_effective(job.spec.lora) != _lora_effective(source.spec.lora or LoraSpec())
    ):
        # LLaMA-Factory resumes the saved adapter (PeftModel.from_pretrained with its own
        # adapter_config.json: src/llamafactory/model/adapter.py:175-200 @v0.9.5) and never reads
        # lora_rank/alpha/dropout/target: different settings here would be silently ignored.
        return Failed(
            "FromJobAdapterMismatch",
            f"spec.lora: FineTuneJob {name}'s adapter is continued with its own LoRA settings "
            f"({_lora_text(source.spec.lora or LoraSpec())}); remove spec.lora or set the same values, "
            f"or set spec.export.enabled: true on {name} to start a new adapter on its merged model",
        )
    return None


def _lora_effective(lora: LoraSpec) -> tuple[int, int, float, frozenset[str]]:
    """The adapter a LoraSpec trains: lora_alpha unset is 2 x rank (hparams/finetuning_args.py:568
    @v0.9.5) and PEFT keeps target_modules as a set (the order is no difference). ``all`` and an
    explicit list of every linear module do compare different: only the model knows the expansion."""
    return (
        lora.rank,
        lora.alpha if lora.alpha is not None else 2 * lora.rank,
        lora.dropout,
        frozenset(lora.target_modules),
    )


def _lora_text(lora: LoraSpec) -> str:
    alpha = lora.alpha if lora.alpha is not None else 2 * lora.rank
    return f"rank {lora.rank}, alpha {alpha}, dropout {lora.dropout}, targetModules {','.join(lora.target_modules)}"


def reward_base_problem(job: FineTuneJob, policy: ModelSource, reward: ModelSource) -> Failed | None:
    """A LoRA reward adapter is loaded onto the policy's own base model
    (create_reward_model: ``model.pretrained_model.load_adapter(reward_model, "reward")``,
    src/llamafactory/train/trainer_utils.py:159-160 @v0.9.5): it must have been trained on
    that very model. ``policy``: what the policy loads as model_name_or_path (the job's own
    base, or its resolved spec.model.fromJob)."""
    if reward.kind != "adapter":
        return None
    if (reward.model, reward.revision) == (policy.model, policy.revision):
        return None
    ppo = job.spec.training.ppo
    name = ppo.reward_model.from_job if ppo is not None else reward.job
    return Failed(
        "FromJobAdapterMismatch",
        f"spec.training.ppo.rewardModel.fromJob: FineTuneJob {name}'s LoRA reward adapter was trained on "
        f"{reward.model}{'@' + reward.revision if reward.revision else ''}, "
        f"but this policy's base model is {policy.model}{'@' + policy.revision if policy.revision else ''}; "
        "LLaMA-Factory loads the adapter onto the policy's base: train the reward model on the same base, "
        f"or export it (spec.export.enabled on {name}) to use it as a full reward model",
    )


def source_from_documents(
    job: FineTuneJob,
    documents: list[FineTuneJob],
    layout: Layout,
    *,
    reference: Literal["model", "rewardModel"] = "model",
    default_namespace: str = "default",
) -> Resolution:
    """Resolve against jobs given together (one recipe file): the source is assumed to succeed."""
    name = (
        job.spec.model.from_job
        if reference == "model"
        else (job.spec.training.ppo.reward_model.from_job if job.spec.training.ppo else None)
    )
    namespace = job.metadata.namespace or default_namespace
    for other in documents:
        if other.name == name and (other.metadata.namespace or default_namespace) == namespace:
            return resolve_from_job(
                job,
                other.to_api(),
                reference=reference,
                layout=layout,
                assume_succeeded=True,
                default_namespace=default_namespace,
            )
    return resolve_from_job(job, None, reference=reference, layout=layout, default_namespace=default_namespace)


def reward_args(source: ModelSource) -> dict[str, Any]:
    """LLaMA-Factory's reward model arguments for a resolved reward job."""
    if source.kind == "adapter":
        return {"reward_model": source.adapter, "reward_model_type": "lora"}
    return {"reward_model": source.model, "reward_model_type": "full"}


__all__ = [
    "WAITING_REASON",
    "Failed",
    "ModelSource",
    "Resolution",
    "Waiting",
    "model_source_of",
    "resolve_from_job",
    "results_uri_of",
    "source_folder",
    "reward_args",
    "reward_base_problem",
    "source_from_documents",
]


def with_sources(job: FineTuneJob, documents: list[FineTuneJob], options: Any) -> Any:
    """``options`` (a RenderOptions) with job's fromJob references resolved against
    ``documents`` (jobs applied together); a :class:`Failed` when one cannot be."""
    import dataclasses  # noqa: PLC0415

    layout = options.layout
    changes: dict[str, ModelSource] = {}
    if job.spec.model.from_job is not None:
        got = source_from_documents(job, documents, layout, default_namespace=options.default_namespace)
        if not isinstance(got, ModelSource):
            return got if isinstance(got, Failed) else Failed(got.reason, got.message)
        changes["model_source"] = got
    ppo = job.spec.training.ppo
    if ppo is not None and ppo.reward_model.from_job is not None:
        got = source_from_documents(
            job, documents, layout, reference="rewardModel", default_namespace=options.default_namespace
        )
        if not isinstance(got, ModelSource):
            return got if isinstance(got, Failed) else Failed(got.reason, got.message)
        changes["reward_source"] = got
    if "model_source" in changes and "reward_source" in changes:
        problem = reward_base_problem(job, changes["model_source"], changes["reward_source"])
        if problem is not None:
            return problem
    return dataclasses.replace(options, **changes) if changes else options
