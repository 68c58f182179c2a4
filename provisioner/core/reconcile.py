"""Desired state vs observed server state → an ordered plan of typed actions. Pure: no I/O, time injected.

Rules (each tested):
1. Accounts in ``exclude``, server admins (for locks) and users the directory never managed are not touched;
   rooms without the marker are not even read.
2. Only people the provisioner manages (in its registry or in the directory) are ever kicked from a managed
   room; the provisioner and the bot stay.
3. An untrusted read (incomplete, or below ``min_directory_fraction`` of the last good count) yields no
   lock, kick or deactivation at all: they are counted in ``held_removals`` instead.
4. A user is unlocked only if the provisioner locked them: a lock set by an admin by hand stays.
5. The registry entry of a new person is saved before the account is created, so a run killed in between
   cannot give the same person a second ID on the next run.
6. New rooms are created with a ``public`` join rule (an admin join into a public room is one event; into
   an invite-only one it is an invite and a join) and closed to ``invite`` right after their initial joins;
   any managed room found open is closed. With ``public_spaces`` spaces are the exception: they stay (or
   are made) ``public``.
7. A full read's profiles (``Observed.profiles``) that differ from the directory are written again, even
   when the registry's hash says they were written: people may overwrite fields an admin set (MSC4133).
8. Power levels follow the directory both ways, but only the provisioner's own: a level is lowered (its
   entry removed, back to ``users_default``) only when the room's marker records that the provisioner gave
   exactly that level and the person no longer holds the role (no longer a head, out of the group, out of
   the room). Server admins, the service accounts and levels changed by hand since are never lowered; an
   untrusted read lowers nobody (held like removals). A marker from before the record existed counts the
   directory's people at exactly the moderator level as the provisioner's: until then only the provisioner
   (level 100, the only one allowed to change power levels in its rooms) could have set them.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.matrix.contract import CREATOR_POWER_VERSIONS
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
    RoomKind,
    SaveRegistry,
    UnlinkChild,
    UnlockUser,
    UpdateRoom,
    UpdateUser,
)
from provisioner.core.desired import Desired
from provisioner.core.identity import base_localpart
from provisioner.core.layout import GROUP_PREFIX, RoomPlan, SpacePlan
from provisioner.core.model import DirectorySnapshot, Person

PROFILE_FIELDS = ("title", "department", "phone", "email")


@dataclass(frozen=True, slots=True)
class ObservedUser:
    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    avatar_url: str | None = None  # the person's own, never managed; only the search index shows it


@dataclass(frozen=True, slots=True)
class ObservedRoom:
    room_id: str
    kind: RoomKind
    key: str
    name: str | None
    topic: str | None
    alias: str | None  # localpart of the canonical alias
    join_rule: str | None
    power_users: Mapping[str, int]
    members: frozenset[str]  # joined or invited
    children: frozenset[str]  # room IDs linked with m.space.child
    history_visibility: str | None = None
    room_version: str | None = None  # from m.room.create; None when not read
    # The levels the provisioner gave, as recorded in the marker (``None``: a marker from before the record).
    raised: Mapping[str, int] | None = None
    # What the marker says the room is for: "unit" (a department room or space), "group", "announcements".
    purpose: str = "unit"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    localpart: str
    locked_since: float | None = None
    profile: str | None = None  # hash of the profile fields last written


@dataclass(frozen=True, slots=True)
class Observed:
    users: Mapping[str, ObservedUser]
    rooms: Mapping[str, ObservedRoom]  # by key
    registry: Mapping[str, RegistryEntry]  # by anchor
    last_good_count: int | None = None
    # Service accounts (provisioner, bot) that already have a "no rate limits" override.
    unlimited: frozenset[str] = frozenset()
    # Directory fields as found on people's profiles, read only on a full read (one GET per person): a
    # person who edited a field the sync owns gets it re-asserted even though the registry hash still matches.
    profiles: Mapping[str, tuple[tuple[str, str | None], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    server_name: str
    provisioner: str
    bot: str | None = None
    exclude: frozenset[str] = frozenset()
    encrypted: bool = True
    moderator_level: int = 50
    profile_fields: bool = True
    deactivate_after_seconds: float = 30 * 86400
    min_directory_fraction: float = 0.9
    service_accounts: frozenset[str] = field(default=frozenset())
    # Room versions 12+ (MSC4289) give creators unlimited power and refuse them in power_levels.users.
    # This is for rooms still to be created; an existing room follows its own version.
    creator_in_power_levels: bool = True
    room_version: str | None = None  # for new rooms (layout.room_version); existing rooms keep theirs
    # layout.space_members: tree — everyone is in the spaces above them, so spaces stay public (the user
    # directory counts public rooms linearly, private ones pairwise) and only rooms are closed.
    public_spaces: bool = False


def profile_of(p: Person) -> tuple[tuple[str, str | None], ...]:
    return tuple((k, getattr(p, k)) for k in PROFILE_FIELDS)


# Bumped when the way fields are stored on the server changes (v2: one MSC4133 key per field instead of one
# nested object), so the next sync rewrites everyone once in the new form.
PROFILE_SCHEME = 2


def profile_hash(p: Person) -> str:
    data = [PROFILE_SCHEME, profile_of(p)]
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()[:16]


def previous_identities(
    snapshot: DirectorySnapshot, observed: Observed, server_name: str
) -> tuple[dict[str, str], set[str]]:
    """Anchor → localpart already assigned, and the localparts that belong to somebody else.

    The registry wins; a person with no registry entry whose base localpart exists on the server and is not
    claimed by another anchor adopts it (accounts made by the LDAP login module, or a lost registry).
    """
    previous = {a: e.localpart for a, e in observed.registry.items()}
    claimed = set(previous.values())
    # A leaver's ID stays theirs: their locked account still exists, with their rooms and messages, and a
    # newcomer with the same login (or the same person back under a new anchor) must not inherit it.
    current = {p.anchor for p in snapshot.people}
    leavers = {lp for a, lp in previous.items() if a not in current}
    existing = {uid[1:].split(":", 1)[0] for uid in observed.users}
    # Identity rule 3's order, so the login module (which applies it too) and the sync agree on who adopts.
    order = sorted(snapshot.people, key=lambda p: (p.login != base_localpart(p.login), p.anchor))
    for p in order:
        if p.anchor in previous:
            continue
        base = base_localpart(p.login)
        if base in existing and base not in claimed:
            previous[p.anchor] = base
            claimed.add(base)
    taken = (existing - claimed) | (
        leavers - {previous[p.anchor] for p in snapshot.people if p.anchor in previous}
    )
    return previous, taken


def fingerprint(snapshot: DirectorySnapshot, observed: Observed) -> str:
    """What a plan was made from; a saved plan is stale when this changes."""
    h = hashlib.sha256()
    for p in sorted(snapshot.people, key=lambda p: p.anchor):
        h.update(repr((p.anchor, p.login, p.display_name, p.unit_key, p.disabled, profile_of(p))).encode())
    h.update(repr((snapshot.complete, len(snapshot.units))).encode())
    for g in snapshot.groups:
        h.update(repr((g.key, g.name, g.rules, g.members)).encode())
    for uid in sorted(observed.users):
        u = observed.users[uid]
        h.update(repr((uid, u.displayname, u.locked, u.deactivated, u.admin)).encode())
    for key in sorted(observed.rooms):
        r = observed.rooms[key]
        h.update(
            repr((key, r.room_id, r.name, r.topic, r.alias, r.join_rule, sorted(r.power_users.items()),
                  sorted(r.members), sorted(r.children))).encode()
        )  # fmt: skip
    for a in sorted(observed.registry):
        h.update(repr((a, observed.registry[a])).encode())
    h.update(repr(sorted(observed.unlimited)).encode())
    return h.hexdigest()


def trusted(snapshot: DirectorySnapshot, observed: Observed, policy: SyncPolicy) -> tuple[bool, str | None]:
    if not snapshot.complete:
        return False, f"the directory read was incomplete ({snapshot.stop_reason})"
    last = observed.last_good_count
    if last and len(snapshot.people) < policy.min_directory_fraction * last:
        return False, (
            f"the directory returned {len(snapshot.people)} people, fewer than "
            f"{policy.min_directory_fraction:.0%} of the last good read ({last})"
        )
    return True, None


def reconcile(
    desired: Desired,
    observed: Observed,
    snapshot: DirectorySnapshot,
    policy: SyncPolicy,
    *,
    now: float,
) -> Plan:
    """The ordered plan that makes the server match the directory.

    The steps below each add their actions to one phase list of :class:`_Builder`; the phases, not the
    steps, decide the order the plan is applied in (:meth:`_Builder.actions`).
    """
    is_trusted, why = trusted(snapshot, observed, policy)
    scope = _scope(desired, observed, snapshot, policy, now=now, is_trusted=is_trusted)
    out = _Builder(observed.registry)
    _people(scope, out)
    _leavers(scope, out)
    _rooms(scope, out)
    _removed_rooms(scope, out)
    return Plan(
        actions=out.actions(scope),
        fingerprint=fingerprint(snapshot, observed),
        created_at=now,
        notes=(f"removals held: {why}",) if not is_trusted else (),
        held_removals=out.held,
    )


@dataclass(frozen=True, slots=True)
class _Scope:
    """What every step of :func:`reconcile` reads."""

    desired: Desired
    observed: Observed
    snapshot: DirectorySnapshot
    policy: SyncPolicy
    now: float
    trusted: bool  # removals (locks, kicks, deactivations) may go ahead
    protected: frozenset[str]  # never touched: excluded accounts, the provisioner, the bot
    managed: frozenset[str]  # the only accounts ever kicked: in the directory or the registry
    in_layout: frozenset[str]  # everyone with a seat in some room of the layout


def _scope(
    desired: Desired,
    observed: Observed,
    snapshot: DirectorySnapshot,
    policy: SyncPolicy,
    *,
    now: float,
    is_trusted: bool,
) -> _Scope:
    server = policy.server_name
    protected = {*policy.exclude, policy.provisioner, *policy.service_accounts}
    if policy.bot:
        protected.add(policy.bot)
    known = {f"@{lp}:{server}" for lp in desired.localparts.values()}
    known |= {f"@{e.localpart}:{server}" for e in observed.registry.values()}
    return _Scope(
        desired=desired,
        observed=observed,
        snapshot=snapshot,
        policy=policy,
        now=now,
        trusted=is_trusted,
        protected=frozenset(protected),
        managed=frozenset(known - protected),
        in_layout=frozenset(m for r in desired.layout.rooms for m in r.members),
    )


RegistryRow = tuple[str, str, float | None, str | None]  # anchor, localpart, locked_since, profile hash


@dataclass(slots=True)
class _Builder:
    """The plan being built: one list per phase, and the removals held back by an untrusted read."""

    registry: Mapping[str, RegistryEntry]
    registry_updates: dict[str, RegistryRow] = field(default_factory=dict)
    users_first: list[Action] = field(default_factory=list)
    creates: list[Action] = field(default_factory=list)
    links: list[Action] = field(default_factory=list)
    updates: list[Action] = field(default_factory=list)
    joins: list[Action] = field(default_factory=list)
    closes: list[Action] = field(default_factory=list)
    kicks: list[Action] = field(default_factory=list)
    users_last: list[Action] = field(default_factory=list)
    held: int = 0

    def record(self, anchor: str, localpart: str, locked_since: float | None, profile: str | None) -> None:
        """Registry entry for ``anchor``; saved only if it differs from the one on the server."""
        old = self.registry.get(anchor)
        row = (anchor, localpart, locked_since, profile)
        if old is None or (anchor, old.localpart, old.locked_since, old.profile) != row:
            self.registry_updates[anchor] = row

    def kick(self, scope: _Scope, action: Kick) -> None:
        if scope.trusted:
            self.kicks.append(action)
        else:
            self.held += 1

    def actions(self, scope: _Scope) -> tuple[Action, ...]:
        """Registry first (rule 5), people before their rooms, removals last."""
        policy, observed = scope.policy, scope.observed
        out: list[Action] = []
        if self.registry_updates:
            out.append(SaveRegistry(tuple(self.registry_updates[a] for a in sorted(self.registry_updates))))
        out += [
            ExemptRateLimit(uid, cause)
            for uid, cause in ((policy.provisioner, "the provisioner"), (policy.bot, "the event bot"))
            if uid and uid in observed.users and uid not in observed.unlimited
        ]
        out += self.users_first + self.creates + self.links + self.updates + self.joins + self.closes
        out += self.kicks + self.users_last
        return tuple(out)


# --- people ------------------------------------------------------------------------------------------------


def _people(s: _Scope, out: _Builder) -> None:
    """Everyone read: accounts created, renamed, re-profiled, adopted, locked when disabled, unlocked."""
    for uid, person in sorted(s.desired.people.items()):
        if uid in s.protected:
            continue
        obs = s.observed.users.get(uid)
        if obs is None:
            if not person.disabled:  # never create an account only to lock it
                _new_person(s, out, uid, person)
        elif not obs.deactivated:
            _known_person(s, out, uid, person, obs)


def _new_person(s: _Scope, out: _Builder, uid: str, person: Person) -> None:
    fields = s.policy.profile_fields
    prof = profile_hash(person) if fields else None
    out.record(person.anchor, s.desired.localparts[person.anchor], None, prof)
    # A new account has no fields yet: writing the empty ones would only cost requests.
    profile = profile_of(person) if fields and any(v for _, v in profile_of(person)) else ()
    out.users_first.append(CreateUser(uid, person.anchor, person.display_name, profile))


def _known_person(s: _Scope, out: _Builder, uid: str, person: Person, obs: ObservedUser) -> None:
    fields = s.policy.profile_fields
    anchor = person.anchor
    entry = s.observed.registry.get(anchor)
    prof = profile_hash(person) if fields else None
    locked_since = entry.locked_since if entry else None
    name_change = person.display_name if obs.displayname != person.display_name else None
    seen = s.observed.profiles.get(uid)
    stale = entry is None or entry.profile != prof or (seen is not None and seen != profile_of(person))
    prof_change = profile_of(person) if fields and stale else ()
    # An account found without a registry entry (made at first login, or a lost registry) is adopted:
    # its external id is (re)written so the login module finds it by anchor.
    adopt = anchor if entry is None else None
    if name_change or prof_change or adopt:
        out.users_first.append(UpdateUser(uid, name_change, prof_change, anchor=adopt))
    if person.disabled and not obs.locked and not obs.admin:
        if s.trusted:
            out.users_last.append(LockUser(uid, "disabled in the directory"))
            locked_since = s.now
        else:
            out.held += 1
    elif not person.disabled and obs.locked and locked_since is not None:
        out.users_first.append(UnlockUser(uid))
        locked_since = None
    kept_profile = prof if fields else (entry.profile if entry else None)
    out.record(anchor, s.desired.localparts[anchor], locked_since, kept_profile)


def _leavers(s: _Scope, out: _Builder) -> None:
    """In the registry, gone from the directory: locked, then deactivated after the grace period."""
    present = {p.anchor for p in s.snapshot.people}
    causes = {a.anchor: a.cause for a in s.snapshot.set_aside if a.anchor}
    for anchor, entry in sorted(s.observed.registry.items()):
        if anchor in present:
            continue
        uid = f"@{entry.localpart}:{s.policy.server_name}"
        obs = s.observed.users.get(uid)
        if uid in s.protected or obs is None or obs.deactivated or obs.admin:
            continue
        if not s.trusted:
            if not obs.locked:
                out.held += 1
            continue
        if not obs.locked:
            out.users_last.append(LockUser(uid, causes.get(anchor, "left the directory")))
            out.record(anchor, entry.localpart, s.now, entry.profile)
        elif entry.locked_since is not None and _grace_over(s, entry.locked_since):
            out.users_last.append(DeactivateUser(uid, entry.locked_since))


def _grace_over(s: _Scope, locked_since: float) -> bool:
    return s.now - locked_since >= s.policy.deactivate_after_seconds


# --- rooms and spaces --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """One space or room of the layout as the server should have it."""

    key: str
    kind: RoomKind
    plan: SpacePlan | RoomPlan
    parent_key: str | None
    power: tuple[tuple[str, int], ...]
    members: frozenset[str]

    def granted(self, provisioner: str) -> dict[str, int]:
        """The levels the provisioner gives people here (its own 100 is not a grant)."""
        return {u: lvl for u, lvl in self.power if u != provisioner}


def previous_placements(observed: Observed) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Who sits where now: user ID → their department room's key, and a group room's base key → user ID →
    shard, so that the layout keeps everyone where they are (layout rule 3)."""
    units: dict[str, str] = {}
    groups: dict[str, dict[str, int]] = defaultdict(dict)
    for key, room in observed.rooms.items():
        if room.kind != "room":
            continue
        if room.purpose == "unit":
            units.update(dict.fromkeys(room.members, key))
        elif room.purpose == "group" and key.startswith(GROUP_PREFIX):
            base, _, shard = key.rpartition("#")
            groups[base].update(dict.fromkeys(room.members, int(shard) if shard.isdigit() else 1))
    return units, dict(groups)


