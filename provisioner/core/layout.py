"""The layout planner: people and units → spaces and size-capped rooms. Pure functions, no I/O.

Invariants (tested as properties):
1. No room holds more than ``max_room_size`` members, service accounts included (``reserved`` seats).
2. Every enabled person is in exactly one department room: a shard of their own unit.
3. Stability: a person already in a shard of their unit stays there unless that shard is over the limit;
   adding or removing one person moves nobody else. Shards are never merged (that would move people).
4. Names keep the directory's spelling; aliases are ASCII, unique and stable for a unit while its path stays.
5. With ``space_members="unit"``, no space is joined by more people than fit in a room: people join their
   unit's space only when the unit's direct members fit in one room, so presence never fans out beyond a
   room's size. With ``"tree"`` everyone joins their unit's space and every space above it, split units
   included, so the whole tree shows in the space panel; those spaces are then public (counted linearly by
   the user directory) and kept out of presence (``exclude_rooms_from_presence``).
6. A space's or room's moderators are among its members: a unit's head moderates the shard they sit in and
   the spaces they join, never a room they are not in (a power level outlives any membership, and a head
   whose people were moved away must not moderate where they went). Levels a group gives follow the same
   rule: in the rooms and spaces of the member's own unit, or of the named units and below, where they sit.
7. A group mapped to a room gets rooms of its enabled members, split and kept stable like a unit's; they
   hang under no space (a working group crosses departments) and are named after the group.
8. An announcement channel of a unit holds everyone in the unit's subtree in one room, never split (one
   post reaches the unit); its heads and the levels given there are its only posters besides the bot.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from provisioner.core.groups import unit_keys_for
from provisioner.core.identity import short_hash, transliterate
from provisioner.core.model import ROOT_UNIT, Group, Person, Unit
from provisioner.core.policy import AnnouncementPolicy
from provisioner.core.policy import LayoutPolicy as LayoutPolicy  # re-exported for the layout's callers

MAX_NAME = 120
MAX_ALIAS_LOCALPART = 180  # the whole alias, '#' and ':server' included, must stay under 255 bytes
MAX_SLUG_PART = 40


@dataclass(frozen=True, slots=True)
class SpacePlan:
    unit_key: str
    name: str
    alias: str  # localpart of the alias, without '#' and server
    parent_key: str | None
    topic: str
    members: tuple[str, ...]  # user IDs that join the space
    moderators: tuple[str, ...]
    children: tuple[str, ...]  # keys of child spaces and rooms (rooms as "unit#shard")
    levels: tuple[tuple[str, int], ...] = ()  # levels groups give here (members only)


@dataclass(frozen=True, slots=True)
class RoomPlan:
    key: str  # "<unit key>#<shard>"
    unit_key: str
    shard: int  # 1-based
    shard_count: int
    name: str
    alias: str
    topic: str
    members: tuple[str, ...]
    moderators: tuple[str, ...]
    levels: tuple[tuple[str, int], ...] = ()  # levels groups give here (members only)
    purpose: str = "unit"  # "unit" (a department room), "group", "announcements"

    @property
    def parent(self) -> str | None:
        """The space it hangs under: its unit's; a group's room crosses units and hangs under none."""
        return None if self.purpose == "group" else self.unit_key


GROUP_PREFIX = "group:"
ANNOUNCE_PREFIX = "announce:"


@dataclass(frozen=True, slots=True)
class Layout:
    spaces: tuple[SpacePlan, ...]
    rooms: tuple[RoomPlan, ...]
    group_rooms: tuple[RoomPlan, ...] = ()
    announcements: tuple[RoomPlan, ...] = ()

    @property
    def all_rooms(self) -> tuple[RoomPlan, ...]:
        return self.rooms + self.group_rooms + self.announcements

    def room_of(self) -> dict[str, str]:
        """User ID → key of their department room."""
        return {m: r.key for r in self.rooms for m in r.members}


def room_key(unit_key: str, shard: int) -> str:
    return f"{unit_key}#{shard}"


def split_room_key(key: str) -> tuple[str, int]:
    unit, _, shard = key.rpartition("#")
    return unit, int(shard)


def slugify(text: str) -> str:
    """ASCII slug of a unit name: transliterated, lowercase, words joined with '-', capped in length."""
    slug = re.sub(r"[^a-z0-9]+", "-", transliterate(text)).strip("-")
    if not slug:
        return "u" + short_hash(text, 6)
    if len(slug) > MAX_SLUG_PART:
        slug = slug[: MAX_SLUG_PART - 7].rstrip("-") + "-" + short_hash(text, 6)
    return slug


def shorten(name: str, limit: int = MAX_NAME) -> str:
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


# --- shard assignment -------------------------------------------------------------------------------------


def assign_shards(
    members: Sequence[str],
    capacity: int,
    previous: Mapping[str, int],
    sort_key: Mapping[str, str] | None = None,
) -> list[list[str]]:
    """Split ``members`` into shards of at most ``capacity``, keeping everyone in ``previous`` where possible.

    ``previous`` maps a member to the 1-based shard they are in now. Returns shards in order (index 0 is
    shard 1); a shard may be empty when people left it (it is kept so nobody is renumbered).
    """
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    key = sort_key or {}
    ordered = sorted(members, key=lambda m: (key.get(m, ""), m))
    n = len(ordered)
    kept_indexes = [previous[m] for m in ordered if m in previous and previous[m] >= 1]
    count = max(math.ceil(n / capacity), max(kept_indexes, default=0), 1)
    if not kept_indexes:
        # First placement: balanced contiguous ranges in name order, so shard 1 holds "А–К" and so on.
        base, extra = divmod(n, count)
        shards: list[list[str]] = []
        i = 0
        for s in range(count):
            size = base + (1 if s < extra else 0)
            shards.append(ordered[i : i + size])
            i += size
        return shards
    shards = [[] for _ in range(count)]
    unplaced: list[str] = []
    for m in ordered:
        idx = previous.get(m)
        if idx is not None and 1 <= idx <= count and len(shards[idx - 1]) < capacity:
            shards[idx - 1].append(m)
        else:
            unplaced.append(m)
    for m in unplaced:
        target = min(range(count), key=lambda s: (len(shards[s]), s))
        if len(shards[target]) >= capacity:
            shards.append([])
            target = len(shards) - 1
        shards[target].append(m)
    return shards


# --- the planner ------------------------------------------------------------------------------------------


def _heads(people: Iterable[Person], by_user: Mapping[str, str], pattern: str | None) -> dict[str, set[str]]:
    """Unit key → user IDs of its heads: the ``manager`` of the unit's people, or a title matching pattern."""
    plist = list(people)
    by_dn = {_norm_dn(p.dn): p for p in plist}
    regex = re.compile(pattern, re.IGNORECASE) if pattern else None
    heads: dict[str, set[str]] = defaultdict(set)
    for p in plist:
        if p.manager_dn:
            head = by_dn.get(p.manager_dn)
            if head is not None and head.anchor in by_user and head.anchor != p.anchor:
                heads[p.unit_key].add(by_user[head.anchor])
        if regex and p.title and regex.search(p.title) and p.anchor in by_user:
            heads[p.unit_key].add(by_user[p.anchor])
    return heads


