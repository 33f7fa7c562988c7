"""kubetune's Python SDK: create, follow and read FineTuneJobs from a notebook, a pipeline or a script.

Everything here is reachable from the package root (``import kubetune``)::

    import kubetune

    job = kubetune.FineTuneJob.from_file("examples/finetune-lora.yaml")
    client = kubetune.Client()                    # the kubeconfig's context and namespace (or in-cluster)
    client.create(job)                            # server-side apply, field manager "kubetune"
    for update in client.watch(job.name):         # typed progress: phase, step, loss, eta_seconds, reason
        print(update.phase, update.step, update.loss)
    final = client.wait(job.name, timeout=3600)   # the Succeeded FineTuneJob; raises JobFailed otherwise
    print(client.logs(job.name, tail=20))
    rows = client.metrics(job.name)               # trainer_log.jsonl-style rows, as dicts

The commands ``kubetune get``, ``watch``, ``logs`` and ``plot`` are clients of this module
(kubetune/terminal.py), so what they print and what the SDK returns come from one code path.
Every error is a :class:`KubetuneError` with a ``message`` and a ``hint``, and the CLI prints
``str(error)``: the same words in both.

The transport is kubetune's small standard-library client (:class:`kubetune.terminal.Client`)
with the kubeconfig loader of the operator (:func:`kubetune.controller.kube.load_connection`):
every kubeconfig form kubectl reads, in-cluster ServiceAccounts, and credentials reloaded before
they expire and once after a 401.

Upstream contracts relied on (read in kubernetes/kubernetes at the commit the search index holds,
00f7534, master after v1.36; no tag or line numbers there; the emulator in tests/support/apiserver/emulator.py
plays the same rules and cites lines at the release):

* server-side apply is ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` (JSON is YAML),
  ``fieldManager`` required (``ValidatePatchOptions``), ``force`` to take conflicting fields; it
  creates the object when none exists (``patchResource``: ``forceAllowCreate = true`` for
  ``ApplyYAMLPatchType``), and ``fieldValidation=Strict`` refuses unknown fields with 400
  (``applyPatcher.applyPatchToCurrentObject``) -- staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go;
  a schema or CEL violation is 422 Invalid, a field another manager owns is 409 Conflict;
* a request for a resource whose CRD is not installed is handed to the delegate handler, which
  answers 404 (``crdHandler.ServeHTTP``), while ``GET /apis/<group>/<version>`` is discovery
  (``versionDiscoveryHandler``), listing ``finetunejobs`` only when the CRD is served --
  staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go.  So a 404 is
  told apart from a missing job by discovery, as kubectl does;
* a watch sent with ``resourceVersion`` replays only newer events; the server ends it after
  ``timeoutSeconds``; an ``ERROR`` event with a 410 Status means the version was compacted and the
  client lists again (client-go's reflector; here as the emulator's ``_watch`` plays it: not read in
  the apiserver source for this change).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import http.client
import importlib
import io
import json
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

from kubetune import terminal
from kubetune.api import FineTuneJob, contract
from kubetune.api.progressline import parse_line

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kubetune.api.resource import KubetuneResource
    from kubetune.api.sweep import FineTuneSweep
    from kubetune.localrun import RunResult

T = TypeVar("T")

Items = list[dict[str, Any]]
"""API objects as read (an alias: inside ``Client`` the name ``list`` is its method)."""

FIELD_MANAGER = "kubetune"
"""The field manager of the SDK's server-side applies (the operator's too: kubetune.controller.kube)."""

OPERATOR_GRACE_S = 60.0
"""How long :meth:`Client.wait` lets a job go unobserved by the operator before it raises OperatorNotRunning."""

INSTALL_HINT = (
    "install kubetune's CRD and operator: helm install kubetune charts/kubetune -n kubetune-system "
    "--create-namespace (docs/install.md)"
)

__all__ = [
    "AsyncClient",
    "Client",
    "ClusterUnreachable",
    "Conflict",
    "CRDNotInstalled",
    "Forbidden",
    "InvalidSpec",
    "JobDeleted",
    "JobEvent",
    "JobFailed",
    "JobNotFound",
    "JobUpdate",
    "KubetuneError",
    "MetricRows",
    "NoPodYet",
    "OperatorNotRunning",
    "Unauthorized",
    "WaitTimeout",
    "read_job",
    "read_sweep",
    "read_trainer_log",
    "run_local",
]


# --- errors ---------------------------------------------------------------------------------------


class KubetuneError(Exception):
    """Base of every SDK error: ``message`` says what happened, ``hint`` what to do (may be empty);
    ``status`` is the API server's HTTP status when it answered (None otherwise).
    ``str(error)`` is ``"<message>: <hint>"``, what the CLI prints."""

    def __init__(self, message: str, hint: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{message}: {hint}" if hint else message)
        self.message = message
        self.hint = hint
        self.status = status


class ClusterUnreachable(KubetuneError):
    """No API server answered (or no kubeconfig / in-cluster credentials could be loaded)."""


class Unauthorized(KubetuneError):
    """401: the API server refused the credentials, also after reloading them once."""


class Forbidden(KubetuneError):
    """403: RBAC (or an admission webhook) denied the request."""


class CRDNotInstalled(KubetuneError):
    """The cluster does not serve FineTuneJobs: the CRD is not installed."""


class JobNotFound(KubetuneError):
    """404: no FineTuneJob of that name in the namespace."""


class Conflict(KubetuneError):
    """409: another field manager owns fields this apply changes (pass ``force=True`` to take them)."""


class InvalidSpec(KubetuneError):
    """The spec is invalid: refused before sending (the checks of ``kubetune validate``) or by the API
    server (422, its schema and CEL rules).  ``problems``: one line per field, each naming the fix."""

    def __init__(
        self, message: str, hint: str = "", *, status: int | None = None, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message + "".join(f"\n  {p}" for p in problems), hint, status=status)
        self.message = message
        self.problems = list(problems)


class OperatorNotRunning(KubetuneError):
    """The job stayed unobserved by the kubetune operator (no ``status.observedGeneration`` for its
    generation) past the grace time: no operator runs, or it does not watch this namespace."""


class NoPodYet(KubetuneError):
    """The training pod whose log was asked for does not exist (yet, or any more)."""


class JobFailed(KubetuneError):
    """The job reached phase Failed: ``reason`` (CamelCase, see docs/status.md), the operator's
    ``message`` and the reason's ``hint``; ``job`` is the final FineTuneJob."""

    def __init__(self, reason: str, message: str, hint: str, job: FineTuneJob | None = None) -> None:
        text = (
            f"FineTuneJob {job.namespace + '/' + job.name if job else ''} failed ({reason or 'no reason'}): {message}"
        )
        super().__init__(text.replace("  ", " "), hint)
        self.reason = reason
        self.message = message
        self.job = job


class JobDeleted(KubetuneError):
    """The job was deleted while it was watched or waited for."""


class WaitTimeout(KubetuneError, TimeoutError):
    """:meth:`Client.wait` gave up after its timeout; ``job`` is the last state seen."""

    def __init__(self, message: str, hint: str = "", *, job: FineTuneJob | None = None) -> None:
        super().__init__(message, hint)
        self.job = job


