"""Reconcile (pure): table-driven rules, the removal threshold, and "re-planning after apply is empty"."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.config import parse_config
from provisioner.core.actions import (
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
    describe,
)
from provisioner.core.desired import desired_state
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot, Person, Unit
from provisioner.core.reconcile import (
    Observed,
    ObservedRoom,
    ObservedUser,
    RegistryEntry,
    SyncPolicy,
    check_removals,
    previous_identities,
    profile_hash,
    reconcile,
)

SERVER = "example.test"
PROV = f"@admin:{SERVER}"
BOT = f"@events:{SERVER}"
CFG = parse_config(
    {
        "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
        "directory": {
            "uri": "ldap://127.0.0.1:1",
            "bind_dn": "cn=x",
            "bind_password_env": "HOME",
            "base_dn": "dc=x",
        },
        "layout": {"max_room_size": 6, "space_members": "unit"},
        "exclude": [f"@boss:{SERVER}"],
        "bot": {"user_id": BOT},
    }
)
UNITS = (Unit("u:a", ("Отдел А",), ROOT_UNIT), Unit("u:b", ("Отдел Б",), ROOT_UNIT))
POLICY = SyncPolicy(
    server_name=SERVER,
    provisioner=PROV,
    bot=BOT,
    exclude=CFG.exclude,
    creator_in_power_levels=False,
    deactivate_after_seconds=100.0,
)


def person(i: int, unit: str = "u:a", **kw) -> Person:
    return Person(
        anchor=f"a{i:03d}",
        login=kw.pop("login", f"user{i}"),
        dn=f"uid=user{i},ou=x,dc=x",
        display_name=kw.pop("name", f"Сотрудник {i}"),
        unit_key=unit,
        sort_name=f"{i:03d}",
        title=kw.pop("title", "Специалист"),
        **kw,
    )


def snap(people, complete=True) -> DirectorySnapshot:
    return DirectorySnapshot(
        tuple(people), UNITS, (), complete, None if complete else "size limit", len(people)
    )


def empty() -> Observed:
    return Observed(users={PROV: ObservedUser(PROV, "admin", True, False, False)}, rooms={}, registry={})


def plan_for(people, observed, *, complete=True, now=1000.0, policy=POLICY) -> Plan:
    s = snap(people, complete)
    previous, taken = previous_identities(s, observed, SERVER)
    taken |= {"admin", "events", "boss"}
    rooms = {m: k for k, r in observed.rooms.items() if r.kind == "room" for m in r.members}
    desired = desired_state(
        s, CFG.layout_policy(), previous_localparts=previous, taken=taken, previous_rooms=rooms
    )
    return reconcile(desired, observed, s, policy, now=now)


def simulate(plan: Plan, observed: Observed, now: float = 1000.0) -> Observed:
    """What a server would look like after the plan: a pure model of each handler's effect."""
    users = dict(observed.users)
    rooms = {k: dataclasses.replace(r) for k, r in observed.rooms.items()}
    registry = dict(observed.registry)
    unlimited = set(observed.unlimited)
    n = len(rooms)
    for a in plan.actions:
        match a:
            case ExemptRateLimit(user_id=u):
                unlimited.add(u)
            case SaveRegistry(entries=entries):
                for anchor, lp, locked, prof in entries:
                    registry[anchor] = RegistryEntry(lp, locked, prof)
            case CreateUser(user_id=u, displayname=d):
                users[u] = ObservedUser(u, d, False, False, False)
            case UpdateUser(user_id=u, displayname=d):
                if d is not None:
                    users[u] = dataclasses.replace(users[u], displayname=d)
            case LockUser(user_id=u):
                users[u] = dataclasses.replace(users[u], locked=True)
            case UnlockUser(user_id=u):
                users[u] = dataclasses.replace(users[u], locked=False)
            case DeactivateUser(user_id=u):
                users[u] = dataclasses.replace(users[u], deactivated=True)
            case CreateRoom():
                n += 1
                rooms[a.key] = ObservedRoom(
                    f"!r{n}",
                    a.room_kind,
                    a.key,
                    a.name,
                    a.topic,
                    a.alias,
                    "public",
                    dict(a.power_users),
                    frozenset({PROV}),
                    frozenset(),
                    raised=dict(a.raised),
                    purpose=a.purpose,
                )
            case UpdateRoom():
                r = rooms[a.key]
                rooms[a.key] = dataclasses.replace(
                    r,
                    name=a.name if a.name is not None else r.name,
                    topic=a.topic if a.topic is not None else r.topic,
                    alias=a.alias if a.alias is not None else r.alias,
                    join_rule=a.join_rule if a.join_rule is not None else r.join_rule,
                    history_visibility=a.history_visibility or r.history_visibility,
                    power_users=dict(a.power_users) if a.power_users is not None else r.power_users,
                    raised=dict(a.raised) if a.raised is not None else r.raised,
                )
            case LinkChild(parent_key=p, child_key=c):
                rooms[p] = dataclasses.replace(rooms[p], children=rooms[p].children | {rooms[c].room_id})
            case UnlinkChild(parent_key=p, child_room_id=c):
                rooms[p] = dataclasses.replace(rooms[p], children=rooms[p].children - {c})
            case Join(room_key=k, user_id=u):
                rooms[k] = dataclasses.replace(rooms[k], members=rooms[k].members | {u})
            case Kick(room_key=k, user_id=u):
                rooms[k] = dataclasses.replace(rooms[k], members=rooms[k].members - {u})
    return Observed(
        users=users,
        rooms=rooms,
        registry=registry,
        last_good_count=observed.last_good_count,
        unlimited=frozenset(unlimited),
    )


