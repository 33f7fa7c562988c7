"""The train stage: pick the launch shape, resume from the newest complete checkpoint, train.

Shapes (see :mod:`.distenv` for the environment mapping):

* single node or PyTorchJob, launcher torchrun/deepspeed: what
  ``llamafactory-cli train`` does (llamafactory/launcher.py), with our worker
  module in place of its launcher file: ``torchrun --nnodes --node_rank
  --nproc_per_node --master_addr --master_port -m kubetune.trainer.worker
  <train.yaml>`` when distributed or DeepSpeed (``FORCE_TORCHRUN`` set, which
  LLaMA-Factory's parser checks), else the worker alone.
* launcher accelerate: ``accelerate launch --config_file accelerate.yaml
  --machine_rank ... -m kubetune.trainer.worker <train.yaml>``.
* MPIJob: mpirun already started one trainer per GPU, so this process takes
  ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from ``OMPI_*`` and trains in-process.

The arguments LLaMA-Factory gets are the ConfigMap's train.yaml plus, after a
restart, ``resume_from_checkpoint``: the ConfigMap is read-only, so the
effective file is written to scratch space; the total step count does not
change because nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from kubetune.api import contract, yamldump

from . import checkpoints, distenv, metrics
from .config import JobConfig
from .errors import Retryable, TrainerError
from .fingerprint import BOOKKEEPING_ARGS
from .launch import Child, classify, stop_budgets
from .progress import TRAINER_LOG, LogFollower, ProgressSink


def scratch_dir(env: Mapping[str, str]) -> Path:
    """A writable folder: TMPDIR, else the pod's scratch emptyDir (the root filesystem is read-only)."""
    for candidate in (env.get("TMPDIR"), contract.SCRATCH_DIR):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return Path(candidate)
    return Path(tempfile.gettempdir())


def needs_optimizer(train_args: Mapping[str, Any]) -> bool:
    return not bool(train_args.get("save_only_model", False))


def quarantine_incomplete(output_dir: Path, train_args: Mapping[str, Any]) -> list[Path]:
    """Move checkpoints a kill left half-written out of LLaMA-Factory's sight (global rank 0 only).

    They are renamed, not deleted: kubetune never deletes from the outputs volume.
    """
    moved: list[Path] = []
    if not output_dir.is_dir():
        return moved
    data_dir = Path(str(train_args.get("dataset_dir") or output_dir / contract.DATA_SUBDIR))
    for folder in sorted(data_dir.glob("tokenized-*")) if data_dir.is_dir() else []:
        if folder.is_dir() and not tokenized_complete(folder):
            target = folder.with_name(f".incomplete-{folder.name}-{int(time.time())}")
            folder.rename(target)
            moved.append(target)
    for folder in sorted(output_dir.glob("checkpoint-*")):
        if folder.is_dir() and not checkpoints.is_complete(folder, needs_optimizer=needs_optimizer(train_args)):
            target = folder.with_name(f".incomplete-{folder.name}-{int(time.time())}")
            folder.rename(target)
            moved.append(target)
    return moved


NOT_DATA = BOOKKEEPING_ARGS | frozenset(
    {
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_ratio",
        "warmup_steps",
        "weight_decay",
        "max_grad_norm",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "per_device_eval_batch_size",
        "eval_strategy",
        "eval_steps",
        "finetuning_type",
        "lora_rank",
        "lora_alpha",
        "lora_dropout",
        "lora_target",
        "freeze_trainable_layers",
        "freeze_trainable_modules",
        "quantization_bit",
        "quantization_type",
        "double_quantization",
        "deepspeed",
        "bf16",
        "fp16",
        "disable_gradient_checkpointing",
        "flash_attn",
        "enable_liger_kernel",
    }
)
"""Arguments that do not change the tokenised dataset (the bookkeeping, and those that change only how
it is trained); every other one (template, cutoff_len, stage, packing, max_samples, val_size, seed, the
tokenizer's model...) keys the cache."""


def tokenized_path(cfg: JobConfig) -> Path:
    """Where LLaMA-Factory saves (first run) and loads (restarts) the tokenised dataset: on the
    outputs volume, keyed by everything that changes it, so a restart skips tokenisation and a
    changed spec or edited data file never reads a stale cache."""
    from . import data  # noqa: PLC0415

    conf = {k: v for k, v in sorted(cfg.train_args.items()) if k not in NOT_DATA}
    blob = json.dumps(
        {"args": conf, "data": data.digest(cfg), "files": data.file_stamps(cfg)}, sort_keys=True, default=str
    )
    return cfg.data_dir / f"tokenized-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def tokenized_complete(folder: Path) -> bool:
    """datasets' DatasetDict.save_to_disk writes dataset_dict.json first and each split's state.json last."""
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return False
    return bool(splits) and all((folder / str(s) / "state.json").is_file() for s in splits)


def effective_args(cfg: JobConfig) -> tuple[dict[str, Any], Path | None]:
    """train.yaml plus the checkpoint to resume from, if a complete one exists, and the tokenised-data cache."""
    args = dict(cfg.train_args)
    resume = checkpoints.newest_complete(cfg.output_dir, needs_optimizer=needs_optimizer(args))
    if resume is not None:
        args["resume_from_checkpoint"] = str(resume)
    if not args.get("streaming") and "tokenized_path" not in args:
        args["tokenized_path"] = str(tokenized_path(cfg))
    return args, resume