def _from_api_error(
    exc: terminal.ApiError, *, server: str, namespace: str | None, verb: str, crd_missing: bool = False
) -> KubetuneError:
    """The typed error of an API answer (``crd_missing``: discovery found no FineTuneJob resource)."""
    where = f" in namespace {namespace}" if namespace else " in any namespace"
    if exc.status == 0:
        return ClusterUnreachable(
            exc.message,
            "check the kubeconfig's current context (kubectl config current-context) and "
            f"that the API server {server} is up",
        )
    if exc.status == 401:
        return Unauthorized(
            f"{exc.message} (401)",
            "the API server refused the kubeconfig's credentials: log in again (or renew the token) and retry",
            status=401,
        )
    if exc.status == 403:
        verbs = verb.split(" and ")
        scope = f"finetunejobs.kubetune.io{' -n ' + namespace if namespace else ' -A'}"
        return Forbidden(
            f"{exc.message} (403)",
            f"ask a cluster admin to grant {verb} on finetunejobs.kubetune.io{where} (check with: "
            f"{'; '.join(f'kubectl auth can-i {v} {scope}' for v in verbs)})",
            status=403,
        )
    if exc.status == 404 and crd_missing:
        return CRDNotInstalled(
            f"the cluster at {server} does not serve FineTuneJobs ({contract.PLURAL}.{contract.GROUP} "
            f"{contract.API_VERSION}): {exc.message} (404)",
            INSTALL_HINT,
            status=404,
        )
    if exc.status == 404 and exc.details.get("kind") == "namespaces":
        # Writing into a namespace that does not exist: the NamespaceLifecycle admission plugin answers
        # NotFound for the namespace itself (errors.NewNotFound: details.kind "namespaces") --
        # k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go:163-169 and
        # k8s.io/apimachinery/pkg/api/errors/errors.go:145-157 (Kubernetes 1.36, vendored in
        # openshift/microshift @ 8e16b12).  Not a missing job.
        missing = exc.details.get("name") or namespace
        return KubetuneError(
            f"{exc.message} (404)",
            f"create the namespace first (kubectl create namespace {missing}), "
            "or pass namespace=... naming one that exists",
            status=404,
        )
    if exc.status == 404:
        return JobNotFound(f"{exc.message} (404)", status=404)
    if exc.status == 409 and any(
        isinstance(c, dict)
        and c.get("field") == ".spec.suspend"
        and str(c.get("message") or "").startswith(f'conflict with "{FIELD_MANAGER}" using ')
        for c in exc.details.get("causes") or []
    ):
        # Server-side apply tells managers apart by name AND operation (BuildManagerIdentifier,
        # k8s.io/apimachinery/pkg/util/managedfields/internal/managedfields.go:134-156 @ v0.36.3): the merge
        # patch of suspend()/resume() is manager "kubetune" with operation Update, which took spec.suspend
        # from this client's applies; conflict.go:33-89 names it 'conflict with "kubetune" using <apiVersion>'.
        return Conflict(
            f"{exc.message} (409)",
            "spec.suspend was last set by suspend() or resume(): leave suspend out of the job to keep that, or "
            "create(job, force=True) to apply the job's own suspend value",
            status=409,
        )
    if exc.status == 409:
        return Conflict(
            f"{exc.message} (409)",
            "another field manager owns these fields: create(job, force=True) takes them over (as kubectl apply "
            "--server-side --force-conflicts)",
            status=409,
        )
    if exc.status in (400, 422):
        # A 422 Invalid names each refused field in details.causes (field, message): errors.NewInvalid,
        # k8s.io/apimachinery/pkg/api/errors/errors.go:284-310 (Kubernetes 1.36, vendored in
        # openshift/microshift @ 8e16b12).
        causes = [c for c in exc.details.get("causes") or [] if isinstance(c, dict) and c.get("message")]
        problems = [f"{c['field']}: {c['message']}" if c.get("field") else str(c["message"]) for c in causes]
        return InvalidSpec(
            f"the API server refused the FineTuneJob: {exc.message} ({exc.status})",
            "fix the fields named in the message; kubetune validate FILE lists every problem",
            status=exc.status,
            problems=problems,
        )
    return KubetuneError(f"{exc.message} ({exc.status})", status=exc.status)


# --- typed updates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEvent:
    """A Kubernetes Event about the job (what ``kubectl describe`` lists)."""

    type: str
    """Normal or Warning."""
    reason: str
    message: str
    time: datetime | None
    """When it last happened (the Event's own time)."""
    count: int = 1


@dataclass(frozen=True)
class JobUpdate:
    """One step of :meth:`Client.watch`: the job's state after a change, an Event, or its deletion."""

    kind: Literal["status", "event", "deleted"]
    job: FineTuneJob | None
    """The job as of this update (None only when it was deleted before it was first read)."""
    phase: str = "Pending"
    step: int | None = None
    total_steps: int | None = None
    percent: float | None = None
    loss: float | None = None
    eta_seconds: int | None = None
    reason: str = ""
    """The reason of the condition that explains the phase (docs/status.md)."""
    message: str = ""
    """status.message: the latest human-readable summary."""
    event: JobEvent | None = None
    """With kind "event": the Event."""

    @property
    def finished(self) -> bool:
        """Whether this is the last update: Succeeded, Failed or deleted."""
        return self.kind == "deleted" or (self.kind == "status" and self.phase in ("Succeeded", "Failed"))


def _condition_reason(job: FineTuneJob) -> str:
    """The reason of the condition that explains status.message (the operator copies the most relevant
    condition's message there: api/status.py), else of the newest condition."""
    status = job.status
    if status is None or not status.conditions:
        return ""
    for cond in status.conditions:
        if status.message and cond.message == status.message:
            return cond.reason
    return max(status.conditions, key=lambda c: c.last_transition_time).reason


def _update(
    kind: Literal["status", "event", "deleted"], job: FineTuneJob | None, event: JobEvent | None = None
) -> JobUpdate:
    status = job.status if job is not None else None
    p = status.progress if status is not None else None
    return JobUpdate(
        kind=kind,
        job=job,
        phase=str((status.phase if status else None) or "Pending"),
        step=p.step if p else None,
        total_steps=p.total_steps if p else None,
        percent=p.percent if p else None,
        loss=p.loss if p else None,
        eta_seconds=p.eta_seconds if p else None,
        reason=_condition_reason(job) if job is not None else "",
        message=(status.message or "") if status else "",
        event=event,
    )


def read_job(obj: dict[str, Any]) -> FineTuneJob:
    """A FineTuneJob as the API server stored it.  Validated like ``FineTuneJob.from_api``; a job that
    this kubetune's model refuses (stored under an older CRD, or written by a newer kubetune: the jobs
    whose status says InvalidSpec are among them) still comes back, with its status typed (fields this
    version does not know are dropped) and its spec unvalidated: the spec's nested values are then plain
    dicts.  Never raises for what a cluster can hold."""
    from kubetune.api import FineTuneJobSpec, FineTuneJobStatus  # noqa: PLC0415

    return _read_stored(obj, FineTuneJob, FineTuneJobSpec, FineTuneJobStatus)


