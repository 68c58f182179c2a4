"""The event bot's transport: matrix-nio with end-to-end encryption, executing what the service decides.

Three owned tasks run while the bot is up (all cancelled by :meth:`EventBot.stop`):

* the sync loop: reads ``/sync``, joins invited rooms, decrypts, turns each new event into a service call and
  queues the effects; it persists the sync token only after the batch is handled, and every handled event is
  marked processed in the same transaction as its state change, so a restart neither replays nor drops;
* the sender: executes queued effects (``m.notice`` replies, polls, DMs, uploads); it runs apart from the sync
  loop because a new DM room must first show up in a sync before an encrypted message can be sent to it;
* the reminder scheduler: sleeps on the injected clock until the next reminder is due, sends it, marks it
  sent.

Rule: events older than the bot's arrival in a room (its join, or the first sync that showed the room) are
history and never acted on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import io
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, assert_never, cast
from zoneinfo import ZoneInfo

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    MegolmEvent,
    MessageDirection,
    ProfileGetResponse,
    ReactionEvent,
    RedactionEvent,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    UnknownEvent,
    UploadResponse,
    WhoamiResponse,
)

from bridge.events.clock import Clock, SystemClock
from bridge.events.model import (
    Announce,
    Attachment,
    DirectMessage,
    DirectUpload,
    Effect,
    EndPoll,
    MatrixEventID,
    Reply,
    RoomID,
    RoomNotice,
    Text,
    Upload,
    UserID,
)
from bridge.events.outbox import decode
from bridge.events.reminders import DEFAULT_OFFSETS
from bridge.events.service import REMINDER_AHEAD, EventService, Person, Settings
from bridge.events.store import (
    REMINDER_OUTBOX,
    DeleteOutbox,
    SetDmRoom,
    SetRoomSince,
    SetValue,
    Store,
    open_store,
)
from bridge.matrix.contract import MARKER_TYPE

log = logging.getLogger(__name__)

POLL_START = "m.poll.start"
POLL_RESPONSE_TYPES = ("m.poll.response", "org.matrix.msc3381.poll.response")
POLL_END = "m.poll.end"
TOKEN_ENV = "CIVMATRIX_BOT_TOKEN"
CREATOR_LEVEL = 2**53  # "infinitely high" for room creators in room version 12
SYNC_TOKEN_KEY = "sync_token"
# A larger timeline window makes gaps (limited syncs) rare; a gap is backfilled page by page, up to this many.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
BACKFILL_PAGES = 50
# An event that could not be decrypted yet is retried for this long (its room key may still be on the way).
UNDECRYPTED_TTL = 300.0


@dataclass(frozen=True, slots=True)
class BotConfig:
    homeserver_url: str
    user_id: str
    access_token: str = field(repr=False)
    device_id: str | None
    store: str
    crypto_store_dir: Path
    timezone: str = "Europe/Moscow"
    moderator_level: int = 50
    reminder_offsets: tuple[timedelta, ...] = DEFAULT_OFFSETS
    remind_maybe: bool = False
    sync_timeout_ms: int = 30_000


def read_token(token_file: Path | None) -> str:
    """The access token from ``token_file`` or the ``CIVMATRIX_BOT_TOKEN`` variable; never from argv."""
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip()
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(
            f"no access token: set bot.access_token_file or the {TOKEN_ENV} environment variable"
        )
    return token


def _notice(text: Text) -> dict[str, Any]:
    return {
        "msgtype": "m.notice",
        "body": text.body,
        "format": "org.matrix.custom.html",
        "formatted_body": text.html,
    }


def poll_content(a: Announce) -> dict[str, Any]:
    """``m.poll.start`` as in Matrix 1.7, plus the MSC3381 shape that matrix-js-sdk (Element) still reads."""
    return {
        "org.matrix.msc3381.poll.start": {
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "question": {"org.matrix.msc1767.text": a.question, "body": a.question},
            "answers": [{"id": ans.value, "org.matrix.msc1767.text": label} for ans, label in a.answers],
        },
        "org.matrix.msc1767.text": a.text.body,
        "m.poll": {
            "kind": "m.disclosed",
            "max_selections": 1,
            "question": {"m.text": [{"body": a.question}]},
            "answers": [{"m.id": ans.value, "m.text": [{"body": label}]} for ans, label in a.answers],
        },
        "m.text": [
            {"mimetype": "text/html", "body": a.text.html},
            {"body": a.text.body},
        ],
    }


@dataclass(slots=True)
class _Marker:
    kind: str
    unit: str


class MatrixDirectory:
    """Power levels, profiles and the unit layout, read from the homeserver through the bot's own client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._markers: dict[str, _Marker | None] = {}
        self._people: dict[str, tuple[float, Person]] = {}
        self._room_creators: dict[str, frozenset[str]] = {}

    async def power_level(self, room: RoomID, user: UserID) -> int:
        # Read at the moment of the command: a demoted moderator must lose the right at once.
        if user in await self._creators(room):
            return CREATOR_LEVEL
        resp = await self.client.room_get_state_event(room, "m.room.power_levels", "")
        if isinstance(resp, RoomGetStateEventResponse):
            content = cast(dict[str, Any], resp.content)
            users = content.get("users", {})
            level = users.get(user, content.get("users_default", 0))
            return int(level)
        nio_room = self.client.rooms.get(room)
        return int(nio_room.power_levels.get_user_level(user)) if nio_room is not None else 0

    async def _creators(self, room: str) -> frozenset[str]:
        """Creators of a room of version 12 or later: they outrank every power level and are not listed.

        (MSC4289, the default room version of current Synapse.) The create event never changes: cached.
        """
        if room in self._room_creators:
            return self._room_creators[room]
        creators: frozenset[str] = frozenset()
        for ev in await self._state(room):
            if ev.get("type") == "m.room.create":
                content = ev.get("content", {})
                version = str(content.get("room_version", "1"))
                if not version.isdigit() or int(version) >= 12:
                    extra = content.get("additional_creators", [])
                    creators = frozenset([str(ev.get("sender", "")), *map(str, extra)])
                self._room_creators[room] = creators
        return creators

    async def marker(self, room: str) -> _Marker | None:
        if room in self._markers:
            return self._markers[room]
        resp = await self.client.room_get_state_event(room, MARKER_TYPE, "")
        marker: _Marker | None = None
        if isinstance(resp, RoomGetStateEventResponse):
            c = cast(dict[str, Any], resp.content)
            if isinstance(c.get("unit"), str) and c.get("kind") in ("room", "space"):
                marker = _Marker(str(c["kind"]), str(c["unit"]))
        self._markers[room] = marker
        return marker

    def forget(self, room: str) -> None:
        self._markers.pop(room, None)

    async def person(self, user: UserID, room: RoomID) -> Person:
        hit = self._people.get(user)
        if hit is not None and time.monotonic() - hit[0] < 600:
            return hit[1]
        name, title, dept = "", "", ""
        resp = await self.client.get_profile(user)
        if isinstance(resp, ProfileGetResponse):
            name = resp.displayname or ""
            for k, v in cast(dict[str, Any], resp.other_info).items():
                # MSC4133 custom profile fields; the provisioner may publish title and department there.
                if isinstance(v, str) and k.endswith("title") and not title:
                    title = v
                if isinstance(v, str) and (k.endswith("department") or k.endswith("unit")) and not dept:
                    dept = v
        if not dept:
            m = await self.marker(room)
            dept = m.unit if m is not None else ""
        person = Person(name, dept, title)
        self._people[user] = (time.monotonic(), person)
        return person

    async def _state(self, room: str) -> list[dict[str, Any]]:
        resp = await self.client.room_get_state(room)
        if isinstance(resp, RoomGetStateResponse):
            return cast(list[dict[str, Any]], resp.events)
        return []

    async def unit_rooms(self, unit: str) -> list[RoomID]:
        """Joined rooms whose marker names ``unit`` or a unit below it in the space tree.

        The unit's space is found by walking ``m.space.parent`` up from the rooms the bot is in, then its
        descendants by walking ``m.space.child`` down; only rooms the bot has joined can be announced in.
        """
        joined = list(self.client.rooms)
        spaces: set[str] = set()
        frontier = list(joined)
        seen: set[str] = set()
        while frontier:
            room = frontier.pop()
            if room in seen:
                continue
            seen.add(room)
            for ev in await self._state(room):
                if ev.get("type") == "m.space.parent" and ev.get("content") and ev.get("state_key"):
                    parent = str(ev["state_key"])
                    spaces.add(parent)
                    frontier.append(parent)
        for room in joined:
            m = await self.marker(room)
            if m is not None and m.kind == "space":
                spaces.add(room)
        roots = [
            s
            for s in spaces
            if (m := await self.marker(s)) is not None and m.kind == "space" and m.unit == unit
        ]
        below: set[str] = set()
        todo = list(roots)
        while todo:
            space = todo.pop()
            if space in below:
                continue
            below.add(space)
            for ev in await self._state(space):
                if ev.get("type") == "m.space.child" and ev.get("content") and ev.get("state_key"):
                    todo.append(str(ev["state_key"]))
        out: list[RoomID] = []
        for room in sorted(joined):
            m = await self.marker(room)
            if m is not None and m.kind == "room" and (m.unit == unit or room in below):
                out.append(RoomID(room))
        return out


