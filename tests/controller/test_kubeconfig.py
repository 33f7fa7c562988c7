"""One kubeconfig loader with kubectl's rules, for `kubetune render`, `kubetune get` and the operator.

Issue 23: the CLI merged every file of KUBECONFIG while the operator's and the terminal commands'
loader read only the first, so `kubetune render` and `kubetune get` could pick different contexts
and namespaces. The oracle here is kubectl itself (the real binary, `kubectl config view --minify`),
reading the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from kubetune.cli import _kubeconfig_namespace
from kubetune.controller.kube import Kube, load_connection
from kubetune.controller.kubeconfig import KubeconfigError, kubeconfig_files, load_kubeconfig
from kubetune.terminal import Client

KUBECTL = Path(sys.executable).with_name("kubectl")


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **doc}), encoding="utf-8")
    return path


@pytest.fixture
def two_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A laptop's KUBECONFIG=a:b. a sets current-context, the cluster and the user; b adds the context
    (with a namespace) and names the same cluster and user again with other values, and another
    current-context: kubectl takes every one of those from the first file that sets it."""
    a = write(
        tmp_path / "a" / "config",
        {
            "current-context": "ml",
            "clusters": [
                {"name": "c", "cluster": {"server": "https://first.example:6443", "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "u", "user": {"token": "token-from-a"}}],
        },
    )
    b = write(
        tmp_path / "b" / "config",
        {
            "current-context": "other",
            "clusters": [
                {"name": "c", "cluster": {"server": "https://second.example:6443", "certificate-authority": "ca.crt"}}
            ],
            "users": [{"name": "u", "user": {"token": "token-from-b", "username": "ignored"}}],
            "contexts": [
                {"name": "ml", "context": {"cluster": "c", "user": "u", "namespace": "ml-team-b"}},
                {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "elsewhere"}},
            ],
        },
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(a), str(b), str(a), str(tmp_path / "missing")]))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return a, b


def kubectl_view() -> dict[str, Any]:
    """kubectl's own merge of $KUBECONFIG, reduced to the current context."""
    out = subprocess.run(
        [str(KUBECTL), "config", "view", "--minify", "--raw", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    return dict(json.loads(out.stdout))


def test_render_get_and_the_operator_pick_kubectls_context_from_several_files(two_files: tuple[Path, Path]) -> None:
    view = kubectl_view()
    context = view["contexts"][0]["context"]
    cluster, user = view["clusters"][0]["cluster"], view["users"][0]["user"]
    assert (view["current-context"], context["namespace"]) == ("ml", "ml-team-b")  # what kubectl says, first

    connection = load_connection()  # the operator and `kubetune get`/`watch` (terminal.Client)
    assert connection.server == cluster["server"] == "https://first.example:6443"
    assert connection.token == user["token"] == "token-from-a"
    assert connection.insecure and connection.ca_path is None  # a's cluster entry whole: b's CA is not mixed in
    assert connection.default_namespace == context["namespace"]
    again = connection.refreshed()  # how expiring credentials are reloaded: the same files, merged again
    assert (again.server, again.token, again.default_namespace) == (connection.server, connection.token, "ml-team-b")
    assert Client.from_kubeconfig().default_namespace == "ml-team-b"  # `kubetune get`
    assert _kubeconfig_namespace() == "ml-team-b"  # `kubetune render`


def test_files_are_listed_as_kubectl_lists_them(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    a, b = two_files
    assert kubeconfig_files() == [str(a), str(b), str(tmp_path / "missing")]  # duplicates dropped, order kept
    assert load_kubeconfig().files == (str(a), str(b))  # a missing file is skipped
    assert kubeconfig_files(str(b)) == [str(b)]  # --kubeconfig: that file alone, unmerged
    assert load_kubeconfig(str(b)).namespace == "elsewhere"
    with pytest.raises(KubeconfigError, match="no such file"):
        kubeconfig_files(str(tmp_path / "missing"))


def test_a_relative_path_starts_at_the_file_that_holds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "b" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("token-from-file\n", encoding="utf-8")
    a = write(
        tmp_path / "a" / "config",
        {"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]},
    )
    b = write(
        tmp_path / "b" / "config",
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://b.example"}}],
            "users": [{"name": "u", "user": {"tokenFile": "token"}}],
        },
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(a), str(b)]))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    conn = load_connection()
    assert conn.token_file == str(token)  # read again by the clients, kept a file as kubectl does
    assert Kube(conn).bearer() == "token-from-file"


def test_an_empty_file_is_an_empty_config_and_a_broken_one_an_error(
    tmp_path: Path, two_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_files
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.write_text("", encoding="utf-8")
    broken.write_text("clusters: [\n", encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(empty), str(a), str(b)]))
    assert load_connection().default_namespace == "ml-team-b"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(broken), str(a)]))
    with pytest.raises(KubeconfigError, match="broken"):
        load_kubeconfig()
    assert _kubeconfig_namespace() == "default"  # render needs no cluster: it falls back, as before


