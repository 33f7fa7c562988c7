"""Live progress: parse the trainer's ``kubetune.progress`` / ``kubetune.stage`` lines from rank 0's log.

Why pull from the log instead of having pods push to the API (the design of
Kubeflow Trainer v2's KEP-2779, where a sidecar or the trainer itself patches
TrainJob status):

* Training pods get **no Kubernetes credentials at all**.  A push design needs a
  ServiceAccount token in every training pod with ``patch`` on the job's status;
  RBAC cannot narrow that to "only your own object" without a per-job Role, so
  any user code, dataset loader or compromised dependency inside the pod could
  rewrite the status of every other job in the namespace (or, with a cluster
  role, the cluster).  With the log transport the pod only writes to stdout.
* Nothing new to deploy: no sidecar, no webhook, no per-job RBAC objects; the
  same lines show up in ``kubectl logs`` and in ``kubetune run --local``.
* The operator stays the only writer of ``status`` (one owner, no races
  between pods and operator, the status schema stays validated in one place).

Cost: while a job is Running the operator makes one ``GET pods/log?tailLines=N``
on the rank-0 pod per interval (default 15 s), next to the ``GET`` of the child
job it needs anyway: two cheap reads per running job per interval, however
often the trainer logs.  (A ``LIST pods`` by label finds rank 0 once, and again
only when the job is not Running, to explain Pending/ImagePullBackOff/OOMKilled,
or when the pod was replaced.)  1000 running jobs at 15 s: ~133 reads/s.  Latency is one interval.  The limit is visibility: a progress line older
than the last ``tailLines`` lines is not seen, so the trainer prints one line
per logging step (small) and the operator keeps the last known progress when a
tail holds none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubetune.api import Progress
from kubetune.api.contract import PROGRESS_PREFIX, STAGE_PREFIX

_PROGRESS_FIELDS = {f.alias or n for n, f in Progress.model_fields.items()} | set(Progress.model_fields)


@dataclass(frozen=True)
class LogReading:
    """What one tail of rank 0's log says."""

    progress: dict[str, Any] | None
    """The newest progress, in status (camelCase) form with ``summary``; None if the tail holds none."""
    exporting: bool
    """An export stage started and has not ended."""
    stage_failed: str | None
    """Name of a stage that reported ``failed``, if the newest stage event is a failure."""


def _payload(line: str, prefix: str) -> dict[str, Any] | None:
    at = line.find(prefix)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(prefix) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def summary(step: int, total: int) -> str:
    """``120/1000 (12%)``: what ``kubectl get ftj`` shows in the PROGRESS column."""
    if total <= 0:
        return f"{step}"
    return f"{step}/{total} ({int(step * 100 / total)}%)"


def parse_progress(data: dict[str, Any]) -> dict[str, Any] | None:
    """A trainer progress object as validated status.progress, or None when it is not one."""
    known = {k: v for k, v in data.items() if k in _PROGRESS_FIELDS and k != "summary"}
    try:
        progress = Progress.model_validate(known)
    except ValueError:
        return None
    percent = progress.percent
    if not percent and progress.total_steps:
        percent = round(min(100.0, progress.step * 100.0 / progress.total_steps), 2)
    out = progress.model_copy(update={"percent": percent, "summary": summary(progress.step, progress.total_steps)})
    return out.to_api()


def read_log(text: str) -> LogReading:
    """The newest progress line and the export stage state in a log tail."""
    progress: dict[str, Any] | None = None
    exporting = False
    failed: str | None = None
    for line in text.splitlines():
        if (data := _payload(line, PROGRESS_PREFIX)) is not None:
            progress = parse_progress(data) or progress
        elif (data := _payload(line, STAGE_PREFIX)) is not None:
            stage, event = data.get("stage"), data.get("event")
            failed = str(stage) if event == "failed" else None
            if stage == "export":
                exporting = event == "start"
    return LogReading(progress, exporting, failed)
