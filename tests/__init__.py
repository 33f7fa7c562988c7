"""A package only so that tests/conftest.py is imported as ``tests.conftest``, never as the
top-level ``conftest`` module the controller tests import their helpers from."""
