"""The ``kubetune`` command.

Sub-commands stay thin: they parse arguments, call the pure renderer (or the
trainer / operator, imported lazily so ``kubetune render`` never pays for
kopf or torch), and print.  Exit codes: 0 ok, 1 invalid input (one line per
problem, naming the file and the field), 2 usage error or an unexpected
failure (one line; ``--debug`` shows the traceback).  Every line quoting user
input is escaped (:mod:`kubetune.api.text`), so a manifest cannot forge output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from kubetune import __version__
from kubetune.api import FineTuneJob
from kubetune.api.safeyaml import InputError, read_documents
from kubetune.api.text import escape, line
from kubetune.render import Problem, RenderOptions, render, validate_object
from kubetune.cluster.backends import AUTO, BACKENDS, OFFLINE_DEFAULT


MAX_JOBS_PER_FILE = 100
"""FineTuneJobs read from one file: keeps any single input within seconds (each renders in ms)."""


class _Reported(Exception):
    """The input was refused and every reason is already printed (one line each): exit 1."""


class _Unreadable(_Reported):
    """Files that could not be read: (file, error) pairs, already reported."""


def _read_objects(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """(source label, document) for every document of every file ('-' is stdin).

    Every unreadable file is reported (one line each) before raising, so one
    run names every broken file."""
    out: list[tuple[str, Any]] = []
    failed = False
    for p in paths:
        try:
            docs = read_documents(p)
        except InputError as exc:
            print(line(f"{p}: {exc}"), file=sys.stderr)
            failed = True
            continue
        jobs = sum(1 for d in docs if _is_finetunejob(d))
        if jobs > MAX_JOBS_PER_FILE:
            print(
                line(f"{p}: holds {jobs} FineTuneJobs; at most {MAX_JOBS_PER_FILE} are read from one file: split it"),
                file=sys.stderr,
            )
            failed = True
            continue
        for i, doc in enumerate(docs):
            out.append((f"{p}#{i}" if i else p, doc))
    if failed:
        raise _Unreadable()
    return out


def _is_finetunejob(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "FineTuneJob"


def _load_valid_jobs(paths: Sequence[str]) -> tuple[list[FineTuneJob], list[tuple[str, Problem]]]:
    jobs: list[FineTuneJob] = []
    problems: list[tuple[str, Problem]] = []
    for source, doc in _read_objects(paths):
        if not _is_finetunejob(doc):
            continue
        job, found = validate_object(doc)
        problems.extend((source, p) for p in found)
        if job is not None and not found:
            jobs.append(job)
    return jobs, problems


def _print_problems(problems: Sequence[tuple[str, Problem]]) -> None:
    for source, problem in problems:
        print(line(f"{source}: {problem}"), file=sys.stderr)


def _valid_jobs(paths: Sequence[str], command: str) -> list[FineTuneJob]:
    """Every FineTuneJob of the input, all valid; otherwise print every problem (or that the input
    holds none) and raise :class:`_Reported`.  `render`, `plan` and the like refuse the whole input
    on one invalid job: nothing is printed for the valid ones."""
    jobs, problems = _load_valid_jobs(paths)
    if problems:
        _print_problems(problems)
        raise _Reported()
    if not jobs:
        _no_job_found(command)
    return jobs


def _no_job_found(command: str) -> NoReturn:
    print(f"kubetune {command}: no FineTuneJob found in the input", file=sys.stderr)
    raise _Reported()


def _dump(objects: list[dict[str, Any]], output: str) -> str:
    from kubetune.render.output import to_json, to_yaml

    return to_json(objects) if output == "json" else to_yaml(objects)


def _kubeconfig_namespace() -> str:
    """The namespace of the current kubectl context, as kubectl picks it ("default" when none is set or
    nothing can be read). Read only, no cluster contact: the one kubeconfig loader the operator and
    ``kubetune get``/``watch`` use too (kubetune.controller.kubeconfig), so they agree on the context."""
    from kubetune.controller.kubeconfig import kubeconfig_namespace

    return kubeconfig_namespace()


def cmd_render(args: argparse.Namespace) -> int:
    jobs = _valid_jobs(args.files, "render")
    for job in jobs:  # kubectl's rule for `apply -n NS -f FILE`
        if args.namespace and job.metadata.namespace and job.metadata.namespace != args.namespace:
            print(
                line(
                    f'kubetune render: {job.name}: the namespace from the object "{job.metadata.namespace}" does not '
                    f'match -n "{args.namespace}": drop metadata.namespace or -n'
                ),
                file=sys.stderr,
            )
            return 1
    namespace = args.namespace or _kubeconfig_namespace()
    options = RenderOptions(
        backend=args.backend, default_namespace=namespace, **({"image": args.image} if args.image else {})
    )
    objects: list[dict[str, Any]] = []
    for job in jobs:
        from kubetune.render.chain import Failed, with_sources

        job_options = with_sources(job, jobs, options)  # spec.model.fromJob: the source job in the same input
        if isinstance(job_options, Failed):
            print(f"kubetune render: {job.name}: {job_options.message}", file=sys.stderr)
            return 1
        try:
            if args.no_serve:
                objects.extend(render(job, job_options).objects)
            else:
                from kubetune.render.serving import manifests

                objects.extend(manifests(job, job_options))  # spec.serve: the serving objects after the training ones
        except ValueError as exc:  # an option that contradicts the spec, e.g. --backend mpijob with launcher torchrun
            print(line(f"kubetune render: {job.name}: {exc}"), file=sys.stderr)
            return 1
    sys.stdout.write(_dump(objects, args.output))
    return 0


def _is_sweep(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "FineTuneSweep"


def _validate_sweeps(docs: Sequence[tuple[str, Any]], args: argparse.Namespace) -> int:
    """FineTuneSweeps: the checks of kubetune.sweep.checks (what the operator runs before any trial);
    the count of invalid ones."""
    from kubetune.plan.feasibility import product_table
    from kubetune.sweep.checks import validate_sweep

    failed = 0
    for source, doc in docs:
        sweep, problems = validate_sweep(doc, gpu_memory=_gpu_memory_arg(args), product_table=product_table())
        if problems or sweep is None:
            failed += 1
            _print_problems([(source, p) for p in problems])
            continue
        spec = sweep.spec
        print(
            line(
                f"{source}: FineTuneSweep {sweep.name} is valid; {len(spec.parameters)} parameter(s), "
                f"algorithm {spec.algorithm}, earlyStopping {spec.early_stopping}, "
                f"up to {spec.max_trials} trials ({spec.parallelism} at a time), "
                f"objective {spec.objective.goal} {spec.objective.metric}"
            )
        )
    return failed


def cmd_validate(args: argparse.Namespace) -> int:
    objects = _read_objects(args.files)
    docs = [(s, d) for s, d in objects if _is_finetunejob(d)]
    sweeps = [(s, d) for s, d in objects if _is_sweep(d)]
    if not docs and not sweeps:
        print("kubetune validate: no FineTuneJob or FineTuneSweep found in the input", file=sys.stderr)
        raise _Reported()
    failed = _validate_sweeps(sweeps, args)
    checked = [(source, *validate_object(doc)) for source, doc in docs]
    together = [job for _, job, _ in checked if job is not None]  # fromJob resolves within the input
    for source, job, problems in checked:
        parser_note = "LLaMA-Factory's parser skipped (--skip-llamafactory)"
        if job is not None and not problems and not args.skip_llamafactory:
            problems, parser_note = _llamafactory_problems(job, together)
        if job is not None and not problems:
            problems, fit_note = _feasibility_problems(job, args)
            if fit_note:
                parser_note += f"; {fit_note}"
        if problems:
            failed += 1
            _print_problems([(source, p) for p in problems])
            if job is None or not any(p.message.startswith(LF_REJECTS) for p in problems):
                print(
                    line(f"{source}: LLaMA-Factory's parser did not run: fix the problems above first"), file=sys.stderr
                )
        else:
            print(line(f"{source}: FineTuneJob {job.name if job else '?'} is valid; {parser_note}"))
    return 1 if failed else 0


LF_REJECTS = "LLaMA-Factory rejects the rendered arguments"


def _gpu_memory_arg(args: argparse.Namespace) -> int | None:
    """Bytes of one GPU from --gpu NAME or --gpu-memory GiB (None when neither is given)."""
    from kubetune.plan import find_gpu

    if getattr(args, "gpu", None):
        return find_gpu(args.gpu).memory_bytes
    if getattr(args, "gpu_memory", None) is not None:
        return int(args.gpu_memory * 1024**3)
    return None


def _job_gpu_memory(job: FineTuneJob, args: argparse.Namespace) -> int | None:
    from kubetune.plan.feasibility import gpu_memory_for, product_table

    given = _gpu_memory_arg(args)
    return given if given is not None else gpu_memory_for(job, product_table())


def _feasibility_problems(job: FineTuneJob, args: argparse.Namespace) -> tuple[list[Problem], str | None]:
    """The operator's Feasible verdict, when the GPU memory is known (spec, node label, --gpu/--gpu-memory):
    the problem when it will not fit, else a note for the job's one "is valid" line when it does."""
    from kubetune.plan import feasibility

    verdict = feasibility(job, _job_gpu_memory(job, args))
    if verdict.status == "False":
        return [Problem("spec.resources", f"will not fit: {verdict.message}")], None
    if verdict.status == "True" and verdict.estimate is not None:
        return [], f"fits: {verdict.message}"
    return [], None


