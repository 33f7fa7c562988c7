"""YAML output that every reader reads back exactly.

PyYAML's dumper quotes a string only when *PyYAML's own* YAML 1.1 resolver
would read it as something else.  Our files are read by others too:

* kubectl and Argo CD (sigs.k8s.io/yaml over go-yaml v2, gopkg.in/yaml.v2
  resolve.go): ``y``, ``n``, ``on``, ``off`` are booleans, ``1_000`` and
  ``0o17`` integers;
* LLaMA-Factory, which loads ``train.yaml`` with OmegaConf: its loader adds a
  float resolver, so an unquoted ``1e5`` arrives as 100000.0, and ``${...}``
  is an interpolation (kubetune refuses ``${`` in values, see
  render/checks.py, because OmegaConf's escaping differs between versions);
* kubetune's own loader (YAML 1.2 floats, :mod:`kubetune.api.safeyaml`).

So every string that *any* of them could take for a number, a boolean or null
is single-quoted.  Quoting more than needed is harmless: a quoted scalar is a
string to every YAML reader.
"""

from __future__ import annotations

import re
from typing import Any, Final

import yaml

_WORDS: Final = frozenset(
    {
        "y",
        "n",
        "yes",
        "no",
        "on",
        "off",
        "true",
        "false",
        "null",
        "~",
        "",
        "nan",
        "inf",
        ".nan",
        ".inf",
        "-.inf",
        "+.inf",
        "<<",
        "=",
    }
)
# A number to any of the readers once '_' is removed (go-yaml v2 and YAML 1.1 drop it):
# integers in bases 2/8/10/16 (Go's ParseInt base 0 reads 017 and 0o17 as octal),
# YAML 1.1/1.2/OmegaConf floats (1e5, .5, 5., 1.5e-3), infinities and NaN.
_NUMBER: Final = re.compile(
    r"[-+]?(?:0b[01]+|0o?[0-7]+|0x[0-9a-f]+|[0-9]+|(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:e[-+]?[0-9]+)?|\.(?:inf|nan))",
    re.IGNORECASE,
)
_NUMBER_START: Final = frozenset("0123456789+-.")
_SEXAGESIMAL: Final = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_TIMESTAMP: Final = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}")


def ambiguous(value: str) -> bool:
    """True when some YAML reader (1.1, 1.2, go-yaml v2, OmegaConf) would not read ``value`` as a string."""
    if value[:1] not in _NUMBER_START and value.strip().lower() not in _WORDS:
        return False  # fast path: numbers, dates and sexagesimals start with a digit, sign or dot
    if value.strip().lower() in _WORDS:
        return True
    bare = value.replace("_", "")
    return bool(_NUMBER.fullmatch(bare) or _SEXAGESIMAL.fullmatch(value) or _TIMESTAMP.match(value))


# Characters PyYAML's emitter writes raw in block, plain and single-quoted scalars but its
# reader folds or drops (NEL and the Unicode line separators are line breaks to YAML 1.1).
_FOLDED: Final = re.compile("[\r\x85\u2028\u2029\ufeff]")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if _FOLDED.search(value):
        style = '"'  # double quotes escape them
    elif "\n" in value and getattr(dumper, "literal_blocks", False):
        style = "|"
    elif ambiguous(value):
        style = "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Base: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class QuotingDumper(_Base):  # type: ignore[misc]
    """SafeDumper (libyaml when present) that quotes every type-ambiguous string."""

    literal_blocks = False


QuotingDumper.add_representer(str, _represent_str)


class ReadableDumper(_Base):  # type: ignore[misc]
    """QuotingDumper that also writes multi-line strings as literal blocks (``|``), for review diffs."""

    literal_blocks = True


ReadableDumper.add_representer(str, _represent_str)


def dump(data: Any, **options: Any) -> str:
    """One YAML document; ASCII-escaped by default (PyYAML folds some raw characters, e.g. NEL)."""
    kwargs: dict[str, Any] = {"sort_keys": False, "allow_unicode": False, "default_flow_style": False, **options}
    return str(yaml.dump(data, Dumper=QuotingDumper, **kwargs))
