"""``validate_object(obj) -> (job | None, problems)``: every reason a FineTuneJob is invalid.

Two layers.  (1) The pydantic models (the same rules the CRD's schema and CEL
enforce) - their errors are turned into Kubernetes-style paths such as
``spec.datasets[0].path`` and messages that say how to fix them.  (2) Checks
the CRD cannot express because they need LLaMA-Factory's own knowledge:
``spec.extraArgs`` against the pinned argument catalog and ``spec.model.template``
against its template list.  (The length of metadata.name, which the children's names
extend, is a CRD rule: api/resource.py, name-fits-children.)

Never raises: whatever was parsed from a file, the answer is a list of Problems.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetune.api import FineTuneJob
from kubetune.api.contract import API_VERSION, ARG_PACKAGES, ATTENTION_PACKAGES, IMAGE_PACKAGES, KIND
from kubetune.api.k8s import EXTENDED_RESOURCE_PATTERN
from kubetune.api.safeyaml import InputError, normalize
from kubetune.api.text import clip, join, show

from ..plan.arch import UnknownModelError, resolve
from ..plan.arch import OUTER_MODULES
from ..plan.memory import outer_lora_targets, unknown_lora_targets
from .backends import RENDERERS
from .catalog import catalog
from .lfargs import OVERRIDABLE, SPEC_CONTROLLED
from .limits import size_problems
from .pipeline import render
from .serving import serving_problems
from .types import Problem

MAX_SPEC_BYTES = 128 * 1024
"""Largest spec (as compact JSON): see the message where it is checked."""
RENDER_CHECK_BYTES = 16 * 1024
"""Specs above this size are rendered by validation to check the objects' sizes (render/limits.py);
below it the objects stay far under every limit (each copy of the spec is at most ~3x its JSON)."""
_ARG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD_AT_START = re.compile(r"^((?:metadata|spec)(?:\.[A-Za-z]+|\[\])*)[ :]")


def validate_object(obj: object) -> tuple[FineTuneJob | None, list[Problem]]:
    """Validate one parsed document. Returns the job only when there are no problems."""
    try:
        return _validate(obj)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raise"
        return None, [
            Problem("", f"could not validate this object ({type(exc).__name__}: {clip(str(exc))}); please report it")
        ]


def split_header(obj: dict[str, Any], kind: str) -> tuple[list[Problem], dict[str, Any]]:
    """Problems with ``obj``'s apiVersion and kind (which must be ours and ``kind``), and the rest of it."""
    problems: list[Problem] = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION} (got {show(obj.get('apiVersion'))})"))
    if obj.get("kind") != kind:
        problems.append(Problem("kind", f"must be {kind} (got {show(obj.get('kind'))})"))
    return problems, {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _validate(obj: object) -> tuple[FineTuneJob | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [
            Problem("", f"expected a FineTuneJob mapping (apiVersion, kind, metadata, spec), got {_type_name(obj)}")
        ]
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        # The API server's field-ownership record (k8s.io/apimachinery pkg/util/managedfields), not the
        # author's: it mirrors the spec's shape one level deeper per field, so bounding it with the spec
        # refused a job at the depth limit as "metadata.managedFields[0].fieldsV1..." instead of naming
        # the spec field (or a valid job near the limit outright).
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    try:
        # Depth, size, NaN, NUL, int64, key types: the same bounds as the manifest
        # loader, for objects that come from the API server (the operator) as JSON.
        obj = dict(normalize(obj))
    except InputError as exc:
        return None, [Problem(exc.field, exc.message)]
    problems: list[Problem] = []
    spec_bytes = len(json.dumps(obj.get("spec"), separators=(",", ":"), ensure_ascii=False).encode())
    if spec_bytes > MAX_SPEC_BYTES:
        problems.append(
            Problem(
                "spec",
                f"is {spec_bytes} bytes as JSON; at most {MAX_SPEC_BYTES} fit, because kubectl's last-applied "
                "annotation and the operator's record of the handled spec each copy it, and an object's annotations "
                "share 256 KiB: shorten spec.env, spec.extraArgs or spec.scheduling",
            )
        )
    header, body = split_header(obj, KIND)
    problems.extend(header)
    try:
        job = FineTuneJob.from_api(body)
    except ValidationError as err:
        problems.extend(_from_pydantic(err))
        problems.extend(_raw_semantic_problems(body))
        return None, dedupe(problems)
    problems.extend(semantic_problems(job))
    if not problems and spec_bytes > RENDER_CHECK_BYTES:
        # Valid on paper; now the objects it becomes must fit what Kubernetes stores.  (A spec
        # of a few KiB renders to objects of a few tens of KiB: only larger ones are rendered here.)
        problems.extend(size_problems(render(job)))
    return (None if problems else job), dedupe(problems)


def semantic_problems(job: FineTuneJob) -> list[Problem]:
    """Checks beyond the schema; run on an already-parsed job."""
    problems: list[Problem] = []
    if job.spec.distributed.fsdp and job.spec.resources.gpus_per_node == 0:
        problems.append(
            Problem(
                "spec.distributed.fsdp",
                "FSDP shards across GPUs and needs spec.resources.gpusPerNode >= 1; set fsdp: false for CPU training",
            )
        )
    problems.extend(_template_problems(job.spec.model.template))
    problems.extend(_extra_args_problems(job.spec.extra_args or {}))
    if job.spec.training.optimizer is not None and "optim" in (job.spec.extra_args or {}):
        problems.append(
            Problem(
                "spec.extraArgs.optim",
                "conflicts with spec.training.optimizer: set the optimizer in one place (remove one of them)",
            )
        )
    problems.extend(image_problems(job))
    problems.extend(lora_target_problems(job))
    problems.extend(packing_problems(job))
    problems.extend(streaming_problems(job))
    problems.extend(preference_problems(job))
    problems.extend(Problem(path, message) for path, message in serving_problems(job))
    if job.spec.distributed.backend in RENDERERS:  # auto: the operator checks the backend it chooses
        problems.extend(RENDERERS[job.spec.distributed.backend].check(job))
    return problems


def lora_target_problems(job: FineTuneJob) -> list[Problem]:
    """spec.lora.targetModules naming a module the model lacks, for models whose architecture the
    planner knows by name (its catalogue; no I/O). PEFT would stop the job at model load
    ("Target modules ... not found in the base model"), after the data stage; the planner could not
    estimate its memory either. Unknown models are not checked here."""
    lora, model = job.spec.lora, job.spec.model
    if job.spec.method not in ("lora", "qlora") or lora is None or model.from_job is not None or model.name is None:
        return []
    try:
        arch = resolve(model.name)
    except UnknownModelError:
        return []
    if "all" in lora.target_modules and len(lora.target_modules) > 1:
        # llamafactory/model/adapter.py:205 @0.9.5 expands `all` only alone; beside other names PEFT
        # gets a module called all (none is), training only the others or stopping at model load.
        return [
            Problem(
                "spec.lora.targetModules",
                "all stands alone (every linear layer): give [all], or name the modules without all",
            )
        ]
    unknown = unknown_lora_targets(arch, lora.target_modules)
    if unknown:
        names, verb = ", ".join(unknown), "is not a linear layer" if len(unknown) == 1 else "are not linear layers"
        has = ", ".join((*arch.lora_modules, *OUTER_MODULES))
        return [
            Problem(
                "spec.lora.targetModules", f"{names} {verb} of {arch.name}, which has {has}: name some of those, or all"
            )
        ]
    outer = outer_lora_targets(lora.target_modules)
    if outer and arch.tied_embeddings:
        # One weight matrix is both embed_tokens and lm_head (tie_word_embeddings). PEFT only warns
        # (peft/tuners/tuners_utils.py:917-923 @0.18.1) and merge_and_unload adds the adapter's delta
        # to the shared matrix, so the merged model changes the other layer too (measured on a tied
        # Qwen2: logits off by 5 for lm_head, 160 for embed_tokens). LLaMA-Factory merges on export
        # and when a job trains on this one (llamafactory/model/adapter.py:189-191 @0.9.5).
        return [
            Problem(
                "spec.lora.targetModules",
                f"{', '.join(outer)}: {arch.name} ties embed_tokens and lm_head to one weight matrix "
                "(tie_word_embeddings), so merging the adapter (spec.export, "
                "or a job that trains on this one) would change both: name decoder-layer modules only, or all",
            )
        ]
    if "lm_head" in outer and job.spec.training.liger_kernel and job.spec.training.stage in ("pt", "sft"):
        # Liger's fused linear cross-entropy takes self.lm_head.weight (liger_kernel/transformers/model/
        # qwen2.py:104-106 @0.8.5, the trainer image's pin; the same for every family), which for a
        # PEFT-wrapped lm_head is the base weight (peft/tuners/tuners_utils.py:1320-1333 @0.18.1): the
        # adapter's lm_head never enters the loss and stays untrained. LLaMA-Factory fuses it for pt
        # and sft only (llamafactory/model/loader.py:142 @0.9.5).
        return [
            Problem(
                "spec.lora.targetModules",
                "lm_head: spec.training.ligerKernel computes the loss from lm_head's base weight (fused linear "
                "cross-entropy), so its adapter would never be trained: drop lm_head, or set ligerKernel false",
            )
        ]
    return []


def image_problems(job: FineTuneJob) -> list[Problem]:
    """Settings whose package the default trainer image lacks (they would fail, or silently fall
    back, after the data and model stages already used GPU time).  With spec.image set the
    user vouches for the image; the trainer checks it again before any stage."""
    if job.spec.image is not None:
        return []
    problems: list[Problem] = []
    attention = job.spec.training.attention
    if attention in ATTENTION_PACKAGES:
        _, package = ATTENTION_PACKAGES[attention]
        problems.append(
            Problem(
                "spec.training.attention",
                f"{attention} needs the {package} package, which the default trainer image does not ship "
                "(its auto/sdpa attention already runs FlashAttention kernels inside PyTorch): use attention: auto, "
                "or build an image with it and set spec.image",
            )
        )
    for key, value in sorted((job.spec.extra_args or {}).items()):
        if key in ARG_PACKAGES and value not in (False, 0, "false", "False", ""):
            _, package = ARG_PACKAGES[key]
            if package not in IMAGE_PACKAGES:
                problems.append(
                    Problem(
                        f"spec.extraArgs.{key}",
                        f"needs the {package} package, which the default trainer image does not ship: remove it, or "
                        "build an image with it (FROM the kubetune trainer image) and set spec.image",
                    )
                )
    return problems


IGNORED_PREFERENCE_LOSSES = ("hinge", "ipo", "kto_pair")
"""pref_loss values that train as sigmoid DPO with the trainer image's TRL (0.24.0, images/trainer/pins.txt).
LLaMA-Factory calls ``self.dpo_loss(chosen, rejected, ref_chosen, ref_rejected)`` with four
arguments (src/llamafactory/train/dpo/trainer.py:206-208 @v0.9.5) and keeps the loss in
``self.loss_type``; TRL >= 0.20 takes the loss from a ``loss_type`` parameter defaulting to
"sigmoid" (trl/trainer/dpo_trainer.py:1020-1028 @v0.24.0), so these never take effect
(ipo still length-normalises the log-probabilities, dpo/trainer.py:234: a sigmoid loss on
per-token means).  The trainer refuses them again for a spec.image whose TRL does the same
(kubetune.trainer.stagecheck)."""


def preference_problems(job: FineTuneJob) -> list[Problem]:
    """Losses the default image would silently replace by sigmoid DPO."""
    t = job.spec.training
    if job.spec.image is not None or t.stage != "dpo" or t.preference is None:
        return []
    if t.preference.loss not in IGNORED_PREFERENCE_LOSSES:
        return []
    return [
        Problem(
            "spec.training.preference.loss",
            f"{t.preference.loss} would train as sigmoid DPO in the default trainer image (its TRL 0.24 ignores the "
            "loss LLaMA-Factory 0.9.5 asks for): use loss sigmoid, orpo or simpo, or stage kto for KTO, "
            "or an image whose TRL is older than 0.20 (spec.image)",
        )
    ]


def packing_problems(job: FineTuneJob) -> list[Problem]:
    """Packing that LLaMA-Factory refuses or ignores for the stage.

    ``neat_packing`` outside sft raises "`neat_packing` cannot be set as True except SFT."
    (src/llamafactory/hparams/parser.py:320-321 @v0.9.5). Plain ``packing`` only changes the
    processor for sft (pt always packs); rm/dpo (pairwise), kto (feedback) and ppo
    (unsupervised) processors ignore it (src/llamafactory/data/loader.py:198-224 @v0.9.5)."""
    t = job.spec.training
    if t.packing == "neat" and t.stage != "sft":
        return [
            Problem(
                "spec.training.packing",
                f"neat packing is for stage sft only (LLaMA-Factory refuses neat_packing with stage {t.stage}): "
                "set packing: none" + (" (stage pt always packs its text)" if t.stage == "pt" else ""),
            )
        ]
    if t.packing == "packing" and t.stage in ("rm", "dpo", "kto", "ppo"):
        return [
            Problem(
                "spec.training.packing",
                f"LLaMA-Factory ignores packing for stage {t.stage} (it packs only sft and pt data): set packing: none",
            )
        ]
    return []


def streaming_problems(job: FineTuneJob) -> list[Problem]:
    """``streaming`` with a bucket dataset (spec.datasets[].uri): LLaMA-Factory 0.9.5 has no way to
    stream from a bucket, so the trainer would stage the whole dataset first, which is what a user
    asking for streaming (a dataset larger than the volume) meant to avoid.

    * A ``file_name`` dataset is a local path (``os.path.join(dataset_dir, file_name)``, refused
      unless ``os.path.isdir``/``isfile``: llamafactory/data/loader.py:73-82 @0.9.5), and even with
      ``streaming`` it is loaded whole, then iterated (``load_dataset(..., streaming=... and
      load_from != "file")`` and ``to_iterable_dataset``: loader.py:131-143).
    * A ``cloud_file_name`` dataset (parser.py:141-142) is read whole into memory
      (``Dataset.from_list(read_cloud_json(...))``, loader.py:128-129; data_utils.py:183-205) by an
      s3fs filesystem with no endpoint, CA or key options (``fsspec.filesystem("s3")``,
      data_utils.py:158-162), anonymous first (:193), never streamed.
    * A Hub dataset's path cannot be a URI: datasets 4.0.0 sends a path with a scheme to neither a
      local folder nor the Hub (``is_relative_path``, datasets/utils/file_utils.py:75-76;
      load.py:918-923, 1033: "Couldn't find any data file").  datasets itself could stream
      remote ``data_files`` through fsspec (``url_to_fs(pattern, **storage_options)``,
      data_files.py:350; ``storage_options``, load.py:1202), but LLaMA-Factory gives it local
      files only and no ``storage_options`` (loader.py:131-141).
    * s3fs itself does not install beside the trainer's botocore 1.44.18: its newest aiobotocore
      (3.10.0) requires botocore<1.43.118,>=1.43.115, and s3fs 2026.9.0 fsspec==2026.9.0 where
      datasets 4.0.0 keeps fsspec 2025.3.0 (the wheels' METADATA)."""
    # Only a real true: any other value is refused by the catalog's type check already ("expects true
    # or false"), and a second problem for "no" or "0" would tell the user they asked for streaming.
    if (job.spec.extra_args or {}).get("streaming") is not True:
        return []
    held_out = job.spec.evaluation.datasets if job.spec.evaluation and job.spec.evaluation.datasets else []
    bucket = [(f"spec.datasets[{i}]", d) for i, d in enumerate(job.spec.datasets)] + [
        (f"spec.evaluation.datasets[{i}]", d) for i, d in enumerate(held_out)
    ]
    named = [f"{where}.uri ({d.name})" for where, d in bucket if d.uri is not None]
    if not named:
        return []
    return [
        Problem(
            "spec.extraArgs.streaming",
            f"LLaMA-Factory {catalog().version} cannot stream a dataset from a bucket, and {', '.join(named)} "
            "would be downloaded whole before training anyway: remove streaming (the trainer then stages the "
            "dataset into the outputs volume, as it does for every uri dataset), or put the dataset on the datasets "
            "volume (spec.datasets[].path) or the Hub (spec.datasets[].hub) to stream it",
        )
    ]


def _raw_semantic_problems(body: dict[str, Any]) -> list[Problem]:
    """The catalog checks on a document the models refused, so one run reports every problem."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return []
    problems: list[Problem] = []
    model = spec.get("model")
    if isinstance(model, dict) and isinstance(model.get("template"), str):
        problems.extend(_template_problems(model["template"]))
    extra = spec.get("extraArgs")
    if isinstance(extra, dict):
        scalars = {
            k: v
            for k, v in extra.items()
            if isinstance(k, str) and _ARG_NAME.match(k) and isinstance(v, (bool, int, float, str))
        }
        problems.extend(_extra_args_problems(scalars))
    return problems


def _template_problems(template: str) -> list[Problem]:
    known = catalog().templates
    if template in known:
        return []
    close = difflib.get_close_matches(template, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return [
        Problem(
            "spec.model.template",
            f"{show(template)} is not a LLaMA-Factory {catalog().version} template; {hint}"
            f"pick the one matching the model family (e.g. qwen, llama3, mistral, default)",
        )
    ]


def _extra_args_problems(extra: dict[str, Any]) -> list[Problem]:
    cat = catalog()
    problems: list[Problem] = []
    for key, value in sorted(extra.items()):
        path = join("spec.extraArgs", key)
        if key in SPEC_CONTROLLED:
            problems.append(
                Problem(path, f"is set by the spec: use {SPEC_CONTROLLED[key]} instead and remove it from extraArgs")
            )
            continue
        info = cat.args.get(key)
        if info is None:
            close = difflib.get_close_matches(key, list(cat.args), n=3, cutoff=0.75)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            problems.append(
                Problem(path, f"is not an argument of LLaMA-Factory {cat.version} (its parser would refuse it){hint}")
            )
            continue
        if isinstance(value, str) and "${" in value:
            problems.append(
                Problem(
                    path,
                    "contains '${', which OmegaConf (LLaMA-Factory's train.yaml reader) takes for an interpolation "
                    "and refuses or replaces: remove the '$' or the braces",
                )
            )
            continue
        if key in OVERRIDABLE and info.accepts(value):
            continue
        if not info.accepts(value):
            problems.append(Problem(path, f"LLaMA-Factory expects {info.describe()} here, got {show(value)}"))
    return problems


# --- pydantic errors -> Problems -------------------------------------------------------


def _from_pydantic(err: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    union_paths: set[str] = set()
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        # Unions and constrained-type wrappers add non-field segments; keep field names/indexes.
        path = _path(loc)
        if e["type"] == "kubetune_rule":
            for rule in (e.get("ctx") or {}).get("rules", []):
                message = str(rule["message"])
                rule_path = _join(path, str(rule.get("fieldPath", "")))
                if not rule_path and (m := _FIELD_AT_START.match(message)):
                    rule_path = m.group(1)
                problems.append(Problem(rule_path, message))
            continue
        if loc and loc[-1] in _UNION_MEMBERS:
            # One value failed every member of a scalar union (extraArgs values): one problem, not four.
            if path not in union_paths:
                union_paths.add(path)
                problems.append(
                    Problem(
                        path, f"must be a single value (true/false, a number or a string), got {_show(e.get('input'))}"
                    )
                )
            continue
        problems.append(Problem(path, _message(e, loc)))
    return problems


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # the error is about a mapping key; the path already ends with it
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "json-or-python", "lax-or-strict")):
            continue
        elif isinstance(part, str) and part in _UNION_MEMBERS:
            continue
        else:
            out = join(out, str(part))
    return out


_UNION_MEMBERS = {"bool", "int", "float", "str", "constrained-str", "list[...]", "dict[str,...]", "none"}


def _join(base: str, field_path: str) -> str:
    if not field_path:
        return base
    if not base:
        return field_path.lstrip(".")
    return base + field_path if field_path.startswith((".", "[")) else f"{base}.{field_path}"


def _message(e: Any, loc: tuple[Any, ...]) -> str:
    kind = e["type"]
    msg = str(e["msg"])
    if loc and loc[-1] == "[key]":
        return "the key " + _message({**e, "loc": loc[:-1]}, loc[:-1])
    ctx = e.get("ctx") or {}
    got = e.get("input")
    if kind == "missing":
        return "is required: add it"
    if kind == "extra_forbidden":
        close = _close_field(loc)
        hint = f" (did you mean {close}?)" if close else ""
        return f"is not a field of FineTuneJob{hint}: remove it or fix the spelling"
    if kind == "literal_error":
        return f"{show(got)} is not allowed; use {ctx.get('expected', 'one of the documented values')}"
    if kind == "string_pattern_mismatch":
        return f"{_show(got)} does not match {ctx.get('pattern')}: {_pattern_hint(ctx.get('pattern'))}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_show(got)}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number (e.g. 1.0e-4, unquoted), got {_show(got)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false (unquoted), got {_show(got)}"
    if kind in ("string_type",):
        return f"must be a string (quote it), got {_show(got)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of fields, got {_show(got)}"
    if kind == "list_type":
        return f"must be a list, got {_show(got)}"
    if kind == "value_error":  # an AfterValidator's own message, e.g. api/k8s.extended_resource_problems
        return msg.removeprefix("Value error, ")
    if kind in (
        "greater_than_equal",
        "greater_than",
        "less_than_equal",
        "less_than",
        "too_short",
        "too_long",
        "string_too_long",
        "string_too_short",
    ):
        return f"{msg[0].lower()}{msg[1:]} (got {_show(got)})"
    return msg


def _show(value: Any) -> str:
    return show(value)


def _type_name(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", type(None): "an empty document"}.get(
        type(value), type(value).__name__
    )


_PATTERN_HINTS = (
    (EXTENDED_RESOURCE_PATTERN, "use an extended resource name with its domain, e.g. nvidia.com/gpu or rdma/ib"),
    ("[-a-z0-9]", "use lower-case letters, digits and '-' (a Kubernetes name)"),
    ("@+=/-", "use a relative path of letters, digits and . _ - / (no spaces, quotes or shell characters)"),
    ("(/[A-Za-z0-9]", "use a Hugging Face Hub id such as Qwen/Qwen1.5-1.8B"),
    ("^[a-z][a-z0-9_]*$", "use a snake_case LLaMA-Factory argument name, e.g. neftune_noise_alpha"),
    ("^https?://", "use an http(s) address without spaces, quotes, $ or backslashes"),
)


def _pattern_hint(pattern: object) -> str:
    text = str(pattern)
    for marker, hint in _PATTERN_HINTS:
        if marker in text:
            return hint
    return "see `kubectl explain finetunejob.spec` for the allowed form"


def _close_field(loc: tuple[Any, ...]) -> str | None:
    """The known field closest to an unknown one, found by walking the models along loc."""
    model: type[BaseModel] | None = FineTuneJob
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part or n == part), None)
        if field is None:
            return None
        model = _model_of(field.annotation)
    if model is None or not loc:
        return None
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return close[0] if close else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


MAX_PROBLEMS = 20
"""Problems reported for one object; the rest are counted (a status condition, an Event and a
terminal all stay readable when a generated manifest is wrong in a thousand places)."""


def dedupe(problems: list[Problem]) -> list[Problem]:
    """Each (path, message) once, in order; past MAX_PROBLEMS one line counts the rest (FineTuneJob and
    FineTuneSweep checks alike)."""
    seen: set[tuple[str, str]] = set()
    out: list[Problem] = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    if len(out) > MAX_PROBLEMS:
        rest = len(out) - MAX_PROBLEMS
        out = [
            *out[:MAX_PROBLEMS],
            Problem(out[MAX_PROBLEMS].path, f"... and {rest} more problem(s) like the ones above"),
        ]
    return out


def problems_from_validation_error(err: ValidationError) -> list[Problem]:
    """A pydantic error of any API model as Problems with Kubernetes-style paths (FineTuneSweep's
    checks, kubetune.sweep.checks, report the same way as a FineTuneJob's)."""
    return _from_pydantic(err)
