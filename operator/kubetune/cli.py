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


def _kubeconfig_namespace() -> str:
    """The namespace of the current kubectl context, as kubectl picks it: $KUBECONFIG (a list of
    files; the first current-context set wins, contexts come from any file) or ~/.kube/config;
    "default" when none is set or nothing can be read. Read only, no cluster contact."""
    import os

    raw = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    current, contexts = "", {}
    for name in (p for p in raw.split(os.pathsep) if p):
        try:
            doc = yaml.safe_load(Path(name).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(doc, dict):
            continue
        current = current or str(doc.get("current-context") or "")
        for ctx in doc.get("contexts") or []:
            if isinstance(ctx, dict) and isinstance(ctx.get("context"), dict):
                contexts.setdefault(str(ctx.get("name")), ctx["context"])
    return str(contexts.get(current, {}).get("namespace") or "default")


def cmd_render(args: argparse.Namespace) -> int:
    jobs, problems = _load_valid_jobs(args.files)
    if problems:
        _print_problems(problems)
        return 1
    if not jobs:
        print("kubetune render: no FineTuneJob found in the input", file=sys.stderr)
        return 1
    for job in jobs:  # kubectl's rule for `apply -n NS -f FILE`
        if args.namespace and job.metadata.namespace and job.metadata.namespace != args.namespace:
            print(
                f'kubetune render: {job.name}: the namespace from the object "{job.metadata.namespace}" does not match '
                f'-n "{args.namespace}": drop metadata.namespace or -n',
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
            objects.extend(render(job, job_options).objects)
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
        parser_note = "LLaMA-Factory's parser skipped (--skip-llamafactory)"
        if job is not None and not problems and not args.skip_llamafactory:
            problems, parser_note = _llamafactory_problems(job, [j for _, d in docs if (j := validate_object(d)[0]) is not None])
        if problems:
            failed += 1
            _print_problems([(source, p) for p in problems])
            if job is None or not any(p.message.startswith(LF_REJECTS) for p in problems):
                print(f"{source}: LLaMA-Factory's parser did not run: fix the problems above first", file=sys.stderr)
        else:
            print(f"{source}: FineTuneJob {job.name if job else '?'} is valid; {parser_note}")
    return 1 if failed else 0


LF_REJECTS = "LLaMA-Factory rejects the rendered arguments"


def _llamafactory_problems(job: FineTuneJob, together: list[FineTuneJob] | None = None) -> tuple[list[Problem], str]:
    """Run the rendered arguments through LLaMA-Factory's own parser when it is installed;
    the problems, and a note saying whether the parser ran (and which version) or why not."""
    try:
        from kubetune.trainer.lfcheck import llamafactory_available, parse_train_args
    except ImportError as exc:  # pragma: no cover - trainer package always ships
        return [], f"LLaMA-Factory's parser did not run: {exc}"
    if not llamafactory_available():
        return [], "LLaMA-Factory's parser did not run: llamafactory is not installed here (pip install 'kubetune[train]' to run it too)"
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
    p.add_argument(
        "-n",
        "--namespace",
        help="namespace for jobs without metadata.namespace (default: the current kubectl context's, else 'default')",
    )
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
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default without -n)")
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--health-port", type=int, default=8081)
    p.add_argument("--trainer-image", default=None, help="default trainer image (Helm value trainer.image)")
    p.add_argument("--default-queue", default=None, help="Kueue LocalQueue for jobs that name none")
    p.add_argument("--peering", default="kubetune", help="kopf peering name; '' runs standalone (one replica only)")
    p.add_argument("--priority", type=int, default=0, help="peering priority: the highest-priority operator runs, others pause")
    p.add_argument("--sync-interval", type=float, default=15.0, help="seconds between status/progress reads of each started job")
    p.add_argument("--progress-port", type=int, default=0, help="serve the progress intake (trainers push progress) on this port; 0: off")
    p.add_argument(
        "--progress-url", default="", help="URL the training pods post progress to (the intake's Service); empty: pods only log"
    )
    p.add_argument("--progress-tls-cert", default=None, help="serve the intake over TLS with this certificate file")
    p.add_argument("--progress-tls-key", default=None, help="private key of --progress-tls-cert")
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
