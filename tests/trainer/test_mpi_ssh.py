"""An MPIJob's training over a real ``sshd`` and a real ``mpirun`` (Open MPI), on loopback.

What a cluster does, reproduced with the real programs:

* every Worker pod runs the rendered worker command (kubetune's PID 1 wrapper
  with Debian's ``sshd`` as its child) as the image user (not root) with the
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

Deletion mid-training (suspend, preemption): the kubelet sends SIGTERM to the
launcher's and the worker's PID 1 at the same moment; the ranks must write one
stop checkpoint together, and the restarted job must resume from it.

Needs root (to create the unprivileged test user and give the key files the
kubelet's ownership), ``sshd`` and ``mpirun``: ``.ci/install-tools`` installs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubetune.api import contract
from kubetune.render.backends.mpijob import SSHD_CONFIG
from kubetune.trainer import checkpoints
from kubetune.trainer.tiny import TinyAssets, tiny_job
from tests.support.trainerlib import free_port, make_pod, progress_lines
from tests.support.kt_time import scaled

# xdist_group: one worker runs them all (they share a system user and its sshd; pytest -n with --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.train, pytest.mark.xdist_group("mpi-ssh")]

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = REPO / "images" / "trainer" / "ssh"
# One system user per checkout: two suites on one machine (two clones) each own theirs, or one
# suite's `usermod` fails while the other's sshd runs as that user.
USER = "kt-mpi-" + hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
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
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "--home-dir", str(home), USER], check=True
        )
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


@dataclass
class Cluster:
    user: pwd.struct_passwd
    work: Path
    sshd_config: Path
    sshd_log: Path
    procs: list[subprocess.Popen[str]]

    def start_worker(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """The worker pod's container: its rendered command, sshd pointed at this test's config."""
        argv = [str(self.sshd_config) if a == SSHD_CONFIG else a for a in command]
        proc = subprocess.Popen(
            [*_as_user(self.user, self.work), *argv],
            stdout=open(self.sshd_log, "a"),
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + scaled(30)
        while self.sshd_log.read_text().count("Server listening") < len(self.procs) and proc.poll() is None:
            assert time.monotonic() < deadline, self.sshd_log.read_text()
            time.sleep(0.1)
        assert proc.poll() is None, self.sshd_log.read_text()
        return proc


@pytest.fixture
def mpi_cluster() -> Iterator[Cluster]:
    """One unprivileged "worker" serving both loopback hosts, started by the test from the rendered command."""
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
    log.write_text("")
    cluster = Cluster(user, work, work / "sshd_config", log, [])
    try:
        yield cluster
    finally:
        for proc in cluster.procs:
            if proc.poll() is None:
                proc.kill()  # the unprivileged sshd child then loses nothing but the test's port
                proc.wait(timeout=scaled(10))
        subprocess.run(["pkill", "-KILL", "-u", USER], check=False)
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


def _worker_container(workload: dict) -> dict:
    return workload["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]


@pytest.mark.timeout(600)  # two mpirun trainings over ssh, the first killed mid-way (its own deadline: 400 s)
def test_deleted_mid_training_it_checkpoints_over_mpirun_and_resumes(
    mpi_cluster: Cluster, tiny_assets: TinyAssets, torch_extensions: Path
) -> None:
    cluster = mpi_cluster
    user, work = cluster.user, cluster.work
    # The tiny assets live in root's private pytest folder: the unprivileged user gets a copy.
    shutil.copytree(tiny_assets.root, work / "assets", ignore=shutil.ignore_patterns("env"))
    assets = TinyAssets(
        work / "assets",
        work / "assets" / "models",
        work / "assets" / "datasets",
        tiny_assets.model_path,
        tiny_assets.dataset_path,
    )
    master_port = free_port()
    manifest = tiny_job("mpi-ssh", assets, max_steps=TOTAL_STEPS, save_steps=1000)
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 1}  # zeroStage > 0 needs GPUs in the spec
    manifest["spec"]["distributed"] = {"backend": "mpijob", "zeroStage": 2, "masterPort": master_port}
    manifest["spec"]["runPolicy"] = {"terminationGracePeriodSeconds": 75}  # a 60 s stop grace
    pod_root = work / "pod"
    pod = make_pod(pod_root, manifest, assets, extensions=work / "torch_extensions")
    # The worker processes write their outputs and caches as the image user.
    # The image user gets its own copy of the session's DeepSpeed op cache (ninja skips a build whose
    # outputs are current; an empty cache only costs the compile).
    shutil.copytree(
        torch_extensions, work / "torch_extensions", dirs_exist_ok=True, ignore=shutil.ignore_patterns("lock")
    )
    subprocess.run(
        [
            "chown",
            "-R",
            f"{user.pw_uid}:{user.pw_gid}",
            str(work / "assets"),
            str(pod_root),
            str(work / "torch_extensions"),
        ],
        check=True,
    )

    from kubetune.render import render  # noqa: PLC0415

    assert pod.files  # rendered
    workload = render(pod.job).workload
    argv = list(_launcher_container(workload)["command"])
    assert argv[:4] == ["python", "-m", "kubetune.trainer.mpilaunch", "mpirun"]
    worker = _worker_container(workload)
    assert worker["command"][:3] == ["python", "-m", "kubetune.trainer.mpiworker"] and SSHD_CONFIG in worker["command"]
    tools_path = f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/bin"
    worker_env = {e["name"]: e["value"] for e in worker["env"] if "value" in e and e["name"] == contract.ENV_STOP_GRACE}
    worker_env["PATH"] = tools_path
    hostfile = work / "hostfile"
    # As mpi-operator writes it (newConfigMap), with the two loopback "hosts".
    hostfile.write_text("127.0.0.1 slots=1\n127.1 slots=1\n")
    os.chmod(hostfile, 0o444)
    env = {
        **pod.env,
        "HOME": str(pod_root / "scratch"),
        "PATH": tools_path,
        # mpi-operator's launcher environment (ompiEnvVars, launcherEnvVars).
        "OMPI_MCA_orte_keep_fqdn_hostnames": "true",
        "OMPI_MCA_orte_default_hostfile": str(hostfile),
        "OMPI_MCA_plm_rsh_args": f"-F {work / 'ssh_config'} -o ConnectionAttempts=10",
        "K_MPI_JOB_ROLE": "launcher",
        # Loopback only: make Open MPI treat 127.0.0.1 and 127.1 as remote nodes.
        "OMPI_MCA_if_base_do_not_resolve": "1",
    }
    env.update(
        {e["name"]: e["value"] for e in _launcher_container(workload)["env"] if e["name"].startswith("OMPI_MCA_odls")}
    )
    env.pop("MASTER_ADDR", None)
    (pod_root / "scratch").mkdir(exist_ok=True)
    subprocess.run(["chown", f"{user.pw_uid}:{user.pw_gid}", str(pod_root / "scratch")], check=True)

    # First run: the job is deleted (or suspended) mid-training: SIGTERM to both pods' PID 1 at once.
    worker_proc = cluster.start_worker(worker["command"], worker_env)
    first_log = work / "first.log"
    with open(first_log, "w") as log:
        # Two ranks write one log: a multi-byte character can be split between their writes (errors="replace").
        proc = subprocess.Popen(
            [*_as_user(user, work), *argv], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            deadline = time.monotonic() + scaled(400)
            while not [u for u in progress_lines(first_log.read_text(errors="replace")) if u["step"] >= 2]:
                assert proc.poll() is None and time.monotonic() < deadline, first_log.read_text(errors="replace")[
                    -5000:
                ]
                time.sleep(0.1)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            worker_proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = proc.wait(timeout=scaled(150))
            except subprocess.TimeoutExpired:
                code = None
            stopped_after = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
    first = first_log.read_text(errors="replace")
    assert code is not None, "mpirun did not stop after SIGTERM:\n" + first[-6000:]
    assert code == contract.EXIT_RETRYABLE, first[-3000:]  # a restart is due, not a failure
    assert worker_proc.wait(timeout=scaled(60)) == 0  # sshd was kept up for the sessions, then stopped
    saved = checkpoints.newest_complete(pod.output_dir)
    assert saved is not None, first[-5000:]  # every rank wrote its part of the stop checkpoint
    stopped_at = int(saved.name.split("-")[1])
    assert 2 <= stopped_at < TOTAL_STEPS, first[-3000:]
    worker_log = cluster.sshd_log.read_text()
    # One sshd serves both loopback "hosts" here, so both ranks are its own.
    assert "asking 2 rank(s) here for a stop checkpoint" in worker_log, worker_log[-3000:]
    print(f"stop checkpoint-{stopped_at} written {stopped_after:.1f} s after SIGTERM")

    # Second run: the restarted pods resume from it and finish.
    cluster.start_worker(worker["command"], worker_env)
    result = subprocess.run(
        [*_as_user(user, work), *argv],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=scaled(600),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:] + "\nworker:\n" + cluster.sshd_log.read_text()[-2000:]
    assert "rank 0 on 127.0.0.1 (2 hosts)" in out  # MASTER_ADDR from the hostfile
    # Both ranks came in through sshd with the Secret's key, as the image user, in both runs.
    accepted = re.findall(rf"Accepted publickey for {USER} from 127\.0\.0\.1", cluster.sshd_log.read_text())
    assert len(accepted) >= 4, cluster.sshd_log.read_text()
    assert "world size: 2" in out
    updates = progress_lines(out)
    assert updates[0]["step"] > stopped_at and updates[-1]["step"] == TOTAL_STEPS
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    record = json.loads((pod.output_dir / contract.RUN_RECORD_FILE).read_text())
    assert record["outcome"] == "Succeeded" and record["stages"]["train"]["launcher"] == "mpirun"
    assert record["stages"]["train"]["processes"] == 2
    assert record["stages"]["train"]["resumedFrom"] == str(saved)