def _llamafactory_problems(job: FineTuneJob, together: list[FineTuneJob] | None = None) -> tuple[list[Problem], str]:
    """Run the rendered arguments through LLaMA-Factory's own parser when it is installed;
    the problems, and a note saying whether the parser ran (and which version) or why not."""
    try:
        from kubetune.trainer.lfcheck import llamafactory_available, parse_train_args
    except ImportError as exc:  # pragma: no cover - trainer package always ships
        return [], f"LLaMA-Factory's parser did not run: {exc}"
    if not llamafactory_available():
        return (
            [],
            "LLaMA-Factory's parser did not run: llamafactory is not installed here (pip install "
            "'kubetune[train]' to run it too)",
        )
    from importlib.metadata import PackageNotFoundError, version

    try:
        name = f"LLaMA-Factory {version('llamafactory')}"
    except PackageNotFoundError:  # pragma: no cover - importable but not installed as a distribution
        name = "LLaMA-Factory"
    from kubetune.render.chain import Failed, with_sources

    options = with_sources(job, together or [job], RenderOptions())
    if isinstance(options, Failed):
        return [], f"LLaMA-Factory's parser did not run: {options.message}"
    rendered = render(job, options)
    problems = [Problem("spec", f"{LF_REJECTS}: {err}") for err in parse_train_args(rendered.train_args)]
    return problems, f"{name}'s parser accepted its arguments"


