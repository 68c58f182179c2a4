"""One effect the service decided, executed through nio: notices, polls, direct chats and uploads.

A room must be known to nio (seen in a sync) before an encrypted message can go to it, so every send first
waits for its room; the sync loop calls :meth:`Effects.rooms_synced` after each batch.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any, assert_never

from nio import AsyncClient, RoomCreateResponse, RoomPreset, RoomSendResponse, UploadResponse

from bridge.bot.messages import POLL_END, POLL_START, notice, poll_content, poll_end_content
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
    Upload,
    UserID,
)
from bridge.events.service import EventService
from bridge.events.store import SetDmRoom, SetRoomSince, Store

log = logging.getLogger(__name__)

# How long a send waits for its room to show up in a sync before concluding the bot is not in it.
ROOM_WAIT = 60.0


class Effects:
    """Executes effects through the bot's nio client; :meth:`execute` is what the sender calls."""

    def __init__(self, client: AsyncClient, store: Store, service: EventService) -> None:
        self.client = client
        self.store = store
        self.service = service
        self._keys_lock = asyncio.Lock()
        self._room_waiters: dict[str, asyncio.Event] = {}

    def rooms_synced(self) -> None:
        """Release the sends waiting for a room that the last sync made known."""
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
                text_id = await self.send(effect.room_id, "m.room.message", notice(effect.text), txn + ".t")
                if text_id is not None:
                    await self.service.announcement_posted(
                        effect.event_id, effect.room_id, MatrixEventID(text_id)
                    )
                poll_id = await self.send(effect.room_id, POLL_START, poll_content(effect), txn)
                if poll_id is not None:
                    await self.service.poll_posted(effect.event_id, effect.room_id, MatrixEventID(poll_id))
            case Upload(room, files):
                for i, f in enumerate(files):
                    await self._upload(room, f, f"{txn}.{i}")
            case DirectUpload(user, text, files):
                dm = await self._dm_room(user)
                await self.send(dm, "m.room.message", notice(text), txn)
                for i, f in enumerate(files):
                    await self._upload(dm, f, f"{txn}.{i}")
            case EndPoll(eid, room, text):
                poll = dict(await self.store.audience(eid)).get(room)
                if poll is not None:
                    await self.send(room, POLL_END, poll_end_content(poll, text), txn)
            case _:
                assert_never(effect)

    async def send(
        self, room: str, etype: str, content: dict[str, Any], txn: str | None = None
    ) -> str | None:
        """The new event's id, or None if the homeserver refused it (logged)."""
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

    async def _wait_room(self, room: str, timeout: float = ROOM_WAIT) -> None:
        if room in self.client.rooms:
            return
        waiter = self._room_waiters.setdefault(room, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            # Not a network problem (that would be retried): the bot is not in this room, so never will be.
            raise LookupError(f"the bot is not in {room}") from None

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
        # Server timestamps are wall-clock milliseconds; the injected clock is for domain time only.
        await self.store.write([SetDmRoom(user, room), SetRoomSince(room, int(time.time() * 1000))])
        return room
