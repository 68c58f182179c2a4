"""A pytest plugin: a run that skipped or xfailed a test not allowed in tests/allowed_skips.py fails.

A skipped test reports "s" and the run still exits 0, so a test that silently stopped running (a server that
was not there, a tool that was not installed) looks like a test that passes. This plugin collects every skip
(of a test or of a whole module at collection), xfail and unexpected xpass, and when any of them is not on
the allow-list it names them at the end of the report and turns exit status 0 into 1.

It is on in every run tests/conftest.py loads, `make test` and CI included: a newcomer's machine that lacks
something should fail loudly too, with the reason pytest gave. To look at a run without it (never in CI):
``pytest -p no:tests.skip_guard``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest

from tests.allowed_skips import ALLOWED, AllowedSkip


@dataclass(frozen=True)
class Skip:
    nodeid: str
    kind: str  # "skipped", "xfailed" or "xpassed"
    reason: str


def check_allow_list(entries: Iterable[AllowedSkip]) -> None:
    """Refuse an entry that explains nothing or whose pattern does not compile."""
    for entry in entries:
        if not entry.why.strip():
            raise pytest.UsageError(f"tests/allowed_skips.py: the entry for {entry.nodeid!r} gives no reason")
        for field in (entry.nodeid, entry.reason):
            try:
                re.compile(field)
            except re.error as e:
                raise pytest.UsageError(f"tests/allowed_skips.py: bad pattern {field!r}: {e}") from None


def unlisted(skips: Iterable[Skip], allowed: Sequence[AllowedSkip]) -> list[Skip]:
    """The skips that no allow-list entry matches (node id and reason both)."""
    return [
        s
        for s in skips
        if not any(re.search(a.nodeid, s.nodeid) and re.search(a.reason, s.reason) for a in allowed)
    ]


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return str(wasxfail)
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _as_skip(report: pytest.TestReport | pytest.CollectReport) -> Skip | None:
    if hasattr(report, "wasxfail"):
        kind = "xfailed" if report.skipped else "xpassed" if report.passed else ""
        return Skip(report.nodeid, kind, _reason(report)) if kind else None
    if report.skipped:
        return Skip(report.nodeid, "skipped", _reason(report))
    return None


class _Guard:
    """The hooks, with the run's findings kept on the instance registered for this config."""

    def __init__(self) -> None:
        self.found: list[Skip] = []
        self.bad: list[Skip] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        skip = _as_skip(report)
        if skip is not None:
            self.found.append(skip)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        skip = _as_skip(report)
        if skip is not None:
            self.found.append(skip)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.bad = unlisted(self.found, ALLOWED)
        if self.bad and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.bad:
            return
        terminalreporter.write_sep(
            "=", f"{len(self.bad)} skip(s) not allowed: the run fails", red=True, bold=True
        )
        for s in self.bad:
            terminalreporter.write_line(f"{s.kind.upper()} {s.nodeid}: {s.reason}")
        terminalreporter.write_line(
            "Make the test run (start what it needs, or install it in scripts/setup.sh), or add an entry "
            "with its reason to tests/allowed_skips.py."
        )


def pytest_configure(config: pytest.Config) -> None:
    check_allow_list(ALLOWED)
    config.pluginmanager.register(_Guard(), "civmatrix-skip-guard")