def _creator_listed(policy: SyncPolicy, room: ObservedRoom | None) -> bool:
    """Whether the provisioner (the creator) belongs in ``power_levels.users``: by the room's own version."""
    if room is not None and room.room_version is not None:
        return room.room_version not in CREATOR_POWER_VERSIONS
    return policy.creator_in_power_levels


def _target(s: _Scope, kind: RoomKind, plan: SpacePlan | RoomPlan) -> _Target:
    policy = s.policy
    key = plan.unit_key if isinstance(plan, SpacePlan) else plan.key
    users = {policy.provisioner: 100} if _creator_listed(policy, s.observed.rooms.get(key)) else {}
    members = set(plan.members) - set(policy.exclude)
    # Power only for members: a level given to someone outside the room would outlive any membership.
    for m in plan.moderators:
        if m in members:
            users.setdefault(m, policy.moderator_level)
    for m, level in plan.levels:
        if m in members and m != policy.provisioner:
            users[m] = max(users.get(m, 0), level)
    announcements = isinstance(plan, RoomPlan) and plan.purpose == "announcements"
    if announcements and policy.bot:
        users[policy.bot] = policy.moderator_level  # the bot posts the unit's events there
    # The bot sits in every room, and in every space people join (not in spaces only linked into the tree):
    # it finds a unit's rooms by reading the spaces' state, and spaces are members-only (nothing readable
    # without joining), so a space it is not in is a unit it cannot announce to. In tree mode the top space
    # holds everybody; that costs the bot one more member list to sync, the price of announcing by name.
    if policy.bot and (isinstance(plan, RoomPlan) or plan.members):
        members.add(policy.bot)
    power, wanted = tuple(sorted(users.items())), frozenset(members)
    if isinstance(plan, SpacePlan):
        return _Target(plan.unit_key, kind, plan, plan.parent_key, power, wanted)
    return _Target(plan.key, kind, plan, plan.parent, power, wanted)


