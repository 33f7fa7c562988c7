"""Kubernetes core/v1 types and name rules, so "valid here" means "valid in the pod".

The fields a FineTuneJob passes into its pods (affinity, tolerations,
nodeSelector, resource names and quantities) follow the API server's own
validation, which this module reproduces; each rule names the upstream
function it follows (kubernetes/kubernetes):

* names: staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go
  (IsQualifiedName, IsValidLabelValue, IsDNS1123Subdomain);
* resource names: pkg/apis/core/helper/helpers.go (IsExtendedResourceName,
  IsNativeResource) and pkg/apis/core/validation/validation.go
  (validateContainerResourceName);
* quantities: staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go
  (the grammar in its package comment; the pattern is the one controller-gen
  writes for resource.Quantity);
* affinity and tolerations: pkg/apis/core/validation/validation.go
  (ValidateNodeSelector, ValidateNodeSelectorRequirement,
  validateNodeFieldSelectorRequirement, validatePodAffinityTerm,
  ValidatePreferredSchedulingTerms, validateTolerations) and
  staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go
  (ValidateLabelSelector).

Lists and strings carry maxItems/maxLength so the CRD's CEL rules have a
bounded cost and a 2 MB affinity is refused by the schema, not by etcd.
Other models (e.g. a map of extra resources) reuse :data:`ExtendedResourceName`
and :func:`extended_resource_problems`.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints

from .base import ApiModel, Rule, RuledModel

INT32_MAX: Final = 2**31 - 1
SAFE_INT_MAX: Final = 2**53 - 1
"""Largest int64 a manifest can carry exactly through every tool on its way: Helm, kubectl's
YAML-to-JSON and JSON clients hold untyped numbers as float64 (2**63 - 1 comes back as 2**63).
Also what a CRD's ``maximum`` (a float64 in JSONSchemaProps) can state exactly."""

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX, json_schema_extra={"format": "int32"})]
Int64 = Annotated[int, Field(ge=-SAFE_INT_MAX, le=SAFE_INT_MAX, json_schema_extra={"format": "int64"})]

# --- names -----------------------------------------------------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_QNAME_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME_PATTERN: Final = rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_QNAME_NAME}$"
"""IsQualifiedName: an optional DNS-subdomain prefix and '/', then a name of 1-63 characters."""
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED = re.compile(QUALIFIED_NAME_PATTERN)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def qualified_name_problems(name: str) -> list[str]:
    """Why ``name`` is not a qualified name (a label key, a resource name); empty when it is."""
    if not _QUALIFIED.fullmatch(name):
        return [
            "must be a qualified name: an optional DNS subdomain prefix and '/', then 1-63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit (e.g. example.com/gpu-type)"
        ]
    prefix = name.rpartition("/")[0]
    if len(prefix) > 253:
        return [f"the prefix before '/' is {len(prefix)} characters; a DNS subdomain has at most 253"]
    return []


def _qualified(name: str) -> str:
    problems = qualified_name_problems(name)
    if problems:
        raise ValueError(problems[0])
    return name


QualifiedName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME_PATTERN),
    AfterValidator(_qualified),
]
"""A label key, taint key or topology key (IsQualifiedName)."""

LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
"""A label value (IsValidLabelValue): empty, or up to 63 letters, digits, '-', '_', '.'."""

DNSLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=rf"^{_DNS_LABEL}$")]

NATIVE_RESOURCES: Final = ("cpu", "memory", "ephemeral-storage", "storage")


def extended_resource_problems(name: str) -> list[str]:
    """Why ``name`` cannot be an extended resource (a GPU, an RDMA device) in a container; empty when it can.

    Follows IsExtendedResourceName: it must carry a domain prefix (``nvidia.com/gpu``), not the
    ``kubernetes.io/`` one, not start with ``requests.``, and stay a qualified name once the quota
    system prefixes it with ``requests.``.  So ``gpu``, ``cpu``, ``memory`` and
    ``ephemeral-storage`` are refused: they would overwrite or mean something else.
    """
    problems = qualified_name_problems(name)
    if problems:
        return problems
    if "/" not in name:
        native = (
            " (a native resource the spec sets itself)"
            if name in NATIVE_RESOURCES or name.startswith("hugepages-")
            else ""
        )
        return [
            "must be an extended resource name with a domain, e.g. nvidia.com/gpu or "
            f"amd.com/gpu; '{name}' has none{native}"
        ]
    if "kubernetes.io/" in name:
        return ["must not be in the kubernetes.io domain (reserved for native resources)"]
    if name.startswith("requests."):
        return ["must not start with 'requests.' (reserved for resource quotas)"]
    if qualified_name_problems("requests." + name):
        return ["is too long: the quota name 'requests.<name>' must also be a qualified name"]
    return []


