"""kubetune.io/v1alpha1: the FineTuneJob API (pydantic models, the single source of truth).

The CRD in ``crds/`` is generated from these models (``kubetune crd``).
"""

from .k8s import Affinity, Toleration
from .base import ApiModel, Rule, RuledModel, broken_transition_rules
from .loading import load_documents
from .resource import FineTuneJob, ObjectMeta
from .serve import KaitoSpec, KServeSpec, ServeSpec
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
    TrainingSpec,
    VolumeSpec,
)
from .status import TERMINAL_PHASES, ChildRef, Condition, FineTuneJobStatus, OutputLocation, Phase, Progress

__all__ = [
    "IMMUTABLE_FIELDS",
    "RESERVED_ENV",
    "TERMINAL_PHASES",
    "Affinity",
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
    "KServeSpec",
    "KaitoSpec",
    "FreezeSpec",
    "LoraSpec",
    "ModelSpec",
    "ObjectMeta",
    "OutputLocation",
    "Phase",
    "Progress",
    "QuantizationSpec",
    "ResourcesSpec",
    "ServeSpec",
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