def kinds(plan: Plan) -> dict[str, int]:
    return plan.counts()


def test_first_plan_creates_everything_and_replanning_is_empty():
    people = [person(i, "u:a" if i % 3 else "u:b") for i in range(14)]
    obs = empty()
    plan = plan_for(people, obs)
    assert kinds(plan)["create_user"] == 14
    assert isinstance(plan.actions[0], SaveRegistry)  # recorded before any account exists (rule 5)
    after = simulate(plan, obs)
    assert all(len(r.members) <= 6 for r in after.rooms.values())
    assert plan_for(people, after).actions == ()


def test_world_readable_rooms_of_older_servers_become_members_only():
    people = [person(i, "u:a" if i % 3 else "u:b") for i in range(14)]
    synced = simulate(plan_for(people, empty()), empty())
    # What servers synced before issue 12 have: spaces anyone with the room ID could read.
    older = dataclasses.replace(synced, rooms={
        k: dataclasses.replace(r, history_visibility="world_readable" if r.kind == "space" else "shared")
        for k, r in synced.rooms.items()
    })  # fmt: skip
    plan = plan_for(people, older)
    updates = [a for a in plan.actions if isinstance(a, UpdateRoom)]
    spaces = {k for k, r in older.rooms.items() if r.kind == "space"}
    assert {a.key for a in updates} == spaces and len(updates) == len(spaces)
    assert {(a.history_visibility, a.name, a.join_rule) for a in updates} == {("shared", None, None)}
    assert "history visibility" in describe(updates[0])
    assert plan_for(people, simulate(plan, older)).actions == ()


def test_leaver_locked_then_deactivated_after_grace_and_removed_from_rooms():
    people = [person(i) for i in range(5)]
    obs = simulate(plan_for(people, empty()), empty())
    leaver = "@user0:example.test"
    plan = plan_for(people[1:], obs, now=1000.0)
    assert LockUser(leaver, "left the directory") in plan.actions
    assert any(isinstance(a, Kick) and a.user_id == leaver for a in plan.actions)
    obs2 = simulate(plan, obs, now=1000.0)
    assert not any(isinstance(a, DeactivateUser) for a in plan_for(people[1:], obs2, now=1050.0).actions)
    late = plan_for(people[1:], obs2, now=1101.0)
    assert [a for a in late.actions if isinstance(a, DeactivateUser)] == [DeactivateUser(leaver, 1000.0)]


