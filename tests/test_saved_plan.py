"""A saved plan is what is checked (pure): digest, staleness, re-hashed edits and the rails on its actions."""

from __future__ import annotations

import dataclasses
import json

from provisioner.core.actions import Kick, LockUser, Plan
from provisioner.core.saved import rail_violations, saved_plan_problem
from tests.test_reconcile import BOT, PROV, empty, person, plan_for, simulate


def saved(plan: Plan) -> Plan:
    return Plan.from_json(plan.to_json())


def world():
    people = [person(i) for i in range(6)]
    obs = simulate(plan_for(people, empty()), empty())
    return people, obs


def test_unchanged_saved_plan_passes():
    people, obs = world()
    fresh = plan_for(people[:5], obs)  # one leaver: a lock and a kick
    assert any(isinstance(a, LockUser) for a in fresh.actions)
    assert saved_plan_problem(saved(fresh), plan_for(people[:5], obs)) is None


def test_plan_edited_in_the_file_is_refused_as_edited():
    people, obs = world()
    fresh = plan_for(people, obs)
    data = json.loads(fresh.to_json())
    data["actions"].append({"kind": "lock_user", "user_id": "@user3:example.test", "cause": "edited"})
    problem = saved_plan_problem(Plan.from_json(json.dumps(data)), plan_for(people, obs))
    assert problem is not None and "edited after it was made" in problem
    assert "nothing was applied" in problem


def test_edited_and_rehashed_plan_is_refused_by_comparison():
    people, obs = world()
    fresh = plan_for(people, obs)
    forged = dataclasses.replace(
        fresh, actions=(*fresh.actions, Kick("u:a#0", "room", "@user2:example.test", "x"))
    )
    problem = saved_plan_problem(saved(forged), plan_for(people, obs))  # the digest is recomputed: "valid"
    assert problem is not None and "edited" in problem and "differ" in problem


def test_plan_without_digest_is_refused():
    people, obs = world()
    data = json.loads(plan_for(people, obs).to_json())
    del data["digest"]
    problem = saved_plan_problem(Plan.from_json(json.dumps(data)), plan_for(people, obs))
    assert problem is not None and "no content digest" in problem


def test_changed_inputs_make_the_plan_stale():
    people, obs = world()
    old = saved(plan_for(people, obs))
    people[0] = person(0, title="Начальник отдела")
    problem = saved_plan_problem(old, plan_for(people, obs))
    assert problem is not None and "stale" in problem and "changed since" in problem


def test_rails_on_saved_actions():
    people, obs = world()
    actions = (
        LockUser("@boss:example.test", "x"),
        LockUser(PROV, "x"),
        Kick("u:a#0", "room", BOT, "x"),
        LockUser("@user1:example.test", "x"),
    )
    protected = frozenset({"@boss:example.test", PROV, BOT})
    found = rail_violations(
        actions, protected=protected, users=obs.users, is_trusted=True, why_untrusted=None
    )
    assert len(found) == 3 and all("never touches" in f for f in found)
    untrusted = rail_violations(
        actions[3:],
        protected=protected,
        users=obs.users,
        is_trusted=False,
        why_untrusted="read stopped early",
    )
    assert untrusted == ["1 removals although the directory read is not trusted (read stopped early)"]
    admin = dataclasses.replace(obs.users["@user1:example.test"], admin=True)
    users = {**obs.users, admin.user_id: admin}
    assert rail_violations(
        actions[3:], protected=protected, users=users, is_trusted=True, why_untrusted=None
    ) == ["lock_user of @user1:example.test, a server admin"]
