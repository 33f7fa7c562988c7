"""Property: any mutation of an example, YAML tricks included, ends in "valid and renders cleanly"
or in one-line errors naming the file (and the field, where the document could be read) -
never a traceback, never more than 2 s, never more than 300 MB (issue 12).

Each input runs through ``kubetune validate`` and ``kubetune render`` in this process; CPU time
(``time.process_time``, steadier than wall time on a shared machine) and the allocation peak
(``tracemalloc``) are taken per call.  The bounds asserted are the issue's own, far above what
is seen (a few ms, a few MB; the figures are printed at the end), so they cannot flake.
Whatever validate accepts must render, read back, and pass the Kubernetes schemas
(kubernetes-validate for the ConfigMap and pods, the upstream Kubeflow CRDs for the job).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from tests.support.kt_hostile import hostile_manifest
from tests.support.kt_upstream import require_upstream_crds
from tests.support.renderlib import pod_templates, schema_errors

from kubetune.cli import main

MAX_SECONDS = 2.0
MAX_BYTES = 300 * 1024 * 1024
EXAMPLES = 120
"""Hypothesis examples: about 20-40 s on a CI core."""

RENDERED_WORKLOADS: list[dict[str, Any]] = []
"""Every Kubeflow job the fuzz rendered from an accepted input; the test after it checks them against the
upstream CRDs (a separate test, so that the fuzz runs without them and the upstream check skips visibly)."""

WORST: dict[str, Any] = {"seconds": 0.0, "bytes": 0, "inputs": 0, "valid": 0, "tricks": {}}

# A line names a field when it reads "FILE[#n]: <path>: ..." with a Kubernetes-style path,
# or is a file-level problem that has no field (encoding, YAML syntax with its line, size).
_SEG = r'(?:[A-Za-z0-9_][A-Za-z0-9_./-]*|\["(?:[^"\\]|\\.)*"\])'
_FIELD = re.compile(rf"^{_SEG}(?:\.{_SEG}|\[\d+\]|{_SEG})*: ")
_FILE_LEVEL = (
    "not valid YAML at line",
    "not UTF-8",
    "is UTF-16",
    "is UTF-32",
    "larger than",
    "no FineTuneJob found",
    "LLaMA-Factory's parser did not run",
)  # the last: validate's note after the problems


@pytest.fixture(scope="module", autouse=True)
def _report(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    line = (
        f"hostile fuzz: {WORST['inputs']} inputs ({WORST['valid']} valid), worst CPU time {WORST['seconds']:.3f} s, "
        f"worst allocation peak {WORST['bytes'] / 2**20:.1f} MiB; tricks {dict(sorted(WORST['tricks'].items()))}"
    )
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)


def _measured(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    tracemalloc.start()
    start = time.process_time()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        seconds = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    WORST["seconds"] = max(WORST["seconds"], seconds)
    WORST["bytes"] = max(WORST["bytes"], peak)
    assert seconds < MAX_SECONDS, f"{argv[0]} took {seconds:.2f} s of CPU"
    assert peak < MAX_BYTES, f"{argv[0]} allocated {peak / 2**20:.0f} MiB"
    return code, out.getvalue(), err.getvalue()


def _check_error_lines(err: str, path: Path) -> None:
    lines = err.splitlines()
    assert lines, "exit 1 without a message"
    for line in lines:
        assert "Traceback" not in line and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line), line
        assert len(line) < 2500, f"{len(line)} characters"
        if line.startswith("kubetune validate: no FineTuneJob") or line.startswith("kubetune render: no FineTuneJob"):
            continue
        assert line.startswith(str(path)), line
        rest = re.sub(r"^#\d+", "", line[len(str(path)) :]).removeprefix(": ")
        assert any(marker in rest for marker in _FILE_LEVEL) or _FIELD.match(rest), f"no field named: {line}"


def _check_rendered(out: str) -> None:
    objects = list(yaml.safe_load_all(out))
    assert objects and {o["kind"] for o in objects} >= {"ConfigMap"}
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for obj in objects:
        if obj["kind"] in (
            "ConfigMap",
            "Deployment",
            "Service",
            "PersistentVolumeClaim",
            "Job",
        ):  # Deployment...: spec.serve
            kubernetes_validate.validate(obj, version, strict=True)
            continue
        if obj["kind"] in ("InferenceService", "LLMInferenceService", "Workspace"):
            # spec.serve's KServe/KAITO objects: checked against the upstream CRDs in tests/render/test_serving.py
            continue
        for role, template in pod_templates(obj).items():
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"x-{role.lower()}", **template["metadata"]},
                "spec": template["spec"],
            }
            kubernetes_validate.validate(pod, version, strict=True)
        RENDERED_WORKLOADS.append(obj)  # checked against the upstream CRDs by the test after the fuzz


# xdist_group: the fuzz and the upstream check after it share RENDERED_WORKLOADS, so one worker runs both
# (pytest -n with --dist loadgroup); the check still fills the list itself when it runs alone.
@pytest.mark.xdist_group("hostile-fuzz")
@given(case=hostile_manifest())
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_hostile_manifest_is_valid_and_renders_or_is_refused_in_one_line_with_a_field(
    case: tuple[str, bytes], tmp_path: Path
) -> None:
    trick, data = case
    path = tmp_path / "job.yaml"
    path.write_bytes(data)
    WORST["inputs"] += 1
    WORST["tricks"][trick] = WORST["tricks"].get(trick, 0) + 1

    code, out, err = _measured(["validate", "--skip-llamafactory", str(path)])
    assert code in (0, 1), f"exit {code}: {err}"
    if code == 1:
        assert "is valid" not in out or err, out
        _check_error_lines(err, path)
    rcode, rout, rerr = _measured(["render", str(path)])
    assert rcode in (0, 1), f"render exit {rcode}: {rerr}"
    if code == 0:
        WORST["valid"] += 1
        assert rcode == 0, f"validate accepted, render refused: {rerr}"
        assert out.count("\n") == len(re.findall(r": FineTuneJob [a-z0-9-]+ is valid\b", out)), out
        _check_rendered(rout)
    else:
        assert rcode == 1 and rout == ""
        _check_error_lines(rerr, path)


@pytest.mark.xdist_group("hostile-fuzz")
def test_what_the_fuzz_rendered_passes_the_upstream_crds(tmp_path: Path) -> None:
    """The Kubeflow jobs rendered from every input the fuzz above accepted, against the upstream CRDs
    (strict: an unknown field is an error). Runs after the fuzz on the same worker; where the fuzz did not run
    in this process (selected alone, or on another worker), it runs here first."""
    require_upstream_crds()
    if not RENDERED_WORKLOADS:
        test_hostile_manifest_is_valid_and_renders_or_is_refused_in_one_line_with_a_field(tmp_path=tmp_path)
    assert RENDERED_WORKLOADS, "the fuzz accepted no input: nothing rendered to check"
    for obj in RENDERED_WORKLOADS:
        assert schema_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"
