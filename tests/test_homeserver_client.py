"""The homeserver client against a real Synapse, and its retry rules against a fault-injecting fake."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bridge.matrix.client import ExternalId, HomeserverClient, RetryPolicy
from bridge.matrix.errors import (
    MatrixError,
    MAuthError,
    MForbidden,
    MLimitExceeded,
    MNotFound,
    MRoomInUse,
    MUnknownToken,
    MUnrecognized,
    MUserLocked,
    ServerUnavailable,
)
from provisioner.embedded.ports import free_port
from tests.fixtures.synapse import SynapseHandle, unique_localpart

MARKER = "gov.example.civmatrix.managed"


# ---------------------------------------------------------------------------------------------------------
# Against the real Synapse
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
async def admin(synapse: SynapseHandle) -> AsyncIterator[HomeserverClient]:
    async with HomeserverClient(synapse.url, synapse.admin_token) as client:
        yield client


@pytest.mark.synapse
async def test_whoami_and_version(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    me = await admin.whoami()
    assert me.user_id == synapse.admin_user_id
    assert me.server_name == synapse.server_name
    assert (await admin.server_version()).startswith("1.")


@pytest.mark.synapse
async def test_create_update_lock_unlock_user(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    user_id = synapse.user_id(unique_localpart("ivanova"))
    anchor = ExternalId("ldap", "0f8e6a3c-uuid")

    created = await admin.put_user(user_id, displayname="Иванова Анна", external_ids=[anchor])
    assert created.created
    assert created.user.displayname == "Иванова Анна"

    again = await admin.put_user(user_id, displayname="Иванова Анна")
    assert not again.created

    await admin.put_user(user_id, displayname="Иванова-Петрова Анна", locked=True)
    user = await admin.get_user(user_id)
    assert (user.displayname, user.locked, user.deactivated, user.admin) == (
        "Иванова-Петрова Анна",
        True,
        False,
        False,
    )
    assert user.external_ids == (anchor,)

    listed = {u.user_id: u async for u in admin.list_users()}
    assert listed[user_id].locked

    await admin.put_user(user_id, locked=False)
    assert not (await admin.get_user(user_id)).locked


@pytest.mark.synapse
async def test_list_users_paginates_and_includes_deactivated(
    admin: HomeserverClient, synapse: SynapseHandle
) -> None:
    prefix = unique_localpart("page")
    ids = [synapse.user_id(f"{prefix}{i}") for i in range(7)]
    for user_id in ids:
        await admin.put_user(user_id, displayname=user_id)
    await admin.deactivate_user(ids[0])
    # Deactivating twice is a no-op, which is why the client may replay it.
    await admin.deactivate_user(ids[0])

    before = admin.stats
    seen = [u async for u in admin.list_users(page_size=3)]
    pages = (admin.stats - before).by_kind["admin.list_users"]

    assert len({u.user_id for u in seen}) == len(seen)
    mine = {u.user_id: u for u in seen if u.user_id in ids}
    assert set(mine) == set(ids)
    assert mine[ids[0]].deactivated
    assert pages == -(-len(seen) // 3)
    assert (admin.stats - before).writes == 0


@pytest.mark.synapse
async def test_room_create_state_members_join_kick(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    alias_name = unique_localpart("dept")
    member = synapse.user_id(unique_localpart("member"))
    await admin.put_user(member, displayname="Member")

    room_id = await admin.create_room(
        {
            "name": "Отдел кадров",
            "topic": "HR",
            "preset": "private_chat",
            "room_alias_name": alias_name,
            "initial_state": [{"type": MARKER, "state_key": "", "content": {"unit": "hr"}}],
        }
    )
    assert await admin.resolve_alias(f"#{alias_name}:{synapse.server_name}") == room_id
    assert room_id in await admin.joined_rooms()

    state = {(e.type, e.state_key): e for e in await admin.room_state(room_id)}
    assert state[(MARKER, "")].content == {"unit": "hr"}
    assert state[("m.room.name", "")].content["name"] == "Отдел кадров"
    # E2EE by default for private rooms (encryption_enabled_by_default_for_room_type: invite).
    assert ("m.room.encryption", "") in state
    assert await admin.get_state(room_id, MARKER) == {"unit": "hr"}
    assert await admin.get_state(room_id, "gov.example.absent") is None

    await admin.send_state(room_id, "m.room.topic", "", {"topic": "Human resources"})
    assert (await admin.get_state(room_id, "m.room.topic")) == {"topic": "Human resources"}

    assert await admin.admin_join(room_id, member) == room_id
    member_event = {e.state_key: e for e in await admin.room_state(room_id) if e.type == "m.room.member"}
    first_join = member_event[member].event_id
    # A second admin join of a member is accepted and writes no new membership event.
    assert await admin.admin_join(room_id, member) == room_id
    member_event = {e.state_key: e for e in await admin.room_state(room_id) if e.type == "m.room.member"}
    assert member_event[member].event_id == first_join
    assert set(await admin.room_members(room_id)) == {synapse.admin_user_id, member}

    rooms = {r.room_id: r async for r in admin.list_rooms(page_size=2)}
    assert rooms[room_id].joined_members == 2
    assert rooms[room_id].canonical_alias == f"#{alias_name}:{synapse.server_name}"

    await admin.kick(room_id, member, "moved to another unit")
    assert set(await admin.room_members(room_id)) == {synapse.admin_user_id}
    # Kicking someone already out is success (Synapse says 403; the client checks the membership).
    before = admin.stats
    await admin.kick(room_id, member, "again")
    assert await admin.membership(room_id, member) == "leave"
    assert (admin.stats - before).writes == 1

    await admin.invite(room_id, member)
    await admin.invite(room_id, member)
    assert await admin.membership(room_id, member) == "invite"
    await admin.admin_join(room_id, member)
    await admin.invite(room_id, member)
    assert await admin.membership(room_id, member) == "join"


@pytest.mark.synapse
async def test_forbidden_is_still_raised_when_not_already_done(
    admin: HomeserverClient, synapse: SynapseHandle
) -> None:
    owner = synapse.register(unique_localpart("owner"), "secret-pass-6")
    target = synapse.user_id(unique_localpart("target"))
    await admin.put_user(target, displayname="Target")
    async with HomeserverClient(synapse.public_url, owner.access_token) as person:
        room_id = await person.create_room({"preset": "public_chat"})
    # The admin is not in that room: its invite is refused and the target is not invited.
    with pytest.raises(MForbidden):
        await admin.invite(room_id, target)


@pytest.mark.synapse
async def test_admin_join_public_room_twice_writes_one_event(
    admin: HomeserverClient, synapse: SynapseHandle
) -> None:
    member = synapse.user_id(unique_localpart("pub"))
    await admin.put_user(member, displayname="Pub")
    room_id = await admin.create_room({"preset": "public_chat"})
    await admin.admin_join(room_id, member)
    first = {e.state_key: e.event_id for e in await admin.room_state(room_id) if e.type == "m.room.member"}
    before = admin.stats
    await admin.admin_join(room_id, member)
    again = {e.state_key: e.event_id for e in await admin.room_state(room_id) if e.type == "m.room.member"}
    assert again == first
    # Synapse accepted the second join itself: no 403, no membership read.
    assert (admin.stats - before).by_kind == {"admin.join": 1, "admin.room_state": 1}


@pytest.mark.synapse
async def test_create_room_with_taken_alias(admin: HomeserverClient) -> None:
    alias_name = unique_localpart("space")
    body = {"name": "Space", "room_alias_name": alias_name, "creation_content": {"type": "m.space"}}
    room_id = await admin.create_room(body)
    with pytest.raises(MRoomInUse):
        await admin.create_room(body)
    before = admin.stats
    assert await admin.create_room(body, existing_alias_ok=True) == room_id
    assert (admin.stats - before).writes == 1


@pytest.mark.synapse
async def test_parallel_identical_creates_make_distinct_rooms_without_store_errors(
    admin: HomeserverClient, synapse: SynapseHandle
) -> None:
    """Room version 12 derives the room ID from the create event: identical createRoom calls at once
    (the sync makes rooms in parallel) must not produce the same create event, which Synapse only
    sorts out after an ERROR ``store_room ... UNIQUE constraint failed``."""
    log = synapse.server.log_path
    offset = log.stat().st_size
    bodies = [{"preset": "public_chat", "creation_content": {"type": "m.space"}} for _ in range(12)]
    rooms = await asyncio.gather(*(admin.create_room(body) for body in bodies))
    assert len(set(rooms)) == 12
    with log.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        errors = [line for line in handle if " ERROR " in line or "store_room" in line]
    assert errors == []


@pytest.mark.synapse
async def test_set_alias_is_idempotent(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    first = await admin.create_room({"name": "a"})
    second = await admin.create_room({"name": "b"})
    alias = f"#{unique_localpart('alias')}:{synapse.server_name}"
    await admin.set_alias(alias, first)
    await admin.set_alias(alias, first)
    assert await admin.resolve_alias(alias) == first
    with pytest.raises(MRoomInUse, match=first):
        await admin.set_alias(alias, second)


@pytest.mark.synapse
async def test_errcodes_map_to_exceptions(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    with pytest.raises(MNotFound) as missing:
        await admin.get_user(synapse.user_id(unique_localpart("nobody")))
    assert missing.value.status == 404 and missing.value.errcode == "M_NOT_FOUND"
    assert "GET /_synapse/admin/v2/users/" in str(missing.value)
    with pytest.raises(MNotFound):
        await admin.resolve_alias(f"#{unique_localpart('none')}:{synapse.server_name}")

    async with HomeserverClient(synapse.url, "syt_not_a_token") as stranger:
        with pytest.raises(MUnknownToken) as bad:
            await stranger.whoami()
    assert isinstance(bad.value, MAuthError)
    assert stranger.stats.retries == 0

    async with HomeserverClient(synapse.public_url, synapse.admin_token) as public:
        with pytest.raises(MUnrecognized):
            await public.server_version()


@pytest.mark.synapse
async def test_locked_account_gets_user_locked(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    account = synapse.register(unique_localpart("leaver"), "secret-pass-1")
    async with HomeserverClient(synapse.public_url, account.access_token) as person:
        assert (await person.whoami()).user_id == account.user_id
        await admin.put_user(account.user_id, locked=True)
        with pytest.raises(MUserLocked) as locked:
            await person.joined_rooms()
    assert isinstance(locked.value, MAuthError)


@pytest.mark.synapse
async def test_custom_profile_fields_set_by_admin(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    caps = await admin.capabilities()
    assert caps.can_set_profile_field("gov.example.title")
    user_id = synapse.user_id(unique_localpart("profile"))
    await admin.put_user(user_id, displayname="Петров Пётр")

    await admin.set_profile_field(user_id, "gov.example.title", "Главный специалист")
    await admin.set_profile_field(user_id, "gov.example.phone", "+7 495 000-00-00")
    profile = await admin.get_profile(user_id)
    assert profile["gov.example.title"] == "Главный специалист"
    assert profile["displayname"] == "Петров Пётр"

    await admin.delete_profile_field(user_id, "gov.example.phone")
    assert "gov.example.phone" not in await admin.get_profile(user_id)


@pytest.mark.synapse
async def test_send_message_with_txn_id_is_idempotent(admin: HomeserverClient) -> None:
    room_id = await admin.create_room({"name": "notices", "preset": "public_chat"})
    content = {"msgtype": "m.notice", "body": "hello"}
    first = await admin.send_message(room_id, content, "txn-1")
    assert await admin.send_message(room_id, content, "txn-1") == first
    assert await admin.send_message(room_id, content, "txn-2") != first


@pytest.mark.synapse
async def test_account_data_round_trip(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    data_type = f"gov.example.{unique_localpart('ad')}"
    assert await admin.get_account_data(synapse.admin_user_id, data_type) is None
    await admin.put_account_data(synapse.admin_user_id, data_type, {"last_run": 1})
    assert await admin.get_account_data(synapse.admin_user_id, data_type) == {"last_run": 1}


@pytest.mark.synapse
async def test_override_ratelimit_and_write_counters(admin: HomeserverClient, synapse: SynapseHandle) -> None:
    user_id = synapse.user_id(unique_localpart("bot"))
    await admin.put_user(user_id, user_type="bot")
    before = admin.stats
    await admin.override_ratelimit(user_id)
    await admin.get_user(user_id)
    delta = admin.stats - before
    assert (delta.reads, delta.writes) == (1, 1)
    assert delta.writes_by_kind == {"admin.override_ratelimit": 1}
    assert (await admin.get_user(user_id)).user_type == "bot"


@pytest.mark.synapse
async def test_token_never_logged(synapse: SynapseHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with HomeserverClient(synapse.url, synapse.admin_token) as client:
        await client.whoami()
        with pytest.raises(MNotFound) as err:
            await client.get_user(synapse.user_id(unique_localpart("ghost")))
    assert caplog.records, "the client logs each request at debug"
    assert synapse.admin_token not in caplog.text
    assert synapse.admin_token not in str(err.value) and synapse.admin_token not in repr(client)


@pytest.mark.synapse
async def test_real_429_is_waited_out_and_the_exempt_admin_never_sees_one(
    fresh_synapse: Callable[..., SynapseHandle],
) -> None:
    # Tight message limits so Synapse's own 429 (with retry_after_ms) shows up after two messages, however
    # slow a loaded machine makes each send (at 10/s a send slower than 0.1 s never met the limit).
    handle = fresh_synapse(rate_limits={"rc_message": {"per_second": 1, "burst_count": 2}})
    person = handle.register(unique_localpart("chatty"), "secret-pass-7")
    async with (
        HomeserverClient(handle.public_url, person.access_token) as client,
        HomeserverClient(handle.url, handle.admin_token) as admin,
    ):
        room_id = await client.create_room({"preset": "public_chat"})
        for i in range(6):
            await client.send_message(room_id, {"msgtype": "m.text", "body": str(i)}, f"t{i}")
        assert client.stats.retries >= 1

        await admin.admin_join(room_id, handle.admin_user_id)
        for i in range(6):
            await admin.send_message(room_id, {"msgtype": "m.notice", "body": str(i)}, f"a{i}")
        assert admin.stats.retries == 0


# ---------------------------------------------------------------------------------------------------------
# Retry rules against a fault-injecting fake (a real HTTP server on loopback, scripted answers)
# ---------------------------------------------------------------------------------------------------------

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeHomeserver:
    """Answers each request with the next scripted reply and records what it saw."""

    script: list[Reply]
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        reply = self.script.pop(0) if self.script else ok({"done": True})
        return await reply(request)


def ok(body: Mapping[str, object], status: int = 200) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return reply


def error(status: int, errcode: str, headers: dict[str, str] | None = None, **extra: object) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"errcode": errcode, "error": "scripted", **extra}, status=status, headers=headers
        )

    return reply


def drop_connection() -> Reply:
    """Read the request, then close the socket without answering (a crash or a reset mid-request)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    return reply


