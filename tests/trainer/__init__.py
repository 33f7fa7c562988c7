"""A package, so its test modules import as ``tests.trainer.test_*`` (their fixtures: tests/conftest.py)."""
