"""The one retry policy as pure rules: jitter, caps, retry-after, and what is never replayed.

How the homeserver client applies it over HTTP is in test_homeserver_client.py; how it caps nio's own
retries in the bot is in test_bot_nio_retries.py.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from bridge.matrix.retry import (
    Backoff,
    Failure,
    RetryPolicy,
    classify_status,
    retry_after_seconds,
)

POLICY = RetryPolicy(max_retries=5, base_delay=0.5, multiplier=2.0, max_delay=30.0, max_retry_after=300.0)


@pytest.mark.parametrize("retry", range(8))
def test_backoff_is_jittered_within_bounds_and_capped(retry: int) -> None:
    raw = 0.5 * 2.0**retry
    delays = [POLICY.backoff(retry, random.Random(seed)) for seed in range(200)]
    assert all(min(30.0, 0.8 * raw) <= d <= min(30.0, 1.4 * raw) for d in delays)
    if 1.4 * raw < 30.0:
        # Jittered: two clients failing together do not retry in lockstep.
        assert len(set(delays)) > 150
        assert max(delays) - min(delays) > 0.4 * raw


def test_backoff_stays_capped_for_any_number_of_failures() -> None:
    rng = random.Random(1)
    assert POLICY.backoff(10_000, rng) == 30.0  # no float overflow after a long outage


def test_retry_after_is_honoured_and_capped() -> None:
    rng = random.Random(3)
    wait = POLICY.next_delay(Failure.RATE_LIMITED, 0, rng, replayable=False, retry_after=2.5)
    assert wait == 2.5  # the server's wait, not the backoff, and even for a POST (nothing happened)
    assert POLICY.next_delay(Failure.RATE_LIMITED, 0, rng, replayable=True, retry_after=300.0) == 300.0
    # Longer than max_retry_after: give up and report instead of sleeping for an hour.
    assert POLICY.next_delay(Failure.RATE_LIMITED, 0, rng, replayable=True, retry_after=3600.0) is None
    # No wait given: the jittered backoff.
    fallback = POLICY.next_delay(Failure.RATE_LIMITED, 2, rng, replayable=True)
    assert fallback is not None and 1.6 <= fallback <= 2.8


def test_retry_after_body_wins_over_header() -> None:
    assert retry_after_seconds({"retry_after_ms": 1500}, "9") == 1.5
    assert retry_after_seconds({}, "2") == 2.0
    assert retry_after_seconds({"retry_after_ms": True}, None) is None  # a bool is no duration
    assert retry_after_seconds({}, "Wed, 21 Oct 2026 07:28:00 GMT") is None  # HTTP-date: use the backoff
    assert retry_after_seconds({"retry_after_ms": -5}, "-3") == 0.0


def test_a_request_that_may_have_been_applied_is_never_replayed() -> None:
    rng = random.Random(5)
    for failure in (Failure.LOST, Failure.UNAVAILABLE):
        assert POLICY.next_delay(failure, 0, rng, replayable=False) is None
        assert POLICY.next_delay(failure, 0, rng, replayable=True) is not None
    # Nothing was sent when the connection never opened: even a POST is retried.
    assert POLICY.next_delay(Failure.UNREACHABLE, 0, rng, replayable=False) is not None
    # createRoom opts out of 429 retries (synapse#13427: it may have made the room anyway).
    assert (
        POLICY.next_delay(Failure.RATE_LIMITED, 0, rng, replayable=False, retry_on_429=False, retry_after=1)
        is None
    )


def test_retries_are_bounded_and_plain_errors_not_retried() -> None:
    rng = random.Random(9)
    assert POLICY.next_delay(Failure.UNREACHABLE, 4, rng, replayable=True) is not None
    for failure in Failure:
        assert POLICY.next_delay(failure, 5, rng, replayable=True, retry_after=0.1) is None
    assert POLICY.next_delay(Failure.REFUSED, 0, rng, replayable=True) is None


@pytest.mark.parametrize(
    ("status", "errcode", "failure"),
    [
        (429, None, Failure.RATE_LIMITED),
        (400, "M_LIMIT_EXCEEDED", Failure.RATE_LIMITED),
        (502, None, Failure.UNAVAILABLE),
        (503, "M_UNKNOWN", Failure.UNAVAILABLE),
        (504, None, Failure.UNAVAILABLE),
        (500, "M_UNKNOWN", Failure.REFUSED),
        (401, "M_UNKNOWN_TOKEN", Failure.REFUSED),
        (403, "M_FORBIDDEN", Failure.REFUSED),
    ],
)
def test_error_answers_are_classified(status: int, errcode: str | None, failure: Failure) -> None:
    assert classify_status(status, errcode) is failure


def test_inconsistent_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(base_delay=10.0, max_delay=1.0)
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(max_retries=-1)


async def test_backoff_grows_until_a_success_resets_it() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=60.0)
    backoff = Backoff(policy, rng=random.Random(11), sleep=sleep)
    for _ in range(8):
        await backoff.wait()
    assert backoff.failures == 8
    assert all(min(60.0, 0.8 * 2**i) <= d <= min(60.0, 1.4 * 2**i) for i, d in enumerate(slept))
    assert slept[-1] == 60.0  # 1 s doubling passes a minute by the seventh failure: capped
    backoff.reset()
    await backoff.wait()
    assert 0.8 <= slept[-1] <= 1.4


def test_the_policy_and_the_bot_config_load_no_transport() -> None:
    """The policy is pure, so the bot's config (which holds one) parses without loading nio or aiohttp."""
    code = (
        "import sys\n"
        "import bridge.matrix.retry, bridge.bot.config\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nio', 'aiohttp')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
