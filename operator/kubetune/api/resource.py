"""The FineTuneJob resource (apiVersion/kind/metadata/spec/status)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import ApiModel, DNS1123Label
from .contract import API_VERSION, KIND
from .spec import FineTuneJobSpec
from .status import FineTuneJobStatus


class ObjectMeta(ApiModel):
    """The subset of metav1.ObjectMeta kubetune reads; everything else is kept as-is."""

    model_config = ApiModel.model_config | {"extra": "allow", "strict": False}

    name: DNS1123Label
    """Object name. A DNS label (<= 63 characters) because child objects and pod host names derive from it."""
    namespace: DNS1123Label | None = None
    """Namespace; `default` when unset."""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class FineTuneJob(ApiModel):
    """FineTuneJob fine-tunes an LLM with LLaMA-Factory on Kubernetes (full, freeze, LoRA or QLoRA), through a Kubeflow PyTorchJob or MPIJob."""

    api_version: Literal["kubetune.io/v1alpha1"] = API_VERSION
    """kubetune.io/v1alpha1."""
    kind: Literal["FineTuneJob"] = KIND
    """FineTuneJob."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: FineTuneJobSpec
    """What to train and how."""
    status: FineTuneJobStatus | None = None
    """Reported by the operator."""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> FineTuneJob:
        """Validate an object as read from the API server or a manifest."""
        return cls.model_validate(obj, by_alias=True)


MAX_NAME_LENGTH: Annotated[int, "child names append up to 10 characters"] = 52
