"""The one place a test asks where the upstream CRDs are.

The upstream CustomResourceDefinitions (Kubeflow training-operator v1.9.4 PyTorchJob/MPIJob, mpi-operator
v2beta1, Trainer v2.3.0, JobSet v0.12.0, Kueue v0.19.2, KServe v0.20.0, KAITO v0.12.0) are data copied
from those repositories, kept beside the clone (not in it): ``../shared/upstream-crds`` relative to the
repository root, or wherever ``$KUBETUNE_UPSTREAM_CRDS`` points (it wins when set). Their
``SOURCES.txt`` names the repository, tag, commit and path of every file.

A check that needs them calls :func:`require_upstream_crds`: where they are absent it is *skipped*
with a message naming the directory looked at and how to get them; it never crashes and never
passes without checking. Under ``CI=true`` a skip fails the run (``tests/conftest.py``), so CI,
which has ``../shared``, runs every upstream check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "KUBETUNE_UPSTREAM_CRDS"
REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO.parent / "shared" / "upstream-crds"


def upstream_crds_path() -> Path:
    """Where the upstream CRDs are looked for: ``$KUBETUNE_UPSTREAM_CRDS`` when set, else
    ``../shared/upstream-crds``."""
    env = os.environ.get(ENV)
    return Path(env).expanduser().resolve() if env else DEFAULT


def upstream_crds_dir() -> Path | None:
    """The upstream CRD folder, or None where it is absent."""
    path = upstream_crds_path()
    return path if path.is_dir() else None


def missing_message() -> str:
    return (
        f"upstream CRDs not found at {upstream_crds_path()}: this check needs them. Put the upstream-crds folder "
        f"(the Kubeflow/Trainer/JobSet/Kueue/KServe/KAITO CRD files listed with repository, tag and path in its "
        f"SOURCES.txt) at ../shared/upstream-crds beside the clone, or set {ENV}=/path/to/upstream-crds"
    )


def require_upstream_crds(relative: str = "") -> Path:
    """The upstream CRD folder (or the file ``relative`` inside it); skips the calling test with
    :func:`missing_message` where the folder is absent. A file missing from a folder that is there
    is an error, not a skip: the folder is incomplete."""
    root = upstream_crds_dir()
    if root is None:
        pytest.skip(missing_message())
    path = root / relative
    assert path.exists(), f"{path} is missing from the upstream CRD folder {root} (see its SOURCES.txt)"
    return path
