"""The FineTuneJob resource (apiVersion/kind/metadata/spec/status)."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import BaseModel
from pydantic.fields import FieldInfo


from .base import ApiModel, DNS1123Label, Rule, RuledModel
from .spec import MAX_NODES, FineTuneJobSpec
from .status import FineTuneJobStatus, progress_summary


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


def name_rule(name: str, max_length: int, why: str) -> Rule:
    """The rule on a kubetune resource's metadata.name: a DNS label of at most ``max_length`` characters,
    ``why`` saying what the name becomes part of (children's names, pods, host names, trials)."""
    return Rule(
        name=name,
        cel=f"size(self.metadata.name) <= {max_length} && self.metadata.name.matches('{_DNS_LABEL}')",
        message=f"metadata.name must be a DNS label of at most {max_length} characters (lower-case letters, "
        f"digits, '-'): {why}",
        check=lambda r: len(r.metadata.name) <= max_length and re.match(_DNS_LABEL, r.metadata.name) is not None,
    )


class KubetuneResource(RuledModel):
    """What kubetune's top-level kinds (FineTuneJob, FineTuneSweep) share: the name, the namespace, and
    validation of an object as the API server reads it. Subclasses declare metadata, spec and status
    (as fields of their own, so the CRD lists them in their order)."""

    if typing.TYPE_CHECKING:
        metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> Self:
        """Validate an object as read from the API server or a manifest.

        Like the API server: camelCase names only (``gpus_per_node`` is an
        unknown field there, so it is one here), and null fields are unset.
        """
        return cls.model_validate(_prune_nulls(obj, model=cls), by_alias=True, by_name=False)


class FineTuneJob(KubetuneResource):
    # One line: it is the CRD's description (`kubectl explain finetunejob`) and FineTuneJob's line in docs/sdk.md.
    """FineTuneJob fine-tunes an LLM with LLaMA-Factory on Kubernetes (full, freeze, LoRA or QLoRA), through a Kubeflow PyTorchJob or MPIJob."""  # noqa: E501

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

    @classmethod
    def from_file(cls, path: str | Path) -> FineTuneJob:
        """The one FineTuneJob in a manifest file (``-`` reads stdin), read as safely as ``kubetune validate``
        reads it (size, depth and key bounds: :mod:`kubetune.api.safeyaml`) and validated like the API server
        validates it (:meth:`from_api`).

        Raises :class:`kubetune.api.safeyaml.InputError` for an unreadable file, ``ValueError`` when the file
        holds no FineTuneJob or several, and ``pydantic.ValidationError`` naming the fields of an invalid one."""
        from .safeyaml import read_documents

        docs = [d for d in read_documents(str(path)) if isinstance(d, dict) and d.get("kind") == "FineTuneJob"]
        if len(docs) != 1:
            raise ValueError(f"{path}: expected exactly one FineTuneJob, found {len(docs)}")
        return cls.from_api(docs[0])

    @classmethod
    def build(
        cls,
        *,
        name: str,
        model: str,
        template: str,
        dataset: str | dict[str, Any] | list[str | dict[str, Any]],
        outputs: str,
        models: str | None = None,
        method: str = "lora",
        gpus: int = 1,
        nodes: int = 1,
        namespace: str | None = None,
        **spec: Any,
    ) -> FineTuneJob:
        # docs/sdk.md prints this docstring as written (tests/support/update_sdk_docs.py): its one long line stays.
        """A FineTuneJob from the few values most jobs set; every other spec field by its camelCase name.

        ``model``: a Hugging Face Hub id (``Qwen/Qwen2.5-1.5B-Instruct``); ``template``: its LLaMA-Factory chat
        template (``qwen``); ``dataset``: a Hub dataset id, or a ``spec.datasets[]`` entry as a dict (e.g.
        ``{"name": "mine", "path": "mine.json", "format": "alpaca"}``), or a list of them; ``gpus``: GPUs per
        node; ``outputs``: the PersistentVolumeClaim results go to (``spec.storage.outputs``), ``models``: the one
        that caches models (``spec.storage.models``; unset: every run downloads the model again).  Example: ``FineTuneJob.build(name="qwen-lora", model="Qwen/Qwen2.5-1.5B-Instruct",
        template="qwen", dataset="hkust-nlp/deita-10k-v0", outputs="finetune-outputs", training={"epochs": 1})``.
        Validated like :meth:`from_api` (``pydantic.ValidationError`` names the field)."""  # noqa: E501
        datasets = [_dataset_entry(d) for d in (dataset if isinstance(dataset, list) else [dataset])]
        metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
        resources = {"nodes": nodes, "gpusPerNode": gpus, **dict(spec.pop("resources", None) or {})}
        storage = {
            "outputs": {"claimName": outputs},
            **({"models": {"claimName": models}} if models else {}),
            **dict(spec.pop("storage", None) or {}),
        }
        body = {
            "model": {"name": model, "template": template},
            "datasets": datasets,
            "method": method,
            "resources": resources,
            "storage": storage,
            **spec,
        }
        return cls.from_api(
            {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": metadata, "spec": body}
        )

    def _repr_html_(self) -> str:
        """How a notebook shows a job: name, phase, a progress bar with step, loss and ETA, the message and
        the conditions (every value HTML-escaped: names and messages come from users and pods)."""
        from html import escape

        status = self.status
        phase = (status.phase if status else None) or "Pending"
        colour = {"Succeeded": "#2e7d32", "Failed": "#c62828", "Running": "#1565c0"}.get(phase, "#616161")
        parts = [
            f"<div><b>FineTuneJob {escape(self.namespace)}/{escape(self.name)}</b> "
            f"<span style='background:{colour};color:white;padding:0 6px;border-radius:3px'>{escape(phase)}</span> "
            f"{escape(self.spec.method)}</div>"
        ]
        p = status.progress if status else None
        if p is not None and p.total_steps:
            detail = progress_summary(p.step, p.total_steps)  # rounded down like every percentage shown
            detail += f" · loss {p.loss:.4f}" if p.loss is not None else ""
            detail += f" · eta {p.eta_seconds} s" if p.eta_seconds is not None and phase == "Running" else ""
            parts.append(
                "<div style='width:320px;border:1px solid #999;height:10px'><div "
                f"style='width:{max(0.0, min(p.percent, 100.0)):.1f}%;background:{colour};height:10px'></div></div>"
                f"<div>{escape(detail)}</div>"
            )
        if status and status.message:
            parts.append(f"<div>{escape(status.message)}</div>")
        if status and status.conditions:
            rows = "".join(
                f"<tr><td>{escape(c.type)}</td><td>{escape(c.status)}</td><td>{escape(c.reason)}</td><td>{escape(c.message)}</td></tr>"
                for c in status.conditions
            )
            parts.append(
                f"<table><tr><th>condition</th><th>status</th><th>reason</th><th>message</th></tr>{rows}</table>"
            )
        return "".join(parts)

    rules = (
        name_rule(
            "name-fits-children",
            MAX_NAME_LENGTH,
            "child jobs, pods and host names append up to 10 characters to it",
        ),
    )


def _dataset_entry(value: str | dict[str, Any]) -> dict[str, Any]:
    """A ``spec.datasets[]`` entry: a dict as given, a Hub id as ``{name, hub}`` (the name: the id's last part,
    reduced to the characters LLaMA-Factory's dataset_info keys allow)."""
    if isinstance(value, dict):
        return value
    short = re.sub(r"[^A-Za-z0-9_.-]", "_", value.rsplit("/", 1)[-1]) or "dataset"
    return {"name": short, "hub": value}