def _norm_dn(dn: str) -> str:
    from provisioner.core.dn import DNError, normalize_dn

    try:
        return normalize_dn(dn)
    except DNError:
        return dn.casefold()


def _aliases(units: Mapping[str, Unit], prefix: str) -> dict[str, str]:
    """Unit key → alias localpart: the top unit and the unit itself ("prefektura-yuao.otdel-zhkkh"), with
    intermediate levels added only where that is ambiguous, and a hash as the last resort."""

    def candidate(unit: Unit, level: int) -> str:
        parts = [slugify(p) for p in unit.path] or ["org"]
        if len(parts) > 2 and level < len(parts) - 2:
            parts = [parts[0], *parts[len(parts) - 1 - level :]]
        alias = ".".join(parts)
        if len(alias) > MAX_ALIAS_LOCALPART - 20:
            alias = short_hash(unit.key, 8) + "." + ".".join(parts[-2:])
            alias = alias[: MAX_ALIAS_LOCALPART - 20]
        return f"{prefix}.{alias}" if prefix else alias

    level = dict.fromkeys(units, 0)
    out = {k: candidate(u, 0) for k, u in units.items()}
    for _ in range(12):
        groups: dict[str, list[str]] = defaultdict(list)
        for k, a in out.items():
            groups[a].append(k)
        clashes = [ks for ks in groups.values() if len(ks) > 1]
        if not clashes:
            return out
        for ks in clashes:
            for k in ks:
                level[k] += 1
                out[k] = candidate(units[k], level[k])
    counts: dict[str, int] = defaultdict(int)
    for alias in out.values():
        counts[alias] += 1
    return {k: (a if counts[a] == 1 else f"{a}-{short_hash(k, 6)}") for k, a in out.items()}


