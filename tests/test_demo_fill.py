"""The demo's first scope (pure): the banner's units first, then the full city converges from it."""

from __future__ import annotations

from provisioner.core.actions import DeactivateUser, Kick, LockUser, Plan, UnlinkChild
from provisioner.core.desired import desired_state
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot, Person, Unit
from provisioner.core.reconcile import Observed, previous_identities, reconcile, trusted
from provisioner.demo_fill import FIRST_READ, first_scope
from tests.test_reconcile import CFG, POLICY, SERVER, empty, person, simulate

# Capacity 4 (max_room_size 6, minus the provisioner's and the bot's seats): "big" and "huge" need two rooms.
UNITS = (
    Unit("u:dept", ("Департамент",), ROOT_UNIT),
    Unit("u:small", ("Департамент", "Отдел"), "u:dept"),
    Unit("u:big", ("Департамент", "Контакт-центр"), "u:dept"),
    Unit("u:huge", ("Префектура",), ROOT_UNIT),
    Unit("u:other", ("Префектура", "Отдел"), "u:huge"),
)
CAPACITY = CFG.layout_policy().max_room_size - CFG.layout_policy().reserved_seats
SIZES = {"u:dept": 1, "u:small": 3, "u:big": 6, "u:huge": 9, "u:other": 4}


def city() -> DirectorySnapshot:
    people: list[Person] = []
    for unit, n in SIZES.items():
        people += [person(len(people), unit) for _ in range(n)]
    people.append(person(len(people), "u:small", disabled=True))  # counts for no room, comes with its unit
    return DirectorySnapshot(tuple(people), UNITS, (), True, None, len(people))


def plan_for(snapshot: DirectorySnapshot, observed: Observed) -> Plan:
    previous, taken = previous_identities(snapshot, observed, SERVER)
    rooms = {m: k for k, r in observed.rooms.items() if r.kind == "room" for m in r.members}
    desired = desired_state(snapshot, CFG.layout_policy(), previous_localparts=previous,
                            taken=taken | {"admin", "events", "boss"}, previous_rooms=rooms)  # fmt: skip
    return reconcile(desired, observed, snapshot, POLICY, now=1000.0)


def logins(snapshot: DirectorySnapshot, unit: str) -> set[str]:
    return {p.login for p in snapshot.people if p.unit_key == unit}


def test_the_banner_units_whole_except_those_larger_than_a_room_as_an_incomplete_read() -> None:
    full = city()
    assert CAPACITY == 4
    one = next(iter(logins(full, "u:small")))
    head = sorted(logins(full, "u:huge"))[0]
    scoped = first_scope(full, {one, head}, CAPACITY)
    # The whole unit of a person named whose unit fits in a room; of a unit larger than that, only them.
    assert {p.login for p in scoped.people} == logins(full, "u:small") | {head}
    # Every unit is kept, so names and aliases are those of the full city; the read is never trusted.
    assert scoped.units == full.units
    assert not scoped.complete and scoped.stop_reason == FIRST_READ
    assert trusted(scoped, empty(), POLICY) == (False, f"the directory read was incomplete ({FIRST_READ})")
    # A whole unit comes with its disabled people (planned, never created: a leaver is the full sync's).
    assert first_scope(full, {one}, 100).people == tuple(p for p in full.people if p.unit_key == "u:small")


def test_the_full_sync_after_the_first_scope_takes_nothing_away_and_converges() -> None:
    full = city()
    named = sorted(logins(full, "u:big"))[:1] + sorted(logins(full, "u:small"))
    first = plan_for(first_scope(full, set(named), CAPACITY), empty())
    after_first = simulate(first, empty())
    rest = plan_for(full, after_first)
    # Neither run takes anything away: the first only adds, the full one only adds the rest.
    for plan in (first, rest):
        assert not [a for a in plan.actions if isinstance(a, Kick | LockUser | DeactivateUser | UnlinkChild)]
    assert first.held_removals == 0
    phased = simulate(rest, after_first)
    assert plan_for(full, phased).actions == ()
    direct = simulate(plan_for(full, empty()), empty())

    def shape(o: Observed) -> dict[str, tuple[str, str | None, int]]:
        return {k: (r.kind, r.name, len(r.members)) for k, r in o.rooms.items()}

    # The same rooms and spaces with the same names and sizes as a single full sync (a split unit's rooms
    # balanced the same way); only who sits in which of a split unit's rooms may differ.
    assert shape(phased) == shape(direct)
    assert set(phased.users) == set(direct.users)
    big_room = next(k for k, r in after_first.rooms.items() if r.kind == "room" and k.startswith("u:big"))
    assert after_first.rooms[big_room].members <= phased.rooms[big_room].members


def test_the_progress_line_counts_the_executors_actions_and_estimates_what_is_left() -> None:
    from provisioner.apply import Progress
    from provisioner.demo_fill import Fill

    now = [100.0]
    fill = Fill(CFG, clock=lambda: now[0])
    assert fill.line() == "filling in the rest of the city: reading the directory and the server…"
    bar = fill._counter(400)
    bar.began = 100.0
    for ok in [True] * 99 + [False]:
        bar.step(ok)
    now[0] = 110.0  # 100 actions in 10 s: 300 left at 10/s
    assert fill.line() == (
        "filling in the rest of the city: 100/400 actions (25 %), 10.0/s, about 30 s left, 1 failed"
    )
    now[0] = 200.0  # 1/s: 300 s left
    assert fill.line().endswith("1.0/s, about 5 min left, 1 failed")
    assert isinstance(fill.bar, Progress) and not fill.bar.enabled  # the executor's counter prints nothing
