"""``python -m kubetune.trainer.worker train.yaml [key=value ...]``: one training process.

The program ``accelerate launch -m`` starts on every process (and what an
MPI-started trainer process runs in-process): LLaMA-Factory's training
function, reading the YAML and ``key=value`` overrides exactly as
``llamafactory-cli train`` does.
"""

from __future__ import annotations

from typing import Any


def run(args: dict[str, Any] | None = None) -> None:
    """Train with LLaMA-Factory (imported here: the heavy stack loads only in workers)."""
    from llamafactory.train.tuner import run_exp  # noqa: PLC0415

    run_exp(args)


if __name__ == "__main__":
    run()