def read_sweep(obj: dict[str, Any]) -> FineTuneSweep:
    """A FineTuneSweep as the API server stored it, with its status (``status.trials``: every trial's
    parameters, state and values; ``status.bestTrial``, ``status.bestValue``).  Like :func:`read_job`, a
    sweep this kubetune's model refuses still comes back: its status typed, its spec unvalidated."""
    from kubetune.api.sweep import FineTuneSweep, FineTuneSweepSpec, FineTuneSweepStatus  # noqa: PLC0415

    return _read_stored(obj, FineTuneSweep, FineTuneSweepSpec, FineTuneSweepStatus)


_Stored = TypeVar("_Stored", bound="KubetuneResource")


def _read_stored(
    obj: dict[str, Any], kind: type[_Stored], spec_model: type[BaseModel], status_model: type[BaseModel]
) -> _Stored:
    """``kind`` validated like ``kind.from_api``; where its model refuses ``obj``, ``kind`` built without
    validation: the status typed (unknown fields dropped, None where even that fails), the spec's known
    top-level fields kept as stored, metadata as stored."""
    try:
        return kind.from_api(obj)
    except ValueError:  # pydantic's ValidationError
        pass
    from pydantic import ValidationError  # noqa: PLC0415

    from kubetune.api import ObjectMeta  # noqa: PLC0415

    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    try:
        status = (
            status_model.model_validate(_known(obj.get("status"), status_model), by_alias=True, by_name=False)
            if isinstance(obj.get("status"), dict)
            else None
        )
    except ValidationError:
        status = None
    raw_spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    names = {(f.alias or n): n for n, f in spec_model.model_fields.items()}
    fields: dict[str, Any] = {
        "metadata": ObjectMeta.model_construct(
            **{k: v for k, v in meta.items() if k != "resourceVersion"}, resource_version=meta.get("resourceVersion")
        ),
        "spec": spec_model.model_construct(**{names[k]: v for k, v in raw_spec.items() if k in names}),
        "status": status,
    }
    return cast("_Stored", kind.model_construct(**fields))  # the pydantic plugin types it as the bound


def _known(value: Any, model: Any) -> Any:
    """``value`` without the keys ``model`` (a pydantic model whose extra keys are refused)
    does not know, recursively."""
    from kubetune.api.resource import _fields_by_name, _model_in  # noqa: PLC0415 - the API's own walk of its models

    if isinstance(value, dict) and model is not None and model.model_config.get("extra") == "forbid":
        fields = _fields_by_name(model)
        return {k: _known(v, _model_in(fields[k].annotation)) for k, v in value.items() if k in fields}
    if isinstance(value, list):
        return [_known(v, model) for v in value]
    return value


def _hint_for(reason: str) -> str:
    from kubetune.controller.reasons import REASONS  # the one table of reasons and hints (docs/status.md)

    found = REASONS.get(reason)
    return found.hint if found is not None else "kubetune logs NAME shows the trainer's output; docs/troubleshooting.md"


# --- metrics --------------------------------------------------------------------------------------


class MetricRows(list[dict[str, Any]]):
    """Rows like LLaMA-Factory's trainer_log.jsonl (``current_steps``, ``total_steps``, ``loss``, ``lr``,
    ``epoch``, ``percentage``...), one per logged step, oldest first; ``source`` says where they were read."""

    source: str = ""
    from_start: bool = True
    """False when the rows come from a pod log the kubelet has rotated: the earlier steps are missing
    (:meth:`Client.metrics` then also warns, and ``source`` says from which step on)."""

    def losses(self) -> list[tuple[int, float]]:
        """(step, loss) of every row that has a loss."""
        return [
            (int(r["current_steps"]), float(r["loss"]))
            for r in self
            if isinstance(r.get("loss"), (int, float)) and isinstance(r.get("current_steps"), int)
        ]

    def plot(self, title: str = "training loss") -> Any:
        """The loss curve as a matplotlib Figure (needs matplotlib; a notebook shows it)."""
        return loss_figure(self.losses(), title)

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        pandas: Any = importlib.import_module("pandas")  # optional, and untyped

        return pandas.DataFrame(list(self))


def _rows(rows: list[dict[str, Any]], source: str) -> MetricRows:
    out = MetricRows(rows)
    out.source = source
    return out


_PROGRESS_TO_TRAINER_LOG = {
    "step": "current_steps",
    "totalSteps": "total_steps",
    "loss": "loss",
    "learningRate": "lr",
    "epoch": "epoch",
    "percent": "percentage",
}
"""The trainer's progress-line keys (api/progressline.py) by the trainer_log.jsonl key of the same value."""


def read_trainer_log(path: str | Path) -> MetricRows:
    """The rows of a local run's ``trainer_log.jsonl`` (give the file or its job output folder)."""
    p = Path(path)
    log = p / "trainer_log.jsonl" if p.is_dir() else p
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            rows.append(record)
    return _rows(rows, str(log))


# --- the client -----------------------------------------------------------------------------------


_CLIENT_MODULES = ("kubernetes_asyncio", "aiohttp")
"""What the ``client`` extra installs (pyproject.toml): missing, a cluster command says to install it."""


