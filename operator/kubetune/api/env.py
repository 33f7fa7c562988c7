"""spec.env and references to Secrets and ConfigMaps.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from .base import (
    ApiModel,
    DNS1123Subdomain,
    Rule,
    RuledModel,
)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: DNS1123Subdomain
    """Secret name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "token"
    """Key inside the Secret."""


class OptionalSecretKeyRef(SecretKeyRef):
    """A key of a Secret in the job's namespace that the pods may start without."""

    optional: bool | None = None
    (
        "true: the pods start without the variable when the Secret or its key is missing (Kubernetes' "
        "secretKeyRef.optional); unset or false: they wait until it exists (SecretMissing)."
    )

    def selector(self) -> dict[str, Any]:
        """The core/v1 SecretKeySelector (name, key, optional: k8s.io/api/core/v1/types.go
        SecretKeySelector, read in openshift/microshift deps/github.com/openshift/kubernetes
        @ 8e16b12, line 2584; ``optional`` is left out when unset, as omitempty does)."""
        out: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.optional is not None:
            out["optional"] = self.optional
        return out


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the job's namespace."""

    name: DNS1123Subdomain
    """ConfigMap name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside the ConfigMap."""


class EnvSource(RuledModel):
    """Where an environment variable's value comes from: a Secret or ConfigMap key, never inline."""

    secret_key_ref: SecretKeyRef | None = None
    """Value of a Secret key (API keys, tokens)."""
    config_map_key_ref: ConfigMapKeyRef | None = None
    """Value of a ConfigMap key."""

    rules = (
        Rule(
            name="env-one-source",
            cel="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            message="spec.env[].valueFrom: set exactly one of secretKeyRef or configMapKeyRef",
            check=lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None),
        ),
    )


RESERVED_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "FORCE_TORCHRUN",
    "HF_TOKEN",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "KUBETUNE_CONFIG_DIR",
    "KUBETUNE_JOB",
    "KUBETUNE_NAMESPACE",
    "KUBETUNE_OUTPUT_DIR",
    "KUBETUNE_DATASETS_DIR",
    "KUBETUNE_MODELS_DIR",
    "KUBETUNE_PROGRESS_URL",
    "KUBETUNE_PROGRESS_TOKEN_FILE",
    "KUBETUNE_METRICS_PORT",
    "KUBETUNE_STOP_GRACE_SECONDS",
    "KUBETUNE_S3_ENDPOINT",
    "KUBETUNE_S3_REGION",
    "KUBETUNE_S3_ACCESS_KEY_ID",
    "KUBETUNE_S3_SECRET_ACCESS_KEY",
    "KUBETUNE_S3_CA_BUNDLE",
    # The root filesystem is read-only: caches and temp files are pointed at scratch.
    "HOME",
    "TMPDIR",
    "TRITON_CACHE_DIR",
    "TORCH_EXTENSIONS_DIR",
    "MPLCONFIGDIR",
    "PYTHONUNBUFFERED",
)
"""Variables the renderer sets itself; a user value would be a duplicate entry that silently
breaks distribution or the read-only root filesystem.  tests/render/test_hostile_render.py
renders every backend and launcher and fails when a container gets a name missing here."""

_RESERVED_CEL = "[" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]"


class EnvVar(RuledModel):
    """An environment variable for the training containers."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Variable name."""
    value: Annotated[str, Field(max_length=4096, pattern=r"^[^\x00]*$")] | None = None
    """Literal value (never put secrets here: use valueFrom.secretKeyRef)."""
    value_from: EnvSource | None = None
    """Take the value from a Secret or ConfigMap key."""

    rules = (
        Rule(
            name="env-one-value",
            cel="has(self.value) != has(self.valueFrom)",
            message="spec.env[]: set exactly one of value or valueFrom",
            check=lambda e: (e.value is None) != (e.value_from is None),
        ),
        Rule(
            name="env-not-reserved",
            cel=f"!(self.name in {_RESERVED_CEL}) && !self.name.startsWith('PET_') && !self.name.startsWith('OMPI_')",
            message="spec.env[].name is set by kubetune itself (distribution, caches, HF token); "
            "use spec.hfTokenSecretRef for the Hub token and drop the variable",
            field_path=".name",
            check=lambda e: e.name not in RESERVED_ENV and not e.name.startswith(("PET_", "OMPI_")),
        ),
    )
