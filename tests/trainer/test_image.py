"""The images cannot be built here; these checks keep their pins and contract honest."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER = (ROOT / "images" / "trainer" / "Dockerfile").read_text()
OPERATOR = (ROOT / "images" / "operator" / "Dockerfile").read_text()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "images" / "trainer" / "pins.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"pins.txt: {line!r} is not an exact pin"
            pins[name.strip().lower()] = version.strip()
    return pins


def _instructions(dockerfile: str) -> list[str]:
    """Dockerfile instructions with line continuations joined."""
    return [
        i.strip() for i in re.sub(r"\\\n", " ", dockerfile).splitlines() if i.strip() and not i.lstrip().startswith("#")
    ]


def test_pins_agree_with_the_train_extra() -> None:
    pins = _pins()
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    for requirement in train:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)", requirement)
        if match:
            name, version = match.group(1).lower(), match.group(2)
            assert pins.get(name) == version, (
                f"pyproject train extra pins {name}=={version}, pins.txt has {pins.get(name)}"
            )
    for name in ("torch", "llamafactory", "deepspeed", "bitsandbytes"):
        assert name in pins


def _lock(path: str) -> dict[str, tuple[str, set[str]]]:
    import sys

    sys.path.insert(0, str(ROOT / "images"))
    try:
        from check_stack import locked
    finally:
        sys.path.pop(0)
    return locked((ROOT / "images" / path).read_text())


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_trainer_dockerfile_uses_exactly_the_pinned_versions() -> None:
    pins = _pins()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", TRAINER, re.M))
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["DEEPSPEED_VERSION"] == pins["deepspeed"]
    # No version literal of a pinned package anywhere else.
    for name, version in pins.items():
        for found in re.findall(rf"{re.escape(name)}==([0-9][^\s\"']*)", TRAINER, re.I):
            assert found == version, f"{name}=={found} in the Dockerfile, pins.txt says {version}"
    # The lock the image installs holds every pin at its version (images/lock.sh constrains by pins.txt).
    lock = _lock("trainer/requirements.lock")
    wrong = {
        n: (v, lock.get(_canon(n), ("missing",))[0]) for n, v in pins.items() if lock.get(_canon(n), ("",))[0] != v
    }
    assert not wrong, f"pins.txt vs requirements.lock: {wrong} (run images/lock.sh)"


def _pip_installs(dockerfile: str) -> list[str]:
    return [seg.strip() for i in _instructions(dockerfile) for seg in i.split("&&") if "pip install" in seg]


def test_every_pip_install_is_hash_checked_from_one_index() -> None:
    for dockerfile in (TRAINER, OPERATOR):
        installs = _pip_installs(dockerfile)
        assert installs
        for cmd in installs:
            assert "--extra-index-url" not in cmd and "--find-links" not in cmd, cmd
            if cmd.endswith(" /src"):  # kubetune itself, from the build context, nothing fetched
                assert "--no-index" in cmd and "--no-deps" in cmd, cmd
            else:
                assert "--require-hashes" in cmd and "--no-deps" in cmd, cmd
                assert cmd.count("--index-url") == 1 and "--index-url https://pypi.org/simple" in cmd, cmd
                assert re.search(r"-r /tmp/\S+\.lock\b", cmd), cmd
    for path in ("trainer/requirements.lock", "operator/requirements.lock", "sbom-tool.lock"):
        lock = _lock(path)
        assert lock and all(hashes for _, hashes in lock.values()), f"{path}: an entry without hashes"


def test_every_locked_trainer_package_is_installed_by_exactly_one_step() -> None:
    """The wheel step skips the sdists, the sdist steps take exactly them: nothing is installed twice or never."""
    lock = set(_lock("trainer/requirements.lock"))
    skipped = set(re.findall(r"skip=\(\$0 ~ /\^\(([^)]*)\)==/\)", TRAINER)[0].split("|"))
    kept = set(re.findall(r"keep=\(\$0 ~ /\^([a-z0-9-]+)==/\)", TRAINER))
    assert skipped == kept == {"deepspeed", "jieba"} and kept <= lock


def test_base_images_are_pinned_by_digest_with_the_dockerfiles_tags() -> None:
    entries = {}
    for line in (ROOT / "images" / "base-images.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, ref, *digest = line.split()
            entries[name] = ref
            assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest[0]), line
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", TRAINER, re.M))
    assert "FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU}@${CUDA_DEVEL_DIGEST} AS build" in TRAINER
    assert "FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU}@${CUDA_BASE_DIGEST}" in TRAINER
    assert entries["CUDA_DEVEL_DIGEST"] == f"nvidia/cuda:{args['CUDA_VERSION']}-devel-{args['UBUNTU']}"
    assert entries["CUDA_BASE_DIGEST"] == f"nvidia/cuda:{args['CUDA_VERSION']}-base-{args['UBUNTU']}"
    [operator_from] = [i for i in _instructions(OPERATOR) if i.startswith("FROM ")]
    assert operator_from == f"FROM {entries['PYTHON_DIGEST']}@${{PYTHON_DIGEST}}"
    for dockerfile in (TRAINER, OPERATOR):  # a digest ARG has no default: unset, the FROM is invalid
        for name in re.findall(r"@\$\{(\w+)\}", dockerfile):
            assert re.search(rf"^ARG {name}$", dockerfile, re.M), name


def test_the_cuda_line_agrees_across_base_image_torch_and_the_deepspeed_build() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", TRAINER, re.M))
    assert args["CUDA_VERSION"].startswith(args["TORCH_CUDA"] + ".")
    lock = _lock("trainer/requirements.lock")
    assert lock["cuda-toolkit"][0].startswith(args["TORCH_CUDA"] + ".")
    cu = {m for n in lock for m in re.findall(r"-cu(\d+)$", n)}
    assert cu == {args["TORCH_CUDA"].split(".")[0]}, cu
    from kubetune.trainer import opcheck

    assert opcheck.CUDA_LINE == args["TORCH_CUDA"]
    assert args["DS_CUDA_ARCHS"].strip('"') == "8.0;9.0;10.0+PTX"
    build = " ".join(i for i in _instructions(TRAINER) if "deepspeed.lock" in i)
    for env in (
        "DS_ACCELERATOR=cuda",
        'TORCH_CUDA_ARCH_LIST="${DS_CUDA_ARCHS}"',
        "DS_BUILD_FUSED_ADAM=1",
        "DS_BUILD_CPU_ADAM=1",
        "CXX=/usr/local/bin/baseline-cxx",
        "--no-build-isolation",
    ):
        assert env in build, env
    assert "verify_build.py --torch \"${TORCH_VERSION}\" --torch-cuda \"${TORCH_CUDA}\"" in TRAINER


def test_trainer_image_contract() -> None:
    instructions = _instructions(TRAINER)
    assert instructions[-1] == 'ENTRYPOINT ["python", "-m", "kubetune.trainer"]'
    assert "USER 1000:1000" in instructions
    assert any(i.startswith("FROM nvidia/cuda:") for i in instructions)
    assert "openssh-server" in TRAINER and "openmpi-bin" in TRAINER  # MPIJob workers and launcher
    # our package with the train extra: the extra's requirements are in the lock, the package from the context
    lock = _lock("trainer/requirements.lock")
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    for requirement in train:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)  # type: ignore[union-attr]
        assert _canon(name) in lock, name
    assert any(c.endswith(" /src") for c in _pip_installs(TRAINER))
    assert "flash-attn" not in " ".join(_pip_installs(TRAINER)) and "flash-attn" not in lock  # SDPA, see the header
    assert "cyclonedx-py environment" in TRAINER and "cyclonedx-py environment" in OPERATOR  # SBOM at build time


def test_operator_image_is_slim_non_root_and_has_no_ml_stack() -> None:
    instructions = _instructions(OPERATOR)
    assert instructions[-1] == 'ENTRYPOINT ["kubetune", "operator"]'
    # The image's user is the one the chart runs the operator as.
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "kubetune" / "values.yaml").read_text())
    uid, gid = values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]
    assert f"USER {uid}:{gid}" in instructions
    assert f"useradd --uid {uid} --gid {gid}" in OPERATOR
    lock = _lock("operator/requirements.lock")
    # optuna and cmaes: FineTuneSweep's engine (kubetune.sweep, the operator extra)
    for needed in ("kopf", "kubernetes-asyncio", "prometheus-client", "pydantic", "optuna", "cmaes"):
        assert needed in lock, needed
    # kubernetes_asyncio is the one Kubernetes client library (docs/architecture.md, issue 23)
    assert "kubernetes" not in lock, "the synchronous kubernetes package is no dependency of the operator"
    for heavy in ("torch", "llamafactory", "deepspeed", "transformers"):
        assert heavy not in lock


TRAINING_STACK = (
    "torch",
    "llamafactory",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "trl",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
    "deepspeed",
    "bitsandbytes",
    "tensorboard",
    "mlflow-skinny",
    "wandb",
    "liger-kernel",
)
# LLaMA-Factory 0.9.5 ranges that are not in its package metadata: requirements/deepspeed.txt and
# requirements/liger-kernel.txt of the v0.9.5 tag.
LLAMAFACTORY_EXTRAS = {"deepspeed": ">=0.10.0,<=0.18.4", "liger-kernel": ">=0.6.3"}


def _gpu_only() -> set[str]:
    lines = (ROOT / "images" / "trainer" / "pins.txt").read_text().splitlines()
    return {l.split("==")[0].strip().lower() for l in lines if "gpu-only" in l and "==" in l and not l.startswith("#")}


def test_every_training_stack_package_is_pinned_inside_llamafactorys_supported_range() -> None:
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {canonicalize_name(k): v for k, v in _pins().items()}
    missing = [p for p in TRAINING_STACK if canonicalize_name(p) not in pins]
    assert not missing, f"not pinned in images/trainer/pins.txt: {missing}"
    ranges = {canonicalize_name(k): v for k, v in LLAMAFACTORY_EXTRAS.items()}
    for line in metadata.requires("llamafactory") or []:
        req = Requirement(line)
        if req.marker is None and str(req.specifier):
            ranges[canonicalize_name(req.name)] = str(req.specifier)
    checked = 0
    for name, spec in ranges.items():
        if name in pins:
            from packaging.specifiers import SpecifierSet

            assert SpecifierSet(spec).contains(pins[name], prereleases=True), (
                f"{name}=={pins[name]} is outside LLaMA-Factory 0.9.5's {spec}"
            )
            checked += 1
    assert checked >= 8


def test_the_cpu_install_uses_the_image_pins_and_got_them() -> None:
    from importlib import metadata

    from packaging.utils import canonicalize_name
    from packaging.version import Version

    install = (ROOT / ".ci" / "install").read_text()
    assert "PINS=images/trainer/pins.txt" in install
    # Every install of a package (pip directly, or through the script's PIP_INSTALL array) is constrained.
    lines = [l for l in install.splitlines() if not l.lstrip().startswith("#")]
    pip_lines = [
        l
        for l in lines
        if ("pip install" in l or "${PIP_INSTALL[@]}" in l)
        and "--upgrade pip" not in l
        and not l.startswith("PIP_INSTALL=(")
    ]
    assert pip_lines and all('-c "$CONSTRAINTS"' in l for l in pip_lines), pip_lines
    # The venv these tests run in was made by .ci/install: it must hold exactly the pinned versions.
    gpu_only = {canonicalize_name(n) for n in _gpu_only()}
    wrong = []
    for name, version in _pins().items():
        if canonicalize_name(name) in gpu_only:
            continue
        installed = Version(metadata.version(name))
        if Version(installed.base_version) != Version(version) and installed != Version(version):
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    assert not wrong, wrong


# What the test venv's training processes import, each module's file by name (the worker's own import:
# kubetune/trainer/worker.py imports llamafactory.train.tuner for run_exp).
_TRAINING_IMPORTS = """
import json, sys
import kubetune.trainer.worker, llamafactory.train.tuner
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