class Client:
    """FineTuneJobs in one namespace of a cluster.

    ``namespace``: default the kubeconfig context's (in a pod: the ServiceAccount's), else ``default``;
    ``kubeconfig``: a file (default ``$KUBECONFIG``, then ``~/.kube/config``; in a pod without either,
    the in-cluster ServiceAccount)."""

    def __init__(self, namespace: str | None = None, kubeconfig: str | None = None) -> None:
        try:
            self._http = terminal.Client.from_kubeconfig(kubeconfig)
        except ModuleNotFoundError as exc:
            if str(exc.name or "").split(".")[0] not in _CLIENT_MODULES:
                raise
            raise ClusterUnreachable(
                f"the cluster client is not installed (no module {exc.name!r})",
                "pip install 'kubetune[client]' (the SDK's and the CLI's cluster connection)",
            ) from None
        except Exception as exc:  # noqa: BLE001 - kubernetes_asyncio's loader raises several kinds
            raise ClusterUnreachable(
                f"cannot load the cluster's credentials: {type(exc).__name__}: {exc}",
                "set KUBECONFIG (or pass kubeconfig=...) to a kubeconfig that kubectl can use",
            ) from None
        self.namespace: str = namespace or self._http.default_namespace
        """The namespace of every call that names no other."""

    @property
    def server(self) -> str:
        """The API server's URL."""
        return self._http.server

    # --- plumbing ---

    def _error(self, exc: terminal.ApiError, namespace: str | None, verb: str) -> KubetuneError:
        crd_missing = exc.status == 404 and not self._serves_finetunejobs()
        return _from_api_error(exc, server=self.server, namespace=namespace, verb=verb, crd_missing=crd_missing)

    def _serves_finetunejobs(self) -> bool:
        """Whether discovery lists the FineTuneJob resource (a 404 on a job is then a missing job)."""
        try:
            found = self._http.get(terminal.FTJ_PATH)
        except terminal.ApiError:
            return False
        return any(r.get("name") == contract.PLURAL for r in found.get("resources") or [] if isinstance(r, dict))

    def _get_raw(self, name: str, namespace: str | None = None, verb: str = "get") -> dict[str, Any]:
        ns = namespace or self.namespace
        try:
            return self._http.get(terminal.jobs_path(ns, name))
        except terminal.ApiError as exc:
            raise self._error(exc, ns, verb) from None

    # --- verbs ---

    def create(self, job: FineTuneJob | dict[str, Any] | str | Path, *, force: bool = False) -> FineTuneJob:
        """Create or update a FineTuneJob by server-side apply (field manager ``kubetune``), after the checks
        of ``kubetune validate``; returns the job as stored.  ``job``: a FineTuneJob, its API dict, or a
        manifest file.  The job's namespace, else the client's.  Raises :class:`InvalidSpec` (before sending,
        or the API server's 422), :class:`Conflict` (another manager owns a changed field: ``force=True``
        takes it), :class:`Forbidden`, :class:`CRDNotInstalled`, :class:`ClusterUnreachable`."""
        from kubetune.render import validate_object  # noqa: PLC0415 - the renderer's checks only when creating

        if isinstance(job, (str, Path)):
            job = FineTuneJob.from_file(job)
        doc = (
            job.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
            if isinstance(job, FineTuneJob)
            else dict(job)
        )
        meta = dict(doc.get("metadata") or {})
        name = str(meta.get("name") or "")
        ns = str(meta.get("namespace") or self.namespace)
        # What this client applies: its own intent only (no status, no server-owned metadata).
        applied: dict[str, Any] = {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {
                "name": name,
                "namespace": ns,
                **{k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
            },
            "spec": doc.get("spec"),
        }
        checked, problems = validate_object(applied)
        if problems or checked is None:
            raise InvalidSpec(
                f"FineTuneJob {ns}/{name} is invalid",
                "fix the fields named above; the job was not sent",
                problems=[str(p) for p in problems],
            )
        self._refuse_changes_to_a_finished_job(ns, name, applied["spec"])
        params = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict", **({"force": "true"} if force else {})}
        try:
            stored = self._http.send(
                "PATCH", terminal.jobs_path(ns, name), applied, params, content_type="application/apply-patch+yaml"
            )
        except terminal.ApiError as exc:
            # An apply is authorized as patch, and as create too when the job does not exist yet
            # (patch.go:203-232 withAuthorization of verb "create", update.go:258-281 @ apiserver v0.36.3).
            raise self._error(exc, ns, "create and patch") from None
        return read_job(stored)

    def _refuse_changes_to_a_finished_job(self, ns: str, name: str, spec: Any) -> None:
        """A finished job never runs again (the operator's first rule: controller/decide.py), so an apply that
        changes its spec would be stored and then ignored -- and ``wait`` would return the old result at
        once.  That is the notebook loop "fix the spec, run the cell again": say so instead.  ``spec.serve``
        (which follows a Succeeded job) and ``spec.suspend`` may change."""
        try:
            current = self._http.get(terminal.jobs_path(ns, name))
        except terminal.ApiError:
            return  # no such job (or not readable): the apply says what is wrong
        status = current.get("status") or {}
        if status.get("phase") not in ("Succeeded", "Failed") or not status.get("job"):
            return
        changed = [
            p
            for p in _changed_paths(spec, current.get("spec") or {}, "spec")
            if p.split(".")[1].split("[")[0] not in ("serve", "suspend")
        ]
        if changed:
            raise KubetuneError(
                f"FineTuneJob {ns}/{name} already {status['phase']}: a finished job never runs again, so the change to "
                f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} would be stored and ignored",
                f"delete it first (client.delete({name!r}), then create), or create the changed job under another name",
            )

    def get(self, name: str, namespace: str | None = None) -> FineTuneJob:
        """The FineTuneJob ``name`` with its status. Raises :class:`JobNotFound`, :class:`CRDNotInstalled`..."""
        return read_job(self._get_raw(name, namespace))

    def list(
        self, *, all_namespaces: bool = False, namespace: str | None = None, label_selector: str | None = None
    ) -> list[FineTuneJob]:
        """The FineTuneJobs of the namespace (or of every namespace), sorted by namespace and name."""
        ns = None if all_namespaces else (namespace or self.namespace)
        try:
            found = self._http.get(
                terminal.jobs_path(ns), {"labelSelector": label_selector} if label_selector else None
            )
        except terminal.ApiError as exc:
            raise self._error(exc, ns, "list") from None
        items = [i for i in found.get("items") or [] if isinstance(i, dict)]
        return sorted((read_job(i) for i in items), key=lambda j: (j.metadata.namespace or "", j.name))

    def get_sweep(self, name: str, namespace: str | None = None) -> FineTuneSweep:
        # docs/sdk.md prints this docstring as written (tests/support/update_sdk_docs.py): its long line stays.
        """The FineTuneSweep ``name`` with its status: ``status.trials`` (each trial's parameters, state,
        value), ``status.bestTrial`` and ``status.bestValue``. Raises :class:`JobNotFound`, :class:`CRDNotInstalled`..."""  # noqa: E501
        ns = namespace or self.namespace
        try:
            return read_sweep(self._http.get(terminal.sweeps_path(ns, name)))
        except terminal.ApiError as exc:
            raise self._sweep_error(exc, ns, "get") from None

    def list_sweeps(
        self, *, all_namespaces: bool = False, namespace: str | None = None
    ) -> builtins.list[FineTuneSweep]:
        """The FineTuneSweeps of the namespace (or of every namespace), sorted by namespace and name."""
        ns = None if all_namespaces else (namespace or self.namespace)
        try:
            found = self._http.get(terminal.sweeps_path(ns))
        except terminal.ApiError as exc:
            raise self._sweep_error(exc, ns, "list") from None
        items = [i for i in found.get("items") or [] if isinstance(i, dict)]
        return sorted((read_sweep(i) for i in items), key=lambda s: (s.metadata.namespace or "", s.name))

    def _sweep_error(self, exc: terminal.ApiError, namespace: str | None, verb: str) -> KubetuneError:
        if exc.status == 404:
            try:
                found = self._http.get(terminal.FTJ_PATH)
            except terminal.ApiError:
                found = {}
            if not any(
                isinstance(r, dict) and r.get("name") == terminal.SWEEP_PLURAL for r in found.get("resources") or []
            ):
                return CRDNotInstalled(
                    f"the cluster at {self.server} does not serve FineTuneSweeps "
                    f"({terminal.SWEEP_PLURAL}.{contract.GROUP}): {exc.message} (404)",
                    INSTALL_HINT,
                    status=404,
                )
            return JobNotFound(f"{exc.message} (404)", status=404)
        return _from_api_error(exc, server=self.server, namespace=namespace, verb=verb)

    def delete(self, name: str, namespace: str | None = None) -> None:
        """Delete the job; its children go with it (owner references). Raises :class:`JobNotFound`."""
        ns = namespace or self.namespace
        try:
            self._http.send("DELETE", terminal.jobs_path(ns, name))
        except terminal.ApiError as exc:
            raise self._error(exc, ns, "delete") from None

    def suspend(self, name: str, namespace: str | None = None) -> FineTuneJob:
        """Set spec.suspend: the operator deletes the pods and keeps outputs and checkpoints (phase Suspended)."""
        return self._set_suspend(name, namespace, True)

    def resume(self, name: str, namespace: str | None = None) -> FineTuneJob:
        """Clear spec.suspend: training resumes from the newest checkpoint."""
        return self._set_suspend(name, namespace, False)

    def _set_suspend(self, name: str, namespace: str | None, value: bool) -> FineTuneJob:
        # A JSON merge patch of the one field, not an apply: an apply of only spec.suspend by the manager
        # that applied the job would drop every other field it applied (server-side apply semantics).
        ns = namespace or self.namespace
        try:
            stored = self._http.send(
                "PATCH",
                terminal.jobs_path(ns, name),
                {"spec": {"suspend": value}},
                {"fieldManager": FIELD_MANAGER},
                content_type="application/merge-patch+json",
            )
        except terminal.ApiError as exc:
            raise self._error(exc, ns, "patch") from None
        return read_job(stored)

    def events(self, name: str, namespace: str | None = None) -> builtins.list[JobEvent]:
        """The Events about the job, oldest first (those of the job now under that name; all of the name's
        when there is none)."""
        ns = namespace or self.namespace
        try:
            uid = read_job(self._get_raw(name, ns, "get")).metadata.uid
        except JobNotFound:
            uid = None
        return [_event(e) for e in self._raw_events(name, ns, uid)]

    def _raw_events(self, name: str, ns: str, uid: str | None = None) -> Items:
        # By uid as well when it is known, as kubectl describe does (client-go kubernetes/typed/core/v1/
        # event_expansion.go:200; the field is selectable: pkg/registry/core/event/strategy.go:113-126):
        # Events outlive their object, and a job deleted and created again under the same name would
        # otherwise show its predecessor's Warnings (an OOMKilled of the last run) as its own.
        selector = {
            "fieldSelector": f"involvedObject.kind={contract.KIND},involvedObject.name={name}"
            + (f",involvedObject.uid={uid}" if uid else "")
        }
        try:
            items = [
                e
                for e in self._http.get(f"/api/v1/namespaces/{ns}/events", selector).get("items") or []
                if isinstance(e, dict)
            ]
        except terminal.ApiError as exc:
            raise self._error(exc, ns, "list") from None
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(items, key=lambda e: terminal.event_time(e) or oldest)

    def watch(
        self,
        name: str,
        namespace: str | None = None,
        *,
        events: bool = False,
        events_interval: float = 5.0,
        operator_grace: float | None = None,
        timeout: float | None = None,
        progress_bar: bool = False,
    ) -> Iterator[JobUpdate]:
        """Follow the job: a ``status`` update now and after every change, ``event`` updates for new Events
        (``events=True``, read every ``events_interval`` s), until it Succeeds, Fails (the last update's
        ``finished`` is true) or is deleted (a ``deleted`` update).  ``operator_grace``: raise
        :class:`OperatorNotRunning` when the operator has not observed the job's generation after this many
        seconds; ``timeout``: stop (without raising) after this many seconds.  ``progress_bar``: show a
        tqdm bar (``tqdm.auto``; needs tqdm).  Raises :class:`JobNotFound` when there is no such job."""
        updates = self._follow(
            name,
            namespace,
            events=events,
            events_interval=events_interval,
            operator_grace=operator_grace,
            timeout=timeout,
        )
        if not progress_bar:
            yield from updates
            return
        tqdm: Any = importlib.import_module("tqdm.auto").tqdm  # optional (notebooks), and untyped

        bar = tqdm(total=0, desc=name, unit="step")
        try:
            for update in updates:
                if update.total_steps:
                    bar.total = update.total_steps
                    bar.n = update.step or 0
                bar.set_postfix_str(
                    f"{update.phase}" + (f" loss {update.loss:.4f}" if update.loss is not None else ""), refresh=True
                )
                yield update
        finally:
            bar.close()

    def _follow(
        self,
        name: str,
        namespace: str | None,
        *,
        events: bool,
        events_interval: float,
        operator_grace: float | None,
        timeout: float | None,
        stop: threading.Event | None = None,
    ) -> Iterator[JobUpdate]:
        """``stop``: set by :class:`AsyncClient` when its consumer went away; the loop then ends after the
        watch window in flight (at most 30 s: the server ends it) instead of watching on in its worker."""
        stopped = stop.is_set if stop is not None else (lambda: False)
        ns = namespace or self.namespace
        raw = self._get_raw(name, ns, "watch")
        started = time.monotonic()
        seen_events: set[tuple[str, Any]] = set()
        next_events = 0.0
        job, rv = _job_and_version(raw)
        first = _update("status", job)
        yield first
        if events:
            next_events = time.monotonic() + events_interval
            yield from self._unseen_events(name, ns, job, seen_events)
        if first.finished:
            return
        while True:
            now = time.monotonic()
            if stopped() or (timeout is not None and now - started >= timeout):
                return
            if operator_grace is not None and now - started >= operator_grace and not _observed(job):
                raise _operator_not_running(job, ns, name, operator_grace)
            # The server ends each watch after timeoutSeconds; the next one resumes from the last
            # resourceVersion, so no change is missed and Events / deadlines are looked at in between.
            grace = operator_grace if not _observed(job) else None
            seconds = _window_seconds(
                now - started, stop is not None, max(next_events - now, 0.0) if events else None, timeout, grace
            )
            try:
                with self._http.open(
                    terminal.jobs_path(ns), _watch_params(name, seconds, rv), timeout=seconds + 30
                ) as resp:
                    for line in resp:
                        if stopped():
                            return
                        kind, obj, rv = _watch_line(line, name, rv)
                        if kind == "ERROR":  # 410 Expired: list again (rv is "")
                            break
                        if obj is None:
                            continue
                        if kind == "DELETED":
                            if events:
                                yield from self._unseen_events(name, ns, job, seen_events)
                            yield _update("deleted", job)
                            return
                        job = read_job(obj)
                        update = _update("status", job)
                        if update.finished and events:
                            yield from self._unseen_events(
                                name, ns, job, seen_events
                            )  # the Warning that explains a failure comes first
                        yield update
                        if update.finished:
                            return
                        if events and time.monotonic() >= next_events:
                            break
            except terminal.ApiError as exc:
                if exc.status in (401, 403, 404):
                    raise self._error(exc, ns, "watch") from None
                (stop or threading.Event()).wait(1.0)  # a dropped connection: watch again
            except (OSError, ValueError, http.client.HTTPException):
                # A stream cut mid-chunk (a proxy or load balancer closing an idle connection) is
                # http.client.IncompleteRead, an HTTPException and not an OSError: watch again.
                (stop or threading.Event()).wait(1.0)
            if not rv:
                try:
                    raw = self._get_raw(name, ns, "watch")
                except JobNotFound:
                    yield _update("deleted", job)
                    return
                job, rv = _job_and_version(raw)
                update = _update("status", job)
                yield update
                if update.finished:
                    return
            if events and time.monotonic() >= next_events:
                next_events = time.monotonic() + events_interval
                yield from self._unseen_events(name, ns, job, seen_events)

    def _unseen_events(self, name: str, ns: str, job: FineTuneJob, seen: set[tuple[str, Any]]) -> Iterator[JobUpdate]:
        """The job's Events not yielded before (``seen`` remembers them), as ``event`` updates."""
        for e in self._raw_events(name, ns, job.metadata.uid):
            key = terminal._event_key(e)
            if key not in seen:
                seen.add(key)
                yield _update("event", job, _event(e))

    def wait(
        self,
        name: str,
        timeout: float | None = None,
        namespace: str | None = None,
        *,
        operator_grace: float | None = OPERATOR_GRACE_S,
        progress_bar: bool = False,
    ) -> FineTuneJob:
        """Block until the job Succeeds and return it.  Raises :class:`JobFailed` (``reason``, ``message``,
        ``hint``) when it Fails, :class:`WaitTimeout` after ``timeout`` seconds, :class:`JobDeleted`, and
        :class:`OperatorNotRunning` when no operator observed it within ``operator_grace`` seconds."""
        last: JobUpdate | None = None
        ns = namespace or self.namespace
        for update in self.watch(
            name, namespace, operator_grace=operator_grace, timeout=timeout, progress_bar=progress_bar
        ):
            last = update
            done = _wait_outcome(update, name, ns)
            if done is not None:
                return done
        raise _wait_timeout(last, name, ns, timeout)

    def log_stream(
        self,
        name: str,
        namespace: str | None = None,
        *,
        rank: int | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[bytes]:
        """The raw log of the pod holding ``rank``'s output (None: rank 0's: PyTorchJob master, MPIJob
        launcher, TrainJob node 0), in chunks; ``follow``: until the pod ends.  Raises :class:`NoPodYet`."""
        ns = namespace or self.namespace
        raw = self._get_raw(name, ns, "get")
        try:
            pod, container, what = terminal.find_pod(self._http, ns, raw, rank)
        except terminal.ApiError as exc:
            raise self._error(exc, ns, "list") from None
        if pod is None:
            raise NoPodYet(f"no {what} yet (phase {(raw.get('status') or {}).get('phase') or 'Pending'})", status=404)
        params = {
            "container": container,
            **({"follow": "true"} if follow else {}),
            **({"tailLines": str(tail)} if tail is not None else {}),
        }
        try:
            resp = self._http.open(f"/api/v1/namespaces/{ns}/pods/{pod}/log", params, timeout=None if follow else 60)
        except terminal.ApiError as exc:
            raise _log_error(exc, pod) or self._error(exc, ns, "get") from None
        with resp:
            try:
                yield from iter(lambda: resp.read1(65536), b"")
            except (OSError, http.client.HTTPException) as exc:
                # A follow that a proxy or load balancer cuts (idle timeout) ends mid-chunk: IncompleteRead.
                raise KubetuneError(
                    f"the log stream of pod {ns}/{pod} was cut: {type(exc).__name__}: {exc}",
                    "read it again (tail=N to skip what was shown); a proxy in front of the API "
                    "server may close idle streams",
                ) from None

    @overload
    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        rank: int | None = None,
        follow: Literal[False] = False,
        tail: int | None = None,
    ) -> str: ...
    @overload
    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        rank: int | None = None,
        follow: Literal[True],
        tail: int | None = None,
    ) -> Iterator[str]: ...

    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        rank: int | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> str | Iterator[str]:
        """The training log of ``rank``'s pod (None: rank 0's output) as text; with ``follow=True`` an
        iterator of lines as they are written, until the pod ends."""
        chunks = self.log_stream(name, namespace, rank=rank, follow=follow, tail=tail)
        if not follow:
            return b"".join(chunks).decode("utf-8", "replace")
        return _lines(chunks)

    def metrics(self, name: str, namespace: str | None = None) -> MetricRows:
        """The job's logged steps as trainer_log.jsonl-style rows (``current_steps``, ``loss``, ``lr``...):
        from rank 0's progress lines while its pod exists, else the one latest point in status (the whole
        history is also trainer_log.jsonl in the job's outputs folder: :func:`read_trainer_log`).  A pod
        log the kubelet has rotated (10Mi by default) holds only the later steps: the rows' ``from_start``
        is then False, their ``source`` says from which step, and a warning says so."""
        ns = namespace or self.namespace
        raw = self._get_raw(name, ns, "get")
        pod: str | None = None
        text = ""
        try:
            pod, container, _ = terminal.find_pod(self._http, ns, raw, None)
            if pod is not None:
                with self._http.open(
                    f"/api/v1/namespaces/{ns}/pods/{pod}/log", {"container": container}, timeout=120
                ) as resp:
                    text = resp.read().decode("utf-8", "replace")
        except terminal.ApiError as exc:
            if pod is None or _log_error(exc, pod) is None:
                raise self._error(exc, ns, "get") from None
            text = ""  # the container has written no log yet: the status's latest point, below
        by_step: dict[int, dict[str, Any]] = {}  # the newest row of each step (a resumed run logs steps again)
        from_start = False
        for line in text.splitlines():
            parsed = parse_line(line)
            if parsed is not None and parsed.kind == "progress" and isinstance(parsed.data.get("step"), int):
                by_step[parsed.data["step"]] = {
                    k: parsed.data[src] for src, k in _PROGRESS_TO_TRAINER_LOG.items() if src in parsed.data
                }
            elif (
                parsed is not None
                and parsed.kind == "stage"
                and parsed.data.get("stage") == "train"
                and parsed.data.get("event") == "start"
            ):
                from_start = True  # trainer/main.py writes it before the first step (trainer/stages.py)
        if by_step:
            source = f"pod {ns}/{pod} log"
            from_start = from_start or min(by_step) <= 1
            if not from_start:
                # The kubelet rotates a container's log at containerLogMaxSize (10Mi by default:
                # pkg/kubelet/apis/config/v1beta1/defaults.go:258-259) and pods/log reads only the current
                # file ("It will not retrieve logs in rotated log file": k8s.io/cri-client/pkg/logs/logs.go:44-45;
                # Kubernetes 1.36 vendored in openshift/microshift @ 8e16b12): no train-start line, and a
                # first step past 1, mean the steps before the first row here are gone from the log.
                first = min(by_step)
                source += (
                    f" since the kubelet rotated it: steps before {first} are not in it (trainer_log.jsonl in "
                    "the job's outputs volume has them all)"
                )
                warnings.warn(f"FineTuneJob {ns}/{name}: {source}", stacklevel=2)
            rows = _rows([by_step[s] for s in sorted(by_step)], source)
            rows.from_start = from_start
            return rows
        progress = (raw.get("status") or {}).get("progress") or {}
        row = (
            {k: progress[src] for src, k in _PROGRESS_TO_TRAINER_LOG.items() if src in progress}
            if isinstance(progress, dict)
            else {}
        )
        return _rows([row] if "current_steps" in row else [], f"FineTuneJob {ns}/{name} status")

    def plot(self, name: str, namespace: str | None = None) -> Any:
        """A matplotlib Figure of the training loss (:meth:`metrics`); needs matplotlib."""
        return self.metrics(name, namespace).plot(f"{name}: training loss")


