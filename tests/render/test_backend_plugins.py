"""Every backend is one plugin: the registry is what the API, the CLI, the controller and RBAC read,
and each backend's status reading is a pure, table-tested function."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from kubetune.api.fields import Backend
from kubetune.cluster.backends import (
    AUTO,
    BACKENDS,
    ChildStatus,
    backend_for_kind,
    get_backend,
)


def test_the_api_enum_is_the_registry_plus_auto() -> None:
    # The CRD's enum needs the names in the API layer (which may not import the renderer): one line
    # there per backend, kept equal to the registry here.
    assert set(typing.get_args(Backend)) == {*BACKENDS, AUTO}


def test_cli_backend_choices_are_the_registry() -> None:
    from kubetune.cli import build_parser

    render = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["render"]._actions
        if "--backend" in a.option_strings
    )  # type: ignore[union-attr]
    assert set(render.choices) == {*BACKENDS, AUTO}


def test_every_backend_is_complete_and_unique() -> None:
    kinds = [(b.api_version, b.kind) for b in BACKENDS.values()]
    assert len(set(kinds)) == len(kinds)
    for name, b in BACKENDS.items():
        assert b.name == name and b.plural == b.plural.lower() and b.plural.endswith("s")
        assert backend_for_kind(b.kind) is b
        assert b.kind in b.controller, "the install hint names the kind"
        assert b.rbac() and all(r.verbs for r in b.rbac())
        assert b.status({}) == ChildStatus(None, acted=False), "no status yet: nobody acted"
    assert get_backend(AUTO).name == "pytorchjob"


def cond(type_: str, status: str = "True", message: str = "", when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": type_, "message": message, "lastTransitionTime": when}


V1 = [
    # id, conditions, state, phase, reason
    ("created", [cond("Created")], "Created", "Pending", "PodsPending"),
    (
        "running",
        [cond("Created"), cond("Running", message="PyTorchJob ft is running.")],
        "Running",
        "Running",
        "JobRunning",
    ),
    ("restarting", [cond("Running", "False"), cond("Restarting")], "Restarting", "Running", "Restarting"),
    ("suspended", [cond("Running", "False"), cond("Suspended")], "Suspended", "Suspended", "JobSuspended"),
    (
        "succeeded",
        [cond("Running", "False"), cond("Succeeded", message="done")],
        "Succeeded",
        "Succeeded",
        "JobSucceeded",
    ),
    ("failed", [cond("Running", "False"), cond("Failed", message="boom")], "Failed", "Failed", "JobFailed"),
    ("only-false", [cond("Running", "False")], None, "Pending", "PodsPending"),
]


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob"])
@pytest.mark.parametrize(("conditions", "state", "phase", "reason"), [v[1:] for v in V1], ids=[v[0] for v in V1])
def test_kubeflow_v1_status(
    backend: str, conditions: list[dict[str, Any]], state: str | None, phase: str, reason: str
) -> None:
    s = BACKENDS[backend].status({"status": {"conditions": conditions}})
    assert (s.state, s.phase, s.reason) == (state, phase, reason)
    assert s.acted
    if state in ("Succeeded", "Failed"):
        assert s.message in ("done", "boom") and s.since == "2026-01-01T00:00:00Z"


def jobs(
    active: int = 0, ready: int = 0, succeeded: int = 0, failed: int = 0, suspended: int = 0
) -> list[dict[str, Any]]:
    return [
        {
            "name": "node",
            "active": active,
            "ready": ready,
            "succeeded": succeeded,
            "failed": failed,
            "suspended": suspended,
        }
    ]


# Trainer v2.3: conditions Suspended (reasons Suspended/Resumed, pkg/controller/trainjob_controller.go
# setSuspendedCondition), Complete and Failed (copied from JobSet's Completed/Failed by the jobset
# plugin's Status, pkg/runtime/framework/plugins/jobset/jobset.go), and jobsStatus per replicated job.
TRAINJOB = [
    ("no-status", {}, None, "Pending", False),
    ("jobset-created", {"jobsStatus": jobs()}, "Created", "Pending", True),
    ("active-pods-pending", {"jobsStatus": jobs(active=1)}, "Created", "Pending", True),
    ("ready", {"jobsStatus": jobs(active=1, ready=1)}, "Running", "Running", True),
    (
        "resumed",
        {"conditions": [cond("Suspended", "False")], "jobsStatus": jobs(active=1, ready=1)},
        "Running",
        "Running",
        True,
    ),
    (
        "suspended",
        {"conditions": [cond("Suspended", message="TrainJob is suspended")], "jobsStatus": jobs(suspended=1)},
        "Suspended",
        "Suspended",
        True,
    ),
    (
        "complete",
        {"conditions": [cond("Complete", message="jobset completed successfully")], "jobsStatus": jobs(succeeded=2)},
        "Succeeded",
        "Succeeded",
        True,
    ),
    (
        "failed",
        {"conditions": [cond("Failed", message="jobset failed")], "jobsStatus": jobs(failed=1)},
        "Failed",
        "Failed",
        True,
    ),
    (
        "deadline",
        {"conditions": [cond("Failed", message="TrainJob exceeded its active deadline")]},
        "Failed",
        "Failed",
        True,
    ),
    (
        "complete-wins",
        {"conditions": [cond("Suspended", "False"), cond("Complete")], "jobsStatus": jobs(active=1)},
        "Succeeded",
        "Succeeded",
        True,
    ),
]


@pytest.mark.parametrize(("status", "state", "phase", "acted"), [t[1:] for t in TRAINJOB], ids=[t[0] for t in TRAINJOB])
def test_trainjob_status(status: dict[str, Any], state: str | None, phase: str, acted: bool) -> None:
    s = BACKENDS["trainjob"].status({"status": status} if status else {})
    assert (s.state, s.phase, s.acted) == (state, phase, acted)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_suspended_copy_stops_pods_and_leaves_the_rendered_object_alone(backend: str) -> None:
    from kubetune.render import RenderOptions, render
    from tests.support.renderlib import JobBuilder

    w = render(JobBuilder().build(), RenderOptions(backend=backend)).workload  # type: ignore[arg-type]
    before = repr(w)
    stopped = BACKENDS[backend].suspended(w)
    assert repr(w) == before
    suspend = stopped["spec"]["suspend"] if backend == "trainjob" else stopped["spec"]["runPolicy"]["suspend"]
    assert suspend is True


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_renders_the_kind_it_registers(name: str) -> None:
    # The kind lives twice: in cluster/backends (what the operator applies, watches, grants in RBAC and
    # reads the status of) and in the renderer's template (what is written). A template that drifted
    # would render a child the operator never watches and has no RBAC for.
    from kubetune.render import RenderOptions, render
    from tests.support.renderlib import JobBuilder

    child = render(JobBuilder().build(), RenderOptions(backend=name)).workload  # type: ignore[arg-type]
    backend = BACKENDS[name]
    assert (child["apiVersion"], child["kind"]) == (backend.api_version, backend.kind)
    assert backend_for_kind(child["kind"]) is backend