def _extended(name: str) -> str:
    problems = extended_resource_problems(name)
    if problems:
        raise ValueError(problems[0])
    return name


EXTENDED_RESOURCE_PATTERN: Final = rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*/{_QNAME_NAME}$"

ExtendedResourceName = Annotated[
    str,
    # no min_length: the pattern needs at least "a/b", and a too-short name then gets the pattern's hint
    StringConstraints(max_length=317, pattern=EXTENDED_RESOURCE_PATTERN),
    AfterValidator(_extended),
]
"""A container extended resource name such as ``nvidia.com/gpu`` (IsExtendedResourceName)."""

# --- quantities ---------------------------------------------------------------------------

QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""resource.Quantity's grammar, as controller-gen writes it into CRDs."""
POSITIVE_QUANTITY_PATTERN: Final = (
    r"^\+?(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|([0-9]*\.[0-9]*[1-9][0-9]*))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""The same grammar with a non-zero number and no '-': what a limit or a size must be."""
PositiveQuantity = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=POSITIVE_QUANTITY_PATTERN)]
"""A resource quantity greater than zero, e.g. ``16``, ``500m``, ``128Gi``."""

# --- node affinity -----------------------------------------------------------------------

Values = Annotated[list[LabelValue], Field(max_length=64)]


class NodeSelectorRequirement(RuledModel):
    """core/v1 NodeSelectorRequirement: a node label key, an operator and values."""

    key: QualifiedName
    """The node label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key relates to the values."""
    values: Values | None = None
    """Values for In/NotIn (one or more), Gt/Lt (exactly one integer); none for Exists/DoesNotExist."""

    rules = (
        Rule(
            name="node-requirement-values",
            cel="self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
            "(self.operator in ['Gt', 'Lt'] ? (has(self.values) && size(self.values) == 1) : "
            "(!has(self.values) || size(self.values) == 0))",
            message="values: In/NotIn need at least one value, Gt/Lt exactly one, Exists/DoesNotExist none",
            field_path=".values",
            check=lambda r: (
                bool(r.values)
                if r.operator in ("In", "NotIn")
                else len(r.values or ()) == 1
                if r.operator in ("Gt", "Lt")
                else not r.values
            ),
        ),
        Rule(
            name="node-requirement-integer",
            cel="!(self.operator in ['Gt', 'Lt']) || !has(self.values) || "
            "self.values.all(v, v.matches('^-?[0-9]{1,18}$'))",
            message="values: Gt/Lt compare a node label with an integer: give one integer value",
            field_path=".values",
            check=lambda r: (
                r.operator not in ("Gt", "Lt") or all(re.fullmatch(r"-?[0-9]{1,18}", v) for v in r.values or ())
            ),
        ),
    )


class NodeFieldSelectorRequirement(RuledModel):
    """A matchFields requirement: only ``metadata.name`` with In/NotIn and one value."""

    key: Literal["metadata.name"]
    """The only node field Kubernetes selects on."""
    operator: Literal["In", "NotIn"]
    """In or NotIn."""
    values: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=253)]], Field(min_length=1, max_length=1)
    ]
    """Exactly one node name."""


class NodeSelectorTerm(ApiModel):
    """core/v1 NodeSelectorTerm: requirements that must all hold (an empty term matches nothing)."""

    match_expressions: Annotated[list[NodeSelectorRequirement], Field(max_length=32)] | None = None
    """Requirements on node labels."""
    match_fields: Annotated[list[NodeFieldSelectorRequirement], Field(max_length=4)] | None = None
    """Requirements on node fields (metadata.name)."""


class NodeSelector(ApiModel):
    """core/v1 NodeSelector: the terms are ORed."""

    node_selector_terms: Annotated[list[NodeSelectorTerm], Field(min_length=1, max_length=16)]
    """At least one term."""


Weight = Annotated[int, Field(ge=1, le=100, json_schema_extra={"format": "int32"})]


class PreferredSchedulingTerm(ApiModel):
    """core/v1 PreferredSchedulingTerm."""

    weight: Weight
    """1-100, added to a node's score when the preference matches."""
    preference: NodeSelectorTerm
    """The node selector term."""


