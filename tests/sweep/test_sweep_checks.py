"""Bad FineTuneSweeps are refused with the field named and the fix (issue 26, item 4).

Through `kubetune validate` (what a user runs; the operator runs the same validate_sweep before
any trial) and, for the rules the CRD carries, through the CEL rules of the generated CRD too
(tests/api/test_agreement.py runs every FineTuneJob rule both ways; here the sweep's own rules).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import broken_transition_rules
from kubetune.api.sweep import FineTuneSweep
from kubetune.cli import main
from kubetune.sweep.checks import validate_sweep

from tests.support.sweep_cases import BAD, BASE, variant


def validate_cli(doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_sweep_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate_cli(BASE, tmp_path, capsys)
    assert (code, err) == (0, "")
    assert "FineTuneSweep lr is valid; 2 parameter(s), algorithm tpe, earlyStopping median, up to 6 trials" in out


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweeps_are_refused_naming_the_field_and_the_fix(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, field, words = BAD[case]
    code, out, err = validate_cli(variant(change), tmp_path, capsys)
    assert code == 1 and "is valid" not in out
    lines = err.splitlines()
    assert any(f"sweep.yaml: {field}: " in ln and words in ln for ln in lines), err


def test_the_longest_sweep_name_leaves_room_for_the_trial_number() -> None:
    doc = variant(lambda s: s.update(maxTrials=200))
    doc["metadata"]["name"] = "a" * 47
    assert validate_sweep(doc)[1] == []
    doc["metadata"]["name"] = "a" * 48
    assert [str(p) for p in validate_sweep(doc)[1]] == [
        "metadata.name: metadata.name must be a DNS label of at most 47 characters (lower-case letters, digits, '-'): "
        "each trial is a FineTuneJob named <sweep>-<number>"
    ]


def test_parameters_objective_algorithm_and_the_template_cannot_change_after_creation() -> None:
    old = FineTuneSweep.from_api(BASE)
    changes = {
        "parameters": lambda s: s["parameters"][0].update(max=1e-2),
        "objective": lambda s: s.update(objective={"metric": "perplexity"}),
        "algorithm": lambda s: s.update(algorithm="random"),
        "template.training": lambda s: s["template"]["training"].update(epochs=1),
    }
    for what, change in changes.items():
        new = FineTuneSweep.from_api(variant(change))
        spec_rules = broken_transition_rules(new.spec, old.spec)
        template_rules = broken_transition_rules(new.spec.template, old.spec.template)
        assert [r.name for r in spec_rules + template_rules] == [f"immutable-{what.split('.')[-1]}"], what
    # maxTrials and parallelism may change (e.g. to run more trials).
    more = FineTuneSweep.from_api(variant(lambda s: s.update(maxTrials=10, parallelism=2)))
    assert broken_transition_rules(more.spec, old.spec) == []
