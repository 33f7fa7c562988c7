"""A package so that the test helpers import as ``tests.support`` (tests/support/__init__.py) and
tests/conftest.py as ``tests.conftest``."""
