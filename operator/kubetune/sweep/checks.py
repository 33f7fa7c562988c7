"""``validate_sweep(obj) -> (sweep | None, problems)``: every reason a FineTuneSweep is refused.

Three layers, run by ``kubetune validate`` and by the operator before any trial starts:

1. the pydantic models (the same rules as the CRD's schema and CEL, api/sweep.py): ranges,
   categorical values, the objective's metric against template.evaluation, parallelism, ...;
2. what CEL cannot say cheaply: each parameter path against the FineTuneJob schema
   (:mod:`kubetune.sweep.paths`: unknown, not a scalar, a field that can change on a running job,
   a float range on an integer field), the template's own FineTuneJob validation (re-rooted under
   spec.template), and each parameter's extreme values applied to the template (so a range that
   leaves the field's bounds, e.g. lora.rank up to 2048, is refused before any trial);
3. the GPU planner (kubetune.plan) on the extremes: a range whose largest setting cannot fit the
   GPUs is refused, when the GPU memory is known (resources.gpuMemory, the node selector's
   product with the operator's table, or ``gpu_memory``).

Never raises: whatever was parsed, the answer is a list of Problems.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubetune.api.contract import API_VERSION, KIND
from kubetune.api.safeyaml import InputError, normalize
from kubetune.api.sweep import SWEEP_KIND, FineTuneSweep, SweepParameter
from kubetune.api.text import clip, show
from kubetune.plan.feasibility import feasibility, gpu_memory_for
from kubetune.render.checks import dedupe, problems_from_validation_error, split_header, validate_object
from kubetune.render.types import Problem

from .paths import Leaf, PathError, apply, resolve

_SPEC_WORD = re.compile(r"\bspec\.(?!template\b)")
MAX_EXTREME_CHECKS = 256
"""Most template variants (one parameter at one extreme value) validated per sweep."""


def validate_sweep(
    obj: object, *, gpu_memory: int | None = None, product_table: Mapping[str, str] | None = None
) -> tuple[FineTuneSweep | None, list[Problem]]:
    """Validate one parsed FineTuneSweep document. Returns the sweep only when there are no problems."""
    try:
        return _validate(obj, gpu_memory, product_table)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raise"
        return None, [
            Problem("", f"could not validate this object ({type(exc).__name__}: {clip(str(exc))}); please report it")
        ]


def _rerooted(problems: list[Problem], root: str) -> list[Problem]:
    """FineTuneJob problems (``spec.x``) as problems of the template (``spec.template.x``)."""
    out: list[Problem] = []
    for p in problems:
        path = p.path
        if path == "spec" or path.startswith("spec."):
            path = root + path[len("spec") :]
        elif path.startswith("metadata"):
            path = "metadata"
        out.append(Problem(path, _SPEC_WORD.sub("spec.template.", p.message)))
    return out


def _validate(
    obj: object, gpu_memory: int | None, product_table: Mapping[str, str] | None
) -> tuple[FineTuneSweep | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [
            Problem(
                "", f"expected a FineTuneSweep mapping (apiVersion, kind, metadata, spec), got {type(obj).__name__}"
            )
        ]
    try:
        obj = dict(normalize(obj))
    except InputError as exc:
        return None, [Problem(exc.field, exc.message)]
    problems, body = split_header(obj, SWEEP_KIND)
    try:
        sweep = FineTuneSweep.from_api(body)
    except ValidationError as err:
        found = problems_from_validation_error(err)
        problems += [
            Problem(p.path, _SPEC_WORD.sub("spec.template.", p.message)) if p.path.startswith("spec.template") else p
            for p in found
        ]
        return None, dedupe(problems)
    problems += _template_problems(sweep)
    if not problems:
        problems += _parameter_problems(sweep)
    if not problems:
        problems += _fit_problems(sweep, gpu_memory, product_table)
    return (None if problems else sweep), dedupe(problems)


def _job(sweep: FineTuneSweep, spec: dict[str, Any]) -> dict[str, Any]:
    """A trial FineTuneJob document with ``spec`` (named like the sweep's last trial, the longest name)."""
    meta: dict[str, Any] = {"name": f"{sweep.name}-{sweep.spec.max_trials - 1}"}
    if sweep.metadata.namespace:
        meta["namespace"] = sweep.metadata.namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def _template(sweep: FineTuneSweep) -> dict[str, Any]:
    out: dict[str, Any] = sweep.spec.template.model_dump(
        by_alias=True, exclude_unset=True, exclude_none=True, mode="json"
    )
    return out


def _template_problems(sweep: FineTuneSweep) -> list[Problem]:
    """FineTuneJob's own validation of the template (the winner's spec: serve kept)."""
    _, found = validate_object(_job(sweep, _template(sweep)))
    return _rerooted(found, "spec.template")


def _kind_problem(p: SweepParameter, leaf: Leaf) -> str | None:
    if leaf.kind in ("bool", "str") or leaf.choices is not None:
        if p.type != "categorical":
            choices = f" (one of {', '.join(show(c) for c in leaf.choices)})" if leaf.choices else ""
            kind = "boolean" if leaf.kind == "bool" else "string" if leaf.kind == "str" else "fixed set of values"
            return f"spec.template.{leaf.path} takes a {kind}{choices}: use type: categorical with values"
        return None
    if leaf.kind == "int":
        if p.type == "float":
            return f"spec.template.{leaf.path} is an integer field: use type: int (or categorical with whole numbers)"
        if p.type == "categorical" and any(isinstance(v, bool) or not isinstance(v, int) for v in p.values or []):
            return f"spec.template.{leaf.path} is an integer field: every value must be a whole number"
        return None
    if p.type == "categorical" and any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in p.values or []):
        return f"spec.template.{leaf.path} is a number field: every value must be a number"
    return None


