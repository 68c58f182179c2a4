"""Directory groups, pure and table-driven: nesting resolved (cycles, depth, placeholders, ranges), group
rooms and the levels groups give in the layout, announcement channels, the plan, and the groups: config."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.config import ConfigError, parse_config
from provisioner.core.actions import CreateRoom, Kick
from provisioner.core.desired import desired_state
from provisioner.core.groups import GroupError, GroupRead, resolve_groups
from provisioner.core.layout import plan_layout
from provisioner.core.model import ROOT_UNIT, Group, Person, RawEntry, Unit
from provisioner.core.policy import AnnouncementPolicy, GroupPolicy, GroupRule, LayoutPolicy
from provisioner.core.reconcile import previous_identities, previous_placements, reconcile
from tests.test_reconcile import BOT, CFG, POLICY, SERVER, empty, plan_for, simulate

BASE = "dc=city,dc=test"
G = f"ou=Groups,{BASE}"
POL = GroupPolicy(anchor="entryuuid", name_attribute="cn", member_attributes=("member", "uniquemember"))


def who(i: int, unit: str = "u:a") -> Person:
    return Person(
        f"a{i}", f"user{i}", f"uid=user{i},ou=x,{BASE}", f"Сотрудник {i}", unit, sort_name=f"{i:03d}"
    )


def group(name: str, *members: str, attr: str = "member") -> RawEntry:
    return RawEntry(f"cn={name},{G}", {"cn": (name,), "entryuuid": (f"g-{name}",), attr: members})


def person_dn(i: int) -> str:
    return f"uid=user{i},ou=x,{BASE}"


def read(*entries: RawEntry, selected: tuple[str, ...] = ("A",)) -> GroupRead:
    from provisioner.core.groups import norm

    return GroupRead(entries=entries, selected={norm(f"cn={n},{G}"): (0,) for n in selected})


PEOPLE = [who(i) for i in range(1, 8)]


@pytest.mark.parametrize(
    ("case", "entries", "expected"),
    [
        ("direct members", [group("A", person_dn(1), person_dn(2))], {"a1", "a2"}),
        # The DN as another tool wrote it: other case, spaces after commas.
        ("DN written differently", [group("A", person_dn(1).upper().replace(",", ", "))], {"a1"}),
        ("placeholder of an empty groupOfNames", [group("A", f"cn=placeholder,{BASE}")], set()),
        ("groupOfUniqueNames", [group("A", person_dn(3), attr="uniquemember")], {"a3"}),
        (
            "nested",
            [
                group("A", person_dn(1), f"cn=B,{G}"),
                group("B", person_dn(2), f"cn=C,{G}"),
                group("C", person_dn(3)),
            ],
            {"a1", "a2", "a3"},
        ),
        (
            "a cycle is cut where it closes",
            [group("A", person_dn(1), f"cn=B,{G}"), group("B", person_dn(2), f"cn=A,{G}")],
            {"a1", "a2"},
        ),
        (
            "diamond counted once",
            [
                group("A", f"cn=B,{G}", f"cn=C,{G}"),
                group("B", f"cn=D,{G}"),
                group("C", f"cn=D,{G}"),
                group("D", person_dn(4)),
            ],
            {"a4"},
        ),
    ],
)
def test_members_resolved(case, entries, expected):
    groups, _ = resolve_groups(read(*entries), PEOPLE, POL)
    assert set(groups[0].members) == expected, case
    assert groups[0].key == "g-A" and groups[0].name == "A" and groups[0].rules == (0,)


def test_a_cycle_is_reported_or_refused():
    entries = (group("A", person_dn(1), f"cn=B,{G}"), group("B", person_dn(2), f"cn=A,{G}"))
    groups, notes = resolve_groups(read(*entries, selected=("A", "B")), PEOPLE, POL)
    assert {g.name: set(g.members) for g in groups} == {"A": {"a1", "a2"}, "B": {"a1", "a2"}}
    assert any("cycle" in n and "cn=A" in n and "cn=B" in n for n in notes)
    with pytest.raises(GroupError, match=r"cycle: cn=A.*cn=B.*cn=A.*groups.cycles: error"):
        resolve_groups(read(*entries), PEOPLE, dataclasses.replace(POL, cycles="error"))


def test_nesting_deeper_than_the_limit_stops_the_run():
    chain = [group(n, f"cn={m},{G}") for n, m in zip("ABCD", "BCDE", strict=True)] + [
        group("E", person_dn(5))
    ]
    assert resolve_groups(read(*chain), PEOPLE, dataclasses.replace(POL, max_depth=4))[0][0].members == (
        "a5",
    )
    with pytest.raises(GroupError, match=r"deeper than groups.max_depth \(3\): cn=A.*cn=E"):
        resolve_groups(read(*chain), PEOPLE, dataclasses.replace(POL, max_depth=3))


def test_direct_only_and_server_resolved_nesting():
    entries = (group("A", person_dn(1), f"cn=B,{G}"), group("B", person_dn(2)))
    assert resolve_groups(read(*entries), PEOPLE, dataclasses.replace(POL, nesting="none"))[0][0].members == (
        "a1",
    )
    from provisioner.core.groups import norm

    server = GroupRead(
        entries=entries,
        selected={norm(f"cn=A,{G}"): (0,)},
        server_members={norm(f"cn=A,{G}"): (person_dn(6), person_dn(7))},
    )
    assert resolve_groups(server, PEOPLE, dataclasses.replace(POL, nesting="server"))[0][0].members == (
        "a6",
        "a7",
    )


def test_a_ranged_member_list_is_never_taken_for_the_whole_group():
    big = RawEntry(f"cn=A,{G}", {"cn": ("A",), "member;range=0-1499": (person_dn(1),)})
    with pytest.raises(GroupError, match="ranged member attribute.*nesting: server"):
        resolve_groups(read(big), PEOPLE, POL)


# --- the layout ------------------------------------------------------------------------------------------

UNITS = (
    Unit("u:t", ("Транспорт",), ROOT_UNIT),
    Unit("u:m", ("Транспорт", "Метро"), "u:t"),
    Unit("u:f", ("Финансы",), ROOT_UNIT),
)


def staff() -> list[Person]:
    units = ["u:t"] * 3 + ["u:m"] * 4 + ["u:f"] * 3
    return [dataclasses.replace(who(i, u), dn=person_dn(i)) for i, u in enumerate(units)]


def layout_policy(**kw) -> LayoutPolicy:
    return LayoutPolicy(server_name=SERVER, max_room_size=4, org_name="Город", reserved_seats=1, **kw)


def lay(groups, policy, previous_groups=None):
    people = staff()
    return plan_layout(
        people, UNITS, {p.anchor: p.login for p in people}, policy, None, groups, previous_groups
    )


def uid(i: int) -> str:
    return f"@user{i}:{SERVER}"


def test_a_group_room_holds_its_enabled_members_split_like_a_unit():
    g = Group("g1", f"cn=Рабочая группа,{G}", "Рабочая группа", (0,), tuple(f"a{i}" for i in (0, 3, 4, 5, 8)))
    out = lay([g], layout_policy(group_rules=(GroupRule(0, room=True),)))
    rooms = out.group_rooms
    assert [r.key for r in rooms] == ["group:g1#1", "group:g1#2"]  # 5 members, 3 seats a room
    assert sorted(m for r in rooms for m in r.members) == sorted(uid(i) for i in (0, 3, 4, 5, 8))
    assert all(
        r.purpose == "group" and r.parent is None and r.name.startswith("Рабочая группа") for r in rooms
    )
    assert rooms[0].alias == "group.rabochaya-gruppa" and rooms[1].alias == "group.rabochaya-gruppa-2"
    # Stable: a newcomer joins without moving anyone.
    previous = {"group:g1": {m: r.shard for r in rooms for m in r.members}}
    g2 = dataclasses.replace(g, members=(*g.members, "a9"))
    again = lay([g2], layout_policy(group_rules=(GroupRule(0, room=True),)), previous)
    moved = {
        m for r in again.group_rooms for m in r.members if previous["group:g1"].get(m, r.shard) != r.shard
    }
    assert not moved and uid(9) in {m for r in again.group_rooms for m in r.members}


@pytest.mark.parametrize(
    ("case", "units", "member", "where"),
    [
        ("own unit: their room and their unit's space", None, 3, {"u:m#1", "space:u:m"}),
        ("named unit above theirs: up to it", ("Транспорт",), 3, {"u:m#1", "space:u:m", "space:u:t"}),
        ("named unit they are not under: nowhere", ("Финансы",), 3, set()),
        ("named unit, any case, ё as е", ("финансы",), 8, {"u:f#1", "space:u:f"}),
    ],
)
def test_levels_a_group_gives(case, units, member, where):
    g = Group("g2", "cn=Ответственные", "Ответственные", (0,), (f"a{member}",))
    out = lay(
        [g],
        layout_policy(group_rules=(GroupRule(0, room=False, level=50, units=units),), space_members="tree"),
    )
    got = {r.key for r in out.rooms if (uid(member), 50) in r.levels}
    got |= {f"space:{s.unit_key}" for s in out.spaces if (uid(member), 50) in s.levels}
    assert got == where, case
    assert all(set(dict(r.levels)) <= set(r.members) for r in (*out.rooms, *out.spaces)), "members only"
    assert not out.group_rooms


@pytest.mark.parametrize(
    ("policy", "channels"),
    [
        (AnnouncementPolicy(units="top"), {"announce:u:t": 7, "announce:u:f": 3}),
        (AnnouncementPolicy(units="all"), {"announce:u:t": 7, "announce:u:m": 4, "announce:u:f": 3}),
        (AnnouncementPolicy(units="all", min_members=4), {"announce:u:t": 7, "announce:u:m": 4}),
        (AnnouncementPolicy(units="top", max_members=5), {"announce:u:f": 3}),
    ],
)
def test_announcement_channels_hold_the_whole_subtree_unsplit(policy, channels):
    out = lay([], layout_policy(announcements=policy))
    assert {r.key: len(r.members) for r in out.announcements} == channels  # one room even above the room size
    assert all(r.parent == r.unit_key and r.purpose == "announcements" for r in out.announcements)
    assert ROOT_UNIT not in {r.unit_key for r in out.announcements}


# --- the plan --------------------------------------------------------------------------------------------

GROUP_CFG = dataclasses.replace(
    CFG.layout_policy(),
    group_rules=(GroupRule(0, room=True),),
    announcements=AnnouncementPolicy(units="top"),
)


def plan_with(people, observed, groups):
    from tests import test_reconcile as tr

    snapshot = tr.DirectorySnapshot(
        tuple(people), tr.UNITS, (), True, None, len(people), groups=tuple(groups)
    )
    previous, taken = previous_identities(snapshot, observed, SERVER)
    rooms, group_rooms = previous_placements(observed)
    desired = desired_state(
        snapshot,
        GROUP_CFG,
        previous_localparts=previous,
        taken=taken | {"admin", "events"},
        previous_rooms=rooms,
        previous_groups=group_rooms,
    )
    return reconcile(desired, observed, snapshot, POLICY, now=1000.0)


def test_plan_creates_group_rooms_and_read_only_channels_and_follows_membership():
    from tests import test_reconcile as tr

    people = [tr.person(i, "u:a" if i % 2 else "u:b") for i in range(6)]
    g = Group("g1", "cn=WG", "Рабочая группа", (0,), ("a001", "a002"))
    plan = plan_with(people, empty(), [g])
    creates = {a.key: a for a in plan.actions if isinstance(a, CreateRoom)}
    assert creates["group:g1#1"].purpose == "group" and creates["group:g1#1"].parent_key is None
    channel = creates["announce:u:a"]
    assert channel.purpose == "announcements" and channel.post_level == POLICY.moderator_level
    assert (BOT, POLICY.moderator_level) in channel.power_users  # the bot posts there
    after = simulate(plan, empty())
    assert {k for k in after.rooms if k.startswith("group:")} == {"group:g1#1"}
    assert plan_with(people, after, [g]).actions == ()
    # One member leaves the group: kicked from its room only, with the reason.
    kicks = [
        a
        for a in plan_with(people, after, [dataclasses.replace(g, members=("a001",))]).actions
        if isinstance(a, Kick)
    ]
    assert [(k.room_key, k.user_id, k.cause) for k in kicks] == [
        ("group:g1#1", "@user2:example.test", "no longer in the group")
    ]


def test_previous_placements_keep_department_and_group_rooms_apart():
    from tests import test_reconcile as tr

    obs = simulate(plan_for([tr.person(i) for i in range(3)], empty()), empty())
    room = next(r for r in obs.rooms.values() if r.kind == "room")
    grp = dataclasses.replace(room, room_id="!g", key="group:g1#2", purpose="group")
    obs = dataclasses.replace(obs, rooms={**obs.rooms, grp.key: grp})
    units, groups = previous_placements(obs)
    assert set(units.values()) == {room.key} and groups == {"group:g1": dict.fromkeys(room.members, 2)}


# --- the groups: section ---------------------------------------------------------------------------------

CONF = {
    "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
    "directory": {
        "uri": "ldap://127.0.0.1:1",
        "bind_dn": "cn=x",
        "bind_password_env": "HOME",
        "base_dn": BASE,
    },
}


@pytest.mark.parametrize(
    ("groups", "key", "message"),
    [
        ({"map": [{"dn": f"cn=A,{G}", "filter": "(cn=A)", "room": True}]}, "groups.map[0].dn", "either dn"),
        ({"map": [{"room": True}]}, "groups.map[0].dn", "is missing"),
        ({"map": [{"dn": "cn=A,dc=other"}]}, "groups.map[0].dn", "not under directory.base_dn"),
        ({"map": [{"dn": f"cn=A,{G}"}]}, "groups.map[0].room", "gives nothing"),
        ({"map": [{"dn": f"cn=A,{G}", "units": "Транспорт"}]}, "groups.map[0].units", "own or a list"),
        ({"map": [{"dn": f"cn=A,{G}", "level": 100}]}, "groups.map[0].level", "between 1 and 99"),
        ({"map": [{"filter": "cn=A", "room": True}]}, "groups.map[0].filter", "in parentheses"),
        ({"map": [{"dn": f"cn=A,{G}", "room": True, "rooms": True}]}, "groups.map[0].rooms", "unknown key"),
        ({"map": []}, "groups.map", "must be a list"),
        (
            {"nesting": "deep", "map": [{"dn": f"cn=A,{G}", "room": True}]},
            "groups.nesting",
            "client, server, none",
        ),
    ],
)
def test_bad_groups_config_is_named(groups, key, message):
    with pytest.raises(ConfigError) as e:
        parse_config({**CONF, "groups": groups})
    assert e.value.key == key and message in e.value.message, e.value


def test_groups_config_builds_the_policies():
    cfg = parse_config(
        {
            **CONF,
            "layout": {"moderator_power_level": 40},
            "groups": {
                "map": [
                    {"dn": f"cn=A,{G}", "room": True},
                    {"base": G, "filter": "(cn=Ответственные*)", "units": ["Транспорт"]},
                    {"dn": f"cn=C,{G}", "level": 30},
                ]
            },
        }
    )
    rules = cfg.layout_policy().group_rules
    assert rules == (
        GroupRule(0, True),
        GroupRule(1, False, 40, ("Транспорт",)),
        GroupRule(2, False, 30, None),
    )
    gp = cfg.directory_policy().groups
    assert gp is not None and gp.nesting == "client" and gp.named_units == ("Транспорт",)
    ad = parse_config(
        {
            **CONF,
            "directory": {**CONF["directory"], "preset": "active_directory"},
            "groups": {"map": [{"dn": f"cn=A,{G}", "room": True}]},
        }
    )
    assert ad.directory.groups is not None and ad.directory.groups.nesting == "server"
