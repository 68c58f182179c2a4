"""Shared fixtures: real slapd, Synapse and PostgreSQL processes live in tests/fixtures/.

tests/skip_guard.py fails a run in which a test was skipped or xfailed without an entry in
tests/allowed_skips.py: a test that did not run must never look like a test that passed.
"""

pytest_plugins = [
    "tests.fixtures.slapd",
    "tests.fixtures.synapse",
    "tests.fixtures.postgres",
    "tests.skip_guard",
    "pytester",
]
