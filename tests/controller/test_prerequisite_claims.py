"""A Pending claim is a found prerequisite (docs/status.md, "Prerequisites"), a Lost one is missing.

A claim of a WaitForFirstConsumer StorageClass stays Pending until the first pod that uses it is
scheduled (Kubernetes pkg/controller/volume/persistentvolume/pv_controller.go:305-309, read in
openshift/microshift's vendored copy @ 8e16b12): reporting it as missing would tell a user to create
a claim that exists and is fine. The claims come from the operator's own PersistentVolumeClaim informer.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from kubetune.api import FineTuneJob, load_documents
from kubetune.controller.cache import Informer, trim_claim
from kubetune.controller.reasons import REASONS
from kubetune.controller.snapshot import Memory, ObserveSettings, _prerequisites
from kubetune.render import RenderOptions

ROOT = Path(__file__).resolve().parents[2]


def informer(claims: dict[str, dict[str, Any]]) -> Informer:
    """The operator's PersistentVolumeClaim informer holding ``claims`` (as its LIST would leave it)."""
    cache = Informer(None, "v1", "persistentvolumeclaims", (), lambda *_: None, transform=trim_claim)  # type: ignore[arg-type]
    for name, claim in claims.items():
        cache.put({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"}, **claim})
    cache.answered.add(None)  # its cluster-wide LIST answered
    return cache


def job() -> FineTuneJob:
    """examples/finetune-lora.yaml: claims model-cache and finetune-outputs."""
    [doc] = load_documents((ROOT / "examples" / "finetune-lora.yaml").read_text(encoding="utf-8"))
    doc["metadata"]["namespace"] = "ns"
    return FineTuneJob.from_api(doc)


def check(claims: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    found = asyncio.run(
        _prerequisites(("ns", "j"), job(), ObserveSettings(RenderOptions()), Memory(), None, 1, 0.0, informer(claims))
    )  # type: ignore[arg-type]
    return {p.name: p.found for p in found}


@pytest.mark.parametrize("phase", ["Pending", "Bound"])
def test_an_existing_claim_is_found_pending_or_bound(phase: str) -> None:
    claim = {"status": {"phase": phase}}
    assert check({"finetune-outputs": claim, "model-cache": claim}) == {"finetune-outputs": True, "model-cache": True}


def test_a_lost_or_absent_claim_is_missing() -> None:
    assert check({"finetune-outputs": {"status": {"phase": "Lost"}}}) == {
        "finetune-outputs": False,
        "model-cache": False,
    }


def test_the_docs_say_what_the_operator_does() -> None:
    status = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")
    prose = status[status.index("## Prerequisites") :]
    prose = prose[: prose.index("\n## ", 3)]
    assert re.search(r"still `Pending` counts as found", prose) and "`Lost` claim counts as\nmissing" in prose
    assert "Pending claim counts" in REASONS["PrerequisitesFound"].meaning
    assert "not bound" not in REASONS["PrerequisiteMissing"].meaning