@dataclass
class Sleeps:
    """Injected sleep: records the delays, waits for nothing; ``on_first`` runs at the first sleep."""

    delays: list[float] = field(default_factory=list)
    on_first: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_first is not None and len(self.delays) == 1:
            await self.on_first()


async def serve(fake: FakeHomeserver, port: int | None = None) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


MakeFake = Callable[..., Awaitable[tuple[FakeHomeserver, HomeserverClient, Sleeps]]]


@pytest.fixture
async def fake() -> AsyncIterator[MakeFake]:
    runners: list[web.AppRunner] = []
    clients: list[HomeserverClient] = []

    async def make(*script: Reply, max_retries: int = 3) -> tuple[FakeHomeserver, HomeserverClient, Sleeps]:
        server = FakeHomeserver(list(script))
        runner, url = await serve(server)
        runners.append(runner)
        sleeps = Sleeps()
        client = HomeserverClient(
            url,
            "syt_secret_token_value",
            retry=RetryPolicy(max_retries=max_retries, base_delay=1.0, max_delay=8.0),
            sleep=sleeps,
            rng=random.Random(7),
        )
        await client.open()
        clients.append(client)
        return server, client, sleeps

    yield make
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


WHOAMI = {"user_id": "@admin:example.test", "device_id": "D"}


