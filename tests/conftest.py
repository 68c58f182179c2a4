"""Shared fixtures: real slapd and Synapse processes live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.slapd", "tests.fixtures.synapse"]