def _rooms(s: _Scope, out: _Builder) -> None:
    """Every space and room of the layout: created with its members, or brought in line with the plan."""
    linked_from: dict[str, set[str]] = defaultdict(set)  # child room ID → keys of managed spaces linking it
    for space in s.observed.rooms.values():
        for child in space.children:
            linked_from[child].add(space.key)
    targets = [_target(s, "space", p) for p in s.desired.layout.spaces]
    targets += [_target(s, "room", p) for p in s.desired.layout.all_rooms]
    for t in targets:
        obs_room = s.observed.rooms.get(t.key)
        if obs_room is None:
            _new_room(s, out, t)
            continue
        _room_settings(s, out, t, obs_room)
        _room_links(s, out, t, obs_room, linked_from.get(obs_room.room_id, set()))
        _room_members(s, out, t, obs_room)


def _new_room(s: _Scope, out: _Builder, t: _Target) -> None:
    p = t.plan
    out.creates.append(
        CreateRoom(
            key=t.key, room_kind=t.kind, unit_key=p.unit_key, shard=p.shard if isinstance(p, RoomPlan) else 0,
            name=p.name, alias=p.alias, topic=p.topic, parent_key=t.parent_key, power_users=t.power,
            encrypted=s.policy.encrypted and t.kind == "room", room_version=s.policy.room_version,
            raised=tuple(sorted(t.granted(s.policy.provisioner).items())),
            purpose=p.purpose if isinstance(p, RoomPlan) else "unit",
            post_level=s.policy.moderator_level if isinstance(p, RoomPlan) and p.purpose == "announcements"
            else None,
        )
    )  # fmt: skip
    if t.parent_key is not None:
        out.links.append(LinkChild(t.parent_key, t.key, t.kind))
    out.joins.extend(Join(t.key, t.kind, m) for m in sorted(t.members))
    if not (t.kind == "space" and s.policy.public_spaces):
        out.closes.append(UpdateRoom(t.key, join_rule="invite", cause="closed after the initial joins"))


