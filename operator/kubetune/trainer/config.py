"""The job as the pod sees it: the mounted ConfigMap plus the renderer's environment.

Everything the trainer does is driven from here; nothing is taken from the
command line, so a pod cannot drift from what the operator rendered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubetune.api import FineTuneJob, contract
from kubetune.api.safeyaml import InputError, decode, load_documents, normalize

from .errors import ConfigError


@dataclass(frozen=True)
class JobConfig:
    """The parsed ConfigMap and the folders from the environment."""

    job: FineTuneJob
    config_dir: Path
    train_args: dict[str, Any]
    dataset_info: dict[str, dict[str, Any]]
    output_dir: Path
    datasets_dir: Path
    models_dir: Path

    @property
    def data_dir(self) -> Path:
        """Where materialised datasets and the effective dataset_info.json go (train.yaml's dataset_dir)."""
        return Path(str(self.train_args.get("dataset_dir") or self.output_dir / contract.DATA_SUBDIR))

    def file(self, name: str) -> Path | None:
        """A ConfigMap file, or None when the renderer did not write it."""
        path = self.config_dir / name
        return path if path.is_file() else None


def _read_json(path: Path) -> Any:
    try:
        return normalize(json.loads(decode(path.read_bytes())))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing from the job's ConfigMap") from None
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def load(env: Mapping[str, str]) -> JobConfig:
    """Read and validate the mounted configuration; any problem is a ConfigError (permanent)."""
    config_dir = Path(env.get(contract.ENV_CONFIG_DIR) or contract.CONFIG_DIR)
    if not config_dir.is_dir():
        raise ConfigError(f"configuration folder {config_dir} does not exist (is the ConfigMap mounted?)")
    raw_job = _read_json(config_dir / contract.SPEC_FILE)
    try:
        job = FineTuneJob.from_api(raw_job)
    except ValidationError as exc:
        raise ConfigError(f"{contract.SPEC_FILE} is not a valid FineTuneJob: {exc}") from None
    train_path = config_dir / contract.TRAIN_ARGS_FILE
    try:
        docs = list(load_documents(decode(train_path.read_bytes())))
    except FileNotFoundError:
        raise ConfigError(f"{train_path}: missing from the job's ConfigMap") from None
    except InputError as exc:
        raise ConfigError(f"{train_path}: {exc}") from None
    train_args = docs[0] if len(docs) == 1 else None
    if not isinstance(train_args, dict) or "output_dir" not in train_args:
        raise ConfigError(f"{train_path}: expected a mapping of LLaMA-Factory arguments with output_dir")
    info = _read_json(config_dir / contract.DATASET_INFO_FILE)
    if not isinstance(info, dict):
        raise ConfigError(f"{contract.DATASET_INFO_FILE}: expected an object keyed by dataset name")
    default_out = contract.Layout().job_output_dir(job.namespace, job.name)
    output_dir = Path(env.get(contract.ENV_OUTPUT_DIR) or str(train_args.get("output_dir") or default_out))
    return JobConfig(
        job=job,
        config_dir=config_dir,
        train_args=train_args,
        dataset_info=info,
        output_dir=output_dir,
        datasets_dir=Path(env.get(contract.ENV_DATASETS_DIR) or contract.DATASETS_DIR),
        models_dir=Path(env.get(contract.ENV_MODELS_DIR) or contract.MODELS_DIR),
    )
