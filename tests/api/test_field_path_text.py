"""Field paths in messages stay readable and unambiguous whatever the user's keys hold (issue 12):
a key that ends in a backslash or holds a quote is quoted so the path can be read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubetune.api.text import segment
from kubetune.cli import main


@pytest.mark.parametrize("key", ["x\\", 'a"b', 'end\\"', "\\", "tab\there"])
def test_an_odd_key_is_quoted_so_that_the_quote_closes_where_the_key_ends(key: str) -> None:
    shown = segment(key)
    assert shown.startswith('["') and shown.endswith('"]')
    # Read back as a JSON string: the escapes close exactly where the key does.
    assert json.loads(shown[1:-1]) == key


def test_validate_names_a_key_ending_in_a_backslash_readably(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = yaml.safe_load((Path(__file__).parents[2] / "examples" / "finetune-lora.yaml").read_text())
    job["spec"]["x\\"] = 1
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert 'spec["x\\\\"]: is not a field of FineTuneJob' in err, err
