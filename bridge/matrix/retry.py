"""The one retry policy: when an HTTP call to the homeserver is tried again, and after how long.

Every retry the project makes goes through :class:`RetryPolicy`: the homeserver client's transport
(:mod:`bridge.matrix.transport`) asks :meth:`RetryPolicy.next_delay` after each failed attempt, the bot's
long-running loops (sync, send lanes, task restarts) wait through a :class:`Backoff` over the same policy,
and the bot caps matrix-nio's own internal retries with it. The module is pure (no I/O, no clock): time and
randomness are passed in, so tests check the rules without waiting.

Rules
-----
Rule 1. ``429 M_LIMIT_EXCEEDED``: wait ``retry_after_ms`` (body) or ``Retry-After`` (header, seconds), else
the backoff, then retry. A server asking for longer than ``max_retry_after`` is not waited for: the caller
gets the error (a run reports it rather than hanging). Synapse checks rate limits before acting, so a 429
normally means nothing happened; the known exception is ``createRoom`` (synapse#13427: the room exists, the
retry then says the alias is taken), so a request can opt out (``retry_on_429=False``).

Rule 2. 502/503/504, a timeout or a broken connection: retry with capped exponential backoff and jitter
(``min(max_delay, base_delay * multiplier**n * uniform(0.8, 1.4))``, as Synapse's ``util/retryutils.py``) —
but only replayable (idempotent) requests.

Rule 3. A connection that could not even be opened (refused, DNS) sent nothing, so any request is retried.

Rule 4. A non-idempotent request that may have reached the server is never replayed.

Rule 5. Anything else (auth errors, 4xx, a plain 500) is not retried.

Rule 6. At most ``max_retries`` retries per call. Loops that must outlive an outage (the bot's) retry without
a count limit, but each wait is still the capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

RETRY_STATUSES: Final = frozenset({502, 503, 504})
# 2.0 ** 1024 overflows a float; long before that every delay is max_delay anyway.
_MAX_EXPONENT: Final = 64

Sleep = Callable[[float], Awaitable[None]]


class Failure(enum.Enum):
    """How one attempt failed, as far as the retry decision cares."""

    UNREACHABLE = "unreachable"  # the connection never opened: nothing was sent (Rule 3)
    LOST = "lost"  # timeout or broken connection after sending: it may have been applied (Rules 2, 4)
    RATE_LIMITED = "rate_limited"  # 429 / M_LIMIT_EXCEEDED (Rule 1)
    UNAVAILABLE = "unavailable"  # 502/503/504 (Rule 2)
    REFUSED = "refused"  # any other error answer (Rule 5)


def classify_status(status: int, errcode: str | None = None) -> Failure:
    """The :class:`Failure` of an error answer with ``status`` (and Matrix ``errcode``, if any)."""
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        return Failure.RATE_LIMITED
    if status in RETRY_STATUSES:
        return Failure.UNAVAILABLE
    return Failure.REFUSED


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry; the module docstring says *what* is retried."""

    max_retries: int = 5
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    # A server asking us to wait longer than this gets the error instead: the run reports it (Rule 1).
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"inconsistent retry policy: {self}")
        if self.multiplier < 1 or self.max_retry_after < 0:
            raise ValueError(f"inconsistent retry policy: {self}")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (0-based), jittered and capped (Rule 2)."""
        raw = self.base_delay * self.multiplier ** min(retry, _MAX_EXPONENT)
        return min(self.max_delay, raw * rng.uniform(0.8, 1.4))

    def next_delay(
        self,
        failure: Failure,
        retries: int,
        rng: random.Random,
        *,
        replayable: bool,
        retry_on_429: bool = True,
        retry_after: float | None = None,
    ) -> float | None:
        """Seconds to wait before trying again after ``failure``, or None: give up and raise.

        ``retries`` is how many retries this call had so far; ``replayable`` whether the request is safe to
        send twice; ``retry_after`` the wait a 429 asked for (see :func:`retry_after_seconds`).
        """
        if retries >= self.max_retries:
            return None  # Rule 6
        match failure:
            case Failure.UNREACHABLE:
                return self.backoff(retries, rng)  # Rule 3
            case Failure.LOST | Failure.UNAVAILABLE:
                return self.backoff(retries, rng) if replayable else None  # Rules 2, 4
            case Failure.RATE_LIMITED:
                if not retry_on_429:
                    return None
                wait = retry_after if retry_after is not None else self.backoff(retries, rng)
                return wait if wait <= self.max_retry_after else None  # Rule 1
            case Failure.REFUSED:
                return None  # Rule 5


def retry_after_seconds(body: Mapping[str, Any], header: str | None) -> float | None:
    """The wait a 429 asks for: ``retry_after_ms`` in the body wins, then ``Retry-After`` seconds."""
    ms = body.get("retry_after_ms")
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000.0
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            # An HTTP-date; Synapse never sends one, so the backoff is good enough.
            return None
    return None


class Backoff:
    """Consecutive failures of one loop that retries until it succeeds (Rule 6): the bot's sync, lanes, tasks.

    :meth:`wait` sleeps the policy's backoff for the next failure; :meth:`reset` after a success.
    """

    def __init__(
        self, policy: RetryPolicy, *, rng: random.Random | None = None, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.policy = policy
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        delay = self.policy.backoff(self.failures, self._rng)
        self.failures += 1
        return delay

    async def wait(self) -> float:
        """Count one more failure and sleep its delay; returns the delay (for the log line)."""
        delay = self.next_delay()
        await self._sleep(delay)
        return delay

    def reset(self) -> None:
        self.failures = 0