def _names(units: Mapping[str, Unit], org_name: str) -> dict[str, str]:
    """Unit key → display name, shortened; shortened names that would collide get a distinguishing hash.

    Units that are *named* alike in the directory (every district council has an "Отдел ЖКХ") keep their
    common name: only the shortening must not create new collisions.
    """
    out: dict[str, str] = {}
    by_short: dict[tuple[str | None, str], set[str]] = defaultdict(set)
    for key, unit in units.items():
        full = unit.name or org_name
        out[key] = shorten(full)
        by_short[(unit.parent_key, out[key])].add(full)
    for key, unit in units.items():
        full = unit.name or org_name
        if out[key] != full and len(by_short[(unit.parent_key, out[key])]) > 1:
            out[key] = shorten(full, MAX_NAME - 7) + " " + short_hash(full, 6)
    return out


def plan_layout(
    people: Sequence[Person],
    units: Sequence[Unit],
    localparts: Mapping[str, str],
    policy: LayoutPolicy,
    previous_rooms: Mapping[str, str] | None = None,
    groups: Sequence[Group] = (),
    previous_groups: Mapping[str, Mapping[str, int]] | None = None,
) -> Layout:
    """The desired spaces and rooms.

    ``people`` are the enabled people; ``localparts`` maps their anchors to localparts; ``previous_rooms``
    maps user IDs to the department room key they are in now (read from the server), for stable assignment;
    ``previous_groups`` maps a group room's base key to its members' shards now.
    """
    capacity = policy.max_room_size - policy.reserved_seats
    if capacity < 1:
        raise ValueError(
            f"layout.max_room_size {policy.max_room_size} leaves no seat after {policy.reserved_seats} "
            "service accounts"
        )
    tree = _tree(people, units, localparts, policy, groups)
    rooms = [r for key in tree.live for r in _unit_rooms(tree, key, capacity, previous_rooms or {})]
    spaces = _spaces(tree, rooms, capacity, tree_mode=policy.space_members == "tree")
    group_rooms = _group_rooms(tree, groups, policy, capacity, previous_groups or {})
    channels = _announcements(tree, policy.announcements) if policy.announcements else []
    layout = Layout(tuple(spaces), tuple(rooms), tuple(group_rooms), tuple(channels))
    return _unique_aliases(layout)


@dataclass(frozen=True, slots=True)
class _Tree:
    """The units as the planner sees them: who sits directly in each, and how each is named."""

    units: Mapping[str, Unit]
    live: tuple[str, ...]  # units with members and all their ancestors, in path order
    members: Mapping[str, Sequence[str]]  # unit key → user IDs of its direct members
    sort_key: Mapping[str, str]  # user ID → how their name sorts (enabled people only)
    localparts: Mapping[str, str]  # anchor → localpart
    heads: Mapping[str, set[str]]  # unit key → user IDs of its heads (moderators)
    levels: Mapping[str, Mapping[str, int]]  # unit key → user ID → level a group gives there
    names: Mapping[str, str]
    aliases: Mapping[str, str]
    org_name: str

    def topic(self, key: str) -> str:
        return " / ".join(self.units[key].path) or self.org_name


def _tree(
    people: Sequence[Person],
    units: Sequence[Unit],
    localparts: Mapping[str, str],
    policy: LayoutPolicy,
    groups: Sequence[Group] = (),
) -> _Tree:
    user_of = {a: f"@{lp}:{policy.server_name}" for a, lp in localparts.items()}
    all_units: dict[str, Unit] = {ROOT_UNIT: Unit(ROOT_UNIT, (), None)}
    for u in units:
        all_units[u.key] = u
    members: dict[str, list[str]] = defaultdict(list)
    sort_key: dict[str, str] = {}
    for p in people:
        uid = user_of.get(p.anchor)
        if uid is None:
            continue
        members[p.unit_key if p.unit_key in all_units else ROOT_UNIT].append(uid)
        sort_key[uid] = p.sort_name or p.display_name.casefold()
    # Units that matter: those with members, and all their ancestors.
    live: set[str] = set()
    for key in members:
        k: str | None = key
        while k is not None and k not in live:
            live.add(k)
            k = all_units[k].parent_key if k in all_units else None
    live.add(ROOT_UNIT)
    return _Tree(
        units=all_units,
        live=tuple(sorted(live, key=lambda k: (all_units[k].path, k))),
        members=members,
        sort_key=sort_key,
        localparts=localparts,
        heads=_heads(people, user_of, policy.head_title_pattern),
        levels=_group_levels(people, all_units, user_of, groups, policy),
        names=_names(all_units, policy.org_name),
        aliases=_aliases(all_units, policy.alias_prefix),
        org_name=policy.org_name,
    )


