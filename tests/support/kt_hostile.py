"""Hostile and careless FineTuneJob manifests: random mutations of examples/ plus YAML tricks.

Shared by the fuzz test (tests/api/test_hostile_fuzz.py), the operator test
through the emulator (tests/controller/test_hostile_operator.py) and
bench/hostile.py.  Everything is a hypothesis strategy, so a failure shrinks
to the smallest input that shows it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    p for p in (ROOT / "examples").glob("*.yaml") if "\nkind: FineTuneSweep\n" not in p.read_text(encoding="utf-8")
)
"""The FineTuneJob examples (this corpus is FineTuneJob-only: its oracle is validate + render; the bad
FineTuneSweeps are tests/sweep/test_sweep_checks.py's corpus)."""


def example_docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in EXAMPLES]


def alias_bomb(levels: int = 9, width: int = 9, anchor: str = "l") -> str:
    """The "billion laughs": ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"{anchor}0: &{anchor}0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{anchor}{i}: &{anchor}{i} [" + ", ".join([f"*{anchor}{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def deep(n: int) -> str:
    return "[" * n + "]" * n


NASTY_SCALARS: list[Any] = [
    None, True, False, 0, -1, 2**31, 2**63, 2**64, 10**30, -(2**63) - 1, 1e308, 0.1, float("nan"), float("inf"),
    "1e5", "y", "n", "on", "", " ", "${x}", "a${b}", "../..", "../../x", "/etc/passwd",
    "memory", "cpu", "gpu", "ephemeral-storage", "nvidia.com/gpu", "kubernetes.io/gpu", "1.2.3", "-5Gi", "...", "16Gi",
    "0", "\x1b[31mred\x1b[0m", "line\nforged.yaml: FineTuneJob x is valid", "\u202eevil", "nul\x00byte", "\ud800",
    "x" * 100_000,
    "Ünïcödé", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "TRITON_CACHE_DIR", "Exists", "Equal", "NoExecute", "In", "Gt",
    "a" * 52, "a" * 51, "qwen", "-bad", "bad-", "A_B", "2001-01-01", "0x1F", "017", "<<", "=",
]  # fmt: skip

NASTY_KEYS: list[str] = [
    "\x1b[2J", "a\nb", "k" * 5000, "<<", "", "affinity", "tolerations", "nodeSelector", "extraArgs", "env",
    "gpuResourceName", "memory", "subPath", "tolerationSeconds", "weight", "nodes", "name", "value",
]  # fmt: skip

# Values that keep a document valid, so mutations also reach render and the schema checks.
VALID_PATCHES: list[tuple[tuple[str, ...], Any]] = [
    (
        ("spec", "scheduling"),
        {
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    ),
    (
        ("spec", "scheduling", "affinity"),
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
                }
            }
        },
    ),
    (("spec", "resources", "memory"), "64Gi"),
    (("spec", "resources", "cpu"), "15500m"),
    (("spec", "resources", "nodes"), 1024),
    (("spec", "resources", "gpuResourceName"), "amd.com/gpu"),
    (("metadata", "name"), "1e5"),
    (("metadata", "name"), "y"),
    (("metadata", "namespace"), "on"),
    (("spec", "env"), [{"name": "WANDB_PROJECT", "value": "1e5"}]),
    (("spec", "extraArgs"), {"run_name": "y"}),
    (("spec", "extraArgs"), {"run_name": "\x85 nel \u2028"}),
    (("spec", "runPolicy", "ttlSecondsAfterFinished"), 2**31 - 1),
]

# Values that make a document invalid only in the context of the model (what a careless user writes):
# validate, render and the operator must refuse them as a field problem, never crash (issue 22: a
# target module the model lacks made `kubetune validate` exit 2 from the memory planner).
REFUSED_PATCHES: list[tuple[tuple[str, ...], Any]] = [
    (("spec", "lora", "targetModules"), ["q_proj", "wq"]),
    (("spec", "lora", "targetModules"), ["c_attn"]),
    (("spec", "lora", "targetModules"), ["all", "nonexistent"]),
]


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into the document (mapping keys and list indexes), the root excluded."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*path, k))
            out.extend(_leaves(v, (*path, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*path, i))
            out.extend(_leaves(v, (*path, i)))
    return out


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return  # a scalar or null on the way: nothing to patch
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)):
        node[path[-1]] = value


def _delete(doc: dict[str, Any], path: tuple[Any, ...]) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    elif isinstance(node, list) and path[-1] < len(node):
        del node[path[-1]]


nasty_values = st.one_of(
    st.sampled_from(NASTY_SCALARS),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.recursive(
        st.sampled_from(NASTY_SCALARS[:20]),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=6,
    ),
    st.integers(1, 150).map(lambda n: eval(deep(n))),  # noqa: S307 - nested empty lists
)


@st.composite
def mutated_doc(draw: st.DrawFn) -> dict[str, Any]:
    """An example FineTuneJob with 0-4 random mutations (replace, delete, add a key, a valid patch)."""
    doc = copy.deepcopy(draw(st.sampled_from(example_docs())))
    for _ in range(draw(st.integers(0, 4))):
        paths = _leaves(doc)
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "valid", "valid", "refused"]))
        if op in ("valid", "refused"):
            path, value = draw(st.sampled_from(VALID_PATCHES if op == "valid" else REFUSED_PATCHES))
            _set(doc, path, copy.deepcopy(value))
        elif op == "add":
            parents = [()] + [p for p in paths if isinstance(_get(doc, p), dict)]
            parent = draw(st.sampled_from(parents))
            key = draw(st.one_of(st.sampled_from(NASTY_KEYS), st.text(max_size=8)))
            _set(doc, (*parent, key), draw(nasty_values))
        elif paths:
            path = draw(st.sampled_from(paths))
            if op == "delete":
                _delete(doc, path)
            else:
                _set(doc, path, draw(nasty_values))
    return doc


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


TEXT_TRICKS = [
    "none", "none", "none", "bomb-unknown-field", "bomb-in-affinity", "recursive-alias", "small-alias", "binary-tag",
    "timestamp-tag", "set-tag", "python-tag", "deep-flow", "utf16", "bad-byte", "bom", "truncate", "duplicate-key",
    "tab-indent", "nul-escape", "json",
]  # fmt: skip


@st.composite
def hostile_manifest(draw: st.DrawFn) -> tuple[str, bytes]:
    """(trick, file bytes): a mutated example, dumped to YAML, with one text-level trick applied."""
    doc = draw(mutated_doc())
    trick = draw(st.sampled_from(TEXT_TRICKS))
    placeholder = "__HOSTILE__"
    if trick in (
        "bomb-in-affinity",
        "binary-tag",
        "timestamp-tag",
        "set-tag",
        "python-tag",
        "deep-flow",
        "small-alias",
    ):
        spec = doc.setdefault("spec", {}) if isinstance(doc.get("spec", {}), dict) else {}
        if isinstance(spec, dict):
            sched = spec.setdefault("scheduling", {})
            if isinstance(sched, dict):
                sched["affinity"] = placeholder
    if trick == "json":
        import json

        return trick, json.dumps(doc, allow_nan=True).encode()
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()), width=10_000)
    replacement = {
        "bomb-in-affinity": "*l8",
        "binary-tag": "!!binary aGVsbG8=",
        "timestamp-tag": "!!timestamp 2001-12-14",
        "set-tag": "!!set {a, b}",
        "python-tag": "!!python/object/apply:os.system ['true']",
        "deep-flow": deep(draw(st.integers(60, 3000))),
        "small-alias": "*small",
    }.get(trick)
    if replacement is not None:
        text = text.replace(placeholder, replacement)
    if trick in ("bomb-in-affinity", "bomb-unknown-field"):
        text = alias_bomb() + text
    elif trick == "small-alias":
        text = "small: &small {nodeAffinity: {}}\n" + text
    elif trick == "recursive-alias":
        text = "loop: &loop [*loop]\n" + text
    elif trick == "duplicate-key":
        text += "kind: FineTuneJob\n"
    elif trick == "tab-indent":
        text = text.replace("  ", "\t", 1)
    elif trick == "nul-escape":
        text += 'note: "a\\0b"\n'
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes no UTF-8 reader accepts
    if trick == "utf16":
        data = text.encode("utf-16", "surrogatepass")
    elif trick == "bad-byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]
    elif trick == "bom":
        data = b"\xef\xbb\xbf" + data
    elif trick == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    return trick, data