@dataclass(slots=True)
class _Pending:
    room_id: str
    event: Any
    first_seen: float


class EventBot:
    """Owns the nio client, the store and the three background tasks; :meth:`start` / :meth:`stop`."""

    def __init__(self, cfg: BotConfig, store: Store, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or SystemClock()
        self.client = AsyncClient(
            cfg.homeserver_url,
            cfg.user_id,
            device_id=cfg.device_id,
            store_path=str(cfg.crypto_store_dir),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False, request_timeout=60),
        )
        self.directory = MatrixDirectory(self.client)
        self.service = EventService(
            store,
            self.clock,
            Settings(
                tz=ZoneInfo(cfg.timezone),
                moderator_level=cfg.moderator_level,
                reminder_offsets=cfg.reminder_offsets,
                remind_maybe=cfg.remind_maybe,
                uid_domain=cfg.user_id.split(":", 1)[-1],
            ),
            self.directory,
        )
        self._outbox_wake = asyncio.Event()
        self._keys_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._pending: list[_Pending] = []
        self._room_waiters: dict[str, asyncio.Event] = {}
        self._send_rate = SendRate()
        self.synced_once = asyncio.Event()
        self.idle = asyncio.Event()  # set when the sender has nothing queued (tests wait on it)

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.cfg.crypto_store_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        self.client.access_token = self.cfg.access_token
        who = await self.client.whoami()
        if not isinstance(who, WhoamiResponse):
            raise RuntimeError(f"the bot's access token was refused by {self.cfg.homeserver_url}: {who}")
        if who.user_id != self.cfg.user_id:
            raise RuntimeError(f"bot.user_id is {self.cfg.user_id} but the token belongs to {who.user_id}")
        device = who.device_id or self.cfg.device_id
        if self.cfg.device_id and who.device_id and who.device_id != self.cfg.device_id:
            raise RuntimeError(
                f"bot.device_id is {self.cfg.device_id} but the token's device is {who.device_id}"
            )
        if not device:
            raise RuntimeError("the server did not tell the token's device; set bot.device_id")
        if await self._is_server_admin():
            raise RuntimeError(
                f"{self.cfg.user_id} is a server admin: the bot must run as an ordinary account with its own "
                "token (a leaked bot token must not be able to administer the server)"
            )
        # The crypto store is keyed by user and device: the same device keeps the same keys across restarts.
        self.client.restore_login(self.cfg.user_id, device, self.cfg.access_token)
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        for name, coro in (
            ("sync", self._sync_loop),
            ("sender", self._sender),
            ("reminders", self._reminders),
        ):
            self._tasks.append(asyncio.create_task(self._guard(name, coro), name=f"bot-{name}"))
        log.info("bot %s started with device %s", self.cfg.user_id, device)

    async def _is_server_admin(self) -> bool:
        """Only an admin may read this endpoint: anything but a 200 with ``admin: true`` means "not admin"."""
        path = "/_synapse/admin/v1/users/" + urllib.parse.quote(self.cfg.user_id, safe="") + "/admin"
        try:
            resp = await self.client.send(
                "GET", path, headers={"Authorization": f"Bearer {self.cfg.access_token}"}
            )
            try:
                if resp.status != 200:
                    return False
                body = await resp.json()
                return bool(body.get("admin"))
            finally:
                resp.release()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self.client.close()
        await self.store.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Restart a task after an unexpected error instead of leaving the bot half-alive."""
        delay = 1.0
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bot task %s failed; restarting in %.0f s", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    # --- sync -----------------------------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        since = await self.store.get_value(SYNC_TOKEN_KEY)
        first_ever = since is None
        # nio keeps no room state on disk: the first sync after a start asks for the full state of every
        # joined room, or a room that stays quiet after a restart is unknown (no members, no sending).
        full_state = True
        backoff = 1.0
        while True:
            resp = await self.client.sync(
                timeout=self.cfg.sync_timeout_ms, sync_filter=SYNC_FILTER, since=since, full_state=full_state
            )
            if not isinstance(resp, SyncResponse):
                log.warning("sync failed: %s; retrying in %.0f s", getattr(resp, "message", resp), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            await self._handle_sync(resp, first_ever)
            first_ever = False
            full_state = False
            since = resp.next_batch
            await self.store.write([SetValue(SYNC_TOKEN_KEY, since)])
            await self._maintain_keys()
            self.synced_once.set()
            for room_id in list(self._room_waiters):
                if room_id in self.client.rooms:
                    self._room_waiters.pop(room_id).set()

    async def _maintain_keys(self) -> None:
        await self.client.send_to_device_messages()
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())

    async def _handle_sync(self, resp: SyncResponse, first_ever: bool) -> None:
        for room_id in resp.rooms.invite:
            r = await self.client.join(room_id)
            if isinstance(r, JoinError):
                log.warning("could not join %s: %s", room_id, r.message)
            else:
                log.info("joined %s on invitation", room_id)
        for room_id, info in resp.rooms.join.items():
            events = list(info.timeline.events)
            since = await self._room_cutoff(room_id, events, first_ever)
            seen_key = f"seen:{room_id}"
            seen = int(await self.store.get_value(seen_key) or 0)
            if info.timeline.limited and info.timeline.prev_batch and not first_ever:
                events = await self._backfill(room_id, info.timeline.prev_batch, max(since, seen)) + events
            newest = seen
            for ev in events:
                ts = int(getattr(ev, "server_timestamp", 0))
                newest = max(newest, ts)
                if ts < since:
                    continue
                await self._handle_event(room_id, ev)
            if newest > seen:
                await self.store.write([SetValue(seen_key, str(newest))])
        await self._retry_undecrypted()

    async def _backfill(self, room_id: str, token: str, after_ts: int) -> list[Any]:
        """Events a limited sync left out (the bot was down while the room was busy), oldest first.

        Pages back until an event no newer than ``after_ts`` (already seen), so nothing sent while the bot was
        down is dropped; what was handled already is skipped later by its "processed" mark.
        """
        missed: list[Any] = []
        for _ in range(BACKFILL_PAGES):
            resp = await self.client.room_messages(
                room_id, start=token, limit=100, direction=MessageDirection.back
            )
            if not isinstance(resp, RoomMessagesResponse) or not resp.chunk:
                break
            done = False
            for ev in resp.chunk:  # newest first
                if int(getattr(ev, "server_timestamp", 0)) <= after_ts:
                    done = True
                    break
                missed.append(ev)
            if done or not resp.end:
                break
            token = resp.end
        log.info("backfilled %d events in %s after a gap", len(missed), room_id)
        return list(reversed(missed))

    async def _room_cutoff(self, room_id: str, events: Sequence[Any], first_ever: bool) -> int:
        known = await self.store.room_since(RoomID(room_id))
        if known is not None:
            return known
        own_join = [
            e.server_timestamp
            for e in events
            if isinstance(e, RoomMemberEvent) and e.state_key == self.cfg.user_id and e.membership == "join"
        ]
        if own_join:
            cutoff = int(max(own_join))
        elif first_ever:
            # The very first sync shows recent history of rooms joined before the bot ever ran.
            cutoff = max((int(getattr(e, "server_timestamp", 0)) for e in events), default=0) + 1
        else:
            # Server timestamps are wall-clock milliseconds; the injected clock is for domain time only.
            cutoff = int(time.time() * 1000)
        await self.store.write([SetRoomSince(RoomID(room_id), cutoff)])
        self.directory.forget(room_id)
        return cutoff

    async def _handle_event(self, room_id: str, ev: Any) -> None:
        sender = getattr(ev, "sender", None)
        if sender is None or sender == self.cfg.user_id:
            return
        if isinstance(ev, MegolmEvent):
            self._pending.append(_Pending(room_id, ev, time.monotonic()))
            with contextlib.suppress(Exception):
                await self.client.request_room_key(ev)
            return
        mid = MatrixEventID(ev.event_id)
        if await self.store.is_processed(mid):
            return
        room = RoomID(room_id)
        user = UserID(sender)
        effects: list[Effect] = []
        if isinstance(ev, RoomMessageText):
            effects = await self.service.handle_message(room, user, mid, _strip_reply_fallback(ev.body))
        elif isinstance(ev, ReactionEvent):
            effects = await self.service.handle_reaction(room, user, mid, ev.reacts_to, ev.key)
        elif isinstance(ev, UnknownEvent) and ev.type in POLL_RESPONSE_TYPES:
            content = cast(dict[str, Any], ev.source.get("content", {}))
            target = content.get("m.relates_to", {}).get("event_id")
            selections = content.get("m.selections")
            if selections is None:
                selections = content.get("org.matrix.msc3381.poll.response", {}).get("answers", [])
            if isinstance(target, str) and isinstance(selections, list):
                effects = await self.service.handle_poll_response(
                    room, user, mid, target, [str(s) for s in selections]
                )
        elif isinstance(ev, RedactionEvent):
            effects = await self.service.handle_redaction(room, user, mid, ev.redacts)
        elif isinstance(ev, UnknownEvent) and ev.type == MARKER_TYPE:
            self.directory.forget(room_id)
            return
        else:
            return
        if effects:
            self.idle.clear()
            self._outbox_wake.set()
            # A new or moved event may have an earlier reminder than the one the scheduler sleeps towards.
            self._wake.set()

    async def _retry_undecrypted(self) -> None:
        keep: list[_Pending] = []
        for p in self._pending:
            try:
                dec = self.client.decrypt_event(p.event)
            except Exception:
                dec = None
            if dec is not None and not isinstance(dec, MegolmEvent):
                await self._handle_event(p.room_id, dec)
            elif time.monotonic() - p.first_seen < UNDECRYPTED_TTL:
                keep.append(p)
            else:
                log.warning("gave up decrypting %s in %s", p.event.event_id, p.room_id)
        self._pending = keep

    # --- effects --------------------------------------------------------------------------------------------

    async def _sender(self) -> None:
        """Send what the outbox holds; delete each entry once the homeserver has it.

        Entries go out in lanes, one per room (per person for direct messages) and kind, so a room's messages
        of one kind keep their order while different rooms proceed in parallel; a lane starts as soon as its
        first entry is committed, so nothing waits for an unrelated batch to finish. What a person is waiting
        for (replies, announcements, exports) and background traffic (reminders, notices to many) have
        separate lanes and limits, and reminders are read from the outbox apart from everything else, so a
        backlog of thousands of reminders neither holds up a reply nor has to fit in memory at once.
        """
        # Entries read and not yet deleted, by group: True for reminders, False for everything else.
        queued: dict[bool, set[str]] = {True: set(), False: set()}
        more = {True: False, False: False}  # the group's last read was full: the outbox holds more
        lanes: dict[str, collections.deque[tuple[str, Effect]]] = {}
        workers: set[asyncio.Task[None]] = set()
        gates = {True: asyncio.Semaphore(INTERACTIVE_LANES), False: asyncio.Semaphore(BACKGROUND_LANES)}
        waiting = {True: 0, False: 0}  # entries queued per kind (interactive or not), not yet delivered

        def group(oid: str) -> bool:
            return oid.startswith(REMINDER_OUTBOX)

        def needs_read() -> bool:
            return not any(queued.values()) or any(
                more[g] and len(queued[g]) <= OUTBOX_BATCH // 2 for g in queued
            )

        async def lane_worker(key: str, interactive: bool) -> None:
            todo = lanes[key]
            backoff = 1.0
            try:
                while todo:
                    oid, effect = todo[0]
                    async with gates[interactive]:
                        delivered = await self._deliver(oid, effect)
                    if not delivered:
                        # Unreachable: keep the entry and retry it (its txn id dedups what did arrive).
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 60.0)
                        continue
                    backoff = 1.0
                    todo.popleft()
                    queued[group(oid)].discard(oid)
                    waiting[interactive] -= 1
                    if not interactive:
                        self._send_rate.delivered(time.monotonic(), waiting[False])
            except Exception:
                log.exception("sending lane %s failed; its entries are read again", key)
                await asyncio.sleep(1.0)
            finally:
                # What is left stays in the outbox; forgetting it here lets the next read pick it up.
                for oid, _ in todo:
                    queued[group(oid)].discard(oid)
                waiting[interactive] -= len(todo)
                del lanes[key]
                if todo or needs_read():
                    self._outbox_wake.set()

        def enqueue(oid: str, effect: Effect) -> None:
            queued[group(oid)].add(oid)
            interactive = is_interactive(effect)
            waiting[interactive] += 1
            key = f"{interactive}:{_lane(effect)}"
            if key in lanes:
                lanes[key].append((oid, effect))
                return
            lanes[key] = collections.deque([(oid, effect)])
            task = asyncio.create_task(lane_worker(key, interactive), name=f"bot-lane-{key}")
            workers.add(task)
            task.add_done_callback(workers.discard)

        try:
            while True:
                self._outbox_wake.clear()
                dropped = False
                for g in (False, True):  # everything but reminders first
                    held = len(queued[g])
                    if held >= OUTBOX_BATCH:
                        continue
                    # The oldest rows are the ones held already; what is new comes after them.
                    limit = OUTBOX_BATCH + held
                    rows = await self.store.outbox(limit, reminders=g)
                    more[g] = len(rows) >= limit
                    for oid, payload in rows:
                        if oid in queued[g]:
                            continue
                        try:
                            effect = decode(payload)
                        except Exception:
                            log.exception("could not read outbox entry %s; dropped", oid)
                            await self.store.write([DeleteOutbox(oid)])
                            dropped = True
                            continue
                        enqueue(oid, effect)
                if dropped:
                    self._outbox_wake.set()  # rows behind the dropped ones did not fit into this read
                if any(queued.values()) or self._outbox_wake.is_set():
                    self.idle.clear()
                else:
                    self.idle.set()
                await self._outbox_wake.wait()
        finally:
            for task in list(workers):
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _deliver(self, oid: str, effect: Effect) -> bool:
        """Send one outbox entry and delete it; False (entry kept) if the homeserver could not be reached."""
        if not await self.store.in_outbox(oid):
            # Already sent (a read that overlapped its deletion), or a reminder of an event cancelled or
            # moved since it was read.
            return True
        try:
            await self._execute(effect, _txn(oid))
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("sending %s failed (%s); will retry", oid, e)
            return False
        except Exception:
            # Anything else would fail again forever; drop it so the queue keeps moving.
            log.exception("could not send %s; dropped", oid)
        await self.store.write([DeleteOutbox(oid)])
        return True

    async def _send(
        self, room: str, etype: str, content: dict[str, Any], txn: str | None = None
    ) -> str | None:
        await self._wait_room(room)
        if self.client.rooms[room].encrypted and self.client.should_query_keys:
            async with self._keys_lock:  # lanes send in parallel; one key query serves them all
                if self.client.should_query_keys:
                    await self.client.keys_query()
        resp = await self.client.room_send(room, etype, content, tx_id=txn, ignore_unverified_devices=True)
        if isinstance(resp, RoomSendResponse):
            return str(resp.event_id)
        log.warning("send %s to %s failed: %s", etype, room, getattr(resp, "message", resp))
        return None

    async def _wait_room(self, room: str, timeout: float = 60.0) -> None:
        if room in self.client.rooms:
            return
        waiter = self._room_waiters.setdefault(room, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            # Not a network problem (that would be retried): the bot is not in this room, so never will be.
            raise LookupError(f"the bot is not in {room}") from None

    async def _execute(self, effect: Effect, txn: str) -> None:
        match effect:
            case Reply(room, in_reply_to, text):
                content = _notice(text)
                if in_reply_to:
                    content["m.relates_to"] = {"m.in_reply_to": {"event_id": in_reply_to}}
                await self._send(room, "m.room.message", content, txn)
            case RoomNotice(room, text):
                await self._send(room, "m.room.message", _notice(text), txn)
            case DirectMessage(user, text):
                await self._send(await self._dm_room(user), "m.room.message", _notice(text), txn)
            case Announce():
                # The full text as an ordinary notice, for clients that do not show polls (they can react to
                # it or use the commands), then the poll for those that do.
                text_id = await self._send(effect.room_id, "m.room.message", _notice(effect.text), txn + ".t")
                if text_id is not None:
                    await self.service.announcement_posted(
                        effect.event_id, effect.room_id, MatrixEventID(text_id)
                    )
                poll_id = await self._send(effect.room_id, POLL_START, poll_content(effect), txn)
                if poll_id is not None:
                    await self.service.poll_posted(effect.event_id, effect.room_id, MatrixEventID(poll_id))
            case Upload(room, files):
                for i, f in enumerate(files):
                    await self._upload(room, f, f"{txn}.{i}")
            case DirectUpload(user, text, files):
                dm = await self._dm_room(user)
                await self._send(dm, "m.room.message", _notice(text), txn)
                for i, f in enumerate(files):
                    await self._upload(dm, f, f"{txn}.{i}")
            case EndPoll(eid, room, text):
                poll = dict(await self.store.audience(eid)).get(room)
                if poll is not None:
                    content = {
                        "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
                        "m.text": [{"body": text}],
                    }
                    await self._send(room, POLL_END, content, txn)
            case _:
                assert_never(effect)

    async def _upload(self, room: str, f: Attachment, txn: str) -> None:
        await self._wait_room(room)
        encrypted = bool(self.client.rooms[room].encrypted)
        resp, keys = await self.client.upload(
            io.BytesIO(f.data),
            content_type=f.mimetype,
            filename=f.filename,
            encrypt=encrypted,
            filesize=len(f.data),
        )
        if not isinstance(resp, UploadResponse):
            log.warning("upload of %s failed: %s", f.filename, getattr(resp, "message", resp))
            return
        content: dict[str, Any] = {
            "msgtype": "m.file",
            "body": f.filename,
            "filename": f.filename,
            "info": {"mimetype": f.mimetype, "size": len(f.data)},
        }
        if encrypted and keys is not None:
            content["file"] = {**keys, "url": resp.content_uri}
        else:
            content["url"] = resp.content_uri
        await self._send(room, "m.room.message", content, txn)

    async def _dm_room(self, user: UserID) -> str:
        room = await self._open_dm(user)
        await self._wait_room(room)
        nio_room = self.client.rooms[room]
        if user not in nio_room.users:
            # nio sometimes builds a new room without the invite we sent with it, and shares the message key
            # only with members it knows: the invitee could then never read the message.
            nio_room.add_member(user, None, None, True)
        return room

    async def _open_dm(self, user: UserID) -> RoomID:
        known = await self.store.dm_room(user)
        if known is not None:
            return known
        resp = await self.client.room_create(
            is_direct=True,
            invite=[user],
            preset=RoomPreset.trusted_private_chat,
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        if not isinstance(resp, RoomCreateResponse):
            raise RuntimeError(f"could not open a direct chat with {user}: {getattr(resp, 'message', resp)}")
        room = RoomID(resp.room_id)
        await self.store.write([SetDmRoom(user, room), SetRoomSince(room, int(time.time() * 1000))])
        return room

    # --- reminders ------------------------------------------------------------------------------------------

    async def _reminders(self) -> None:
        await self.synced_once.wait()
        while True:
            # Cleared before looking, not before sleeping: a wake-up that arrives while we look is kept.
            self._wake.clear()
            queued = await self.service.queue_due_reminders(self._send_rate.per_second())
            if queued.items:
                self.idle.clear()
                self._outbox_wake.set()
            times = [queued.next_release, await self.service.next_reminder_at(REMINDER_AHEAD)]
            nxt = min((t for t in times if t is not None), default=None)
            wait = 300.0 if nxt is None else max(0.0, (nxt - self.clock.now()).total_seconds())
            await self._sleep_or_wake(min(wait, 300.0))

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.create_task(self.clock.sleep(seconds))
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    def wake_scheduler(self) -> None:
        """Re-check reminders now (tests call this after moving a manual clock)."""
        self._wake.set()


class SendRate:
    """Messages per second the sender gets through while busy, from the gaps between deliveries.

    Only gaps while more messages were waiting count (an idle sender says nothing about its speed); until
    enough were seen the rate is a cautious default (a lower rate only releases a reminder burst earlier).
    """

    DEFAULT = 50.0
    SAMPLES = 50

    def __init__(self) -> None:
        self._last: float | None = None
        self._busy = False
        self._gaps: collections.deque[float] = collections.deque(maxlen=500)

    def delivered(self, at: float, waiting: int) -> None:
        """One message delivered at ``at``; ``waiting`` more were queued behind it."""
        if self._busy and self._last is not None and at - self._last < 1.0:
            self._gaps.append(at - self._last)
        self._last = at
        self._busy = waiting > 0

    def per_second(self) -> float:
        total = sum(self._gaps)
        if len(self._gaps) < self.SAMPLES or total <= 0:
            return self.DEFAULT
        return min(max(len(self._gaps) / total, 1.0), 1000.0)


OUTBOX_BATCH = 400
# Messages in flight at once. Synapse persists one event at a time per room, so more parallel rooms is what
# raises throughput; bench/bot.py found 16 background lanes enough to keep the embedded Synapse busy.
INTERACTIVE_LANES = 8
BACKGROUND_LANES = 16


def is_interactive(effect: Effect) -> bool:
    """What a person is waiting for right now; everything else (reminders, notices to many) is background."""
    if isinstance(effect, DirectMessage):
        return effect.answer
    return isinstance(effect, Reply | Announce | Upload | DirectUpload)


def _lane(effect: Effect) -> str:
    """Messages to one room (or one person) keep their order; different rooms go in parallel."""
    user = getattr(effect, "user_id", None)
    if isinstance(effect, DirectMessage | DirectUpload) and user:
        return f"dm:{user}"
    return f"room:{getattr(effect, 'room_id', '')}"


def _txn(outbox_id: str) -> str:
    """A Matrix transaction id from an outbox id: stable, so a re-send after a crash is deduplicated."""
    return "cm" + hashlib.sha256(outbox_id.encode()).hexdigest()[:32]


def _strip_reply_fallback(body: str) -> str:
    """Drop the quoted "> <@user> ..." block clients put before a reply, so a command in a reply parses."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    return "\n".join(lines[i:]).strip()


async def open_bot(cfg: BotConfig, clock: Clock | None = None) -> EventBot:
    """Build a bot with the store its config names; call ``start`` (or ``run_forever``) next."""
    return EventBot(cfg, open_store(cfg.store), clock)
