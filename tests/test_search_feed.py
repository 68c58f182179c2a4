"""What the sync leaves for the search service (pure rules of provisioner.search_feed, on plain data)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bridge.search.snapshot import read_snapshot
from provisioner.core.actions import CreateUser, LockUser, Plan, UnlockUser
from provisioner.core.desired import desired_state
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot, Person, Unit
from provisioner.core.reconcile import Observed, ObservedUser, SyncPolicy
from provisioner.search_feed import searchable, write_search_index
from tests.test_reconcile import CFG, PROV, SERVER

UNITS = (Unit("u:p", ("Префектура ЮАО",), ROOT_UNIT), Unit("u:z", ("Префектура ЮАО", "Отдел ЖКХ"), "u:p"))
POLICY = SyncPolicy(
    server_name=SERVER, provisioner=PROV, bot=f"@events:{SERVER}", exclude=frozenset({f"@boss:{SERVER}"})
)


def person(login: str, **kw) -> Person:
    return Person(anchor=f"a-{login}", login=login, dn=f"uid={login},dc=x", display_name=kw.pop("name", login.title()),
                  unit_key=kw.pop("unit", "u:z"), title=kw.pop("title", "Специалист"), **kw)  # fmt: skip


def world(people: list[Person]):
    snap = DirectorySnapshot(tuple(people), UNITS, (), True, None, len(people))
    desired = desired_state(snap, CFG.layout_policy(), taken={"admin", "events"})
    return snap, desired


def user(uid: str, *, locked: bool = False, deactivated: bool = False) -> ObservedUser:
    return ObservedUser(uid, None, False, deactivated, locked)


def test_only_reachable_people_are_listed_with_their_unit_path() -> None:
    people = [person("active"), person("hire"), person("failed"), person("leaving"), person("handlocked"),
              person("back"), person("gone"), person("disabled", disabled=True), person("boss")]  # fmt: skip
    snap, desired = world(people)
    uid = {p.login: f"@{desired.localparts[p.anchor]}:{SERVER}" for p in people}
    observed = Observed(
        users={uid["active"]: user(uid["active"]), uid["leaving"]: user(uid["leaving"]),
               uid["handlocked"]: user(uid["handlocked"], locked=True), uid["back"]: user(uid["back"], locked=True),
               uid["gone"]: user(uid["gone"], deactivated=True), uid["boss"]: user(uid["boss"]),
               uid["disabled"]: user(uid["disabled"])},
        rooms={}, registry={},
    )  # fmt: skip
    plan = Plan(
        actions=(CreateUser(uid["hire"], "a-hire", "Hire"), CreateUser(uid["failed"], "a-failed", "Failed"),
                 LockUser(uid["leaving"], "disabled"), UnlockUser(uid["back"])),
        fingerprint="x", created_at=0.0,
    )  # fmt: skip
    listed = {
        p.user_id: p for p in searchable(desired, observed, snap, plan, POLICY, failed_users={uid["failed"]})
    }
    assert set(listed) == {uid["active"], uid["hire"], uid["back"]}
    assert listed[uid["active"]].department == ("Префектура ЮАО", "Отдел ЖКХ")
    assert listed[uid["active"]].title == "Специалист"
    assert listed[uid["active"]].avatar_url is None and listed[uid["hire"]].avatar_url is None


def test_the_picture_is_the_one_the_account_has() -> None:
    people = [person("pictured")]
    snap, desired = world(people)
    (uid,) = desired.people
    seen = ObservedUser(uid, None, False, False, False, avatar_url="mxc://example.test/own")
    (listed,) = searchable(desired, Observed(users={uid: seen}, rooms={}, registry={}), snap,
                           Plan((), "x", 0.0), POLICY)  # fmt: skip
    assert listed.avatar_url == "mxc://example.test/own"


def test_an_untrusted_read_keeps_the_people_it_missed(tmp_path: Path) -> None:
    path = str(tmp_path / "search.json")
    people = [person("a"), person("b"), person("c")]
    snap, desired = world(people)
    everyone = searchable(desired, Observed(users={}, rooms={}, registry={}), snap,
                          Plan(tuple(CreateUser(u, p.anchor, p.display_name) for u, p in desired.people.items()), "x", 0.0),
                          POLICY)  # fmt: skip
    assert write_search_index(path, everyone, desired, trusted=True, now=1.0) == 3
    short_snap, short_desired = world(people[:1])
    short = [p for p in everyone if p.user_id in short_desired.people]
    # The read stopped early: b and c are not leavers, they stay findable.
    assert write_search_index(path, short, short_desired, trusted=False, now=2.0) == 3
    # A trusted read without them: they left (and are locked in the same run), so they are gone.
    assert write_search_index(path, short, short_desired, trusted=True, now=3.0) == 1
    when, listed = read_snapshot(path)
    assert when == 3.0 and [p.user_id for p in listed] == [short[0].user_id]
    assert dataclasses.asdict(listed[0]) == dataclasses.asdict(short[0])
