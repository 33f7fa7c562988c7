"""Write the reference section of docs/sdk.md from the SDK's docstrings and signatures.

    python -m tests.support.update_sdk_docs          # rewrite the section in place (bash .ci/regen runs it)

The section lies between ``<!-- sdk-reference: ... -->`` and ``<!-- end sdk-reference -->``; the rest of
docs/sdk.md is written by hand.  tests/controller/test_sdk.py fails when the section is stale.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sdk.md"
START, END = "<!-- sdk-reference:", "<!-- end sdk-reference -->"


def _annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    text = value if isinstance(value, str) else getattr(value, "__name__", repr(value))
    return text.replace(
        "builtins.", ""
    )  # inside Client, ``list`` is a method: the source spells the type builtins.list


def signature(fn: Any, name: str) -> str:
    """``name(a: T = default, *, b: U) -> R`` as written in the source (annotations are strings there)."""
    sig = inspect.signature(fn)
    parts: list[str] = []
    star = False
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = ("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name
        if p.kind is p.VAR_POSITIONAL:
            star = True
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}" if ann else f"={p.default!r}"
        parts.append(text)
    ret = _annotation(sig.return_annotation)
    return f"{name}({', '.join(parts)})" + (f" -> {ret}" if ret else "")


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _block(title: str, sig: str, doc: str, level: str = "###") -> list[str]:
    return [f"{level} `{title}`", "", "```python", sig, "```", "", *([doc, ""] if doc else [])]


def reference() -> str:
    import kubetune
    from kubetune import sdk
    from kubetune.api import FineTuneJob
    from kubetune.plan import check

    out: list[str] = []
    out += [
        "### `kubetune.FineTuneJob`",
        "",
        _doc(FineTuneJob).split("\n")[0],
        "",
        "The API's pydantic model (`kubetune.api`); `job.metadata.name`, `job.spec`, `job.status.phase`, "
        "`job.to_api()`.  Built from a file or from a few values:",
        "",
    ]
    for name in ("from_file", "build", "from_api"):
        out += _block(
            f"FineTuneJob.{name}",
            signature(getattr(FineTuneJob, name), f"FineTuneJob.{name}"),
            _doc(getattr(FineTuneJob, name)),
            "####",
        )
    out += _block("kubetune.Client", signature(sdk.Client.__init__, "Client"), _doc(sdk.Client))
    for name, member in sdk.Client.__dict__.items():
        if name.startswith("_") or not callable(member):
            continue
        out += _block(f"Client.{name}", signature(member, f"Client.{name}"), _doc(member), "####")
    out += _block("kubetune.AsyncClient", signature(sdk.AsyncClient.__init__, "AsyncClient"), _doc(sdk.AsyncClient))
    verbs = [n for n, m in sdk.AsyncClient.__dict__.items() if not n.startswith("_") and callable(m)]
    out += [
        "Verbs (`await client.verb(...)`; `watch` and `follow_logs` are `async for` iterators): "
        + ", ".join(f"`{v}`" for v in verbs)
        + ".",
        "",
    ]
    out += _block("kubetune.JobUpdate", "@dataclass(frozen=True)\nclass JobUpdate", _doc(sdk.JobUpdate))
    fields = [f"- `{f}`: `{_annotation(t)}`" for f, t in sdk.JobUpdate.__annotations__.items()]
    out += ["Fields:", "", *fields, "", "`update.finished`: " + _doc(sdk.JobUpdate.finished), ""]
    out += _block("kubetune.JobEvent", "@dataclass(frozen=True)\nclass JobEvent", _doc(sdk.JobEvent))
    out += _block("kubetune.MetricRows", "class MetricRows(list[dict[str, Any]])", _doc(sdk.MetricRows))
    for name in ("losses", "plot", "to_pandas"):
        out += _block(
            f"MetricRows.{name}",
            signature(getattr(sdk.MetricRows, name), f"MetricRows.{name}"),
            _doc(getattr(sdk.MetricRows, name)),
            "####",
        )
    out += _block("kubetune.run_local", signature(sdk.run_local, "run_local"), _doc(sdk.run_local))
    out += _block(
        "kubetune.read_trainer_log", signature(sdk.read_trainer_log, "read_trainer_log"), _doc(sdk.read_trainer_log)
    )
    out += _block(
        "kubetune.plan",
        signature(check, "plan"),
        _doc(check) + "\n\n`kubetune.plan(job, ...)` is `kubetune.plan.check(job, ...)` "
        "(typed code calls the latter: the package is also the planner's namespace).",
    )
    out += ["### Errors", "", _doc(sdk.KubetuneError), "", "| error | raised when |", "|---|---|"]
    errors = [
        sdk.KubetuneError,
        *sorted(
            (
                c
                for c in vars(sdk).values()
                if isinstance(c, type) and issubclass(c, sdk.KubetuneError) and c is not sdk.KubetuneError
            ),
            key=lambda c: c.__name__,
        ),
    ]
    for cls in errors:
        out.append(f"| `kubetune.{cls.__name__}` | {' '.join(_doc(cls).split())} |")
    missing = [
        n
        for n in kubetune.__all__
        if n not in "\n".join(out) and not n.startswith("__") and n not in ("RunResult", "Verdict")
    ]
    if missing:
        raise SystemExit(f"update_sdk_docs.py: public names without a reference entry: {missing}")
    return "\n".join(out).rstrip() + "\n"


def updated(text: str) -> str:
    start = text.index("\n", text.index(START)) + 1
    end = text.index(END)
    return text[:start] + "\n" + reference() + "\n" + text[end:]


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
