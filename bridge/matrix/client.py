"""The async homeserver client: the Synapse admin API and the client-server calls the sync and the bot need.

Layout (after matrix-nio's ``api.py`` / ``async_client.py`` split):

* every call is first built as a :class:`Request` — pure data: method, path, query, body, whether it may be
  replayed, and an endpoint *kind* for the counters;
* :meth:`HomeserverClient.send` is the only place that touches the network, and the only place that retries;
* each typed method parses the answer at the boundary into a small frozen dataclass.

Retry rules (the single place they live)
----------------------------------------
Rule 1. ``429 M_LIMIT_EXCEEDED``: wait ``retry_after_ms`` (body) or ``Retry-After`` (header, seconds), else
the backoff, then retry. Synapse checks rate limits before acting, so a 429 normally means nothing happened;
the known exception is ``createRoom`` (synapse#13427: the room exists, the retry then says the alias is
taken), so a ``createRoom`` is retried after a 429 only when it carries an alias that makes the retry safe
(``Request.retry_on_429``), and :meth:`HomeserverClient.create_room` can turn ``M_ROOM_IN_USE`` into the
existing room.

Rule 2. 502/503/504, a timeout or a broken connection: retry with capped exponential backoff and jitter
(``min(cap, base * multiplier**n) * uniform(0.8, 1.4)``, as Synapse's ``util/retryutils.py``) — but only
idempotent requests. GET, PUT and DELETE are idempotent; a POST only when its builder marks it so (e.g.
admin join, invite, kick, deactivate, override_ratelimit, which treat "already so" as success).

Rule 3. A connection that could not even be opened (refused, DNS) sent nothing, so any request is retried.

Rule 4. A non-idempotent request that may have reached the server is never replayed: it raises
:class:`~bridge.matrix.errors.ServerUnavailable` with ``maybe_applied=True`` and the caller checks the state.

Rule 5. Auth errors (:class:`~bridge.matrix.errors.MAuthError`) are never retried.

The access token lives only in the ``Authorization`` header; log lines and exceptions carry the request
number, method and path, never headers or bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeAlias

import aiohttp

from bridge.matrix.contract import CREATE_NONCE
from bridge.matrix.errors import (
    MatrixError,
    MForbidden,
    MLimitExceeded,
    MNotFound,
    MRoomInUse,
    ServerUnavailable,
    UnexpectedResponse,
    matrix_error,
)

log = logging.getLogger(__name__)

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]

CLIENT_V3: Final = "/_matrix/client/v3"
ADMIN_V1: Final = "/_synapse/admin/v1"
ADMIN_V2: Final = "/_synapse/admin/v2"

IDEMPOTENT_METHODS: Final = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})
RETRY_STATUSES: Final = frozenset({502, 503, 504})


def path_segment(value: str) -> str:
    """Quote one path segment: user ids, room ids and aliases carry ``@ ! # :``."""
    return urllib.parse.quote(value, safe="")


_seg = path_segment


