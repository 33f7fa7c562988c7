"""Run one command and print its wall time and the peak RSS of its whole process tree's largest member.

``ru_maxrss`` of RUSAGE_CHILDREN is the largest resident set of any waited-for
descendant, so each measured command runs under its own copy of this wrapper.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> int:
    started = time.monotonic()
    code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {"exit": code, "seconds": round(time.monotonic() - started, 1), "peakRssMiB": round(peak_kib / 1024)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
