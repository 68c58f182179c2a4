"""Applying a plan: one handler per action type, bounded concurrency, a report, an audit log.

Rules:
1. Every handler is idempotent ("already there" is success), so a run killed anywhere converges next time.
2. A failed action is recorded and the run goes on; an authentication error stops it (nothing else can work),
   and so does a server still unreachable or unavailable after a request's whole retry budget: every action
   left would otherwise spend that budget again, one by one in a room's join lane (minutes per room).
3. Phases run in plan order (users, spaces by depth, rooms, links, updates, joins, closes, kicks, locks);
   inside a phase actions run concurrently, but joins into one room run one at a time (Synapse serialises
   them anyway) while different rooms proceed in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, assert_never

from bridge.matrix.client import ExternalId, HomeserverClient
from bridge.matrix.contract import EXTERNAL_ID_PROVIDER, MARKER_TYPE, PROFILE_KEYS
from bridge.matrix.errors import (
    HomeserverError,
    MAuthError,
    MForbidden,
    MNotFound,
    MRoomInUse,
    ServerUnavailable,
)
from provisioner.core.actions import (
    MEMBERS_ONLY,
    Action,
    CreateRoom,
    CreateUser,
    DeactivateUser,
    ExemptRateLimit,
    Join,
    Kick,
    LinkChild,
    LockUser,
    Plan,
    SaveRegistry,
    UnlinkChild,
    UnlockUser,
    UpdateRoom,
    UpdateUser,
    action_to_dict,
    describe,
)
from provisioner.core.reconcile import Observed, RegistryEntry
from provisioner.observe import registry_content, registry_shard, shard_type

log = logging.getLogger(__name__)


class StopRun(Exception):
    """Nothing further can succeed (the token was refused, or the server is gone)."""


@dataclass
class Report:
    done: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    seconds: float = 0.0
    # Users whose own action (create, unlock, …) did not go through: the search snapshot leaves them out.
    failed_users: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped and not self.skipped


class Progress:
    """A progress bar on a terminal (counts, rate, ETA), a log line every 10 s otherwise."""

    def __init__(self, total: int, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.began = time.monotonic()
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.enabled = enabled
        self._last = 0.0

    def step(self, ok: bool) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        now = time.monotonic()
        if not self.enabled or (now - self._last < (0.2 if self.tty else 10.0) and self.done < self.total):
            return
        self._last = now
        elapsed = now - self.began
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if self.tty:
            width = 30
            filled = int(width * pct / 100)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r[{bar}] {self.done}/{self.total} {pct:5.1f}% {rate:6.1f}/s ETA {eta:5.0f}s"
                f" failed {self.failed}"
            )
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            log.warning(
                "progress %d/%d (%.1f%%), %.1f actions/s, ETA %.0fs, %d failed",
                self.done, self.total, pct, rate, eta, self.failed,
            )  # fmt: skip


class AuditLog:
    """Append-only JSONL: one line per applied action, its result and its cause."""

    def __init__(self, path: str | None, run_id: str) -> None:
        self.run_id = run_id
        self._fh: IO[str] | None = None
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, action: Action, result: str, error: str | None = None) -> None:
        if self._fh is None:
            return
        line = {"ts": time.time(), "run": self.run_id, "result": result, "action": action_to_dict(action)}
        if error:
            line["error"] = error
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


# What a reader of an announcement channel may still send: answers to the bot's polls, reactions (one way
# to answer), and taking either back.
READER_EVENTS = ("m.reaction", "m.poll.response", "org.matrix.msc3381.poll.response", "m.room.redaction")


def power_levels_content(
    users: Iterable[tuple[str, int]], *, space: bool, post_level: int | None = None
) -> dict[str, Any]:
    """Only the provisioner (100) may change what the sync manages; heads (50) moderate. With
    ``post_level`` (announcement channels) only those at that level post; everyone may still answer."""
    events_default = 100 if space else (post_level or 0)
    readers = dict.fromkeys(READER_EVENTS, 0) if post_level else {}
    return {
        "users": dict(users),
        "users_default": 0,
        "events_default": events_default,
        "state_default": 50,
        "invite": 50,
        "kick": 50,
        "ban": 50,
        "redact": 50,
        "events": {
            "m.room.name": 100, "m.room.topic": 100, "m.room.avatar": 50, "m.room.canonical_alias": 100,
            "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
            "m.room.join_rules": 100, "m.room.tombstone": 100, "m.room.server_acl": 100,
            "m.space.child": 100, "m.space.parent": 100, MARKER_TYPE: 100, **readers,
        },
    }  # fmt: skip


def create_room_body(a: CreateRoom, *, server: str, parent_room_id: str | None) -> dict[str, Any]:
    """The ``createRoom`` request of a managed room or space, its marker and closed defaults included.

    ``parent_room_id`` is the parent space when it already exists: the room then points at it from the
    start. The bench's raw floor creates its rooms with this too, so both make the same rooms.
    """
    space = a.room_kind == "space"
    initial: list[dict[str, Any]] = [
        {"type": MARKER_TYPE, "state_key": "",
         "content": {"kind": a.purpose if a.purpose != "unit" else a.room_kind, "unit": a.unit_key,
                     "shard": a.shard, "version": 1, "raised": dict(a.raised)}},
        # Public only until the initial joins are done (one event per join); closed right after.
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}},
        {"type": "m.room.history_visibility", "state_key": "",
         "content": {"history_visibility": MEMBERS_ONLY}},
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
    ]  # fmt: skip
    if a.encrypted:
        initial.append(
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        )
    if parent_room_id is not None:
        initial.append(
            {
                "type": "m.space.parent",
                "state_key": parent_room_id,
                "content": {"via": [server], "canonical": True},
            }
        )
    body: dict[str, Any] = {
        "name": a.name,
        "topic": a.topic,
        "preset": "public_chat",  # not private_chat: that would turn on E2EE by server default in spaces
        "visibility": "private",  # never listed in the room directory
        "room_alias_name": a.alias,
        "power_level_content_override": power_levels_content(
            a.power_users, space=space, post_level=a.post_level
        ),
        "initial_state": initial,
    }
    if space:
        body["creation_content"] = {"type": "m.space"}
    if a.room_version is not None:
        body["room_version"] = a.room_version
    return body


class Executor:
    def __init__(
        self,
        client: HomeserverClient,
        observed: Observed,
        *,
        server_name: str,
        provisioner: str,
        concurrency: int = 8,
        audit: AuditLog | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.server = server_name
        self.provisioner = provisioner
        self.concurrency = concurrency
        self.audit = audit or AuditLog(None, "-")
        self.progress = progress
        self.room_ids: dict[str, str] = {k: r.room_id for k, r in observed.rooms.items()}
        self.registry: dict[str, RegistryEntry] = dict(observed.registry)
        self.parent_written: set[tuple[str, str]] = set()
        self.report = Report()

    # --- handlers -----------------------------------------------------------------------------------------

    def _room(self, key: str) -> str:
        room_id = self.room_ids.get(key)
        if room_id is None:
            raise LookupError(f"room {key} does not exist (its creation failed)")
        return room_id

    async def _create_room(self, a: CreateRoom) -> None:
        parent_id = self.room_ids.get(a.parent_key) if a.parent_key else None
        if parent_id is not None:
            self.parent_written.add((a.key, parent_id))
        body = create_room_body(a, server=self.server, parent_room_id=parent_id)
        room_id = await self.client.create_room(body, existing_alias_ok=True)
        marker = await self._marker(room_id)
        if marker is None:
            fixed = await self._complete_half_created(room_id, a, body)
            if fixed is not None:
                room_id = fixed
                marker = await self._marker(room_id)
        if marker is not None and (marker.get("unit") != a.unit_key or marker.get("shard") != a.shard):
            # Another managed room still holds the alias (it was that unit's before a rename): the alias
            # belongs to this unit now; the other room gets its own in its update.
            log.info("alias #%s moves from %s to the new room for %s", a.alias, room_id, a.key)
            await self.client.delete_alias(f"#{a.alias}:{self.server}")
            room_id = await self.client.create_room(body, existing_alias_ok=True)
            marker = await self._marker(room_id)
        if marker is None or marker.get("unit") != a.unit_key or marker.get("shard") != a.shard:
            # The alias belongs to a room we do not manage (made by hand): never adopt it.
            log.warning("alias #%s is taken by unmanaged room %s; creating under a suffixed alias",
                        a.alias, room_id)  # fmt: skip
            body["room_alias_name"] = f"{a.alias}-{hashlib.sha256(a.key.encode()).hexdigest()[:6]}"
            room_id = await self.client.create_room(body, existing_alias_ok=True)
        self.room_ids[a.key] = room_id

    async def _complete_half_created(
        self, room_id: str, a: CreateRoom, body: Mapping[str, Any]
    ) -> str | None:
        """Deal with a room of ours that a crash left without its state (Synapse writes a new room's events
        one by one, and the alias can exist before the marker); returns the room to use, or None when the
        room is not the provisioner's. A room we are joined to is finished in place; one that has not even
        our join yet is given up: its alias is taken back and a new room is made."""
        state = await self.client.room_state(room_id)
        create = next((e for e in state if e.type == "m.room.create"), None)
        # Synapse reserves the alias before it writes the room's first event: a room with no create event
        # is an empty shell of an interrupted createRoom, of no use to anyone, so its alias is taken back.
        if create is not None and create.sender != self.provisioner:
            return None
        alias = f"#{body['room_alias_name']}:{self.server}"
        joined = any(
            e.type == "m.room.member"
            and e.state_key == self.provisioner
            and e.content.get("membership") == "join"
            for e in state
        )
        if not joined:
            log.warning("room %s for %s was left before its first member; making it again", room_id, a.key)
            await self.client.delete_alias(alias)
            return await self.client.create_room(body, existing_alias_ok=True)
        log.warning("completing room %s for %s, left half-created by an interrupted run", room_id, a.key)
        current = {e.type: e.content for e in state if e.state_key == ""}
        power = dict(current.get("m.room.power_levels") or {})
        power.update(body["power_level_content_override"])
        await self.client.send_state(room_id, "m.room.power_levels", "", power)
        for ev in body["initial_state"]:
            await self.client.send_state(room_id, ev["type"], ev["state_key"], ev["content"])
        await self.client.send_state(room_id, "m.room.name", "", {"name": a.name})
        await self.client.send_state(room_id, "m.room.topic", "", {"topic": a.topic})
        await self.client.set_alias(alias, room_id)
        await self.client.send_state(room_id, "m.room.canonical_alias", "", {"alias": alias})
        return room_id

    async def _move_alias(self, room_id: str, alias: str) -> None:
        """Give ``room_id`` the canonical ``alias`` and release the one it had.

        A renamed unit's old alias would otherwise keep pointing at its room, and a new unit with the old
        name could never get it. An alias held by another managed room is taken over (that room gets its own
        alias in its update); one held by a room we do not manage is never touched.
        """
        old = (await self.client.get_state(room_id, "m.room.canonical_alias", "") or {}).get("alias")
        try:
            await self.client.set_alias(alias, room_id)
        except MRoomInUse:
            holder = await self.client.resolve_alias(alias)
            if await self._marker(holder) is None and not await self._empty_shell(holder):
                raise
            log.info("alias %s moves from %s to %s", alias, holder, room_id)
            await self.client.delete_alias(alias)
            await self.client.set_alias(alias, room_id)
        await self.client.send_state(room_id, "m.room.canonical_alias", "", {"alias": alias})
        if isinstance(old, str) and old != alias:
            with contextlib.suppress(MNotFound):
                if await self.client.resolve_alias(old) == room_id:
                    await self.client.delete_alias(old)

    async def _empty_shell(self, room_id: str) -> bool:
        """A room with no create event: Synapse reserved its alias, then its createRoom was interrupted."""
        try:
            state = await self.client.room_state(room_id)
        except MNotFound:
            return True
        return not any(e.type == "m.room.create" for e in state)

    async def _record_raised(self, room_id: str, raised: Mapping[str, int]) -> None:
        """Write the levels the provisioner gave into the room's marker, keeping what else it says."""
        marker = dict(await self._marker(room_id) or {})
        if marker.get("raised") == dict(raised):
            return
        marker["raised"] = dict(raised)
        await self.client.send_state(room_id, MARKER_TYPE, "", marker)

    async def _marker(self, room_id: str) -> Mapping[str, Any] | None:
        try:
            return await self.client.get_state(room_id, MARKER_TYPE, "")
        except (MNotFound, MForbidden):
            return None

    async def _update_room(self, a: UpdateRoom) -> None:
        room_id = self._room(a.key)
        if a.name is not None:
            await self.client.send_state(room_id, "m.room.name", "", {"name": a.name})
        if a.topic is not None:
            await self.client.send_state(room_id, "m.room.topic", "", {"topic": a.topic})
        if a.alias is not None:
            await self._move_alias(room_id, f"#{a.alias}:{self.server}")
        if a.raised is not None:
            # Recorded before a raise and after a lowering: a run killed in between leaves the record
            # covering every level the provisioner gave, so it never takes a hand-set level for its own.
            await self._record_raised(room_id, {**dict(a.raised), **dict(a.lowered)})
        if a.power_users is not None:
            current = dict(await self.client.get_state(room_id, "m.room.power_levels", "") or {})
            raw_users = current.get("users")
            users: dict[str, Any] = dict(raw_users) if isinstance(raw_users, dict) else {}
            for u, level in a.lowered:
                if users.get(u) == level:  # changed by hand since the plan: left as it is
                    del users[u]
            users.update(dict(a.power_users))
            current["users"] = users
            await self.client.send_state(room_id, "m.room.power_levels", "", current)
        if a.raised is not None and a.lowered:
            await self._record_raised(room_id, dict(a.raised))
        if a.join_rule is not None:
            await self.client.send_state(room_id, "m.room.join_rules", "", {"join_rule": a.join_rule})
        if a.history_visibility is not None:
            await self.client.send_state(
                room_id, "m.room.history_visibility", "", {"history_visibility": a.history_visibility}
            )

    async def _link(self, a: LinkChild) -> None:
        parent, child = self._room(a.parent_key), self._room(a.child_key)
        await self.client.send_state(parent, "m.space.child", child, {"via": [self.server]})
        if (a.child_key, parent) in self.parent_written:
            return  # the child was created in this run with m.space.parent in its initial state
        await self.client.send_state(
            child, "m.space.parent", parent, {"via": [self.server], "canonical": True}
        )

    async def _save_registry(self, a: SaveRegistry) -> None:
        touched: set[int] = set()
        for anchor, lp, locked, prof in a.entries:
            self.registry[anchor] = RegistryEntry(lp, locked, prof)
            touched.add(registry_shard(anchor))
        for n in sorted(touched):
            shard = {k: v for k, v in self.registry.items() if registry_shard(k) == n}
            await self.client.put_account_data(self.provisioner, shard_type(n), registry_content(shard))

    async def _kick(self, a: Kick) -> None:
        try:
            await self.client.kick(self._room(a.room_key), a.user_id, a.cause)
        except MForbidden as e:
            # Already gone (left by themselves, or a replay after a lost answer) is the goal reached.
            if "not in the room" not in str(e).lower() and "not a member" not in str(e).lower():
                raise

    async def _profile(self, user_id: str, fields: Iterable[tuple[str, str | None]], *, new: bool) -> None:
        """One MSC4133 key per field; an empty field is deleted (a new account has nothing to delete)."""
        for name, value in fields:
            key = PROFILE_KEYS[name]
            if value:
                await self.client.set_profile_field(user_id, key, value)
            elif not new:
                with contextlib.suppress(MNotFound):
                    await self.client.delete_profile_field(user_id, key)

    async def handle(self, action: Action) -> None:
        c = self.client
        match action:
            case SaveRegistry():
                await self._save_registry(action)
            case CreateUser(user_id=u, anchor=anchor, displayname=d, profile=p):
                await c.put_user(u, displayname=d, external_ids=[ExternalId(EXTERNAL_ID_PROVIDER, anchor)])
                await self._profile(u, p, new=True)
            case UpdateUser(user_id=u, displayname=d, profile=p, anchor=anchor):
                if anchor is not None:
                    ext = [ExternalId(EXTERNAL_ID_PROVIDER, anchor)]
                    await c.put_user(u, displayname=d, external_ids=ext)
                elif d is not None:
                    await c.put_user(u, displayname=d)
                await self._profile(u, p, new=False)
            case LockUser(user_id=u):
                await c.put_user(u, locked=True)
            case UnlockUser(user_id=u):
                await c.put_user(u, locked=False)
            case DeactivateUser(user_id=u):
                await c.deactivate_user(u)
            case CreateRoom():
                await self._create_room(action)
            case UpdateRoom():
                await self._update_room(action)
            case LinkChild():
                await self._link(action)
            case UnlinkChild(parent_key=p, child_room_id=child):
                await c.send_state(self._room(p), "m.space.child", child, {})
                # The child's own pointer up, too: clients show the first canonical parent they find.
                with contextlib.suppress(MForbidden, MNotFound):
                    await c.send_state(child, "m.space.parent", self._room(p), {})
            case Join(room_key=r, user_id=u):
                await c.admin_join(self._room(r), u)
            case Kick():
                await self._kick(action)
            case ExemptRateLimit(user_id=u):
                await c.override_ratelimit(u)
            case _:
                assert_never(action)

    # --- running ------------------------------------------------------------------------------------------

    async def _one(self, action: Action) -> None:
        if self.report.stopped:
            return
        try:
            await self.handle(action)
        except MAuthError as e:
            self.report.stopped = f"the homeserver refused the provisioner's token: {e}"
            self.audit.write(action, "stopped", str(e))
            raise StopRun(self.report.stopped) from None
        except ServerUnavailable as e:
            self._record_failure(action, e)
            # Down through the whole backoff (not one request that was not replayed): stop, rather than
            # spend that backoff again on every action left.
            if e.attempts > self.client.retry.max_retries:
                self.report.stopped = f"the homeserver is unavailable: {e}"
                raise StopRun(self.report.stopped) from None
            return
        except LookupError as e:
            self._user_failed(action)
            self.report.skipped.append((action.kind, str(e)))
            self.audit.write(action, "skipped", str(e))
            self._step(False)
            return
        except (HomeserverError, ValueError) as e:
            self._record_failure(action, e)
            return
        self.report.done[action.kind] += 1
        self.audit.write(action, "ok")
        self._step(True)

    def _record_failure(self, action: Action, e: Exception) -> None:
        self._user_failed(action)
        self.report.failed.append((action.kind, f"{describe(action)}: {e}"))
        self.audit.write(action, "failed", str(e))
        self._step(False)

    def _user_failed(self, action: Action) -> None:
        if isinstance(action, CreateUser | UnlockUser):
            self.report.failed_users.add(action.user_id)

    def _step(self, ok: bool) -> None:
        if self.progress is not None:
            self.progress.step(ok)

    async def _bounded(self, actions: list[Action]) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def run(a: Action) -> None:
            async with sem:
                await self._one(a)

        await asyncio.gather(*(run(a) for a in actions))

    async def _per_room(self, actions: list[Action], room_of: Callable[[Action], str]) -> None:
        lanes: dict[str, list[Action]] = defaultdict(list)
        for a in actions:
            lanes[room_of(a)].append(a)
        sem = asyncio.Semaphore(self.concurrency)

        async def lane(items: list[Action]) -> None:
            async with sem:
                for a in items:
                    await self._one(a)

        # Big rooms first, so the longest serial lane starts early and does not decide the wall time alone.
        ordered = sorted(lanes.values(), key=len, reverse=True)
        await asyncio.gather(*(lane(items) for items in ordered))

    async def run(self, plan: Plan) -> Report:
        began = time.monotonic()
        phases = _phases(plan.actions)
        try:
            for name, actions in phases:
                if not actions:
                    continue
                log.info("phase %s: %d actions", name, len(actions))
                if name in ("joins", "kicks"):
                    await self._per_room(actions, _room_key_of)
                elif name in ("spaces",):
                    for depth_group in _by_depth(actions):
                        await self._bounded(depth_group)
                elif name == "registry":
                    for a in actions:
                        await self._one(a)
                else:
                    await self._bounded(actions)
        except StopRun:
            pass
        self.report.seconds = time.monotonic() - began
        return self.report