async def test_429_honours_retry_after_ms_then_succeeds(fake: MakeFake) -> None:
    server, client, sleeps = await fake(
        error(429, "M_LIMIT_EXCEEDED", retry_after_ms=1500, headers={"Retry-After": "9"}), ok(WHOAMI)
    )
    assert (await client.whoami()).user_id == "@admin:example.test"
    assert sleeps.delays == [1.5]
    assert len(server.seen) == 2
    assert client.stats.retries == 1 and client.stats.reads == 1


async def test_429_falls_back_to_retry_after_header(fake: MakeFake) -> None:
    _, client, sleeps = await fake(error(429, "M_LIMIT_EXCEEDED", headers={"Retry-After": "2"}), ok(WHOAMI))
    await client.whoami()
    assert sleeps.delays == [2.0]


async def test_429_longer_than_the_cap_is_reported_not_waited(fake: MakeFake) -> None:
    _, client, sleeps = await fake(error(429, "M_LIMIT_EXCEEDED", retry_after_ms=3_600_000))
    with pytest.raises(MLimitExceeded) as err:
        await client.whoami()
    assert err.value.retry_after_ms == 3_600_000
    assert sleeps.delays == []


async def test_503_then_200_is_retried_with_jittered_backoff(fake: MakeFake) -> None:
    server, client, sleeps = await fake(error(503, "M_UNKNOWN"), error(502, "M_UNKNOWN"), ok(WHOAMI))
    await client.whoami()
    assert len(server.seen) == 3
    first, second = sleeps.delays
    assert 0.8 <= first <= 1.4 and 1.6 <= second <= 2.8


