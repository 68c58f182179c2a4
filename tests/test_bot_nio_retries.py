"""The bot's nio client gives up after the retry policy's cap instead of hanging on a misbehaving homeserver.

A fault-injecting HTTP server on loopback answers every request with 429, 503 or nothing at all. The real
matrix-nio client, built as the bot builds it, must return (or raise) after ``max_retries`` retries; the
same call with nio's default config is shown to keep going, so the cap is what ends it. A message whose send
keeps failing that way stays in the outbox for the lane to retry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from nio import AsyncClient, MatrixRoom, ProfileGetError

from bridge.bot.client import BotClient
from bridge.bot.config import BotConfig
from bridge.bot.effects import Effects
from bridge.bot.intake import Intake
from bridge.bot.sender import Sender
from bridge.events.model import RoomID, RoomNotice
from bridge.events.outbox import encode
from bridge.events.render import plain
from bridge.events.store import PutOutbox, open_sqlite
from bridge.matrix.retry import RetryPolicy
from provisioner.embedded.ports import free_port

# Fast but real: the waits are the policy's, only shorter.
FAST = RetryPolicy(max_retries=3, base_delay=0.05, multiplier=2.0, max_delay=0.2)
ROOM = "!busy:example.test"


@dataclass
class Faulty:
    """Answers every request with ``reply`` and counts them."""

    reply: Callable[[web.Request], Awaitable[web.StreamResponse]]
    hits: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        return await self.reply(request)


async def rate_limited(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 20}, status=429
    )


async def unavailable(request: web.Request) -> web.StreamResponse:
    return web.json_response({"errcode": "M_UNKNOWN", "error": "overloaded"}, status=503)


async def silent(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)  # longer than any request timeout below: the client times out
    return web.json_response({})


@pytest.fixture
async def faulty() -> AsyncIterator[Callable[..., Awaitable[tuple[Faulty, str]]]]:
    runners: list[web.AppRunner] = []

    async def start(reply: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[Faulty, str]:
        server = Faulty(reply)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return server, f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def bot_client(url: str, request_timeout: float = 5.0) -> BotClient:
    client = BotClient(
        url, "@bot:example.test", retry=FAST, rng=random.Random(1), request_timeout=request_timeout
    )
    client.access_token = "syt_bot_token"
    client.user_id = "@bot:example.test"
    return client


async def test_rate_limited_forever_gives_up_after_the_cap(faulty) -> None:
    server, url = await faulty(rate_limited)
    client = bot_client(url)
    try:
        began = time.monotonic()
        resp = await asyncio.wait_for(client.get_profile("@p:example.test"), 10)
        assert isinstance(resp, ProfileGetError) and resp.status_code == "M_LIMIT_EXCEEDED"
        assert server.hits == FAST.max_retries + 1
        assert time.monotonic() - began < 5
    finally:
        await client.close()


async def test_uncapped_nio_would_keep_retrying(faulty) -> None:
    """The same call with nio's default config is still going after a second: the cap is what ends it."""
    server, url = await faulty(rate_limited)
    client = AsyncClient(url, "@bot:example.test")
    client.access_token = "syt_bot_token"
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get_profile("@p:example.test"), 1.0)
        assert server.hits > FAST.max_retries + 1
    finally:
        await client.close()


async def test_unavailable_is_returned_at_once(faulty) -> None:
    server, url = await faulty(unavailable)
    client = bot_client(url)
    try:
        resp = await asyncio.wait_for(client.get_profile("@p:example.test"), 10)
        assert isinstance(resp, ProfileGetError)
        assert server.hits == 1  # nio does not retry 5xx; the caller's loop backs off
    finally:
        await client.close()


async def test_a_silent_server_times_out_after_the_cap(faulty) -> None:
    server, url = await faulty(silent)
    client = bot_client(url, request_timeout=0.2)
    try:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get_profile("@p:example.test"), 10)
        assert server.hits == FAST.max_retries + 1
        # Four timeouts of 0.2 s plus three backoffs of at most 0.2 s.
        assert time.monotonic() - began < 3
    finally:
        await client.close()


async def test_a_send_rate_limited_past_the_cap_stays_in_the_outbox(faulty, tmp_path: Path) -> None:
    server, url = await faulty(rate_limited)
    client = bot_client(url)
    store = open_sqlite(str(tmp_path / "bot.db"))
    await store.open()
    try:
        client.rooms[ROOM] = MatrixRoom(ROOM, client.user_id)  # an unencrypted room the bot is in
        effects = Effects(client, store, service=None)  # no announcement here, so no service needed
        sender = Sender(store, effects.execute, policy=FAST)
        notice = RoomNotice(RoomID(ROOM), plain("the meeting moved to room 12"))
        await store.write([PutOutbox("room:1", datetime.now(UTC), encode(notice))])
        # Kept for the lane to retry later: deliver answers how long to wait before the next try.
        retry_in = await sender.deliver("room:1", notice)
        assert retry_in is not None and retry_in > 0
        assert await store.in_outbox("room:1")
        assert server.hits == FAST.max_retries + 1
    finally:
        await store.close()
        await client.close()


async def test_the_sync_loop_outlives_nio_giving_up(faulty, tmp_path: Path) -> None:
    """503s and a 429 past nio's cap: the loop backs off on the same policy and syncs once the server is back."""
    script = [unavailable, unavailable] + [rate_limited] * (FAST.max_retries + 1)

    async def scripted(request: web.Request) -> web.StreamResponse:
        if script:
            return await script.pop(0)(request)
        return web.json_response({"next_batch": "s_after_outage", "rooms": {}})

    server, url = await faulty(scripted)
    client = bot_client(url)
    store = open_sqlite(str(tmp_path / "bot.db"))
    await store.open()
    cfg = BotConfig(
        url, "@bot:example.test", "tok", "DEV", str(tmp_path / "bot.db"), tmp_path / "c", retry=FAST
    )
    intake = Intake(
        client, cfg, store, None, None, on_effects=lambda: None, on_synced=lambda: None, retry=FAST
    )
    task = asyncio.create_task(intake.run())
    try:
        await asyncio.wait_for(intake.synced_once.wait(), 10)
        assert server.hits == 2 + (FAST.max_retries + 1) + 1
        assert await store.get_value("sync_token") == "s_after_outage"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        await client.close()
