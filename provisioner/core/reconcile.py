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
6. New rooms are created with a ``public`` join rule (one event per admin join instead of invite + join,
   FACTS.md) and closed to ``invite`` right after their initial joins; any managed room found open is closed.
   With ``public_spaces`` spaces are the exception: they stay (or are made) ``public``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bridge.matrix.contract import CREATOR_POWER_VERSIONS
from provisioner.core.actions import (
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
)
from provisioner.core.desired import Desired
from provisioner.core.identity import base_localpart
from provisioner.core.layout import RoomPlan, SpacePlan
from provisioner.core.model import DirectorySnapshot, Person

PROFILE_FIELDS = ("title", "department", "phone", "email")


@dataclass(frozen=True, slots=True)
class ObservedUser:
    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool


@dataclass(frozen=True, slots=True)
class ObservedRoom:
    room_id: str
    kind: str  # "room" | "space"
    key: str
    name: str | None
    topic: str | None
    alias: str | None  # localpart of the canonical alias
    join_rule: str | None
    power_users: Mapping[str, int]
    members: frozenset[str]  # joined or invited
    children: frozenset[str]  # room IDs linked with m.space.child
    room_version: str | None = None  # from m.room.create; None when not read


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
    """The ordered plan that makes the server match the directory."""
    is_trusted, why = trusted(snapshot, observed, policy)
    server = policy.server_name
    protected = set(policy.exclude) | {policy.provisioner} | set(policy.service_accounts)
    if policy.bot:
        protected.add(policy.bot)
    anchor_of = {f"@{lp}:{server}": a for a, lp in desired.localparts.items()}
    registry_uid = {f"@{e.localpart}:{server}": a for a, e in observed.registry.items()}
    managed = (set(anchor_of) | set(registry_uid)) - protected

    registry_updates: dict[str, tuple[str, str, float | None, str | None]] = {}

    def reg(anchor: str, localpart: str, locked_since: float | None, prof: str | None) -> None:
        old = observed.registry.get(anchor)
        new = (anchor, localpart, locked_since, prof)
        if old is None or (old.localpart, old.locked_since, old.profile) != new[1:]:
            registry_updates[anchor] = new

    users_first: list[Action] = []
    users_last: list[Action] = []
    removals_held = 0
    in_layout = {m for r in desired.layout.rooms for m in r.members}

    # --- users -------------------------------------------------------------------------------------------
    for uid, person in sorted(desired.people.items()):
        if uid in protected:
            continue
        anchor = person.anchor
        lp = desired.localparts[anchor]
        entry = observed.registry.get(anchor)
        obs = observed.users.get(uid)
        prof = profile_hash(person) if policy.profile_fields else None
        if obs is None:
            if person.disabled:
                continue  # never create an account only to lock it
            reg(anchor, lp, None, prof)
            # A new account has no fields yet: writing the empty ones would only cost requests.
            profile = (
                profile_of(person) if policy.profile_fields and any(v for _, v in profile_of(person)) else ()
            )
            users_first.append(CreateUser(uid, anchor, person.display_name, profile))
            continue
        if obs.deactivated:
            continue
        locked_since = entry.locked_since if entry else None
        name_change = person.display_name if obs.displayname != person.display_name else None
        seen = observed.profiles.get(uid)
        stale = entry is None or entry.profile != prof or (seen is not None and seen != profile_of(person))
        prof_change = profile_of(person) if policy.profile_fields and stale else ()
        # An account found without a registry entry (made at first login, or a lost registry) is adopted:
        # its external id is (re)written so the login module finds it by anchor.
        adopt = anchor if entry is None else None
        if name_change or prof_change or adopt:
            users_first.append(UpdateUser(uid, name_change, prof_change, anchor=adopt))
        if person.disabled and not obs.locked and not obs.admin:
            if is_trusted:
                users_last.append(LockUser(uid, "disabled in the directory"))
                locked_since = now
            else:
                removals_held += 1
        elif not person.disabled and obs.locked and locked_since is not None:
            users_first.append(UnlockUser(uid))
            locked_since = None
        reg(anchor, lp, locked_since, prof if policy.profile_fields else (entry.profile if entry else None))

    # Leavers: in the registry, gone from the directory.
    present = {p.anchor for p in snapshot.people}
    for anchor, entry in sorted(observed.registry.items()):
        if anchor in present:
            continue
        uid = f"@{entry.localpart}:{server}"
        obs = observed.users.get(uid)
        if uid in protected or obs is None or obs.deactivated or obs.admin:
            continue
        if not is_trusted:
            if not obs.locked:
                removals_held += 1
            continue
        if not obs.locked:
            users_last.append(LockUser(uid, "left the directory"))
            reg(anchor, entry.localpart, now, entry.profile)
        elif entry.locked_since is not None and now - entry.locked_since >= policy.deactivate_after_seconds:
            users_last.append(DeactivateUser(uid, entry.locked_since))

    # --- rooms and spaces --------------------------------------------------------------------------------
    creates: list[Action] = []
    links: list[Action] = []
    updates: list[Action] = []
    joins: list[Action] = []
    kicks: list[Action] = []
    closes: list[Action] = []

    def power(mods: Iterable[str], room: ObservedRoom | None = None) -> tuple[tuple[str, int], ...]:
        creator_listed = policy.creator_in_power_levels
        if room is not None and room.room_version is not None:
            creator_listed = room.room_version not in CREATOR_POWER_VERSIONS
        users = {policy.provisioner: 100} if creator_listed else {}
        for m in mods:
            users.setdefault(m, policy.moderator_level)
        return tuple(sorted(users.items()))

    def wanted_members(members: Iterable[str]) -> set[str]:
        out = set(members) - set(policy.exclude)
        if policy.bot:
            out.add(policy.bot)
        return out

    plans: list[tuple[str, SpacePlan | RoomPlan]] = [("space", s) for s in desired.layout.spaces]
    plans += [("room", r) for r in desired.layout.rooms]
    desired_keys = set()
    linked_from: dict[str, set[str]] = defaultdict(set)  # child room ID → keys of managed spaces linking it
    for space in observed.rooms.values():
        for child in space.children:
            linked_from[child].add(space.key)
    for kind, plan in plans:
        key = plan.unit_key if isinstance(plan, SpacePlan) else plan.key
        desired_keys.add(key)
        parent_key = plan.parent_key if isinstance(plan, SpacePlan) else plan.unit_key
        obs_room = observed.rooms.get(key)
        pw = power(plan.moderators, obs_room)
        members = wanted_members(plan.members)
        # In tree mode every space has members, the top one everybody: the bot (a plain client, no lazy
        # loading) would sync 25,000 member events for nothing; it reads the world-readable spaces anyway.
        if isinstance(plan, SpacePlan) and policy.bot and (not plan.members or policy.public_spaces):
            members.discard(policy.bot)
        if obs_room is None:
            creates.append(
                CreateRoom(
                    key=key, room_kind=kind,  # type: ignore[arg-type]
                    unit_key=plan.unit_key, shard=plan.shard if isinstance(plan, RoomPlan) else 0,
                    name=plan.name, alias=plan.alias, topic=plan.topic, parent_key=parent_key,
                    power_users=pw, encrypted=policy.encrypted and kind == "room",
                    room_version=policy.room_version,
                )
            )  # fmt: skip
            if parent_key is not None:
                links.append(LinkChild(parent_key, key, kind))  # type: ignore[arg-type]
            joins.extend(Join(key, kind, m) for m in sorted(members))  # type: ignore[arg-type]
            if not (kind == "space" and policy.public_spaces):
                closes.append(UpdateRoom(key, join_rule="invite", cause="closed after the initial joins"))
            continue
        want_power = {u: lvl for u, lvl in pw if obs_room.power_users.get(u, 0) < lvl}
        upd = UpdateRoom(
            key,
            name=plan.name if obs_room.name != plan.name else None,
            topic=plan.topic if obs_room.topic != plan.topic else None,
            alias=plan.alias if obs_room.alias != plan.alias else None,
            power_users=tuple(sorted({**obs_room.power_users, **want_power}.items())) if want_power else None,
        )
        if any(x is not None for x in (upd.name, upd.topic, upd.alias, upd.power_users)):
            updates.append(upd)
        if kind == "space" and policy.public_spaces:
            if obs_room.join_rule != "public":
                closes.append(UpdateRoom(key, join_rule="public", cause="spaces are open to colleagues"))
        elif obs_room.join_rule not in ("invite", None):
            closes.append(UpdateRoom(key, join_rule="invite", cause="managed rooms are invite-only"))
        if parent_key is not None:
            parent = observed.rooms.get(parent_key)
            if parent is None or obs_room.room_id not in parent.children:
                links.append(LinkChild(parent_key, key, kind))  # type: ignore[arg-type]
        # A unit moved to another parent (an OU moved in the tree) leaves its old parent space.
        links.extend(
            UnlinkChild(old, obs_room.room_id)
            for old in sorted(linked_from.get(obs_room.room_id, ()))
            if old != parent_key
        )
        for m in sorted(members - obs_room.members):
            joins.append(Join(key, kind, m))  # type: ignore[arg-type]
        for m in sorted((obs_room.members - members) & managed):
            cause = "left or disabled" if m not in in_layout else "moved to another room"
            if is_trusted:
                kicks.append(Kick(key, kind, m, cause))  # type: ignore[arg-type]
            else:
                removals_held += 1

    # Managed rooms the layout no longer has (unit gone, shard emptied): emptied and unlinked, history kept.
    for key, obs_room in sorted(observed.rooms.items()):
        if key in desired_keys:
            continue
        for m in sorted(obs_room.members & managed):
            if is_trusted:
                kicks.append(Kick(key, obs_room.kind, m, "the unit no longer exists"))  # type: ignore[arg-type]
            else:
                removals_held += 1
        for parent in observed.rooms.values():
            if obs_room.room_id in parent.children and parent.key in desired_keys:
                links.append(UnlinkChild(parent.key, obs_room.room_id))

    actions: list[Action] = []
    if registry_updates:
        actions.append(SaveRegistry(tuple(registry_updates[a] for a in sorted(registry_updates))))
    actions += [
        ExemptRateLimit(uid, cause)
        for uid, cause in ((policy.provisioner, "the provisioner"), (policy.bot, "the event bot"))
        if uid and uid in observed.users and uid not in observed.unlimited
    ]
    actions += users_first + creates + links + updates + joins + closes + kicks + users_last
    notes = (f"removals held: {why}",) if not is_trusted else ()
    return Plan(
        actions=tuple(actions),
        fingerprint=fingerprint(snapshot, observed),
        created_at=now,
        notes=notes,
        held_removals=removals_held,
    )


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
    # Leaving a space takes no conversation away (a unit moved in the tree leaves the spaces above it).
    losing |= {
        a.user_id
        for a in plan.actions
        if isinstance(a, Kick) and a.room_kind == "room" and a.user_id not in joined
    }
    n = len(losing)
    limit_pct = max_percent / 100 * managed_count if managed_count else float("inf")
    over = n > max_removals or n > limit_pct
    if over and allow is not None and n <= allow:
        return RemovalCheck(n, managed_count, True, None)
    if over:
        return RemovalCheck(
            n,
            managed_count,
            False,
            f"this run would remove {n} people (limit: {max_removals} or {max_percent:g}% of {managed_count} "
            f"managed); nothing was applied. Check the directory, then rerun with --allow-removals {n}",
        )
    return RemovalCheck(n, managed_count, True, None)
