"""The docs and the examples describe the kind of job that `backend: auto` really creates.

`spec.distributed.backend` defaults to auto (kubetune.api.hardware.DistributedSpec), which picks a
TrainJob where Kubeflow Trainer v2 and kubetune's runtime are installed, else a PyTorchJob
(kubetune.controller.discovery). A comment that calls such a job's child "the PyTorchJob" only is
wrong on a Trainer v2 cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubetune.api import load_documents
from kubetune.api.hardware import DistributedSpec

ROOT = Path(__file__).resolve().parents[2]
AUTO_EXAMPLES = [
    p
    for p in sorted((ROOT / "examples").glob("*.yaml"))
    if all(
        ((d.get("spec") or {}).get("distributed") or {}).get("backend", "auto") == "auto"
        for d in load_documents(p.read_text(encoding="utf-8"))
        if d
    )
]


def test_auto_is_the_default() -> None:
    assert DistributedSpec().backend == "auto"
    install = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    defaults = re.findall(r"`backend: (\w+)`[^`\n]*\(the default\)|`backend: (\w+)`, the default", install)
    assert defaults and all("auto" in d for d in defaults), defaults


@pytest.mark.parametrize("example", AUTO_EXAMPLES, ids=lambda p: p.name)
def test_auto_examples_do_not_promise_a_pytorchjob(example: Path) -> None:
    assert AUTO_EXAMPLES
    for number, line in enumerate(example.read_text(encoding="utf-8").splitlines(), 1):
        comment = line.partition("#")[2]
        if "PyTorchJob" in comment:
            assert "TrainJob" in comment, (
                f"{example.name}:{number}: says PyTorchJob where backend auto may create a TrainJob: {line.strip()}"
            )


def test_kueue_advice_names_the_trainjob_integration() -> None:
    for path in (ROOT / "docs" / "troubleshooting.md", ROOT / "examples" / "prerequisites" / "finetune-qlora.yaml"):
        text = " ".join(path.read_text(encoding="utf-8").replace("#", " ").split())
        assert "PyTorchJob integration" in text and "TrainJob" in text, path.name