def _recorded(s: _Scope, obs_room: ObservedRoom) -> dict[str, int]:
    """The levels the provisioner gave in this room (rule 8): the marker's record, or for a marker from
    before the record, the directory's people at exactly the moderator level."""
    if obs_room.raised is not None:
        return dict(obs_room.raised)
    level = s.policy.moderator_level
    return {u: lvl for u, lvl in obs_room.power_users.items() if lvl == level and u in s.managed}


@dataclass(frozen=True, slots=True)
class _PowerChange:
    set_to: dict[str, int]  # entries to write
    lowered: dict[str, int]  # entries to remove, with the level the provisioner had given
    record: dict[str, int]  # the record after this run
    held: int  # lowerings held back by an untrusted read


def _power_change(s: _Scope, t: _Target, obs_room: ObservedRoom) -> _PowerChange:
    """Raise who should be raised; lower (rule 8) who the provisioner raised and who no longer should be."""
    current, recorded = obs_room.power_users, _recorded(s, obs_room)
    want = t.granted(s.policy.provisioner)
    set_to: dict[str, int] = {}
    record: dict[str, int] = {}
    for u, lvl in want.items():
        have = current.get(u, 0)
        if have < lvl or (recorded.get(u) == have != lvl):
            set_to[u] = lvl
            record[u] = lvl
        elif recorded.get(u) == have:
            record[u] = have
    lowered: dict[str, int] = {}
    held = 0
    for u, lvl in recorded.items():
        if u in want or current.get(u) != lvl or u in s.protected or _is_admin(s, u):
            continue  # still holds the role, or changed by hand since, or never the provisioner's to lower
        if s.trusted:
            lowered[u] = lvl
        else:
            held += 1
            record[u] = lvl
    return _PowerChange(set_to, lowered, record, held)