@pytest.mark.slow  # one process importing the training stack (~7 s of CPU)
@pytest.mark.train
def test_a_training_process_of_the_suite_imports_only_what_the_trainer_image_has(tmp_path: Path) -> None:
    """The suite's trainings run in .venv, the image's in the image: a distribution .venv has and the
    image's lock does not, that the training stack imports when it finds it, makes every training of
    the suite run code the image never runs (and a test could pass only because of it). The case that
    happened: full mlflow (for the tests' tracking server) brought scikit-learn, and transformers'
    generation/candidate_generator.py:27-28 @5.6.0 does ``if is_sklearn_available(): from
    sklearn.metrics import roc_curve``, 1.3 s of CPU in each of the suite's ~100 training processes;
    the image has mlflow-skinny and no scikit-learn. Every imported file is traced to the
    distribution whose RECORD lists it; stdlib and the repository's own files belong to none."""
    import json
    import os
    import subprocess
    import sys
    from importlib import metadata

    from packaging.utils import canonicalize_name

    from tests.support.trainerlib import isolated_env

    done = subprocess.run(
        [sys.executable, "-c", _TRAINING_IMPORTS], env=isolated_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {os.path.normpath(f) for f in json.loads(done.stdout.splitlines()[-1])}
    # RECORD paths are relative to the folder the .dist-info is in: compare them as strings there
    # (a Path per RECORD line of every distribution costs seconds).
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        site = os.path.normpath(str(dist.locate_file(""))) + os.sep
        here = {f[len(site) :] for f in imported if f.startswith(site)}
        if not here:
            continue
        name = canonicalize_name(dist.metadata["Name"])
        for f in dist.files or ():
            if str(f) in here:
                owners.setdefault(site + str(f), set()).add(name)
    assert len(owners) > 1000, f"only {len(owners)} imported files traced to a distribution: the tracing is broken"
    allowed = set(_lock("trainer/requirements.lock")) | {"kubetune"}
    # A file two distributions ship (mlflow-skinny's files in full mlflow) is the image's when one is.
    foreign: dict[str, list[str]] = {}
    for path, names in owners.items():
        if not names & allowed:
            for name in names:
                foreign.setdefault(name, []).append(path)
    if foreign:
        pytest.fail(
            "the training processes of the suite import distributions the trainer image does not have "
            "(images/trainer/requirements.lock); keep them out of .venv (.ci/install, pyproject's test "
            "extra) or add them to the image:\n"
            + "\n".join(f"  {n}: {len(paths)} files, e.g. {sorted(paths)[0]}" for n, paths in sorted(foreign.items()))
        )
