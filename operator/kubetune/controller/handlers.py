"""The kopf handlers: thin triggers that hand each FineTuneJob event to the controller.

kopf watches FineTuneJobs (and runs peering and the liveness endpoint); every event only stores
the newest copy and enqueues the job's key (``loop.Controller.job_event``).  Registered on an
explicit ``OperatorRegistry`` (not kopf's global one) so an operator can be started, stopped and
started again in one process (tests, benchmark).  Only an event handler is registered: kopf then
writes nothing to FineTuneJobs (no progress annotations, no finalizer), so deleting one is never
blocked by the operator, and Kubernetes' garbage collector removes the children through their
ownerReferences.  Outputs live on PVCs the user owns and are never deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubetune.api.contract import GROUP, PLURAL, VERSION

from .loop import Controller
from .runtime import Runtime


def register(registry: kopf.OperatorRegistry, rt: Runtime, controller: Controller) -> None:
    """Attach every handler of the operator to ``registry``."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        c = rt.config.connection
        token = open(c.token_file, encoding="utf-8").read().strip() if c.token_file else c.token
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            insecure=c.insecure,
            scheme="Bearer" if token else None,
            token=token,
            certificate_path=c.cert_path,
            private_key_path=c.key_path,
            default_namespace=c.default_namespace,
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def index(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        controller.job_event(event.get("type"), body)
