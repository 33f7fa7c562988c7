"""Prometheus metrics of a training run, served by global rank 0.

Fed from the same records as the progress lines: every ``trainer_log.jsonl``
record that :class:`~.progress.LogFollower` reads also goes to
:class:`TrainerMetrics` (through :class:`MeteredTracker`).  With metrics on,
the trainer asks LLaMA-Factory for the token count
(``include_num_input_tokens_seen: non_padding``: real tokens, not padding) and
for peak accelerator memory (``RECORD_VRAM=1``), which it then logs in each
record as ``total_tokens`` and ``vram_allocated`` (GiB).

Enabled by ``KUBETUNE_METRICS_PORT`` (the renderer sets it in every training
pod and declares the container port ``metrics``; only global rank 0 serves).
``KUBETUNE_METRICS_ADDR`` is the bind address (``0.0.0.0`` in a pod;
``run --local`` uses ``127.0.0.1``).  No prometheus_client in the training
image: the text exposition format (version 0.0.4) is written here.

MFU estimate: ``6 * parameters * tokens/s / (devices * peak FLOP/s)``, the
dense-transformer rule of thumb (forward + backward, attention not counted).
Parameters come from the model's ``config.json``; peak FLOP/s from
``KUBETUNE_PEAK_TFLOPS`` (per device) or, failing that, from the GPU model
named in ``/proc/driver/nvidia/gpus/*/information`` (dense BF16 tensor-core
figures below).  Without both, no MFU is exported rather than a wrong one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from glob import glob
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubetune.api import Progress

from .progress import ProgressSink, ProgressTracker

ENV_PORT = "KUBETUNE_METRICS_PORT"
ENV_ADDR = "KUBETUNE_METRICS_ADDR"
ENV_PEAK_TFLOPS = "KUBETUNE_PEAK_TFLOPS"
PREFIX = "kubetune_trainer_"

PEAK_TFLOPS_BF16 = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "B200": 2250.0,
}
"""Dense BF16 (V100: FP16) tensor-core peak per GPU, from the vendors' data sheets; longest name first when matching."""

# name -> (help, type)
METRICS: dict[str, tuple[str, str]] = {
    "step": ("Optimizer steps done", "gauge"),
    "total_steps": ("Optimizer steps planned", "gauge"),
    "epoch": ("Fractional epoch reached", "gauge"),
    "loss": ("Training loss at the last logged step", "gauge"),
    "learning_rate": ("Learning rate at the last logged step", "gauge"),
    "tokens_per_second": ("Input tokens (non-padding) per second over the last logging interval, all ranks", "gauge"),
    "samples_per_second": ("Training samples per second over the last logging interval, all ranks", "gauge"),
    "tokens_total": ("Input tokens (non-padding) seen so far", "counter"),
    "peak_gpu_memory_bytes": ("Peak accelerator memory allocated by rank 0 (torch max_memory_allocated)", "gauge"),
    "mfu_ratio": ("Model FLOPs utilisation estimate, 6*params*tokens/s over peak FLOP/s (0..1)", "gauge"),
    "eta_seconds": ("Estimated seconds to the end of training", "gauge"),
    "last_update_timestamp_seconds": ("When the trainer last logged a step (Unix time)", "gauge"),
}


def enabled(env: Mapping[str, str]) -> bool:
    return bool(env.get(ENV_PORT, "").strip())


def train_args(env: Mapping[str, str]) -> dict[str, Any]:
    """Extra LLaMA-Factory arguments when metrics are on: count tokens so tokens/s can be exported."""
    return {"include_num_input_tokens_seen": "non_padding"} if enabled(env) else {}


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The training child's environment: LLaMA-Factory logs peak memory per step with RECORD_VRAM."""
    out = dict(env)
    if enabled(env):
        out.setdefault("RECORD_VRAM", "1")
    return out


def parameter_count(config: Mapping[str, Any]) -> int | None:
    """Approximate parameters of a decoder-only transformer from its Hugging Face config."""
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    assert isinstance(cfg, Mapping)
    try:
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        inter = int(cfg.get("intermediate_size") or 4 * h)
        heads = int(cfg.get("num_attention_heads") or 1)
        kv = int(cfg.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(cfg.get("head_dim") or h // max(heads, 1))
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp) + embeddings


def peak_flops_per_device(
    env: Mapping[str, str], gpu_info_glob: str = "/proc/driver/nvidia/gpus/*/information"
) -> float | None:
    value = env.get(ENV_PEAK_TFLOPS, "").strip()
    if value:
        try:
            return float(value) * 1e12
        except ValueError:
            return None
    for path in sorted(glob(gpu_info_glob))[:1]:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        model = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("Model:")), "")
        for name in sorted(PEAK_TFLOPS_BF16, key=len, reverse=True):
            if name in model.upper():
                return PEAK_TFLOPS_BF16[name] * 1e12
    return None


