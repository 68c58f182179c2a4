"""Power levels follow the directory both ways (reconcile rule 8), pure and table-driven.

A head who stops being one, or leaves the room, is lowered; a level the provisioner did not give (set by
hand, changed by hand since, a server admin's, a service account's) never is; an untrusted read lowers
nobody; lowering is held by the removal threshold; one moderator level is shared by the sync and the bot.
"""

from __future__ import annotations

import dataclasses

import pytest

from bridge.cli import BotConfigError
from bridge.cli import parse_config as parse_bot_config
from provisioner.config import ConfigError, parse_config
from provisioner.core.actions import Plan, UpdateRoom
from provisioner.core.reconcile import ObservedUser, check_removals
from provisioner.core.saved import rail_violations
from tests.test_reconcile import BOT, PROV, SERVER, empty, person, plan_for, simulate

HEAD_DN = "uid=user0,ou=x,dc=x"
HEAD = f"@user0:{SERVER}"
STAFF = f"@user1:{SERVER}"


def team(*, head_is_head: bool = True):
    """user0 heads u:a while their staff name them as manager."""
    manager = HEAD_DN if head_is_head else None
    return [person(0)] + [person(i, manager_dn=manager) for i in range(1, 5)]


def synced():
    obs = simulate(plan_for(team(), empty()), empty())
    room = next(r for r in obs.rooms.values() if r.kind == "room")
    assert room.power_users.get(HEAD) == 50 and room.raised == {HEAD: 50}
    return obs, room.key


def lowered(plan: Plan) -> set[tuple[str, str]]:
    return {(a.key, u) for a in plan.actions if isinstance(a, UpdateRoom) for u, _ in a.lowered}


def with_room(obs, key, **changes):
    return dataclasses.replace(obs, rooms={**obs.rooms, key: dataclasses.replace(obs.rooms[key], **changes)})


def test_a_former_head_is_lowered_once_and_the_record_follows():
    obs, key = synced()
    plan = plan_for(team(head_is_head=False), obs)
    assert (key, HEAD) in lowered(plan)
    after = simulate(plan, obs)
    assert HEAD not in after.rooms[key].power_users and HEAD not in (after.rooms[key].raised or {})
    assert after.rooms[key].power_users.get(PROV) is None or after.rooms[key].power_users[PROV] == 100
    assert plan_for(team(head_is_head=False), after).actions == ()
    # Head again: raised again, and recorded again.
    again = simulate(plan_for(team(), after), after)
    assert again.rooms[key].power_users[HEAD] == 50 and again.rooms[key].raised == {HEAD: 50}


@pytest.mark.parametrize(
    ("case", "power", "raised", "admin", "expect_lowered"),
    [
        ("given by the provisioner, still at that level", {HEAD: 50}, {HEAD: 50}, False, True),
        ("set by hand: never recorded", {HEAD: 50}, {}, False, False),
        ("raised to 100 by hand since", {HEAD: 100}, {HEAD: 50}, False, False),
        ("a server admin", {HEAD: 50}, {HEAD: 50}, True, False),
        ("marker from before the record: a person at the moderator level", {HEAD: 50}, None, False, True),
        ("marker from before the record: another level", {HEAD: 40}, None, False, False),
        ("marker from before the record: not one of ours", {"@stranger:other": 50}, None, False, False),
        ("the bot, even if recorded", {BOT: 50}, {BOT: 50}, False, False),
    ],
)
def test_who_may_be_lowered(case, power, raised, admin, expect_lowered):
    obs, key = synced()
    obs = with_room(obs, key, power_users=power, raised=raised)
    if admin:
        obs = dataclasses.replace(obs, users={**obs.users, HEAD: ObservedUser(HEAD, "x", True, False, False)})
    who = next(iter(power))
    assert ((key, who) in lowered(plan_for(team(head_is_head=False), obs))) is expect_lowered, case


def test_a_head_who_left_the_room_loses_the_level_there():
    obs, key = synced()
    # The head moves to unit u:b: kicked from u:a's room, moderator nowhere (nobody names them manager there).
    people = [person(0, "u:b")] + [person(i) for i in range(1, 5)]
    plan = plan_for(people, obs)
    assert (key, HEAD) in lowered(plan)


def test_an_untrusted_read_lowers_nobody_and_counts_it_held():
    obs, key = synced()
    plan = plan_for(team(head_is_head=False), obs, complete=False)
    assert not lowered(plan) and plan.held_removals >= 1
    after = simulate(plan, obs)
    assert after.rooms[key].raised == {HEAD: 50}  # still the provisioner's to lower later


def test_lowering_is_held_by_the_threshold_and_a_saved_plan_is_checked():
    obs, _ = synced()
    plan = plan_for(team(head_is_head=False), obs)
    held = check_removals(plan, 5, max_removals=0, max_percent=100.0, allow=None)
    assert not held.allowed and held.people == 1 and "lower the power of 1 people" in (held.reason or "")
    assert check_removals(plan, 5, max_removals=0, max_percent=100.0, allow=1).allowed
    admin = {HEAD: ObservedUser(HEAD, "x", True, False, False)}
    broken = rail_violations(
        plan.actions, protected=frozenset(), users=admin, is_trusted=True, why_untrusted=None
    )
    assert any("never lowers" in b for b in broken)
    untrusted = rail_violations(
        plan.actions, protected=frozenset(), users={}, is_trusted=False, why_untrusted="x"
    )
    assert any("lowered although" in b for b in untrusted)


def test_the_marker_record_of_a_new_room_lists_the_moderators_only():
    plan = plan_for(team(), empty())
    creates = [a for a in plan.actions if a.kind == "create_room" and a.room_kind == "room"]
    # The team fills two rooms; the head sits (and moderates) in one.
    assert {r for c in creates for r in c.raised} == {(HEAD, 50)}  # type: ignore[union-attr]
    assert all(set(c.raised) <= set(c.power_users) for c in creates)  # type: ignore[union-attr]


BASE = {
    "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
    "directory": {
        "uri": "ldap://127.0.0.1:1",
        "bind_dn": "cn=x",
        "bind_password_env": "HOME",
        "base_dn": "dc=x",
    },
    "bot": {"user_id": BOT},
}


@pytest.mark.parametrize(
    ("layout", "bot", "level"),
    [
        ({}, {}, 50),
        ({"moderator_power_level": 40}, {}, 40),
        ({}, {"moderator_level": 60}, 60),  # the older name alone still sets both
        ({"moderator_power_level": 70}, {"moderator_level": 70}, 70),
    ],
)
def test_one_moderator_level_for_the_sync_and_the_bot(layout, bot, level):
    raw = {**BASE, "layout": layout, "bot": {**BASE["bot"], **bot}}
    assert parse_config(raw).layout.moderator_power_level == level
    assert parse_bot_config(raw, "/tmp/x.yaml", env={"CIVMATRIX_BOT_TOKEN": "t"}).moderator_level == level


def test_two_moderator_levels_that_disagree_are_refused_by_both():
    raw = {**BASE, "layout": {"moderator_power_level": 50}, "bot": {**BASE["bot"], "moderator_level": 60}}
    with pytest.raises(ConfigError, match=r"bot\.moderator_level.*must agree"):
        parse_config(raw)
    with pytest.raises(BotConfigError, match=r"bot\.moderator_level.*must agree"):
        parse_bot_config(raw, "/tmp/x.yaml", env={"CIVMATRIX_BOT_TOKEN": "t"})
    with pytest.raises(ConfigError, match=r"layout\.moderator_power_level.*1 to 99"):
        parse_config({**BASE, "layout": {"moderator_power_level": 100}})