def loss_figure(points: Sequence[tuple[int, float]], title: str) -> Any:
    """A matplotlib Figure of (step, loss) points (``kubetune plot`` saves it as a PNG)."""
    # A bare Figure, not pyplot: no backend is chosen or changed (a notebook keeps its own), and
    # savefig renders with Agg whatever the backend.
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy, and optional

    class LossFigure(Figure):  # type: ignore[misc]  # matplotlib is untyped here (Any)
        """A Figure that a notebook shows as an image without pyplot.  IPython's png formatter knows
        matplotlib Figures only once matplotlib_inline's backend module is imported (its import calls
        ``configure_inline_support`` -> ``select_figure_formats``: matplotlib_inline/backend_inline.py:209-236
        @0.2.2, IPython/core/pylabtools.py:287-289 @9.19.1), which happens when pyplot loads the backend that
        ipykernel names in MPLBACKEND (ipykernel/kernelapp.py:650-651 @7.4.0); a bare Figure would show as
        ``<Figure size 800x450 with 1 Axes>``.  The formatter falls back to the object's ``_repr_png_``
        (IPython/core/formatters.py:403-411, 843), and a registered printer, when there is one, wins: one image."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png")
            return buffer.getvalue()

    fig = LossFigure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, marker="." if len(points) < 50 else None, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _log_error(exc: terminal.ApiError, pod: str | None) -> NoPodYet | None:
    """A pod log the kubelet cannot give yet, as :class:`NoPodYet`; None for any other error.

    The kubelet answers 400 with a plain-text reason when the container has no log to read:
    "container X in pod P is waiting to start: ContainerCreating" (or "...: image can't be pulled",
    "... is not available", "... is terminated") -- pkg/kubelet/kubelet_pods.go:1528-1587
    (validateContainerLogStatus) and pkg/kubelet/server/server.go:881-883; the API server passes it on
    as a BadRequest Status with that text as message -- k8s.io/apiserver/pkg/registry/generic/rest/
    response_checker.go:58-59 (Kubernetes 1.36, vendored in openshift/microshift @ 8e16b12).  It is
    not the FineTuneJob's fault, so not :class:`InvalidSpec`."""
    if exc.status != 400:
        return None
    return NoPodYet(
        f"{exc.message} (400)",
        f"pod {pod} has not started its container yet: kubetune watch NAME shows why; ask again once it runs",
        status=400,
    )


