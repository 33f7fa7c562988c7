"""The kopf handlers: thin adapters from kopf's calling convention to ``reconcile``.

Registered on an explicit ``OperatorRegistry`` (not kopf's global one) so an
operator can be started, stopped and started again in one process (tests,
benchmark).  No ``on.delete`` handler, timer or daemon is registered, so kopf
adds no finalizer: deleting a FineTuneJob is never blocked by the operator, and
Kubernetes' garbage collector removes the children through their
ownerReferences.  Outputs live on PVCs the user owns and are never deleted.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from typing import Any

import kopf

from kubetune.api.contract import GROUP, PLURAL, VERSION

from . import reconcile
from .runtime import Runtime
from .sync import StatusSync


def _raw(body: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def _to_status(patch: kopf.Patch, status: Mapping[str, Any]) -> None:
    if status:
        patch["status"] = dict(status)


def register(registry: kopf.OperatorRegistry, rt: Runtime, sync: StatusSync) -> None:
    """Attach every handler of the operator to ``registry``."""

    last_login: list[str | None] = [None]

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf calls this at start and again whenever its own requests (watches included) get a
        # 401 or the credentials pass their expiration: never hand back the token it just used.
        c = await rt.kube.fresh_connection()
        token = rt.kube.bearer()
        if last_login[0] is not None and token == last_login[0] and c.refreshable:
            c = await rt.kube.fresh_connection(rejected=token or "")
            token = rt.kube.bearer()
        last_login[0] = token
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            insecure=c.insecure,
            scheme="Bearer" if token else None,
            token=token,
            certificate_path=c.cert_path,
            private_key_path=c.key_path,
            default_namespace=c.default_namespace,
            expiration=datetime.datetime.fromtimestamp(c.expires_at, datetime.UTC) if c.expires_at else None,
        )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def start(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        with rt.metrics.timed("start"):
            try:
                _to_status(patch, await reconcile.start(rt, _raw(body)))
            except (reconcile.Rejected, reconcile.Deferred) as exc:
                _to_status(patch, exc.status)  # kopf applies the patch, then stops (Rejected) or retries (Deferred)
                raise
        sync.wakeup.set()

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def spec_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        with rt.metrics.timed("update"):
            try:
                _to_status(patch, await reconcile.spec_changed(rt, _raw(body)))
            except (reconcile.Rejected, reconcile.Deferred) as exc:
                _to_status(patch, exc.status)
                raise
        sync.wakeup.set()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def index(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        sync.observe(event.get("type"), _raw(body))
