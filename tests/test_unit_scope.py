"""A run scoped to departments (pure): which unit a name means, and the plan cut down to the department.

Three departments, two with an "Отдел ЖКХ", in the space tree (``layout.space_members: tree``). What is
checked is stated from the directory's side (whose people, which rooms), never from how the cut is made.
"""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.config import parse_config
from provisioner.core.actions import (
    Action,
    CreateRoom,
    CreateUser,
    Join,
    Kick,
    LinkChild,
    LockUser,
    Plan,
    UnlinkChild,
    UpdateRoom,
)
from provisioner.core.desired import Desired, desired_state
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot, Person, Unit
from provisioner.core.reconcile import Observed, check_removals, previous_identities, reconcile
from provisioner.core.scope import ScopeError, UnitScope, resolve_unit, scope_plan, unit_scope
from tests.test_reconcile import CFG, POLICY, PROV, SERVER, empty, person, simulate

BASE = "dc=x"
UNITS = (
    Unit("ou:t", ("Департамент транспорта",), ROOT_UNIT),
    Unit("ou:t1", ("Департамент транспорта", "Отдел ЖКХ"), "ou:t"),
    Unit("ou:t2", ("Департамент транспорта", "Отдел учёта"), "ou:t"),
    Unit("ou:e", ("Департамент образования",), ROOT_UNIT),
    Unit("ou:e1", ("Департамент образования", "Отдел ЖКХ"), "ou:e"),
    Unit("ou:f", ("Департамент финансов",), ROOT_UNIT),
)
TRANSPORT = {"ou:t", "ou:t1", "ou:t2"}
TREE_CFG = parse_config({**CFG.raw, "layout": {"max_room_size": 6, "space_members": "tree"}})
TREE_POLICY = dataclasses.replace(POLICY, public_spaces=True)


# --- which unit a name means ------------------------------------------------------------------------------

RESOLVE = [
    ("Департамент транспорта", "ou:t"),
    ("ДЕПАРТАМЕНТ  транспорта", "ou:t"),  # any case, spaces collapsed
    ("департамент транс", "ou:t"),  # a unique start
    ("отдел учета", "ou:t2"),  # ё = е
    ("Департамент транспорта / Отдел ЖКХ", "ou:t1"),  # a path tells the two "Отдел ЖКХ" apart
    ("Департамент образования / отд", "ou:e1"),  # the last part may be cut short
    ("ou=Отдел ЖКХ,ou=Департамент образования,dc=x", "ou:e1"),  # a DN below the base
    ("OU=ОТДЕЛ ЖКХ, OU=Департамент транспорта, DC=X", "ou:t1"),
    ("ou:f", "ou:f"),  # a unit key
    ("f", "ou:f"),  # a bare OU anchor
]


@pytest.mark.parametrize(("query", "key"), RESOLVE)
def test_a_unit_is_found_as_people_type_it(query: str, key: str) -> None:
    assert resolve_unit(query, UNITS, BASE) == key


def test_an_ambiguous_start_lists_the_candidates_and_an_unknown_name_suggests() -> None:
    with pytest.raises(ScopeError) as e:
        resolve_unit("Отдел ЖКХ", UNITS, BASE)
    assert '"Департамент образования / Отдел ЖКХ"' in str(e.value)
    assert '"Департамент транспорта / Отдел ЖКХ"' in str(e.value)
    assert "fits several units" in str(e.value)
    with pytest.raises(ScopeError, match="fits several"):
        resolve_unit("Департамент", UNITS, BASE)
    with pytest.raises(ScopeError, match='"Департамент культуры": no such unit.*Департамент транспорта'):
        resolve_unit("Департамент культуры", UNITS, BASE)
    with pytest.raises(ScopeError, match="not below the base DN"):
        resolve_unit("ou=Департамент транспорта,dc=elsewhere", UNITS, BASE)
    with pytest.raises(ScopeError, match="no unit with people at that DN"):
        resolve_unit("ou=Нет такого,dc=x", UNITS, BASE)


