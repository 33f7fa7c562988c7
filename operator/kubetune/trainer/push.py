"""Push progress to the operator's intake (when the pod was rendered with one).

Rank 0 prints every ``kubetune.progress`` / ``kubetune.stage`` line (see ``console``); when
``$KUBETUNE_PROGRESS_URL`` is set, a :class:`Reporter` also POSTs the newest state to that URL
from a background thread, with the projected ``kubetune``-audience token from
``$KUBETUNE_PROGRESS_TOKEN_FILE`` (re-read for every post: the kubelet rotates it).

Training is never slowed or stopped by it: ``offer`` only swaps two strings under a lock (the
newest progress line and the newest stage line; older ones are dropped, each post carries the
whole current state), every request has a short timeout, failures back off up to a minute and
are logged on stderr once per outage, and nothing raises out of the thread.  The log lines stay
as they are, so the operator can still read the pod log when the intake is unreachable.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from kubetune.api import contract
from kubetune.api.progressline import line_kind

HEARTBEAT_S = 60.0
"""Re-send the current state this often even without news, so the operator keeps trusting it."""
MIN_INTERVAL_S = 5.0
"""At most one post per this many seconds: each post makes the operator reconcile the job at once
(a status write when the progress changed), and its intake accepts 0.5 reports per second per pod
beyond a burst of 10 (controller/intake.py, ``pod_rate_per_s``)."""
TIMEOUT_S = 5.0
MAX_BACKOFF_S = 60.0


def _log(message: str) -> None:
    print(f"kubetune trainer: {message}", file=sys.stderr, flush=True)


class Reporter:
    def __init__(
        self,
        url: str,
        token_file: str,
        namespace: str,
        name: str,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        min_interval_s: float = MIN_INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
        log: Callable[[str], None] = _log,
    ) -> None:
        self.url, self.token_file, self.namespace, self.name = url, token_file, namespace, name
        self.heartbeat_s, self.min_interval_s, self.timeout_s = heartbeat_s, min_interval_s, timeout_s
        self._log = log
        self._cond = threading.Condition()
        self._progress: str | None = None
        self._stage: str | None = None
        self._dirty = False
        self._stopping = False
        self._failing = False
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="kubetune-progress-push", daemon=True)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def offer(self, line: str) -> None:
        """Any stdout line; protocol lines become the state to send next.  Never blocks on I/O."""
        kind = line_kind(line)
        if kind is None:
            return
        with self._cond:
            if kind == "progress":
                self._progress = line
            else:
                self._stage = line
            self._dirty = True
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is pending (one try, bounded by ``timeout``) and stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        last_post = float("-inf")
        while True:
            with self._cond:
                while not self._stopping:
                    since = time.monotonic() - last_post
                    gap = max(backoff, self.min_interval_s) - since
                    if self._has_state() and gap <= 0 and (self._dirty or since >= self.heartbeat_s):
                        break
                    if self._dirty:
                        timeout = gap
                    elif self._has_state():
                        timeout = max(gap, self.heartbeat_s - since)
                    else:
                        timeout = self.heartbeat_s  # nothing to say yet: wait for offer()
                    self._cond.wait(timeout=max(0.05, timeout))
                if self._stopping and not self._dirty:
                    return
                lines = [x for x in (self._progress, self._stage) if x is not None]
                self._dirty = False
                stopping = self._stopping
            last_post = time.monotonic()
            ok = self._post(lines)
            if stopping:
                return
            backoff = 0.0 if ok else min(MAX_BACKOFF_S, max(self.min_interval_s, backoff * 2))
            if not ok:
                with self._cond:
                    self._dirty = True  # not delivered: send the (then newest) state again after the backoff

    def _has_state(self) -> bool:
        return self._progress is not None or self._stage is not None

    def _post(self, lines: list[str]) -> bool:
        try:
            with open(self.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
            body = json.dumps({"namespace": self.namespace, "name": self.name, "lines": lines}).encode()
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310 - URL from the operator
                resp.read(1024)
        except urllib.error.HTTPError as exc:
            return self._failed(f"the operator answered {exc.code} {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - network, token file, anything: training goes on
            return self._failed(f"{type(exc).__name__}: {exc}")
        self.sent += 1
        if self._failing:
            self._failing = False
            self._log("progress reports reach the operator again")
        return True

    def _failed(self, why: str) -> bool:
        self.failed += 1
        if not self._failing:
            self._failing = True
            self._log(
                f"could not push progress to {self.url} ({why}); "
                "retrying in the background, the pod log still carries it"
            )
        return False


def from_env(env: Mapping[str, str]) -> Reporter | None:
    """A started Reporter when the pod was rendered with an intake URL, else None."""
    url = env.get(contract.ENV_PROGRESS_URL)
    if not url:
        return None
    token_file = env.get(contract.ENV_PROGRESS_TOKEN_FILE) or contract.PROGRESS_TOKEN_FILE
    namespace, name = env.get(contract.ENV_NAMESPACE, ""), env.get(contract.ENV_JOB, "")
    if not namespace or not name:
        _log(
            f"{contract.ENV_PROGRESS_URL} is set but the job is unknown "
            f"({contract.ENV_NAMESPACE}/{contract.ENV_JOB}); not pushing"
        )
        return None
    if not os.path.exists(token_file):
        _log(f"no progress token at {token_file}; pushing anyway, the kubelet may still be writing it")
    return Reporter(url, token_file, namespace, name).start()
