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

import datetime
from collections.abc import Mapping
from typing import Any

import kopf

from kubetune.api.contract import GROUP, PLURAL, VERSION
from kubetune.api.sweep import SWEEP_PLURAL

from .loop import Controller
from .runtime import Runtime


def register(registry: kopf.OperatorRegistry, rt: Runtime, controller: Controller) -> None:
    """Attach every handler of the operator to ``registry``."""

    last_login: list[str | None] = [None]
    # The Connection whose file paths (CA, client certificate, key) kopf got last, kept until kopf logs in
    # again: kopf builds its session's SSL context from those paths lazily, on its first request with them
    # (Vault.extended calls the factory on first use, kopf/_cogs/structs/credentials.py:294-297;
    # APIContext.__init__ -> ConnectionInfo.as_ssl_context, kopf/_cogs/clients/auth.py:87-104,
    # credentials.py:122-164 @ 1.45.2), and drops those credentials before it asks again (expired: :381-391;
    # invalidated after a 401: :429-432).  kubetune's private files live as long as a Connection naming them
    # (kube._adopt): without this one, the operator's client rotating ahead of kopf's first request would
    # remove the files under kopf.
    handed: list[Any] = [None]

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
        handed[0] = c
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            insecure=c.insecure,
            scheme="Bearer" if token else None,
            token=token,
            certificate_path=c.cert_path,
            private_key_path=c.key_path,
            default_namespace=c.default_namespace,
            # the kubeconfig's proxy-url, for kopf's requests too (ConnectionInfo.proxy_url, sent as aiohttp's
            # proxy=: kopf/_cogs/structs/credentials.py:85, kopf/_cogs/clients/auth.py:101-110 @ 1.45.2).
            # tls-server-name has no ConnectionInfo field there (:68-88): kopf checks the server's
            # certificate against the server URL's host.
            proxy_url=c.proxy,
            expiration=datetime.datetime.fromtimestamp(c.expires_at, datetime.UTC) if c.expires_at else None,
        )

    # async: kopf runs a sync handler in its thread pool (kopf/_core/actions/invocation.py:113-134 @ 1.45.2,
    # loop.run_in_executor), a thread hop per event and the caches and work queue touched from another thread.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def index(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        controller.job_event(event.get("type"), body)

    # FineTuneSweeps (controller/sweeps): the same thin trigger, into the sweep controller's queue.
    # Where the FineTuneSweep CRD is not installed, kopf resolves this handler's resource at start,
    # warns "Unresolved resources cannot be served" and watches nothing for it (kopf/_core/reactor/
    # observation.py:298-315 @ 1.45.2); with scanning disabled (main.settings_for) no CRD watcher adds it
    # later (:126), so a sweep CRD installed after the operator needs an operator restart (the chart
    # installs both CRDs before the operator).
    @kopf.on.event(GROUP, VERSION, SWEEP_PLURAL, registry=registry)
    async def index_sweep(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        controller.sweeps.sweep_event(event.get("type"), body)