def test_a_users_relative_certificate_starts_at_the_users_file_not_the_clusters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster from file a, the user (client certificate and key, relative paths) from file b in
    another folder: kubectl reads b/client.crt and b/client.key (client-go tools/clientcmd/loader.go:511-540
    and :609-616 @ v0.36.3, each entry resolved against its own LocationOfOrigin).  The kubernetes
    package (kube_config.py _load_cluster_info @ 37.0.3), and kubernetes_asyncio alike (config/kube_config.py
    :436-458 @ 36.1.0), resolve a user's certificate against the CLUSTER's file (base_path =
    _get_base_path(self._cluster.path)), so the operator failed with "File does not
    exist: a/client.key", or, where a/ held files of those names, presented another identity."""
    import base64

    for rel, text in (
        ("a/ca.crt", "ca of a"),
        ("b/client.crt", "cert of b"),
        ("b/client.key", "key of b"),
        ("a/client.crt", "stray cert in a"),
        ("a/client.key", "stray key in a"),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    a = write(
        tmp_path / "a" / "config",
        {
            "current-context": "x",
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": "https://a.example", "certificate-authority": "ca.crt"}}],
        },
    )
    b = write(
        tmp_path / "b" / "config",
        {"users": [{"name": "u", "user": {"client-certificate": "client.crt", "client-key": "client.key"}}]},
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(a), str(b)]))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    out = subprocess.run(
        [str(KUBECTL), "config", "view", "--minify", "--raw", "--flatten", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    view = json.loads(out.stdout)
    user = view["users"][0]["user"]
    kubectl_reads = (
        base64.b64decode(user["client-certificate-data"]).decode(),
        base64.b64decode(user["client-key-data"]).decode(),
    )
    assert kubectl_reads == ("cert of b", "key of b")  # the oracle first

    connection = load_connection()
    assert connection.cert_path is not None and connection.key_path is not None and connection.ca_path is not None
    assert (
        Path(connection.cert_path).read_text(encoding="utf-8"),
        Path(connection.key_path).read_text(encoding="utf-8"),
    ) == kubectl_reads
    assert (
        Path(connection.ca_path).read_text(encoding="utf-8")
        == base64.b64decode(view["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    )


def test_in_a_pod_the_kubeconfig_wins_and_the_serviceaccount_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubectl (client-go tools/clientcmd/merged_client_builder.go:96-124 @ v0.36.3) uses the merged
    kubeconfig, and the in-cluster ServiceAccount only when that config is empty. In a notebook pod
    with a ~/.kube/config the SDK and `kubetune get` used the pod's ServiceAccount instead (another
    identity and namespace than kubectl's, and than docs/sdk.md says); and with $KUBECONFIG naming no
    existing file they failed instead of falling back to the ServiceAccount."""
    from kubetune.controller import kube

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token", encoding="utf-8")
    (sa / "namespace").write_text("pod-ns", encoding="utf-8")
    monkeypatch.setattr(kube, "SA_TOKEN", str(sa / "token"))
    monkeypatch.setattr(kube, "SA_NAMESPACE", str(sa / "namespace"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    write(
        tmp_path / "home" / ".kube" / "config",
        {
            "current-context": "mine",
            "contexts": [{"name": "mine", "context": {"cluster": "c", "user": "u", "namespace": "my-team"}}],
            "clusters": [{"name": "c", "cluster": {"server": "https://laptop-cluster.example"}}],
            "users": [{"name": "u", "user": {"token": "my-token"}}],
        },
    )
    mine = load_connection()
    assert (mine.server, mine.token, mine.default_namespace) == (
        "https://laptop-cluster.example",
        "my-token",
        "my-team",
    )

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    pod = load_connection()
    assert (pod.server, pod.token_file, pod.default_namespace) == ("https://10.96.0.1:443", str(sa / "token"), "pod-ns")