def test_the_scope_is_the_subtree_within_the_onboarded_units() -> None:
    one = unit_scope(["Департамент транспорта"], None, UNITS, BASE, "Org")
    assert one is not None and one.units == TRANSPORT and not one.locks_everywhere
    two = unit_scope(["департамент транспорта", "Департамент фин"], None, UNITS, BASE, "Org")
    assert two is not None and two.units == TRANSPORT | {"ou:f"}
    assert unit_scope([], None, UNITS, BASE, "Org") is None  # the whole directory
    live = unit_scope([], ["Департамент транспорта"], UNITS, BASE, "Org")
    assert live is not None and live.units == TRANSPORT and live.locks_everywhere
    nobody = unit_scope([], [], UNITS, BASE, "Org")
    assert nobody is not None and nobody.units == frozenset()
    inner = unit_scope(["Департамент транспорта / Отдел ЖКХ"], ["Департамент транспорта"], UNITS, BASE, "O")
    assert inner is not None and inner.units == {"ou:t1"}
    with pytest.raises(ScopeError, match="Департамент финансов: not onboarded yet"):
        unit_scope(["Департамент финансов"], ["Департамент транспорта"], UNITS, BASE, "Org")
    with pytest.raises(ScopeError, match="layout.onboarded_units"):
        unit_scope([], ["Департамент культуры"], UNITS, BASE, "Org")


# --- the plan cut down to a department ---------------------------------------------------------------------


def staff(units: dict[int, str], disabled: frozenset[int] = frozenset()) -> list[Person]:
    return [dataclasses.replace(person(i, u), disabled=i in disabled) for i, u in sorted(units.items())]


START = {
    i: u for i, u in enumerate(["ou:t1"] * 5 + ["ou:t2"] * 3 + ["ou:t"] * 2 + ["ou:e1"] * 4 + ["ou:f"] * 3)
}
IN_TRANSPORT = {f"@user{i}:{SERVER}" for i, u in START.items() if u in TRANSPORT}


def full(people: list[Person], obs: Observed, units: tuple[Unit, ...] = UNITS) -> tuple[Plan, Desired]:
    s = DirectorySnapshot(tuple(people), units, (), True, None, len(people))
    prev, taken = previous_identities(s, obs, SERVER)
    rooms = {m: k for k, r in obs.rooms.items() if r.kind == "room" for m in r.members}
    desired = desired_state(
        s, TREE_CFG.layout_policy(), previous_localparts=prev, taken=taken | {"admin", "events", "boss"},
        previous_rooms=rooms,
    )  # fmt: skip
    return reconcile(desired, obs, s, TREE_POLICY, now=1000.0), desired


def cut(
    people: list[Person], obs: Observed, named: list[str], units: tuple[Unit, ...] = UNITS, onboarded=None
) -> Plan:
    """The scoped plan, the scope read from the directory as a run reads it."""
    plan, desired = full(people, obs, units)
    scope = unit_scope(named, onboarded, units, BASE, "Org")
    assert scope is not None
    protected = {PROV, POLICY.bot or "", *POLICY.exclude}
    return scope_plan(plan, scope, desired, obs, server_name=SERVER, protected=protected).plan


def room_unit(key: str) -> str:
    return key.rpartition("#")[0] if "#" in key else key


def rooms_of(a: Action) -> set[str]:
    keys = {getattr(a, k, None) for k in ("key", "room_key", "parent_key", "child_key")}
    return {room_unit(k) for k in keys if isinstance(k, str)}


def users_of(a: Action) -> set[str]:
    u = getattr(a, "user_id", None)
    return {u} if isinstance(u, str) else set()


TRANSPORT_SCOPE = UnitScope(frozenset(TRANSPORT), ("Департамент транспорта",))