def _room_key_of(a: Action) -> str:
    if isinstance(a, Join | Kick):
        return a.room_key
    if isinstance(a, UpdateRoom):
        return a.key
    return ""


def _by_depth(actions: list[Action]) -> list[list[Action]]:
    """Spaces grouped so that a parent is created before its children (which then link to it)."""
    parent_of = {a.key: a.parent_key for a in actions if isinstance(a, CreateRoom)}

    def depth(key: str) -> int:
        n, k = 0, parent_of.get(key)
        while k is not None and k in parent_of:
            n, k = n + 1, parent_of.get(k)
        return n

    groups: dict[int, list[Action]] = defaultdict(list)
    for a in actions:
        assert isinstance(a, CreateRoom)
        groups[depth(a.key)].append(a)
    return [groups[d] for d in sorted(groups)]


def _phases(actions: Iterable[Action]) -> list[tuple[str, list[Action]]]:
    names = ["registry", "users", "spaces", "rooms", "links", "updates", "joins", "kicks", "locks"]
    out: dict[str, list[Action]] = {n: [] for n in names}
    for a in actions:
        match a:
            case SaveRegistry():
                out["registry"].append(a)
            case CreateUser() | UpdateUser() | UnlockUser() | ExemptRateLimit():
                out["users"].append(a)
            case CreateRoom(room_kind="space"):
                out["spaces"].append(a)
            case CreateRoom():
                out["rooms"].append(a)
            case LinkChild() | UnlinkChild():
                out["links"].append(a)
            case UpdateRoom(join_rule=j) if j is not None and a.name is None and a.power_users is None:
                # Closed in the room's join lane, right after its own last join (the plan lists closes
                # after joins): no room waits open for the whole join phase.
                out["joins"].append(a)
            case UpdateRoom():
                out["updates"].append(a)
            case Join():
                out["joins"].append(a)
            case Kick():
                out["kicks"].append(a)
            case LockUser() | DeactivateUser():
                out["locks"].append(a)
            case _:
                assert_never(a)
    return [(n, out[n]) for n in names]
