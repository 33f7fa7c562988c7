"""``kubetune serve --local``: an OpenAI-compatible API for a trained model, on loopback.

The server is LLaMA-Factory's own (``llamafactory.api.app.create_app``) on its
Hugging Face backend, which runs on CPU; on GPUs the same arguments select its
vLLM backend.  Two things are added around it, as an ASGI layer, so that
clients see what they see from OpenAI or vLLM:

* the ``model`` of a request must be the served model's name (``/v1/models``
  lists it); another name is answered ``404`` ``model_not_found``, where
  LLaMA-Factory would silently answer with its one model;
* errors are OpenAI's error JSON, ``{"error": {"message", "type", "param",
  "code"}}``, instead of FastAPI's ``{"detail": ...}``, so the ``openai``
  client raises ``BadRequestError`` / ``NotFoundError`` with the message.

What is served is read from the job's output folder (``kubetune-run.json``
records the base model, template and method): the merged model when the job
exported one, else the base model plus the LoRA adapter, else the fully
fine-tuned weights.  ``--model`` / ``--adapter`` / ``--template`` override it.

Nothing heavy is imported at module level; LLaMA-Factory, uvicorn and torch
load only when a server starts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.api import contract

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeTarget:
    """What to load: a model folder (or Hub id), an optional LoRA adapter, the chat template, the served name."""

    model: str
    template: str
    name: str
    adapter: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def chat_args(self, max_new_tokens: int) -> dict[str, Any]:
        """Arguments for LLaMA-Factory's ``ChatModel`` (its inference argument parser rejects unknown keys)."""
        args: dict[str, Any] = {
            "model_name_or_path": self.model,
            "template": self.template,
            "infer_backend": "huggingface",
            "max_new_tokens": max_new_tokens,
            **self.extra,
        }
        if self.adapter:
            args.update(adapter_name_or_path=self.adapter, finetuning_type="lora")
        return args


def resolve_target(
    output_dir: str | None,
    *,
    model: str | None = None,
    adapter: str | None = None,
    template: str | None = None,
    name: str | None = None,
) -> ServeTarget:
    """Decide what to serve from a job's output folder and/or explicit paths; ValueError says what is missing."""
    record: dict[str, Any] = {}
    out = Path(output_dir) if output_dir else None
    if out is not None:
        if not out.is_dir():
            raise ValueError(f"{out}: no such folder (give the job's output folder, e.g. outputs/default/my-job)")
        try:
            loaded = json.loads((out / contract.RUN_RECORD_FILE).read_text(encoding="utf-8"))
            record = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            record = {}
    train_args = record.get("trainArgs") if isinstance(record.get("trainArgs"), dict) else {}
    assert isinstance(train_args, dict)
    extra: dict[str, Any] = {}
    if model is None and out is not None:
        if (out / contract.MERGED_SUBDIR / "config.json").is_file():
            model = str(out / contract.MERGED_SUBDIR)
        elif (out / "adapter_config.json").is_file():
            model = train_args.get("model_name_or_path") or _adapter_base(out)
            adapter = adapter or str(out)
            for key in (
                "quantization_bit",
                "quantization_method",
            ):  # a QLoRA adapter is served on the base it was trained on
                if train_args.get(key) is not None:
                    extra[key] = train_args[key]
        elif (out / "config.json").is_file():
            model = str(out)
    if not model:
        raise ValueError(
            f"{output_dir}: found no merged model, LoRA adapter or model weights there; give --model (and --adapter)"
            if out is not None
            else "give a job's output folder, or --model (and --adapter)"
        )
    template = template or train_args.get("template")
    if not template:
        raise ValueError("no chat template recorded for this model; give --template (e.g. qwen, llama3)")
    job = record.get("job") if isinstance(record.get("job"), dict) else {}
    assert isinstance(job, dict)
    served = name or job.get("name") or (out.name if out is not None else Path(model).name) or "model"
    return ServeTarget(model=str(model), template=str(template), name=str(served), adapter=adapter, extra=extra)


