"""The images cannot be built here; these checks keep their pins and contract honest."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    return [i.strip() for i in re.sub(r"\\\n", " ", dockerfile).splitlines() if i.strip() and not i.lstrip().startswith("#")]


def test_pins_agree_with_the_train_extra() -> None:
    pins = _pins()
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    for requirement in train:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)", requirement)
        if match:
            name, version = match.group(1).lower(), match.group(2)
            assert pins.get(name) == version, f"pyproject train extra pins {name}=={version}, pins.txt has {pins.get(name)}"
    for name in ("torch", "llamafactory", "deepspeed", "bitsandbytes"):
        assert name in pins


def test_trainer_dockerfile_uses_exactly_the_pinned_versions() -> None:
    pins = _pins()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", TRAINER, re.M))
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["DEEPSPEED_VERSION"] == pins["deepspeed"]
    # No version literal of a pinned package anywhere else.
    for name, version in pins.items():
        for found in re.findall(rf"{re.escape(name)}==([0-9][^\s\"']*)", TRAINER, re.I):
            assert found == version, f"{name}=={found} in the Dockerfile, pins.txt says {version}"
    assert "COPY images/trainer/pins.txt /tmp/pins.txt" in TRAINER
    installs = [i for i in _instructions(TRAINER) if "pip install" in i]
    assert installs and all("-c /tmp/pins.txt" in i for i in installs), installs


def test_trainer_image_contract() -> None:
    instructions = _instructions(TRAINER)
    assert instructions[-1] == 'ENTRYPOINT ["python", "-m", "kubetune.trainer"]'
    assert "USER 1000:1000" in instructions
    assert any(i.startswith("FROM nvidia/cuda:") for i in instructions)
    assert "openssh-server" in TRAINER and "openmpi-bin" in TRAINER  # MPIJob workers and launcher
    assert '"/src[train]"' in TRAINER  # our package with the train extra
    assert "flash-attn" not in " ".join(i for i in instructions if "pip install" in i)  # SDPA, see the header


def test_operator_image_is_slim_non_root_and_has_no_ml_stack() -> None:
    instructions = _instructions(OPERATOR)
    assert instructions[-1] == 'ENTRYPOINT ["kubetune", "operator"]'
    assert "USER 1000:1000" in instructions
    assert '"/src[operator]"' in OPERATOR
    installs = " ".join(seg for i in instructions for seg in i.split("&&") if "pip install" in seg)
    for heavy in ("torch", "train]", "llamafactory", "deepspeed"):
        assert heavy not in installs


TRAINING_STACK = (
    "torch", "llamafactory", "transformers", "peft", "accelerate", "datasets", "trl", "tokenizers", "huggingface_hub",
    "safetensors", "deepspeed", "bitsandbytes", "tensorboard", "mlflow-skinny", "wandb", "liger-kernel",
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

            assert SpecifierSet(spec).contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside LLaMA-Factory 0.9.5's {spec}"
            checked += 1
    assert checked >= 8


def test_the_cpu_install_uses_the_image_pins_and_got_them() -> None:
    from importlib import metadata

    from packaging.utils import canonicalize_name
    from packaging.version import Version

    install = (ROOT / ".ci" / "install").read_text()
    assert "PINS=images/trainer/pins.txt" in install
    pip_lines = [l for l in install.splitlines() if "pip install" in l and not l.lstrip().startswith("#") and "--upgrade pip" not in l]
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
