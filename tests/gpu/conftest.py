"""GPU tests reuse the trainer tests' corpus fixture (the tiny docsets of tests/integration)."""

from tests.integration.test_trainer import corpus  # noqa: F401 (a pytest fixture, found here by name)
