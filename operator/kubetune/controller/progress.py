"""Live progress: parse the trainer's ``kubetune.progress`` / ``kubetune.stage`` lines.

The same lines reach the operator two ways, and both are parsed here (``read_log``):

* **Pushed** (preferred, ``intake``): rank 0 POSTs them to the operator's intake, the design
  of Kubeflow Trainer's KEP-2779.  The old argument against pushing was that a pod would need
  a Kubernetes token allowed to patch job status, which RBAC cannot narrow to one object, so
  any code in any training pod could rewrite every job's status.  That argument no longer
  holds, because the push carries no such token:

  - the pod's only token is a projected ServiceAccount token whose only audience is
    ``kubetune``; the API server authenticates a ServiceAccount token only for its own
    audiences, so this token grants nothing there (``automountServiceAccountToken`` stays
    false; the pods still have no Kubernetes credentials);
  - the token is short-lived (600 s, rotated by the kubelet) and bound to its pod: the
    operator verifies it with a TokenReview (``spec.audiences: [kubetune]``, and it checks
    ``status.audiences``) and accepts a report only for the FineTuneJob whose
    ``kubetune.io/finetunejob`` label that very pod (name and uid from the review) carries, in
    the pod's namespace.  A compromised pod can misreport only its own job's progress, which
    it could already do by printing lines to its log;
  - the operator stays the only writer of ``status``: reports are parsed and validated here
    exactly like log lines, and they can change only ``progress`` and Running <-> Exporting;
    terminal phases come from the Kubeflow job.

  A steady job then costs no log reads: one TokenReview per token rotation (cached by token
  hash until expiry) and one pod LIST per pod.

* **From the log** (fallback): when no fresh report exists (older operator, pods that cannot
  reach the operator, push turned off with ``progress.push=false``), the status loop makes one
  ``GET pods/log?tailLines=N`` on the rank-0 pod per interval.  A progress line older than the
  last ``tailLines`` lines is not seen there, so the trainer prints one line per logging step
  and the operator keeps the last known progress when a tail holds none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.api import Progress
from kubetune.api.status import evaluation_from_stage, percent_of, progress_summary
from kubetune.api.progressline import parse_line

_PROGRESS_FIELDS = {f.alias or n for n, f in Progress.model_fields.items()} | set(Progress.model_fields)


@dataclass(frozen=True)
class LogReading:
    """What one tail of rank 0's log says."""

    progress: dict[str, Any] | None
    """The newest progress, in status (camelCase) form with ``summary``; None if the tail holds none."""
    exporting: bool
    """An export stage started and has not ended."""
    evaluation: dict[str, Any] | None = None
    """status.evaluation from the last evaluate stage end line (``api.status.evaluation_from_stage``)."""


def parse_progress(data: dict[str, Any]) -> dict[str, Any] | None:
    """A trainer progress object as validated status.progress, or None when it is not one."""
    known = {k: v for k, v in data.items() if k in _PROGRESS_FIELDS and k != "summary"}
    try:
        progress = Progress.model_validate(known)
    except ValueError:
        return None
    percent = progress.percent
    if not percent and progress.total_steps:
        percent = percent_of(progress.step, progress.total_steps)
    out = progress.model_copy(
        update={"percent": percent, "summary": progress_summary(progress.step, progress.total_steps)}
    )
    return out.to_api()


def read_log(text: str) -> LogReading:
    """The newest progress line and the export stage state in a log tail."""
    progress: dict[str, Any] | None = None
    exporting = False
    evaluation: dict[str, Any] | None = None
    for line in text.splitlines():
        if (parsed := parse_line(line, anywhere=True)) is None:
            continue
        data = parsed.data
        if parsed.kind == "progress":
            progress = parse_progress(data) or progress
        else:
            stage, event = data.get("stage"), data.get("event")
            if stage == "export":
                exporting = event == "start"
            if (result := evaluation_from_stage(data)) is not None:
                evaluation = result.to_api()
    return LogReading(progress, exporting, evaluation)
