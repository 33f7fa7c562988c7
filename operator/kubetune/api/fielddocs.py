"""Field descriptions from attribute docstrings, read only when a JSON schema is written.

Every API field is documented by the string literal under it::

    method: Method = "lora"
    \"\"\"Fine-tuning method: full, freeze, lora or qlora.\"\"\"

and that text becomes the field's ``description`` in the CRD (``kubectl
explain``).  Pydantic can do this itself (``use_attribute_docstrings``), but it
does it for every model at class creation: it locates and re-parses each
class's source, which was about a third of the time ``import kubetune.api``
took, paid by every ``kubetune plan`` / ``validate`` / ``render`` and by the
operator's start-up, none of which ever reads a description.  Here the same
rule is applied when the schema is generated (:class:`DocumentedJsonSchema`,
used by :mod:`kubetune.api.crd`), each module's source parsed once.

The rule is pydantic's (``pydantic/_internal/_docs_extraction.py``): a string
expression right after an annotated assignment in the class body documents
that attribute; an explicit ``Field(description=...)`` wins; a field re-declared
in a subclass takes only the subclass's docstring.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema


@functools.cache
def _module_classes(module: str) -> dict[str, ast.ClassDef]:
    """Top-level and nested class definitions of a module, by qualified name."""
    mod = sys.modules.get(module)
    if mod is None:
        return {}
    try:
        tree = ast.parse(inspect.getsource(mod))
    except (OSError, TypeError):  # no source (frozen, interactive): no descriptions, as pydantic
        return {}
    out: dict[str, ast.ClassDef] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                out[prefix + node.name] = node
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return out


def _own_docstrings(cls: type) -> dict[str, str]:
    """Attribute -> docstring written in ``cls``'s own body."""
    node = _module_classes(cls.__module__).get(cls.__qualname__)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    previous: ast.stmt | None = None
    for stmt in node.body:
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
            and isinstance(previous, ast.AnnAssign)
            and isinstance(previous.target, ast.Name)
        ):
            docs[previous.target.id] = inspect.cleandoc(stmt.value.value)
        previous = stmt
    return docs


@functools.cache
def field_docs(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> description for every field of ``cls`` (explicit descriptions included)."""
    out: dict[str, str] = {}
    for name, info in cls.model_fields.items():
        if info.description is not None:
            out[name] = info.description
            continue
        owner = next((k for k in cls.__mro__ if name in inspect.get_annotations(k)), None)
        doc = _own_docstrings(owner).get(name) if owner is not None else None
        if doc is not None:
            out[name] = doc
    return out


class DocumentedJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema with each field's docstring as its ``description``."""

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        cls: Any = schema["cls"]
        props = json_schema.get("properties")
        if not isinstance(props, dict):
            return json_schema
        for name, info in cls.model_fields.items():
            doc = field_docs(cls).get(name)
            if doc is None or info.description is not None:
                continue  # explicit descriptions are already there
            key = next(
                (k for k in (info.validation_alias, info.alias, name) if isinstance(k, str) and k in props), None
            )
            if key is not None:
                props[key] = {**props[key], "description": doc}
        return json_schema
