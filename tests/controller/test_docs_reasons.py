"""docs/ and the operator use the same reasons: the table is generated, every reason is tested."""

from __future__ import annotations

import re
from pathlib import Path

from kubetune.controller.reasons import REASONS, SWEEP_REASONS, table_markdown

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
START, END = "<!-- reasons-table:", "<!-- end reasons-table -->"


def test_status_doc_quotes_the_reasons_table() -> None:
    text = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")
    start = text.index("\n", text.index(START)) + 1
    assert text[start : text.index(END)].strip() == table_markdown(), (
        "the table in docs/status.md is stale: run bash .ci/regen"
    )


def test_status_doc_quotes_the_sweep_reasons_table() -> None:
    text = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")
    start = text.index("\n", text.index("<!-- sweep-reasons-table:")) + 1
    assert text[start : text.index("<!-- end sweep-reasons-table -->")].strip() == table_markdown(SWEEP_REASONS), (
        "run bash .ci/regen"
    )


def test_every_reason_docs_name_is_one_the_operator_reports() -> None:
    named: set[str] = set()
    for doc in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]:
        named |= set(re.findall(r"[Rr]easons? `([A-Za-z]+)`", doc.read_text(encoding="utf-8")))
    assert named, "the docs name reasons"
    known = set(REASONS) | set(SWEEP_REASONS)
    assert named <= known, f"docs promise reasons the operator never reports: {sorted(named - known)}"


def test_every_reason_is_asserted_against_the_emulator() -> None:
    """Each documented reason appears as a quoted literal in an end-to-end test (real operator, emulated API server)."""
    source = "\n".join(
        (HERE / f).read_text(encoding="utf-8")
        for f in ("test_operator.py", "test_status_truth.py", "test_resilience.py")
    )
    quoted = set(re.findall(r'"([A-Za-z]+)"', source))
    missing = sorted(r for r in REASONS if r not in quoted)
    assert not missing, f"no end-to-end test asserts {missing}"
