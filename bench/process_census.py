"""Census of the Python processes a test starts: who starts them, what they import, what CPU they use.

    nice -n 19 .venv/bin/python bench/process_census.py tests/localrun/test_demo.py [-k EXPR] [--out DIR]
    .venv/bin/python bench/process_census.py --report DIR      # the table again, from a run's records

Runs pytest (one process: no -n) with ``bench/census`` first on PYTHONPATH: its sitecustomize makes
every Python process that inherits the environment write a record (argv, parent, CPU of itself and of the
children it waited for, which of torch / transformers / llamafactory / deepspeed it imported).  A process
whose environment drops PYTHONPATH or PROCESS_CENSUS_DIR is not counted (its CPU still shows in its
parent's ``children`` figure).  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HEAVY = ("torch", "transformers", "llamafactory", "deepspeed")


def role(argv: list[str], orig: list[str]) -> str:
    words = orig[1:] if orig else argv
    text = " ".join(words)
    for needle, name in (
        ("torch.distributed.run", "torchrun"),
        ("torchrun", "torchrun"),
        ("accelerate", "accelerate"),
        ("llamafactory-cli", "llamafactory-cli"),
        ("llamafactory.launcher", "lf-launcher"),
        ("launcher.py", "lf-launcher"),
        ("kubetune.trainer", "kubetune.trainer"),
    ):
        if needle in text:
            return f"{name}: {text[:110]}"
    return text[:120]


def load(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def report(directory: Path) -> None:
    records = load(directory)
    by_pid = {r["pid"]: r for r in records}
    pytest_pids = {r["pid"] for r in records if r["orig_argv"][1:3] == ["-m", "pytest"]}

    def test_of(r: dict[str, Any]) -> str:
        seen = set()
        while r and not r["test"] and r["ppid"] in by_pid and r["pid"] not in seen:
            seen.add(r["pid"])
            r = by_pid[r["ppid"]]
        return (r["test"] if r else "").rsplit(" (", 1)[0] or "?"

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["pid"] in pytest_pids:
            continue
        groups[test_of(r)].append(r)
    print(f"{'test':70} {'procs':>5} {'heavy':>5} {'cpu s':>7}")
    for test, procs in sorted(groups.items(), key=lambda kv: -sum(p["cpu_self"] for p in kv[1])):
        heavy = [p for p in procs if set(HEAVY) & set(p["imported"])]
        print(f"{test[-70:]:70} {len(procs):5} {len(heavy):5} {sum(p['cpu_self'] for p in procs):7.1f}")
        for p in sorted(procs, key=lambda p: p["start"]):
            mods = ",".join(m[:5] for m in p["imported"] if m in HEAVY) or "-"
            flag = "" if p["final"] else " (no exit record)"
            print(
                f"    pid {p['pid']:>7} <- {p['ppid']:>7} self {p['cpu_self']:6.1f} kids {p['cpu_children']:6.1f}"
                f" [{mods}] {role(p['argv'], p['orig_argv'])}{flag}"
            )
    total_heavy = sum(1 for r in records if r["pid"] not in pytest_pids and set(HEAVY) & set(r["imported"]))
    print(f"heavy processes: {total_heavy}; all processes: {len(records) - len(pytest_pids)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", type=Path, help="print the table of an earlier run's records")
    parser.add_argument("--out", type=Path, help="where the records go (default: a new temporary directory)")
    args, pytest_args = parser.parse_known_args()
    if args.report:
        report(args.report)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="census-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PROCESS_CENSUS_DIR"] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "census"), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *pytest_args]
    rc = subprocess.run(cmd, env=env).returncode
    wall = time.monotonic() - start
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"[census] records in {out}; pytest exit {rc}; wall {wall:.1f} s; CPU (RUSAGE_CHILDREN) "
        f"{kids.ru_utime + kids.ru_stime:.1f} s"
    )
    report(out)
    sys.exit(rc)


if __name__ == "__main__":
    main()
