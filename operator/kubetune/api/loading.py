"""Reading FineTuneJobs from YAML/JSON text, the way kubectl would.

PyYAML implements YAML 1.1, where ``1e-5`` is a *string*; kubectl and the API
server read it as the number 1e-05.  A learning rate written the way every
tutorial writes it must therefore parse as a float here too, or ``kubetune
validate`` would reject what ``kubectl apply`` accepts.  The loader itself,
with its size, depth and alias bounds, lives in :mod:`kubetune.api.safeyaml`.
"""

from __future__ import annotations

from .safeyaml import InputError, load_documents, read_documents

__all__ = ["InputError", "load_documents", "read_documents"]