# --------------------------------------------------------------------------------------------------------
# Requests as data
# --------------------------------------------------------------------------------------------------------


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
    # Rule 1: a 429 is normally answered before any side effect.
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
class RetryPolicy:
    """How often and how long to retry; see the module docstring for *what* is retried."""

    max_retries: int = 5
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    # A server asking us to wait longer than this gets MLimitExceeded instead: the run reports it.
    max_retry_after: float = 300.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (0-based), jittered and capped."""
        raw = self.base_delay * self.multiplier**retry
        return min(self.max_delay, raw * rng.uniform(0.8, 1.4))


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


# --------------------------------------------------------------------------------------------------------
# Parsed answers
# --------------------------------------------------------------------------------------------------------


class _Shape(Exception):
    """A response field is missing or of the wrong type (turned into UnexpectedResponse with the path)."""


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _Shape(f"field {key!r} is {type(value).__name__}, expected a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Shape(f"field {key!r} is {type(value).__name__}, expected a string or null")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    # Synapse's admin API returns 0/1 for some flags on SQLite.
    if isinstance(value, bool | int):
        return bool(value)
    raise _Shape(f"field {key!r} is {type(value).__name__}, expected a boolean")


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Shape(f"field {key!r} is {type(value).__name__}, expected an integer")
    return value


def _object(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise _Shape(f"field {key!r} is {type(value).__name__}, expected an object")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise _Shape(f"field {key!r} is {type(value).__name__}, expected a list")
    return value


@dataclass(frozen=True, slots=True)
class WhoAmI:
    user_id: str
    device_id: str | None
    is_guest: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhoAmI:
        return cls(_str(data, "user_id"), _opt_str(data, "device_id"), _bool(data, "is_guest"))

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One row of the admin user list."""

    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    user_type: str | None
    is_guest: bool
    creation_ts: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserSummary:
        return cls(
            user_id=_str(data, "name"),
            displayname=_opt_str(data, "displayname"),
            admin=_bool(data, "admin"),
            deactivated=_bool(data, "deactivated"),
            locked=_bool(data, "locked"),
            user_type=_opt_str(data, "user_type"),
            is_guest=_bool(data, "is_guest"),
            creation_ts=_int(data, "creation_ts"),
        )


@dataclass(frozen=True, slots=True)
class ExternalId:
    """A link to an identity provider (``auth_provider`` e.g. ``ldap``, ``external_id`` e.g. an entryUUID)."""

    auth_provider: str
    external_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExternalId:
        return cls(_str(data, "auth_provider"), _str(data, "external_id"))

    def to_dict(self) -> dict[str, str]:
        return {"auth_provider": self.auth_provider, "external_id": self.external_id}


@dataclass(frozen=True, slots=True)
class UserDetails:
    """One user from ``GET/PUT /_synapse/admin/v2/users/<id>``."""

    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    user_type: str | None
    external_ids: tuple[ExternalId, ...]
    creation_ts: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserDetails:
        ext = data.get("external_ids") or []
        if not isinstance(ext, list):
            raise _Shape("field 'external_ids' is not a list")
        return cls(
            user_id=_str(data, "name"),
            displayname=_opt_str(data, "displayname"),
            admin=_bool(data, "admin"),
            deactivated=_bool(data, "deactivated"),
            locked=_bool(data, "locked"),
            user_type=_opt_str(data, "user_type"),
            external_ids=tuple(ExternalId.from_dict(e) for e in ext),
            creation_ts=_int(data, "creation_ts"),
        )


