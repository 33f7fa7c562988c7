"""The operator Deployment, Service, ServiceMonitor and helm-test Pod, as a user would install them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.chartlib import NAMESPACE, RELEASE, ci_objects, default_objects, find, needs_helm, one, template  # noqa: F401 (fixtures)

pytestmark = needs_helm


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]


def test_one_replica_replaced_with_recreate(default_objects: list[dict[str, Any]]) -> None:
    spec = one(default_objects, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update would run two operators at once"


def test_default_is_cluster_wide_with_trainer_image_and_no_queue(default_objects: list[dict[str, Any]]) -> None:
    c = container(default_objects)
    assert c["command"] == ["kubetune"]
    args = c["args"]
    assert args[0] == "operator"
    assert "--all-namespaces" in args
    assert flag_values(args, "--namespace") == []
    assert flag_values(args, "--default-queue") == []
    assert flag_values(args, "--metrics-port") == ["8080"]
    assert flag_values(args, "--health-port") == ["8081"]


def test_namespaced_mode_flags(ci_objects: list[dict[str, Any]]) -> None:
    args = container(ci_objects)["args"]
    assert "--all-namespaces" not in args
    assert flag_values(args, "--namespace") == ["ml-team-a", "ml-team-b"]
    assert flag_values(args, "--default-queue") == ["gpu-queue"]
    assert flag_values(args, "--trainer-image") == ["registry.example.com/kubetune/trainer:0.1.0-cu124"]
    assert flag_values(args, "--metrics-port") == ["9090"]
    assert flag_values(args, "--health-port") == ["9091"]


@pytest.mark.parametrize("fixture", ["default_objects", "ci_objects"])
def test_rendered_args_parse_with_the_real_cli(fixture: str, request: pytest.FixtureRequest) -> None:
    """Every flag the chart passes exists in `kubetune operator` (a typo would crash-loop the pod)."""
    try:
        from kubetune.cli import build_parser

        parser = build_parser()
    except ImportError as exc:  # the CLI imports the renderer and localrun, built concurrently
        pytest.skip(f"kubetune.cli cannot build its parser yet: {exc}")
    args = container(request.getfixturevalue(fixture))["args"]
    parsed = parser.parse_args(args)
    assert parsed.command == "operator"
    assert parsed.trainer_image == flag_values(args, "--trainer-image")[0]


@pytest.mark.parametrize("fixture", ["default_objects", "ci_objects"])
def test_probes_use_the_health_port(fixture: str, request: pytest.FixtureRequest) -> None:
    c = container(request.getfixturevalue(fixture))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == int(flag_values(c["args"], "--health-port")[0])
    assert ports["metrics"] == int(flag_values(c["args"], "--metrics-port")[0])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def assert_restricted(pod: dict[str, Any]) -> None:
    """The 'restricted' Pod Security Standard, plus a read-only root filesystem."""
    psc = pod.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert psc.get("runAsUser", 1) != 0
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "privileged" not in sc
        assert "resources" in c and c["resources"]["limits"]["memory"]


def test_operator_pod_is_restricted(default_objects: list[dict[str, Any]]) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert_restricted(pod)
    # the only writable path
    assert container(default_objects)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_service_selects_the_operator_pod(default_objects: list[dict[str, Any]]) -> None:
    deploy = one(default_objects, "Deployment")
    svc = one(default_objects, "Service")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    c_ports = {p["name"] for p in container(default_objects)["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == c_ports == {"metrics", "health", "progress"}


def test_service_monitor_scrapes_the_metrics_port(ci_objects: list[dict[str, Any]]) -> None:
    sm = one(ci_objects, "ServiceMonitor")
    svc = one(ci_objects, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in svc["spec"]["ports"]


@pytest.mark.parametrize("fixture", ["default_objects", "ci_objects"])
def test_helm_test_pod_checks_health_through_the_service(fixture: str, request: pytest.FixtureRequest) -> None:
    objects = request.getfixturevalue(fixture)
    [pod] = [o for o in find(objects, "Pod") if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    svc = one(objects, "Service")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    script = pod["spec"]["containers"][0]["command"][-1]
    base = f"http://{svc['metadata']['name']}.{NAMESPACE}.svc"
    assert f"{base}:{ports['health']}/healthz" in script
    assert f"{base}:{ports['metrics']}/metrics" in script
    assert pod["spec"]["restartPolicy"] == "Never"
    # The test pod must not become a Service endpoint itself.
    assert not svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert_restricted(pod["spec"])
    compile(script, "helm-test", "exec")


def test_helm_test_can_be_disabled() -> None:
    assert find(template("--set", "helmTest.enabled=false"), "Pod") == []


def test_existing_service_account() -> None:
    objects = template("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=platform-sa")
    assert find(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"
    assert one(objects, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "platform-sa", "namespace": NAMESPACE}
    ]


def test_release_name_prefix() -> None:
    deploy = one(template(), "Deployment")
    assert deploy["metadata"]["name"] == f"{RELEASE}-kubetune"


@pytest.mark.parametrize(
    ("fixture", "kind"), [("default_objects", "ClusterKopfPeering"), ("ci_objects", "KopfPeering")]
)
def test_peering_object_is_the_one_the_operator_uses(
    fixture: str, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf with a peering name requires that peering: a different name would leave it unannounced."""
    from kubetune.cli import build_parser
    from kubetune.controller import main

    objects = request.getfixturevalue(fixture)
    monkeypatch.setattr(main, "load_connection", lambda: None)  # no cluster credentials needed here
    config = main.config_from_args(build_parser().parse_args(container(objects)["args"]))
    peerings = find(objects, kind)
    assert peerings and {p["metadata"]["name"] for p in peerings} == {config.peering}
    if kind == "KopfPeering":
        assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(config.namespaces)
    else:
        assert config.namespaces == ()


def test_the_progress_intake_is_served_and_named_to_the_pods(default_objects: list[dict[str, Any]]) -> None:
    """--progress-url points at the progress Service, which reaches the --progress-port container port."""
    c = container(default_objects)
    assert flag_values(c["args"], "--progress-port") == ["8082"]
    [url] = flag_values(c["args"], "--progress-url")
    service = one(default_objects, "Service")
    port = next(p for p in service["spec"]["ports"] if p["name"] == "progress")
    assert url == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}/v1/progress"
    assert {"name": "progress", "containerPort": 8082, "protocol": "TCP"} in c["ports"] and port[
        "targetPort"
    ] == "progress"
    assert service["spec"]["selector"] == one(default_objects, "Deployment")["spec"]["selector"]["matchLabels"]


def test_the_push_transport_can_be_turned_off() -> None:
    objects = template("--set", "progress.push=false")
    assert not [a for a in container(objects)["args"] if a.startswith("--progress")]
    assert {p["name"] for p in one(objects, "Service")["spec"]["ports"]} == {"metrics", "health"}
    assert {p["name"] for p in container(objects)["ports"]} == {"metrics", "health"}
