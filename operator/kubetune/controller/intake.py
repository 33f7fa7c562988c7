"""Progress pushed by trainers: the newest report per FineTuneJob (placeholder of the push transport).

The HTTP endpoint that receives reports (projected ServiceAccount token, audience ``kubetune``,
verified by TokenReview) is built separately; this module holds only the board it writes to, with
the interface the controller reads: ``record`` a report, ``latest`` per job, and ``on_update``
(set by the controller) to reconcile a job when its report changes.
"""

from __future__ import annotations

from collections.abc import Callable

from .progress import LogReading


class ProgressBoard:
    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[LogReading, float]] = {}
        self.on_update: Callable[[str, str], None] | None = None

    def record(self, namespace: str, name: str, reading: LogReading, at: float) -> None:
        self._latest[(namespace, name)] = (reading, at)
        if self.on_update is not None:
            self.on_update(namespace, name)

    def latest(self, namespace: str, name: str) -> tuple[LogReading, float] | None:
        return self._latest.get((namespace, name))
