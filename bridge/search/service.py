"""The directory search service: Synapse's ``user_directory/search`` answered from the sync's snapshot.

The reverse proxy routes ``^/_matrix/client/(r0|v3|unstable)/user_directory/search$`` here and everything
else to Synapse (falling back to Synapse's own search when this service is down). The contract is
Synapse's, so a client that knows nothing of this project works unchanged:

* ``OPTIONS`` gets 204 with the CORS headers Synapse sends (``synapse/http/server.py:set_cors_headers``).
* The caller's token (``Authorization: Bearer`` or ``?access_token=``) is checked with the homeserver's
  ``/account/whoami``; a refusal (missing, unknown, locked, deactivated) is relayed as Synapse sent it, so
  the client sees Synapse's own status and error. An accepted token is trusted for
  ``search.auth_cache_seconds``.
* The body is ``{"search_term", "limit"}``; ``limit`` defaults to 10 and is clamped to 0..50 like Synapse;
  the answer is ``{"limited", "results": [{"user_id", "display_name", "avatar_url"}]}``.

The snapshot is reloaded when the sync replaces it (checked every ``search.reload_seconds``); the rebuild
runs in a thread and the previous index answers until the new one is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bridge.search.config import SearchConfig
from bridge.search.index import SearchIndex, build_index, result_label
from bridge.search.snapshot import SnapshotError, Stamp, read_snapshot, snapshot_stamp

log = logging.getLogger(__name__)

SEARCH_PATHS = ("r0", "v3", "unstable")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
    "Access-Control-Expose-Headers": "Synapse-Trace-Id, Server",
}
_MAX_CACHED_TOKENS = 50_000

Clock = Callable[[], float]


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status, headers=CORS_HEADERS)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The homeserver's own answer to a token it did not accept, relayed as is."""

    status: int
    body: bytes
    content_type: str


class TokenChecker:
    """Bearer token → user ID via the homeserver's whoami; accepted tokens cached for ``ttl`` seconds."""

    def __init__(self, session: aiohttp.ClientSession, homeserver: str, ttl: float, clock: Clock) -> None:
        self._session = session
        self._url = f"{homeserver}/_matrix/client/v3/account/whoami"
        self._ttl = ttl
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def check(self, token: str | None) -> str | Refusal:
        now = self._clock()
        if token is not None and (hit := self._cache.get(token)) and hit[0] > now:
            return hit[1]
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self._session.get(self._url, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                return Refusal(resp.status, body, resp.content_type or "application/json")
            user_id = (await resp.json()).get("user_id")
        if not isinstance(user_id, str) or token is None:
            return Refusal(502, b'{"errcode":"M_UNKNOWN","error":"bad whoami answer"}', "application/json")
        if self._ttl > 0:
            self._cache[token] = (now + self._ttl, user_id)
            self._cache.move_to_end(token)
            while len(self._cache) > _MAX_CACHED_TOKENS:
                self._cache.popitem(last=False)
        return user_id


class IndexHolder:
    """The current index and the snapshot file it came from; swaps in a rebuilt one when the file changes."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = path
        self.index = SearchIndex(())
        self.generated_at = 0.0
        self._stamp: Stamp | None = None
        self.loads = 0

    def changed(self) -> bool:
        return snapshot_stamp(self.path) != self._stamp

    def load(self) -> bool:
        """Rebuild from the file if it changed (blocking: run it in a thread). False if it is unusable."""
        stamp = snapshot_stamp(self.path)
        if stamp == self._stamp:
            return True
        began = time.perf_counter()
        try:
            generated_at, people = read_snapshot(self.path)
        except SnapshotError as e:
            log.warning("%s; answering from the previous index (%d people)", e, len(self.index))
            return False
        index = build_index(people)
        self.index, self.generated_at, self._stamp = index, generated_at, stamp
        self.loads += 1
        log.info("search index loaded: %d people in %.2f s", len(index), time.perf_counter() - began)
        return True


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.query.get("access_token") or None


class SearchService:
    def __init__(self, cfg: SearchConfig, *, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.holder = IndexHolder(cfg.index)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenChecker | None = None
        self._watcher: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        for version in SEARCH_PATHS:
            path = f"/_matrix/client/{version}/user_directory/search"
            app.router.add_post(path, self.search)
            app.router.add_route("OPTIONS", path, self.options)
        app.router.add_get("/health", self.health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tokens = TokenChecker(
            self._session, self.cfg.homeserver_url, self.cfg.auth_cache_seconds, self.clock
        )
        await asyncio.to_thread(self.holder.load)
        self._watcher = asyncio.create_task(self._watch(), name="search-index-watcher")

    async def _stop(self, _app: web.Application) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._session is not None:
            await self._session.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_seconds)
            try:
                if self.holder.changed():
                    await asyncio.to_thread(self.holder.load)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive one bad file; the error is logged with its trace
                log.exception("reloading the search index failed")

    async def options(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS_HEADERS)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"people": len(self.holder.index), "generated_at": self.holder.generated_at})

    async def search(self, request: web.Request) -> web.Response:
        assert self._tokens is not None
        try:
            who = await self._tokens.check(_token(request))
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("whoami failed: %s", e)
            return _error(502, "M_UNKNOWN", "the homeserver did not answer the token check")
        if isinstance(who, Refusal):
            return web.Response(
                status=who.status, body=who.body, content_type=who.content_type, headers=CORS_HEADERS
            )
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, "M_NOT_JSON", "Content not JSON.")
        if not isinstance(body, dict):
            return _error(400, "M_NOT_JSON", "Content must be a JSON object.")
        term = body.get("search_term")
        if not isinstance(term, str):
            return _error(400, "M_UNKNOWN", "`search_term` is required field")
        limit = body.get("limit", 10)
        if isinstance(limit, bool) or not isinstance(limit, int | float | str):
            return _error(400, "M_INVALID_PARAM", "`limit` must be a number")
        try:
            limit = int(limit)
        except ValueError:
            return _error(400, "M_INVALID_PARAM", "`limit` must be a number")
        result = self.holder.index.search(term, limit)
        show = self.cfg.show_context
        results = [
            {
                "user_id": h.user_id,
                "display_name": result_label(h.person, context=show),
                "avatar_url": h.avatar_url,
            }
            for h in result.hits
        ]
        log.debug("search by %s: %d results", who, len(results))
        return web.json_response({"limited": result.limited, "results": results}, headers=CORS_HEADERS)


async def serve(cfg: SearchConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run the service until cancelled."""
    service = SearchService(cfg)
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    log.info("directory search on http://%s:%d (index %s)", cfg.host, cfg.port, cfg.index)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
