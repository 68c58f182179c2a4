"""One effect the service decided, executed through nio: notices, polls, direct chats and uploads.

A room must be known to nio (seen in a sync) before an encrypted message can go to it, so every send first
waits for its room; the sync loop calls :meth:`Effects.rooms_synced` after each batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from typing import Any, assert_never
from urllib.parse import quote

from nio import (
    AsyncClient,
    DirectRoomsResponse,
    ErrorResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomPreset,
    RoomSendResponse,
    UploadResponse,
)

from bridge.bot.client import load_members
from bridge.bot.failures import Defer, NotInRoom, SendFailed
from bridge.bot.messages import POLL_END, POLL_START, notice, poll_content, poll_end_content
from bridge.bot.sender import txn_id
from bridge.events.model import (
    Announce,
    Attachment,
    DirectMessage,
    DirectUpload,
    Effect,
    EndPoll,
    EventID,
    Invitation,
    MatrixEventID,
    Reply,
    RoomID,
    RoomNotice,
    Text,
    UpdateTally,
    Upload,
    UserID,
)
from bridge.events.outbox import encode
from bridge.events.service import EventService
from bridge.events.store import SetDmRoom, SetRoomSince, Store

log = logging.getLogger(__name__)

# How long a send waits for its room to show up in a sync before concluding the bot is not in it.
ROOM_WAIT = 60.0
# The least time between two edits of one announcement's count: a room full of people clicking at once
# sees the number move every few seconds, not one edit per click.
TALLY_EVERY = 5.0
# State the bot puts in every direct chat it creates, naming the person: the record of that chat on the
# server, found again after a crash that fell between creating the room and writing it down.
DM_MARKER = "org.civmatrix.bot_dm"
# The one-tap answers under an invitation, in the order of the answers (going, maybe, not going).
INVITATION_REACTIONS = ("✅", "❔", "❌")


def failed(what: str, resp: object) -> SendFailed:
    """A nio error answer as :class:`SendFailed`, with the HTTP status it came with."""
    transport = getattr(resp, "transport_response", None)
    status = getattr(transport, "status", None)
    errcode = resp.status_code if isinstance(resp, ErrorResponse) else None
    message = resp.message if isinstance(resp, ErrorResponse) else str(resp)
    retry = resp.retry_after_ms if isinstance(resp, ErrorResponse) else None
    return SendFailed(what, int(status) if status is not None else None, errcode, message, retry)


class Effects:
    """Executes effects through the bot's nio client; :meth:`execute` is what the sender calls."""

    def __init__(self, client: AsyncClient, store: Store, service: EventService) -> None:
        self.client = client
        self.store = store
        self.service = service
        self._keys_lock = asyncio.Lock()
        self._room_waiters: dict[str, asyncio.Event] = {}
        self._tally_sent: dict[tuple[EventID, RoomID], tuple[float, str]] = {}
        self._direct_lock = asyncio.Lock()
        self._uncertain: set[UserID] = set()  # a create failed and may have been done nonetheless
        self._sync_waiters: list[asyncio.Event] = []
        self.rooms_known = asyncio.Event()  # set after the first sync: client.rooms is what the bot is in

    def rooms_synced(self) -> None:
        """Release the sends waiting for a room that the last sync made known."""
        self.rooms_known.set()
        waiters, self._sync_waiters = self._sync_waiters, []
        for w in waiters:
            w.set()
        for room_id in list(self._room_waiters):
            if room_id in self.client.rooms:
                self._room_waiters.pop(room_id).set()

    async def execute(self, effect: Effect, txn: str) -> None:
        """Send ``effect``; ``txn`` is the stable transaction id that deduplicates a re-send."""
        match effect:
            case Reply(room, in_reply_to, text):
                content = notice(text)
                if in_reply_to:
                    content["m.relates_to"] = {"m.in_reply_to": {"event_id": in_reply_to}}
                await self.send(room, "m.room.message", content, txn)
            case RoomNotice(room, text):
                await self.send(room, "m.room.message", notice(text), txn)
            case DirectMessage(user, text):
                await self.send(await self._dm_room(user), "m.room.message", notice(text), txn)
            case Announce():
                # The full text as an ordinary notice, for clients that do not show polls (they can react to
                # it or use the commands), then the poll for those that do.
                # A retry after a failure in between re-sends the text with the same transaction id: the
                # homeserver answers with the event it already has, so it is posted once.
                text_id = await self.send(effect.room_id, "m.room.message", notice(effect.text), txn + ".t")
                await self.service.announcement_posted(
                    effect.event_id, effect.room_id, MatrixEventID(text_id)
                )
                poll_id = await self.send(effect.room_id, POLL_START, poll_content(effect), txn)
                await self.service.poll_posted(effect.event_id, effect.room_id, MatrixEventID(poll_id))
            case Upload(room, files):
                for i, f in enumerate(files):
                    await self._upload(room, f, f"{txn}.{i}")
            case DirectUpload(user, text, files):
                dm = await self._dm_room(user)
                await self.send(dm, "m.room.message", notice(text), txn)
                for i, f in enumerate(files):
                    await self._upload(dm, f, f"{txn}.{i}")
            case EndPoll(eid, room, text, known):
                poll = known or dict(await self.store.audience(eid)).get(room)
                if poll is not None:
                    await self.send(room, POLL_END, poll_end_content(poll, text), txn)
            case UpdateTally():
                await self._edit_tally(effect, txn)
            case Invitation(eid, user, text):
                await self._invite(eid, user, text, txn)
            case _:
                assert_never(effect)

    async def _invite(self, eid: EventID, user: UserID, text: Text, txn: str) -> None:
        """The invitation in the person's direct chat, recorded as an anchor of the event, then the bot's own
        answer reactions on it: in Element a tap on a reaction adds the person's, which the bot counts.
        Each step has its own transaction id, so a retry after a failure in between repeats none."""
        dm = await self._dm_room(user)
        message = await self.send(dm, "m.room.message", notice(text), txn + ".t")
        await self.service.announcement_posted(eid, RoomID(dm), MatrixEventID(message))
        for i, key in enumerate(INVITATION_REACTIONS):
            relates = {"rel_type": "m.annotation", "event_id": message, "key": key}
            await self.send(dm, "m.reaction", {"m.relates_to": relates}, f"{txn}.r{i}")

    async def _edit_tally(self, effect: UpdateTally, txn: str) -> None:
        """Replace the announcement's text with the count now (``m.replace``), at most every
        :data:`TALLY_EVERY` seconds per room. Every answer queues one of these; all but the newest of a room
        are skipped at once (the newest renders the state when it goes out), so a room where people click
        fast costs one edit per few seconds, and no backlog of edits holds up other messages."""
        eid, room = effect.event_id, effect.room_id
        newest = await self.store.newest_outbox_entry(encode(effect))
        if newest is not None and txn_id(newest) != txn:
            return  # a later answer queued another edit of this announcement: that one shows both
        anchor = await self.store.anchor(eid, room)
        if anchor is None:
            return  # not announced yet: the announcement, when it goes out, has no count to correct
        key = (eid, room)
        last_at, last_text = self._tally_sent.get(key, (0.0, ""))
        wait = last_at + TALLY_EVERY - time.monotonic()
        if wait > 0:
            raise Defer(wait)
        text = await self.service.tally_text(eid)
        if text is None or last_text == text.body:
            return
        content = {
            **notice(Text("* " + text.body, text.html)),
            "m.new_content": notice(text),
            "m.relates_to": {"rel_type": "m.replace", "event_id": anchor},
        }
        await self.send(room, "m.room.message", content, txn)
        self._tally_sent[key] = (time.monotonic(), text.body)

    async def send(self, room: str, etype: str, content: dict[str, Any], txn: str | None = None) -> str:
        """The new event's id; raises :class:`SendFailed` (or :class:`NotInRoom`) if it was not accepted."""
        await self._wait_room(room)
        nio_room = self.client.rooms[room]
        if nio_room.encrypted and (not nio_room.members_synced or self.client.should_query_keys):
            async with self._keys_lock:  # lanes send in parallel; one key query serves them all
                if not nio_room.members_synced:
                    await load_members(self.client, room)  # the sync lazy-loads them; the key goes to all
                if self.client.should_query_keys:
                    await self.client.keys_query()
        resp = await self.client.room_send(room, etype, content, tx_id=txn, ignore_unverified_devices=True)
        if isinstance(resp, RoomSendResponse):
            return str(resp.event_id)
        raise failed(f"send {etype} to {room}", resp)

    async def _wait_room(self, room: str, timeout: float = ROOM_WAIT) -> None:
        if room in self.client.rooms:
            return
        waiter = self._room_waiters.setdefault(room, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            # Not a network problem (that would be retried): the bot is not in this room, so never will be.
            raise NotInRoom(f"the bot is not in {room}") from None

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
            raise failed(f"upload {f.filename}", resp)
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
        await self.send(room, "m.room.message", content, txn)

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
        """The one direct chat with ``user``: the store's record, else found again on the server, else new.

        A crash can fall between creating the room and recording it, so before creating one the bot looks
        where the server keeps the record: its ``m.direct`` account data and, for a room created just before
        a crash (``m.direct`` not written yet), the :data:`DM_MARKER` state it creates every direct chat with.
        """
        known = await self.store.dm_room(user)
        if known is not None:
            return known
        if user in self._uncertain:
            # The last create for this person failed without telling whether the room was made: it shows up
            # in the next sync if it was.
            await self._next_sync()
        found = await self._find_dm(user)
        if found is not None:
            await self.store.write([SetDmRoom(user, found)])
            return found
        resp = await self.client.room_create(
            is_direct=True,
            invite=[user],
            preset=RoomPreset.trusted_private_chat,
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                },
                {"type": DM_MARKER, "state_key": "", "content": {"user": user}},
            ],
        )
        if not isinstance(resp, RoomCreateResponse):
            error = failed(f"open a direct chat with {user}", resp)
            if error.transient:
                self._uncertain.add(user)
            raise error
        self._uncertain.discard(user)
        room = RoomID(resp.room_id)
        # Server timestamps are wall-clock milliseconds; the injected clock is for domain time only.
        await self.store.write([SetDmRoom(user, room), SetRoomSince(room, int(time.time() * 1000))])
        await self._mark_direct(user, room)
        return room

    async def _next_sync(self, timeout: float = 30.0) -> None:
        synced = asyncio.Event()
        self._sync_waiters.append(synced)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(synced.wait(), timeout)

    async def _find_dm(self, user: UserID) -> RoomID | None:
        await self.rooms_known.wait()  # the rooms the bot is in come with the first sync
        direct = await self._direct()
        listed = [r for r in direct.get(user, []) if r in self.client.rooms]
        mine = [
            r
            for r, room in self.client.rooms.items()
            if r not in listed and user in {*room.users, *room.invited_users} and room.member_count <= 2
        ]
        for room_id in [*listed, *sorted(mine)]:
            resp = await self.client.room_get_state_event(room_id, DM_MARKER, "")
            marked = isinstance(resp, RoomGetStateEventResponse) and resp.content.get("user") == user
            if marked or room_id in listed:
                log.info("found the direct chat with %s again: %s", user, room_id)
                if room_id not in listed:
                    await self._mark_direct(user, RoomID(room_id))
                return RoomID(room_id)
        return None

    async def _direct(self) -> dict[str, list[str]]:
        resp = await self.client.list_direct_rooms()
        return dict(resp.rooms) if isinstance(resp, DirectRoomsResponse) else {}

    async def _mark_direct(self, user: UserID, room: RoomID) -> None:
        """Add ``room`` to the bot's ``m.direct`` (what clients and a restarted bot read as the record)."""
        async with self._direct_lock:
            direct = await self._direct()
            if room in direct.get(user, []):
                return
            direct[user] = [*direct.get(user, []), room]
            path = f"/_matrix/client/v3/user/{quote(self.client.user_id, safe='')}/account_data/m.direct"
            resp = await self.client.send(
                "PUT",
                path,
                json.dumps(direct),
                headers={"Authorization": f"Bearer {self.client.access_token}"},
            )
            try:
                if resp.status != 200:
                    log.warning("could not record %s in m.direct: HTTP %s", room, resp.status)
            finally:
                resp.release()
