"""Power levels, profiles and the unit layout, read from the homeserver through the bot's own client.

The provisioner marks every room and space it manages with a state event (:data:`MARKER_TYPE`) naming the
unit; the bot finds a unit's rooms through those markers and the space tree.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, cast

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    ProfileGetResponse,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
)

from bridge.events.context import Person
from bridge.events.model import RoomID, UserID
from bridge.events.units import SpaceSeen, Unit, build_units
from bridge.matrix.contract import MARKER_TYPE, PROFILE_FIELD, PROFILE_KEYS

CREATOR_LEVEL = 2**53  # "infinitely high" for room creators in room version 12
# A person's name, title and department change rarely; one profile read serves their commands this long.
PERSON_TTL = 600.0
# The space tree changes when the sync reorganises units; a marker change seen in a sync drops it at once.
TREE_TTL = 300.0
SHARD_SUFFIX = re.compile(r"\s*\(\d+/\d+\)$")  # "Отдел (2/3)": the second of three rooms of one unit
# "announcements": a unit's channel that its whole subtree reads; announcing to the unit goes there alone.
MARKER_KINDS = ("room", "space", "announcements")


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
        self._tree_cache: _Tree | None = None
        self._tree_stale = False
        self._tree_refresh: asyncio.Task[_Tree] | None = None

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
            if isinstance(c.get("unit"), str) and c.get("kind") in MARKER_KINDS:
                marker = Marker(str(c["kind"]), str(c["unit"]))
        self._markers[room] = marker
        return marker

    def forget(self, room: str) -> None:
        """Drop what is cached about ``room`` (its marker changed, or the bot just arrived)."""
        self._markers.pop(room, None)
        self._tree_stale = True

    async def person(self, user: UserID, room: RoomID) -> Person:
        """Name, title, department and phone as the directory publishes them in the profile.

        The separate keys (:data:`PROFILE_KEYS`) first, then the older nested field (:data:`PROFILE_FIELD`).
        The department is shown as the unit's path; a unit key found instead (or nothing, then the unit of
        the room the person answered in) is resolved to that path through the space tree.
        """
        hit = self._people.get(user)
        if hit is not None and time.monotonic() - hit[0] < PERSON_TTL:
            return hit[1]
        name = ""
        fields: dict[str, str] = {}
        resp = await self.client.get_profile(user)
        if isinstance(resp, ProfileGetResponse):
            name = resp.displayname or ""
            info = cast(dict[str, Any], resp.other_info)
            nested = info.get(PROFILE_FIELD)
            for key, profile_key in PROFILE_KEYS.items():
                value = info.get(profile_key)
                if not (isinstance(value, str) and value) and isinstance(nested, dict):
                    value = nested.get(key)
                fields[key] = value if isinstance(value, str) else ""
        dept = fields.get("department", "")
        tree = await self._tree()
        if dept in tree.units:
            dept = tree.units[dept].label
        if not dept:
            m = await self.marker(room)
            if m is not None:
                unit = tree.units.get(m.unit)
                dept = unit.label if unit is not None else ""
        person = Person(name, dept, fields.get("title", ""), fields.get("phone", ""))
        self._people[user] = (time.monotonic(), person)
        return person

    async def _state(self, room: str) -> list[dict[str, Any]]:
        resp = await self.client.room_get_state(room)
        if isinstance(resp, RoomGetStateResponse):
            return cast(list[dict[str, Any]], resp.events)
        return []

    async def units(self) -> list[Unit]:
        return sorted((await self._tree(fresh=True)).units.values(), key=lambda u: (u.path, u.key))

    async def room_unit(self, room: RoomID) -> str | None:
        m = await self.marker(room)
        return m.unit if m is not None and m.kind == "room" else None

    async def unit_rooms(self, unit: str, *, subunits: bool = True) -> list[RoomID]:
        """Joined rooms whose marker names ``unit`` (a key) or, with ``subunits``, a unit below it in the
        space tree; only rooms the bot has joined can be announced in."""
        tree = await self._tree(fresh=True)
        below: set[str] = set()
        todo = list(tree.spaces_of.get(unit, ())) if subunits else []
        while todo:
            space = todo.pop()
            if space in below:
                continue
            below.add(space)
            todo += tree.children.get(space, ())
        out: list[RoomID] = []
        channel: list[RoomID] = []
        for room in sorted(self.client.rooms):
            m = await self.marker(room)
            if m is not None and m.kind == "room" and (m.unit == unit or room in below):
                out.append(RoomID(room))
            elif m is not None and m.kind == "announcements" and m.unit == unit:
                channel.append(RoomID(room))
        # The unit's channel holds everyone its rooms and its sub-units' rooms hold: one post reaches them.
        return channel if channel and subunits else out

    async def members(self, room: RoomID) -> list[tuple[UserID, str]]:
        """Read from the server each time: the members of a unit's room are who a unit invitation reaches
        now, not when the bot last synced the room (the sync lazy-loads members)."""
        resp = await self.client.joined_members(room)
        if not isinstance(resp, JoinedMembersResponse):
            return []
        return [
            (UserID(m.user_id), m.display_name or "")
            for m in resp.members
            if m.user_id != self.client.user_id
        ]

    async def warm(self) -> None:
        """Read the space tree now (after the first sync), so no command waits for it."""
        await self._tree()

    async def _tree(self, fresh: bool = False) -> _Tree:
        """The units the bot can see: spaces found by walking ``m.space.parent`` up from its rooms.

        Read once, then again in the background after :data:`TREE_TTL` or when a marker changed or a room
        was joined (:meth:`forget`), serving the last one meanwhile: the walk costs one state read per room
        and space, which no answer should wait for. ``fresh``: wait for a pending re-read (announcing to a
        unit must see a room joined a moment ago).
        """
        cached = self._tree_cache
        stale = cached is None or self._tree_stale or time.monotonic() - cached.at >= TREE_TTL
        if stale and (self._tree_refresh is None or self._tree_refresh.done()):
            self._tree_stale = False
            self._tree_refresh = asyncio.create_task(self._build_tree())
        if cached is None or (fresh and stale):
            assert self._tree_refresh is not None
            return await asyncio.shield(self._tree_refresh)
        return cached

    async def _build_tree(self) -> _Tree:
        joined = list(self.client.rooms)
        states: dict[str, list[dict[str, Any]]] = {}
        frontier = list(joined)
        while frontier:
            room = frontier.pop()
            if room in states:
                continue
            states[room] = await self._state(room)
            frontier += [str(ev["state_key"]) for ev in states[room] if _linked(ev, "m.space.parent")]
        info = {room: _room_info(evs) for room, evs in states.items()}
        seen: list[SpaceSeen] = []
        spaces_of: dict[str, list[str]] = {}
        for room, (marker, name, topic, parents, _) in info.items():
            if marker is None or marker.kind != "space":
                continue
            parent_keys = [info[p][0] for p in parents if p in info and info[p][0] is not None]
            parent = parent_keys[0].unit if parent_keys and parent_keys[0] is not None else None
            seen.append(SpaceSeen(marker.unit, name, topic, parent))
            spaces_of.setdefault(marker.unit, []).append(room)
        units = {u.key: u for u in build_units(seen)}
        # A unit whose rooms the bot is in but whose space it cannot see still has a name: its room's.
        for marker, name, topic, _, _ in info.values():
            if marker is not None and marker.kind == "room" and marker.unit not in units:
                shown = SHARD_SUFFIX.sub("", name) or marker.unit
                units[marker.unit] = Unit(marker.unit, tuple(p for p in topic.split(" / ") if p) or (shown,))
        children = {room: i[4] for room, i in info.items()}
        self._tree_cache = _Tree(time.monotonic(), units, spaces_of, children)
        return self._tree_cache


@dataclass(frozen=True, slots=True)
class _Tree:
    at: float
    units: dict[str, Unit]  # by key
    spaces_of: dict[str, list[str]]  # unit key -> its space room ids
    children: dict[str, list[str]]  # space room id -> child room ids (m.space.child)


def _linked(ev: dict[str, Any], etype: str) -> bool:
    return ev.get("type") == etype and bool(ev.get("content")) and bool(ev.get("state_key"))


def _room_info(
    events: list[dict[str, Any]],
) -> tuple[Marker | None, str, str, list[str], list[str]]:
    """(marker, name, topic, parent spaces, child rooms) from a room's full state."""
    marker: Marker | None = None
    name = topic = ""
    parents: list[str] = []
    children: list[str] = []
    for ev in events:
        etype, content = ev.get("type"), ev.get("content") or {}
        if etype == MARKER_TYPE and ev.get("state_key") == "":
            if isinstance(content.get("unit"), str) and content.get("kind") in MARKER_KINDS:
                marker = Marker(str(content["kind"]), str(content["unit"]))
        elif etype == "m.room.name" and isinstance(content.get("name"), str):
            name = content["name"]
        elif etype == "m.room.topic" and isinstance(content.get("topic"), str):
            topic = content["topic"]
        elif _linked(ev, "m.space.parent"):
            parents.append(str(ev["state_key"]))
        elif _linked(ev, "m.space.child"):
            children.append(str(ev["state_key"]))
    return marker, name, topic, parents, children
