"""Cold start of `kubetune plan` on every example: figures against the 0.5 s target of issue 14.

    .venv/bin/python bench/plan_coldstart.py [-n RUNS] [--gpu H100]

Every file under examples/ that holds a FineTuneJob is planned by a fresh
`kubetune plan FILE --gpu NAME` process, RUNS times, and the median and minimum
wall and CPU (user + system) seconds of those processes are printed.  On a
shared machine wall time measures the neighbours as much as kubetune, so CPU
time is printed beside it, with the load average before and after.

Two cases, because Python's bytecode cache changes the answer:

* ``cached``: the package's ``.pyc`` files exist (what ``pip install`` leaves,
  and what any second run of an editable install has).  The cache is written to
  a temporary ``PYTHONPYCACHEPREFIX`` by one warm-up run, so the repository is
  left untouched.
* ``source``: every module of kubetune is compiled from source on every run:
  ``PYTHONDONTWRITEBYTECODE=1`` and no cache prefix, as on the agents' machines,
  where a checkout never gets a ``__pycache__``; third-party packages use the
  .pyc files pip wrote.  (Where the checkout does hold ``__pycache__`` folders
  this case reads them, and the script says so.)

Then one in-process breakdown says where a cold process spends its time.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def examples() -> list[Path]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        if "kind: FineTuneJob" in path.read_text(encoding="utf-8"):
            found.append(path)
    return found


def kubetune_command() -> list[str]:
    script = Path(sys.executable).with_name("kubetune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kubetune"]


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, exit code) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
    return wall, cpu, proc.returncode


def environments(cache_dir: Path) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {
        "cached": {**base, "PYTHONPYCACHEPREFIX": str(cache_dir)},
        "source": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
    }


def in_process_breakdown() -> list[tuple[str, float]]:
    """Seconds per phase of a cold `kubetune plan`, measured in a child so its imports are cold."""
    code = r"""
import sys, time
t0 = time.perf_counter(); marks = []
def mark(name):
    global t0
    t = time.perf_counter(); marks.append((name, t - t0)); t0 = t
import pydantic, yaml; mark("import pydantic + yaml")
import kubetune.api; mark("import kubetune.api (model classes)")
import kubetune.render, kubetune.plan; mark("import kubetune.render + plan")
import kubetune.cli as cli; parser = cli.build_parser(); mark("import cli + build the parser")
args = parser.parse_args(["plan", sys.argv[1], "--gpu", "H100"])
jobs, problems = cli._load_valid_jobs(args.files); mark("read + validate (first validation builds the validators)")
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    cli.cmd_plan(args)
mark("plan again + print (in-process, warm)")
for name, s in marks: print(f"{name}\t{s}")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        target = str(REPO / "examples" / "finetune-lora.yaml")
        subprocess.run(
            [sys.executable, "-c", code, target], check=True, capture_output=True, env=env, cwd=REPO
        )  # warm the cache
        out = subprocess.run(
            [sys.executable, "-c", code, target], check=True, capture_output=True, env=env, cwd=REPO, text=True
        ).stdout
    return [(name, float(s)) for name, s in (line.split("\t") for line in out.splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="fresh processes per example and case (default 7)")
    parser.add_argument("--gpu", default="H100", help="--gpu given to kubetune plan (a verdict needs one)")
    args = parser.parse_args()

    files = examples()
    cmd = kubetune_command()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as cache:
        envs = environments(Path(cache))
        python = statistics.median(run_once([sys.executable, "-c", "pass"], envs["cached"])[0] for _ in range(5))
        print(
            f"{len(files)} examples x {args.runs} runs per case; {os.cpu_count()} CPUs; "
            f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
        )
        print(
            f"command: {' '.join(Path(c).name for c in cmd[:1])} {' '.join(cmd[1:])} plan FILE --gpu {args.gpu}; "
            f"bare `python -c pass`: {python:.3f} s wall"
        )
        if any((REPO / "operator" / "kubetune").rglob("__pycache__")):
            print("note: this checkout holds __pycache__ folders, so the 'source' case reads bytecode too")
        run_once([*cmd, "plan", str(files[0]), "--gpu", args.gpu], envs["cached"])  # writes the cache
        worst: dict[str, float] = {}
        print(
            f"\n{'example':42s} {'case':7s} {'wall med':>8s} {'wall min':>8s} {'CPU med':>8s} {'CPU min':>8s}  "
            f"exit  vs {TARGET_S} s (CPU med)"
        )
        for path in files:
            for case, env in envs.items():
                runs = [run_once([*cmd, "plan", str(path), "--gpu", args.gpu], env) for _ in range(args.runs)]
                walls, cpus, codes = zip(*runs)
                cpu_med = statistics.median(cpus)
                worst[case] = max(worst.get(case, 0.0), cpu_med)
                verdict = "under" if cpu_med < TARGET_S else "OVER"
                print(
                    f"{str(path.relative_to(REPO)):42s} {case:7s} {statistics.median(walls):8.3f} {min(walls):8.3f} "
                    f"{cpu_med:8.3f} {min(cpus):8.3f}  {sorted(set(codes))!s:4s}  {verdict}"
                )
    load_after = os.getloadavg()
    print("\nworst median CPU per example: " + ", ".join(f"{case} {s:.3f} s" for case, s in worst.items()))
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print("\nwhere a cold process spends its time (bytecode cached, examples/finetune-lora.yaml):")
    for name, seconds in in_process_breakdown():
        print(f"  {name:58s} {1000 * seconds:7.1f} ms")


if __name__ == "__main__":
    main()