def _is_admin(s: _Scope, user_id: str) -> bool:
    seen = s.observed.users.get(user_id)
    return seen is not None and seen.admin


def _room_settings(s: _Scope, out: _Builder, t: _Target, obs_room: ObservedRoom) -> None:
    """Name, topic, alias and power levels (rule 8); open rooms closed; world-readable ones made
    members-only."""
    p = t.plan
    pc = _power_change(s, t, obs_room)
    out.held += pc.held
    record_changed = pc.record != (obs_room.raised or {}) and bool(pc.set_to or pc.lowered)
    kept = {u: lvl for u, lvl in obs_room.power_users.items() if u not in pc.lowered}
    upd = UpdateRoom(
        t.key,
        name=p.name if obs_room.name != p.name else None,
        topic=p.topic if obs_room.topic != p.topic else None,
        alias=p.alias if obs_room.alias != p.alias else None,
        power_users=tuple(sorted({**kept, **pc.set_to}.items())) if pc.set_to or pc.lowered else None,
        lowered=tuple(sorted(pc.lowered.items())),
        raised=tuple(sorted(pc.record.items())) if record_changed else None,
        cause="no longer holds the role" if pc.lowered else "changed in the directory",
    )
    if any(x is not None for x in (upd.name, upd.topic, upd.alias, upd.power_users)):
        out.updates.append(upd)
    if t.kind == "space" and s.policy.public_spaces:
        if obs_room.join_rule != "public":
            out.closes.append(UpdateRoom(t.key, join_rule="public", cause="spaces are open to colleagues"))
    elif obs_room.join_rule not in ("invite", None):
        out.closes.append(UpdateRoom(t.key, join_rule="invite", cause="managed rooms are invite-only"))
    if obs_room.history_visibility == "world_readable":
        out.updates.append(
            UpdateRoom(t.key, history_visibility=MEMBERS_ONLY, cause="nothing readable without a token")
        )


