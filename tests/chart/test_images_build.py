"""images/build.sh pushes exactly the references the chart pulls with `--set registry=...`.

Only the command lines are checked here (--dry-run): no container builder runs in CI. Building
and pushing the images needs docker buildx or podman and a registry (images/README.md)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.chartlib import ROOT, load_yaml, needs_helm, one, template, CHART
from tests.support.kt_time import scaled

BUILD = ROOT / "images" / "build.sh"
REGISTRY = "registry.example.com/ml"
DEVEL, BASE, PY = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


def build(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD), *args], capture_output=True, text=True, timeout=scaled(30), check=False, env=env
    )


def digests(tmp_path: Path, *, base: str = BASE) -> Path:
    """A base-images.lock with the committed file's tags and the given digests."""
    lines = []
    for line in (ROOT / "images" / "base-images.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, ref = line.split()[:2]
            lines.append(f"{name} {ref} {dict(CUDA_DEVEL_DIGEST=DEVEL, CUDA_BASE_DIGEST=base, PYTHON_DIGEST=PY)[name]}")
    path = tmp_path / "base-images.lock"
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_tools(tmp_path: Path, script: str, *names: str) -> dict[str, str]:
    """PATH with stand-ins for docker/podman/skopeo that log their argv (nothing is built)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text(f"#!/usr/bin/env bash\necho \"{name} $*\" >> {tmp_path}/calls\n{script}\n")
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def app_version() -> str:
    return str(load_yaml(CHART / "Chart.yaml")["appVersion"])


def test_docker_push_builds_a_multi_arch_operator_and_the_trainer_at_app_version() -> None:
    proc = build("--registry", REGISTRY, "--push", "--tool", "docker", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    operator, trainer = f"{REGISTRY}/operator:{app_version()}", f"{REGISTRY}/trainer:{app_version()}"
    [op_cmd] = [line for line in lines if line.startswith("+ docker buildx build") and operator in line]
    assert (
        "--platform linux/amd64\\,linux/arm64" in op_cmd
        and "--push" in op_cmd
        and "images/operator/Dockerfile" in op_cmd
    )
    [tr_cmd] = [line for line in lines if line.startswith("+ docker buildx build") and trainer in line]
    assert "--platform linux/amd64 " in tr_cmd and "images/trainer/Dockerfile" in tr_cmd


def test_local_builds_name_their_platform_so_an_arm_machine_still_builds_an_amd64_trainer(tmp_path: Path) -> None:
    for tool in ("docker", "podman"):
        proc = build("--registry", REGISTRY, "--tool", tool, "--dry-run", "--base-digests", str(digests(tmp_path)))
        assert proc.returncode == 0, proc.stderr
        cmds = [l for l in proc.stdout.splitlines() if l.startswith(f"+ {tool} ") and " build" in l]
        assert len(cmds) == 2 and all("--platform linux/amd64 " in c for c in cmds), cmds
        [trainer] = [c for c in cmds if "images/trainer/Dockerfile" in c]
        assert f"--build-arg CUDA_DEVEL_DIGEST={DEVEL} --build-arg CUDA_BASE_DIGEST={BASE}" in trainer


def test_a_build_from_an_unpinned_base_is_refused_before_anything_runs(tmp_path: Path) -> None:
    env = fake_tools(tmp_path, "exit 0", "docker")
    proc = build(
        "--registry",
        REGISTRY,
        "--tool",
        "docker",
        "--only",
        "trainer",
        "--base-digests",
        str(digests(tmp_path, base="")),
        env=env,
    )
    assert proc.returncode == 2
    assert "CUDA_BASE_DIGEST (nvidia/cuda:" in proc.stderr and "--refresh-base-digests" in proc.stderr
    assert not (tmp_path / "calls").exists()


def test_push_prints_the_digests_it_pushed(tmp_path: Path) -> None:
    # docker buildx writes --metadata-file; the stand-in writes what buildx writes there.
    script = (
        'while [ $# -gt 0 ]; do [ "$1" = --metadata-file ] && printf \'{"containerimage.digest": '
        '"sha256:%064d"}\' 7 > "$2"; shift; done'
    )
    env = fake_tools(tmp_path, script, "docker")
    proc = build(
        "--registry", REGISTRY, "--tool", "docker", "--push", "--base-digests", str(digests(tmp_path)), env=env
    )
    assert proc.returncode == 0, proc.stderr
    version = app_version()
    assert f"pushed: {REGISTRY}/operator:{version}@sha256:{7:064d}" in proc.stdout
    assert f"pushed: {REGISTRY}/trainer:{version}@sha256:{7:064d}" in proc.stdout


def test_refresh_writes_each_tags_current_digest(tmp_path: Path) -> None:
    # skopeo inspect --raw prints the manifest (list); its digest is the sha256 of those bytes.
    import hashlib

    env = fake_tools(tmp_path, 'printf "manifest of %s" "$3"', "skopeo")
    lock = tmp_path / "base-images.lock"
    committed = (ROOT / "images" / "base-images.lock").read_text()
    lock.write_text(committed)
    proc = build("--refresh-base-digests", "--tool", "docker", "--base-digests", str(lock), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in lock.read_text().splitlines() if l and not l.startswith("#")]
    assert len(lines) == 3 and lock.read_text().startswith(committed.split("CUDA_DEVEL_DIGEST")[0])  # comments kept
    for line in lines:
        name, ref, digest = line.split()
        assert digest == "sha256:" + hashlib.sha256(f"manifest of docker://{ref}".encode()).hexdigest(), line


def test_podman_pushes_a_manifest_list() -> None:
    proc = build("--registry", REGISTRY + "/", "--push", "--tool", "podman", "--only", "operator", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    ref = f"{REGISTRY}/operator:{app_version()}"
    lines = proc.stdout.splitlines()
    push = [
        i
        for i, l in enumerate(lines)
        if l.startswith("+ podman manifest push --all ") and l.endswith(f" {ref} docker://{ref}")
    ]
    # A re-run must not append to the list the last run left: it is removed before the build.
    remove = lines.index(f"+ podman manifest rm {ref}")
    build_at = [i for i, l in enumerate(lines) if l.startswith("+ podman build") and f"--manifest {ref}" in l]
    assert push and build_at and remove < build_at[0] < push[0], proc.stdout
    assert "trainer" not in proc.stdout.replace("images/build.sh", "")


def test_bad_arguments_fail_with_a_message() -> None:
    for args, message in [
        ((), "--registry is required"),
        (("--registry", "Bad Reg"), "is not a registry path"),
        (("--registry", REGISTRY, "--tool", "nerdctl"), "--tool must be docker or podman"),
    ]:
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