def _adapter_base(out: Path) -> str | None:
    try:
        value = json.loads((out / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


# --- the OpenAI-facing layer -------------------------------------------------------------------


def openai_error(
    message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body (what vLLM and the ``openai`` client use)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class ModelGate:
    """ASGI layer: a chat request for another model is refused before LLaMA-Factory sees it."""

    def __init__(self, app: ASGIApp, model_name: str) -> None:
        self.app = app
        self.model_name = model_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or not str(scope.get("path", "")).endswith("/chat/completions")
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        refusal = self.refusal(body)
        if refusal is not None:
            await _send_json(send, refusal[0], refusal[1])
            return
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        streaming = False

        async def send_chunks(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                streaming = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body" and streaming:
                message = {**message, "body": complete_chunks(message.get("body", b""))}
            await send(message)

        await self.app(scope, replay, send_chunks)

    def refusal(self, body: bytes) -> tuple[int, dict[str, Any]] | None:
        try:
            request = json.loads(body)
        except ValueError:
            return 400, openai_error("the request body is not valid JSON")
        if not isinstance(request, dict):
            return 400, openai_error("the request body must be a JSON object")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            return 400, openai_error(
                f"you must provide a model parameter (this server serves `{self.model_name}`)", param="model"
            )
        if model != self.model_name:
            return 404, openai_error(
                f"The model `{model}` does not exist. This server serves `{self.model_name}` (see /v1/models).",
                param="model",
                code="model_not_found",
            )
        if isinstance(request.get("messages"), list) and not request["messages"]:
            return 400, openai_error(
                "'messages' is empty: send at least one message", param="messages", code="empty_array"
            )
        return None


def complete_chunks(body: bytes) -> bytes:
    """Add ``object``/``created`` to streamed chunks: LLaMA-Factory drops defaulted fields (exclude_unset),
    OpenAI and vLLM send them."""
    out: list[bytes] = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            try:
                chunk = json.loads(line[6:])
            except ValueError:
                chunk = None
            if isinstance(chunk, dict) and "choices" in chunk:
                chunk.setdefault("object", "chat.completion.chunk")
                chunk.setdefault("created", int(time.time()))
                line = b"data: " + json.dumps(chunk, ensure_ascii=False).encode()
        out.append(line)
    return b"\n".join(out)


def build_app(chat_model: Any, model_name: str) -> ASGIApp:
    """LLaMA-Factory's FastAPI app with OpenAI error bodies, behind the model gate."""
    os.environ["API_MODEL_NAME"] = model_name  # read by LLaMA-Factory's /v1/models at request time
    from fastapi import Request  # noqa: PLC0415
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415
    from fastapi.responses import JSONResponse  # noqa: PLC0415
    from llamafactory.api.app import create_app  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415

    app = create_app(chat_model)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return JSONResponse(openai_error(str(exc.detail), type_=kind), status_code=exc.status_code, headers=exc.headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            openai_error(f"{where or 'request'}: {first.get('msg', 'invalid request')}", param=where), status_code=400
        )

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    gated: ASGIApp = ModelGate(app, model_name)
    return gated


def _path_like(text: str) -> bool:
    return Path(text).is_absolute() or text.startswith(("./", "../"))


def local_folder_problem(target: ServeTarget) -> str | None:
    """Why ``target`` cannot load, where the local disk alone shows it: said before LLaMA-Factory and
    torch are imported (about 10 s of CPU), with the outcome loading would have.

    transformers reads a name that is an existing folder as a local model and anything else as a Hub id
    (``cached_files``: ``os.path.isdir``, transformers/utils/hub.py:375-389 @5.6.0); a local folder
    without ``config.json`` yields no configuration (configuration_utils.py:728-742 @5.6.0), so no model.
    An adapter is read the same way by PEFT: ``adapter_config.json`` in the folder, else the Hub
    (peft/config.py:251-256, CONFIG_NAME in peft/utils/constants.py:350 @ the venv's peft), each of the
    comma-separated adapters LLaMA-Factory splits (hparams/model_args.py:211 @v0.9.5).  A path
    (absolute, ``./``, ``../``, ``~``) that does not exist is no Hub id (``namespace/name``) either.
    A Hub id is left to LLaMA-Factory."""
    checks = [(target.model, "config.json", "model", "a Hugging Face model folder")]
    for adapter in (target.adapter or "").split(","):
        if adapter.strip():
            checks.append((adapter.strip(), "adapter_config.json", "adapter", "a LoRA adapter folder"))
    for name, marker, role, kind in checks:
        path = Path(name)
        if path.is_dir():
            if not (path / marker).is_file():
                return f"{role} {path} holds no {marker}: not {kind} (give the folder with {marker})"
        elif path.exists():
            return f"{role} {path} is a file: give {kind} (the one with {marker})"
        elif name.startswith("~"):  # a shell leaves --model=~/x as it is, and so do transformers and PEFT
            return f"{role} {name}: no such folder (a leading ~ is not expanded: give the full path)"
        elif _path_like(name):
            return f"{role} {name}: no such folder"
    return None


def load_chat_model(target: ServeTarget, max_new_tokens: int) -> Any:
    """LLaMA-Factory's ChatModel on the Hugging Face backend for ``target`` (imported lazily: torch);
    ``kubetune serve --local``, ``kubetune chat`` and ``run --local``'s answer check load it here.
    OSError, before any heavy import, where :func:`local_folder_problem` finds one."""
    problem = local_folder_problem(target)
    if problem is not None:
        raise OSError(problem)
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    os.environ.setdefault("API_VERBOSE", "0")
    from llamafactory.chat import ChatModel  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return ChatModel(target.chat_args(max_new_tokens))


# --- running it --------------------------------------------------------------------------------


class Server:
    """uvicorn on a socket bound to 127.0.0.1 (port 0 picks a free one), in this thread or a background one."""

    def __init__(self, app: ASGIApp, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> None:
        import uvicorn  # noqa: PLC0415

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Block until stopped; Ctrl-C (SIGINT) or SIGTERM stops it gracefully (uvicorn re-raises SIGINT after)."""
        import asyncio  # noqa: PLC0415 - keeps `kubetune --help` light

        async def main() -> None:
            task = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not task.done():
                await asyncio.sleep(0.05)
            if self.server.started and on_ready is not None:
                on_ready()
            await task

        asyncio.run(main())

    def start_background(self, timeout: float = 30.0) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self.serve, args=(ready.set,), daemon=True, name="kubetune-serve")
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the API server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.sock.close()


def ask(base_url: str, model: str, question: str, max_tokens: int = 32) -> str:
    """One chat turn through the official ``openai`` client (as a user's program would).

    Without the client installed (it comes with the test extra), the same request goes as plain HTTP.
    """
    try:
        from openai import OpenAI  # noqa: PLC0415
    except ImportError:
        import urllib.request  # noqa: PLC0415

        body = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        ).encode()
        request = urllib.request.Request(
            f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 - our own loopback server
            return str(json.loads(resp.read())["choices"][0]["message"]["content"] or "")
    client = OpenAI(base_url=base_url, api_key=os.environ.get("API_KEY") or "none", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens
    )
    return reply.choices[0].message.content or ""


def results_cache(uri: str) -> Path:
    """Where a bucket job's results are copied for serving: one folder per URI, reused."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kubetune" / "outputs" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def fetch_results(
    uri: str, *, endpoint: str | None = None, dest: Path | None = None, only: tuple[str, ...] | None = None
) -> Path:
    """Copy a finished job's results from ``<spec.storage.outputs.uri><namespace>/<job>/`` (s3://,
    gs:// or az://) into a local folder; only a job whose completion marker exists (it succeeded)."""
    from kubetune.trainer import objectstore  # noqa: PLC0415 - boto3 comes with the train extra

    folder = dest or results_cache(uri)
    if dest is None:
        # Results of a private bucket (weights, the run record): the cache is the user's alone on
        # a shared host, as the bucket was.  mkdir's mode applies to the folders it creates, and
        # the umask narrows it only; a folder already there keeps the mode its owner gave it.
        for level in (folder.parent.parent, folder.parent):
            level.mkdir(mode=0o700, exist_ok=True, parents=level == folder.parent.parent)
    env = objectstore.shell_env(uri, endpoint, os.environ)
    fetched = objectstore.download_results(uri, folder, env, only=only)
    print(
        f"{uri}: {len(fetched)} file{'s' if len(fetched) != 1 else ''} downloaded into {folder}",
        file=sys.stderr,
        flush=True,
    )
    return folder


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.local:
        print(
            "kubetune serve: only --local is supported here; on a cluster set spec.serve on the FineTuneJob",
            file=sys.stderr,
        )
        return 2
    output_dir = args.output_dir
    if output_dir and output_dir.startswith(("s3://", "gs://", "az://")):
        from kubetune.trainer.errors import TrainerError  # noqa: PLC0415

        try:
            output_dir = str(fetch_results(output_dir, endpoint=args.endpoint))
        except (TrainerError, OSError) as exc:  # a StorageError names the URI, the store's error code and the fix
            print(f"kubetune serve: {exc}", file=sys.stderr)
            return 1
    try:
        target = resolve_target(
            output_dir, model=args.model, adapter=args.adapter, template=args.template, name=args.served_model_name
        )
    except ValueError as exc:
        print(f"kubetune serve: {exc}", file=sys.stderr)
        return 1
    what = f"{target.model} + adapter {target.adapter}" if target.adapter else target.model
    print(f"loading {what} (template {target.template}) ...", flush=True)
    try:
        chat_model = load_chat_model(target, args.max_new_tokens)
    except (OSError, ValueError) as exc:  # a missing folder, not a model, a template LLaMA-Factory does not know
        print(f"kubetune serve: cannot load {what}: {exc}", file=sys.stderr)
        return 1
    try:
        server = Server(build_app(chat_model, target.name), port=args.port)
    except OSError as exc:
        print(f"kubetune serve: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1

    def ready() -> None:
        print(
            f"serving model {target.name!r} at {server.base_url}  (OpenAI API: "
            "/chat/completions, /models; Ctrl-C stops)",
            flush=True,
        )

    try:
        server.serve(on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        server.sock.close()
    print("server stopped", flush=True)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``serve`` on the ``kubetune`` parser (called by kubetune.cli)."""
    p = sub.add_parser("serve", help="serve a trained model through an OpenAI-compatible API on 127.0.0.1 (--local)")
    p.add_argument(
        "output_dir",
        nargs="?",
        metavar="OUTPUT_DIR|URI",
        help="the job's output folder (e.g. outputs/default/my-job), or its results in a bucket: "
        "<spec.storage.outputs.uri><namespace>/<job>/ (s3://, gs:// or az://, keys from your shell)",
    )
    p.add_argument(
        "--endpoint",
        help="S3 API endpoint for a bucket URI (the spec's storage.objectStore.endpoint; default AWS, "
        "or Cloud Storage for gs://; for az:// the account's Blob endpoint, with AZURE_STORAGE_ACCOUNT_KEY)",
    )
    p.add_argument("--local", action="store_true", help="serve on this machine (required)")
    p.add_argument("--model", help="model folder or id (default: the merged model, or the job's base model)")
    p.add_argument("--adapter", help="LoRA adapter folder served on top of --model")
    p.add_argument("--template", help="LLaMA-Factory chat template (default: the one the job trained with)")
    p.add_argument("--served-model-name", help="the name clients send as `model` (default: the job's name)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1; 0 picks a free one (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=256, help="default answer length when a request sets no max_tokens"
    )
    p.set_defaults(func=cmd_serve)
