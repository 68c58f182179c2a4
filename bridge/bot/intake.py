"""The sync loop: reads ``/sync``, joins invited rooms, decrypts, turns each new event into a service call.

Rule: the sync token is persisted only after its batch is handled, and every handled event is marked
processed in the same transaction as its state change, so a restart neither replays nor drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    JoinError,
    MegolmEvent,
    MessageDirection,
    ReactionEvent,
    RedactionEvent,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    SyncResponse,
    UnknownEvent,
)
from nio import (
    Event as NioEvent,
)

from bridge.bot.client import load_members
from bridge.bot.config import BOT_RETRY, BotConfig
from bridge.bot.directory import MatrixDirectory
from bridge.bot.messages import POLL_RESPONSE_TYPES, poll_selections, strip_reply_fallback
from bridge.events.model import Effect, MatrixEventID, RoomID, UserID
from bridge.events.service import EventService
from bridge.events.store import LAST_SYNC_KEY, SetRoomSince, SetValue, Store
from bridge.matrix.contract import MARKER_TYPE
from bridge.matrix.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

SYNC_TOKEN_KEY = "sync_token"
# Only what the bot reads. The timeline (commands, poll answers, reactions, redactions, marker changes, and
# the membership changes nio keeps its member lists with) and room state (encryption, power levels), but
# members lazily: only those of the timeline's senders, where the full list of every room and space (the
# spaces hold the whole organisation) came with each start; an encrypted room's list is read before the bot
# first sends to it (bridge.bot.client.load_members). Presence, typing, receipts and account data are never
# read (m.direct is read on demand): presence alone was every member's every status change, in every room.
# To-device messages and device-list changes (E2EE) are not filterable; they still come.
# A larger timeline window makes gaps (limited syncs) rare; a gap is backfilled page by page, up to this many.
SYNC_FILTER: dict[str, Any] = {
    "presence": {"types": []},
    "account_data": {"types": []},
    "room": {
        "timeline": {"limit": 100},
        "state": {"lazy_load_members": True},
        "ephemeral": {"types": []},
        "account_data": {"types": []},
    },
}
BACKFILL_PAGES = 50
RELATIONS_PAGES = 50  # of 100 responses each, per open poll
# An event that could not be decrypted yet is retried for this long (its room key may still be on the way).
UNDECRYPTED_TTL = 300.0


@dataclass(slots=True)
class _Pending:
    room_id: str
    event: Any
    first_seen: float


class Intake:
    """The bot's sync task (:meth:`run`).

    ``on_effects`` is called when handling an event queued something (the sender and the scheduler look
    again); ``on_synced`` after every handled batch (rooms it made known can now be sent to).
    :attr:`synced_once` is set after the first handled batch.
    """

    def __init__(
        self,
        client: AsyncClient,
        cfg: BotConfig,
        store: Store,
        service: EventService,
        directory: MatrixDirectory,
        on_effects: Callable[[], None],
        on_synced: Callable[[], None],
        retry: RetryPolicy = BOT_RETRY,
    ) -> None:
        self.retry = retry
        self.client = client
        self.cfg = cfg
        self.store = store
        self.service = service
        self.directory = directory
        self.on_effects = on_effects
        self.on_synced = on_synced
        self.synced_once = asyncio.Event()
        self._pending: list[_Pending] = []
        self._warm: asyncio.Task[None] | None = None
        self._claimed: set[tuple[str, str]] = set()

    async def run(self) -> None:
        since = await self.store.get_value(SYNC_TOKEN_KEY)
        first_ever = since is None
        # nio keeps no room state on disk: the first sync after a start asks for the full state of every
        # joined room, or a room that stays quiet after a restart is unknown (no members, no sending).
        full_state = True
        backoff = Backoff(self.retry)
        while True:
            failed: str | None = None
            try:
                resp = await self.client.sync(
                    timeout=self.cfg.sync_timeout_ms,
                    sync_filter=SYNC_FILTER,
                    since=since,
                    full_state=full_state,
                )
                if not isinstance(resp, SyncResponse):
                    failed = str(getattr(resp, "message", resp))
            except (aiohttp.ClientError, TimeoutError) as e:
                # nio gave up after its capped retries; this loop outlives the outage, on the same policy.
                failed = repr(e)
            if failed is not None:
                delay = backoff.next_delay()
                log.warning("sync failed: %s; retrying in %.0f s", failed, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await self._handle_sync(resp, first_ever)
            first_ever = False
            full_state = False
            since = resp.next_batch
            synced_at = datetime.now(UTC).isoformat()  # for operators (`bridge status`), not domain time
            await self.store.write([SetValue(SYNC_TOKEN_KEY, since), SetValue(LAST_SYNC_KEY, synced_at)])
            await self._maintain_keys()
            if not self.synced_once.is_set():
                self.synced_once.set()
                self._warm = asyncio.create_task(self._after_first_sync())
            self.on_synced()

    async def _after_first_sync(self) -> None:
        """Read now what the first command would otherwise wait for (the unit tree), then every open poll's
        responses from ``/relations``: a tally after a restart comes from the server, not from what this
        process happened to see (a response older than a gap the backfill covered is still counted)."""
        t0 = time.monotonic()
        try:
            await self.directory.warm()
        except Exception:
            log.exception("reading the space tree after the first sync failed; read on first use")
        log.info("space tree read in %.1f s", time.monotonic() - t0)
        # The sync lazy-loads members: read each encrypted room's now, so the next sync's key maintenance
        # (``_claim_sessions``) opens the Olm sessions the first reply in that room would otherwise wait for.
        t0 = time.monotonic()
        rooms = [r for r, room in self.client.rooms.items() if room.encrypted and not room.members_synced]
        for room_id in rooms:
            try:
                await load_members(self.client, room_id)
            except Exception:
                log.exception("reading the members of %s failed; read before the first send", room_id)
        log.info("members of %d encrypted rooms read in %.1f s", len(rooms), time.monotonic() - t0)
        try:
            await self.reread_polls()
        except Exception:
            log.exception("re-reading the polls' responses failed; the timeline's are counted")

    async def reread_polls(self) -> int:
        """Hand every response of the open polls to the service once (a processed one is skipped)."""
        seen = 0
        for room, poll in await self.store.open_polls(self.service.clock.now()):
            if room not in self.client.rooms:
                continue
            for raw in await self._relations(room, poll):
                ev = NioEvent.parse_event(raw)
                if isinstance(ev, MegolmEvent):
                    ev.room_id = room
                    with contextlib.suppress(Exception):
                        ev = self.client.decrypt_event(ev)
                await self._handle_event(room, ev)
                seen += 1
        if seen:
            self.on_effects()
        log.info("re-read %d poll responses from /relations", seen)
        return seen

    async def _relations(self, room: str, event_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        rel = f"relations/{quote(event_id, safe='')}/m.reference"
        base = f"/_matrix/client/v1/rooms/{quote(room, safe='')}/{rel}"
        auth = {"Authorization": f"Bearer {self.client.access_token}"}
        for _ in range(RELATIONS_PAGES):
            path = base + "?limit=100&dir=f" + (f"&from={quote(token, safe='')}" if token else "")
            resp = await self.client.send("GET", path, headers=auth)
            try:
                if resp.status != 200:
                    log.warning("relations of %s in %s: HTTP %s", event_id, room, resp.status)
                    break
                body = await resp.json()
            finally:
                resp.release()
            out += [e for e in body.get("chunk", []) if isinstance(e, dict)]
            token = body.get("next_batch")
            if not token:
                break
        return out

    async def _maintain_keys(self) -> None:
        await self.client.send_to_device_messages()
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())
        await self._claim_sessions()

    async def _claim_sessions(self) -> None:
        """Open an Olm session with every device in the bot's encrypted rooms as soon as its keys are known.

        Otherwise nio claims one-time keys inside the first send to a room (the reply to the first command
        waits for it, and nio warns "Missing session for device" for each device). Each device is claimed
        once per run: one that has no one-time key left is left to nio's own claim when it is needed.
        """
        olm = self.client.olm
        if olm is None:
            return
        missing: dict[str, list[str]] = {}
        for room in self.client.rooms.values():
            if not room.encrypted:
                continue
            for user in room.users:
                for device in self.client.device_store.active_user_devices(user):
                    key = (user, device.id)
                    if device.id == self.client.device_id or key in self._claimed:
                        continue
                    if not olm.session_store.get(device.curve25519):
                        missing.setdefault(user, []).append(device.id)
                    self._claimed.add(key)
        if missing:
            await self.client.keys_claim(missing)

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
            effects = await self.service.handle_message(room, user, mid, strip_reply_fallback(ev.body))
        elif isinstance(ev, ReactionEvent):
            effects = await self.service.handle_reaction(room, user, mid, ev.reacts_to, ev.key)
        elif isinstance(ev, UnknownEvent) and ev.type in POLL_RESPONSE_TYPES:
            answered = poll_selections(cast(dict[str, Any], ev.source.get("content", {})))
            if answered is not None:
                ts = int(getattr(ev, "server_timestamp", 0)) or None
                effects = await self.service.handle_poll_response(room, user, mid, *answered, ts=ts)
        elif isinstance(ev, RedactionEvent):
            effects = await self.service.handle_redaction(room, user, mid, ev.redacts)
        elif isinstance(ev, UnknownEvent) and ev.type == MARKER_TYPE:
            self.directory.forget(room_id)
            return
        else:
            return
        if effects:
            self.on_effects()

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