def _extremes(p: SweepParameter) -> list[Any]:
    if p.type == "categorical":
        return list(p.values or [])
    assert p.min is not None and p.max is not None
    if p.type == "int":
        return [int(p.min), int(p.max)]
    return [p.min, p.max]


def _parameter_problems(sweep: FineTuneSweep) -> list[Problem]:
    problems: list[Problem] = []
    template = _template(sweep)
    budget = MAX_EXTREME_CHECKS
    for i, p in enumerate(sweep.spec.parameters):
        where = f"spec.parameters[{i}]"
        try:
            leaf = resolve(p.path)
        except PathError as exc:
            problems.append(Problem(f"{where}.path", str(exc)))
            continue
        wrong = _kind_problem(p, leaf)
        if wrong:
            problems.append(Problem(f"{where}.type", wrong))
            continue
        for value in _extremes(p):
            if budget <= 0:
                break
            budget -= 1
            _, found = validate_object(_job(sweep, apply(template, {p.path: value})))
            if found:
                first = _rerooted(found, "spec.template")[0]
                bound = "values" if p.type == "categorical" else ("min" if value == _extremes(p)[0] else "max")
                problems.append(
                    Problem(
                        f"{where}.{bound}",
                        f"{p.path} = {show(value)} makes the trial invalid: {first}; "
                        "narrow the range or change spec.template",
                    )
                )
                break
    return problems


def _fit_problems(
    sweep: FineTuneSweep, gpu_memory: int | None, product_table: Mapping[str, str] | None
) -> list[Problem]:
    """The planner on every combination of the numeric parameters' ends (categorical values included,
    at most MAX_EXTREME_CHECKS combinations): the first that cannot fit the GPUs is refused."""
    template = _template(sweep)
    first_job, found = validate_object(_job(sweep, template))
    if first_job is None or found:
        return []
    memory = gpu_memory if gpu_memory is not None else gpu_memory_for(first_job, product_table)
    if memory is None or first_job.spec.resources.gpus_per_node == 0:
        return []  # unknown GPU memory: the operator plans each trial (Feasible condition), as for any job
    choices = [[(p.path, v) for v in _extremes(p)] for p in sweep.spec.parameters]
    for combo in itertools.islice(itertools.product(*choices), MAX_EXTREME_CHECKS):
        values = dict(combo)
        job, found = validate_object(_job(sweep, apply(template, values)))
        if job is None or found:
            continue  # reported by the parameter checks
        verdict = feasibility(job, memory)
        if verdict.status == "False":
            setting = ", ".join(f"{k} = {show(v)}" for k, v in values.items())
            return [
                Problem(
                    "spec.parameters",
                    f"a trial with {setting} will not fit the GPUs: {verdict.message}; "
                    "narrow the parameter ranges (or give the template more GPU memory per "
                    "process) before any trial starts",
                )
            ]
    return []
