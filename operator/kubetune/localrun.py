"""``kubetune run --local``, ``kubetune chat`` and ``kubetune demo``: the cluster path, on this machine.

``run --local`` validates and renders the FineTuneJob with a :class:`Layout`
of local folders, writes ``Rendered.files`` where a pod would mount the
ConfigMap, and starts ``python -m kubetune.trainer`` with the environment the
rendered pod would get.  The trainer cannot tell the difference, so a job that
trains here trains the same way in the cluster.  The trainer's progress lines
(the operator's transport) drive a progress bar here.

Nothing heavy is imported at module level: ``kubetune render`` must not pay
for torch.  ``chat`` imports LLaMA-Factory inside the function.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:  # rich costs ~0.25 s to import: only the commands that draw load it
    from rich.console import Console
    from rich.progress import Progress

from kubetune.api import FineTuneJob, contract
from kubetune.api.progressline import parse_line
from kubetune.api.safeyaml import InputError, read_documents
from kubetune.api.text import line
from kubetune.render import RenderOptions, Rendered, render, validate_object

LOCAL_STATE = ".kubetune"
"""Folder under --output holding each job's rendered config and scratch space."""


@dataclass
class RunResult:
    """What a local run produced, read back from the run record."""

    exit_code: int
    output_dir: Path
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    log_file: Path | None = None


# --- loading and rendering ---------------------------------------------------------------


def load_job(path: str) -> tuple[FineTuneJob | None, list[str]]:
    """The single FineTuneJob in a file, or the problems that stop it."""
    jobs, problems = load_jobs(path)
    if problems:
        return None, problems
    if len(jobs) != 1:
        return None, [f"{path}: expected exactly one FineTuneJob, found {len(jobs)}"]
    return jobs[0], []


def load_jobs(path: str) -> tuple[list[FineTuneJob], list[str]]:
    """Every FineTuneJob in a file (a recipe may hold several), or the problems that stop them."""
    try:
        all_docs = read_documents(path)
    except InputError as exc:
        return [], [line(f"{path}: {exc}")]
    docs = [d for d in all_docs if isinstance(d, dict) and d.get("kind") == contract.KIND]
    if not docs:
        return [], [f"{path}: expected a FineTuneJob, found none"]
    jobs: list[FineTuneJob] = []
    problems: list[str] = []
    for i, doc in enumerate(docs):
        where = f"{path}#{i}" if i else path
        job, found = validate_object(doc)
        if job is None or found:
            problems += [line(f"{where}: {p}") for p in found]
            continue
        if job.spec.resources.nodes > 1:
            problems.append(
                f"{where}: spec.resources.nodes: run --local trains on this one machine; "
                "set nodes: 1 (or apply it to a cluster)"
            )
        jobs.append(job)
    return jobs, problems


def _references(job: FineTuneJob) -> list[tuple[Literal["model", "rewardModel"], str]]:
    refs: list[tuple[Literal["model", "rewardModel"], str]] = []
    if job.spec.model.from_job is not None:
        refs.append(("model", job.spec.model.from_job))
    ppo = job.spec.training.ppo
    if ppo is not None and ppo.reward_model.from_job is not None:
        refs.append(("rewardModel", ppo.reward_model.from_job))
    return refs


def run_order(jobs: list[FineTuneJob]) -> list[FineTuneJob]:
    """Jobs in an order where each runs after the jobs of the same file it builds on (file order otherwise)."""
    by_name = {j.name: j for j in jobs}
    done: list[FineTuneJob] = []
    seen: set[str] = set()

    def visit(job: FineTuneJob, stack: tuple[str, ...]) -> None:
        if job.name in seen or job.name in stack:
            return  # a cycle: resolve_from_job reports the missing source
        for _, name in _references(job):
            if name in by_name:
                visit(by_name[name], (*stack, job.name))
        seen.add(job.name)
        done.append(job)

    for job in jobs:
        visit(job, ())
    return done