def _room_links(s: _Scope, out: _Builder, t: _Target, obs_room: ObservedRoom, linked_from: set[str]) -> None:
    """Linked under its parent space; a unit moved to another parent (an OU moved) leaves its old one."""
    if t.parent_key is not None:
        parent = s.observed.rooms.get(t.parent_key)
        if parent is None or obs_room.room_id not in parent.children:
            out.links.append(LinkChild(t.parent_key, t.key, t.kind))
    out.links.extend(UnlinkChild(old, obs_room.room_id) for old in sorted(linked_from) if old != t.parent_key)


def _room_members(s: _Scope, out: _Builder, t: _Target, obs_room: ObservedRoom) -> None:
    """Missing members joined; managed accounts that no longer belong kicked (rule 2)."""
    out.joins.extend(Join(t.key, t.kind, m) for m in sorted(t.members - obs_room.members))
    purpose = t.plan.purpose if isinstance(t.plan, RoomPlan) else "unit"
    for m in sorted((obs_room.members - t.members) & s.managed):
        cause = "left or disabled" if m not in s.in_layout else _MOVED[purpose]
        out.kick(s, Kick(t.key, t.kind, m, cause))


_MOVED = {"unit": "moved to another room", "group": "no longer in the group",
          "announcements": "no longer in the unit"}  # fmt: skip


