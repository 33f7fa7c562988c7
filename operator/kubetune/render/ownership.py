"""What every object kubetune renders for a FineTuneJob carries: the labels that find it again, and the
controller owner reference that lets the garbage collector delete it with the job."""

from __future__ import annotations

from typing import Any

from kubetune.api import FineTuneJob
from kubetune.api.contract import API_VERSION, KIND, LABEL_JOB, LABEL_MANAGED_BY


def job_labels(job: FineTuneJob) -> dict[str, str]:
    """The labels of every object rendered for ``job`` (a component may add its own after them)."""
    return {
        "app.kubernetes.io/name": "kubetune",
        LABEL_MANAGED_BY: "kubetune",
        LABEL_JOB: job.name,
    }


def owner_references(job: FineTuneJob) -> list[dict[str, Any]]:
    """``job`` as the controller owner of what is rendered for it; empty while the job has no uid
    (``kubetune render`` of a file: the API server has not stored it yet)."""
    if not job.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": job.name,
            "uid": job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
