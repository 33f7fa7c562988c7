"""An MPIJob's training over a real ``sshd`` and a real ``mpirun`` (Open MPI), on loopback.

What a cluster does, reproduced with the real programs:

* every Worker pod runs Debian's ``sshd`` as the image user (not root) with the
  image's own ``images/trainer/ssh/sshd_config`` (port 2222, replaced here by a
  free port, listening on 127.0.0.1 only);
* mpi-operator v2beta1 mounts its ``<job>-ssh`` Secret at ``sshAuthMountPath``
  (pkg/controller/mpi_job_controller.go ``setupSSHOnPod``: items id_rsa,
  id_rsa.pub, authorized_keys; no DefaultMode unless the path is /root/.ssh, so
  0644), which is laid out here as the kubelet writes a Secret volume: files in a
  timestamped folder behind ``..data``, owned by root and the pod's fsGroup, and
  nothing else in ``~/.ssh`` (no config, no known_hosts);
* the launcher gets mpi-operator's Open MPI environment (``ompiEnvVars``) and
  runs the rendered launcher command verbatim, with the ssh client settings of
  ``images/trainer/ssh/kubetune.conf`` (in the image they are in
  /etc/ssh/ssh_config.d/, passed here with ``ssh -F``).

Two "hosts" in the hostfile, ``127.0.0.1`` and ``127.1`` (the same address in
the short inet_aton form), with ``if_base_do_not_resolve`` so Open MPI treats
them as two remote nodes and reaches both through ssh, as the launcher pod does.

Needs root (to create the unprivileged test user and give the key files the
kubelet's ownership), ``sshd`` and ``mpirun``: ``.ci/install-tools`` installs them.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.api import contract
from kubetune.trainer.tiny import TinyAssets, tiny_job
from trainerlib import free_port, make_pod, progress_lines

pytestmark = [pytest.mark.slow, pytest.mark.train]

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = REPO / "images" / "trainer" / "ssh"
USER = "kubetune-mpitest"
TOTAL_STEPS = 40
IMAGE_HOME = "/home/kubetune"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create an unprivileged user and lay out the Secret volume as the kubelet does"
    for tool in ("/usr/sbin/sshd", "mpirun", "ssh", "ssh-keygen", "useradd", "usermod", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash .ci/install-tools)"
    return None


def _ensure_user(home: Path) -> pwd.struct_passwd:
    """The image user's stand-in, whose home (where ssh looks for ~/.ssh) is this test's folder."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "--home-dir", str(home), USER], check=True)
    else:
        subprocess.run(["usermod", "--home", str(home), USER], check=True)
    return pwd.getpwnam(USER)


def _secret_volume(ssh_dir: Path, key: Path, gid: int) -> None:
    """~/.ssh exactly as the kubelet mounts mpi-operator's Secret (AtomicWriter layout)."""
    ssh_dir.mkdir()
    data = ssh_dir / "..2026_11_30_12_00_00.000000001"
    data.mkdir()
    files = {"id_rsa": key.read_bytes(), "id_rsa.pub": key.with_suffix(".pub").read_bytes()}
    files["authorized_keys"] = files["id_rsa.pub"]
    for name, content in files.items():
        (data / name).write_bytes(content)
        os.chmod(data / name, 0o644)
        os.chown(data / name, 0, gid)
    (ssh_dir / "..data").symlink_to(data.name)
    for name in files:
        (ssh_dir / name).symlink_to(f"..data/{name}")
    for p in (data, ssh_dir / "..data", *(ssh_dir / n for n in files)):
        os.lchown(p, 0, gid)
    os.chmod(data, 0o755)
    os.chown(ssh_dir, 0, gid)
    os.chmod(ssh_dir, 0o1777)  # a Secret volume's tmpfs root


def _image_file(name: str, home: Path, port: int) -> str:
    text = (SSH_DIR / name).read_text(encoding="utf-8").replace(IMAGE_HOME, str(home))
    return re.sub(r"(?m)^(\s*)Port 2222$", rf"\g<1>Port {port}", text)


