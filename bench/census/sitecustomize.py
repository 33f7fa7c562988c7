"""Process census hook (bench/process_census.py puts this directory on PYTHONPATH; never installed).

Every Python process that starts with ``PROCESS_CENSUS_DIR`` set writes one JSON file there: its argv,
pid, parent pid, and, at exit, its CPU (user+sys of itself, and of the children it waited for) and which
heavy packages it imported.  A process killed by a signal it does not handle keeps its start record only.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import signal
import sys
import time

_DIR = os.environ.get("PROCESS_CENSUS_DIR")
_HEAVY = ("torch", "transformers", "llamafactory", "deepspeed", "accelerate", "datasets", "trl", "peft", "kubetune")


def _write(final: bool) -> None:
    assert _DIR is not None
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": list(sys.argv) if hasattr(sys, "argv") else [],
        "orig_argv": list(getattr(sys, "orig_argv", [])),
        "cwd": os.getcwd(),
        "start": _START,
        "end": time.time() if final else None,
        "final": final,
        "cpu_self": me.ru_utime + me.ru_stime,
        "cpu_children": kids.ru_utime + kids.ru_stime,
        "maxrss_kb": me.ru_maxrss,
        "imported": [name for name in _HEAVY if name in sys.modules],
        "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
        "first_import": _FIRST,
    }
    path = os.path.join(_DIR, f"{os.getpid()}-{int(_START * 1e6)}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)


_FIRST: dict[str, list[str]] = {}
"""For each heavy package, the code that imported it first (a real import, not a find_spec probe)."""


class _Watch:
    """A meta-path finder that only looks: it notes who imports a heavy package first, finds nothing."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name in _HEAVY and name not in _FIRST:
            import traceback

            stack = traceback.extract_stack()[:-1]
            if any(f.filename.endswith("importlib/util.py") or f.filename == "<frozen importlib.util>" for f in stack):
                return None  # importlib.util.find_spec: a probe (is_X_available), not an import
            frames = [f for f in stack if not f.filename.startswith("<frozen")]
            _FIRST[name] = [f"{f.filename}:{f.lineno} {f.name}" for f in frames[-4:]]
        return None


if _DIR:
    _START = time.time()
    sys.meta_path.insert(0, _Watch())  # type: ignore[arg-type]
    try:
        _write(False)
        atexit.register(_write, True)

        # SIGTERM's default kills without atexit: record, then die the same way.
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

            def _on_term(signum: int, frame: object) -> None:
                try:
                    _write(True)
                finally:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)

            signal.signal(signal.SIGTERM, _on_term)
    except Exception:  # a census must never break the process it counts
        pass