async def test_backoff_is_capped(fake: MakeFake) -> None:
    server, client, sleeps = await fake(*[error(504, "M_UNKNOWN")] * 10, max_retries=6)
    with pytest.raises(ServerUnavailable) as err:
        await client.get_user("@x:example.test")
    assert err.value.attempts == 7 and len(server.seen) == 7
    assert max(sleeps.delays) <= 8.0
    assert client.stats.failures == 1 and client.stats.retries == 6


async def test_post_is_not_replayed_after_503(fake: MakeFake) -> None:
    server, client, sleeps = await fake(error(503, "M_UNKNOWN"), ok({"room_id": "!dup:example.test"}))
    with pytest.raises(ServerUnavailable) as err:
        await client.create_room({"name": "no alias"})
    assert err.value.maybe_applied
    assert server.seen == ["POST /_matrix/client/v3/createRoom"]
    assert sleeps.delays == []


async def test_post_is_not_replayed_after_a_dropped_connection(fake: MakeFake) -> None:
    server, client, _ = await fake(drop_connection(), ok({"room_id": "!dup:example.test"}))
    with pytest.raises(ServerUnavailable) as err:
        await client.create_room({"name": "no alias"})
    assert err.value.maybe_applied
    assert len(server.seen) == 1


async def test_get_is_replayed_after_a_dropped_connection(fake: MakeFake) -> None:
    server, client, _ = await fake(drop_connection(), ok({"joined_rooms": ["!a:example.test"]}))
    assert await client.joined_rooms() == ("!a:example.test",)
    assert len(server.seen) == 2


