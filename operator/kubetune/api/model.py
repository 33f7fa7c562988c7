"""spec.model: the base model and chat template.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    DNS1123Subdomain,
    HubId,
    Identifier,
    RelativePath,
    Rule,
    RuledModel,
    one_of_rule,
)
from .objectstore import ObjectUri, uri_rules
from .fields import (
    _NO_DOTDOT,
    _no_dotdot,
)

# --- model --------------------------------------------------------------------


class ModelSpec(RuledModel):
    """The base model to fine-tune: a Hub repository, a folder on the models volume or a prefix in an S3 bucket."""

    name: HubId | None = None
    (
        "Hugging Face Hub id, e.g. `Qwen/Qwen1.5-1.8B`. Downloaded once into the model cache (spec.storage.models). "
        "Exactly one of name, path, uri or fromJob."
    )

    path: RelativePath | None = None
    (
        "Folder of a model already on the models volume (spec.storage.models), "
        "relative to its subPath. Exactly one of name, path, uri or fromJob."
    )

    uri: ObjectUri | None = None
    (
        "s3:// key prefix ending in '/' holding a Hugging Face model folder (config.json, tokenizer, safetensors), "
        "e.g. `s3://models/qwen2.5-0.5b/`. Staged once into the models volume (spec.storage.models; "
        "an emptyDir when unset), keyed by the objects' ETags: only changed objects are downloaded again. Not with "
        "spec.serve yet. gs:// for Google Cloud Storage; az://<container>/<path> for Azure Blob Storage (the account "
        "from spec.storage.objectStore)."
    )

    from_job: DNS1123Subdomain | None = None
    (
        "Train on top of another FineTuneJob's output in the same namespace (same outputs claim): "
        "its merged model when it exported one, else its base model plus its LoRA adapter. The job waits (phase "
        "Pending, reason WaitingForJob) until that job has Succeeded."
    )

    revision: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.\-/]+$")] | None = None
    """Hub revision (branch, tag or commit) to pin; only with name. LLaMA-Factory's `model_revision`."""

    template: Identifier
    (
        "LLaMA-Factory chat template matching the model family, e.g. `qwen`, `llama3`, `mistral`, "
        "`default` (LLaMA-Factory's `template`)."
    )

    trust_remote_code: bool = False
    """Allow custom modelling code from the model repository to run. Off by default: it executes code from the Hub."""

    rules = (
        one_of_rule(
            "model-one-source",
            ("name", "path", "uri", "from_job"),
            "spec.model: set exactly one of name (a Hub id such as Qwen/Qwen1.5-1.8B), "
            "path (a folder on the models volume), uri (an s3:// prefix) or fromJob (another FineTuneJob's output)",
        ),
        *uri_rules("spec.model.uri", prefix_example="s3://models/qwen2.5-0.5b/"),
        Rule(
            name="model-revision-needs-hub",
            cel="!has(self.revision) || has(self.name)",
            message="spec.model.revision pins a Hub revision and needs spec.model.name; "
            "remove it when loading from spec.model.path or spec.model.uri",
            field_path=".revision",
            check=lambda m: m.revision is None or m.name is not None,
        ),
        Rule(
            name="model-path-inside-volume",
            cel="!has(self.path) || " + _NO_DOTDOT.replace("self", "self.path"),
            message="spec.model.path must stay inside the models volume: remove '..' segments",
            field_path=".path",
            check=lambda m: _no_dotdot(m.path),
        ),
    )
