"""Reading FineTuneJob manifests safely: bounded, decoded, and JSON-shaped.

A manifest is read by the CLI (``validate``, ``render``, ``run --local``), and
its JSON form by the operator (from the API server) and the trainer (from the
ConfigMap).  Whatever the bytes, reading ends in data or in one
:class:`InputError` naming the field - never a traceback, a hang or a
gigabyte of memory:

* **Size**: at most :data:`MAX_BYTES` (the kube-apiserver's 3 MiB request
  body limit: a larger manifest could never be applied anyway).
* **Encoding**: UTF-8 only (a UTF-8 BOM is dropped); UTF-16/32 and stray bytes
  are named with their offset.
* **Shape**: at most :data:`MAX_DEPTH` levels and :data:`MAX_NODES` nodes.
  The depth limit is checked on the parser's event stream, before the
  (recursive) composer ever runs, so deep nesting is an error, not a
  ``RecursionError``.
* **Aliases**: allowed (Helm and hand-written manifests use anchors), but
  their expansion is counted while parsing: aliases may add at most
  :data:`MAX_ALIAS_NODES` nodes in all, and an alias inside its own anchor is
  refused.  A "billion laughs" document stops after a few thousand events,
  like go-yaml's "document contains excessive aliasing" in the API server's
  decoder (gopkg.in/yaml.v2 decode.go, which sigs.k8s.io/yaml uses).
* **Types**: only what JSON can carry.  Explicit tags such as ``!!binary``,
  ``!!timestamp`` or ``!!set`` are refused; an unquoted date stays a string
  (as in JSON); NaN and infinities are refused (``json.Marshal`` refuses them
  too); mapping keys must be scalars and are turned into strings the way
  sigs.k8s.io/yaml does; duplicate keys are refused; NUL characters in strings
  are refused (no container runtime or file format keeps them).
* **Scalars like kubectl**: floats per YAML 1.2 (``1e-5`` is a number), and
  ``y``/``n`` are booleans as in go-yaml v2's resolver (resolve.go).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import yaml

from .text import clip, escape, join

MAX_BYTES: Final = 3 * 1024 * 1024
"""Largest manifest read: the kube-apiserver's request body limit (3 MiB)."""
MAX_DEPTH: Final = 64
"""Deepest nesting accepted (a FineTuneJob needs about 12 levels)."""
MAX_NODES: Final = 200_000
"""Most scalars + collections in one document, aliases expanded."""
MAX_ALIAS_NODES: Final = 10_000
"""Most nodes that aliases may add to a whole stream by expansion."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class InputError(ValueError):
    """A manifest that cannot be read; ``field`` is the path inside it, when known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return escape(text)


# --- the loader ------------------------------------------------------------------------

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_11 = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")

_Base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader (libyaml when present) with kubectl's scalar rules."""

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_11, list("yYnNtTfFoO"))

_PLAIN_TAGS = frozenset(
    {
        None,
        "!",
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:map",
        "tag:yaml.org,2002:seq",
    }
)


class _Frame:
    __slots__ = ("anchor", "depth", "index", "is_map", "key", "keys", "size", "want_key")

    def __init__(self, is_map: bool, anchor: str | None) -> None:
        self.is_map = is_map
        self.anchor = anchor
        self.size = 1
        self.depth = 1
        self.index = 0
        self.key: str | None = None
        self.keys: set[str] = set()
        self.want_key = True


def _path(stack: list[_Frame], extra: str | None = None) -> str:
    out = ""
    for frame in stack:
        if frame.is_map:
            if frame.key is None or frame.want_key:
                continue
            out = join(out, frame.key)
        else:
            out += f"[{frame.index}]"
    if extra is not None:
        out = join(out, extra)
    return out


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line error as one line: where, what."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = f"{context}, {problem}" if context else str(problem)
    return f"not valid YAML{where}: {what}"


_KEYS_PLAIN = "mapping keys must be plain strings, not lists, mappings or aliases"