async def test_idempotent_post_is_replayed(fake: MakeFake) -> None:
    server, client, _ = await fake(error(502, "M_UNKNOWN"), ok({"room_id": "!r:example.test"}))
    assert await client.admin_join("!r:example.test", "@u:example.test") == "!r:example.test"
    assert len(server.seen) == 2


async def test_create_room_429_retried_only_with_an_alias(fake: MakeFake) -> None:
    server, client, _ = await fake(error(429, "M_LIMIT_EXCEEDED", retry_after_ms=10), ok({"room_id": "!r:x"}))
    with pytest.raises(MLimitExceeded):
        await client.create_room({"name": "no alias"})
    assert len(server.seen) == 1

    server, client, _ = await fake(error(429, "M_LIMIT_EXCEEDED", retry_after_ms=10), ok({"room_id": "!r:x"}))
    assert await client.create_room({"room_alias_name": "hr"}) == "!r:x"
    assert len(server.seen) == 2


async def test_alias_taken_after_429_resolves_existing_room(fake: MakeFake) -> None:
    # synapse#13427: the first createRoom made the room but answered 429; the retry finds the alias taken.
    server, client, _ = await fake(
        error(429, "M_LIMIT_EXCEEDED", retry_after_ms=10),
        error(400, "M_ROOM_IN_USE"),
        ok(WHOAMI),
        ok({"room_id": "!first:example.test", "servers": ["example.test"]}),
    )
    assert (
        await client.create_room({"room_alias_name": "hr"}, existing_alias_ok=True) == "!first:example.test"
    )
    assert server.seen[-1] == "GET /_matrix/client/v3/directory/room/#hr:example.test"


