"""Power levels, profiles and the unit layout, read from the homeserver through the bot's own client.

The provisioner marks every room and space it manages with a state event (:data:`MARKER_TYPE`) naming the
unit; the bot finds a unit's rooms through those markers and the space tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from nio import AsyncClient, ProfileGetResponse, RoomGetStateEventResponse, RoomGetStateResponse

from bridge.events.model import RoomID, UserID
from bridge.events.service import Person
from bridge.matrix.contract import MARKER_TYPE

CREATOR_LEVEL = 2**53  # "infinitely high" for room creators in room version 12
# A person's name, title and department change rarely; one profile read serves their commands this long.
PERSON_TTL = 600.0


@dataclass(slots=True)
class Marker:
    kind: str
    unit: str


class MatrixDirectory:
    """Power levels, profiles and the unit layout, read from the homeserver through the bot's own client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._markers: dict[str, Marker | None] = {}
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

    async def marker(self, room: str) -> Marker | None:
        if room in self._markers:
            return self._markers[room]
        resp = await self.client.room_get_state_event(room, MARKER_TYPE, "")
        marker: Marker | None = None
        if isinstance(resp, RoomGetStateEventResponse):
            c = cast(dict[str, Any], resp.content)
            if isinstance(c.get("unit"), str) and c.get("kind") in ("room", "space"):
                marker = Marker(str(c["kind"]), str(c["unit"]))
        self._markers[room] = marker
        return marker

    def forget(self, room: str) -> None:
        """Drop what is cached about ``room`` (its marker changed, or the bot just arrived)."""
        self._markers.pop(room, None)

    async def person(self, user: UserID, room: RoomID) -> Person:
        hit = self._people.get(user)
        if hit is not None and time.monotonic() - hit[0] < PERSON_TTL:
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