def _source_object(
    name: str, namespace: str, jobs: Mapping[str, FineTuneJob], outcomes: Mapping[str, str], output: Path
) -> dict[str, Any] | None:
    """The referenced job as the operator would see it: from this run, else from an earlier
    local run's record under --output (its spec and outcome), else None (does not exist)."""
    if name in jobs:
        obj = jobs[name].to_api()
        obj["status"] = {"phase": outcomes[name]} if name in outcomes else {}
        return obj
    try:
        rec = json.loads((output / namespace / name / contract.RUN_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": rec.get("spec"),
        "status": {"phase": rec.get("outcome"), "message": rec.get("message")},
    }


def resolve_local(
    job: FineTuneJob,
    jobs: Mapping[str, FineTuneJob],
    outcomes: Mapping[str, str],
    output: Path,
    layout: contract.Layout,
) -> tuple[dict[str, Any], str | None]:
    """RenderOptions changes (model_source/reward_source) for job's fromJob references, or a problem."""
    from kubetune.render.chain import ModelSource, resolve_from_job, reward_base_problem  # noqa: PLC0415

    changes: dict[str, Any] = {}
    for ref, name in _references(job):
        obj = _source_object(name, job.namespace, jobs, outcomes, output)
        got = resolve_from_job(job, obj, reference=ref, layout=layout)
        if not isinstance(got, ModelSource):
            return {}, f"{job.name}: {got.reason}: {got.message}"
        changes["model_source" if ref == "model" else "reward_source"] = got
    if "model_source" in changes and "reward_source" in changes:
        problem = reward_base_problem(job, changes["model_source"], changes["reward_source"])
        if problem is not None:
            return {}, f"{job.name}: {problem.reason}: {problem.message}"
    return changes, None


def local_layout(job: FineTuneJob, output: Path, datasets: Path, models: Path) -> contract.Layout:
    state = output / LOCAL_STATE / f"{job.namespace}-{job.name}"
    return contract.Layout(
        config_dir=str(state / "config"),
        datasets_dir=str(datasets),
        models_dir=str(models),
        outputs_dir=str(output),
        scratch_dir=str(state / "scratch"),
    )


def _containers(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        for c in obj.get("containers", []) if isinstance(obj.get("containers"), list) else []:
            if isinstance(c, dict):
                yield c
        for v in obj.values():
            yield from _containers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _containers(v)


def pod_env(rendered: Rendered) -> dict[str, str]:
    """The plain-value environment of the rendered training container.

    Secret references (HF_TOKEN) are left out: locally they come from the
    user's own environment.  HOME stays the user's.
    """
    for container in _containers(rendered.workload):
        env = {e["name"]: str(e["value"]) for e in container.get("env", []) if isinstance(e, dict) and "value" in e}
        if contract.ENV_CONFIG_DIR in env:
            env.pop("HOME", None)
            return env
    raise RuntimeError("the rendered workload has no training container (renderer bug)")


def write_config(rendered: Rendered, layout: contract.Layout) -> Path:
    """Write Rendered.files where the ConfigMap would be mounted (replacing an older render)."""
    config_dir = Path(layout.config_dir)
    shutil.rmtree(config_dir, ignore_errors=True)
    config_dir.mkdir(parents=True)
    for name, text in rendered.files.items():
        (config_dir / name).write_text(text, encoding="utf-8")
    for sub in ("", "triton", "torch_extensions", "matplotlib"):
        (Path(layout.scratch_dir) / sub).mkdir(parents=True, exist_ok=True)
    return config_dir


# --- running the trainer -------------------------------------------------------------------


class _Display:
    """Turns the trainer's stdout protocol into a progress bar (or plain lines when not a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.losses: list[float] = []
        self._bar: Progress | None = None
        self._task: Any = None
        self._last_plain = 0.0

    def stage(self, event: dict[str, Any]) -> None:
        name, what = event.get("stage"), event.get("event")
        if what == "start" and name == "train" and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task("train", total=None, loss="-")
            self._bar.start()
        elif what in ("end", "failed") and name == "train":
            self.close()
        if what == "start":
            self.console.print(f"[dim]stage[/dim] {name} ...")
        elif what == "end":
            self.console.print(f"[dim]stage[/dim] {name} [green]done[/green] in {event.get('seconds', 0):.1f} s")
        elif what == "failed":
            self.console.print(f"[dim]stage[/dim] {name} [red]failed[/red]: {event.get('message', '')}")

    def progress(self, update: dict[str, Any]) -> None:
        loss = update.get("loss")
        step, total = int(update.get("step", 0)), int(update.get("totalSteps", 0))
        if isinstance(loss, (int, float)) and (not self.losses or step > len(self.losses)):
            self.losses.append(float(loss))
        shown = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=total or None, loss=shown)
            return
        now = time.monotonic()
        if now - self._last_plain >= 2.0 or step == total:
            self._last_plain = now
            eta = update.get("etaSeconds")
            self.console.print(f"  step {step}/{total}  loss {shown}" + (f"  eta {eta}s" if eta is not None else ""))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def run_trainer(
    env: Mapping[str, str],
    log_file: Path,
    console: Console,
    *,
    verbose: bool = False,
    on_start: Callable[[subprocess.Popen[str]], object] | None = None,
) -> tuple[int, list[float], list[str]]:
    """Start ``python -m kubetune.trainer``; returns (exit code, losses, last log lines).
    ``on_start`` gets the trainer's process once it started (``kubetune sweep --local`` stops a
    pruned trial through it)."""
    display = _Display(console)
    tail: deque[str] = deque(maxlen=40)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv list
            [sys.executable, "-m", "kubetune.trainer"],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        if on_start is not None:
            on_start(proc)
        try:
            for raw in proc.stdout:
                log.write(raw)
                text = raw.rstrip("\n")
                parsed = parse_line(text)
                if parsed is not None and parsed.kind == "progress":
                    display.progress(parsed.data)
                elif parsed is not None:
                    display.stage(parsed.data)
                elif text.strip():
                    tail.append(text)
                    if verbose:
                        console.print(text, markup=False, highlight=False)
            code = proc.wait()
        except KeyboardInterrupt:
            # The trainer got the same SIGINT and stops its workers; wait for it.
            code = proc.wait()
        finally:
            display.close()
    return code, display.losses, list(tail)


def run_local(
    job: FineTuneJob,
    *,
    output: Path,
    datasets: Path,
    models: Path,
    console: Console,
    verbose: bool = False,
    extra_env: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
    sources: Mapping[str, Any] | None = None,
    on_start: Callable[[subprocess.Popen[str]], object] | None = None,
    stopped: Callable[[], bool] | None = None,
) -> RunResult:
    """Render ``job`` for local folders and train it with the real trainer entrypoint.
    ``sources``: resolved fromJob references (:func:`resolve_local`).  ``on_start`` gets the trainer's
    process; ``stopped`` says whether the caller stopped it on purpose (then no failure is printed)."""
    output, datasets, models = output.resolve(), datasets.resolve(), models.resolve()
    layout = local_layout(job, output, datasets, models)
    rendered = render(job, RenderOptions(layout=layout, **dict(sources or {})))
    write_config(rendered, layout)
    env = dict(os.environ)
    env.update(pod_env(rendered))
    env.pop(contract.ENV_METRICS_PORT, None)  # a pod's metrics port: here only with --metrics-port, on loopback
    if metrics_port is not None:
        env.update({contract.ENV_METRICS_PORT: str(metrics_port), "KUBETUNE_METRICS_ADDR": "127.0.0.1"})
    env.update(extra_env or {})
    job_dir = Path(layout.job_output_dir(job.namespace, job.name))
    log_file = Path(layout.scratch_dir).parent / "trainer.log"
    started = time.monotonic()
    code, losses, tail = run_trainer(env, log_file, console, verbose=verbose, on_start=on_start)
    result = RunResult(code, job_dir, time.monotonic() - started, losses=losses, log_file=log_file)
    try:
        result.record = json.loads((job_dir / contract.RUN_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if code != contract.EXIT_OK and not verbose and not (stopped is not None and stopped()):
        console.print("[red]training failed[/red]; last lines of the trainer's output:", markup=True)
        for tail_line in tail[-15:]:
            console.print("  " + tail_line, markup=False, highlight=False)
    return result


def print_outputs(result: RunResult, console: Console) -> None:
    outputs = result.record.get("outputs", {}) if isinstance(result.record, dict) else {}
    lines = [f"output folder: {result.output_dir}"]
    labels = {"adapter": "LoRA adapter", "model": "model weights", "merged": "merged model", "lossPlot": "loss plot"}
    lines += [f"  {label}: {outputs[key]}" for key, label in labels.items() if key in outputs]
    if result.losses:
        lines.append(
            f"  loss: {result.losses[0]:.4f} -> {result.losses[-1]:.4f} over {len(result.losses)} logged steps"
        )
    evaluation = result.record.get("evaluation") if isinstance(result.record, dict) else None
    if isinstance(evaluation, dict):
        if evaluation.get("state") == "Succeeded":
            lines.append(f"  evaluation: {evaluation.get('summary', '')}  ({evaluation.get('path')})")
        else:
            lines.append(f"  evaluation failed (the trained model is kept): {evaluation.get('message', '')}")
    stages = result.record.get("stages") if isinstance(result.record, dict) else None
    upload = stages.get("upload") if isinstance(stages, dict) else None
    if result.exit_code == contract.EXIT_OK and isinstance(upload, dict) and upload.get("uri"):
        lines.append(f"  uploaded to: {upload['uri']} (complete: {upload['uri']}_KUBETUNE_COMPLETE)")
    lines.append(f"  trainer log: {result.log_file}")
    for out in lines:  # plain prints: paths must stay copy-pastable, never wrapped
        print(out, flush=True)


def local_only(args: argparse.Namespace, console: Console, command: str, kind: str) -> bool:
    """Whether ``kubetune <command>`` was asked to run locally (--local); if not, says where a ``kind``
    runs instead (the CLI then exits 2)."""
    if not args.local:
        console.print(
            f"kubetune {command}: only --local is supported; apply the {kind} to a cluster with kubectl apply -f FILE"
        )
    return bool(args.local)


def refused(problems: Sequence[object]) -> int:
    """The manifest's problems, one a line on stderr; the exit code 1."""
    for p in problems:
        print(p, file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if not local_only(args, console, "run", "FineTuneJob"):
        return 2
    jobs, problems = load_jobs(args.file)
    if problems:
        return refused(problems)
    output = Path(args.output).resolve()
    by_name = {j.name: j for j in jobs}
    outcomes: dict[str, str] = {}
    code = contract.EXIT_OK
    for job in run_order(jobs):
        if len(jobs) > 1:
            console.print(f"[bold]FineTuneJob {job.name}[/bold]")
        layout = local_layout(job, output, Path(args.datasets).resolve(), Path(args.models).resolve())
        sources, problem = resolve_local(job, by_name, outcomes, output, layout)
        if problem is not None:
            print(f"{args.file}: {problem}", file=sys.stderr)
            return 1
        result = run_local(
            job,
            output=output,
            datasets=Path(args.datasets),
            models=Path(args.models),
            console=console,
            verbose=args.verbose,
            sources=sources,
            metrics_port=args.metrics_port,
        )
        print_outputs(result, console)
        outcomes[job.name] = "Succeeded" if result.exit_code == contract.EXIT_OK else "Failed"
        if result.exit_code == contract.EXIT_RETRYABLE:
            console.print("interrupted: run the same command again to resume from the newest checkpoint")
        if result.exit_code != contract.EXIT_OK:
            code = result.exit_code
            break  # the jobs after it may build on it; run them once it succeeds
    return code


# --- chat -----------------------------------------------------------------------------------


def chat_once(chat_model: Any, messages: list[dict[str, str]], system: str | None = None) -> str:
    responses = chat_model.chat(messages, system=system)
    return str(responses[0].response_text) if responses else ""


def cmd_chat(args: argparse.Namespace) -> int:
    for flag, value, ok in (
        ("--temperature", args.temperature, args.temperature >= 0),
        ("--top-p", args.top_p, 0 < args.top_p <= 1),
        ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens >= 1),
    ):
        if not ok:
            print(
                f"kubetune chat: {flag} {value} is out of range (temperature >= 0, "
                "0 < top-p <= 1, max-new-tokens >= 1)",
                file=sys.stderr,
            )
            return 2
    from kubetune import localserve  # noqa: PLC0415 - one loader of LLaMA-Factory's ChatModel (serve --local uses it too)

    # The tutorial's cli_demo settings; temperature 0 means greedy decoding.
    sampling = {
        "do_sample": args.temperature > 0,
        "temperature": args.temperature if args.temperature > 0 else 1.0,
        "top_p": args.top_p,
    }
    target = localserve.ServeTarget(
        model=args.model_dir, template=args.template, name="chat", adapter=args.adapter, extra=sampling
    )
    try:
        chat_model = localserve.load_chat_model(target, args.max_new_tokens)
    except (OSError, ValueError) as exc:  # not a model folder, a template LLaMA-Factory does not know
        print(f"kubetune chat: cannot load {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    if args.message is not None:
        print(chat_once(chat_model, [{"role": "user", "content": args.message}], args.system))
        return 0
    history: list[dict[str, str]] = []
    print("type a message; 'clear' forgets the conversation, 'exit' quits")
    while True:
        try:
            text = input("user> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text == "exit":
            return 0
        if text == "clear":
            history.clear()
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        answer = chat_once(chat_model, history, args.system)
        history.append({"role": "assistant", "content": answer})
        print(f"assistant> {answer}")


# --- demo -----------------------------------------------------------------------------------


def demo_job(assets: Any, steps: int) -> dict[str, Any]:
    """The demo's FineTuneJob: LoRA on the tiny model, fp32 on CPU, export enabled."""
    from kubetune.trainer import tiny  # noqa: PLC0415 - tiny imports no heavy module at import

    # Rank 32 and lr 3e-3: on this 2-layer random model, what visibly lowers the loss in 40 steps.
    return tiny.tiny_job(
        "kubetune-demo",
        assets,
        method="lora",
        max_steps=steps,
        learning_rate=3e-3,
        export=True,
        extra_spec={"lora": {"rank": 32, "targetModules": ["all"]}},
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from kubetune.trainer import tiny  # noqa: PLC0415

    from rich.console import Console

    console = Console()
    work = Path(args.work).resolve()
    started = time.monotonic()
    console.print(f"[bold]kubetune demo[/bold] in {work} (no cluster, no Hub: a tiny random Qwen2 model on CPU)")
    assets = tiny.build_assets(work / "assets")
    assets_seconds = time.monotonic() - started
    manifest = demo_job(assets, args.steps)
    job_file = work / "finetunejob.yaml"
    job_file.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    console.print(f"FineTuneJob: {job_file}  (the same file runs with `kubetune run --local {job_file}`)")
    output = work / "outputs"
    shutil.rmtree(output, ignore_errors=True)
    job, problems = load_job(str(job_file))
    if job is None:
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    result = run_local(
        job,
        output=output,
        datasets=assets.datasets_dir,
        models=assets.models_dir,
        console=console,
        verbose=args.verbose,
    )
    print_outputs(result, console)
    if result.exit_code != contract.EXIT_OK:
        return result.exit_code
    from kubetune import localserve  # noqa: PLC0415 - the served model answers through the official openai client

    chat_started = time.monotonic()
    target = localserve.resolve_target(str(result.output_dir))  # the merged model the job exported
    server = localserve.Server(localserve.build_app(localserve.load_chat_model(target, 64), target.name), port=0)
    server.start_background()
    question = tiny.QA_PAIRS[0][0]
    try:
        answer = localserve.ask(server.base_url, target.name, question)
    finally:
        server.stop()
    chat_seconds = time.monotonic() - chat_started
    print(
        f"served {target.model} at {server.base_url} (OpenAI API; `kubetune serve --local "
        f"{result.output_dir}` keeps it up)"
    )
    via = (
        "through the openai client"
        if importlib.util.find_spec("openai")
        else "plain HTTP; pip install openai for the official client"
    )
    print(f"  user> {question}\n  assistant ({via})> {answer}", flush=True)
    console.print(
        f"figures: assets {assets_seconds:.1f} s, train+export {result.seconds:.1f} s, serve+ask {chat_seconds:.1f} s, "
        f"total {time.monotonic() - started:.1f} s"
    )
    return 0


# --- wiring -----------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Register run/chat/demo on the ``kubetune`` parser (called by kubetune.cli)."""
    p = sub.add_parser("run", help="train a FineTuneJob on this machine (--local)")
    p.add_argument("file", metavar="FILE", help="FineTuneJob manifest ('-' reads stdin)")
    p.add_argument("--local", action="store_true", help="train here instead of on a cluster (required)")
    p.add_argument("--output", default="outputs", help="outputs folder (like spec.storage.outputs); default ./outputs")
    p.add_argument("--datasets", default=".", help="folder spec.datasets[].path is relative to; default .")
    p.add_argument("--models", default=".", help="folder spec.model.path is relative to, and the Hub cache; default .")
    p.add_argument("-v", "--verbose", action="store_true", help="show the trainer's full output")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve the trainer's Prometheus metrics on 127.0.0.1:PORT/metrics while it trains",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="talk to a model (optionally with a LoRA adapter), as in the tutorial's demo step")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--adapter", help="LoRA adapter folder (a job's output folder)")
    p.add_argument("--template", required=True, help="LLaMA-Factory chat template, e.g. qwen")
    p.add_argument("--message", help="send one message, print the answer and exit")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens; default 64")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 (default) decodes greedily")
    p.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus sampling: keep the smallest token set with this probability mass; default 1.0",
    )
    p.add_argument(
        "--system", default=None, help="system prompt for the conversation (the template's default when unset)"
    )
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "demo", help="fine-tune a tiny local model end to end: LoRA, merge, serve it, ask it one question"
    )
    p.add_argument("--work", default=".kubetune-demo", help="work folder; default ./.kubetune-demo")
    p.add_argument("--steps", type=int, default=40, help="training steps; default 40")
    p.add_argument("-v", "--verbose", action="store_true", help="show the trainer's full output")
    p.set_defaults(func=cmd_demo)
