"""The hostile inputs of issue 12 through the real ``kubetune`` command: one line, the file and the
field, exit 1; never a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.kt_time import scaled
import yaml
from tests.support.kt_hostile import alias_bomb

from kubetune.cli import main

REPO = Path(__file__).resolve().parents[2]
LORA = REPO / "examples" / "finetune-lora.yaml"

MEMORY_CAP = 1 << 30
"""Address-space cap of the child (1 GiB): a blow-up fails fast instead of eating the machine."""


def _lora() -> dict:
    return yaml.safe_load(LORA.read_text())


def _write(tmp_path: Path, text: str | bytes, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_process(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The real command in a child with a memory cap; returns (result, seconds).
    (bench/hostile.py reports the peak RSS of the same cases.)"""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kubetune", *argv],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        preexec_fn=_cap_memory,  # noqa: PLW1509 - only sets an rlimit
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )
    return result, time.monotonic() - start


# --- hangs and blow-ups, through the real command ------------------------------------------------


@pytest.mark.parametrize("where", ["unknown-field", "affinity"])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_alias_bomb_is_refused_at_once(tmp_path: Path, where: str, command: str) -> None:
    text = alias_bomb() + LORA.read_text()
    if where == "affinity":
        text = text.replace("spec:\n", "spec:\n  scheduling:\n    affinity: *l8\n", 1)
    argv = [command, str(_write(tmp_path, text))] + (["--skip-llamafactory"] if command == "validate" else [])
    result, seconds = run_process(*argv)
    print(
        f"alias bomb ({where}) {command}: exit {result.returncode}, {seconds:.2f} s under a "
        f"{MEMORY_CAP >> 20} MiB address-space cap"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "aliases expand to more than" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{tmp_path}/job.yaml: ")


def test_run_local_refuses_an_alias_bomb_before_any_work(tmp_path: Path) -> None:
    result, seconds = run_process(
        "run", "--local", str(_write(tmp_path, alias_bomb() + LORA.read_text())), "--output", str(tmp_path / "out")
    )
    print(f"alias bomb run --local: exit {result.returncode}, {seconds:.2f} s")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "aliases expand" in result.stderr


# --- tracebacks that were -----------------------------------------------------------------


CASES = {
    "not-utf8": (
        b"apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: \xff}\n",
        "not UTF-8 text: byte 0xff at offset",
    ),
    "utf16": ("apiVersion: kubetune.io/v1alpha1\n".encode("utf-16"), "is UTF-16 text"),
    "deep-nesting": ("kind: FineTuneJob\nspec: " + "[" * 330 + "]" * 330 + "\n", "spec[0][0]"),
    "recursive-alias": (
        "kind: FineTuneJob\nspec:\n  scheduling:\n    affinity: &a\n      nodeAffinity: *a\n",
        "spec.scheduling.affinity.nodeAffinity: the alias *a refers to a mapping or list that contains it",
    ),
    "timestamp-in-affinity": (None, "spec.scheduling.affinity.nodeAffinity"),
    "binary-in-affinity": (
        "kind: FineTuneJob\nspec:\n  scheduling:\n    affinity: !!binary aGVsbG8=\n",
        "spec.scheduling.affinity: the YAML tag tag:yaml.org,2002:binary is not supported",
    ),
    "nan-in-affinity": (
        "kind: FineTuneJob\nspec:\n  scheduling:\n    affinity: {nodeAffinity: .nan}\n",
        "spec.scheduling.affinity.nodeAffinity: nan is not a number",
    ),
}


@pytest.mark.parametrize(("content", "message"), CASES.values(), ids=CASES.keys())
def test_broken_files_are_one_line_errors_with_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes | None, message: str
) -> None:
    if content is None:  # an unquoted date where an object belongs: a string to us, as to kubectl
        doc = _lora()
        doc["spec"]["scheduling"] = {"affinity": {"nodeAffinity": "PLACEHOLDER"}}
        content = yaml.safe_dump(doc).replace("PLACEHOLDER", "2001-12-14")
    path = _write(tmp_path, content)
    for command in (["validate", "--skip-llamafactory"], ["render"]):
        code, out, err = run(capsys, *command, str(path))
        assert code == 1, err
        assert out == ""
        lines = err.splitlines()
        assert lines and all(line.startswith(f"{path}") for line in lines), err
        assert message in err, err


def test_a_directory_or_unreadable_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path))
    assert code == 1 and err == f"{tmp_path}: is a directory; give a manifest file (or '-' for stdin)\n"
    unreadable = _write(tmp_path, LORA.read_text(), "secret.yaml")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: make the open fail as it would for a user
        real_open = Path.open

        def denied(self: Path, *args: object, **kwargs: object) -> object:
            if self == unreadable:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", denied)
    code, _, err = run(capsys, "validate", str(unreadable))
    assert code == 1 and err == f"{unreadable}: cannot be read: permission denied\n"


def test_every_unreadable_file_is_reported_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, b"\xff", "a.yaml")
    b = _write(tmp_path, "x: [", "b.yaml")
    code, _, err = run(capsys, "validate", "--skip-llamafactory", str(a), str(b), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert [line.split(":")[0] for line in err.splitlines()] == [str(a), str(b), str(tmp_path / "missing.yaml")]
    assert "not valid YAML at line 2, column 1" in err


# --- terminal injection and unbounded echo ---------------------------------------------------------


def test_a_key_cannot_forge_a_line_or_send_escape_sequences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _lora()
    doc["spec"]["\x1b[2Jx\nr3.yaml: FineTuneJob r3 is valid"] = 1
    doc["spec"]["extraArgs"] = {"\x1b]0;title\x07": 1}
    path = _write(tmp_path, yaml.safe_dump(doc))
    code, out, err = run(capsys, "validate", "--skip-llamafactory", str(path))
    assert code == 1 and out == ""
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[2Jx\\nr3.yaml: FineTuneJob r3 is valid" in err
    assert all(line.startswith(str(path)) for line in err.splitlines()), err


def test_long_values_are_cut_with_their_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _lora()
    doc["apiVersion"] = "v" * 100_000
    doc["spec"]["method"] = "m" * 100_000
    doc["spec"]["model"]["template"] = "t" * 100_000
    path = _write(tmp_path, yaml.safe_dump(doc))
    code, _, err = run(capsys, "validate", "--skip-llamafactory", str(path))
    assert code == 1
    assert "(100000 characters in all)" in err
    assert max(len(line) for line in err.splitlines()) < 1000, [len(line) for line in err.splitlines()]


# --- the catch-all ---------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_with_exit_2_and_a_traceback_only_with_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubetune.cli as cli

    def boom(_: object) -> int:
        raise RuntimeError("boom\x1b[31m")

    monkeypatch.setattr(cli, "cmd_validate", boom)
    code, _, err = run(capsys, "validate", str(LORA))
    assert code == 2
    assert (
        err == "kubetune: unexpected error (RuntimeError: boom\\x1b[31m); "
        "rerun with --debug for the traceback and please report it\n"
    )
    with pytest.raises(RuntimeError):
        main(["--debug", "validate", str(LORA)])
    with pytest.raises(RuntimeError):
        main(["validate", "--debug", str(LORA)])


def test_at_most_100_finetunejobs_are_read_from_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("---\n" + LORA.read_text()) * 101
    code, out, err = run(capsys, "render", str(_write(tmp_path, text)))
    assert code == 1 and out == ""
    assert err == f"{tmp_path}/job.yaml: holds 101 FineTuneJobs; at most 100 are read from one file: split it\n"
