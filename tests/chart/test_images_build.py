"""images/build.sh pushes exactly the references the chart pulls with `--set registry=...`.

Only the command lines are checked here (--dry-run): no container builder runs in CI. Building
and pushing the images needs docker buildx or podman and a registry (images/README.md)."""

from __future__ import annotations

import subprocess

from chartlib import ROOT, load_yaml, needs_helm, one, template, CHART

BUILD = ROOT / "images" / "build.sh"
REGISTRY = "registry.example.com/ml"


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, timeout=30, check=False)


def app_version() -> str:
    return str(load_yaml(CHART / "Chart.yaml")["appVersion"])


def test_docker_push_builds_a_multi_arch_operator_and_the_trainer_at_app_version() -> None:
    proc = build("--registry", REGISTRY, "--push", "--tool", "docker", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    operator, trainer = f"{REGISTRY}/operator:{app_version()}", f"{REGISTRY}/trainer:{app_version()}"
    [op_cmd] = [line for line in lines if line.startswith("+ docker buildx build") and operator in line]
    assert "--platform linux/amd64\\,linux/arm64" in op_cmd and "--push" in op_cmd and "images/operator/Dockerfile" in op_cmd
    [tr_cmd] = [line for line in lines if line.startswith("+ docker buildx build") and trainer in line]
    assert "--platform linux/amd64 " in tr_cmd and "images/trainer/Dockerfile" in tr_cmd


def test_podman_pushes_a_manifest_list() -> None:
    proc = build("--registry", REGISTRY + "/", "--push", "--tool", "podman", "--only", "operator", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    ref = f"{REGISTRY}/operator:{app_version()}"
    assert f"+ podman manifest push --all {ref} docker://{ref}" in proc.stdout
    assert "trainer" not in proc.stdout.replace("images/build.sh", "")


def test_bad_arguments_fail_with_a_message() -> None:
    for args, message in [((), "--registry is required"), (("--registry", "Bad Reg"), "is not a registry path"),
                          (("--registry", REGISTRY, "--tool", "nerdctl"), "--tool must be docker or podman")]:
        proc = build(*args, "--dry-run")
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


@needs_helm
def test_the_chart_pulls_what_the_script_pushes() -> None:
    objects = template("--set", f"registry={REGISTRY}")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"{REGISTRY}/operator:{app_version()}"
    assert f"--trainer-image={REGISTRY}/trainer:{app_version()}" in pod["containers"][0]["args"]
    test_pod = [o for o in objects if o["kind"] == "Pod"][0]
    assert test_pod["spec"]["containers"][0]["image"] == f"{REGISTRY}/operator:{app_version()}"