def test_a_scoped_plan_is_the_departments_slice_of_the_full_plan() -> None:
    people = staff(START)
    whole, _ = full(people, empty())
    scoped = cut(people, empty(), ["Департамент транспорта"])
    # The slice, stated from the directory: the department's people and rooms, and the root space only for
    # the department's people (its creation, with power for nobody else, and its link).
    ours = [
        a for a in whole.actions if rooms_of(a) <= TRANSPORT and users_of(a) <= IN_TRANSPORT | {POLICY.bot}
    ]
    ours = [a for a in ours if a.kind != "save_registry"]  # its rows are checked below
    root_joins = [a for a in whole.actions if isinstance(a, Join) and a.room_key == ROOT_UNIT]
    ours += [a for a in root_joins if a.user_id in IN_TRANSPORT | {POLICY.bot}]
    ours += [a for a in whole.actions if isinstance(a, LinkChild) and a.child_key == "ou:t"]  # under the root
    rest = [a for a in scoped.actions if a not in ours]
    assert [a for a in ours if a not in scoped.actions] == []
    # Bookkeeping (registry rows of the department's people, rate limits) and the root space's creation.
    assert {a.kind for a in rest} <= {"save_registry", "exempt_rate_limit", "create_room", "update_room"}
    root = next(a for a in rest if isinstance(a, CreateRoom))
    full_root = next(a for a in whole.actions if isinstance(a, CreateRoom) and a.key == ROOT_UNIT)
    assert root.key == ROOT_UNIT and dataclasses.replace(full_root, power_users=root.power_users) == root
    assert {u for u, _ in root.power_users} <= IN_TRANSPORT | {PROV}
    assert sorted(map(repr, [a for a in scoped.actions if a in ours])) == sorted(map(repr, ours))
    created = {a.user_id for a in scoped.actions if isinstance(a, CreateUser)}
    assert created == IN_TRANSPORT
    registry = [row for a in scoped.actions if a.kind == "save_registry" for row in a.entries]  # type: ignore[union-attr]
    assert {f"@{lp}:{SERVER}" for _, lp, _, _ in registry} == IN_TRANSPORT


def test_a_scoped_sync_converges_the_department_and_touches_nothing_else() -> None:
    people = staff(START)
    synced = simulate(full(people, empty())[0], empty())
    assert full(people, synced)[0].actions == ()
    # A reorganisation of transport: "Отдел ЖКХ" dissolved into a new "Отдел развития", one person moved to
    # "Отдел учёта", one leaves. Meanwhile education disables someone and gets a hire: not this run's.
    units = (*UNITS[:1], *UNITS[2:], Unit("ou:t3", ("Департамент транспорта", "Отдел развития"), "ou:t"))
    moved = {i: ("ou:t3" if u == "ou:t1" else u) for i, u in START.items()} | {0: "ou:t2", 20: "ou:e1"}
    del moved[9]
    after = staff(moved, disabled=frozenset({11}))
    scoped = cut(after, synced, ["Департамент транспорта"], units)
    transport_now = IN_TRANSPORT - {f"@user{i}:{SERVER}" for i in (9,)}
    for a in scoped.actions:
        assert rooms_of(a) <= TRANSPORT | {"ou:t3", ROOT_UNIT}, a
        if rooms_of(a) == {ROOT_UNIT} and isinstance(a, Join | Kick):
            assert a.user_id in IN_TRANSPORT, a
        assert users_of(a) <= IN_TRANSPORT | {POLICY.bot}, a
    assert not any(isinstance(a, LockUser) and a.user_id == f"@user11:{SERVER}" for a in scoped.actions)
    assert [a.user_id for a in scoped.actions if isinstance(a, LockUser)] == [f"@user9:{SERVER}"]
    assert f"@user20:{SERVER}" not in {a.user_id for a in scoped.actions if isinstance(a, CreateUser)}
    # The dissolved unit's rooms hang under the department's space: they are emptied and unlinked.
    assert any(isinstance(a, UnlinkChild) and a.parent_key == "ou:t" for a in scoped.actions)
    assert any(isinstance(a, LinkChild) and a.child_key == "ou:t3" for a in scoped.actions)
    done = simulate(scoped, synced)
    remaining, _ = full(after, done, units)
    # Converged: whatever the full plan still wants is another department's (education's hire and lock).
    for a in remaining.actions:
        assert not rooms_of(a) & (TRANSPORT | {"ou:t3"}), a
        assert not users_of(a) & (transport_now | {f"@user9:{SERVER}"}), a
    assert {a.kind for a in remaining.actions} >= {"create_user", "lock_user"}
    # Untouched: every room outside transport (and the root space's members but transport's) as before.
    for key, room in synced.rooms.items():
        if room_unit(key) not in TRANSPORT | {ROOT_UNIT}:
            assert done.rooms[key] == room, key
    assert done.rooms[ROOT_UNIT].members - IN_TRANSPORT == synced.rooms[ROOT_UNIT].members - IN_TRANSPORT


