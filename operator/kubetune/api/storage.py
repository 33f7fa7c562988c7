"""spec.storage and spec.export: volumes and the LoRA merge.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    ApiModel,
    DNS1123Subdomain,
    RelativePath,
    Rule,
    RuledModel,
)
from .fields import (
    _NO_DOTDOT,
    _no_dotdot,
)

# --- storage, export, environment, scheduling ------------------------------------


class VolumeSpec(RuledModel):
    """A PersistentVolumeClaim and an optional sub-path inside it."""

    claim_name: DNS1123Subdomain
    """Name of an existing PersistentVolumeClaim in the job's namespace. Multi-node jobs need ReadWriteMany."""
    sub_path: RelativePath | None = None
    """Folder inside the claim to mount instead of its root."""
    read_only: bool = False
    """Mount read-only (datasets and shared model stores)."""

    rules = (
        Rule(
            name="subpath-inside-volume",
            cel="!has(self.subPath) || " + _NO_DOTDOT.replace("self", "self.subPath"),
            message="subPath must stay inside the claim: remove '..' segments",
            field_path=".subPath",
            check=lambda v: _no_dotdot(v.sub_path),
        ),
    )


class StorageSpec(ApiModel):
    """Where data, models and results live. kubetune never deletes anything on these volumes."""

    datasets: VolumeSpec | None = None
    """Volume holding dataset files (spec.datasets[].path) and converted data. Unset: an emptyDir (hub/url datasets only)."""
    models: VolumeSpec | None = None
    """Model cache (HF_HOME) and local models (spec.model.path). Unset: an emptyDir, so every run downloads the model again."""
    outputs: VolumeSpec
    """Checkpoints, adapters, merged models, logs and the run record go to <outputs>/<namespace>/<job name>/."""


class ExportSpec(ApiModel):
    """After training, merge the LoRA adapter into the base model (the tutorial's export step)."""

    enabled: bool = False
    """Run `llamafactory-cli export` after a successful LoRA/QLoRA training; the merged model lands in <outputs>/merged."""
    shard_size_gb: Annotated[int, Field(ge=1, le=100, alias="shardSizeGB")] = 5
    """Maximum safetensors shard size in GB (`export_size`)."""
