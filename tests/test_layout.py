"""Layout planner: table-driven cases and the invariants as properties."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.core.layout import LayoutPolicy, assign_shards, plan_layout, slugify
from provisioner.core.model import ROOT_UNIT, Person, Unit

SERVER = "example.test"


def unit(key, *path):
    parent = None
    if len(path) > 1:
        parent = "u:" + "/".join(path[:-1])
    return Unit(key=key, path=path, parent_key=parent or ROOT_UNIT)


def person(i, unit_key, name=None, **kw):
    return Person(
        anchor=f"a{i:05d}",
        login=f"user{i}",
        dn=f"uid=user{i},dc=x",
        display_name=name or f"P {i:05d}",
        unit_key=unit_key,
        sort_name=(name or f"p {i:05d}").casefold(),
        **kw,
    )


def policy(max_room=10, **kw):
    return LayoutPolicy(server_name=SERVER, max_room_size=max_room, org_name="Правительство Москвы", **kw)


def lps(people):
    return {p.anchor: f"user{int(p.anchor[1:])}" for p in people}


UNITS = [
    unit("u:Префектура ЮАО", "Префектура ЮАО"),
    unit("u:Префектура ЮАО/Отдел ЖКХ", "Префектура ЮАО", "Отдел ЖКХ"),
    unit("u:Префектура ЦАО", "Префектура ЦАО"),
    unit("u:Префектура ЦАО/Отдел ЖКХ", "Префектура ЦАО", "Отдел ЖКХ"),
]


def test_small_unit_one_room_named_as_directory():
    people = [person(i, "u:Префектура ЮАО/Отдел ЖКХ") for i in range(5)]
    lay = plan_layout(people, UNITS, lps(people), policy())
    rooms = [r for r in lay.rooms if r.unit_key == "u:Префектура ЮАО/Отдел ЖКХ"]
    assert len(rooms) == 1
    assert rooms[0].name == "Отдел ЖКХ"
    assert rooms[0].alias == "prefektura-yuao.otdel-zhkkh"
    assert len(rooms[0].members) == 5


def test_big_unit_split_into_balanced_shards_with_readable_names():
    people = [person(i, "u:Префектура ЮАО/Отдел ЖКХ") for i in range(25)]
    lay = plan_layout(people, UNITS, lps(people), policy(max_room=10))
    rooms = [r for r in lay.rooms if r.unit_key == "u:Префектура ЮАО/Отдел ЖКХ"]
    assert [r.name for r in rooms] == ["Отдел ЖКХ (1/3)", "Отдел ЖКХ (2/3)", "Отдел ЖКХ (3/3)"]
    assert [r.alias for r in rooms] == [
        "prefektura-yuao.otdel-zhkkh",
        "prefektura-yuao.otdel-zhkkh-2",
        "prefektura-yuao.otdel-zhkkh-3",
    ]
    assert sorted(len(r.members) for r in rooms) == [8, 8, 9]
    # The big unit's members are not joined to its space: it would exceed a room's size.
    space = next(s for s in lay.spaces if s.unit_key == "u:Префектура ЮАО/Отдел ЖКХ")
    assert space.members == ()


def test_same_named_units_get_distinct_aliases_and_spaces_nest():
    people = [person(1, "u:Префектура ЮАО/Отдел ЖКХ"), person(2, "u:Префектура ЦАО/Отдел ЖКХ")]
    lay = plan_layout(people, UNITS, lps(people), policy())
    aliases = [r.alias for r in lay.rooms]
    assert len(set(aliases)) == len(aliases)
    by_key = {s.unit_key: s for s in lay.spaces}
    assert by_key[ROOT_UNIT].parent_key is None
    assert "u:Префектура ЮАО" in by_key[ROOT_UNIT].children
    assert "u:Префектура ЮАО/Отдел ЖКХ#1" in by_key["u:Префектура ЮАО/Отдел ЖКХ"].children
    assert all(s.alias.endswith(".space") for s in lay.spaces)
    all_aliases = aliases + [s.alias for s in lay.spaces]
    assert len(set(all_aliases)) == len(all_aliases)


def test_shard_and_space_suffixes_never_take_another_units_alias():
    units = [
        unit("u:Контакт-центр", "Контакт-центр"),
        unit("u:Контакт центр 2", "Контакт центр 2"),
        unit("u:Архив", "Архив"),
        unit("u:Архив/Space", "Архив", "Space"),
    ]
    people = [person(i, "u:Контакт-центр") for i in range(25)]
    people += [person(100 + i, k) for i, k in enumerate(["u:Контакт центр 2", "u:Архив", "u:Архив/Space"])]
    lay = plan_layout(people, units, lps(people), policy(max_room=10))
    aliases = [r.alias for r in lay.rooms] + [s.alias for s in lay.spaces]
    assert len(set(aliases)) == len(aliases)
    by_key = {r.key: r.alias for r in lay.rooms}
    # A unit's own alias wins over a derived one: "Контакт центр 2" keeps its name, shard 2 gets a hash.
    assert by_key["u:Контакт центр 2#1"] == "kontakt-tsentr-2"
    assert by_key["u:Контакт-центр#2"].startswith("kontakt-tsentr-2-")
    assert by_key["u:Архив/Space#1"] == "arkhiv.space"


def test_long_names_shortened_without_collisions():
    long_a = "Отдел " + "очень " * 40 + "длинный А"
    long_b = "Отдел " + "очень " * 40 + "длинный Б"
    units = [unit("u:a", long_a), unit("u:b", long_b)]
    people = [person(1, "u:a"), person(2, "u:b")]
    lay = plan_layout(people, units, lps(people), policy())
    names = [r.name for r in lay.rooms]
    assert all(len(n) <= 120 for n in names)
    assert len(set(names)) == 2
    assert all(len(r.alias) < 200 for r in lay.rooms)


def test_heads_from_manager_and_title():
    head = person(1, "u:Префектура ЮАО/Отдел ЖКХ", title="Начальник отдела")
    staff = person(2, "u:Префектура ЮАО/Отдел ЖКХ", manager_dn="uid=user1,dc=x")
    lay = plan_layout([head, staff], UNITS, lps([head, staff]), policy())
    room = next(r for r in lay.rooms if r.unit_key == "u:Префектура ЮАО/Отдел ЖКХ")
    assert room.moderators == (f"@user1:{SERVER}",)
    lay2 = plan_layout([head], UNITS, lps([head]), policy(head_title_pattern="^Начальник"))
    room2 = next(r for r in lay2.rooms if r.unit_key == "u:Префектура ЮАО/Отдел ЖКХ")
    assert room2.moderators == (f"@user1:{SERVER}",)


def test_people_without_unit_sit_in_org_room():
    people = [person(1, ROOT_UNIT)]
    lay = plan_layout(people, UNITS, lps(people), policy())
    assert [r.unit_key for r in lay.rooms] == [ROOT_UNIT]
    assert lay.rooms[0].name == "Правительство Москвы"


def test_capacity_leaves_seat_for_provisioner():
    with pytest.raises(ValueError, match="max_room_size"):
        plan_layout([], UNITS, {}, policy(max_room=2, reserved_seats=2))


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Отдел ЖКХ", "otdel-zhkkh"),
        ("Управа района Бирюлёво Восточное", "uprava-rayona-biryulevo-vostochnoe"),
        ("!!!", None),
    ],
)
def test_slugify(text, slug):
    got = slugify(text)
    if slug:
        assert got == slug
    else:
        assert got.startswith("u") and got.isascii()


# --- properties -------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 120), st.integers(1, 25), st.data())
def test_shards_never_over_capacity_and_cover_everyone(n, cap, data):
    members = [f"m{i}" for i in range(n)]
    prev = data.draw(
        st.dictionaries(st.sampled_from(members) if members else st.nothing(), st.integers(1, 8))
    )
    shards = assign_shards(members, cap, prev)
    flat = [m for s in shards for m in s]
    assert sorted(flat) == sorted(members)
    assert all(len(s) <= cap for s in shards)


def _assignment(shards):
    return {m: i + 1 for i, s in enumerate(shards) for m in s}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 80),
    st.integers(2, 15),
    st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), max_size=40),
)
def test_stable_under_random_add_remove(n, cap, ops):
    members = [f"m{i}" for i in range(n)]
    current = _assignment(assign_shards(members, cap, {}))
    for add, x in ops:
        if add:
            new = f"n{x}"
            if new in current:
                continue
            members.append(new)
        else:
            if not members:
                continue
            members.remove(members[x % len(members)])
        shards = assign_shards(members, cap, current)
        nxt = _assignment(shards)
        moved = [m for m in members if m in current and current[m] != nxt[m]]
        assert moved == [], "adding or removing one person moved somebody else"
        assert all(len(s) <= cap for s in shards)
        current = nxt


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), st.integers(3, 30), st.integers(2, 29))
def test_lowering_limit_moves_as_few_as_possible(n, old_cap, new_cap):
    members = [f"m{i}" for i in range(n)]
    before = _assignment(assign_shards(members, old_cap, {}))
    shards = assign_shards(members, new_cap, before)
    after = _assignment(shards)
    moved = sum(1 for m in members if before[m] != after[m])
    over = sum(max(0, c - new_cap) for c in Counter(before.values()).values())
    assert moved == over
    assert all(len(s) <= new_cap for s in shards)


people_strategy = st.lists(
    st.tuples(st.sampled_from([u.key for u in UNITS] + [ROOT_UNIT]), st.booleans()), max_size=120
)


@settings(max_examples=100, deadline=None)
@given(people_strategy, st.integers(2, 30))
def test_every_enabled_person_in_exactly_one_room_of_their_unit(spec, max_room):
    people = [person(i, u) for i, (u, _) in enumerate(spec)]
    lay = plan_layout(people, UNITS, lps(people), policy(max_room=max_room))
    seen = Counter(m for r in lay.rooms for m in r.members)
    assert all(c == 1 for c in seen.values())
    assert len(seen) == len(people)
    room_unit = {m: r.unit_key for r in lay.rooms for m in r.members}
    assert all(room_unit[f"@user{int(p.anchor[1:])}:{SERVER}"] == p.unit_key for p in people)
    assert all(len(r.members) + 1 <= max_room for r in lay.rooms)
    assert all(len(s.members) + 1 <= max_room for s in lay.spaces)


@settings(max_examples=60, deadline=None)
@given(people_strategy, st.integers(2, 30))
def test_replanning_with_own_result_changes_nothing(spec, max_room):
    people = [person(i, u) for i, (u, _) in enumerate(spec)]
    first = plan_layout(people, UNITS, lps(people), policy(max_room=max_room))
    again = plan_layout(people, UNITS, lps(people), policy(max_room=max_room), first.room_of())
    assert again == first


@settings(max_examples=60, deadline=None)
@given(people_strategy, st.integers(2, 30))
def test_tree_mode_puts_everyone_in_their_units_space_and_every_space_above(spec, max_room):
    people = [person(i, u) for i, (u, _) in enumerate(spec)]
    lay = plan_layout(people, UNITS, lps(people), policy(max_room=max_room, space_members="tree"))
    by_unit = {s.unit_key: set(s.members) for s in lay.spaces}
    parent = {u.key: u.parent_key for u in UNITS}
    for p in people:
        uid = f"@user{int(p.anchor[1:])}:{SERVER}"
        chain, k = [], p.unit_key
        while k is not None and k != ROOT_UNIT:
            chain.append(k)
            k = parent.get(k)
        assert all(uid in by_unit[k] for k in [*chain, ROOT_UNIT])
    # Nobody is in a space outside their own chain, and rooms still respect the size limit.
    assert sum(len(m) for m in by_unit.values()) == sum(
        1
        + len([k for k in [p.unit_key] if k != ROOT_UNIT])
        + (p.unit_key.count("/") if p.unit_key != ROOT_UNIT else 0)
        for p in people
    )
    assert all(len(r.members) + 1 <= max_room for r in lay.rooms)