class _Scanner:
    """The bounds :func:`_scan` enforces, one parser event at a time (the stack of open
    mappings/lists, the anchors seen and the values counted so far)."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[int, int]] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.alias_nodes = 0

    def place(self, size: int, depth: int, scalar_key: str | None, is_scalar: bool) -> None:
        """Account a finished node in its parent."""
        stack = self.stack
        self.nodes += size
        if self.nodes > MAX_NODES:
            raise InputError(
                f"the document has more than {MAX_NODES} values (aliases expanded); split it or remove repetition",
                _path(stack),
            )
        if len(stack) + depth > MAX_DEPTH:
            raise InputError(f"nesting deeper than {MAX_DEPTH} levels; no FineTuneJob field is that deep", _path(stack))
        if not stack:
            return
        parent = stack[-1]
        parent.size += size
        parent.depth = max(parent.depth, depth + 1)
        if parent.is_map:
            if parent.want_key:
                if not is_scalar or scalar_key is None:
                    raise InputError(_KEYS_PLAIN, _path(stack))
                if scalar_key in parent.keys and scalar_key != "<<":
                    raise InputError("is given twice in the same mapping: keep one", _path(stack, scalar_key))
                parent.keys.add(scalar_key)
                parent.key = scalar_key
                parent.want_key = False
            else:
                parent.want_key = True
        else:
            parent.index += 1

    def check_tag(self, tag: str | None) -> None:
        if tag not in _PLAIN_TAGS:
            raise InputError(
                f"the YAML tag {clip(str(tag), 60)} is not supported: a manifest holds only JSON values "
                "(strings, numbers, true/false, null, mappings and lists)",
                _path(self.stack),
            )

    def event(self, event: yaml.Event) -> None:
        stack = self.stack
        if isinstance(event, yaml.DocumentStartEvent):
            self.anchors.clear()
            self.nodes = 0
        elif isinstance(event, yaml.ScalarEvent):
            self.check_tag(event.tag)
            if event.anchor:
                self.anchors[event.anchor] = (1, 1)
            self.place(1, 1, event.value, True)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self.check_tag(event.tag)
            if stack and stack[-1].is_map and stack[-1].want_key:
                raise InputError(_KEYS_PLAIN, _path(stack))
            if len(stack) + 1 > MAX_DEPTH:
                raise InputError(
                    f"nesting deeper than {MAX_DEPTH} levels; no FineTuneJob field is that deep", _path(stack)
                )
            stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), event.anchor))
            if event.anchor:
                self.open_anchors.add(event.anchor)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            if done.anchor:
                self.open_anchors.discard(done.anchor)
                self.anchors[done.anchor] = (done.size, done.depth)
            self.place(done.size, done.depth, None, False)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(str(event.anchor))

    def alias(self, name: str) -> None:
        stack = self.stack
        if name in self.open_anchors:
            raise InputError(
                f"the alias *{clip(name, 60)} refers to a mapping or list that contains it (a recursive alias)",
                _path(stack),
            )
        if name not in self.anchors:
            raise InputError(f"the alias *{clip(name, 60)} has no anchor &{clip(name, 60)} before it", _path(stack))
        size, depth = self.anchors[name]
        self.alias_nodes += size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise InputError(
                f"YAML aliases expand to more than {MAX_ALIAS_NODES} values (an alias bomb?); "
                "write the values out or use fewer aliases",
                _path(stack),
            )
        if stack and stack[-1].is_map and stack[-1].want_key:
            raise InputError(_KEYS_PLAIN, _path(stack))
        self.place(size, depth, None, False)


def _scan(text: str) -> None:
    """Walk the parser's events once, enforcing depth, node and alias bounds before composing."""
    scanner = _Scanner()
    try:
        for event in yaml.parse(text, Loader=_Loader):
            scanner.event(event)
    except yaml.YAMLError as exc:
        raise InputError(_one_line(exc), _path(scanner.stack)) from None


Trail = tuple[str | int, ...]
"""A field path as parts; made into text (:func:`field_path`) only for an error."""


