"""The export stage: merge the LoRA adapter into the base model (global rank 0 only).

LLaMA-Factory's export (what ``llamafactory-cli export ARGS.yaml`` runs, started as
``python -m kubetune.trainer.export ARGS.yaml``: see :func:`_main`) writes into a hidden sibling folder, which is
renamed to ``<output>/merged`` only when the export succeeded: a pod killed
mid-export leaves no half-written model where users and the operator look.
An older ``merged`` folder is renamed aside, never deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubetune.api import contract

from .config import JobConfig
from .errors import ConfigError
from .launch import Child
from .train import child_env, write_args

_DIST_ENV = ("FORCE_TORCHRUN", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def export_args(cfg: JobConfig) -> dict[str, Any]:
    path = cfg.file(contract.EXPORT_ARGS_FILE)
    if path is None:
        raise ConfigError(f"export is enabled but {contract.EXPORT_ARGS_FILE} is missing from the ConfigMap")
    args = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(args, dict) or not args.get("export_dir"):
        raise ConfigError(f"{contract.EXPORT_ARGS_FILE}: expected LLaMA-Factory export arguments with export_dir")
    return args


def run(cfg: JobConfig, env: Mapping[str, str]) -> dict[str, Any]:
    args = export_args(cfg)
    final = Path(str(args["export_dir"]))
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    args["export_dir"] = str(partial)
    args_file = write_args(args, env)
    plain = {k: v for k, v in env.items() if k not in _DIST_ENV}
    try:
        Child([sys.executable, "-m", "kubetune.trainer.export", str(args_file)], child_env(plain)).run()
        if final.exists():
            final.rename(final.with_name(f".{final.name}.old-{int(time.time())}"))
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(args_file.parent, ignore_errors=True)
    return {"mergedDir": str(final)}


def _main(argv: list[str]) -> int:
    """Child process: ``llamafactory-cli export ARGS.yaml``, without DeepSpeed unless the export uses it.

    The CLI's export is ``launcher.launch()``: it pops the command from ``sys.argv`` and calls
    ``export_model()`` (llamafactory/cli.py:16-24, llamafactory/launcher.py:56 and 149-152 @v0.9.5),
    which reads the YAML file named by ``sys.argv[1]`` (hparams/parser.py:85-93 @v0.9.5).  Here
    ``sys.argv`` is ``[this module, ARGS.yaml]`` already, so the same call reads the same file;
    only accelerate's needless DeepSpeed import is left out (kubetune.trainer.heavy).  The CLI's
    ``USE_V1`` switch to its v1 launcher (cli.py:19-22) is not followed, as the training does not
    follow it either (kubetune.trainer.worker calls v0's ``run_exp``): the model is exported by the
    same LLaMA-Factory code that trained it."""
    if len(argv) != 1:
        print("usage: python -m kubetune.trainer.export ARGS.yaml", file=sys.stderr)
        return contract.EXIT_CONFIG
    from llamafactory.train.tuner import export_model  # noqa: PLC0415 - heavy, child only

    from .heavy import skip_unused_deepspeed  # noqa: PLC0415

    skip_unused_deepspeed()
    export_model()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