def test_the_removal_threshold_is_a_share_of_the_scope() -> None:
    people = staff(START)
    synced = simulate(full(people, empty())[0], empty())
    gone = staff({i: u for i, u in START.items() if i not in (0, 1)})  # 2 of transport's 10 leave
    plan, desired = full(gone, synced)
    scoped = scope_plan(
        plan, TRANSPORT_SCOPE, desired, synced, server_name=SERVER, protected={PROV, POLICY.bot or ""}
    )
    assert scoped.people == len(IN_TRANSPORT)
    check = check_removals(scoped.plan, scoped.people, max_removals=100, max_percent=10, allow=None)
    assert check.people == 2 and not check.allowed  # 2 of 10 is over 10 %, though 2 of 17 would not be
    finance = UnitScope(frozenset({"ou:f"}), ("Департамент финансов",))
    other = scope_plan(plan, finance, desired, synced, server_name=SERVER, protected={PROV, POLICY.bot or ""})
    assert other.plan.removals() == 0


def test_onboarding_creates_nobody_outside_but_still_locks_leavers_with_an_account() -> None:
    people = staff(START)
    live = ["Департамент транспорта"]
    first = cut(people, empty(), [], onboarded=live)
    assert {a.user_id for a in first.actions if isinstance(a, CreateUser)} == IN_TRANSPORT
    assert {room_unit(a.key) for a in first.actions if isinstance(a, CreateRoom)} == TRANSPORT | {ROOT_UNIT}
    # Someone of finance got an account anyway (say, by logging in) and is then disabled: locked.
    obs = simulate(first, empty())
    hand_made = f"@user15:{SERVER}"
    obs = dataclasses.replace(
        obs,
        users={**obs.users, hand_made: dataclasses.replace(obs.users[PROV], user_id=hand_made, admin=False)},
    )
    second = cut(staff(START, disabled=frozenset({15})), obs, [], onboarded=live)
    assert [a.user_id for a in second.actions if isinstance(a, LockUser)] == [hand_made]
    assert not [a for a in second.actions if isinstance(a, CreateUser | CreateRoom)]
    # Onboarding a second department: the first one's rooms see nothing.
    third = cut(people, simulate(first, empty()), [], onboarded=[*live, "Департамент финансов"])
    assert all(not rooms_of(a) & TRANSPORT for a in third.actions), third.actions
    assert {room_unit(a.key) for a in third.actions if isinstance(a, CreateRoom)} == {"ou:f"}
    assert not [a for a in third.actions if isinstance(a, UpdateRoom) and a.key == ROOT_UNIT and a.name]


# --- the config key ---------------------------------------------------------------------------------------


def test_onboarded_units_is_a_list_of_names_or_null() -> None:
    from provisioner.config import ConfigError

    assert TREE_CFG.layout.onboarded_units is None
    cfg = parse_config({**CFG.raw, "layout": {"onboarded_units": [" Департамент транспорта ", "ou=A,dc=x"]}})
    assert cfg.layout.onboarded_units == ("Департамент транспорта", "ou=A,dc=x")
    assert parse_config({**CFG.raw, "layout": {"onboarded_units": []}}).layout.onboarded_units == ()
    for bad, why in (("Департамент", "must be a list"), ([""], "item 0"), ([3], "item 0")):
        with pytest.raises(ConfigError, match=why) as e:
            parse_config({**CFG.raw, "layout": {"onboarded_units": bad}})
        assert "layout.onboarded_units" in str(e.value)
