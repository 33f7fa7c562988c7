"""Shared pydantic configuration for every API model.

Why one base class: every model must (1) use Kubernetes camelCase names on the
wire while staying snake_case in Python, (2) reject unknown fields (a typo in a
FineTuneJob must fail loudly, not be dropped), (3) be strict about types the way
the API server is (``"5"`` is not an integer), and (4) take its ``kubectl
explain`` text from the attribute docstrings, so documentation lives next to
the field it documents (read only when the CRD schema is written:
:mod:`kubetune.api.fielddocs`, so importing the models stays cheap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Self

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic_core import PydanticCustomError
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every spec/status model."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
        use_attribute_docstrings=False,  # read when a schema is written: api/fielddocs.py
        validate_default=True,
        # Build validators on first use, not at import: `kubetune --help` and the
        # operator's start-up should not pay for every model up front.
        defer_build=True,
    )

    def to_api(self) -> dict[str, Any]:
        """Serialise as the API server would store it: camelCase, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry, in the API server's format."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


# --- constrained string types -------------------------------------------------
# Patterns are RE2-compatible (the API server evaluates `pattern` with Go's
# regexp), so no look-arounds.

DNS1123Label = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
"""A Kubernetes object name that must also be a DNS label (claims, secrets)."""

DNS1123Subdomain = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]

RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_.@+=-][A-Za-z0-9_.@+=/-]*$"),
]
"""A path inside a volume: relative, no spaces or shell metacharacters.

``..`` segments are rejected separately (a CEL rule and a validator), because
RE2 has no look-ahead to do it in the pattern.
"""

HubId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    ),
]
"""A Hugging Face Hub repository id, ``owner/name``."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
"""A plain identifier: dataset names, templates, module names, column names."""


# --- cross-field rules, written once for both the API server and Python -------


@dataclass(frozen=True)
class Rule:
    """A cross-field rule with two faces that must agree.

    ``cel`` is emitted into the CRD as an ``x-kubernetes-validations`` entry so
    the API server rejects the object at ``kubectl apply`` time; ``check`` is the
    same rule in Python, run by the model validator so that ``kubetune
    validate``, ``kubetune render`` and the operator reject exactly the same
    objects.  A test evaluates both on one corpus of specs.
    """

    name: str
    cel: str
    message: str
    check: Callable[..., bool]
    """Returns True when the object satisfies the rule."""
    field_path: str | None = None
    reason: str = "FieldValueInvalid"
    transition: bool = False
    """A transition rule (uses ``oldSelf``): ``check`` then takes ``(new, old)``
    and the model validator skips it; :func:`broken_transition_rules` runs it."""
    in_crd: bool = True
    """False when the API server cannot evaluate ``cel``: CEL has no access to
    data under ``x-kubernetes-preserve-unknown-fields`` (e.g. spec.extraArgs),
    and a rule that names such a field would make the CRD itself invalid.  The
    rule is then enforced by the Python check only (validate, render, operator)."""

    def to_cel(self) -> dict[str, str]:
        return cel(self.cel, self.message, field_path=self.field_path, reason=self.reason)


def one_of_rule(name: str, fields: tuple[str, ...], message: str) -> Rule:
    """The rule that exactly one of ``fields`` (Python attribute names; the CEL names them in
    camelCase, as the CRD does) is set: a source given once and only once."""
    return Rule(
        name=name,
        cel=" + ".join(f"(has(self.{to_camel(f)}) ? 1 : 0)" for f in fields) + " == 1",
        message=message,
        check=lambda m: sum(getattr(m, f) is not None for f in fields) == 1,
    )


class RuledModel(ApiModel):
    """An ApiModel that carries cross-field :class:`Rule`s."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [rule for rule in type(self).rules if not rule.transition and not rule.check(self)]
        if broken:
            raise PydanticCustomError(
                "kubetune_rule",
                "{summary}",
                {
                    "summary": " | ".join(r.message for r in broken),
                    "rules": [{"name": r.name, "message": r.message, "fieldPath": r.field_path or ""} for r in broken],
                },
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            emitted = [r.to_cel() for r in cls.rules if r.in_crd]
            if emitted:
                target["x-kubernetes-validations"] = emitted
        return schema


def broken_transition_rules(new: RuledModel, old: RuledModel) -> list[Rule]:
    """The transition rules of ``new``'s class that an update from ``old`` breaks.

    The API server evaluates these CEL rules on update; the operator calls this
    to enforce the same thing when a webhook-less cluster or an older CRD let a
    change through.
    """
    if type(new) is not type(old):
        raise TypeError(f"cannot compare {type(new).__name__} with {type(old).__name__}")
    return [r for r in type(new).rules if r.transition and not r.check(new, old)]