def cmd_plan(args: argparse.Namespace) -> int:
    """Predict peak GPU memory per process, term by term, with a verdict and the cheapest fix."""
    import json

    from kubetune import plan
    from kubetune.plan import report
    from kubetune.plan.arch import catalogue

    if args.list_models or args.list_gpus:
        if args.list_models:
            print("\n".join(sorted(catalogue())))
        if args.list_gpus:
            # "stock image": kubetune's trainer image has code for it (plan/gpus.py Gpu.in_image).
            print(
                "\n".join(
                    f"{g.name:10s} {g.memory_mib / 1024:6.1f} GiB  {'stock image' if g.in_image else 'own image  '}  "
                    f"{', '.join(g.products)}"
                    for g in plan.GPUS
                )
            )
        return 0
    if not args.files:
        print("kubetune plan: give a FineTuneJob file (or --list-models / --list-gpus)", file=sys.stderr)
        return 2
    jobs = _valid_jobs(args.files, "plan")
    status, out = 0, []
    for job in jobs:
        try:
            # kubetune.plan(job, ...) in the SDK is this same call (kubetune/plan/jobcheck.py)
            verdict = plan.check(
                job,
                gpu_memory=args.gpu_memory,
                gpu=args.gpu,
                model_config=args.model_config,
                models_dirs=args.models_dir,
                together=jobs,
            )
        except (plan.UnknownModelError, KeyError, ValueError) as exc:
            print(f"kubetune plan: {job.name}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 1
        if args.output == "json":
            out.append({"name": job.name, **report.verdict_json(verdict)})
        else:
            print(f"# {job.name}")
            sys.stdout.write(report.render_verdict(verdict))
            if (
                verdict.reason == "GPUMemoryUnknown" and not verdict.message and verdict.estimate is not None
            ):  # no GPU memory known
                total = verdict.estimate.total
                fits = [g.name for g in plan.GPUS if g.memory_bytes >= total]
                print(
                    f"fits one GPU of: {', '.join(fits) or 'none listed'} (give --gpu NAME or "
                    "--gpu-memory GiB for a verdict)"
                )
        if verdict.status == "False":
            status = 1
    if args.output == "json":
        print(json.dumps(out, indent=2))
    return status


def cmd_crd(args: argparse.Namespace) -> int:
    from kubetune.api.crd import crd_yaml

    sys.stdout.write(crd_yaml(args.kind))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Fine-tune LLMs on Kubernetes with LLaMA-Factory.")
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_offline_commands(sub)

    p = sub.add_parser("crd", help="print the FineTuneJob (or FineTuneSweep) CustomResourceDefinition")
    p.add_argument(
        "--kind",
        choices=["FineTuneJob", "FineTuneSweep"],
        default="FineTuneJob",
        help="which kind's CRD (default FineTuneJob)",
    )
    p.set_defaults(func=cmd_crd)

    from kubetune import localrun, localsweep

    localrun.add_commands(sub)
    localsweep.add_commands(sub)

    from kubetune import localserve

    localserve.add_commands(sub)

    from kubetune import terminal

    terminal.add_commands(sub)

    _add_operator_command(sub)
    for command in sub.choices.values():
        # `kubetune validate --debug f.yaml` works too; SUPPRESS keeps the root's value otherwise.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_offline_commands(sub: Any) -> None:
    """render, validate and plan: what a FineTuneJob becomes, without a cluster."""
    p = sub.add_parser("render", help="print the Kubernetes objects a FineTuneJob becomes (for GitOps)")
    p.add_argument("files", nargs="+", metavar="FILE", help="FineTuneJob manifests ('-' reads stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p.add_argument(
        "--backend",
        choices=[*BACKENDS, AUTO],
        help=f"override spec.distributed.backend ({AUTO}: {OFFLINE_DEFAULT} without a cluster)",
    )
    p.add_argument("--image", help="trainer image when spec.image is unset")
    p.add_argument(
        "-n",
        "--namespace",
        help="namespace for jobs without metadata.namespace (default: the current kubectl context's, else 'default')",
    )
    p.add_argument(
        "--no-serve",
        action="store_true",
        help="leave out spec.serve's serving objects (by default printed after each job's training objects)",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "validate", help="check FineTuneJobs and FineTuneSweeps; print every problem with its field and fix"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--skip-llamafactory",
        action="store_true",
        help="do not run LLaMA-Factory's own argument parser even when it is installed",
    )
    _gpu_args(p)
    p.set_defaults(func=cmd_validate)

    # kubetune plan (issue 14): GPU memory planner
    p = sub.add_parser("plan", help="predict peak GPU memory per process, say whether it fits and the cheapest fix")
    p.add_argument("files", nargs="*", metavar="FILE")
    _gpu_args(p)
    p.add_argument(
        "--model-config", metavar="PATH", help="the model's config.json (or its folder) when it is not catalogued"
    )
    p.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="folder holding spec.model.path models or a Hugging Face cache (repeatable; HF_HOME is searched too)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument("--list-models", action="store_true", help="print the catalogued architectures")
    p.add_argument("--list-gpus", action="store_true", help="print the GPUs --gpu knows")
    p.set_defaults(func=cmd_plan)


def _add_operator_command(sub: Any) -> None:
    """kubetune operator: its flags are the chart's Deployment arguments."""
    p = sub.add_parser("operator", help="run the operator (uses KUBECONFIG or the in-cluster config)")
    p.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces (repeatable)")
    p.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default inside a cluster; outside one, without -n, "
        "only the kubeconfig context's namespace is watched)",
    )
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--health-port", type=int, default=8081)
    p.add_argument(
        "--trainer-image",
        default=None,
        help="default trainer image (Helm value trainer.image; kubetune's is CUDA 13.0 and needs "
        "NVIDIA driver R580+ on GPU nodes)",
    )
    p.add_argument("--default-queue", default=None, help="Kueue LocalQueue for jobs that name none")
    p.add_argument("--peering", default="kubetune", help="kopf peering name; '' runs standalone (one replica only)")
    p.add_argument(
        "--priority", type=int, default=0, help="peering priority: the highest-priority operator runs, others pause"
    )
    p.add_argument(
        "--sync-interval",
        type=float,
        default=60.0,
        help="seconds between rank-0 log reads of a running job that does not push its progress (status "
        "follows the children through watches)",
    )
    p.add_argument(
        "--progress-port",
        type=int,
        default=0,
        help="serve the progress intake (trainers push progress) on this port; 0: off",
    )
    p.add_argument(
        "--progress-url",
        default="",
        help="URL the training pods post progress to (the intake's Service); empty: pods only log",
    )
    p.add_argument("--progress-tls-cert", default=None, help="serve the intake over TLS with this certificate file")
    p.add_argument("--progress-tls-key", default=None, help="private key of --progress-tls-cert")
    p.add_argument(
        "--gpu-memory-by-product",
        action="append",
        default=[],
        metavar="PRODUCT=QUANTITY",
        help="memory of one GPU per nvidia.com/gpu.product value, added to the built-in table (as the chart's "
        "gpuMemoryByProduct; repeatable)",
    )
    p.set_defaults(func=_cmd_operator)


def _gpu_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--gpu", metavar="NAME", help="GPU model, e.g. H100, H200, A100-40GB, L40S (kubetune plan --list-gpus)"
    )
    g.add_argument("--gpu-memory", type=float, metavar="GiB", help="memory of one GPU in GiB")


def _cmd_operator(args: argparse.Namespace) -> int:
    from kubetune.controller.main import run_operator

    return run_operator(args)


EXIT_INTERNAL = 2
"""An unexpected failure (a bug): one line, traceback only with --debug."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _Reported:
        return 1
    except InputError as exc:
        print(line(f"kubetune: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kubetune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one catch-all: a message, never a traceback
        if getattr(args, "debug", False):
            raise
        what = escape(f"{type(exc).__name__}: {exc}")
        print(
            line(f"kubetune: unexpected error ({what}); rerun with --debug for the traceback and please report it"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
