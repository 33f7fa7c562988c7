"""The MPIJob launcher command: MASTER_ADDR from mpi-operator's hostfile, whatever its Service naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.trainer.mpilaunch import launch_argv, main

# mpi-operator v0.5+ (pkg/controller/mpi_job_controller.go newConfigMap): one headless Service <job>.
HOSTFILE = "ft-worker-0.ft.team-a.svc slots=8\nft-worker-1.ft.team-a.svc slots=8\n"


def test_rank0_host_is_the_first_hostfile_line_and_is_forwarded() -> None:
    argv, env = launch_argv(
        ["mpirun", "-np", "16", "python", "-m", "kubetune.trainer"],
        {"PATH": "/usr/bin"},
        HOSTFILE,
        Path("/etc/mpi/hostfile"),
    )
    assert env["MASTER_ADDR"] == "ft-worker-0.ft.team-a.svc"
    assert argv[:5] == ["mpirun", "--hostfile", "/etc/mpi/hostfile", "-x", "MASTER_ADDR"]
    assert argv[5:] == ["-np", "16", "python", "-m", "kubetune.trainer"]


def test_an_explicit_master_addr_wins() -> None:
    _, env = launch_argv(["mpirun"], {"MASTER_ADDR": "10.0.0.5"}, HOSTFILE, Path("h"))
    assert env["MASTER_ADDR"] == "10.0.0.5"


@pytest.mark.parametrize(
    ("text", "argv", "message"), [("", ["mpirun"], "lists no hosts"), (HOSTFILE, ["sh"], "expected an mpirun")]
)
def test_bad_input_is_a_config_error_not_a_hang(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    argv: list[str],
    message: str,
) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(text)
    monkeypatch.setenv("OMPI_MCA_orte_default_hostfile", str(hostfile))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