def _unit_rooms(tree: _Tree, key: str, capacity: int, previous_rooms: Mapping[str, str]) -> list[RoomPlan]:
    """The rooms of one unit: its direct members in shards, each keeping the shard they are in."""
    members = tree.members.get(key, [])
    if not members:
        return []
    prev = {}
    for uid in members:
        prev_key = previous_rooms.get(uid)
        if prev_key:
            prev_unit, shard = split_room_key(prev_key)
            if prev_unit == key:
                prev[uid] = shard
    shards = assign_shards(members, capacity, prev, tree.sort_key)
    base_name, n = tree.names[key], len(shards)
    return [
        RoomPlan(
            key=room_key(key, i),
            unit_key=key,
            shard=i,
            shard_count=n,
            name=base_name if n == 1 else f"{base_name} ({i}/{n})",
            alias=tree.aliases[key] if i == 1 else f"{tree.aliases[key]}-{i}",
            topic=tree.topic(key),
            members=tuple(sorted(shard_members)),
            moderators=tuple(sorted(tree.heads.get(key, set()).intersection(shard_members))),
            levels=_levels_among(tree, key, shard_members),
        )
        for i, shard_members in enumerate(shards, start=1)
    ]


def _levels_among(tree: _Tree, unit_key: str, members: Iterable[str]) -> tuple[tuple[str, int], ...]:
    given = tree.levels.get(unit_key, {})
    return tuple(sorted((m, given[m]) for m in set(members) if m in given))


def _group_levels(
    people: Sequence[Person],
    units: Mapping[str, Unit],
    user_of: Mapping[str, str],
    groups: Sequence[Group],
    policy: LayoutPolicy,
) -> dict[str, dict[str, int]]:
    """Unit key → user ID → the level groups give there (the highest, when several do).

    A rule with ``units: own`` gives it in the member's own unit; one with named units, in every unit from
    the member's own up to a named one, when the member sits below (or in) it.
    """
    rules = {r.index: r for r in policy.group_rules if r.level is not None}
    named = unit_keys_for(sorted({u for r in rules.values() for u in (r.units or ())}), list(units.values()))
    unit_of = {p.anchor: p.unit_key if p.unit_key in units else ROOT_UNIT for p in people}
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for g in groups:
        for ix in g.rules:
            rule = rules.get(ix)
            if rule is None or rule.level is None:
                continue
            targets = {named[u] for u in rule.units} if rule.units is not None else None
            for anchor in g.members:
                uid, own = user_of.get(anchor), unit_of.get(anchor)
                if uid is None or own is None:
                    continue
                for key in _units_up_to(units, own, targets):
                    out[key][uid] = max(out[key].get(uid, 0), rule.level)
    return out


def _units_up_to(units: Mapping[str, Unit], own: str, targets: set[str] | None) -> list[str]:
    """``own`` alone (no targets), or ``own`` and its ancestors up to the nearest target (none if no
    target is among them)."""
    if targets is None:
        return [own]
    chain: list[str] = []
    k: str | None = own
    while k is not None:
        chain.append(k)
        if k in targets:
            return chain
        k = units[k].parent_key if k in units and k != ROOT_UNIT else None
    return []


def _tree_members(tree: _Tree) -> dict[str, set[str]]:
    """Unit key → everyone in the unit or below it (the people who join its space in "tree" mode)."""
    out: dict[str, set[str]] = defaultdict(set)
    for key, members in tree.members.items():
        k: str | None = key
        while k is not None:
            out[k].update(members)
            k = tree.units[k].parent_key if k in tree.units and k != ROOT_UNIT else None
        out[ROOT_UNIT].update(members)
    return out


def _spaces(tree: _Tree, rooms: Sequence[RoomPlan], capacity: int, *, tree_mode: bool) -> list[SpacePlan]:
    """A space per live unit, holding its sub-units' spaces and its own rooms."""
    rooms_by_unit: dict[str, list[str]] = defaultdict(list)
    for r in rooms:
        rooms_by_unit[r.unit_key].append(r.key)
    children: dict[str, list[str]] = defaultdict(list)
    for key in tree.live:
        parent = tree.units[key].parent_key
        if key != ROOT_UNIT and parent is not None:
            children[parent].append(key)
    below = _tree_members(tree) if tree_mode else {}
    spaces: list[SpacePlan] = []
    for key in tree.live:
        unit = tree.units[key]
        direct = tree.members.get(key, [])
        if tree_mode:
            members = tuple(sorted(below.get(key, ())))
        else:
            # Joining the space adds no presence fan-out only when its members are exactly one room's.
            members = tuple(sorted(direct)) if 0 < len(direct) <= capacity else ()
        spaces.append(
            SpacePlan(
                unit_key=key,
                name=tree.names[key],
                alias=f"{tree.aliases[key]}.space",
                parent_key=unit.parent_key if key != ROOT_UNIT else None,
                topic=tree.topic(key),
                members=members,
                moderators=tuple(sorted(tree.heads.get(key, set()).intersection(members))),
                children=tuple(sorted(children.get(key, []), key=lambda k: tree.units[k].path))
                + tuple(rooms_by_unit.get(key, [])),
                levels=_levels_among(tree, key, members),
            )
        )
    return spaces


