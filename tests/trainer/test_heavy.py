"""The heavy children (worker, evaluation, export) load DeepSpeed only for a job that uses it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.kt_time import scaled

# One process: the narrowed probe, a model unwrapped without DeepSpeed loaded, then the same
# unwrapping of a DeepSpeedEngine once DeepSpeed is in use (an engine around the module, built without
# its heavy __init__ and destructor: what matters is its class).
PROBE = """
import json, sys
import torch
from kubetune.trainer.heavy import skip_unused_deepspeed
from accelerate.utils import other
out = {"narrowed": skip_unused_deepspeed(), "again": skip_unused_deepspeed()}
inner = torch.nn.Linear(2, 2)
out["unwrapped_plain"] = other.extract_model_from_parallel(torch.nn.DataParallel(inner)) is inner
out["deepspeed_loaded_by_unwrap"] = "deepspeed" in sys.modules
import deepspeed
class Engine(deepspeed.DeepSpeedEngine):
    __getattr__ = torch.nn.Module.__getattr__  # the engine's own one reads what its __init__ sets
    def __del__(self): pass
engine = Engine.__new__(Engine)
torch.nn.Module.__init__(engine)
engine.module = inner
out["unwrapped_engine"] = other.extract_model_from_parallel(engine) is inner
print(json.dumps(out))
"""


@pytest.mark.train  # imports torch, accelerate and DeepSpeed
def test_unwrapping_a_model_loads_deepspeed_only_when_it_is_in_use() -> None:
    pytest.importorskip("deepspeed")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "narrowed": True,
        "again": True,
        "unwrapped_plain": True,
        "deepspeed_loaded_by_unwrap": False,  # accelerate's own probe imports all of DeepSpeed here
        "unwrapped_engine": True,
    }
