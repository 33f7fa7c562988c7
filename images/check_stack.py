"""The trainer image's Python stack, checked without docker (CI: .ci/check-images).

1. ``images/lock.sh --check``: every lock is exactly what its inputs resolve to on PyPI, for the
   image's interpreter and platform (trainer: CPython 3.12, manylinux_2_28_x86_64). uv resolves
   from metadata only; no wheel is downloaded.
2. The torch wheel the image installs is the one the lock hashes: the sha256 PyPI lists for
   ``torch-<pin>-cp312-cp312-manylinux_2_28_x86_64.whl`` is among the lock's hashes for torch.
3. That wheel's METADATA (PEP 658 ``<wheel url>.metadata``, a few kB; if the index has none, the
   METADATA member read from the wheel's zip with HTTP range requests, never the 500 MB file)
   carries the intended CUDA line: its CUDA requirements are ``cuda-toolkit==13.0.*`` and
   ``nvidia-*-cu13``, and none is ``-cu12``. The lock and the Dockerfile's ARGs say the same line.
4. Every package the Dockerfiles install with ``pip install --only-binary=:all:`` has a wheel for
   the image's Python and platform (``uv pip compile --no-deps --only-binary :all:`` on the lock,
   metadata only): trainer cp312 x86_64, operator cp311 x86_64 and aarch64, the SBOM tool in both.
   ``lock.sh --check`` alone would pass a package that is only an sdist on PyPI (uv builds its
   metadata), and the image build would then fail at that pip step.

Exit 0 when all hold, 1 with the reasons otherwise; 3 when PyPI cannot be reached (the caller
decides whether that is a skip).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"
PYTHON_TAG = "cp312"
PLATFORM_TAG = "manylinux_2_28_x86_64"
TIMEOUT = 60
# What images/trainer/Dockerfile builds from sdists (its awk filter leaves them out of wheels.lock);
# everything else in a lock is installed with --only-binary=:all:.
TRAINER_SDISTS = ("deepspeed", "jieba")


def locked(lock_text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, sha256 hashes) from a ``uv pip compile --generate-hashes`` lock."""
    out: dict[str, tuple[str, set[str]]] = {}
    for entry in re.split(r"\n(?=[^\s#])", re.sub(r"^#.*$", "", lock_text, flags=re.M)):
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", entry.strip())
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            out[name] = (match.group(2), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)))
    return out


def cuda_line(requires_dist: Iterable[str]) -> tuple[str | None, list[str]]:
    """The CUDA major.minor a torch wheel's Requires-Dist pins, and the lines that contradict it.

    CUDA 13 torch wheels on PyPI require ``cuda-toolkit[...]==13.0.3`` and ``nvidia-*-cu13``;
    CUDA 12 ones require ``nvidia-*-cu12`` packages (e.g. ``nvidia-cuda-runtime-cu12==12.6.77``)."""
    majors: dict[str, list[str]] = {}
    toolkit: str | None = None
    for line in requires_dist:
        name = re.match(r"\s*([A-Za-z0-9_.-]+)", line)
        if not name:
            continue
        pkg = name.group(1).lower().replace("_", "-")
        if pkg == "cuda-toolkit":
            version = re.search(r"==\s*(\d+)\.(\d+)", line)
            if version:
                toolkit = f"{version.group(1)}.{version.group(2)}"
                majors.setdefault(version.group(1), []).append(line)
        suffix = re.search(r"-cu(\d+)$", pkg)
        if pkg.startswith("nvidia-") and suffix:
            majors.setdefault(suffix.group(1), []).append(line)
            if toolkit is None and suffix.group(1) == "12":
                runtime = re.search(r"nvidia-cuda-runtime-cu12\s*==\s*(\d+)\.(\d+)", line)
                if runtime:
                    toolkit = f"{runtime.group(1)}.{runtime.group(2)}"
    if not majors:
        return None, []
    line_major = (toolkit or "").split(".")[0] or max(majors, key=lambda m: len(majors[m]))
    contradicting = [l for major, lines in majors.items() if major != line_major for l in lines]
    return toolkit or f"{line_major}.x", contradicting


