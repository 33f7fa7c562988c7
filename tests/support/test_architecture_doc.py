"""docs/architecture.md names files and pages: each must exist, so the map cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"


def test_every_path_and_link_in_the_architecture_page_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:operator|tests|charts|crds|docs|\.ci)/[^`\s]+)`", text))
    links = set(re.findall(r"\]\(([^)#\s]+\.md)\)", text))
    assert len(paths) >= 20, "the page names the modules it describes"
    missing = sorted(p for p in paths if not (REPO / p).exists()) + sorted(
        link for link in links if not (DOC.parent / link).is_file()
    )
    assert missing == [], f"docs/architecture.md names what does not exist: {missing}"


def test_the_layer_table_follows_the_import_contract() -> None:
    """The layers the page lists, top to bottom, are pyproject's import-linter layers."""
    contract = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.search(r'name = "Layers: [^"]*"\ntype = "layers"\nlayers = \[(.*?)\]', contract, re.S)
    assert layers is not None
    declared = [
        m for line in re.findall(r'^\s*"([^"]+)"', layers.group(1), re.M) for m in re.split(r" [|:] ", line)
    ]  # independent (|) or not (:) siblings
    table = re.findall(r"^\| `operator/(kubetune/[^`]+)` \|", DOC.read_text(encoding="utf-8"), re.M)
    named = [t.removesuffix(".py").removesuffix("/").replace("/", ".") for t in table]
    assert set(declared) <= set(named), f"layers the page leaves out: {sorted(set(declared) - set(named))}"
