"""Upload and download throughput of kubetune's s3:// code against plain ``aws s3 cp --recursive``
of the same files, on the same S3 protocol server (moto's server mode on loopback, IAM auth on:
tests/support/kt_s3.py), in the same run.

    .venv/bin/python bench/s3_throughput.py [--shards 3] [--shard-mb 50] [--small 100] [--repeat 3]

Two trees, each moved up and down by both tools:

* ``model``: ``--shards`` weight files of ``--shard-mb`` MB, plus config/tokenizer JSON files;
  kubetune uploads it as the trainer uploads a job's results (``upload_results`` then
  ``mark_complete``, the job's marker last) and downloads it as it stages ``spec.model.uri``
  (``stage_model``: listing, ETag file, temporary names renamed into place);
* ``checkpoint``: ``--small`` files of 16-256 KB plus a 2 MB weights file and trainer_state.json;
  kubetune uploads it as the checkpoint uploader does (``upload_checkpoint``: the marker check,
  the old marker deleted, every file, the marker last) and downloads it as a restarted job
  restores it (``restore_checkpoint``: marker lookup, listing, every file).

The CLI is awscli from PyPI, installed with ``pip install --target .cache/awscli awscli==1.46.3``
on first use.  It does not touch the project's venv: awscli 1.46 requires no botocore (its wheel's
METADATA lists docutils, PyYAML, colorama, rsa, jmespath, python-dateutil, urllib3) and carries its
own copy (awscli/botocore 1.43.62, awscli/s3transfer 0.19.2).  ``--aws PATH`` runs another ``aws``.
The CLI runs with its defaults (10 requests in flight, 8 MiB parts, CRC32 checksums on upload);
each of its runs pays the CLI's start (``aws --version``), printed apart so it can be subtracted.

Noise (two shared cores): one warm-up round of everything, not counted; then ``--repeat``
rounds, the two tools interleaved and their order swapped every round.  Printed per case: the
best and the median MB/s of each, the spread ((max - min) / median of the times), and
kubetune/aws as ratios of throughput (1.0 = as fast as the CLI; > 1 faster).  Loopback and moto
measure the clients' overhead and concurrency, not a real store's bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]  # kubetune, and the package tests.support

from tests.support.kt_s3 import S3Server  # noqa: E402

from kubetune.trainer import objectstore  # noqa: E402

AWSCLI = "awscli==1.46.3"
AWSCLI_DIR = ROOT / ".cache" / "awscli"
BUCKET = "bench-bucket"


def aws_command(explicit: str | None) -> tuple[list[str], dict[str, str]]:
    """The aws CLI to run, and what its environment needs (PYTHONPATH for the --target install)."""
    if explicit:
        return [explicit], {}
    if not (AWSCLI_DIR / "awscli" / "__init__.py").is_file():
        print(
            f"installing {AWSCLI} into {AWSCLI_DIR} (pip --target; the venv is not touched)",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(AWSCLI_DIR), AWSCLI], check=True)
    return [sys.executable, "-m", "awscli"], {"PYTHONPATH": str(AWSCLI_DIR)}


def make_trees(work: Path, shards: int, shard_mb: int, small: int) -> dict[str, Path]:
    model = work / "model"
    model.mkdir(parents=True)
    for i in range(shards):
        (model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors").write_bytes(os.urandom(shard_mb * 1_000_000))
    for name, size in (
        ("config.json", 700),
        ("generation_config.json", 200),
        ("tokenizer.json", 7_000_000),
        ("tokenizer_config.json", 5_000),
        ("model.safetensors.index.json", 30_000),
    ):
        (model / name).write_bytes(os.urandom(size))
    ckpt = work / "checkpoint-100"
    ckpt.mkdir()
    for i in range(small):
        (ckpt / f"rng_state_{i:03d}.pth").write_bytes(os.urandom(16_000 + (i * 24_000) % 240_000))
    (ckpt / "adapter_model.safetensors").write_bytes(os.urandom(2_000_000))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 100}))
    return {"model": model, "checkpoint": ckpt}


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=3, help="weight files in the model tree")
    parser.add_argument("--shard-mb", type=int, default=50, help="size of each weight file (MB)")
    parser.add_argument("--small", type=int, default=100, help="small files in the checkpoint tree")
    parser.add_argument("--repeat", type=int, default=3, help="counted rounds (after one warm-up round)")
    parser.add_argument("--aws", help="an aws CLI to run instead of installing awscli from PyPI")
    args = parser.parse_args()

    aws, aws_env_extra = aws_command(args.aws)
    work = Path(tempfile.mkdtemp(prefix="kubetune-s3-bench-"))
    server = S3Server()
    began = time.perf_counter()
    try:
        env = server.env()
        admin = server.s3()
        admin.create_bucket(Bucket=BUCKET)
        config = work / "aws-config"
        config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
        aws_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(work),
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
            "AWS_ACCESS_KEY_ID": server.admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.admin.secret_access_key,
            **aws_env_extra,
        }

        def run_aws(*cli: str) -> None:
            subprocess.run(
                [*aws, "--endpoint-url", server.endpoint, *cli], env=aws_env, check=True, stdout=subprocess.DEVNULL
            )

        trees = make_trees(work, args.shards, args.shard_mb, args.small)
        sizes = {name: size_of(folder) for name, folder in trees.items()}
        counts = {name: sum(1 for p in folder.rglob("*") if p.is_file()) for name, folder in trees.items()}

        # The download sources, uploaded once by kubetune (outside the timing): both tools read these objects.
        objectstore.upload_results(f"s3://{BUCKET}/src/model/", trees["model"], env)
        objectstore.upload_checkpoint(f"s3://{BUCKET}/src/ckpt/", trees["checkpoint"], env, config_hash="bench")

        def clear(prefix: str) -> None:
            keys = [{"Key": str(o["Key"])} for o in objectstore.list_objects(admin, BUCKET, prefix)]
            for start in range(0, len(keys), 1000):
                admin.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[start : start + 1000]})

        def fresh(name: str) -> Path:
            path = work / name
            shutil.rmtree(path, ignore_errors=True)
            return path

        def kt_upload_model() -> None:  # trainer/main.py after training: the results, then the job's marker
            objectstore.upload_results(f"s3://{BUCKET}/kt/model/", trees["model"], env)
            objectstore.mark_complete(f"s3://{BUCKET}/kt/model/", trees["model"], env)

        def kt_upload_checkpoint() -> None:  # CheckpointUploader.poll
            objectstore.upload_checkpoint(f"s3://{BUCKET}/kt/ckpt/", trees["checkpoint"], env, config_hash="bench")

        def kt_download_model() -> None:  # spec.model.uri staging
            objectstore.stage_model(f"s3://{BUCKET}/src/model/", fresh("kt-model"), env)

        def kt_download_checkpoint() -> None:  # a restarted job on a fresh volume
            objectstore.restore_checkpoint(
                f"s3://{BUCKET}/src/ckpt/", fresh("kt-ckpt"), env, needs_optimizer=False, config_hash="bench"
            )

        def aws_cp(source: str, target: str) -> Callable[[], None]:
            return lambda: run_aws("s3", "cp", "--recursive", "--only-show-errors", source, target)

        def cleanup(*prefixes: str) -> Callable[[], None]:
            def run() -> None:
                for prefix in prefixes:
                    if prefix.startswith("/"):
                        shutil.rmtree(prefix, ignore_errors=True)
                    else:
                        clear(prefix)

            return run

        # name: (tree, kubetune, aws, cleanup after each timed run, not timed)
        cases: dict[str, tuple[str, Callable[[], None], Callable[[], None], Callable[[], None]]] = {
            "upload model": (
                "model",
                kt_upload_model,
                aws_cp(str(trees["model"]), f"s3://{BUCKET}/aws/model/"),
                cleanup("kt/model/", "aws/model/"),
            ),
            "upload checkpoint": (
                "checkpoint",
                kt_upload_checkpoint,
                aws_cp(str(trees["checkpoint"]), f"s3://{BUCKET}/aws/ckpt/checkpoint-100/"),
                cleanup("kt/ckpt/", "aws/ckpt/"),
            ),
            "download model": (
                "model",
                kt_download_model,
                aws_cp(f"s3://{BUCKET}/src/model/", str(work / "aws-model")),
                cleanup(str(work / "kt-model"), str(work / "aws-model")),
            ),
            "download checkpoint": (
                "checkpoint",
                kt_download_checkpoint,
                aws_cp(f"s3://{BUCKET}/src/ckpt/checkpoint-100/", str(work / "aws-ckpt")),
                cleanup(str(work / "kt-ckpt"), str(work / "aws-ckpt")),
            ),
        }

        def timed(action: Callable[[], None]) -> float:
            start = time.perf_counter()
            action()
            return time.perf_counter() - start

        startup: list[float] = []
        times: dict[str, dict[str, list[float]]] = {case: {"kubetune": [], "aws": []} for case in cases}
        for round_ in range(args.repeat + 1):  # round 0: warm-up, not counted
            startup.append(timed(lambda: run_aws("--version")))
            for case, (_, ours, theirs, cleanup) in cases.items():
                order = (
                    (("kubetune", ours), ("aws", theirs)) if round_ % 2 == 0 else (("aws", theirs), ("kubetune", ours))
                )
                for tool, action in order:
                    seconds = timed(action)
                    cleanup()
                    if round_ > 0:
                        times[case][tool].append(seconds)

        def stats(tool_times: list[float], size: int) -> dict[str, Any]:
            median = statistics.median(tool_times)
            return {
                "best_MBps": round(size / 1e6 / min(tool_times), 1),
                "median_MBps": round(size / 1e6 / median, 1),
                "spread": round((max(tool_times) - min(tool_times)) / median, 2),
                "seconds": [round(t, 3) for t in tool_times],
            }

        report: dict[str, Any] = {
            "server": "moto server (loopback, IAM auth on)",
            "aws": subprocess.run(
                [*aws, "--version"], env=aws_env, capture_output=True, text=True, check=True
            ).stdout.strip(),
            "rounds": args.repeat,
            "trees": {name: {"bytes": sizes[name], "files": counts[name]} for name in trees},
            "aws_startup_s_median": round(statistics.median(startup[1:]), 3),
        }
        for case, (tree, *_rest) in cases.items():
            k, a = times[case]["kubetune"], times[case]["aws"]
            report[case] = {
                "kubetune": stats(k, sizes[tree]),
                "aws_s3_cp": stats(a, sizes[tree]),
                "kubetune_over_aws_best": round(min(a) / min(k), 2),
                "kubetune_over_aws_median": round(statistics.median(a) / statistics.median(k), 2),
            }
        report["wall_s"] = round(time.perf_counter() - began, 1)
        print(json.dumps(report, indent=2))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
