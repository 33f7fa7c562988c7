"""Kubeconfig files read once, with kubectl's rules: the one loader of the operator, the CLI and the terminal commands.

kubectl (client-go's ``tools/clientcmd/loader.go`` @ v0.36.3) picks and merges files like this:

* ``--kubeconfig FILE`` (the explicit path) is read alone, unmerged, and must exist (loader.go:185-186,
  :208-212);
* otherwise every file of ``$KUBECONFIG`` (``filepath.SplitList``: split on ``os.pathsep``), in order,
  duplicates dropped (:164-168); without ``$KUBECONFIG``, ``~/.kube/config`` (:171-172);
* a missing file is skipped (:228-233), an empty one is an empty config (``Load``, :441-443), one that
  cannot be parsed is an error (:235-238);
* "The first file to set a particular map key wins and map key's value is never changed" (:190-194): a
  whole cluster, user or context entry comes from the first file that names it, none of its fields
  from a later file; ``current-context`` too comes from the first file that sets it.  (The code:
  the files merged last-to-first, :256-264, each merge replacing whole map entries and non-empty
  values with the later-merged file's, merge.go:25-29, and that result merged over the forward
  merge, :266-274.)
* relative paths inside a file are resolved against that file's folder (:195-196, ResolveLocalPaths
  :511-540): done here per entry (``_resolved``), so every reader gets absolute paths.

Only reading happens here (no credentials, no cluster contact, no ``kubernetes`` import), so
``kubetune render`` can ask for the context's namespace cheaply; ``kube.load_connection`` hands
the merged entries to the ``kubernetes`` package for credentials (exec plugins and all).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.safeyaml import InputError, read_documents

DEFAULT_FILE = "~/.kube/config"


class KubeconfigError(Exception):
    """A kubeconfig file kubectl would refuse too (an explicit file missing, one that cannot be parsed)."""


def kubeconfig_files(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The files kubectl reads, in precedence order (see the module docstring)."""
    if explicit:
        if not os.path.exists(explicit):
            raise KubeconfigError(f"kubeconfig {explicit}: no such file")
        return [explicit]
    env = os.environ if environ is None else environ
    listed = env.get("KUBECONFIG", "")
    if listed:
        return list(dict.fromkeys(p for p in listed.split(os.pathsep) if p))
    return [os.path.expanduser(DEFAULT_FILE)]


@dataclass(frozen=True)
class Entry:
    """One cluster, user or context entry and the file it came from (where its relative paths start)."""

    name: str
    value: Mapping[str, Any]
    file: str


@dataclass(frozen=True)
class Kubeconfig:
    """The merged view of the files, as kubectl sees it."""

    files: tuple[str, ...] = ()
    """The files actually read (missing ones skipped)."""
    current_context: str = ""
    clusters: Mapping[str, Entry] = field(default_factory=dict)
    users: Mapping[str, Entry] = field(default_factory=dict)
    contexts: Mapping[str, Entry] = field(default_factory=dict)

    @property
    def context(self) -> Mapping[str, Any]:
        """The current context's body (cluster, user, namespace); empty when unset or unknown."""
        entry = self.contexts.get(self.current_context)
        return entry.value if entry is not None else {}

    @property
    def namespace(self) -> str | None:
        """The current context's namespace, as kubectl's default for ``-n``."""
        value = self.context.get("namespace")
        return str(value) if value else None


_SECTIONS = {"clusters": "cluster", "users": "user", "contexts": "context"}


def read_kubeconfig(files: Sequence[str]) -> Kubeconfig:
    """Merge ``files`` in order, the first value winning (see the module docstring)."""
    read: list[str] = []
    current = ""
    merged: dict[str, dict[str, Entry]] = {section: {} for section in _SECTIONS}
    for name in files:
        if not os.path.exists(name):
            continue  # loader.go:228-233
        try:
            docs = read_documents(name)  # bounded like a manifest: a kubeconfig is YAML from anywhere too
        except InputError as exc:
            raise KubeconfigError(f"error loading config file {name!r}: {exc}") from exc
        doc = docs[0] if docs else None
        if doc is None:
            doc = {}  # an empty file is an empty config (loader.go:441-443)
        if not isinstance(doc, dict):
            raise KubeconfigError(f"error loading config file {name!r}: not a kubeconfig (a mapping)")
        read.append(name)
        current = current or str(doc.get("current-context") or "")
        for section, body in _SECTIONS.items():
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") is not None and isinstance(item.get(body) or {}, dict):
                    value = _resolved(section, item.get(body) or {}, name)
                    merged[section].setdefault(str(item["name"]), Entry(str(item["name"]), value, name))
    return Kubeconfig(tuple(read), current, merged["clusters"], merged["users"], merged["contexts"])


_FILE_FIELDS = {"clusters": ("certificate-authority",), "users": ("client-certificate", "client-key", "tokenFile")}


def _resolved(section: str, value: Mapping[str, Any], file: str) -> Mapping[str, Any]:
    """``value`` with its relative file paths made absolute against ``file``'s folder, as client-go's
    ResolveLocalPaths does for every entry of the merged config (loader.go:511-540): a cluster's
    certificate-authority; a user's client-certificate, client-key, tokenFile, and its exec command
    when that has a path separator (GetClusterFileReferences/GetAuthInfoFileReferences, :605-616).
    Done here, per entry, because the kubernetes package resolves a user's certificate and key against
    the CLUSTER's file (kube_config.py _load_cluster_info @ 37.0.3): wrong once they come from two files."""
    fields = _FILE_FIELDS.get(section)
    if not fields:
        return value
    base = os.path.abspath(os.path.dirname(file))
    out = dict(value)
    for key in fields:
        ref = out.get(key)
        if isinstance(ref, str) and ref and not os.path.isabs(ref):
            out[key] = os.path.join(base, ref)
    exec_ = out.get("exec")
    if section == "users" and isinstance(exec_, dict):
        command = exec_.get("command")
        if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
            out["exec"] = {**exec_, "command": os.path.join(base, command)}
    return out


def load_kubeconfig(explicit: str | None = None) -> Kubeconfig:
    """The kubeconfig kubectl would use: ``--kubeconfig`` alone, else ``$KUBECONFIG``'s files merged, else ~/.kube/config."""
    return read_kubeconfig(kubeconfig_files(explicit))


def kubeconfig_namespace(explicit: str | None = None) -> str:
    """The current context's namespace, "default" when none is set or nothing can be read."""
    try:
        return load_kubeconfig(explicit).namespace or "default"
    except KubeconfigError:
        return "default"


__all__ = ["Entry", "Kubeconfig", "KubeconfigError", "kubeconfig_files", "kubeconfig_namespace", "load_kubeconfig", "read_kubeconfig"]