def write_args(args: Mapping[str, Any], env: Mapping[str, str]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="kubetune-", dir=scratch_dir(env)))
    path = folder / contract.TRAIN_ARGS_FILE
    # Quoted so OmegaConf (LLaMA-Factory's reader) gets exactly these values back.
    path.write_text(yamldump.dump(dict(args)), encoding="utf-8")
    return path


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The interpreter's own bin folder first: torchrun/accelerate must be this Python's."""
    out = dict(env)
    bindir = os.path.dirname(sys.executable)
    out["PATH"] = bindir + os.pathsep + out.get("PATH", os.defpath)
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def command(
    cfg: JobConfig, dist: distenv.Distribution, args_file: Path, env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the training child (torchrun and accelerate shapes)."""
    launcher = cfg.job.spec.distributed.effective_launcher
    accelerate = cfg.file(contract.ACCELERATE_FILE)
    if launcher == "accelerate" and accelerate is not None:
        argv = distenv.accelerate_argv(str(accelerate), dist, [str(args_file)])
        child = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        return argv, child_env(child)
    force = bool(cfg.train_args.get("deepspeed"))
    child = distenv.launcher_env(env, dist, force_torchrun=force)
    worker = ["-m", "kubetune.trainer.worker", str(args_file)]
    if child.get("FORCE_TORCHRUN") != "1":
        return [sys.executable, *worker], child_env(child)
    # llamafactory/launcher.py's own defaults for distributed runs (OPTIM_TORCH).
    child.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    child.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        child["NNODES"],
        "--node_rank",
        child["NODE_RANK"],
        "--nproc_per_node",
        child["NPROC_PER_NODE"],
        "--master_addr",
        child["MASTER_ADDR"],
        "--master_port",
        child["MASTER_PORT"],
        *worker,
    ]
    return argv, child_env(child)


def run_in_process(args: dict[str, Any], env: Mapping[str, str]) -> None:
    """MPIJob: this very process is one rank; train here with torch.distributed's env set.

    A SIGTERM or SIGUSR1 asks for a checkpoint at the end of the current step (see :mod:`.worker`)."""
    os.environ.clear()
    os.environ.update(env)
    from . import worker  # noqa: PLC0415

    # SIGUSR1: the stop request mpirun forwards from the launcher, or the worker pod's PID 1 sends
    # (kubetune.trainer.mpilaunch, kubetune.trainer.mpiworker); SIGTERM: Open MPI's own kill.
    previous = {s: signal.signal(s, worker._on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
    completed = False
    try:
        worker.run(args)
        completed = True
    except worker.StopRequested as stop:
        err = Retryable(f"received SIGTERM (preemption or deletion): {stop}; a restart resumes from it")
        err.stopped_at = (
            time.monotonic()
        )  # the signal came earlier, at most the stop grace: a later bound than the kubelet's
        raise err from None
    except TrainerError:
        raise
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise classify(int(exc.code) if isinstance(exc.code, int) else 1, str(exc)) from None
    except BaseException as exc:  # noqa: BLE001 - every crash must map to an exit code
        raise classify(1, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if worker.stop_requested_locally() and not completed:
            # The stop was taken: the rank's second request (mpirun's and the worker PID 1's come
            # apart) is a duplicate, not a new stop to raise in the middle of the exit path.  A
            # training that completed with a request pending (it came after the last step's check)
            # is not on its exit path: the stage after it (export, evaluation, upload) must still
            # stop at the next request, with the training recorded as completed.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run(
    cfg: JobConfig,
    dist: distenv.Distribution,
    env: Mapping[str, str],
    sink: ProgressSink | None,
    *,
    abort: threading.Event | None = None,
) -> dict[str, Any]:
    """Train to the end; returns facts for the stage line and the run record.  ``abort``, once set,
    stops the training child as a SIGTERM would (not the in-process MPIJob shape)."""
    args, resume = effective_args(cfg)
    args.update(metrics.train_args(env))  # tokens/s and peak memory for the metrics (rank 0 serves them)
    env = metrics.child_env(env)
    follower = None
    if sink is not None:
        tracker = metrics.tracker(
            sink, env, job=cfg.job.name, namespace=cfg.job.namespace, train_args=args, world_size=dist.world_size
        )
        follower = LogFollower(cfg.output_dir / TRAINER_LOG, tracker).start()
    try:
        if dist.kind == "mpijob":
            run_in_process(args, child_env(distenv.mpi_process_env(env, dist)))
        else:
            args_file = write_args(args, env)
            try:
                argv, argv_env = command(cfg, dist, args_file, env)
                grace, _ = stop_budgets(env, uploading=cfg.job.spec.storage.outputs.uri is not None)
                Child(argv, argv_env, stop_file=args_file.parent / "stop", stop_grace=grace).run(abort)
            finally:
                shutil.rmtree(args_file.parent, ignore_errors=True)
    finally:
        if follower is not None:
            follower.stop()
    last = follower.tracker.last if follower is not None else None
    return {
        "resumedFrom": str(resume) if resume else None,
        "tokenizedPath": args.get("tokenized_path"),
        "launcher": "mpirun" if dist.kind == "mpijob" else cfg.job.spec.distributed.effective_launcher,
        "processes": dist.world_size,
        "progress": last.to_api() if last is not None else None,
    }
