"""spec.storage and spec.export: volumes and the LoRA merge.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field

from .base import (
    ApiModel,
    DNS1123Subdomain,
    RelativePath,
    Rule,
    RuledModel,
)
from .k8s import PositiveQuantity
from .objectstore import ObjectStoreSpec, ObjectUri, uri_rules
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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            name="subpath-inside-volume",
            cel="!has(self.subPath) || " + _NO_DOTDOT.replace("self", "self.subPath"),
            message="subPath must stay inside the claim: remove '..' segments",
            field_path=".subPath",
            check=lambda v: _no_dotdot(v.sub_path),
        ),
    )


DEFAULT_OUTPUTS_SIZE_LIMIT: Final = "200Gi"
"""sizeLimit of the outputs emptyDir when spec.storage.outputs has no claimName and no sizeLimit."""


class OutputsVolumeSpec(RuledModel):
    """Where the results go: a PersistentVolumeClaim, a bucket prefix (outputs.uri), or both.

    Without ``claimName`` (``uri`` is then required) the training pod writes its outputs to an
    emptyDir of the pod, uploads them to ``uri`` as it does with a claim, and a restarted pod
    (a fresh, empty emptyDir) resumes from the newest complete checkpoint in the bucket."""

    claim_name: DNS1123Subdomain | None = None
    (
        "Name of an existing PersistentVolumeClaim in the job's namespace. Multi-node jobs need ReadWriteMany. Unset "
        "(only with uri): the outputs live in an emptyDir of the training pod and in the bucket."
    )
    sub_path: RelativePath | None = None
    """Folder inside the claim to mount instead of its root."""
    read_only: bool = False
    """Mount read-only (datasets and shared model stores)."""
    uri: ObjectUri | None = None
    (
        "s3:// key prefix ending in '/', e.g. `s3://runs/finetune/`: complete checkpoints (each with a "
        "`_KUBETUNE_COMPLETE` marker object written last), the adapter or model, the merged model, logs, "
        "the evaluation and the run record are uploaded under <uri><namespace>/<job name>/, "
        "and `_KUBETUNE_COMPLETE` is written there last once the job succeeded. A restart whose volume holds no "
        "complete checkpoint resumes from the newest complete one in the bucket. Single-node jobs only for now. "
        "gs:// for Google Cloud Storage; az://<container>/<path> for Azure Blob Storage (the account from "
        "spec.storage.objectStore). With uri, claimName may be left out: "
        "the outputs then live only in an emptyDir of the pod and in the bucket."
    )
    size_limit: PositiveQuantity | None = None
    (
        "Without claimName: sizeLimit of the pod's outputs emptyDir (default 200Gi). It must hold "
        "training.saveTotalLimit + 1 checkpoints (the Trainer writes a new checkpoint before it deletes the oldest) "
        "plus the final model, the merged model and the job's datasets, which the trainer copies into the outputs "
        "folder (data/; a downloaded one twice while it is staged); the kubelet evicts the pod (1 s grace: "
        "no stop checkpoint) once its 10 s check sees the folder past it, and the restarted pod resumes from the "
        "newest checkpoint uploaded to uri. Not allowed with claimName (the claim's own size applies)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        *VolumeSpec.rules,
        *uri_rules("spec.storage.outputs.uri", prefix_example="s3://runs/finetune/"),
        Rule(
            name="outputs-claim-or-uri",
            cel="has(self.claimName) || has(self.uri)",
            message="spec.storage.outputs needs claimName (a PersistentVolumeClaim) or uri (a bucket "
            "prefix, e.g. s3://runs/finetune/: the outputs then live in an emptyDir of the pod and are "
            "uploaded there): set one of them",
            field_path=".claimName",
            check=lambda v: v.claim_name is not None or v.uri is not None,
        ),
        Rule(
            name="outputs-volume-fields-need-claim",
            cel="has(self.claimName) || (!has(self.subPath) && (!has(self.readOnly) || !self.readOnly))",
            message="spec.storage.outputs.subPath and readOnly describe a claim, "
            "and claimName is unset (the outputs go to an emptyDir and outputs.uri): remove them, or set claimName",
            field_path=".subPath",
            check=lambda v: v.claim_name is not None or (v.sub_path is None and not v.read_only),
        ),
        Rule(
            name="outputs-size-limit-without-claim",
            cel="!has(self.sizeLimit) || !has(self.claimName)",
            message="spec.storage.outputs.sizeLimit sizes the emptyDir used when claimName is unset; "
            "with claimName the claim's own size applies: remove sizeLimit",
            field_path=".sizeLimit",
            check=lambda v: v.size_limit is None or v.claim_name is None,
        ),
    )


class StorageSpec(ApiModel):
    """Where data, models and results live. kubetune never deletes anything on these volumes."""

    datasets: VolumeSpec | None = None
    (
        "Volume holding dataset files (spec.datasets[].path) and converted data. Unset: "
        "an emptyDir (hub/url datasets only)."
    )
    models: VolumeSpec | None = None
    (
        "Model cache (HF_HOME) and local models (spec.model.path). Unset: an emptyDir, "
        "so every run downloads the model again."
    )
    outputs: OutputsVolumeSpec
    (
        "Checkpoints, adapters, merged models, logs and the run record go to <outputs>/<namespace>/<job name>/ (and, "
        "with outputs.uri, are uploaded to a bucket)."
    )
    object_store: ObjectStoreSpec | None = None
    (
        "Endpoint, region, credentials and CA bundle for the job's s3:// URIs (spec.model.uri, spec.datasets[].uri, "
        "spec.storage.outputs.uri). Unset: AWS S3 with the SDK's default credential chain."
    )


class ExportSpec(ApiModel):
    """After training, merge the LoRA adapter into the base model (the tutorial's export step)."""

    enabled: bool = False
    (
        "Run `llamafactory-cli export` after a successful LoRA/QLoRA training; "
        "the merged model lands in <outputs>/merged."
    )
    shard_size_gb: Annotated[int, Field(ge=1, le=100, alias="shardSizeGB")] = 5
    """Maximum safetensors shard size in GB (`export_size`)."""
