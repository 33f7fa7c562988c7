"""Running a kubeconfig ``exec`` credential plugin as kubectl does (kubetune's own runner).

kubernetes_asyncio's ``ExecProvider`` (config/exec_provider.py @ 36.1.0) pipes the plugin's stderr and shows
it only when the plugin fails (:76-100), so a login prompt (kubelogin's device code, an SSO URL) never
reaches the user; it sets ``spec.interactive`` from whether stdout is a terminal (:70, an AttributeError
when ``sys.stdout`` is None), ignores ``interactiveMode`` and ``provideClusterInfo`` (:38-58) and waits
for the plugin with no deadline (:85-93).  This runner follows client-go's exec authenticator instead
(k8s.io/client-go plugin/pkg/client/auth/exec/exec.go @ v0.36.3):

* the plugin's stderr is the caller's stderr (``stderr: os.Stderr``, :212-213; ``cmd.Stderr = a.stderr``,
  :459-463) when that is a terminal; otherwise (a notebook, whose fd 2 is not the cell) it is piped and
  relayed to ``sys.stderr`` as it comes, its tail kept for the failure's message;
* its stdin is the caller's terminal only when it is interactive (``if interactive { cmd.Stdin = a.stdin
  }``, :463-465), which ``isInteractive`` (:233-257) decides from ``interactiveMode``: ``Never`` no;
  ``IfAvailable`` when stdin is a terminal; ``Always`` requires a terminal ("standard input is not a
  terminal"); otherwise "unknown interactiveMode".  Go's exec gives a nil Stdin the null device, as here;
* ``KUBERNETES_EXEC_INFO`` is an ExecCredential of the configured apiVersion with ``spec.interactive`` and,
  with ``provideClusterInfo: true``, ``spec.cluster`` (exec.go:441-447), built as
  ``rest.ConfigToExecCluster`` builds it (k8s.io/client-go rest/exec.go, read in the search index's copy,
  no tag): server, tls-server-name, insecure-skip-tls-verify, certificate-authority-data (the CA data,
  else the CA file's bytes), proxy-url, and ``config`` (``ExecProvider.Config``: the cluster's extension
  named ``client.authentication.k8s.io/exec``; where clientcmd copies it from was not read here, the
  kubeconfig documentation's name for it is used);
* the answer is decoded and checked as exec.go:475-499 does (apiVersion, a status, a token or a
  certificate/key pair, both halves of the pair), and a token and a certificate are both kept
  (``newCreds``: token and cert, :505-520).

Unlike client-go (``cmd.Run()``, :471, no deadline) the plugin is killed after :data:`DEADLINE_S`: the
operator must not hold a reload thread forever behind a plugin that waits on a network.  A non-interactive
plugin runs in a session of its own, so the kill reaches the children of a shell wrapper too.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import IO, Any, TextIO

EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension whose ``extension`` value is handed to the plugin as ``spec.cluster.config``."""
DEADLINE_S = 300.0
"""How long a plugin may run (a browser or device-code login included) before it is killed."""
API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
"""The ExecCredential versions client-go accepts (``apiVersions``, exec.go:76-79 @ v0.36.3)."""
STDERR_TAIL = 4096
"""How many of the last bytes of a piped stderr a failure's message carries."""


class ExecPluginError(Exception):
    """The plugin could not be run, failed, or answered something that is not a usable ExecCredential."""


def _is_terminal(stream: TextIO | None) -> bool:
    if stream is None:
        return False
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False  # a replaced stream (a notebook's, pytest's) is no terminal


def interactive(mode: str | None, stdin: TextIO | None = None) -> bool:
    """Whether the plugin gets the terminal as stdin (exec.go:233-257 ``isInteractive``).  A missing
    ``interactiveMode`` is taken as ``IfAvailable`` here; :func:`run_plugin` allows it missing only for
    v1beta1, as clientcmd does (api/v1/defaults.go:27-36, validation.go:323-330 @ v0.36.3)."""
    stdin = sys.stdin if stdin is None else stdin
    mode = mode or "IfAvailable"
    if mode == "Never":
        return False
    if mode == "IfAvailable":
        return _is_terminal(stdin)
    if mode == "Always":
        if not _is_terminal(stdin):
            raise ExecPluginError(
                "exec plugin cannot support interactive mode: standard input is not a terminal "
                "(interactiveMode: Always; run it from a terminal, or set interactiveMode: IfAvailable)"
            )
        return True
    raise ExecPluginError(f"exec plugin cannot support interactive mode: unknown interactiveMode: {mode!r}")


