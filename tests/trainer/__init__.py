"""A package only so its conftest.py is imported as tests.trainer.conftest, never as the top-level
``conftest`` the controller tests import their helpers from (mixed runs: pytest tests/controller tests/trainer)."""
