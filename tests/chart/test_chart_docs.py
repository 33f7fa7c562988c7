"""The docs point at files that exist and explain every example."""

from __future__ import annotations

import re

from tests.support.chartlib import ROOT

DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve() -> None:
    pages = sorted(DOCS.glob("*.md")) + [ROOT / "charts" / "kubetune" / "README.md"]
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_every_example_is_explained() -> None:
    text = (DOCS / "examples.md").read_text(encoding="utf-8")
    examples = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples" / "seed").glob("*.yaml"))
    assert examples
    missing = [p.name for p in examples if f"`{p.name}`" not in text]
    assert not missing, f"docs/examples.md does not explain: {missing}"


def test_argocd_page_lists_every_file() -> None:
    text = (DOCS / "argocd.md").read_text(encoding="utf-8")
    folder = ROOT / "examples" / "argocd"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assert f"`{path.relative_to(folder)}`" in text or path.parent.name == "health", f"docs/argocd.md: {path.name}"
