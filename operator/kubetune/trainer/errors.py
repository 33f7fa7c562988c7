"""Failures that carry their exit code, so every stage decides once how bad a failure is."""

from __future__ import annotations

from kubetune.api import contract


class TrainerError(Exception):
    """A stage failed; ``exit_code`` is what the pod exits with (see :mod:`kubetune.trainer`)."""

    exit_code: int = contract.EXIT_TRAINING


class ConfigError(TrainerError):
    """The mounted configuration or the environment is wrong: a restart cannot help."""

    exit_code = contract.EXIT_CONFIG


class DataError(TrainerError):
    """A dataset is missing, unreachable for good, or has a malformed record."""

    exit_code = contract.EXIT_DATA


class TrainingFailed(TrainerError):
    """Training crashed in a way that will crash again (OOM, a bug)."""

    exit_code = contract.EXIT_TRAINING


class Retryable(TrainerError):
    """Preemption, a lost peer, a rendezvous/NCCL failure: restart and resume."""

    exit_code = contract.EXIT_RETRYABLE
    stopped_at: float | None = None
    """time.monotonic() when the SIGTERM arrived, for a stop: what is left of the pod's grace
    period is counted from it (kubetune.trainer.launch.stop_budgets)."""


class StorageError(TrainerError):
    """An object-store call failed (wrong credentials, missing bucket or key, denied write):
    permanent unless the instance says otherwise (throttling, 5xx, a lost connection are retryable)."""

    exit_code = contract.EXIT_CONFIG
