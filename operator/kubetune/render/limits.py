"""Size limits the API server and etcd put on the objects a FineTuneJob renders to.

The spec bounds every list and string, but their product can still exceed what
Kubernetes stores: 64 env values of 4 KiB, an affinity with many terms and a
long extraArgs map all land in the ConfigMap (finetunejob.json repeats the
spec) and in every pod template.  The operator would then fail at create time,
after the job was accepted; so ``validate`` renders and measures instead.

Limits (kubernetes/kubernetes):

* ConfigMap: the sum of ``len(key) + len(value)`` over data and binaryData
  must not exceed 1 MiB (pkg/apis/core/validation/validation.go,
  ValidateConfigMap, ``core.MaxSecretSize``);
* any object: etcd refuses requests above 1.5 MiB (etcd's default
  ``--max-request-bytes``), well below the API server's 3 MiB body limit.
"""

from __future__ import annotations

import json
from typing import Any, Final

from .types import Problem, Rendered

CONFIG_MAP_LIMIT: Final = 1024 * 1024
"""core.MaxSecretSize: data + binaryData of a ConfigMap."""
OBJECT_LIMIT: Final = 1536 * 1024
"""etcd's default request size limit (1.5 MiB)."""
_FIX = "shorten spec.env values, spec.extraArgs or spec.scheduling (affinity, tolerations, nodeSelector)"


def config_map_size(config_map: dict[str, Any]) -> int:
    """Bytes counted by ValidateConfigMap: keys and UTF-8 values of data and binaryData."""
    total = 0
    for section in ("data", "binaryData"):
        for key, value in (config_map.get(section) or {}).items():
            total += len(key.encode()) + len(str(value).encode())
    return total


def object_size(obj: dict[str, Any]) -> int:
    """Bytes of the object as JSON, the way it is sent to the API server."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def size_problems(rendered: Rendered) -> list[Problem]:
    """Every rendered object that Kubernetes would refuse for its size."""
    problems: list[Problem] = []
    cm = config_map_size(rendered.config_map)
    if cm > CONFIG_MAP_LIMIT:
        problems.append(
            Problem(
                "spec",
                f"renders a ConfigMap of {cm} bytes; Kubernetes allows at most {CONFIG_MAP_LIMIT} (1 MiB): {_FIX}",
            )
        )
    for obj in (rendered.config_map, rendered.workload):
        size = object_size(obj)
        if size > OBJECT_LIMIT:
            problems.append(
                Problem(
                    "spec",
                    f"renders a {obj.get('kind')} of {size} bytes; etcd stores at most "
                    f"{OBJECT_LIMIT} (1.5 MiB): {_FIX}",
                )
            )
    return problems