class TrainerMetrics:
    """The latest values, updated from trainer_log.jsonl records (thread-safe), rendered as Prometheus text."""

    def __init__(
        self,
        job: str,
        namespace: str,
        *,
        samples_per_step: int = 1,
        parameters: int | None = None,
        devices: int = 1,
        peak_flops: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.labels = {"finetunejob": job, "finetunejob_namespace": namespace}
        self.samples_per_step = max(samples_per_step, 1)
        self.parameters = parameters
        self.devices = max(devices, 1)
        self.peak_flops = peak_flops
        self._clock, self._wall = clock, wall
        self._values: dict[str, float] = {}
        self._previous: tuple[int, int | None, float] | None = None  # (step, total tokens, when)
        self._lock = threading.Lock()

    def observe(self, record: Mapping[str, Any], progress: Progress | None) -> None:
        step = record.get("current_steps")
        if not isinstance(step, int):
            return
        now = self._clock()
        tokens = record.get("total_tokens") if isinstance(record.get("total_tokens"), int) else None
        with self._lock:
            v = self._values
            if progress is not None:
                v["step"], v["total_steps"] = float(progress.step), float(progress.total_steps)
                for key, value in (
                    ("epoch", progress.epoch),
                    ("loss", progress.loss),
                    ("learning_rate", progress.learning_rate),
                    ("eta_seconds", progress.eta_seconds),
                ):
                    if value is not None:
                        v[key] = float(value)
            if tokens is not None:
                v["tokens_total"] = float(tokens)
            if isinstance(record.get("vram_allocated"), (int, float)) and record["vram_allocated"] > 0:
                v["peak_gpu_memory_bytes"] = max(
                    v.get("peak_gpu_memory_bytes", 0.0), float(record["vram_allocated"]) * 1024**3
                )
            previous = self._previous
            if previous is not None and step > previous[0] and now > previous[2]:
                seconds = now - previous[2]
                v["samples_per_second"] = (step - previous[0]) * self.samples_per_step / seconds
                if tokens is not None and previous[1] is not None and tokens >= previous[1]:
                    v["tokens_per_second"] = (tokens - previous[1]) / seconds
            elif previous is None and isinstance(record.get("throughput"), (int, float)):
                v["tokens_per_second"] = float(record["throughput"])  # LLaMA-Factory's average since its start
            if "tokens_per_second" in v and self.parameters and self.peak_flops:
                v["mfu_ratio"] = 6.0 * self.parameters * v["tokens_per_second"] / (self.devices * self.peak_flops)
            v["last_update_timestamp_seconds"] = self._wall()
            self._previous = (step, tokens, now)

    def exposition(self) -> str:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels.items())
        with self._lock:
            values = dict(self._values)
        lines: list[str] = []
        for name, (help_text, kind) in METRICS.items():
            if name not in values or not math.isfinite(values[name]):
                continue
            lines += [
                f"# HELP {PREFIX}{name} {help_text}",
                f"# TYPE {PREFIX}{name} {kind}",
                f"{PREFIX}{name}{{{labels}}} {values[name]!r}",
            ]
        lines += [
            "# HELP kubetune_trainer_up 1 while rank 0 of the training serves metrics",
            "# TYPE kubetune_trainer_up gauge",
            f"kubetune_trainer_up{{{labels}}} 1",
        ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """GET /metrics on a daemon thread (standard library only)."""

    def __init__(self, metrics: TrainerMetrics, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's port, scraped by Prometheus
        exposition = metrics.exposition

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # scrapes are not the trainer's log
                return

        self.httpd = ThreadingHTTPServer((addr, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, name="kubetune-metrics", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MeteredTracker(ProgressTracker):
    """A ProgressTracker that also hands every record to the metrics."""

    def __init__(self, sink: ProgressSink, metrics: TrainerMetrics) -> None:
        super().__init__(sink)
        self.metrics = metrics

    def feed(self, record: dict[str, Any]) -> Progress | None:
        progress = super().feed(record)
        self.metrics.observe(record, progress if progress is not None else self.last)
        return progress


def tracker(
    sink: ProgressSink,
    env: Mapping[str, str],
    *,
    job: str,
    namespace: str,
    train_args: Mapping[str, Any],
    world_size: int,
) -> ProgressTracker:
    """The tracker rank 0 feeds; with KUBETUNE_METRICS_PORT set it also serves /metrics (a bad
    port only disables metrics)."""
    if not enabled(env):
        return ProgressTracker(sink)
    per_step = (
        int(train_args.get("per_device_train_batch_size") or 1)
        * int(train_args.get("gradient_accumulation_steps") or 1)
        * world_size
    )
    parameters = None
    model_dir = Path(str(train_args.get("model_name_or_path", "")))
    try:
        parameters = parameter_count(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        parameters = None
    metrics = TrainerMetrics(
        job,
        namespace,
        samples_per_step=per_step,
        parameters=parameters,
        devices=world_size,
        peak_flops=peak_flops_per_device(env),
    )
    try:
        MetricsServer(metrics, int(env[ENV_PORT]), env.get(ENV_ADDR) or "0.0.0.0")  # noqa: S104
    except (OSError, ValueError) as exc:
        print(f"kubetune trainer: metrics disabled: cannot serve on port {env.get(ENV_PORT)!r}: {exc}", flush=True)
        return ProgressTracker(sink)
    return MeteredTracker(sink, metrics)
