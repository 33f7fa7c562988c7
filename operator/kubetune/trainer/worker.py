"""``python -m kubetune.trainer.worker train.yaml [key=value ...]``: one training process.

The program every training process runs - under torchrun (what
``llamafactory-cli train`` would start: its launcher only calls ``run_exp``),
under ``accelerate launch -m``, in-process for an MPI-started rank, or alone
on a single device: LLaMA-Factory's training function, reading the YAML and
``key=value`` overrides exactly as ``llamafactory-cli train`` does, plus one
callback of ours.

Checkpoint on stop: when the pod is told to stop (SIGTERM: preemption, node
drain, suspend), the trainer's main process creates the file named in
``KUBETUNE_STOP_FILE`` (an MPI rank, which has no such parent, takes the
signal itself).  At the end of every optimizer step the callback checks it and
agrees with every other rank (one scalar all-reduce), so that all ranks save
the same checkpoint together - DeepSpeed's save is collective - and then stop
with the retryable exit code.  The restart resumes from that checkpoint, so a
preemption costs at most one step.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from kubetune.api import contract

ENV_STOP_FILE = "KUBETUNE_STOP_FILE"


class StopRequested(Exception):
    """Raised after the stop checkpoint is written, so LLaMA-Factory saves no 'final' model."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} after a SIGTERM; checkpoint-{step} written")
        self.step = step


_signalled = False


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _signalled
    _signalled = True


def stop_requested_locally() -> bool:
    stop_file = os.environ.get(ENV_STOP_FILE)
    return _signalled or bool(stop_file and Path(stop_file).exists())


def _any_rank(flag: bool) -> bool:
    """True when any rank saw the stop request (all ranks must stop at the same step)."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def callbacks() -> list[Any]:
    from transformers import TrainerCallback  # noqa: PLC0415

    class StopAndCheckpoint(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.stopping = False

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            if _any_rank(stop_requested_locally()):
                self.stopping = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            if self.stopping:
                raise StopRequested(int(state.global_step))
            return control

    return [StopAndCheckpoint()]


def run(args: dict[str, Any] | None = None) -> None:
    """Train with LLaMA-Factory (imported here: the heavy stack loads only in workers).

    Raises StopRequested when a stop request ended the training after its checkpoint."""
    from llamafactory.train.tuner import run_exp  # noqa: PLC0415

    from .heavy import skip_unused_deepspeed  # noqa: PLC0415

    skip_unused_deepspeed()  # no DeepSpeed import in a job without it (kubetune.trainer.heavy)
    run_exp(args, callbacks=callbacks())


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        run()
    except StopRequested as stop:
        print(f"kubetune worker: {stop}", file=sys.stderr, flush=True)
        return contract.EXIT_RETRYABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
