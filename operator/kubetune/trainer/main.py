"""``python -m kubetune.trainer``: run the stages in order and exit with the right code.

Roles: global rank 0 prepares the data, publishes progress, exports and
writes the run record; every process trains.  See :mod:`kubetune.trainer` for
the exit codes the operator's restart policy relies on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from kubetune.api import contract

from . import (
    config,
    console,
    data,
    distenv,
    evaluate,
    export,
    features,
    fingerprint,
    launch,
    model,
    objectstore,
    opcheck,
    push,
    record,
    stagecheck,
    train,
)
from .fsutil import write_text_atomic
from .errors import ConfigError, Retryable, TrainerError
from .progress import ProgressSink, StdoutProgressSink
from .stages import stage


def _hostfile(env: Mapping[str, str]) -> str | None:
    if "OMPI_COMM_WORLD_RANK" not in env:
        return None
    try:
        return Path(env.get(distenv.ENV_MPI_HOSTFILE, distenv.MPI_HOSTFILE)).read_text(encoding="utf-8")
    except OSError:
        return None


def already_trained(cfg: config.JobConfig) -> bool:
    """A restart after training finished (e.g. the export was interrupted): do not train again."""
    previous = record.read(cfg.output_dir)
    return bool(previous and previous.get("trainingCompleted") and previous.get("spec") == cfg.job.spec.to_api())


def _tell_other_ranks(cfg: config.JobConfig, exc: TrainerError) -> None:
    """The other ranks wait for the data stage; a failure marker makes them stop with the same error."""
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            cfg.data_dir / data.FAILED_MARKER,
            json.dumps({"digest": data.digest(cfg), "exitCode": exc.exit_code, "message": str(exc)}),
        )
    except OSError:
        pass


def run(env: Mapping[str, str], sink: ProgressSink | None = None) -> int:
    """All stages; returns the exit code.  ``sink`` overrides the stdout progress lines."""
    started = record.now()
    facts: dict[str, Any] = {"stages": {}}
    cfg: config.JobConfig | None = None
    dist: distenv.Distribution | None = None
    code, message = contract.EXIT_OK, "trained"
    reporter: push.Reporter | None = None
    try:
        cfg = config.load(env)
        features.check(cfg.train_args)
        facts["attention"] = features.attention_used(cfg.train_args)
        dist = distenv.distribution_from_env(
            env, hostfile_text=_hostfile(env), default_port=cfg.job.spec.distributed.master_port
        )
        role = {"rank0": dist.is_global_zero, "nodeRank": dist.node_rank, "nnodes": dist.nnodes, "kind": dist.kind}
        if dist.is_global_zero and (reporter := push.from_env(env)) is not None:
            console.set_tap(reporter.offer)  # progress and stage lines also go to the operator's intake
        stagecheck.check(cfg)  # a stage the installed stack cannot run fails before data, model and GPU time
        opcheck.run(cfg, env)  # DeepSpeed ops that are neither prebuilt nor compilable, no usable GPU: fail now
        _data_stage(cfg, env, dist, role, facts)
        with stage("model") as out:
            out["model"] = model.prepare(cfg, env, local_zero=dist.is_local_zero)
            facts["stages"]["model"] = dict(out)
        train_env = dict(env) if model.local_model_dir(cfg) is not None else model.offline_env(env)
        with stage("train", processes=dist.world_size) as out:
            if already_trained(cfg):
                out["skipped"] = "training already completed in an earlier run of this job"
            else:
                rank0_sink = (sink or StdoutProgressSink()) if dist.is_global_zero else None
                prefix = outputs_prefix(cfg) if dist.is_global_zero else None
                out.update(_train_uploading(cfg, dist, train_env, rank0_sink, env, prefix, facts.get("configHash")))
            facts["trainingCompleted"] = True
            facts["stages"]["train"] = dict(out)
        if cfg.job.spec.export.enabled and dist.is_global_zero:
            with stage("export") as out:
                out.update(export.run(cfg, env))
                facts["stages"]["export"] = dict(out)
        if dist.is_global_zero and cfg.file(contract.EVAL_ARGS_FILE) is not None:
            _evaluate_stage(
                cfg, env, facts
            )  # after training and export; a failure here keeps the trained model and exit 0
        if dist.is_global_zero and (prefix := outputs_prefix(cfg)) is not None:
            with stage("upload", uri=prefix) as out:
                out["bytes"] = objectstore.upload_results(prefix, cfg.output_dir, env)
                out["uri"] = prefix
                facts["stages"]["upload"] = dict(out)
    except TrainerError as exc:
        code, message = exc.exit_code, str(exc)
    except Exception as exc:  # noqa: BLE001 - an unexpected bug is a permanent training failure
        code, message = contract.EXIT_TRAINING, f"{type(exc).__name__}: {exc}"
    if cfg is not None and dist is not None and dist.is_global_zero:
        try:
            with stage("record") as out:
                out["path"] = str(
                    record.write(
                        cfg,
                        image=env.get("KUBETUNE_IMAGE"),
                        started_at=started,
                        exit_code=code,
                        message=message,
                        facts=facts,
                    )
                )
        except (OSError, TrainerError) as exc:
            print(f"kubetune trainer: could not write the run record: {exc}", file=sys.stderr)
        code, message = _mark_complete(cfg, env, code, message, started, facts)
    if reporter is not None:
        reporter.close(timeout=push.TIMEOUT_S + 1)  # the final state, bounded; never holds up the exit longer
        console.set_tap(None)
    if code != contract.EXIT_OK:
        print(f"kubetune trainer: failed (exit {code}): {message}", file=sys.stderr, flush=True)
    return code


def outputs_prefix(cfg: config.JobConfig) -> str | None:
    """``<spec.storage.outputs.uri><namespace>/<job>/``, or None without outputs.uri."""
    uri = cfg.job.spec.storage.outputs.uri
    return None if uri is None else objectstore.job_prefix(uri, cfg.job.namespace, cfg.job.name)


def _train_uploading(
    cfg: config.JobConfig,
    dist: distenv.Distribution,
    train_env: Mapping[str, str],
    sink: ProgressSink | None,
    env: Mapping[str, str],
    prefix: str | None,
    config_hash: str | None,
) -> dict[str, Any]:
    """train.run, with rank 0 uploading each complete checkpoint meanwhile (spec.storage.outputs.uri)
    and once more after training stopped, also after a preemption stop, so a restart elsewhere resumes."""
    if prefix is None:
        return train.run(cfg, dist, train_env, sink)
    uploader = objectstore.CheckpointUploader(
        prefix,
        cfg.output_dir,
        env,
        needs_optimizer=train.needs_optimizer(cfg.train_args),
        interval=float(env.get(ENV_UPLOAD_INTERVAL, "5")),
        config_hash=config_hash,
    )
    uploader.start()
    try:
        out = train.run(cfg, dist, train_env, sink, abort=uploader.failed)
    except TrainerError as exc:
        if uploader.error is not None:
            raise uploader.error from None  # a permanent upload failure stopped the training: that is the reason
        deadline = None
        if isinstance(exc, Retryable) and exc.stopped_at is not None:
            # Stopped by a SIGTERM: the final upload of the stop checkpoint must end within the
            # pod's grace period, before the run record's margin (launch.stop_budgets).
            deadline = exc.stopped_at + launch.stop_budgets(env, uploading=True)[1]
        try:
            swept = uploader.stop(deadline=deadline)
            if swept:
                print(
                    f"kubetune trainer: uploaded {', '.join(swept)} to {prefix} before stopping",
                    file=sys.stderr,
                    flush=True,
                )
        except (TrainerError, OSError) as upload_exc:  # the training's own failure is the one to report
            print(f"kubetune trainer: final checkpoint upload: {upload_exc}", file=sys.stderr, flush=True)
        raise
    out["uploadedCheckpoints"] = sorted({*uploader.stop()})
    if uploader.retries:
        out["uploadRetries"] = uploader.retries
    return out


ENV_UPLOAD_INTERVAL = "KUBETUNE_UPLOAD_INTERVAL"
"""Seconds between two looks for newly complete checkpoints to upload (default 5)."""


def _mark_complete(
    cfg: config.JobConfig, env: Mapping[str, str], code: int, message: str, started: str, facts: dict[str, Any]
) -> tuple[int, str]:
    """Succeeded with outputs.uri: upload the final run record, then the job's completion marker,
    last.  A failure here fails the job (and the record on the volume says so): a bucket without
    the marker never shows as a finished job."""
    prefix = outputs_prefix(cfg)
    if prefix is None or code != contract.EXIT_OK:
        return code, message
    try:
        with stage("complete", uri=prefix):
            objectstore.mark_complete(prefix, cfg.output_dir, env)
    except (TrainerError, OSError) as exc:
        # mark_complete turns a local I/O error into a classified StorageError; any OSError that
        # still gets here (the stage line's console write) must not end in a traceback either.
        err = (
            exc
            if isinstance(exc, TrainerError)
            else objectstore.local_failure(prefix, exc, doing="writing the completion marker")
        )
        code, message = err.exit_code, str(err)
        with contextlib.suppress(OSError, TrainerError):
            record.write(
                cfg, image=env.get("KUBETUNE_IMAGE"), started_at=started, exit_code=code, message=message, facts=facts
            )
    return code, message


def _data_stage(
    cfg: config.JobConfig,
    env: Mapping[str, str],
    dist: distenv.Distribution,
    role: Mapping[str, Any],
    facts: dict[str, Any],
) -> None:
    """Stage data: rank 0 quarantines incomplete checkpoints, checks the config fingerprint and
    prepares the datasets (or reuses them); the other ranks wait for it."""
    with stage("data", **role) as out:
        if dist.is_global_zero:
            moved = train.quarantine_incomplete(cfg.output_dir, cfg.train_args)
            conf = fingerprint.effective_config(
                cfg.train_args, data_digest=data.digest(cfg), world_size=dist.world_size
            )
            try:
                facts["configHash"] = fingerprint.check_and_record(cfg.output_dir, conf)
                if (prefix := outputs_prefix(cfg)) is not None:
                    objectstore.clear_marker(prefix, env)  # not complete again until this run says so
                    # Only a checkpoint this very configuration wrote (its marker names the hash just checked).
                    restored = objectstore.restore_checkpoint(
                        prefix,
                        cfg.output_dir,
                        env,
                        needs_optimizer=train.needs_optimizer(cfg.train_args),
                        config_hash=facts["configHash"],
                    )
                    if restored is not None:
                        out["restoredCheckpoint"] = f"{prefix}{restored}/"
            except TrainerError as exc:
                _tell_other_ranks(cfg, exc)
                raise
            previous = data.reusable(cfg)
            if previous is not None:
                out["records"] = previous
                out["skipped"] = "the data folder already holds this spec's datasets (unchanged files)"
            else:
                out["records"] = data.prepare(cfg, env)
            out["samples"] = data.samples_used(cfg, out["records"])
            if moved:
                out["incompleteCheckpoints"] = [str(m) for m in moved]
        else:
            data.wait_ready(cfg, env)
        facts["stages"]["data"] = dict(out)


def _evaluate_stage(cfg: config.JobConfig, env: Mapping[str, str], facts: dict[str, Any]) -> None:
    """Stage evaluate (rank 0, spec.evaluation): after training and export; a failure here keeps
    the trained model and exit 0."""
    with stage("evaluate") as out:
        try:
            result = evaluate.run(cfg, env)
        except Retryable:
            raise  # preempted: the restart skips training and export, and evaluates again
        except Exception as exc:  # noqa: BLE001 - any evaluation failure is reported, never fatal
            reason = str(exc) if isinstance(exc, TrainerError) else f"{type(exc).__name__}: {exc}"
            result = evaluate.failed(cfg, reason)
        out["evaluation"] = result
        facts["evaluation"] = result
        facts["stages"]["evaluate"] = dict(out)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
"""A stop request: the pod's SIGTERM, or an MPI rank's SIGUSR1 (kubetune.trainer.mpilaunch, .mpiworker)."""


def ignore_stop_requests() -> None:
    """From now on a stop request changes nothing: one is already being obeyed, or the outcome is
    decided and the process only exits.

    An MPI rank gets every stop request twice, at moments of their own: the launcher's mpirun
    forwards one (kubetune.trainer.mpilaunch) and the worker pod's PID 1 sends one
    (kubetune.trainer.mpiworker).  The late one must neither interrupt the exit path (a second
    Retryable raised in the middle of writing the run record) nor kill the rank: a signal whose
    Python handler is still set when the interpreter finalizes is reset to SIG_DFL before the
    modules (torch's among them) are torn down, and SIGUSR1's default action ends the process
    (exit 138 instead of the retryable 130); SIG_IGN is left as it is.  That finalization order is
    what CPython 3.11.7 does here (tests/trainer/test_mpistop.py shows it with a real
    process); CPython's Python/pylifecycle.c and Modules/signalmodule.c could not be read for this
    change (the repository is too large to fetch)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _stop(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (or an MPI rank's SIGUSR1) outside the training (while fetching data, waiting
    for rank 0, exporting): stop with the retryable code, like a preempted training.  Only the
    first request raises; later ones (an MPI rank gets two) are ignored."""
    ignore_stop_requests()
    err = Retryable(f"received signal {signum} (preemption or deletion)")
    err.stopped_at = time.monotonic()
    raise err


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print(
            "usage: python -m kubetune.trainer  (driven by $KUBETUNE_CONFIG_DIR and the environment)", file=sys.stderr
        )
        return contract.EXIT_CONFIG
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    try:
        return run(dict(os.environ))
    finally:
        ignore_stop_requests()  # the exit code is decided: a late request must not turn it into a signal death


__all__ = ["ConfigError", "main", "run"]
