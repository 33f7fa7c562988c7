"""The FineTuneSweep CRD passes the checks FineTuneJob's does: generated and committed (crds/ and the
chart's copy), accepted at creation by the API server's checks (structural schema, CEL compilation,
CEL cost with the whole FineTuneJob schema nested under spec.template), and its schema + CEL agree
with pydantic on the same good and bad sweeps (tests/support/apiserver/validation.py, crd.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.apiserver.validation import admitted, transition_errors
from tests.support.apiserver.crd import PER_CRD_LIMIT, PER_RULE_LIMIT, compile_and_cost, creation_errors, install
from tests.support.sweep_cases import BAD, BASE, variant

from kubetune.api.crd import crd, crd_yaml
from kubetune.api.sweep import FineTuneSweep
from kubetune.sweep.checks import validate_sweep

REPO = Path(__file__).resolve().parents[2]
FILES = {
    "crds/": REPO / "crds" / "kubetune.io_finetunesweeps.yaml",
    "chart copy": REPO / "charts" / "kubetune" / "crds" / "kubetune.io_finetunesweeps.yaml",
}
DOC = crd("FineTuneSweep")
SCHEMA = install(DOC)


@pytest.mark.parametrize("where", list(FILES))
def test_committed_crd_is_current_and_accepted(where: str) -> None:
    text = FILES[where].read_text(encoding="utf-8")
    assert text == crd_yaml("FineTuneSweep"), f"{where} is stale: run bash .ci/regen"
    assert creation_errors(yaml.safe_load(text)) == []


def test_regenerate_command_writes_the_committed_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kubetune", "crd", "--kind", "FineTuneSweep"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert out.stdout == FILES["crds/"].read_text(encoding="utf-8")
    assert "kubetune crd --kind FineTuneSweep > crds/kubetune.io_finetunesweeps.yaml" in out.stdout.splitlines()[1]


def test_rules_compile_and_stay_within_the_cost_budget_with_the_nested_template() -> None:
    schema = DOC["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors, costs = compile_and_cost(schema)
    assert errors == []
    own = [c for c in costs if "properties[template]" not in c.path]
    nested = [c for c in costs if "properties[template]" in c.path]
    assert len(own) >= 15 and len(nested) > 30  # the sweep's rules and FineTuneJob's, transition rules included
    assert max(c.total for c in costs) < PER_RULE_LIMIT
    assert sum(c.total for c in costs) < PER_CRD_LIMIT


def test_names_columns_and_status_subresource() -> None:
    spec = DOC["spec"]
    assert DOC["metadata"]["name"] == "finetunesweeps.kubetune.io"
    assert spec["names"]["kind"] == "FineTuneSweep" and spec["names"]["shortNames"] == ["fts"]
    assert spec["scope"] == "Namespaced"
    [version] = spec["versions"]
    assert version["subresources"] == {"status": {}}
    shown = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert shown == [
        ("Trials", ".status.summary"),
        ("Best value", ".status.bestValue"),
        ("Best trial", ".status.bestTrial"),
        ("Phase", ".status.phase"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    # the short name is free: FineTuneJob's is ftj
    assert crd()["spec"]["names"]["shortNames"] == ["ftj"]


def test_a_good_sweep_is_stored_as_pydantic_reads_it() -> None:
    stored, errors = admitted(copy.deepcopy(BASE), SCHEMA)
    assert errors == []
    assert FineTuneSweep.from_api(stored) == FineTuneSweep.from_api(BASE)
    assert stored["spec"]["algorithm"] == "tpe" and stored["spec"]["earlyStopping"] == "median"


# Refused by the Python checks only (kubetune.sweep.checks): the path's meaning in the FineTuneJob
# schema, the template's own LLaMA-Factory-aware checks, the planner, and the rules on `values`,
# whose mixed-scalar items CEL cannot read (api/sweep.py says why for each).
PYTHON_ONLY = {
    "categorical without values",
    "unknown path",
    "path outside the spec",
    "field that changes on a running job",
    "evaluation field",
    "an object",
    "a list",
    "float range on an integer field",
    "range on a string field",
    "value not allowed by the field",
    "range beyond the field's bounds",
    "int range with fractions",
    "template of an unknown chat template",
    "a range that cannot fit the GPUs",
}


@pytest.mark.parametrize("case", sorted(set(BAD) - PYTHON_ONLY))
def test_the_api_server_refuses_what_the_crd_can_express_naming_the_field(case: str) -> None:
    change, field, _ = BAD[case]
    doc = variant(change)
    assert validate_sweep(doc)[1], "kubetune validate accepts it"
    _, errors = admitted(doc, SCHEMA)
    top = field.split("[")[0]
    assert any(top in e for e in errors), f"no API server error names {field}: {errors}"


@pytest.mark.parametrize("case", sorted(PYTHON_ONLY))
def test_python_only_cases_pass_the_api_server_and_are_refused_by_validate(case: str) -> None:
    """So the operator must run validate_sweep before any trial: the CRD alone lets these in."""
    doc = variant(BAD[case][0])
    _, errors = admitted(doc, SCHEMA)
    assert errors == [], errors
    assert validate_sweep(doc)[1]


def test_the_api_server_refuses_a_change_to_the_search_or_the_template() -> None:
    old, _ = admitted(copy.deepcopy(BASE), SCHEMA)
    for change, words in (
        (lambda s: s.update(algorithm="random"), "spec.algorithm cannot change after the sweep is created"),
        (lambda s: s["parameters"][0].update(max=1e-2), "spec.parameters cannot change after the sweep is created"),
        (
            lambda s: s["template"]["training"].update(epochs=1.0),
            "spec.training cannot change after the job is created",
        ),
        # Every new trial is created from the current template: another evaluation would score it on another measure.
        (
            lambda s: s["template"]["evaluation"].update(
                generation=not s["template"]["evaluation"].get("generation", False)
            ),
            "spec.template.evaluation cannot change after the sweep is created",
        ),
    ):
        new, errors = admitted(variant(change), SCHEMA)
        assert errors == []
        assert any(words in e for e in transition_errors(new, old, SCHEMA)), words
    more, _ = admitted(variant(lambda s: s.update(maxTrials=12, parallelism=3)), SCHEMA)
    assert transition_errors(more, old, SCHEMA) == []


def test_an_unknown_field_in_the_template_is_refused_by_both() -> None:
    doc: dict[str, Any] = variant(lambda s: s["template"]["training"].update(learningrate=1e-4))
    _, errors = admitted(doc, SCHEMA)
    assert any("spec.template.training.learningrate" in e for e in errors), errors
    assert [p.path for p in validate_sweep(doc)[1]] == ["spec.template.training.learningrate"]


def test_the_largest_study_fits_in_one_object_under_etcds_request_limit() -> None:
    """status.trials is the whole study (no second object): at its bounds (maxTrials 200, 100
    intermediate values each, 16 parameters on the longest paths that validate, messages at their
    1024 characters, every condition message at 4096) the status must leave room under etcd's default
    --max-request-bytes (``DefaultMaxRequestBytes = 1.5 * 1024 * 1024``, etcd server/embed/config.go, read through the
    code index without a pinned tag) for the spec, metadata and kubectl's last-applied annotation.
    (Longer paths pass the CRD but the operator refuses them before any trial is recorded.)"""
    from kubetune.api.sweep import MAX_INTERMEDIATE, MAX_SWEEP_NAME_LENGTH, MAX_TRIALS, FineTuneSweepStatus, TrialRecord
    from kubetune.sweep.paths import resolve

    paths = [
        "training.gradientAccumulationSteps",
        "training.preference.labelSmoothing",
        "training.gradientCheckpointing",
        "training.preference.simpoGamma",
        "training.kto.undesirableWeight",
        "training.preprocessingWorkers",
        "training.kto.desirableWeight",
        "training.perDeviceBatchSize",
        "training.ppo.whitenRewards",
        "resources.sharedMemorySize",
        "training.ppo.maxNewTokens",
        "quantization.doubleQuant",
        "training.learningRate",
        "training.warmupRatio",
        "lora.dropout",
        "lora.rank",
    ]
    for p in paths:
        resolve(p)
    name = "x" * MAX_SWEEP_NAME_LENGTH
    trials = [
        TrialRecord(
            number=i,
            name=f"{name}-{i}",
            parameters={p: 0.12345678901234567 for p in paths},
            state="Failed",
            value=1.2345678901234567e-05,
            intermediate=[{"step": 10_000_000 + k, "value": 1.2345678901234567e-05} for k in range(MAX_INTERMEDIATE)],
            message="m" * 1024,
        ).to_api()
        for i in range(MAX_TRIALS)
    ]
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": "WinnerMissing",
            "message": "m" * 4096,
            "lastTransitionTime": "2026-12-07T10:00:00Z",
            "observedGeneration": 1,
        }
        for t in ("Validated", "Running", "Succeeded", "Failed", "Promoted", "Serving")
    ]
    status = {
        "trials": trials,
        "conditions": conditions,
        "summary": "x" * 64,
        "message": "m" * 4096,
        "bestTrial": f"{name}-199",
        "bestValue": 1.0,
        "phase": "Running",
        "observedGeneration": 1,
    }
    FineTuneSweepStatus.model_validate(status)
    size = len(json.dumps(status, separators=(",", ":")))
    assert size < 1.5 * 2**20 - 128 * 2**10, (
        f"{size} bytes of status leave under 128 KiB of etcd's 1.5 MiB for the rest of the object"
    )
