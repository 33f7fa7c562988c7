"""The ``kubetune`` command.

Sub-commands stay thin: they parse arguments, call the pure renderer (or the
trainer / operator, imported lazily so ``kubetune render`` never pays for
kopf or torch), and print.  Exit codes: 0 ok, 1 invalid input, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kubetune import __version__
from kubetune.api import FineTuneJob, load_documents
from kubetune.render import Problem, RenderOptions, render, validate_object


def _read_objects(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """(source label, document) for every document of every file ('-' is stdin)."""
    out: list[tuple[str, Any]] = []
    for p in paths:
        text = sys.stdin.read() if p == "-" else Path(p).read_text(encoding="utf-8")
        for i, doc in enumerate(load_documents(text)):
            out.append((f"{p}#{i}" if i else p, doc))
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
        print(f"{source}: {problem}", file=sys.stderr)


def _dump(objects: list[dict[str, Any]], output: str) -> str:
    from kubetune.render.output import to_json, to_yaml

    return to_json(objects) if output == "json" else to_yaml(objects)


def cmd_render(args: argparse.Namespace) -> int:
    jobs, problems = _load_valid_jobs(args.files)
    if problems:
        _print_problems(problems)
        return 1
    if not jobs:
        print("kubetune render: no FineTuneJob found in the input", file=sys.stderr)
        return 1
    options = RenderOptions(backend=args.backend, **({"image": args.image} if args.image else {}))
    objects: list[dict[str, Any]] = []
    for job in jobs:
        try:
            objects.extend(render(job, options).objects)
        except ValueError as exc:  # an option that contradicts the spec, e.g. --backend mpijob with launcher torchrun
            print(f"kubetune render: {job.name}: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write(_dump(objects, args.output))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    docs = [(s, d) for s, d in _read_objects(args.files) if _is_finetunejob(d)]
    if not docs:
        print("kubetune validate: no FineTuneJob found in the input", file=sys.stderr)
        return 1
    failed = 0
    for source, doc in docs:
        job, problems = validate_object(doc)
        if job is not None and not problems and not args.skip_llamafactory:
            problems = _llamafactory_problems(job)
        if problems:
            failed += 1
            _print_problems([(source, p) for p in problems])
        else:
            print(f"{source}: FineTuneJob {job.name if job else '?'} is valid")
    return 1 if failed else 0


def _llamafactory_problems(job: FineTuneJob) -> list[Problem]:
    """Run the rendered arguments through LLaMA-Factory's own parser when it is installed."""
    try:
        from kubetune.trainer.lfcheck import llamafactory_available, parse_train_args
    except ImportError:  # pragma: no cover - trainer package always ships
        return []
    if not llamafactory_available():
        return []
    rendered = render(job)
    return [Problem("spec", f"LLaMA-Factory rejects the rendered arguments: {err}") for err in parse_train_args(rendered.train_args)]


def cmd_crd(args: argparse.Namespace) -> int:
    from kubetune.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Fine-tune LLMs on Kubernetes with LLaMA-Factory.")
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("render", help="print the Kubernetes objects a FineTuneJob becomes (for GitOps)")
    p.add_argument("files", nargs="+", metavar="FILE", help="FineTuneJob manifests ('-' reads stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p.add_argument("--backend", choices=["pytorchjob", "mpijob"], help="override spec.distributed.backend")
    p.add_argument("--image", help="trainer image when spec.image is unset")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("validate", help="check FineTuneJobs; print every problem with its field and fix")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--skip-llamafactory",
        action="store_true",
        help="do not run LLaMA-Factory's own argument parser even when it is installed",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("crd", help="print the FineTuneJob CustomResourceDefinition")
    p.set_defaults(func=cmd_crd)

    from kubetune import localrun

    localrun.add_commands(sub)

    p = sub.add_parser("operator", help="run the operator (uses KUBECONFIG or the in-cluster config)")
    p.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces (repeatable)")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default inside a cluster; outside one, without -n, only the kubeconfig context's namespace is watched)")
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--health-port", type=int, default=8081)
    p.add_argument("--trainer-image", default=None, help="default trainer image (Helm value trainer.image)")
    p.add_argument("--default-queue", default=None, help="Kueue LocalQueue for jobs that name none")
    p.add_argument("--peering", default="kubetune", help="kopf peering name; '' runs standalone (one replica only)")
    p.add_argument("--priority", type=int, default=0, help="peering priority: the highest-priority operator runs, others pause")
    p.add_argument("--sync-interval", type=float, default=60.0, help="seconds between rank-0 log reads of a running job that does not push its progress (status follows the children through watches)")
    p.set_defaults(func=_cmd_operator)
    return parser


def _cmd_operator(args: argparse.Namespace) -> int:
    from kubetune.controller.main import run_operator

    return run_operator(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FileNotFoundError as exc:
        print(f"kubetune: {exc.filename}: no such file", file=sys.stderr)
        return 1
    except yaml.YAMLError as exc:
        print(f"kubetune: not valid YAML: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
