"""``python -m kubetune.trainer.fetchresults``: copy a succeeded job's results from its bucket prefix
into a folder, for a serving pod that does not mount the outputs volume (spec.serve.modelSource bucket,
engine vllm: the init container ``fetch-results`` of the trainer image, into an emptyDir).

Driven by the environment only (no argument: no spec value reaches a command line): the prefix
``$KUBETUNE_RESULTS_URI`` (``<outputs.uri><namespace>/<job>/``), the folder ``$KUBETUNE_RESULTS_DIR``
and spec.storage.objectStore as the training pods get it (``KUBETUNE_S3_*``, the keys by secretKeyRef).
Only the files the job's ``_KUBETUNE_COMPLETE`` marker lists are copied (the results, never the
checkpoints: :func:`kubetune.trainer.objectstore.download_results`); without the marker nothing is
served.  Exit 0 when copied; a StorageError's exit code (2, or 130 for a transient failure: the
kubelet restarts the init container) with one line naming the URI otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kubetune.api import contract

from .errors import StorageError


def run(env: Mapping[str, str]) -> int:
    uri = env.get(contract.ENV_RESULTS_URI, "")
    dest = env.get(contract.ENV_RESULTS_DIR, "")
    if not uri or not dest:
        print(
            f"fetch-results: {contract.ENV_RESULTS_URI} and {contract.ENV_RESULTS_DIR} must both be set",
            file=sys.stderr,
        )
        return contract.EXIT_CONFIG
    from .objectstore import download_results  # noqa: PLC0415 - boto3 is imported only here

    try:
        fetched = download_results(uri, Path(dest), env)
    except StorageError as exc:
        print(f"fetch-results: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"fetch-results: {len(fetched)} file(s) of {uri} copied to {dest}")
    return contract.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print(
            "usage: python -m kubetune.trainer.fetchresults  (driven by $KUBETUNE_RESULTS_URI, "
            "$KUBETUNE_RESULTS_DIR and KUBETUNE_S3_*)",
            file=sys.stderr,
        )
        return contract.EXIT_CONFIG
    return run(dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
