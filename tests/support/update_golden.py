"""Regenerate tests/render/golden/ from examples/ (one YAML file of rendered objects per example).

Usage: ``.venv/bin/python -m tests.support.update_golden``; review the diff before committing:
a golden change is a change to what users get in their cluster.
"""

from __future__ import annotations

import sys

from tests.support.renderlib import (  # run with `python -m` from the repository root (.ci/regen)
    EXAMPLES,
    GOLDEN,
    OPERATOR_EXAMPLES,
    OPERATOR_OPTIONS,
    TRAINJOB_OPTIONS,
    example_files,
    golden_path,
    golden_text,
    operator_golden_path,
    trainjob_golden_path,
)


def main() -> int:
    wanted = set()
    plain = [(example, golden_path(example), None) for example in example_files()]
    operator = [
        (EXAMPLES / name, operator_golden_path(EXAMPLES / name), OPERATOR_OPTIONS) for name in OPERATOR_EXAMPLES
    ]
    trainjob = [(example, trainjob_golden_path(example), TRAINJOB_OPTIONS) for example in example_files()]
    for example, target, options in plain + operator + trainjob:
        wanted.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = golden_text(example, options)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print(f"updated {target.relative_to(GOLDEN.parent.parent.parent)}")
    for stale in GOLDEN.rglob("*.yaml"):
        if stale not in wanted:
            stale.unlink()
            print(f"removed {stale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
