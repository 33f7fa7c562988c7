"""Reading manifests the way kubectl does: `learningRate: 1e-5` is a number."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune.api import FineTuneJob, load_documents

MANIFEST = """\
apiVersion: kubetune.io/v1alpha1
kind: FineTuneJob
metadata:
  name: qwen-lora
spec:
  model: {{name: Qwen/Qwen1.5-1.8B, template: qwen}}
  datasets: [{{name: deita, hub: hkust-nlp/deita-10k-v0}}]
  storage: {{outputs: {{claimName: outputs}}}}
  training:
    learningRate: {lr}
"""


@pytest.mark.parametrize(
    "text,value", [("1e-5", 1e-5), ("1E-4", 1e-4), ("5.0e-5", 5e-5), ("2e-1", 0.2), (".5", 0.5), ("1", 1)]
)
def test_learning_rate_in_scientific_notation_is_a_number(text: str, value: float) -> None:
    [doc] = load_documents(MANIFEST.format(lr=text))
    assert doc["spec"]["training"]["learningRate"] == value
    assert FineTuneJob.from_api(doc).spec.training.learning_rate == pytest.approx(value)


def test_quoted_learning_rate_stays_a_string_and_is_rejected() -> None:
    [doc] = load_documents(MANIFEST.format(lr='"1e-5"'))
    assert doc["spec"]["training"]["learningRate"] == "1e-5"
    with pytest.raises(ValidationError, match="learningRate"):
        FineTuneJob.from_api(doc)


def test_multi_document_text_skips_empty_documents() -> None:
    text = (
        "---\n" + MANIFEST.format(lr="1e-5") + "---\n---\n" + MANIFEST.format(lr="2e-5").replace("qwen-lora", "second")
    )
    names = [FineTuneJob.from_api(d).name for d in load_documents(text)]
    assert names == ["qwen-lora", "second"]
