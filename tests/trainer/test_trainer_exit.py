"""The trainer process exits with the code main chose even when an upload abandoned at the SIGTERM
deadline still has a request in flight inside boto3's transfer manager (its worker threads are not
daemons and would be joined at interpreter exit, until the kubelet's SIGKILL)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("boto3")


def test_exit_is_not_held_by_an_upload_left_in_flight(tmp_path: Path) -> None:
    # A store that accepts the connection and never answers (a stalled upload).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    (tmp_path / "ckpt").mkdir()
    for n in range(3):
        (tmp_path / "ckpt" / f"f{n}.bin").write_bytes(b"x" * 1024)
    script = textwrap.dedent(
        f"""
        import runpy, threading, time
        import boto3
        from botocore.config import Config
        from pathlib import Path
        import kubetune.trainer.main as m
        from kubetune.trainer import objectstore

        s3 = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1").client(
            "s3", endpoint_url="http://127.0.0.1:{port}",
            config=Config(read_timeout=600, connect_timeout=5, retries={{"max_attempts": 1}}),
        )

        def fake_main(argv=None):
            up = threading.Thread(
                target=lambda: objectstore.upload_folder("s3://b/p/", Path({str(tmp_path / "ckpt")!r}), {{}}, s3=s3),
                daemon=True,
            )
            up.start()  # as CheckpointUploader.stop's final sweep, abandoned at its deadline
            while not any(t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate()):
                time.sleep(0.05)
            return 75

        m.main = fake_main
        runpy.run_module("kubetune.trainer", run_name="__main__")
        """
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert done.returncode == 75, done.stderr[-2000:]