def field_path(trail: Trail) -> str:
    out = ""
    for part in trail:
        out = f"{out}[{part}]" if isinstance(part, int) else join(out, part)
    return out


def _key(value: Any, trail: Trail) -> str:
    """A mapping key as sigs.k8s.io/yaml turns it into a JSON key."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        _scalar_check(value, trail)
        return str(value)
    raise InputError("mapping keys must be plain strings", field_path(trail))


def _scalar_check(value: Any, trail: Trail) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise InputError(
                "contains a NUL character (\\x00), which no file, environment or label can hold: remove it",
                field_path(trail),
            )
        if _SURROGATE.search(value):
            raise InputError(
                "contains an unpaired UTF-16 surrogate (e.g. \\ud800), which is not text in UTF-8: remove it",
                field_path(trail),
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(
                f"{value!r} is not a number JSON (and so Kubernetes) can carry: write a finite number",
                field_path(trail),
            )
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise InputError(
            f"a number of {len(str(value))} digits is outside the 64-bit integer range Kubernetes stores",
            field_path(trail),
        )


def normalize(value: Any, trail: Trail = (), *, budget: list[int] | None = None) -> Any:
    """A JSON-shaped copy of ``value``: str keys, finite numbers, int64, no NUL; bounded depth and size.

    Used on everything a FineTuneJob is built from - YAML from the CLI, JSON
    from the API server (the operator), JSON from the ConfigMap (the trainer) -
    so one bomb-proof walk guards all of them.  Raises :class:`InputError`.
    """
    if budget is None:
        budget = [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise InputError(f"the object has more than {MAX_NODES} values", field_path(trail))
    if len(trail) > MAX_DEPTH:
        raise InputError(
            f"nesting deeper than {MAX_DEPTH} levels; no FineTuneJob field is that deep", field_path(trail)
        )
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _key(k, trail)
            if key in out:
                raise InputError(
                    "is given twice in the same mapping (once as a string, once as another type)",
                    field_path((*trail, key)),
                )
            _scalar_check(key, (*trail, key))
            out[key] = v if v is None or type(v) is bool else normalize(v, (*trail, key), budget=budget)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v, (*trail, i), budget=budget) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        _scalar_check(value, trail)
        return value
    raise InputError(
        f"a {clip(type(value).__name__, 40)} value cannot appear in a manifest (only JSON values)", field_path(trail)
    )


def load_documents(text: str) -> Iterator[Any]:
    """Every non-empty document of a (multi-document) YAML or JSON text, checked and JSON-shaped."""
    if len(text) > MAX_BYTES:
        raise InputError(
            f"is {len(text)} characters; at most {MAX_BYTES} (the API server's 3 MiB request limit) are read"
        )
    _scan(text)
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(_one_line(exc)) from None
    for doc in docs:
        if doc is not None:
            yield normalize(doc)


# --- bytes to text --------------------------------------------------------------------

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)


def decode(data: bytes) -> str:
    """UTF-8 text of a manifest (a UTF-8 byte-order mark is dropped); :class:`InputError` otherwise."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise InputError(f"is {name} text; kubectl and kubetune read UTF-8 only: save the file as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line_no}) cannot be "
            "decoded; save the file as UTF-8"
        ) from None


def read_bytes(path: str) -> bytes:
    """The bytes of a manifest file ('-' is stdin), at most :data:`MAX_BYTES`; :class:`InputError` otherwise."""
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", None)
            data = (
                stream.read(MAX_BYTES + 1)
                if stream is not None
                else sys.stdin.read(MAX_BYTES + 1).encode("utf-8", "surrogateescape")
            )
        else:
            with Path(path).open("rb") as fh:
                data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory; give a manifest file (or '-' for stdin)") from None
    except PermissionError:
        raise InputError("cannot be read: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"is larger than {MAX_BYTES} bytes (the API server's 3 MiB request limit); split it")
    return data


def read_documents(path: str) -> list[Any]:
    """Every document of a manifest file, safely (see the module docstring)."""
    return list(load_documents(decode(read_bytes(path))))