def test_newcomer_with_a_leavers_login_gets_a_new_account_not_the_leavers():
    # The leaver's locked account keeps their rooms and messages; a newcomer (or the same person back
    # under a new anchor) with the same login must neither inherit it nor be locked with it.
    people = [person(i) for i in range(3)]
    obs = simulate(plan_for(people, empty()), empty())
    newcomer = person(7, login="user0")
    plan = plan_for([*people[1:], newcomer], obs)
    created = [a for a in plan.actions if isinstance(a, CreateUser)]
    assert [a.anchor for a in created] == ["a007"]
    assert created[0].user_id.startswith("@user0-") and created[0].user_id != "@user0:example.test"
    assert LockUser("@user0:example.test", "left the directory") in plan.actions
    assert not any(isinstance(a, UpdateUser) and a.user_id == "@user0:example.test" for a in plan.actions)
    after = simulate(plan, obs)
    assert plan_for([*people[1:], newcomer], after).actions == ()


def test_returning_person_unlocked_only_if_we_locked_them():
    people = [person(i) for i in range(3)]
    obs = simulate(plan_for(people, empty()), empty())
    obs = simulate(plan_for(people[1:], obs), obs)
    assert obs.users["@user0:example.test"].locked
    back = plan_for(people, obs)
    assert UnlockUser("@user0:example.test") in back.actions
    # Locked by an admin by hand (no lock date in the registry): stays locked.
    manual = dataclasses.replace(obs, registry={**obs.registry, "a000": RegistryEntry("user0", None, None)})
    assert not any(isinstance(a, UnlockUser) for a in plan_for(people, manual).actions)


def test_untrusted_read_removes_nobody_but_still_adds():
    people = [person(i) for i in range(6)]
    obs = simulate(plan_for(people, empty()), empty())
    newcomer = person(50)
    plan = plan_for([*people[:2], newcomer], obs, complete=False)
    assert not any(isinstance(a, LockUser | Kick | DeactivateUser) for a in plan.actions)
    assert plan.held_removals >= 4
    assert any(isinstance(a, CreateUser) and a.anchor == "a050" for a in plan.actions)
    short = dataclasses.replace(obs, last_good_count=6)
    plan2 = plan_for(people[:4], short)  # 4 of 6 < 90 %
    assert not any(isinstance(a, LockUser | Kick) for a in plan2.actions)
    assert plan2.notes and "fewer than" in plan2.notes[0]


def test_excluded_admin_and_unmanaged_never_touched():
    people = [person(1, login="boss"), person(2)]
    obs = empty()
    stranger = f"@stranger:{SERVER}"
    obs = dataclasses.replace(
        obs, users={**obs.users, stranger: ObservedUser(stranger, "x", False, False, False)}
    )
    first = plan_for(people, obs)
    assert not any(getattr(a, "user_id", None) in (f"@boss:{SERVER}", stranger) for a in first.actions)
    after = simulate(first, obs)
    room = next(k for k, r in after.rooms.items() if r.kind == "room")
    after.rooms[room] = dataclasses.replace(after.rooms[room], members=after.rooms[room].members | {stranger})
    assert not any(isinstance(a, Kick) and a.user_id == stranger for a in plan_for(people, after).actions)
    # A directory person who is a server admin is never locked.
    admin_person = f"@user2:{SERVER}"
    admins = dataclasses.replace(
        after, users={**after.users, admin_person: ObservedUser(admin_person, "x", True, False, False)}
    )
    assert not any(isinstance(a, LockUser) for a in plan_for(people[:1], admins).actions)


def test_disabled_newcomer_gets_no_account_and_disabled_member_is_locked():
    people = [person(1), person(2, disabled=True)]
    plan = plan_for(people, empty())
    assert [a.user_id for a in plan.actions if isinstance(a, CreateUser)] == [f"@user1:{SERVER}"]
    obs = simulate(plan_for([person(1), person(2)], empty()), empty())
    again = plan_for(people, obs)
    assert LockUser(f"@user2:{SERVER}", "disabled in the directory") in again.actions