def _hidden_interpreter_dirs() -> tuple[Path, Path] | None:
    """(private dir, its child on the way to the interpreter) when the Python in use sits
    under a folder other users cannot enter (a pyenv under /root on CI machines)."""
    real = Path(os.path.realpath(sys.executable))
    for parent in reversed(real.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent, real.parents[len(real.parents) - len(parent.parts) - 1]
    return None


def _as_user(user: pwd.struct_passwd, work: Path) -> list[str]:
    """Run as the unprivileged user; when this Python lives in a private folder, show the user
    that one interpreter folder through a private mount namespace (nothing on the machine changes)."""
    setpriv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    hidden = _hidden_interpreter_dirs()
    if hidden is None:
        return setpriv
    private, child = hidden
    stash = work / "interpreter"
    stash.mkdir(exist_ok=True)
    script = (
        f'mount --bind "{child}" "{stash}" && mount -t tmpfs -o mode=0755 tmpfs "{private}" '
        f'&& mkdir -p "{child}" && mount --bind "{stash}" "{child}" && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *setpriv]


@pytest.fixture
def mpi_cluster() -> Iterator[tuple[pwd.struct_passwd, Path, int, Path]]:
    """(user, workspace, ssh port, sshd log): one non-root sshd serving both loopback "hosts"."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="kubetune-mpi-"))
    os.chmod(work, 0o755)
    home = work / "home"
    home.mkdir()
    user = _ensure_user(home)
    os.chown(home, user.pw_uid, user.pw_gid)
    key = work / "key"
    # mpi-operator's key: ECDSA P-521 in PEM "EC PRIVATE KEY" form (newSSHAuthSecret).
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "521", "-m", "PEM", "-N", "", "-f", str(key)], check=True)
    _secret_volume(home / ".ssh", key, user.pw_gid)
    port = free_port()
    (work / "sshd_config").write_text(_image_file("sshd_config", home, port) + "ListenAddress 127.0.0.1\n")
    (work / "ssh_config").write_text(_image_file("kubetune.conf", home, port))
    log = work / "sshd.log"
    sshd = subprocess.Popen(
        [*_as_user(user, work), "/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env={"PATH": "/usr/sbin:/usr/bin:/bin"},
    )
    try:
        for _ in range(100):
            if "Server listening" in log.read_text() or sshd.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"])
        assert sshd.poll() is None, log.read_text()
        yield user, work, port, log
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def _launcher_container(workload: dict) -> dict:
    return workload["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]


def test_the_image_ssh_settings_survive_the_secret_mount() -> None:
    dockerfile = (REPO / "images" / "trainer" / "Dockerfile").read_text()
    assert "COPY images/trainer/ssh/kubetune.conf /etc/ssh/ssh_config.d/kubetune.conf" in dockerfile
    assert ".ssh/config" not in dockerfile  # would be hidden by sshAuthMountPath
    conf = (SSH_DIR / "kubetune.conf").read_text()
    assert re.search(r"(?m)^\s*Port 2222$", conf) and re.search(r"(?m)^\s*StrictHostKeyChecking no$", conf)
    assert "Port 2222" in (SSH_DIR / "sshd_config").read_text()


def test_tiny_training_runs_through_the_rendered_mpirun_over_ssh(
    mpi_cluster: tuple[pwd.struct_passwd, Path, int, Path], tiny_assets: TinyAssets
) -> None:
    user, work, _port, sshd_log = mpi_cluster
    # The tiny assets live in root's private pytest folder: the unprivileged user gets a copy.
    shutil.copytree(tiny_assets.root, work / "assets", ignore=shutil.ignore_patterns("env"))
    assets = TinyAssets(work / "assets", work / "assets" / "models", work / "assets" / "datasets", tiny_assets.model_path, tiny_assets.dataset_path)
    master_port = free_port()
    manifest = tiny_job("mpi-ssh", assets, max_steps=TOTAL_STEPS, save_steps=1000)
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 1}  # zeroStage > 0 needs GPUs in the spec
    manifest["spec"]["distributed"] = {"backend": "mpijob", "zeroStage": 2, "masterPort": master_port}
    # Open MPI's orted waits the whole odls_base_sigkill_timeout (grace - 15 s) after its SIGTERM
    # before it reports the ranks gone, even when they exited at once: keep it short here.
    manifest["spec"]["runPolicy"] = {"terminationGracePeriodSeconds": 45}
    pod_root = work / "pod"
    pod = make_pod(pod_root, manifest, assets, extensions=work / "torch_extensions")
    # The worker processes write their outputs and caches as the image user.
    (work / "torch_extensions").mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(work / "assets"), str(pod_root), str(work / "torch_extensions")], check=True)

    from kubetune.render import render  # noqa: PLC0415

    assert pod.files  # rendered
    rendered_launcher = _launcher_container(render(pod.job).workload)
    argv = list(rendered_launcher["command"])
    assert argv[:4] == ["python", "-m", "kubetune.trainer.mpilaunch", "mpirun"]
    hostfile = work / "hostfile"
    # As mpi-operator writes it (newConfigMap), with the two loopback "hosts".
    hostfile.write_text("127.0.0.1 slots=1\n127.1 slots=1\n")
    os.chmod(hostfile, 0o444)
    env = {
        **pod.env,
        "HOME": str(pod_root / "scratch"),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        # mpi-operator's launcher environment (ompiEnvVars, launcherEnvVars).
        "OMPI_MCA_orte_keep_fqdn_hostnames": "true",
        "OMPI_MCA_orte_default_hostfile": str(hostfile),
        "OMPI_MCA_plm_rsh_args": f"-F {work / 'ssh_config'} -o ConnectionAttempts=10",
        "K_MPI_JOB_ROLE": "launcher",
        # Loopback only: make Open MPI treat 127.0.0.1 and 127.1 as remote nodes.
        "OMPI_MCA_if_base_do_not_resolve": "1",
    }
    env.pop("MASTER_ADDR", None)
    (pod_root / "scratch").mkdir(exist_ok=True)
    subprocess.run(["chown", f"{user.pw_uid}:{user.pw_gid}", str(pod_root / "scratch")], check=True)
    # The SIGTERM-to-mpirun stop checkpoint is not asserted here: in one CI run the ranks kept
    # training after mpirun's SIGTERM until Open MPI killed them, leaving no checkpoint (a known
    # gap, see the closing note of issue 9). This run checks the launch path end to end.
    # Two ranks write one stream: a multi-byte character can be split between their writes.
    result = subprocess.run([*_as_user(user, work), *argv], env=env, cwd=work, capture_output=True, text=True, errors="replace", timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:] + "\nsshd:\n" + sshd_log.read_text()[-2000:]
    assert "rank 0 on 127.0.0.1 (2 hosts)" in out  # MASTER_ADDR from the hostfile
    # Both ranks came in through sshd with the Secret's key, as the image user.
    accepted = re.findall(rf"Accepted publickey for {USER} from 127\.0\.0\.1", sshd_log.read_text())
    assert len(accepted) >= 2, sshd_log.read_text()
    assert "world size: 2" in out
    updates = progress_lines(out)
    assert updates[-1]["step"] == TOTAL_STEPS
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outcome"] == "Succeeded" and record["stages"]["train"]["launcher"] == "mpirun"
    assert record["stages"]["train"]["processes"] == 2
