"""The controller tests' fixtures (the emulated cluster, the operator's config, the operator in its
thread) come from tests/support/harness.py; the helpers the tests call are imported from there too."""

from tests.support.harness import cluster, config, operator  # noqa: F401 - fixtures