@dataclass(frozen=True, slots=True)
class PutUserResult:
    """The user after ``put_user``; ``created`` is true when the PUT made a new account (201)."""

    user: UserDetails
    created: bool


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One row of the admin room list."""

    room_id: str
    name: str | None
    canonical_alias: str | None
    joined_members: int
    joined_local_members: int
    creator: str | None
    room_type: str | None
    join_rules: str | None
    encryption: str | None
    public: bool
    state_events: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoomSummary:
        return cls(
            room_id=_str(data, "room_id"),
            name=_opt_str(data, "name"),
            canonical_alias=_opt_str(data, "canonical_alias"),
            joined_members=_int(data, "joined_members"),
            joined_local_members=_int(data, "joined_local_members"),
            creator=_opt_str(data, "creator"),
            room_type=_opt_str(data, "room_type"),
            join_rules=_opt_str(data, "join_rules"),
            encryption=_opt_str(data, "encryption"),
            public=_bool(data, "public"),
            state_events=_int(data, "state_events"),
        )


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A current state event of a room. ``content`` is the event's JSON content, parsed by the caller."""

    type: str
    state_key: str
    content: Mapping[str, JsonValue]
    sender: str
    event_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateEvent:
        return cls(
            type=_str(data, "type"),
            state_key=_str(data, "state_key"),
            content=MappingProxyType(_object(data, "content")),
            sender=_str(data, "sender"),
            event_id=_str(data, "event_id"),
        )


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server lets clients do, as far as the sync cares (profile fields, room versions)."""

    profile_fields_enabled: bool
    profile_fields_allowed: frozenset[str] | None
    profile_fields_disallowed: frozenset[str]
    default_room_version: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        caps = _object(data, "capabilities")
        fields = caps.get("m.profile_fields") or caps.get("uk.tcpip.msc4133.profile_fields")
        enabled = False
        allowed: frozenset[str] | None = None
        disallowed: frozenset[str] = frozenset()
        if isinstance(fields, dict):
            enabled = _bool(fields, "enabled")
            if isinstance(fields.get("allowed"), list):
                allowed = frozenset(str(x) for x in fields["allowed"])
            if isinstance(fields.get("disallowed"), list):
                disallowed = frozenset(str(x) for x in fields["disallowed"])
        versions = caps.get("m.room_versions")
        default = _opt_str(versions, "default") if isinstance(versions, dict) else None
        return cls(enabled, allowed, disallowed, default)

    def can_set_profile_field(self, name: str) -> bool:
        if not self.profile_fields_enabled or name in self.profile_fields_disallowed:
            return False
        return self.profile_fields_allowed is None or name in self.profile_fields_allowed


# --------------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


class HomeserverClient:
    """Async client for one homeserver and one access token; use it as ``async with``.

    ``base_url`` is the loopback admin listener for admin calls (the public listener refuses them).
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
        self._whoami: WhoAmI | None = None

    def __repr__(self) -> str:
        return f"HomeserverClient({self.base_url!r})"

    async def __aenter__(self) -> HomeserverClient:
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

    # --- the one network path --------------------------------------------------------------------------

    async def send(self, req: Request) -> tuple[int, JsonObject]:
        """Send ``req`` with the retry rules of the module docstring; return (status, JSON object body).

        Raises a :class:`~bridge.matrix.errors.MatrixError` subclass for an error answer,
        :class:`ServerUnavailable` when retries are exhausted or a replay would be unsafe.
        """
        if self._session is None:
            raise RuntimeError("HomeserverClient used outside 'async with' (or after close())")
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
                    body = await self._read_json(response)
                    header_retry_after = response.headers.get("Retry-After")
            except aiohttp.ClientConnectorError as exc:
                # Rule 3: the TCP connection never opened, nothing reached the server.
                delay = self._next_delay(req, number, retries, f"cannot connect ({exc.os_error})")
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
                delay = self._next_delay(req, number, retries, reason) if req.replayable else None
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
                delay = self._delay_for_error(req, number, retries, status, error, body, header_retry_after)
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

    @staticmethod
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

    def _next_delay(self, req: Request, number: int, retries: int, reason: str) -> float | None:
        if retries >= self.retry.max_retries:
            return None
        delay = self.retry.backoff(retries, self._rng)
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

    def _delay_for_error(
        self,
        req: Request,
        number: int,
        retries: int,
        status: int,
        error: MatrixError,
        body: Mapping[str, Any],
        header_retry_after: str | None,
    ) -> float | None:
        if status == 429 or isinstance(error, MLimitExceeded):
            if not req.retry_on_429 or retries >= self.retry.max_retries:
                return None
            wait = _retry_after_seconds(body, header_retry_after)
            if wait is None:
                wait = self.retry.backoff(retries, self._rng)
            if wait > self.retry.max_retry_after:
                return None
            log.info(
                "#%d %s %s: rate limited; retry %d/%d in %.2fs",
                number,
                req.method,
                req.path,
                retries + 1,
                self.retry.max_retries,
                wait,
            )
            return wait
        if status in RETRY_STATUSES and req.replayable:
            return self._next_delay(req, number, retries, f"server answered {status}")
        return None

    # --- typed calls: client API -------------------------------------------------------------------------

    async def _call(self, req: Request) -> JsonObject:
        return (await self.send(req))[1]

    def _unexpected(self, req: Request, exc: _Shape) -> UnexpectedResponse:
        return UnexpectedResponse(str(exc), method=req.method, path=req.path)

    async def whoami(self) -> WhoAmI:
        """Who the token belongs to (cached after the first call; the token cannot change)."""
        if self._whoami is None:
            req = Request("GET", f"{CLIENT_V3}/account/whoami", "client.whoami")
            body = await self._call(req)
            try:
                self._whoami = WhoAmI.from_dict(body)
            except _Shape as exc:
                raise self._unexpected(req, exc) from None
        return self._whoami

    async def capabilities(self) -> Capabilities:
        req = Request("GET", f"{CLIENT_V3}/capabilities", "client.capabilities")
        body = await self._call(req)
        try:
            return Capabilities.from_dict(body)
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def joined_rooms(self) -> tuple[str, ...]:
        req = Request("GET", f"{CLIENT_V3}/joined_rooms", "client.joined_rooms")
        body = await self._call(req)
        try:
            return tuple(str(r) for r in _list(body, "joined_rooms"))
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def resolve_alias(self, alias: str) -> str:
        """Room id of ``alias``; raises :class:`~bridge.matrix.errors.MNotFound` when no room has it."""
        req = Request("GET", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.resolve_alias")
        body = await self._call(req)
        try:
            return _str(body, "room_id")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` from the room directory; an alias that is already gone is fine (replayable)."""
        req = Request(
            "DELETE", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.delete_alias", idempotent=True
        )
        with contextlib.suppress(MNotFound):
            await self._call(req)

    async def set_alias(self, alias: str, room_id: str) -> None:
        """Point ``alias`` (``#local:server``) at ``room_id``; idempotent.

        Synapse answers ``409`` (errcode M_UNKNOWN, "Room alias ... already exists") for a taken alias, not
        M_ROOM_IN_USE; this resolves it and succeeds if it already points at ``room_id``, otherwise raises
        :class:`~bridge.matrix.errors.MRoomInUse` naming the room that holds it.
        """
        req = Request(
            "PUT", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.set_alias", body={"room_id": room_id}
        )
        try:
            await self._call(req)
        except MatrixError as exc:
            if exc.status != 409 and not isinstance(exc, MRoomInUse):
                raise
            holder = await self.resolve_alias(alias)
            if holder != room_id:
                raise MRoomInUse(
                    exc.status,
                    "M_ROOM_IN_USE",
                    f"alias {alias} already points at {holder}",
                    method=req.method,
                    path=req.path,
                ) from None

    async def create_room(self, body: Mapping[str, Any], *, existing_alias_ok: bool = False) -> str:
        """``POST /createRoom`` with everything in one call; returns the room id.

        Not idempotent: a failure after the request may have reached the server raises ServerUnavailable
        with ``maybe_applied=True`` instead of creating a second room. With a ``room_alias_name`` in ``body``
        the alias makes a retry safe, and ``existing_alias_ok=True`` returns the room that already holds the
        alias (a run killed after the create, or synapse#13427) instead of raising MRoomInUse.
        """
        has_alias = isinstance(body.get("room_alias_name"), str)
        # A fresh create event per call, so parallel identical rooms never share a v12 room ID.
        body = dict(body)
        body["creation_content"] = dict(body.get("creation_content") or {})
        body["creation_content"].setdefault(CREATE_NONCE, secrets.token_hex(8))
        req = Request(
            "POST", f"{CLIENT_V3}/createRoom", "client.create_room", body=body, retry_on_429=has_alias
        )
        try:
            reply = await self._call(req)
        except MRoomInUse:
            if not (existing_alias_ok and has_alias):
                raise
            server_name = (await self.whoami()).server_name
            return await self.resolve_alias(f"#{body['room_alias_name']}:{server_name}")
        try:
            return _str(reply, "room_id")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def send_state(
        self, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> str:
        """Set a state event (idempotent PUT); returns the event id (the old one if nothing changed)."""
        req = Request(
            "PUT",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/state/{_seg(event_type)}/{_seg(state_key)}",
            "client.send_state",
            body=content,
        )
        reply = await self._call(req)
        try:
            return _str(reply, "event_id")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def get_state(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> Mapping[str, JsonValue] | None:
        """Content of one state event, or None when the room has no such state."""
        req = Request(
            "GET",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/state/{_seg(event_type)}/{_seg(state_key)}",
            "client.get_state",
        )
        try:
            return MappingProxyType(await self._call(req))
        except MNotFound:
            return None

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """``user_id``'s membership in a room the token owner is in (join, invite, leave, ban), or None."""
        try:
            content = await self.get_state(room_id, "m.room.member", user_id)
        except MForbidden:
            return None
        value = content.get("membership") if content is not None else None
        return value if isinstance(value, str) else None

    async def invite(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        """Invite ``user_id``; idempotent: an already invited or joined user counts as success.

        Synapse refuses to invite a member (``403 M_FORBIDDEN``); on that answer this reads the membership
        and succeeds when it is ``invite`` or ``join``, so a replay after a lost answer is harmless.
        """
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        req = Request(
            "POST", f"{CLIENT_V3}/rooms/{_seg(room_id)}/invite", "client.invite", body=body, idempotent=True
        )
        try:
            await self._call(req)
        except MForbidden:
            if await self.membership(room_id, user_id) not in ("invite", "join"):
                raise

    async def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        """Remove ``user_id`` from a room; idempotent: someone already out (left, kicked, banned) is success.

        Synapse answers ``403 M_FORBIDDEN`` for a target not in the room; on that answer this reads the
        membership and succeeds unless the person is still joined or invited (then the 403 was about
        power levels and is raised).
        """
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        req = Request(
            "POST", f"{CLIENT_V3}/rooms/{_seg(room_id)}/kick", "client.kick", body=body, idempotent=True
        )
        try:
            await self._call(req)
        except MForbidden:
            if await self.membership(room_id, user_id) in ("join", "invite"):
                raise

    async def send_message(
        self, room_id: str, content: Mapping[str, Any], txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        """Send an event with a transaction id: the server de-duplicates a replay, so this is idempotent."""
        req = Request(
            "PUT",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/send/{_seg(event_type)}/{_seg(txn_id)}",
            "client.send_message",
            body=content,
        )
        reply = await self._call(req)
        try:
            return _str(reply, "event_id")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def get_account_data(self, user_id: str, data_type: str) -> Mapping[str, JsonValue] | None:
        """The token owner's global account data of ``data_type``, or None. ``user_id`` must be the owner."""
        req = Request(
            "GET",
            f"{CLIENT_V3}/user/{_seg(user_id)}/account_data/{_seg(data_type)}",
            "client.get_account_data",
        )
        try:
            return MappingProxyType(await self._call(req))
        except MNotFound:
            return None

    async def put_account_data(self, user_id: str, data_type: str, content: Mapping[str, Any]) -> None:
        await self._call(
            Request(
                "PUT",
                f"{CLIENT_V3}/user/{_seg(user_id)}/account_data/{_seg(data_type)}",
                "client.put_account_data",
                body=content,
            )
        )

    async def get_profile(self, user_id: str) -> Mapping[str, JsonValue]:
        """The whole profile (displayname, avatar_url and custom MSC4133 fields) of ``user_id``."""
        return MappingProxyType(
            await self._call(Request("GET", f"{CLIENT_V3}/profile/{_seg(user_id)}", "client.get_profile"))
        )

    async def set_profile_field(self, user_id: str, field_name: str, value: JsonValue) -> None:
        """Set one profile field (MSC4133, stable ``/_matrix/client/v3/profile/{userId}/{field}``).

        Synapse 1.163 serves the stable path without any experimental flag and lets a server admin set
        another local user's fields (``ProfileFieldRestServlet.on_PUT`` passes ``by_admin``). Custom field
        names must be namespaced (``gov.example.title``); check :meth:`capabilities` first.
        """
        await self._call(
            Request(
                "PUT",
                f"{CLIENT_V3}/profile/{_seg(user_id)}/{_seg(field_name)}",
                "client.set_profile_field",
                body={field_name: value},
            )
        )

    async def delete_profile_field(self, user_id: str, field_name: str) -> None:
        await self._call(
            Request(
                "DELETE",
                f"{CLIENT_V3}/profile/{_seg(user_id)}/{_seg(field_name)}",
                "client.delete_profile_field",
            )
        )

    # --- typed calls: admin API ----------------------------------------------------------------------

    async def server_version(self) -> str:
        req = Request("GET", f"{ADMIN_V1}/server_version", "admin.server_version")
        body = await self._call(req)
        try:
            return _str(body, "server_version")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def list_users(self, *, page_size: int = 1000) -> AsyncIterator[UserSummary]:
        """Every local account, deactivated and locked included, in pages of ``page_size`` ordered by id.

        Offset pagination: read before writing (the sync does) or a concurrent change may shift a page.
        """
        start = "0"
        while True:
            req = Request(
                "GET",
                f"{ADMIN_V2}/users",
                "admin.list_users",
                query=(
                    ("from", start),
                    ("limit", str(page_size)),
                    ("deactivated", "true"),
                    ("locked", "true"),
                    ("order_by", "name"),
                ),
            )
            body = await self._call(req)
            try:
                users = [UserSummary.from_dict(u) for u in _list(body, "users")]
                next_token = body.get("next_token")
            except _Shape as exc:
                raise self._unexpected(req, exc) from None
            for user in users:
                yield user
            if next_token is None or not users:
                return
            start = str(next_token)

    async def get_user(self, user_id: str) -> UserDetails:
        """One account; raises :class:`MNotFound` if it does not exist. Never loop this."""
        req = Request("GET", f"{ADMIN_V2}/users/{_seg(user_id)}", "admin.get_user")
        body = await self._call(req)
        try:
            return UserDetails.from_dict(body)
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def put_user(
        self,
        user_id: str,
        *,
        displayname: str | None = None,
        locked: bool | None = None,
        admin: bool | None = None,
        deactivated: bool | None = None,
        external_ids: Sequence[ExternalId] | None = None,
        user_type: str | None = None,
    ) -> PutUserResult:
        """Create or update an account (``PUT /_synapse/admin/v2/users/<id>``); only given fields change.

        Never sends a password: people log in with the directory, and bcrypt costs ~250 ms per account.
        Re-sending unchanged values creates no events (idempotent).
        """
        body: dict[str, Any] = {}
        if displayname is not None:
            body["displayname"] = displayname
        if locked is not None:
            body["locked"] = locked
        if admin is not None:
            body["admin"] = admin
        if deactivated is not None:
            body["deactivated"] = deactivated
        if external_ids is not None:
            body["external_ids"] = [e.to_dict() for e in external_ids]
        if user_type is not None:
            body["user_type"] = user_type
        req = Request("PUT", f"{ADMIN_V2}/users/{_seg(user_id)}", "admin.put_user", body=body)
        status, reply = await self.send(req)
        try:
            return PutUserResult(UserDetails.from_dict(reply), created=status == 201)
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def deactivate_user(self, user_id: str, *, erase: bool = False) -> None:
        """Irreversible: ends sessions, leaves rooms, drops keys. Repeating it is a no-op: replayable."""
        await self._call(
            Request(
                "POST",
                f"{ADMIN_V1}/deactivate/{_seg(user_id)}",
                "admin.deactivate_user",
                body={"erase": erase},
                idempotent=True,
            )
        )

    async def rate_limited(self, user_id: str) -> bool:
        """False if ``user_id`` has a "no limits" override.

        Synapse then skips every rate limiter that knows the requester: messages, joins, invites, profile
        changes; not the per-room limits that apply to everyone in a room.

        Synapse answers ``{}`` when there is no override; a ``messages_per_second`` of 0 disables limiting.
        """
        req = Request("GET", f"{ADMIN_V1}/users/{_seg(user_id)}/override_ratelimit", "admin.get_ratelimit")
        body = await self._call(req)
        return "messages_per_second" not in body or bool(body["messages_per_second"])

    async def override_ratelimit(
        self, user_id: str, *, messages_per_second: int = 0, burst_count: int = 0
    ) -> None:
        """Exempt ``user_id`` from rate limits (0/0 = unlimited); sets a value, so it is replayable."""
        await self._call(
            Request(
                "POST",
                f"{ADMIN_V1}/users/{_seg(user_id)}/override_ratelimit",
                "admin.override_ratelimit",
                body={"messages_per_second": messages_per_second, "burst_count": burst_count},
                idempotent=True,
            )
        )

    async def admin_join(self, room_id_or_alias: str, user_id: str) -> str:
        """Join a local user to a room the admin is in (invite+join for non-public rooms); returns room id.

        Idempotent, so it is replayable: in a ``public`` room Synapse accepts a second join and writes no
        event; in any other room its invite step refuses a member with ``403 M_FORBIDDEN "... is already in
        the room"``, so on M_FORBIDDEN this reads the user's membership and succeeds if it is ``join``.
        """
        req = Request(
            "POST",
            f"{ADMIN_V1}/join/{_seg(room_id_or_alias)}",
            "admin.join",
            body={"user_id": user_id},
            idempotent=True,
        )
        try:
            body = await self._call(req)
        except MForbidden:
            room_id = room_id_or_alias
            if not room_id.startswith("!"):
                room_id = await self.resolve_alias(room_id_or_alias)
            if await self.membership(room_id, user_id) == "join":
                return room_id
            raise
        try:
            return _str(body, "room_id")
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def list_rooms(self, *, page_size: int = 500) -> AsyncIterator[RoomSummary]:
        """Every room on the server (admin API), in pages of ``page_size``."""
        start = 0
        while True:
            req = Request(
                "GET",
                f"{ADMIN_V1}/rooms",
                "admin.list_rooms",
                query=(("from", str(start)), ("limit", str(page_size)), ("order_by", "name")),
            )
            body = await self._call(req)
            try:
                rooms = [RoomSummary.from_dict(r) for r in _list(body, "rooms")]
                next_batch = body.get("next_batch")
            except _Shape as exc:
                raise self._unexpected(req, exc) from None
            for room in rooms:
                yield room
            if next_batch is None or not rooms:
                return
            start = int(str(next_batch))

    async def room_state(self, room_id: str) -> tuple[StateEvent, ...]:
        """All current state events of a room (admin API: works without being a member)."""
        req = Request("GET", f"{ADMIN_V1}/rooms/{_seg(room_id)}/state", "admin.room_state")
        body = await self._call(req)
        try:
            return tuple(StateEvent.from_dict(e) for e in _list(body, "state"))
        except _Shape as exc:
            raise self._unexpected(req, exc) from None

    async def room_members(self, room_id: str) -> tuple[str, ...]:
        """User ids *joined* to a room (admin API). Invites and leaves are in :meth:`room_state`."""
        req = Request("GET", f"{ADMIN_V1}/rooms/{_seg(room_id)}/members", "admin.room_members")
        body = await self._call(req)
        try:
            return tuple(str(m) for m in _list(body, "members"))
        except _Shape as exc:
            raise self._unexpected(req, exc) from None


def _retry_after_seconds(body: Mapping[str, Any], header: str | None) -> float | None:
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
