"""The skips and xfails a test run may report; any other fails the run (tests/skip_guard.py).

An entry allows the tests whose node id matches ``nodeid`` (a regular expression, searched) when the reason
pytest reports matches ``reason`` (also searched). ``why`` says why the test cannot run everywhere and what
would make it run: an entry without a reason is refused, so the list cannot silently grow.

The project's rule is that tests start the servers they need and a machine lacks nothing that
scripts/setup.sh does not install, so this list is meant to stay empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AllowedSkip:
    nodeid: str
    reason: str
    why: str


ALLOWED: tuple[AllowedSkip, ...] = ()
