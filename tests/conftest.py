"""Shared fixtures: real slapd, Synapse and PostgreSQL processes live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.slapd", "tests.fixtures.synapse", "tests.fixtures.postgres"]
