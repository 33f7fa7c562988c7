"""Running a kubeconfig ``exec`` credential plugin as kubectl does (kubetune's own runner).

kubernetes_asyncio's ``ExecProvider`` (config/exec_provider.py @ 36.1.0) pipes the plugin's stderr and shows
it only when the plugin fails (:76-100), so a login prompt (kubelogin's device code, an SSO URL) never
reaches the user; it sets ``spec.interactive`` from whether stdout is a terminal (:70, an AttributeError
when ``sys.stdout`` is None), ignores ``interactiveMode`` and ``provideClusterInfo`` (:38-58) and waits
for the plugin with no deadline (:85-93).  This runner follows client-go's exec authenticator instead
(k8s.io/client-go plugin/pkg/client/auth/exec/exec.go @ v0.36.3):

* the plugin's stderr is the caller's stderr (``stderr: os.Stderr``, :212-213; ``cmd.Stderr = a.stderr``,
  :459-463), always;
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
operator must not hold a reload thread forever behind a plugin that waits on a network.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, TextIO

EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension whose ``extension`` value is handed to the plugin as ``spec.cluster.config``."""
DEADLINE_S = 300.0
"""How long a plugin may run (a browser or device-code login included) before it is killed."""


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
    ``interactiveMode`` is taken as ``IfAvailable`` (the v1beta1 default; client-go's defaulting code was
    not read for this: a v1 kubeconfig must set it)."""
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
    is_interactive = interactive(exec_config.get("interactiveMode"))
    spec: dict[str, Any] = {"interactive": is_interactive}
    if exec_config.get("provideClusterInfo"):
        spec["cluster"] = exec_cluster(cluster)
    env = dict(os.environ)
    for item in exec_config.get("env") or []:
        env[str(item["name"])] = str(item["value"])
    env[EXEC_INFO_ENV] = json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "spec": spec})
    argv = [str(command), *(str(a) for a in exec_config.get("args") or [])]
    try:
        stderr: int | None = sys.stderr.fileno() if sys.stderr is not None else None
    except (AttributeError, ValueError, OSError):
        stderr = None  # inherit this process's fd 2, as client-go's os.Stderr
    deadline = DEADLINE_S if deadline_s is None else deadline_s
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=None if is_interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=deadline,
            check=False,
        )
    except FileNotFoundError as exc:
        hint = exec_config.get("installHint")
        raise ExecPluginError(f"exec: executable {command} not found" + (f"\n\n{hint}" if hint else "")) from exc
    except subprocess.TimeoutExpired:  # subprocess.run killed it
        raise ExecPluginError(f"exec: plugin {command} did not finish within {deadline:g} s and was killed") from None
    if done.returncode != 0:
        raise ExecPluginError(f"exec: plugin {command} failed with exit code {done.returncode} (its stderr is above)")
    try:
        answer = json.loads(done.stdout)
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
    return status
