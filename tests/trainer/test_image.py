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
