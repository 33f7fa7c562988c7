"""One RBAC rule the operator needs, as backends and serving engines declare them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RbacRule:
    """One RBAC rule the operator needs for a backend or an engine (namespaced unless ``cluster``)."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    cluster: bool = False