async def test_refused_connection_is_retried_even_for_post() -> None:
    """Nothing listens at first; the server comes up during the first backoff, and the POST goes through."""
    port = free_port()
    server = FakeHomeserver([ok({"room_id": "!late:example.test"})])
    runners: list[web.AppRunner] = []

    async def bring_up() -> None:
        runners.append((await serve(server, port))[0])

    sleeps = Sleeps(on_first=bring_up)
    try:
        async with HomeserverClient(f"http://127.0.0.1:{port}", "tok", sleep=sleeps) as client:
            assert await client.create_room({"name": "late"}) == "!late:example.test"
        assert len(sleeps.delays) == 1 and server.seen == ["POST /_matrix/client/v3/createRoom"]
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_refused_connection_exhausts_into_server_unavailable() -> None:
    sleeps = Sleeps()
    async with HomeserverClient(
        f"http://127.0.0.1:{free_port()}", "tok", retry=RetryPolicy(max_retries=2), sleep=sleeps
    ) as client:
        with pytest.raises(ServerUnavailable) as err:
            await client.whoami()
    assert not err.value.maybe_applied and err.value.attempts == 3


async def test_auth_errors_and_plain_errors_are_not_retried(fake: MakeFake) -> None:
    server, client, sleeps = await fake(
        error(401, "M_UNKNOWN_TOKEN", soft_logout=True), error(500, "M_UNKNOWN")
    )
    with pytest.raises(MUnknownToken) as err:
        await client.whoami()
    assert err.value.soft_logout
    with pytest.raises(MatrixError) as err500:
        await client.joined_rooms()
    assert err500.value.status == 500
    assert len(server.seen) == 2 and sleeps.delays == []


async def test_token_not_in_logs_or_errors_on_faults(
    fake: MakeFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, client, _ = await fake(error(429, "M_LIMIT_EXCEEDED", retry_after_ms=5), error(503, "M_UNKNOWN"))
    with pytest.raises(ServerUnavailable) as err:
        await client.create_room({"room_alias_name": "hr"})
    messages = caplog.text + str(err.value) + repr(err.value.__cause__)
    assert "#1 POST" in caplog.text
    assert "syt_secret_token_value" not in messages
