"""Reading the server's current state in bulk: users, managed rooms, and the provisioner's registry.

Never one GET per user: the user list is paged (1,000 a page), rooms are listed once and only rooms the
provisioner created are read, and only those carrying the marker state event count as managed.
The registry (anchor → localpart, lock dates, profile hashes) lives in the provisioner account's own account
data, sharded so that one change rewrites ~1/64 of it; it is what keeps IDs stable without a local database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.matrix.client import HomeserverClient, RoomSummary, StateEvent
from bridge.matrix.contract import MARKER_TYPE, META_TYPE, PROFILE_KEYS, REGISTRY_TYPE
from bridge.matrix.errors import MNotFound
from provisioner.core.actions import RoomKind
from provisioner.core.layout import ANNOUNCE_PREFIX
from provisioner.core.reconcile import Observed, ObservedRoom, ObservedUser, RegistryEntry

log = logging.getLogger(__name__)

REGISTRY_SHARDS = 64
# Bumped when what the cache holds per room changes, so an older cache is read as no cache:
# 2 added the room version, 3 the history visibility (a cache without it would hide world-readable rooms
# from the sync that closes them). Branches that each took 2 for one of them meet at 3. 4 added the levels the
# provisioner raised (the marker's record) and what a room is for.
CACHE_VERSION = 4


def registry_shard(anchor: str) -> int:
    return int(hashlib.sha256(anchor.encode()).hexdigest()[:8], 16) % REGISTRY_SHARDS


def shard_type(n: int) -> str:
    return f"{REGISTRY_TYPE}.{n:02d}"


def _room_from_state(room_id: str, state: tuple[StateEvent, ...]) -> ObservedRoom | None:
    by_type: dict[tuple[str, str], Mapping[str, Any]] = {(e.type, e.state_key): e.content for e in state}
    marker = by_type.get((MARKER_TYPE, ""))
    if not marker or not isinstance(marker.get("unit"), str):
        return None
    kind: RoomKind = "space" if marker.get("kind") == "space" else "room"
    purpose = str(marker["kind"]) if marker.get("kind") in ("group", "announcements") else "unit"
    unit = str(marker["unit"])
    shard = marker.get("shard")
    key = unit if kind == "space" else f"{unit}#{shard if isinstance(shard, int) else 1}"
    if purpose == "announcements":
        key = ANNOUNCE_PREFIX + unit
    pl = by_type.get(("m.room.power_levels", ""), {})
    users_pl = pl.get("users") if isinstance(pl.get("users"), dict) else {}
    assert isinstance(users_pl, dict)
    alias = by_type.get(("m.room.canonical_alias", ""), {}).get("alias")
    members = frozenset(
        e.state_key
        for e in state
        if e.type == "m.room.member" and e.content.get("membership") in ("join", "invite")
    )
    children = frozenset(e.state_key for e in state if e.type == "m.space.child" and e.content.get("via"))
    name = by_type.get(("m.room.name", ""), {}).get("name")
    topic = by_type.get(("m.room.topic", ""), {}).get("topic")
    join_rule = by_type.get(("m.room.join_rules", ""), {}).get("join_rule")
    visibility = by_type.get(("m.room.history_visibility", ""), {}).get("history_visibility")
    version = by_type.get(("m.room.create", ""), {}).get("room_version", "1")
    raised_raw = marker.get("raised")
    raised = (
        {str(u): int(v) for u, v in raised_raw.items() if isinstance(v, int) and not isinstance(v, bool)}
        if isinstance(raised_raw, dict)
        else None
    )
    return ObservedRoom(
        room_id=room_id,
        kind=kind,
        key=key,
        name=name if isinstance(name, str) else None,
        topic=topic if isinstance(topic, str) else None,
        alias=alias[1:].split(":", 1)[0] if isinstance(alias, str) and alias.startswith("#") else None,
        join_rule=join_rule if isinstance(join_rule, str) else None,
        power_users={str(k): int(v) for k, v in users_pl.items() if isinstance(v, int)},
        members=members,
        children=children,
        history_visibility=visibility if isinstance(visibility, str) else None,
        room_version=str(version),
        raised=raised,
        purpose=purpose,
    )


async def read_registry(
    client: HomeserverClient, provisioner: str
) -> tuple[dict[str, RegistryEntry], int | None]:
    async def one(n: int) -> Mapping[str, Any] | None:
        return await client.get_account_data(provisioner, shard_type(n))

    shards = await asyncio.gather(*(one(n) for n in range(REGISTRY_SHARDS)))
    registry: dict[str, RegistryEntry] = {}
    for content in shards:
        entries = (content or {}).get("e")
        if not isinstance(entries, dict):
            continue
        for anchor, value in entries.items():
            if isinstance(value, list) and value and isinstance(value[0], str):
                locked = value[1] if len(value) > 1 and isinstance(value[1], int | float) else None
                prof = value[2] if len(value) > 2 and isinstance(value[2], str) else None
                registry[str(anchor)] = RegistryEntry(value[0], locked, prof)
    meta = await client.get_account_data(provisioner, META_TYPE)
    last = (meta or {}).get("last_good_count")
    return registry, last if isinstance(last, int) else None


def registry_content(entries: Mapping[str, RegistryEntry]) -> dict[str, Any]:
    return {"v": 1, "e": {a: [e.localpart, e.locked_since, e.profile] for a, e in sorted(entries.items())}}


Signature = tuple[int, int, str | None, str | None, str | None, str | None]


def _signature(r: RoomSummary) -> Signature:
    return (r.state_events, r.joined_members, r.name, r.canonical_alias, r.join_rules, r.room_type)


def _room_to_json(room: ObservedRoom) -> dict[str, Any]:
    return {
        "room_id": room.room_id, "kind": room.kind, "key": room.key, "name": room.name, "topic": room.topic,
        "alias": room.alias, "join_rule": room.join_rule, "power_users": dict(room.power_users),
        "members": sorted(room.members), "children": sorted(room.children),
        "history_visibility": room.history_visibility, "room_version": room.room_version,
        "raised": dict(room.raised) if room.raised is not None else None, "purpose": room.purpose,
    }  # fmt: skip


def _room_from_json(d: dict[str, Any]) -> ObservedRoom:
    return ObservedRoom(
        room_id=d["room_id"], kind=d["kind"], key=d["key"], name=d["name"], topic=d["topic"],
        alias=d["alias"], join_rule=d["join_rule"],
        power_users={str(k): int(v) for k, v in d["power_users"].items()},
        members=frozenset(d["members"]), children=frozenset(d["children"]),
        history_visibility=d.get("history_visibility"), room_version=d["room_version"],
        raised=d["raised"], purpose=d["purpose"],
    )  # fmt: skip


@dataclass
class RoomCache:
    """Managed rooms as read on an earlier run, keyed by room ID with the admin room list's summary then.

    A room whose summary (count of current state events, joined members, name, alias, join rule, type) is
    unchanged is not read again. What the summary cannot see — a topic, power-level or marker edit — needs
    power level 100, which only the provisioner holds in its rooms; rooms the provisioner itself changed are
    forgotten after each run, and the whole cache expires after ``max_age`` (a full read then).
    A cache is an optimisation only: a missing or damaged file means a full read.
    """

    path: Path | None
    created_at: float
    entries: dict[str, tuple[Signature, ObservedRoom | None]] = field(default_factory=dict)
    hits: int = 0

    @classmethod
    def load(cls, path: Path, *, now: float, max_age: float) -> RoomCache:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            created = float(data["created_at"])
            if data.get("v") != CACHE_VERSION or now - created > max_age or now < created:
                return cls(path, now)
            entries: dict[str, tuple[Signature, ObservedRoom | None]] = {}
            for room_id, (sig, room) in data["rooms"].items():
                entries[room_id] = (tuple(sig), _room_from_json(room) if room else None)
            return cls(path, created, entries)
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path, now)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "v": CACHE_VERSION,
            "created_at": self.created_at,
            "rooms": {rid: [list(sig), _room_to_json(room) if room else None]
                      for rid, (sig, room) in self.entries.items()},
        }  # fmt: skip
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def forget(self, room_ids: Iterable[str]) -> None:
        for rid in room_ids:
            self.entries.pop(rid, None)


async def _read_room(client: HomeserverClient, room_id: str) -> ObservedRoom | None:
    """A managed room from its current state; None if unmarked, or purged between the list and the read."""
    try:
        return _room_from_state(room_id, await client.room_state(room_id))
    except MNotFound:
        return None


async def refresh_cache(
    client: HomeserverClient,
    provisioner: str,
    cache: RoomCache,
    room_ids: Iterable[str],
    *,
    concurrency: int = 8,
) -> None:
    """Re-read the rooms a run wrote to, so the next run starts warm (it would read them anyway)."""
    wanted = set(room_ids)
    cache.forget(wanted)
    if not wanted:
        return
    summaries = [r async for r in client.list_rooms() if r.room_id in wanted and r.creator == provisioner]
    sem = asyncio.Semaphore(concurrency)

    async def read(summary: RoomSummary) -> None:
        async with sem:
            room = await _read_room(client, summary.room_id)
        cache.entries[summary.room_id] = (_signature(summary), room)

    await asyncio.gather(*(read(s) for s in summaries))


async def observe(
    client: HomeserverClient,
    provisioner: str,
    *,
    concurrency: int = 8,
    cache: RoomCache | None = None,
    service_accounts: Iterable[str] = (),
    read_profiles: bool = False,
) -> Observed:
    """The server as the provisioner sees it; rooms it did not create are never read.

    ``service_accounts`` (the provisioner is always one) are checked for their rate-limit exemption.
    ``read_profiles`` also reads the directory fields of every active managed person (one GET each, so
    only on a full read): what people changed by hand is then put back.
    """
    users: dict[str, ObservedUser] = {}
    async for u in client.list_users():
        users[u.user_id] = ObservedUser(
            u.user_id, u.displayname, u.admin, u.deactivated, u.locked, u.avatar_url
        )
    summaries = [r async for r in client.list_rooms() if r.creator == provisioner]
    sem = asyncio.Semaphore(concurrency)

    async def read(summary: RoomSummary) -> ObservedRoom | None:
        sig = _signature(summary)
        if (
            cache is not None
            and summary.room_id in cache.entries
            and cache.entries[summary.room_id][0] == sig
        ):
            cache.hits += 1
            return cache.entries[summary.room_id][1]
        async with sem:
            room = await _read_room(client, summary.room_id)
        if cache is not None:
            cache.entries[summary.room_id] = (sig, room)
        return room

    if cache is not None:
        cache.forget(set(cache.entries) - {s.room_id for s in summaries})
    rooms: dict[str, ObservedRoom] = {}
    for room in await asyncio.gather(*(read(r) for r in summaries)):
        if room is None:
            continue
        other = rooms.get(room.key)
        if other is not None:
            # Two rooms claim one key only after a crash between createRoom and its alias; keep the one
            # with the alias (deterministic: then the smaller room ID) and leave the other alone.
            keep = min((other, room), key=lambda r: (r.alias is None, r.room_id))
            log.warning("two managed rooms for %s: %s and %s; using %s", room.key, other.room_id,
                        room.room_id, keep.room_id)  # fmt: skip
            room = keep
        rooms[room.key] = room
    registry, last = await read_registry(client, provisioner)
    unlimited = frozenset(
        [u for u in {provisioner, *service_accounts} if u in users and not await client.rate_limited(u)]
    )
    profiles: dict[str, tuple[tuple[str, str | None], ...]] = {}
    if read_profiles:
        server = provisioner.split(":", 1)[1]
        uids = (f"@{e.localpart}:{server}" for e in registry.values())
        active = [
            uid for uid in uids if (seen := users.get(uid)) and not seen.deactivated and not seen.locked
        ]
        profiles = await read_profile_fields(client, active, concurrency=concurrency)
    return Observed(users=users, rooms=rooms, registry=registry, last_good_count=last, unlimited=unlimited,
                    profiles=profiles)  # fmt: skip


async def read_profile_fields(
    client: HomeserverClient, user_ids: Iterable[str], *, concurrency: int = 8
) -> dict[str, tuple[tuple[str, str | None], ...]]:
    """User ID → the sync's fields as found on the profile (absent or non-text reads as ``None``)."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, tuple[tuple[str, str | None], ...]] = {}

    async def one(uid: str) -> None:
        async with sem:
            try:
                profile = await client.get_profile(uid)
            except MNotFound:
                return
        out[uid] = tuple(
            (name, v if isinstance(v := profile.get(key), str) else None)
            for name, key in PROFILE_KEYS.items()
        )

    await asyncio.gather(*(one(u) for u in user_ids))
    return out