def test_move_is_not_a_removal_but_a_leave_is():
    people = [person(i) for i in range(20)]
    obs = simulate(plan_for(people, empty()), empty())
    moved = [dataclasses.replace(p, unit_key="u:b") if p.anchor in ("a001", "a002") else p for p in people]
    plan = plan_for(moved, obs)
    check = check_removals(plan, 20, max_removals=500, max_percent=5.0, allow=None)
    assert check.people == 0 and check.allowed
    gone = plan_for(people[3:], obs)
    check = check_removals(gone, 20, max_removals=500, max_percent=5.0, allow=None)
    assert check.people == 3 and not check.allowed and "--allow-removals 3" in (check.reason or "")
    assert check_removals(gone, 20, max_removals=500, max_percent=5.0, allow=3).allowed
    assert not check_removals(gone, 20, max_removals=2, max_percent=100.0, allow=None).allowed


def test_profile_change_and_rename_are_single_updates():
    people = [person(1)]
    obs = simulate(plan_for(people, empty()), empty())
    changed = [dataclasses.replace(people[0], display_name="Новое Имя", title="Начальник отдела")]
    plan = plan_for(changed, obs)
    updates = [a for a in plan.actions if isinstance(a, UpdateUser)]
    assert len(updates) == 1 and updates[0].displayname == "Новое Имя"
    assert dict(updates[0].profile)["title"] == "Начальник отдела"
    assert any(
        isinstance(a, SaveRegistry) and a.entries[0][3] == profile_hash(changed[0]) for a in plan.actions
    )


def test_a_field_edited_by_hand_is_put_back_on_a_full_read():
    people = [person(1, phone="+7 495 111-22-33")]
    obs = simulate(plan_for(people, empty()), empty())
    uid = f"@user1:{SERVER}"
    # The person overwrote the title the sync wrote; the registry hash alone cannot see it.
    edited = (("title", "Министр"), ("department", None), ("phone", "+7 495 111-22-33"), ("email", None))
    assert not [a for a in plan_for(people, obs).actions if isinstance(a, UpdateUser)]
    plan = plan_for(people, dataclasses.replace(obs, profiles={uid: edited}))
    updates = [a for a in plan.actions if isinstance(a, UpdateUser)]
    assert len(updates) == 1 and dict(updates[0].profile)["title"] == "Специалист"
    # A profile that already matches costs nothing.
    same = (("title", "Специалист"), ("department", None), ("phone", "+7 495 111-22-33"), ("email", None))
    assert not plan_for(people, dataclasses.replace(obs, profiles={uid: same})).actions


def test_space_tree_everyone_in_their_spaces_and_spaces_stay_public():
    cfg = parse_config({**CFG.raw, "layout": {"max_room_size": 6, "space_members": "tree"}})
    policy = dataclasses.replace(POLICY, public_spaces=True)
    units = (*UNITS, Unit("u:a1", ("Отдел А", "Сектор 1"), "u:a"))
    people = [person(i, "u:a1" if i % 2 else "u:b") for i in range(14)]

    def plan(obs: Observed) -> Plan:
        s = DirectorySnapshot(tuple(people), units, (), True, None, len(people))
        prev, taken = previous_identities(s, obs, SERVER)
        rooms = {m: k for k, r in obs.rooms.items() if r.kind == "room" for m in r.members}
        desired = desired_state(
            s,
            cfg.layout_policy(),
            previous_localparts=prev,
            taken=taken | {"admin", "events", "boss"},
            previous_rooms=rooms,
        )
        return reconcile(desired, obs, s, policy, now=1000.0)

    first = plan(empty())
    after = simulate(first, empty())
    spaces = {k: r for k, r in after.rooms.items() if r.kind == "space"}
    rooms = [r for r in after.rooms.values() if r.kind == "room"]
    sector = {f"@user{i}:{SERVER}" for i in range(1, 14, 2)}
    # The 7-person sector is split over two rooms, and still everyone is in its space and the one above.
    assert len([r for r in rooms if r.key.startswith("u:a1#")]) == 2
    assert sector <= spaces["u:a1"].members and sector <= spaces["u:a"].members
    assert {f"@user{i}:{SERVER}" for i in range(14)} <= spaces[ROOT_UNIT].members
    assert all(r.join_rule == "public" for r in spaces.values())
    assert all(r.join_rule == "invite" for r in rooms) and all(len(r.members) <= 6 for r in rooms)
    assert plan(after).actions == ()
    # A space closed earlier (unit mode) is opened, not recreated.
    closed = dataclasses.replace(
        after, rooms={**after.rooms, "u:a": dataclasses.replace(spaces["u:a"], join_rule="invite")}
    )
    assert [(a.key, a.join_rule) for a in plan(closed).actions if isinstance(a, UpdateRoom)] == [
        ("u:a", "public")
    ]