def exec_cluster(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.cluster`` of the ExecCredential (rest.ConfigToExecCluster; JSON names of
    clientauthentication/v1 Cluster), empty values left out as the Go type's ``omitempty`` does."""
    ca = cluster.get("certificate-authority-data")
    if not ca and cluster.get("certificate-authority"):
        try:
            with open(str(cluster["certificate-authority"]), "rb") as f:
                ca = base64.standard_b64encode(f.read()).decode()
        except OSError as exc:
            raise ExecPluginError(f"failed to load CA bundle for execProvider: {exc}") from exc
    config: Any = None
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, Mapping) and ext.get("name") == CLUSTER_EXTENSION:
            config = ext.get("extension")
    out: dict[str, Any] = {
        "server": cluster.get("server"),
        "tls-server-name": cluster.get("tls-server-name"),
        "insecure-skip-tls-verify": bool(cluster.get("insecure-skip-tls-verify")),
        "certificate-authority-data": ca,
        "proxy-url": cluster.get("proxy-url"),
        "config": config,
    }
    return {k: v for k, v in out.items() if v}


def run_plugin(
    exec_config: Mapping[str, Any], cluster: Mapping[str, Any], *, deadline_s: float | None = None
) -> dict[str, Any]:
    """Run the plugin of a user's ``exec`` entry for ``cluster`` (its kubeconfig entry); its ``status``."""
    api_version = str(exec_config.get("apiVersion") or "")
    command = exec_config.get("command")
    if not api_version or not command:
        raise ExecPluginError("exec: the user's exec entry needs apiVersion and command")
    if api_version not in API_VERSIONS:  # exec.go:76-79, :171-174 @ v0.36.3
        raise ExecPluginError(
            f"exec plugin: invalid apiVersion {api_version!r} (kubectl accepts {' or '.join(API_VERSIONS)})"
        )
    mode = exec_config.get("interactiveMode")
    if not mode:
        # clientcmd defaults interactiveMode to IfAvailable only for v1beta1 (and v1alpha1):
        # tools/clientcmd/api/v1/defaults.go:27-36 @ v0.36.3; for v1 validation refuses it missing
        # ("interactiveMode must be specified", tools/clientcmd/validation.go:323-330 @ v0.36.3).
        if api_version != "client.authentication.k8s.io/v1beta1":
            raise ExecPluginError(
                f"interactiveMode must be specified to use exec authentication plugin {command} with "
                f"apiVersion {api_version} (Never, IfAvailable or Always; kubectl requires it too)"
            )
        mode = "IfAvailable"
    is_interactive = interactive(str(mode))
    spec: dict[str, Any] = {"interactive": is_interactive}
    if exec_config.get("provideClusterInfo"):
        spec["cluster"] = exec_cluster(cluster)
    env = dict(os.environ)
    for item in exec_config.get("env") or []:
        # kubectl requires only ``name`` (clientcmd/validation.go:318-322 @ v0.36.3: "env variable name must be
        # specified"); a missing ``value`` is Go's zero value, the empty string.
        name = item.get("name") if isinstance(item, Mapping) else None
        if not name:
            raise ExecPluginError(
                f"exec: env entry {item!r} of the user's exec entry has no name (each entry needs name and value)"
            )
        env[str(name)] = "" if item.get("value") is None else str(item["value"])
    env[EXEC_INFO_ENV] = json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "spec": spec})
    argv = [str(command), *(str(a) for a in exec_config.get("args") or [])]
    deadline = DEADLINE_S if deadline_s is None else deadline_s
    stdout, returncode, err_tail = _run(
        argv, env, is_interactive, deadline, str(command), exec_config.get("installHint")
    )
    if returncode != 0:
        shown = f":\n{err_tail}" if err_tail else " (its stderr is above)"
        raise ExecPluginError(f"exec: plugin {command} failed with exit code {returncode}{shown}")
    try:
        answer = json.loads(stdout)
    except ValueError as exc:
        raise ExecPluginError(f"exec: decoding the plugin's stdout: {exc}") from exc
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
        raise ExecPluginError("exec: the plugin did not print an ExecCredential")
    if answer.get("apiVersion") != api_version:
        raise ExecPluginError(
            f"exec plugin is configured to use API version {api_version}, "
            f"plugin returned version {answer.get('apiVersion')}"
        )
    status = answer.get("status")
    if not isinstance(status, dict):
        raise ExecPluginError("exec plugin didn't return a status field")
    if not (status.get("token") or status.get("clientCertificateData") or status.get("clientKeyData")):
        raise ExecPluginError("exec plugin didn't return a token or cert/key pair")
    if bool(status.get("clientCertificateData")) != bool(status.get("clientKeyData")):
        raise ExecPluginError("exec plugin returned only certificate or key, not both")
    if status.get("clientCertificateData"):
        _check_pair(str(command), str(status["clientCertificateData"]), str(status["clientKeyData"]))
    return status


