"""The vLLM serving container on a read-only root, as uid 1000 (issue 20 item 7).

vLLM 0.11 calls ``tempfile.gettempdir()`` when it is imported
(vllm/model_executor/model_loader/weight_utils.py:63, and envs.py:457 for its IPC path
VLLM_RPC_BASE_PATH), and takes file locks in that folder (weight_utils.py:87-98, ``get_lock``).
``gettempdir()`` raises when none of TMPDIR, /tmp, /var/tmp, /usr/tmp and the working folder is
writable, so a TMPDIR that does not exist on a read-only root crashes the pod at start.

What this proves, and what it does not: vLLM cannot be installed here, so the rendered pod is
played, not run.  In a private mount namespace the test builds a root whose every folder is a
read-only bind of this machine's (its /etc/passwd without uid 1000, like the vllm/vllm-openai
image, whose Dockerfile adds no user), mounts an empty writable tmpfs at each emptyDir mountPath
of the rendered pod, runs the rendered init container's command, then, as uid 1000 with exactly
the rendered container's environment, makes the calls vLLM makes at import (the cited
``gettempdir()`` and a 0o666 lock file in it), writes into every cache folder the environment
names (HOME, XDG_CACHE_HOME, HF_HOME, VLLM_CACHE_ROOT, VLLM_CONFIG_ROOT, TRITON_CACHE_DIR, HF_MODULES_CACHE,
TORCHINDUCTOR_CACHE_DIR, which torch's inductor uses as is when set: torch/_inductor/runtime/cache_dir_utils.py
``cache_dir``, read in the installed torch) and calls getpass.getuser().
It does not run vLLM's image or its CUDA start-up; a pod on a GPU node does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.kt_time import scaled
from tests.support.renderlib import JobBuilder

from kubetune.render.serving import render_serving

PROBE = r"""
import getpass, os, tempfile
tmp = tempfile.gettempdir()  # vllm weight_utils.py:63 / envs.py:457
assert tmp == os.environ["TMPDIR"], (tmp, os.environ["TMPDIR"])
fd = os.open(os.path.join(tmp, "model.lock"), os.O_CREAT | os.O_RDWR, 0o666)  # get_lock, weight_utils.py:87-98
os.close(fd)
user = getpass.getuser()
for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT", "TRITON_CACHE_DIR",
            "TORCHINDUCTOR_CACHE_DIR", "HF_MODULES_CACHE"):
    with open(os.path.join(os.environ[var], "probe"), "w") as f:
        f.write(var)
print("started as", os.getuid(), user)
"""


def _pod() -> dict[str, Any]:
    serving = render_serving(JobBuilder().set("spec.serve", {}).build())
    deployment = next(o for o in serving.objects if o["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def _sandbox_script(
    root: Path,
    passwd: Path,
    probe_dir: Path,
    empty_dirs: list[str],
    init: list[str],
    probe: list[str],
    env: dict[str, str],
) -> str:
    system = [
        d
        for d in ("/bin", "/sbin", "/lib", "/lib64", "/usr", "/etc", "/opt")
        if os.path.isdir(d) and not os.path.islink(d)
    ]
    # The probe needs only the standard library: the base interpreter's own folder is bound, wherever
    # this checkout and its venv live (CI's .venv is not under a fixed path).
    prefix = os.path.realpath(sys.base_prefix)
    binds = system + ([prefix] if not any(prefix == d or prefix.startswith(d + "/") for d in system) else [])
    links = [d for d in ("/bin", "/sbin", "/lib", "/lib64") if os.path.islink(d)]
    lines = ["set -e", f"mount -t tmpfs -o mode=0755 none {root}"]
    for link in links:
        lines.append(f"ln -s {os.readlink(link)} {root}{link}")
    for d in binds:
        lines += [f"mkdir -p {root}{d}", f"mount --rbind {d} {root}{d}"]
    lines += [
        f"mount --bind {passwd} {root}/etc/passwd",
        f"mkdir -p {root}/probe",
        f"mount --bind {probe_dir} {root}/probe",
    ]
    lines += [f"mount -o remount,bind,ro {root}{d}" for d in [*binds, "/probe"]]
    lines += [f"mkdir -p {root}/dev {root}/proc", f"mount --rbind /dev {root}/dev", f"mount -t proc proc {root}/proc"]
    lines += [f"mkdir -p {root}{d}" for d in empty_dirs]
    lines.append(f"mount -o remount,ro {root}")  # the root filesystem: read-only
    lines += [f"mount -t tmpfs -o mode=0777 none {root}{d}" for d in empty_dirs]  # the emptyDirs: writable
    as_user = [
        "chroot",
        str(root),
        "setpriv",
        "--reuid",
        "1000",
        "--regid",
        "1000",
        "--clear-groups",
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
    ]
    if init:
        lines.append(" ".join([*as_user, *init]))
    lines.append(" ".join([*as_user, *probe]))
    return "\n".join(lines)


def _run(tmp_path: Path, *, with_init: bool) -> subprocess.CompletedProcess[str]:
    pod = _pod()
    (container,) = pod["containers"]
    (init,) = pod["initContainers"]
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    empty_dirs = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert (
        pod["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["readOnlyRootFilesystem"] is True
    )
    assert {m["mountPath"] for m in init["volumeMounts"]} <= set(empty_dirs)
    root = tmp_path / "root"
    root.mkdir()
    passwd = tmp_path / "passwd"
    passwd.write_text(
        "".join(
            line
            for line in Path("/etc/passwd").read_text().splitlines(keepends=True)
            if line.split(":")[2:3] != ["1000"]
        )
    )
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "probe.py").write_text(PROBE)
    script = _sandbox_script(
        root,
        passwd,
        probe_dir,
        empty_dirs,
        init["command"] if with_init else [],
        [os.path.realpath(sys.executable), "/probe/probe.py"],
        env,
    )
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )


def _can_sandbox() -> bool:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "setpriv", "chroot")):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_sandbox(), reason="needs root with CAP_SYS_ADMIN (unshare -m, mount, chroot)")
def test_vllm_starts_as_uid_1000_on_a_read_only_root_with_only_its_emptydirs_writable(tmp_path: Path) -> None:
    started = _run(tmp_path, with_init=True)
    assert started.returncode == 0 and "started as 1000 kubetune" in started.stdout, started.stderr[-3000:]
    # The same root without the folders made first: what every vLLM pod met (TMPDIR=/cache/tmp missing).
    (tmp_path / "again").mkdir()
    crashed = _run(tmp_path / "again", with_init=False)
    assert crashed.returncode != 0 and "No usable temporary directory" in crashed.stderr, crashed.stderr[-3000:]
