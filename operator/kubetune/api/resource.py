"""The FineTuneJob resource (apiVersion/kind/metadata/spec/status)."""

from __future__ import annotations

import re
import typing
from typing import Any, Final, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo


from .base import ApiModel, DNS1123Label, Rule, RuledModel
from .spec import MAX_NODES, FineTuneJobSpec
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


LONGEST_POD_SUFFIX: Final = f"-worker-{MAX_NODES - 1}"
"""The longest suffix Kubeflow appends for a pod and its host name: the last worker of the
largest job (PyTorchJob ``<name>-worker-<i>``, MPIJob ``<name>-worker-<i>``)."""
MAX_NAME_LENGTH: Final = 63 - len(LONGEST_POD_SUFFIX)
"""Longest FineTuneJob name (51): every child object, pod and host name derived from it
stays a DNS label (<= 63 characters) for any allowed number of nodes."""

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_FREE_FORM = {("metadata",), ("spec", "extraArgs")}
"""Subtrees the API server keeps verbatim (no schema), nulls included."""


def _prune_nulls(value: Any, path: tuple[str, ...] = (), model: type[BaseModel] | None = None) -> Any:
    """Drop ``null`` fields the way the API server does before validating a custom resource.

    The API server prunes a null in a non-nullable field (then applies the
    field's default), so ``method: null`` means "the default method" to
    ``kubectl apply`` and must mean the same here.  Free-form subtrees
    (``spec.scheduling.affinity``) are kept verbatim, as the server keeps them.
    An *unknown* key stays even when its value is null, so that it is refused as
    unknown: the API server's strict field validation (kubectl's default) refuses
    an unknown field whatever its value (seen on kube-apiserver v1.36, issue 22:
    ``spec.model.bogus: null`` was refused there and passed ``kubetune validate``).
    ``model``: the pydantic model of ``value`` where known (None: every null is pruned).
    """
    if path in _FREE_FORM:
        return value
    if isinstance(value, dict):
        fields = _fields_by_name(model) if model is not None and model.model_config.get("extra") == "forbid" else None
        out: dict[Any, Any] = {}
        for k, v in value.items():
            field = fields.get(k) if fields is not None and isinstance(k, str) else None
            if v is None and (fields is None or field is not None):
                continue
            out[k] = _prune_nulls(v, (*path, k), _model_in(field.annotation) if field is not None else None)
        return out
    if isinstance(value, list):
        return [_prune_nulls(v, (*path, "[]"), model) for v in value]
    return value


def _fields_by_name(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by their API (camelCase) name."""
    return {(f.alias or n): f for n, f in model.model_fields.items()}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: X, X | None, list[X] (a map ``dict[str, X]`` is not followed:
    its keys are the user's, so its nulls are pruned as before)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict or origin is typing.Literal:
        return None
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    found = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
    return found[0] if len(found) == 1 else None


class FineTuneJob(RuledModel):
    """FineTuneJob fine-tunes an LLM with LLaMA-Factory on Kubernetes (full, freeze, LoRA or QLoRA), through a Kubeflow PyTorchJob or MPIJob."""

    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    """kubetune.io/v1alpha1."""
    kind: Literal["FineTuneJob"] = "FineTuneJob"
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
        """Validate an object as read from the API server or a manifest.

        Like the API server: camelCase names only (``gpus_per_node`` is an
        unknown field there, so it is one here), and null fields are unset.
        """
        return cls.model_validate(_prune_nulls(obj, model=cls), by_alias=True, by_name=False)

    rules = (
        Rule(
            name="name-fits-children",
            cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{_DNS_LABEL}')",
            message=f"metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters (lower-case letters, digits, '-'): child jobs, pods and host names append up to 10 characters to it",
            check=lambda j: len(j.metadata.name) <= MAX_NAME_LENGTH and re.match(_DNS_LABEL, j.metadata.name) is not None,
        ),
    )
