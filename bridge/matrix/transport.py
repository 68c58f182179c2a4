"""Requests as data and the one network path, :meth:`Transport.send`: the only place that retries.

After matrix-nio's ``api.py`` / ``async_client.py`` split: every call is first built as a :class:`Request` —
pure data: method, path, query, body, whether it may be replayed, and an endpoint *kind* for the counters —
and :meth:`Transport.send` is the only place that touches the network and the only place that retries, by
the rules written down in :mod:`bridge.matrix.retry`.

Which requests are replayable: GET, PUT and DELETE are idempotent; a POST only when its builder marks it so
(e.g. admin join, invite, kick, deactivate, override_ratelimit, which treat "already so" as success). A
non-idempotent request that may have reached the server raises
:class:`~bridge.matrix.errors.ServerUnavailable` with ``maybe_applied=True`` and the caller checks the state.

The access token lives only in the ``Authorization`` header; log lines and exceptions carry the request
number, method and path, never headers or bodies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self, TypeAlias

import aiohttp

from bridge.matrix.errors import ServerUnavailable, matrix_error
from bridge.matrix.retry import (
    RETRY_STATUSES,
    Failure,
    RetryPolicy,
    Sleep,
    classify_status,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]

CLIENT_V3: Final = "/_matrix/client/v3"
ADMIN_V1: Final = "/_synapse/admin/v1"
ADMIN_V2: Final = "/_synapse/admin/v2"

IDEMPOTENT_METHODS: Final = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})


def path_segment(value: str) -> str:
    """Quote one path segment: user ids, room ids and aliases carry ``@ ! # :``."""
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP call, before it is sent. ``kind`` names the endpoint for :class:`RequestStats`."""

    method: str
    path: str
    kind: str
    query: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None
    # None: decided by the method (GET/PUT/DELETE yes, POST no).
    idempotent: bool | None = None
    # Rule 1 of bridge.matrix.retry: a 429 is normally answered before any side effect.
    retry_on_429: bool = True

    @property
    def replayable(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method in IDEMPOTENT_METHODS

    @property
    def is_write(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True, slots=True)
class RequestStats:
    """Counters of logical requests (a retried request counts once in ``reads``/``writes``).

    A write is anything that is not a GET. Subtract two snapshots to measure one phase:
    ``(client.stats - before).writes == 0`` is the "second sync writes nothing" check.
    """

    reads: int = 0
    writes: int = 0
    retries: int = 0
    attempts: int = 0
    failures: int = 0
    by_method: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    by_kind: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    writes_by_kind: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __sub__(self, other: RequestStats) -> RequestStats:
        def diff(a: Mapping[str, int], b: Mapping[str, int]) -> Mapping[str, int]:
            return MappingProxyType({k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)})

        return RequestStats(
            reads=self.reads - other.reads,
            writes=self.writes - other.writes,
            retries=self.retries - other.retries,
            attempts=self.attempts - other.attempts,
            failures=self.failures - other.failures,
            by_method=diff(self.by_method, other.by_method),
            by_kind=diff(self.by_kind, other.by_kind),
            writes_by_kind=diff(self.writes_by_kind, other.writes_by_kind),
        )


class Transport:
    """One aiohttp session to one homeserver with one access token; use it as ``async with``.

    ``pool_limit`` bounds concurrent connections (the apply step runs up to ~32 requests at once).
    ``sleep`` and ``rng`` are injectable so tests move time instead of waiting.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        max_retries: int = 5,
        retry: RetryPolicy | None = None,
        pool_limit: int = 32,
        request_timeout: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        user_agent: str = "civmatrix",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        self.retry = retry if retry is not None else RetryPolicy(max_retries=max_retries)
        self.pool_limit = pool_limit
        self.request_timeout = request_timeout
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._request_no = 0
        self._counts: Counter[str] = Counter()
        self._by_method: Counter[str] = Counter()
        self._by_kind: Counter[str] = Counter()
        self._writes_by_kind: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_limit),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                headers={"Authorization": f"Bearer {self._token}", "User-Agent": self._user_agent},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def stats(self) -> RequestStats:
        """A snapshot of the counters (see :class:`RequestStats`)."""
        return RequestStats(
            reads=self._counts["reads"],
            writes=self._counts["writes"],
            retries=self._counts["retries"],
            attempts=self._counts["attempts"],
            failures=self._counts["failures"],
            by_method=MappingProxyType(dict(self._by_method)),
            by_kind=MappingProxyType(dict(self._by_kind)),
            writes_by_kind=MappingProxyType(dict(self._writes_by_kind)),
        )

    async def send(self, req: Request) -> tuple[int, JsonObject]:
        """Send ``req`` with the retry rules of :mod:`bridge.matrix.retry`; return (status, JSON object body).

        Raises a :class:`~bridge.matrix.errors.MatrixError` subclass for an error answer,
        :class:`ServerUnavailable` when retries are exhausted or a replay would be unsafe.
        """
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} used outside 'async with' (or after close())")
        self._request_no += 1
        number = self._request_no
        self._counts["writes" if req.is_write else "reads"] += 1
        self._by_method[req.method] += 1
        self._by_kind[req.kind] += 1
        if req.is_write:
            self._writes_by_kind[req.kind] += 1
        url = self.base_url + req.path
        retries = 0
        while True:
            self._counts["attempts"] += 1
            began = time.monotonic()
            log.debug("#%d %s %s%s", number, req.method, req.path, f" (retry {retries})" if retries else "")
            try:
                async with self._session.request(
                    req.method, url, params=list(req.query) or None, json=req.body
                ) as response:
                    status = response.status
                    body = await _read_json(response)
                    header_retry_after = response.headers.get("Retry-After")
            except aiohttp.ClientConnectorError as exc:
                # The TCP connection never opened, nothing reached the server.
                reason = f"cannot connect ({exc.os_error})"
                delay = self._next_delay(req, number, retries, Failure.UNREACHABLE, reason)
                if delay is None:
                    self._counts["failures"] += 1
                    raise ServerUnavailable(
                        f"cannot connect to {self.base_url}: {exc.os_error}",
                        method=req.method,
                        path=req.path,
                        attempts=retries + 1,
                        maybe_applied=False,
                    ) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                delay = self._next_delay(req, number, retries, Failure.LOST, reason)
                if delay is None:
                    self._counts["failures"] += 1
                    raise ServerUnavailable(
                        f"connection failed ({reason})"
                        + ("" if req.replayable else "; not replayed, the request may have been applied"),
                        method=req.method,
                        path=req.path,
                        attempts=retries + 1,
                        maybe_applied=True,
                    ) from exc
            else:
                elapsed_ms = (time.monotonic() - began) * 1000
                log.debug("#%d %s %s -> %d in %.0f ms", number, req.method, req.path, status, elapsed_ms)
                if 200 <= status < 300:
                    return status, body
                error = matrix_error(status, body, method=req.method, path=req.path)
                failure = classify_status(status, error.errcode)
                wait = retry_after_seconds(body, header_retry_after)
                reason = "rate limited" if failure is Failure.RATE_LIMITED else f"server answered {status}"
                delay = self._next_delay(req, number, retries, failure, reason, wait)
                if delay is None:
                    self._counts["failures"] += 1
                    if status in RETRY_STATUSES:
                        raise ServerUnavailable(
                            f"server answered {status}",
                            method=req.method,
                            path=req.path,
                            attempts=retries + 1,
                            maybe_applied=req.method != "GET",
                        ) from error
                    raise error
            retries += 1
            self._counts["retries"] += 1
            await self._sleep(delay)

    def _next_delay(
        self,
        req: Request,
        number: int,
        retries: int,
        failure: Failure,
        reason: str,
        retry_after: float | None = None,
    ) -> float | None:
        delay = self.retry.next_delay(
            failure,
            retries,
            self._rng,
            replayable=req.replayable,
            retry_on_429=req.retry_on_429,
            retry_after=retry_after,
        )
        if delay is not None:
            log.info(
                "#%d %s %s: %s; retry %d/%d in %.2fs",
                number,
                req.method,
                req.path,
                reason,
                retries + 1,
                self.retry.max_retries,
                delay,
            )
        return delay


async def _read_json(response: aiohttp.ClientResponse) -> JsonObject:
    raw = await response.read()
    if not raw:
        return {}
    try:
        parsed = await response.json(content_type=None)
    except ValueError:
        # A proxy's HTML error page: the status code is all we get.
        return {}
    return parsed if isinstance(parsed, dict) else {"_": parsed}