def _removed_rooms(s: _Scope, out: _Builder) -> None:
    """Managed rooms the layout no longer has (unit gone, shard emptied): emptied, unlinked, history kept."""
    layout = s.desired.layout
    desired_keys = {sp.unit_key for sp in layout.spaces} | {r.key for r in layout.all_rooms}
    for key, obs_room in sorted(s.observed.rooms.items()):
        if key in desired_keys:
            continue
        for m in sorted(obs_room.members & s.managed):
            out.kick(s, Kick(key, obs_room.kind, m, "the unit no longer exists"))
        for parent in s.observed.rooms.values():
            if obs_room.room_id in parent.children and parent.key in desired_keys:
                out.links.append(UnlinkChild(parent.key, obs_room.room_id))


@dataclass(frozen=True, slots=True)
class RemovalCheck:
    people: int
    managed: int
    allowed: bool
    reason: str | None


def check_removals(
    plan: Plan, managed_count: int, *, max_removals: int, max_percent: float, allow: int | None
) -> RemovalCheck:
    """The deletion threshold: people who lose access (locked, or kicked without joining elsewhere)."""
    joined = {a.user_id for a in plan.actions if isinstance(a, Join)}
    losing = {a.user_id for a in plan.actions if isinstance(a, LockUser | DeactivateUser)}
    # A power level taken back is a right lost: a directory that suddenly shows no heads must not demote
    # every moderator in one run any more than it may lock everyone.
    # Someone leaving the room in the same run (moved to another shard or unit) is judged by the kick
    # rule below: the level goes with the membership, it is not a second loss.
    leaving = {(a.room_key, a.user_id) for a in plan.actions if isinstance(a, Kick)}
    losing |= {
        u
        for a in plan.actions
        if isinstance(a, UpdateRoom)
        for u, _ in a.lowered
        if (a.key, u) not in leaving
    }
    # Leaving a space takes no conversation away (a unit moved in the tree leaves the spaces above it).
    losing |= {
        a.user_id
        for a in plan.actions
        if isinstance(a, Kick) and a.room_kind == "room" and a.user_id not in joined
    }
    n = len(losing)
    what = (
        "remove or lower the power of"
        if any(isinstance(a, UpdateRoom) and a.lowered for a in plan.actions)
        else "remove"
    )
    limit_pct = max_percent / 100 * managed_count if managed_count else float("inf")
    over = n > max_removals or n > limit_pct
    if over and allow is not None and n <= allow:
        return RemovalCheck(n, managed_count, True, None)
    if over:
        return RemovalCheck(
            n,
            managed_count,
            False,
            f"this run would {what} {n} people (limit: {max_removals} or {max_percent:g}% of {managed_count} "
            f"managed); nothing was applied. Check the directory, then rerun with --allow-removals {n}",
        )
    return RemovalCheck(n, managed_count, True, None)
