"""The skip guard (tests/skip_guard.py) fails a run that skipped or xfailed a test it does not allow.

The runs are real pytest processes on throw-away test files (``pytester``), loading the guard the way
tests/conftest.py does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.allowed_skips import ALLOWED, AllowedSkip
from tests.skip_guard import Skip, check_allow_list, unlisted

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["tests.skip_guard"]\n')
    return pytester


def test_an_unlisted_skip_fails_a_run_whose_tests_all_passed(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_probe="""
        import pytest

        def test_runs():
            assert True

        def test_needs_a_server():
            pytest.skip("no server on 127.0.0.1:5432")
        """
    )
    result = run.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*1 skip(s) not allowed: the run fails*",
            "SKIPPED test_probe.py::test_needs_a_server: no server on 127.0.0.1:5432",
        ]
    )


def test_a_skipped_module_an_xfail_and_an_xpass_fail_the_run_too(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_gone="""
        import pytest

        pytest.importorskip("civmatrix_no_such_module")

        def test_never_collected():
            pass
        """,
        test_known="""
        import pytest

        @pytest.mark.xfail(reason="known bug")
        def test_fails():
            assert False

        @pytest.mark.xfail(reason="fixed by now")
        def test_passes():
            assert True
        """,
    )
    result = run.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random(
        [
            "*3 skip(s) not allowed*",
            "SKIPPED test_gone.py: *civmatrix_no_such_module*",
            "XFAILED test_known.py::test_fails: known bug",
            "XPASSED test_known.py::test_passes: fixed by now",
        ]
    )


def test_a_run_without_skips_is_left_alone(run: pytest.Pytester) -> None:
    run.makepyfile(test_fine="def test_fine():\n    assert True\n")
    result = run.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert "not allowed" not in result.stdout.str()


def test_a_failing_run_keeps_its_own_exit_status(run: pytest.Pytester) -> None:
    run.makepyfile(test_bad="def test_bad():\n    assert False\n")
    assert run.runpytest_subprocess("-p", "no:cacheprovider").ret == pytest.ExitCode.TESTS_FAILED
    run.makepyfile(test_bad="import pytest\n\ndef test_stop():\n    raise KeyboardInterrupt\n")
    assert run.runpytest_subprocess("-p", "no:cacheprovider").ret == pytest.ExitCode.INTERRUPTED


def test_an_entry_allows_only_its_tests_with_its_reason() -> None:
    allowed = [AllowedSkip(r"^tests/test_x\.py::test_gpu\b", r"^no GPU", "needs a GPU; CI has none")]
    ok = Skip("tests/test_x.py::test_gpu[cuda]", "skipped", "no GPU on this machine")
    other_reason = Skip("tests/test_x.py::test_gpu[cuda]", "skipped", "no PostgreSQL")
    other_test = Skip("tests/test_x.py::test_gpu_free", "skipped", "no GPU on this machine")
    assert unlisted([ok, other_reason, other_test], allowed) == [other_reason, other_test]


def test_an_entry_without_a_reason_or_with_a_broken_pattern_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match="gives no reason"):
        check_allow_list([AllowedSkip("test_x", "", "  ")])
    with pytest.raises(pytest.UsageError, match=r"bad pattern '\('"):
        check_allow_list([AllowedSkip("(", "", "because")])
    check_allow_list(ALLOWED)  # the committed list itself is well-formed