def wheels_only(lock_text: str, sdists: Iterable[str]) -> str:
    """The lock without the entries (requirement line and its indented hash/comment lines) of
    ``sdists``: what images/trainer/Dockerfile writes to /tmp/wheels.lock."""
    skip = {re.sub(r"[-_.]+", "-", n).lower() for n in sdists}
    out, keep = [], True
    for line in lock_text.splitlines(keepends=True):
        if line[:1] not in ("", " ", "\t", "#", "\n"):
            name = re.match(r"([A-Za-z0-9_.-]+)", line)
            keep = not (name and re.sub(r"[-_.]+", "-", name.group(1)).lower() in skip)
        if keep:
            out.append(line)
    return "".join(out)


def wheel_problem(lock: str, target: str, returncode: int, stderr: str) -> str | None:
    """The message for a failed ``uv pip compile --only-binary :all:`` of ``lock`` (None when it passed)."""
    if returncode == 0:
        return None
    missing = re.findall(r"Because (\S+) has no usable wheels", stderr)
    if missing:
        return (
            f"{lock}: PyPI has no wheel of {', '.join(missing)} for {target}, but the Dockerfile installs it with "
            "--only-binary=:all: (build it from its sdist there, or lock another version)"
        )
    return f"{lock}: its wheels for {target} do not resolve:\n{stderr[-2000:]}"


