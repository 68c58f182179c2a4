"""The watch's decisions (pure): interval, debounce and max delay with a moved clock; delta; fast locks."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.core.actions import LockUser, SaveRegistry
from provisioner.core.model import DirectorySnapshot
from provisioner.core.reconcile import ObservedUser, RegistryEntry
from provisioner.core.watch import (
    Decision,
    Roster,
    WatchPolicy,
    WatchState,
    decide,
    handled,
    keep_locked,
    leaver_locks,
    leavers,
    roster_trusted,
)
from tests.test_reconcile import POLICY, PROV, SERVER, UNITS, person

P = WatchPolicy(poll_seconds=1, debounce_seconds=2, max_delay_seconds=5, full_interval_seconds=100)


def run(checks):
    """Feed (time, token) checks; a run is 'done' right when it is decided. Returns the decisions."""
    state, out = WatchState(), []
    for now, token in checks:
        d, state = decide(state, token, now, P)
        out.append(d)
        if d in (Decision.FULL, Decision.CHANGES):
            state = handled(state, full=d is Decision.FULL, now=now)
    return out


def test_first_check_runs_a_full_sync_then_nothing_while_unchanged():
    assert run([(0, "a"), (1, "a"), (2, "a")]) == [Decision.FULL, Decision.NONE, Decision.NONE]


def test_a_change_waits_for_quiet_then_runs_once():
    got = run([(0, "a"), (1, "b"), (2, "b"), (3, "b"), (4, "b")])
    assert got == [Decision.FULL, Decision.WAIT, Decision.WAIT, Decision.CHANGES, Decision.NONE]


def test_a_burst_is_one_run_and_a_trickle_is_cut_at_max_delay():
    burst = run([(0, "a"), (1, "b"), (1.5, "c"), (2, "d"), (4, "d"), (5, "d")])
    assert burst.count(Decision.CHANGES) == 1
    trickle = run([(0, "a")] + [(t, f"t{t}") for t in range(1, 9)])
    assert trickle[1:6] == [Decision.WAIT] * 5 and trickle[6] == Decision.CHANGES  # t=6: 5 s after the first


def test_interval_runs_without_a_detector_and_unreachable_detector_never_triggers():
    got = run([(0, None), (50, None), (99, None), (100, None), (150, None)])
    assert got == [Decision.FULL, Decision.NONE, Decision.NONE, Decision.FULL, Decision.NONE]
    # A detector that comes back with another token after an outage is a change (things happened meanwhile).
    assert run([(0, "a"), (1, None), (2, "b"), (5, "b")])[-1] is Decision.CHANGES


def snap(people, complete=True):
    return DirectorySnapshot(tuple(people), UNITS, (), complete, None if complete else "limit", len(people))


def test_leavers_are_the_gone_and_the_newly_disabled():
    a = [person(i) for i in range(5)]
    before = Roster.of(snap(a))
    b = [
        a[0],
        dataclasses.replace(a[1], disabled=True),
        dataclasses.replace(a[2], title="Начальник"),
        a[3],
        person(9),
    ]  # a[4] left, a[1] disabled, person 9 hired
    assert leavers(before, Roster.of(snap(b))) == (("a004", "left the directory"),
                                                    ("a001", "disabled in the directory"))  # fmt: skip
    assert leavers(before, before) == ()
    # Already disabled before: not a leaver again; a re-enabled person is none either.
    again = Roster.of(snap(b))
    assert leavers(again, Roster.of(snap(a))) == (("a009", "left the directory"),)


def test_roster_trust_follows_the_rails():
    full = Roster(frozenset(f"a{i}" for i in range(100)), frozenset(), True)
    assert roster_trusted(full, 100, 0.9) == (True, None)
    short = Roster(frozenset(f"a{i}" for i in range(80)), frozenset(), True)
    ok, why = roster_trusted(short, 100, 0.9)
    assert not ok and "fewer than 90% of the last good read (100)" in why
    cut = Roster(full.present, frozenset(), False, "size limit")
    assert roster_trusted(cut, None, 0.9) == (False, "the directory read was incomplete (size limit)")


@pytest.mark.parametrize("trusted", [True, False])
def test_leaver_locks_keep_the_rails(trusted):
    people = [person(i) for i in range(4)]
    registry = {p.anchor: RegistryEntry(f"user{i}") for i, p in enumerate(people)}
    registry["a002"] = RegistryEntry("boss")  # excluded
    users = {
        f"@user{i}:{SERVER}": ObservedUser(f"@user{i}:{SERVER}", None, i == 1, False, i == 3)
        for i in range(4)
    }
    users[f"@boss:{SERVER}"] = ObservedUser(f"@boss:{SERVER}", None, False, False, False)
    leaving = tuple((p.anchor, "left the directory") for p in people)
    plan = leaver_locks(leaving, registry, users, POLICY, is_trusted=trusted, now=500.0)
    if trusted:
        # user1 is an admin, boss is excluded, user3 is already locked: only user0 is locked.
        assert plan.actions == (
            SaveRegistry((("a000", "user0", 500.0, None),)),
            LockUser(f"@user0:{SERVER}", "left the directory"),
        )
        assert plan.held_removals == 0
    else:
        assert plan.actions == () and plan.held_removals == 1
    assert PROV not in {getattr(a, "user_id", None) for a in plan.actions}


def test_keep_locked_drops_unlocks_and_stale_registry_entries_of_fast_locked_people():
    from provisioner.core.actions import Join, Plan, UnlockUser

    u1, u2 = f"@user1:{SERVER}", f"@user2:{SERVER}"
    plan = Plan(
        (
            SaveRegistry((("a001", "user1", None, None), ("a002", "user2", None, None))),
            UnlockUser(u1),
            UnlockUser(u2),
            Join("u:a#0", "room", u1),
        ),
        "fp",
        1.0,
    )
    kept = keep_locked(plan, {u1}, SERVER)
    assert kept.actions == (
        SaveRegistry((("a002", "user2", None, None),)),
        UnlockUser(u2),
        Join("u:a#0", "room", u1),
    )
    assert kept.fingerprint == "fp"
    assert keep_locked(plan, set(), SERVER) is plan
    only = Plan((SaveRegistry((("a001", "user1", None, None),)), UnlockUser(u1)), "fp", 1.0)
    assert keep_locked(only, {u1}, SERVER).actions == ()


def test_a_due_full_run_waits_while_one_is_running_and_changes_are_still_decided():
    state = WatchState(token="a", last_full_at=0)
    d, state = decide(state, "b", 200, P, full_running=True)  # the interval is over, a full run is going
    assert d is Decision.WAIT
    d, state = decide(state, "b", 203, P, full_running=True)
    assert d is Decision.CHANGES  # the leaver is not held behind the full run
    assert decide(state, "b", 204, P)[0] is Decision.FULL  # the due full run, once the other one is done


FB = dataclasses.replace(P, fallback_seconds=10)


def test_detection_that_cannot_work_is_told_once_then_reminded_and_reads_the_roster_on_its_interval():
    from provisioner.core.watch import Detection, Notice, detection

    d = Detection()
    steps = []
    for now, token, broken in [
        (0, None, "no contextCSN"),  # told, first read at once
        (1, None, "no contextCSN"),
        (9, None, None),  # unreachable meanwhile: still broken, the read is not due yet
        (10, None, "no contextCSN"),  # 10 s after the first read
        (99, None, "no contextCSN"),
        (100, None, "no contextCSN"),  # a full interval after it was told: reminded; read 1 s ago
        (105, "csn1", None),  # works again: one last read
        (106, "csn1", None),
    ]:
        d, notice, due = detection(d, token=token, broken=broken, now=now, policy=FB)
        steps.append((notice, due))
    assert steps == [
        (Notice.BROKEN, True),
        (Notice.NONE, False),
        (Notice.NONE, False),
        (Notice.NONE, True),
        (Notice.NONE, True),
        (Notice.REMIND, False),
        (Notice.RECOVERED, True),
        (Notice.NONE, False),
    ]
    assert d == Detection()


def test_a_working_or_unreachable_detector_never_starts_the_fallback():
    from provisioner.core.watch import Detection, Notice, detection

    for token in ("csn", None):
        d, notice, due = detection(Detection(), token=token, broken=None, now=5, policy=FB)
        assert (d, notice, due) == (Detection(), Notice.NONE, False)


def test_roster_changed_sees_any_difference_but_not_an_incomplete_read():
    from provisioner.core.watch import roster_changed

    base = Roster(frozenset({"a", "b"}), frozenset(), True)
    assert not roster_changed(base, Roster(frozenset({"a", "b"}), frozenset(), True))
    assert roster_changed(base, Roster(frozenset({"a", "b", "c"}), frozenset(), True))  # a hire
    assert roster_changed(base, Roster(frozenset({"a", "b"}), frozenset({"b"}), True))  # disabled
    assert roster_changed(
        Roster(frozenset({"a"}), frozenset({"a"}), True), Roster(frozenset({"a"}), frozenset(), True)
    )
    assert not roster_changed(base, Roster(frozenset({"a"}), frozenset(), False, "size limit"))
