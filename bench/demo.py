"""Wall time and peak RSS of ``kubetune demo`` (the README's main command; target: < 3 min on 2 CPU cores).

.venv/bin/python bench/demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kubetune-demo-bench-"))
    kubetune = Path(sys.executable).with_name("kubetune")
    out = subprocess.run(
        [sys.executable, str(HERE / "train_rss.py"), str(kubetune), "demo", "--work", str(work)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout)
    print(json.dumps({"command": "kubetune demo", **figures, "work": str(work)}))
    return 0 if figures["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
