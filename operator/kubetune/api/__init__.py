"""kubetune.io/v1alpha1: the FineTuneJob API (pydantic models, the single source of truth).

The CRD in ``crds/`` is generated from these models (``kubetune crd``).
"""

from .base import ApiModel, Rule, RuledModel, broken_transition_rules
from .loading import load_documents
from .resource import FineTuneJob, ObjectMeta
from .spec import (
    IMMUTABLE_FIELDS,
    RESERVED_ENV,
    DatasetColumns,
    DatasetSpec,
    DistributedSpec,
    EnvSource,
    EnvVar,
    ExportSpec,
    FineTuneJobSpec,
    FreezeSpec,
    LoraSpec,
    ModelSpec,
    QuantizationSpec,
    ResourcesSpec,
    RunPolicySpec,
    SchedulingSpec,
    SecretKeyRef,
    ShareGPTTags,
    StorageSpec,
    Toleration,
    TrainingSpec,
    VolumeSpec,
)
from .status import TERMINAL_PHASES, ChildRef, Condition, FineTuneJobStatus, OutputLocation, Phase, Progress, Retries

__all__ = [
    "IMMUTABLE_FIELDS",
    "RESERVED_ENV",
    "TERMINAL_PHASES",
    "ApiModel",
    "ChildRef",
    "Condition",
    "DatasetColumns",
    "DatasetSpec",
    "DistributedSpec",
    "EnvSource",
    "EnvVar",
    "ExportSpec",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "FreezeSpec",
    "LoraSpec",
    "ModelSpec",
    "ObjectMeta",
    "OutputLocation",
    "Phase",
    "Progress",
    "Retries",
    "QuantizationSpec",
    "ResourcesSpec",
    "Rule",
    "RuledModel",
    "RunPolicySpec",
    "SchedulingSpec",
    "SecretKeyRef",
    "ShareGPTTags",
    "StorageSpec",
    "Toleration",
    "TrainingSpec",
    "VolumeSpec",
    "broken_transition_rules",
    "load_documents",
]