class NodeAffinity(ApiModel):
    """core/v1 NodeAffinity."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Hard requirement on the node."""
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[PreferredSchedulingTerm], Field(max_length=16)] | None
    ) = None
    """Soft preferences."""


# --- pod (anti-)affinity -----------------------------------------------------------------


class LabelSelectorRequirement(RuledModel):
    """meta/v1 LabelSelectorRequirement."""

    key: QualifiedName
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: Values | None = None
    """Values for In/NotIn (one or more); none for Exists/DoesNotExist."""

    rules = (
        Rule(
            name="label-requirement-values",
            cel="self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
            "(!has(self.values) || size(self.values) == 0)",
            message="values: In/NotIn need at least one value; Exists/DoesNotExist take none",
            field_path=".values",
            check=lambda r: bool(r.values) if r.operator in ("In", "NotIn") else not r.values,
        ),
    )


class LabelSelector(ApiModel):
    """meta/v1 LabelSelector."""

    match_labels: Annotated[dict[QualifiedName, LabelValue], Field(max_length=32)] | None = None
    """Labels that must all match."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] | None = None
    """Requirements that must all hold."""


class PodAffinityTerm(ApiModel):
    """core/v1 PodAffinityTerm."""

    label_selector: LabelSelector | None = None
    """Pods to be near (or away from)."""
    namespace_selector: LabelSelector | None = None
    """Namespaces of those pods, by label."""
    namespaces: Annotated[list[DNSLabel], Field(max_length=32)] | None = None
    """Namespaces of those pods, by name (empty: the job's namespace)."""
    topology_key: QualifiedName
    """Node label whose equal values form a topology domain, e.g. kubernetes.io/hostname."""
    match_label_keys: Annotated[list[QualifiedName], Field(max_length=16)] | None = None
    """Label keys whose values are taken from the incoming pod."""
    mismatch_label_keys: Annotated[list[QualifiedName], Field(max_length=16)] | None = None
    """Label keys whose values must differ from the incoming pod's."""


class WeightedPodAffinityTerm(ApiModel):
    """core/v1 WeightedPodAffinityTerm."""

    weight: Weight
    """1-100."""
    pod_affinity_term: PodAffinityTerm
    """The term."""


class PodAffinity(ApiModel):
    """core/v1 PodAffinity (also the shape of PodAntiAffinity)."""

    required_during_scheduling_ignored_during_execution: (
        Annotated[list[PodAffinityTerm], Field(max_length=16)] | None
    ) = None
    """Hard requirements."""
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[WeightedPodAffinityTerm], Field(max_length=16)] | None
    ) = None
    """Soft preferences."""


class Affinity(ApiModel):
    """core/v1 Affinity, checked as the API server checks it and copied into every pod."""

    node_affinity: NodeAffinity | None = None
    """Which nodes the pods may run on."""
    pod_affinity: PodAffinity | None = None
    """Pods to run near."""
    pod_anti_affinity: PodAffinity | None = None
    """Pods to run away from."""


# --- tolerations ---------------------------------------------------------------------------


class Toleration(RuledModel):
    """A pod toleration (core/v1 Toleration), e.g. for tainted GPU nodes; checked like validateTolerations."""

    key: (
        Annotated[
            str,
            StringConstraints(max_length=317, pattern=rf"^$|{QUALIFIED_NAME_PATTERN}"),
            AfterValidator(lambda k: _qualified(k) if k else k),
        ]
        | None
    ) = None
    """Taint key to tolerate (a qualified name); empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (default) or `Exists`."""
    value: LabelValue | None = None
    """Taint value for operator Equal (a label value); must be empty with Exists."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty means all."""
    toleration_seconds: Int64 | None = None
    """For NoExecute only: how long the pod stays bound after the taint appears."""

    rules = (
        Rule(
            name="toleration-empty-key-exists",
            cel="(has(self.key) && size(self.key) > 0) || (has(self.operator) && self.operator == 'Exists')",
            message="operator must be Exists when key is empty, which means \"match all values and all keys\"",
            field_path=".operator",
            check=lambda t: bool(t.key) or t.operator == "Exists",
        ),
        Rule(
            name="toleration-exists-no-value",
            cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || size(self.value) == 0",
            message="value must be empty when operator is Exists",
            field_path=".value",
            check=lambda t: t.operator != "Exists" or not t.value,
        ),
        Rule(
            name="toleration-seconds-need-noexecute",
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="effect must be NoExecute when tolerationSeconds is set",
            field_path=".effect",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )
