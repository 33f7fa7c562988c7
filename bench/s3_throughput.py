"""Upload and download throughput of kubetune's s3:// code (kubetune.trainer.objectstore) against
plain boto3 ``upload_file`` / ``download_file`` of the same files, on the same S3 protocol server
(moto's server mode on loopback, tests/support/kt_s3.py), in the same run.

    .venv/bin/python bench/s3_throughput.py [--mib 64] [--small 20] [--repeat 5]

The files look like a model folder: one large weights file and some small ones (config,
tokenizer). Ours adds what a plain copy does not do: the completion marker after an upload,
the ETag listing and the temporary-file rename on download. The median of --repeat runs is
printed as MB/s for each, and ours/plain as the ratio (1.0 = as fast as plain boto3).
Loopback and moto measure the client's overhead, not a real store's bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "tests" / "support")]

from kt_s3 import S3Server  # noqa: E402

from kubetune.trainer import objectstore  # noqa: E402


def _make_files(folder: Path, mib: int, small: int) -> int:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(mib << 20))
    for i in range(small):
        (folder / f"part-{i:02d}.json").write_bytes(os.urandom(64 << 10))
    return sum(p.stat().st_size for p in folder.iterdir())


def _median_seconds(first: Callable[[int], None], second: Callable[[int], None], repeat: int) -> tuple[float, float]:
    """Median wall time of each, the two interleaved (a server that slows down as it fills, or a
    busy machine, weighs on both alike)."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeat):
        for run, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run(i)
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the large file (MiB)")
    parser.add_argument("--small", type=int, default=20, help="number of 64 KiB files")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kubetune-s3-bench-"))
    server = S3Server()
    try:
        env = server.env()
        s3 = server.s3()
        s3.create_bucket(Bucket="bench-bucket")
        src = work / "src"
        total = _make_files(src, args.mib, args.small)
        files = sorted(p for p in src.iterdir())

        def ours_up(i: int) -> None:
            objectstore.upload_folder(f"s3://bench-bucket/ours-{i}/", src, env, marker={})

        def plain_up(i: int) -> None:
            for f in files:
                s3.upload_file(str(f), "bench-bucket", f"plain-{i}/{f.name}")

        def ours_down(i: int) -> None:
            dest = work / f"ours-down-{i}"
            objectstore.stage_model("s3://bench-bucket/ours-0/", dest, env)
            shutil.rmtree(dest)

        def plain_down(i: int) -> None:
            dest = work / f"plain-down-{i}"
            dest.mkdir()
            for f in files:
                s3.download_file("bench-bucket", f"plain-0/{f.name}", str(dest / f.name))
            shutil.rmtree(dest)

        # config.json, so stage_model accepts the prefix as a model folder (uploaded outside the timing).
        s3.put_object(Bucket="bench-bucket", Key="ours-0/config.json", Body=b"{}")
        results = {}
        for name, ours, plain in (("upload", ours_up, plain_up), ("download", ours_down, plain_down)):
            t_plain, t_ours = _median_seconds(plain, ours, args.repeat)
            mb = total / 1e6
            results[name] = {
                "plain_boto3_MBps": round(mb / t_plain, 1),
                "kubetune_MBps": round(mb / t_ours, 1),
                "ratio_kubetune_over_plain": round(t_plain / t_ours, 3),
            }
        print(json.dumps({"bytes": total, "files": len(files), "repeat": args.repeat, "server": "moto (loopback)", **results}, indent=2))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
