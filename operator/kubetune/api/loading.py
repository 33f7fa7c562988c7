"""Reading FineTuneJobs from YAML/JSON text, the way kubectl would.

PyYAML implements YAML 1.1, where ``1e-5`` is a *string*; kubectl and the API
server read it as the number 1e-05.  A learning rate written the way every
tutorial writes it must therefore parse as a float here too, or ``kubetune
validate`` would reject what ``kubectl apply`` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-5`` is a number)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list(_Loader.yaml_implicit_resolvers):
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers[_first] if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_documents(text: str) -> Iterator[Any]:
    """Every non-empty document of a (multi-document) YAML or JSON text."""
    for doc in yaml.load_all(text, Loader=_Loader):  # noqa: S506 - SafeLoader subclass
        if doc is not None:
            yield doc