def _changed_paths(applied: Any, stored: Any, path: str) -> list[str]:
    """The paths where ``applied`` (what an apply sets) differs from ``stored``; fields only ``stored`` has
    (the CRD's defaults, other managers' fields) are no change."""
    if isinstance(applied, dict) and isinstance(stored, dict):
        return [p for k, v in applied.items() for p in _changed_paths(v, stored.get(k), f"{path}.{k}")]
    if isinstance(applied, list) and isinstance(stored, list) and len(applied) == len(stored):
        return [p for i, (a, b) in enumerate(zip(applied, stored)) for p in _changed_paths(a, b, f"{path}[{i}]")]
    return [] if applied == stored else [path]


def _wait_outcome(update: JobUpdate, name: str, ns: str) -> FineTuneJob | None:
    """What :meth:`Client.wait` makes of one update: the Succeeded job, an error raised, or None (wait on)."""
    if update.kind == "deleted":
        raise JobDeleted(f"FineTuneJob {ns}/{name} was deleted while waiting for it")
    if update.finished and update.job is not None:
        if update.phase == "Failed":
            raise JobFailed(update.reason, update.message, _hint_for(update.reason), update.job)
        return update.job
    return None


def _wait_timeout(last: JobUpdate | None, name: str, ns: str, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(
        f"FineTuneJob {ns}/{name} did not finish within {timeout} s (phase {last.phase if last else 'unknown'})",
        "wait again, or follow it with kubetune watch NAME",
        job=last.job if last else None,
    )


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *done, pending = pending.split(b"\n")
        for line in done:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def _job_and_version(raw: dict[str, Any]) -> tuple[FineTuneJob, str]:
    """The job read from the API server and its resourceVersion (where a watch resumes)."""
    return read_job(raw), str((raw.get("metadata") or {}).get("resourceVersion") or "")


def _window_seconds(
    elapsed: float, async_consumer: bool, events_in: float | None, timeout: float | None, grace: float | None
) -> int:
    """How long one watch request may stay open (its timeoutSeconds, 1 to 30): until the first of the
    next Events read (``events_in`` seconds), the end of ``timeout`` or of the operator's ``grace``
    (both counted from the start, ``elapsed`` ago) is due."""
    limits = [30.0]
    if async_consumer:
        limits.append(5.0)  # an async consumer that goes away is noticed within a window (see AsyncClient)
    if events_in is not None:
        limits.append(events_in)
    if timeout is not None:
        limits.append(timeout - elapsed)
    if grace is not None:
        limits.append(grace - elapsed)
    return max(1, min(30, int(min(limits) + 0.999)))


def _watch_params(name: str, seconds: int, rv: str) -> dict[str, str]:
    """One watch request on the job ``name``, resumed from ``rv`` when there is one."""
    params = {
        "fieldSelector": f"metadata.name={name}",
        "timeoutSeconds": str(seconds),
        "watch": "true",
        "allowWatchBookmarks": "true",
    }
    if rv:
        params["resourceVersion"] = rv
    return params


def _watch_line(line: bytes, name: str, rv: str) -> tuple[str, dict[str, Any] | None, str]:
    """One line of a watch stream: the event's type, the object when it is a change of the job ``name``
    (None for a blank line, a bookmark or another object), and the resourceVersion to resume from (""
    after an ERROR, 410 Expired: list again)."""
    if not line.strip():
        return "", None, rv
    event = json.loads(line)
    obj = event.get("object") or {}
    kind = str(event.get("type") or "")
    if kind == "ERROR":
        return kind, None, ""
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
    if kind == "BOOKMARK" or (obj.get("metadata") or {}).get("name") != name:
        return kind, None, rv
    return kind, obj, rv


def _operator_not_running(job: FineTuneJob, ns: str, name: str, grace: float) -> OperatorNotRunning:
    return OperatorNotRunning(
        f"FineTuneJob {ns}/{name} was not observed by the kubetune operator within {grace:.0f} s "
        f"(status.observedGeneration {job.status.observed_generation if job.status else None}, "
        f"metadata.generation {job.metadata.generation})",
        f"check that the operator runs and watches namespace {ns}: kubectl -n kubetune-system get pods; "
        "its chart value watchNamespaces must be empty (every namespace) or list it",
    )


def _observed(job: FineTuneJob) -> bool:
    """Whether the operator has acted on the job's current generation."""
    seen = job.status.observed_generation if job.status is not None else None
    return seen is not None and (job.metadata.generation is None or seen >= job.metadata.generation)


def _event(e: dict[str, Any]) -> JobEvent:
    count = e.get("count")
    return JobEvent(
        type="Warning" if e.get("type") == "Warning" else "Normal",
        reason=str(e.get("reason") or ""),
        message=str(e.get("message") or ""),
        time=terminal.event_time(e),
        count=count if isinstance(count, int) else 1,
    )


# --- local ----------------------------------------------------------------------------------------


def run_local(
    job: FineTuneJob | str | Path,
    *,
    output: str | Path = "outputs",
    datasets: str | Path = ".",
    models: str | Path = ".",
    verbose: bool = False,
    quiet: bool = False,
) -> RunResult:
    """Train ``job`` on this machine as ``kubetune run --local`` does (the same renderer and trainer
    entrypoint a pod runs); returns the :class:`kubetune.localrun.RunResult` (``exit_code``,
    ``output_dir``, ``record``, ``losses``, ``log_file``).  Raises :class:`InvalidSpec` before training
    when the job is invalid.  Needs the ``train`` extra (LLaMA-Factory)."""
    from rich.console import Console  # noqa: PLC0415

    from kubetune import localrun  # noqa: PLC0415 - localrun's commands stay out of `import kubetune`
    from kubetune.render import validate_object  # noqa: PLC0415

    if isinstance(job, (str, Path)):
        job = FineTuneJob.from_file(job)
    checked, problems = validate_object(job.to_api())
    if problems or checked is None:
        raise InvalidSpec(
            f"FineTuneJob {job.name} is invalid", "fix the fields named above", problems=[str(p) for p in problems]
        )
    out = Path(output).resolve()
    layout = localrun.local_layout(checked, out, Path(datasets).resolve(), Path(models).resolve())
    sources, problem = localrun.resolve_local(checked, {checked.name: checked}, {}, out, layout)
    if problem is not None:
        raise InvalidSpec(f"FineTuneJob {job.name} cannot run here", problems=[problem])
    return localrun.run_local(
        checked,
        output=out,
        datasets=Path(datasets),
        models=Path(models),
        console=Console(quiet=quiet),
        verbose=verbose,
        sources=sources,
    )


# --- async ----------------------------------------------------------------------------------------


class AsyncClient:
    """:class:`Client`'s verbs for code that already runs an event loop (pipelines, async services):
    each call runs the synchronous client in a worker thread (``asyncio.to_thread``), so the loop
    never blocks; ``watch`` and ``logs(follow=True)`` are async iterators.  The same arguments, return
    values and errors as :class:`Client`."""

    def __init__(self, namespace: str | None = None, kubeconfig: str | None = None) -> None:
        self.sync = Client(namespace, kubeconfig)
        """The synchronous client underneath (its ``namespace`` is this client's)."""

    @property
    def namespace(self) -> str:
        return self.sync.namespace

    async def create(self, job: FineTuneJob | dict[str, Any] | str | Path, *, force: bool = False) -> FineTuneJob:
        return await asyncio.to_thread(self.sync.create, job, force=force)

    async def get(self, name: str, namespace: str | None = None) -> FineTuneJob:
        return await asyncio.to_thread(self.sync.get, name, namespace)

    async def list(
        self, *, all_namespaces: bool = False, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[FineTuneJob]:
        return await asyncio.to_thread(
            self.sync.list, all_namespaces=all_namespaces, namespace=namespace, label_selector=label_selector
        )

    async def delete(self, name: str, namespace: str | None = None) -> None:
        await asyncio.to_thread(self.sync.delete, name, namespace)

    async def suspend(self, name: str, namespace: str | None = None) -> FineTuneJob:
        return await asyncio.to_thread(self.sync.suspend, name, namespace)

    async def resume(self, name: str, namespace: str | None = None) -> FineTuneJob:
        return await asyncio.to_thread(self.sync.resume, name, namespace)

    async def events(self, name: str, namespace: str | None = None) -> builtins.list[JobEvent]:
        return await asyncio.to_thread(self.sync.events, name, namespace)

    async def wait(
        self,
        name: str,
        timeout: float | None = None,
        namespace: str | None = None,
        *,
        operator_grace: float | None = OPERATOR_GRACE_S,
    ) -> FineTuneJob:
        # Over :meth:`watch`, not Client.wait in one worker: a cancelled wait (asyncio.timeout, wait_for)
        # then stops its watch too, instead of leaving a thread that waits on for hours (and keeps
        # asyncio.run from returning: it joins the default executor's threads).
        ns = namespace or self.namespace
        last: JobUpdate | None = None
        async with contextlib.aclosing(
            self.watch(name, namespace, operator_grace=operator_grace, timeout=timeout)
        ) as updates:  # type: ignore[type-var]
            async for update in updates:
                last = update
                done = _wait_outcome(update, name, ns)
                if done is not None:
                    return done
        raise _wait_timeout(last, name, ns, timeout)

    async def metrics(self, name: str, namespace: str | None = None) -> MetricRows:
        return await asyncio.to_thread(self.sync.metrics, name, namespace)

    async def logs(
        self, name: str, namespace: str | None = None, *, rank: int | None = None, tail: int | None = None
    ) -> str:
        """The log as text (for following it: :meth:`follow_logs`)."""
        return await asyncio.to_thread(self.sync.logs, name, namespace, rank=rank, tail=tail)

    def follow_logs(
        self, name: str, namespace: str | None = None, *, rank: int | None = None, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The log's lines as they are written, until the pod ends."""
        return _in_thread(self.sync.logs(name, namespace, rank=rank, tail=tail, follow=True))

    def watch(
        self,
        name: str,
        namespace: str | None = None,
        *,
        events: bool = False,
        events_interval: float = 5.0,
        operator_grace: float | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[JobUpdate]:
        """:meth:`Client.watch` as an async iterator."""
        stop = threading.Event()
        updates = self.sync._follow(
            name,
            namespace,
            events=events,
            events_interval=events_interval,
            operator_grace=operator_grace,
            timeout=timeout,
            stop=stop,
        )
        return _in_thread(updates, stop)


async def _in_thread(iterator: Iterator[T], stop: threading.Event | None = None) -> AsyncIterator[T]:
    """A blocking iterator, advanced in a worker thread one item at a time; closed when the consumer stops.

    A consumer that is cancelled (``asyncio.timeout``, ``wait_for``, a cancelled task) leaves the step in
    flight running in its worker: a thread cannot be interrupted, and closing a generator while it runs
    raises ``ValueError: generator already executing`` in place of the cancellation.  So the iterator is
    closed by a thread of its own once that step returns (its HTTP stream with it), and the consumer
    gets its CancelledError / TimeoutError at once; ``stop`` is set then, for an iterator that would
    otherwise block on (a watch) to end at its next look."""
    done = object()
    lock = threading.Lock()  # one step or the close at a time

    def step() -> Any:
        with lock:
            return next(iterator, done)

    def close() -> None:
        with lock:
            closer = getattr(iterator, "close", None)
            if closer is not None:
                closer()

    in_flight = False
    try:
        while True:
            in_flight = True
            item = await asyncio.to_thread(step)
            in_flight = False
            if item is done:
                return
            yield item
    finally:
        if stop is not None:
            stop.set()
        if in_flight:
            threading.Thread(target=close, name="kubetune-close", daemon=True).start()
        else:
            await asyncio.to_thread(close)