def _uv() -> str | None:
    """The uv images/lock.sh uses (its pinned version; ``lock.sh --print-uv``)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "images" / "lock.sh"), "--print-uv"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def wheel_problems(uv: str) -> list[str]:
    """Check 4 of the module docstring, for each lock and image platform."""
    checks = [
        ("images/trainer/requirements.lock", TRAINER_SDISTS, "3.12", ["x86_64-manylinux_2_28"]),
        ("images/operator/requirements.lock", (), "3.11", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"]),
        ("images/sbom-tool.lock", (), "3.11", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"]),
        ("images/sbom-tool.lock", (), "3.12", ["x86_64-manylinux_2_28"]),
    ]
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for lock, sdists, python, platforms in checks:
            wheels = Path(tmp) / "wheels.lock"
            wheels.write_text(wheels_only((ROOT / lock).read_text(), sdists))
            for platform in platforms:
                proc = subprocess.run(
                    [
                        uv,
                        "pip",
                        "compile",
                        "--no-config",
                        "--index-url",
                        INDEX,
                        "--no-deps",
                        "--only-binary",
                        ":all:",
                        "--python-version",
                        python,
                        "--python-platform",
                        platform,
                        "--quiet",
                        str(wheels),
                        "-o",
                        str(Path(tmp) / "out.txt"),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                target = f"cp{python.replace('.', '')} on {platform}"
                problem = wheel_problem(lock, target, proc.returncode, proc.stderr)
                print(f"check_stack: {lock}: wheels for {target}: {'ok' if problem is None else 'MISSING'}")
                if problem is not None:
                    problems.append(problem)
    return problems


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return bytes(response.read())


class _RangeFile:
    """A remote file read with HTTP Range requests in 256 kB blocks, so zipfile reads only the
    central directory and one member of a wheel."""

    BLOCK = 1 << 18

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos, self.fetched = url, size, 0, 0
        self.blocks: dict[int, bytes] = {}

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _block(self, index: int) -> bytes:
        if index not in self.blocks:
            start = index * self.BLOCK
            data = _get(self.url, {"Range": f"bytes={start}-{min(self.size, start + self.BLOCK) - 1}"})
            if len(data) > self.BLOCK:
                raise ValueError(f"{self.url}: the server ignored the Range header")
            self.fetched += len(data)
            self.blocks[index] = data
        return self.blocks[index]

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = bytearray()
        while self.pos < end:
            block = self._block(self.pos // self.BLOCK)
            offset = self.pos % self.BLOCK
            piece = block[offset : offset + end - self.pos]
            if not piece:
                break
            out += piece
            self.pos += len(piece)
        return bytes(out)


def wheel_metadata(file: dict[str, object]) -> tuple[str, str, int]:
    """(METADATA text, how it was read, bytes fetched) for one file of a PEP 691 project page."""
    url = str(file["url"])
    try:
        data = _get(url + ".metadata")
        expected = file.get("core-metadata") or file.get("data-dist-info-metadata")
        if (
            isinstance(expected, dict)
            and "sha256" in expected
            and hashlib.sha256(data).hexdigest() != expected["sha256"]
        ):
            raise ValueError(f"{url}.metadata does not match its sha256 on the index")
        return data.decode(), "PEP 658 .metadata", len(data)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    remote = _RangeFile(url, int(str(file["size"])))
    with zipfile.ZipFile(remote) as wheel:  # type: ignore[arg-type]
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        text = wheel.read(name).decode()
    return text, "HTTP range read of the wheel's METADATA", remote.fetched


def project_files(name: str) -> list[dict[str, object]]:
    page = json.loads(_get(f"{INDEX}/{name}/", {"Accept": "application/vnd.pypi.simple.v1+json"}))
    return list(page["files"])


def dockerfile_args(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r"^ARG (\w+)=(\S+)$", text, re.M)}


def main() -> int:
    try:
        _get(f"{INDEX}/pip/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    except (urllib.error.URLError, OSError) as exc:
        print(f"check_stack: PyPI unreachable ({exc})", file=sys.stderr)
        return 3
    problems: list[str] = []
    lock_check = subprocess.run(
        ["bash", str(ROOT / "images" / "lock.sh"), "--check"], capture_output=True, text=True, check=False
    )
    print(f"check_stack: images/lock.sh --check: {'ok' if lock_check.returncode == 0 else 'FAILED'}")
    if lock_check.returncode != 0:
        problems.append(
            "the locks are not what their inputs resolve to:\n" + lock_check.stdout[-4000:] + lock_check.stderr[-2000:]
        )

    lock = locked((ROOT / "images" / "trainer" / "requirements.lock").read_text())
    args = dockerfile_args((ROOT / "images" / "trainer" / "Dockerfile").read_text())
    want = args["TORCH_CUDA"]
    torch_version, torch_hashes = lock["torch"]
    if torch_version != args["TORCH_VERSION"]:
        problems.append(
            f"the lock has torch {torch_version}, the Dockerfile's TORCH_VERSION is {args['TORCH_VERSION']}"
        )
    if not args["CUDA_VERSION"].startswith(want + "."):
        problems.append(
            f"the base image is CUDA {args['CUDA_VERSION']}, TORCH_CUDA is {want}: nvcc and torch would disagree"
        )
    filename = f"torch-{torch_version}-{PYTHON_TAG}-{PYTHON_TAG}-{PLATFORM_TAG}.whl"
    matches = [f for f in project_files("torch") if f["filename"] == filename]
    if not matches:
        problems.append(f"PyPI has no {filename}: the image cannot install the locked torch")
    else:
        file = matches[0]
        sha = dict(file["hashes"]).get("sha256")  # type: ignore[call-overload]
        print(f"check_stack: {filename} ({int(str(file['size'])) / 1e6:.0f} MB on PyPI), sha256 {sha}")
        if sha not in torch_hashes:
            problems.append(f"the lock's torch hashes do not include PyPI's {filename} (sha256 {sha})")
        text, how, fetched = wheel_metadata(file)
        requires = [l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("Requires-Dist:")]
        line, contradicting = cuda_line(requires)
        print(f"check_stack: its METADATA ({how}, {fetched} bytes fetched) pins CUDA {line}:")
        for req in requires:
            if re.match(r"(nvidia-|cuda-)", req):
                print(f"check_stack:   Requires-Dist: {req}")
        if line is None or not line.startswith(want):
            problems.append(f"PyPI's {filename} is built for CUDA {line}, the image is built for CUDA {want}")
        if contradicting:
            problems.append(f"{filename} mixes CUDA lines: {contradicting}")
    major = want.split(".")[0]
    wrong = sorted(n for n in lock if re.search(r"-cu(\d+)$", n) and not n.endswith(f"-cu{major}"))
    if wrong:
        problems.append(f"the trainer lock has CUDA libraries of another line than {want}: {wrong}")
    uv = _uv()
    if uv is None:
        problems.append("no uv to check the locks' wheels with (images/lock.sh --print-uv failed; set UV)")
    else:
        problems += wheel_problems(uv)
    toolkit = lock.get("cuda-toolkit", ("", set()))[0]
    if not toolkit.startswith(want + "."):
        problems.append(f"the trainer lock's cuda-toolkit is {toolkit or 'missing'}, not {want}.x")
    else:
        print(
            f"check_stack: the lock has cuda-toolkit {toolkit} and {sum(n.endswith('-cu' + major) for n in lock)} "
            f"nvidia-*-cu{major} packages, none of another line"
        )
    for problem in problems:
        print(f"check_stack: FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_stack: ok: torch {torch_version} for CPython 3.12 on {PLATFORM_TAG} is the CUDA "
            f"{want} build; driver floor R580"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