def _group_rooms(
    tree: _Tree,
    groups: Sequence[Group],
    policy: LayoutPolicy,
    capacity: int,
    previous: Mapping[str, Mapping[str, int]],
) -> list[RoomPlan]:
    """Rooms of the groups mapped to one (rule 7): enabled members, split by ``capacity`` like a unit."""
    with_room = {r.index for r in policy.group_rules if r.room}
    enabled = tree.sort_key  # user ID → sort name, for enabled people only
    user_of = {a: f"@{lp}:{policy.server_name}" for a, lp in tree.localparts.items()}
    out: list[RoomPlan] = []
    for g in sorted(groups, key=lambda g: (g.name.casefold(), g.key)):
        if not with_room.intersection(g.rules):
            continue
        members = sorted({u for a in g.members if (u := user_of.get(a)) is not None and u in enabled})
        if not members:
            continue
        base = GROUP_PREFIX + g.key
        shards = assign_shards(members, capacity, previous.get(base, {}), enabled)
        name, n = shorten(g.name), len(shards)
        alias = ".".join(x for x in (policy.alias_prefix, "group", slugify(g.name)) if x)
        out += [
            RoomPlan(
                key=room_key(base, i),
                unit_key=base,
                shard=i,
                shard_count=n,
                name=name if n == 1 else f"{name} ({i}/{n})",
                alias=alias if i == 1 else f"{alias}-{i}",
                topic=g.name,
                members=tuple(sorted(ms)),
                moderators=(),
                purpose="group",
            )
            for i, ms in enumerate(shards, start=1)
        ]
    return out


def _announcements(tree: _Tree, policy: AnnouncementPolicy) -> list[RoomPlan]:
    """One channel per unit the policy picks (rule 8): its whole subtree reads, its heads post."""
    below = _tree_members(tree)
    out: list[RoomPlan] = []
    for key in tree.live:
        unit = tree.units[key]
        if key == ROOT_UNIT or (policy.units == "top" and len(unit.path) != 1):
            continue  # never the whole organisation: a room everyone is in fans presence out to everyone
        members = below.get(key, set())
        if not members or len(members) < policy.min_members or len(members) > policy.max_members:
            continue
        out.append(
            RoomPlan(
                key=ANNOUNCE_PREFIX + key,
                unit_key=key,
                shard=0,
                shard_count=1,
                name=shorten(f"{tree.names[key]} — {policy.name_suffix}"),
                alias=f"{tree.aliases[key]}.announcements",
                topic=tree.topic(key),
                members=tuple(sorted(members)),
                moderators=tuple(sorted(tree.heads.get(key, set()).intersection(members))),
                levels=_levels_among(tree, key, members),
                purpose="announcements",
            )
        )
    return out


def _unique_aliases(layout: Layout) -> Layout:
    """Aliases derived with a shard number ("-2") or ".space" can be another unit's own alias ("Контакт
    центр 2" beside the second room of "Контакт-центр"; a sub-unit named "Space"): the unit's own alias (its
    first room's) wins, then a space's, and the derived one that loses gets a hash."""
    claims: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in layout.all_rooms:
        claims[r.alias].append((0 if r.shard == 1 and r.purpose == "unit" else 2, r.key))
    for sp in layout.spaces:
        claims[sp.alias].append((1, f"space:{sp.unit_key}"))
    renamed = {
        who: f"{alias}-{short_hash(who, 6)}"
        for alias, claimants in claims.items()
        for _, who in sorted(claimants)[1:]
    }
    if not renamed:
        return layout
    return Layout(
        spaces=tuple(
            replace(sp, alias=renamed.get(f"space:{sp.unit_key}", sp.alias)) for sp in layout.spaces
        ),
        rooms=tuple(replace(r, alias=renamed.get(r.key, r.alias)) for r in layout.rooms),
        group_rooms=tuple(replace(r, alias=renamed.get(r.key, r.alias)) for r in layout.group_rooms),
        announcements=tuple(replace(r, alias=renamed.get(r.key, r.alias)) for r in layout.announcements),
    )