def test_service_accounts_are_exempted_from_rate_limits_once():
    # Synapse's default limits (0.2 messages/s) would stretch one event's reminders over minutes.
    obs = dataclasses.replace(
        empty(), users={**empty().users, BOT: ObservedUser(BOT, "Events", False, False, False)}
    )
    plan = plan_for([person(1)], obs)
    exempt = [a for a in plan.actions if isinstance(a, ExemptRateLimit)]
    assert [a.user_id for a in exempt] == [PROV, BOT]
    assert plan.actions.index(exempt[0]) < min(
        i for i, a in enumerate(plan.actions) if isinstance(a, CreateUser | Join)
    )
    after = simulate(plan, obs)
    assert after.unlimited == {PROV, BOT}
    assert plan_for([person(1)], after).actions == ()
    # A bot account that does not exist (yet) is not asked about; the sync after its creation exempts it.
    assert [a.user_id for a in plan_for([person(1)], empty()).actions if isinstance(a, ExemptRateLimit)] == [
        PROV
    ]


def test_unit_moved_under_another_parent_leaves_the_old_one():
    people = [person(i, "u:a" if i % 2 else "u:b") for i in range(6)]
    obs = simulate(plan_for(people, empty()), empty())
    moved = (UNITS[0], Unit("u:b", ("Отдел А", "Отдел Б"), "u:a"))
    s = DirectorySnapshot(tuple(people), moved, (), True, None, len(people))
    previous, taken = previous_identities(s, obs, SERVER)
    rooms = {m: k for k, r in obs.rooms.items() if r.kind == "room" for m in r.members}
    desired = desired_state(s, CFG.layout_policy(), previous_localparts=previous, taken=taken | {"admin", "events", "boss"},
                            previous_rooms=rooms)  # fmt: skip
    plan = reconcile(desired, obs, s, POLICY, now=1000.0)
    space_b = obs.rooms["u:b"].room_id
    assert LinkChild("u:a", "u:b", "space") in plan.actions
    assert UnlinkChild(ROOT_UNIT, space_b) in plan.actions
    after = simulate(plan, obs)
    assert reconcile(desired, after, s, POLICY, now=1000.0).actions == ()


def test_plan_json_roundtrip():
    plan = plan_for([person(i) for i in range(7)], empty())
    assert any(isinstance(a, ExemptRateLimit) for a in plan.actions)
    assert Plan.from_json(plan.to_json()) == plan


ops = st.lists(
    st.tuples(st.sampled_from(["hire", "leave", "move", "rename", "disable", "enable"]), st.integers(0, 40)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 25), ops)
def test_replanning_after_apply_is_empty_under_churn(n, changes):
    people = {i: person(i, "u:a" if i % 2 else "u:b") for i in range(n)}
    obs = simulate(plan_for(list(people.values()), empty()), empty())
    next_id = 100
    for op, x in changes:
        keys = sorted(people)
        if op == "hire":
            people[next_id] = person(next_id, "u:a")
            next_id += 1
        elif keys and op == "leave":
            people.pop(keys[x % len(keys)])
        elif keys and op == "move":
            k = keys[x % len(keys)]
            people[k] = dataclasses.replace(
                people[k], unit_key="u:b" if people[k].unit_key == "u:a" else "u:a"
            )
        elif keys and op == "rename":
            k = keys[x % len(keys)]
            people[k] = dataclasses.replace(people[k], display_name=f"Имя {x}")
        elif keys and op in ("disable", "enable"):
            k = keys[x % len(keys)]
            people[k] = dataclasses.replace(people[k], disabled=op == "disable")
    plan = plan_for(list(people.values()), obs, now=2000.0)
    after = simulate(plan, obs, now=2000.0)
    assert plan_for(list(people.values()), after, now=2000.0).actions == ()
    for r in after.rooms.values():
        assert len(r.members) <= 6
