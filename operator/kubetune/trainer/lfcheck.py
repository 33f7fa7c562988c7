"""Run rendered training arguments through the pinned LLaMA-Factory's own parser.

Why: our models and catalog catch most mistakes, but LLaMA-Factory's
``get_train_args`` has dozens of cross-argument rules of its own; running it
before a job is submitted turns a pod that crashes after pulling a 10 GB image
into an error at ``kubetune validate``.

Imported lazily (LLaMA-Factory pulls in torch): nothing heavy loads at module
import time.  What is checked is a *machine-neutral copy* of the arguments:

* ``bf16``/``fp16`` are dropped - the parser refuses them on a machine without
  a GPU, which says nothing about the GPU node the job will run on;
* ``deepspeed`` is dropped - the parser accepts it only inside a live
  ``torchrun`` launch (``parallel_mode == DISTRIBUTED``); the DeepSpeed
  config itself is rendered by kubetune and covered by its tests;
* ``dataset_dir`` and ``output_dir`` point at a temporary folder holding a
  ``dataset_info.json`` (the rendered one when given) and empty data files,
  so the dataset names resolve and nothing is written outside it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MACHINE_DEPENDENT_KEYS = ("bf16", "fp16", "pure_bf16", "deepspeed")


def llamafactory_available() -> bool:
    """Whether ``llamafactory`` can be imported here (the ``train`` extra is installed)."""
    return importlib.util.find_spec("llamafactory") is not None


def neutral_copy(args: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """The arguments as checked: see the module docstring for what changes and why."""
    out = {k: v for k, v in args.items() if k not in MACHINE_DEPENDENT_KEYS}
    out["dataset_dir"] = str(workdir / "data")
    out["output_dir"] = str(workdir / "output")
    return out


def _write_datasets(args: Mapping[str, Any], data_dir: Path, dataset_info: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in str(args.get("dataset", "")).split(",") if n]
    if dataset_info is not None:
        info: dict[str, Any] = json.loads(dataset_info)  # a name missing here is the parser's to report
    else:
        info = {name: {"file_name": f"{name}.jsonl"} for name in names}
    # Every entry points at an empty local file: the parser checks names, not contents.
    for name, entry in info.items():
        local = f"{name}.jsonl"
        (data_dir / local).write_text("", encoding="utf-8")
        entry["file_name"] = local
    (data_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


@contextmanager
def _quiet_env() -> Iterator[None]:
    """No torchrun re-launch, no Hub access, no extra-key leniency while parsing."""
    keys = {"FORCE_TORCHRUN": None, "ALLOW_EXTRA_ARGS": None, "USE_MCA": None, "HF_HUB_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k, v in keys.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def parse_train_args(args: Mapping[str, Any], dataset_info: str | None = None) -> list[str]:
    """Error messages from ``llamafactory.hparams.get_train_args`` (an empty list: accepted).

    ``dataset_info`` is the rendered dataset_info.json text, when the caller has it.
    """
    from llamafactory.hparams import get_train_args

    with tempfile.TemporaryDirectory(prefix="kubetune-lfcheck-") as tmp:
        workdir = Path(tmp)
        checked = neutral_copy(args, workdir)
        _write_datasets(checked, workdir / "data", dataset_info)
        # The parser logs advice (INFO/WARNING) for a real run; a validation
        # answer is only the errors, so hold LLaMA-Factory's logger at ERROR.
        lf_logger = logging.getLogger("llamafactory")
        level = lf_logger.level
        lf_logger.setLevel(logging.ERROR)
        try:
            with _quiet_env():
                get_train_args(checked)
        except Exception as exc:  # noqa: BLE001 - the parser raises ValueError, AssertionError, TypeError...
            return [f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]
        except SystemExit as exc:  # argparse-style exits from HfArgumentParser
            return [f"the parser exited ({exc.code})"]
        finally:
            lf_logger.setLevel(level)
    return []
