"""Kubernetes resource quantities (``80Gi``, ``81559Mi``, ``85e9``) to bytes.

Follows k8s.io/apimachinery/pkg/api/resource/quantity.go: binary suffixes
Ki..Ei, decimal k..E (and m for milli), or a decimal exponent.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


def parse_quantity(text: str) -> int:
    """Bytes in a quantity; ValueError naming the accepted forms otherwise."""
    m = _RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 80Gi, 81559Mi, 85G)")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    else:
        value = number * Decimal(10) ** int(suffix[1:])
    return int(value)
