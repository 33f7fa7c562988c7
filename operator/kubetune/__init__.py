"""kubetune: fine-tune LLMs on Kubernetes with LLaMA-Factory.

The package is layered (enforced by import-linter, see pyproject.toml):
``api`` (pydantic models, the single source of truth) -> ``render`` (pure
functions) -> ``controller`` / ``cli``.  ``trainer`` runs inside the training
image and depends on ``api`` only.  Nothing here imports torch, transformers or
llamafactory at module level; those are the optional ``train`` extra.
"""

__version__ = "0.1.0"