def _check_pair(command: str, cert: str, key: str) -> None:
    """A certificate and key that do not load are refused here, naming the plugin, as client-go's
    ``tls.X509KeyPair`` refuses them after the run ("failed parsing client key/certificate", exec.go:505-520
    @ v0.36.3), not at the first TLS handshake."""
    with tempfile.TemporaryDirectory(prefix="kubetune-exec-") as folder:
        cert_file, key_file = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
        for file, data in ((cert_file, cert), (key_file, key)):
            with open(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
                f.write(data)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ExecPluginError(f"exec: plugin {command}: failed parsing client key/certificate: {exc}") from exc


class _Reader(threading.Thread):
    """Reads one of the plugin's pipes to its end: stdout whole; stderr relayed to ``sys.stderr`` chunk by
    chunk (a notebook's cell, pytest's capture) with its last :data:`STDERR_TAIL` bytes kept for the error."""

    def __init__(self, pipe: IO[bytes], relay: bool) -> None:
        super().__init__(daemon=True, name="kubetune-exec-plugin-pipe")
        self.pipe, self.relay, self.data = pipe, relay, bytearray()

    def run(self) -> None:
        while chunk := os.read(self.pipe.fileno(), 65536):
            self.data += chunk
            if self.relay:
                del self.data[: max(0, len(self.data) - STDERR_TAIL)]
                stream = sys.stderr
                if stream is not None:
                    try:
                        stream.write(chunk.decode("utf-8", "replace"))
                        stream.flush()
                    except (OSError, ValueError):
                        pass  # a closed stream: the tail is still kept for the error


def _run(
    argv: list[str], env: dict[str, str], is_interactive: bool, deadline: float, command: str, hint: Any
) -> tuple[bytes, int, str]:
    """Run the plugin: its stdout, exit code and its stderr's tail (empty when it wrote to the terminal).

    The plugin's stderr is the caller's terminal when ``sys.stderr`` is one (client-go's os.Stderr,
    exec.go:212-213, :459-463 @ v0.36.3).  Otherwise (ipykernel, whose fd 2 is the kernel's own log and
    whose ``sys.stderr`` is the cell; a service's captured stream) it is piped and each chunk relayed to
    ``sys.stderr``, so a device-code prompt reaches the user wherever they read.

    A non-interactive plugin runs in its own session so that the deadline kills its whole process group (a
    shell wrapper's children too); an interactive one stays in the terminal's foreground group, where it can
    read the terminal, and only it is killed."""
    terminal = _is_terminal(sys.stderr)
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=None if is_interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=sys.stderr.fileno() if terminal and sys.stderr is not None else subprocess.PIPE,
            start_new_session=not is_interactive,
        )
    except FileNotFoundError as exc:
        raise ExecPluginError(f"exec: executable {command} not found" + (f"\n\n{hint}" if hint else "")) from exc
    assert proc.stdout is not None
    out = _Reader(proc.stdout, relay=False)
    err = _Reader(proc.stderr, relay=True) if proc.stderr is not None else None
    for reader in (out, err):
        if reader is not None:
            reader.start()
    end = time.monotonic() + deadline
    try:
        out.join(deadline)
        returncode = proc.wait(max(0.0, end - time.monotonic())) if not out.is_alive() else None
    except subprocess.TimeoutExpired:
        returncode = None
    if returncode is None:
        exited = proc.poll() is not None
        try:
            if is_interactive:
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)  # the session's group: pgid == the plugin's pid
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        _close(proc, out, err)
        why = "exited, but a child it started kept its stdout open" if exited else "did not finish"
        raise ExecPluginError(f"exec: plugin {command} {why} within {deadline:g} s and was killed")
    _close(proc, out, err)
    tail = bytes(err.data).decode("utf-8", "replace").strip() if err is not None else ""
    return bytes(out.data), returncode, tail


def _close(proc: subprocess.Popen[bytes], *readers: _Reader | None) -> None:
    """Close the plugin's pipes once their readers are done (a second at most: the plugin is gone, and a
    child still holding a pipe leaves that one to the daemon reader rather than closed under it)."""
    for reader in readers:
        if reader is not None:
            reader.join(1.0)
            if not reader.is_alive():
                reader.pipe.close()
