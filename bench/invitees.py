"""Benchmark: named attendees at scale in the bot's domain — 1,000 invitees across 50 events, by name.

    nice python bench/invitees.py                          # 25,000 people in the search index, 50 × 20
    nice python bench/invitees.py --people 5000 --events 10 --per-event 10   # quick check

What is measured is the service (``bridge.events.service``) over a real SQLite store and the real search
index built from a snapshot of the sample city (the generator the demo uses): every command goes through
``handle_message`` as the runtime calls it and commits its state and its outbox entries in one transaction.
Synapse is not involved — sending is the sender's business, measured by ``bench/bot.py`` — and the directory
port (power levels and profiles, read from Synapse in the bot) answers from memory.

Steps: the organiser creates ``--events`` events, each inviting ``--per-event`` people by their full name
(resolved through the search index); half of the invitees answer by command; the organiser nudges each
event (then again at once: nobody, the rate limit); the clock moves to the automatic nudge; in the check-in
window every invitee who said "going" checks in; each list is closed and exported. Printed: latency p50 /
p99 / max per step, and the counts that must hold — every invitation, nudge and check-in in the store or the
outbox exactly once (zero lost, zero doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge.bot.people import SnapshotPeople
from bridge.events.clock import ManualClock
from bridge.events.context import Person
from bridge.events.model import Invitation, MatrixEventID, Reply, RoomID, UserID
from bridge.events.outbox import decode
from bridge.events.service import EventService, Settings
from bridge.events.store import open_sqlite
from bridge.events.units import Unit
from bridge.search.index import SearchIndex
from bridge.search.snapshot import write_snapshot

MSK = ZoneInfo("Europe/Moscow")
ORGANISER = UserID("@organiser:example.test")
ROOM = RoomID("!council:example.test")


class MemoryDirectory:
    """The directory port answered from memory: the organiser moderates the room; names from the snapshot."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def power_level(self, room: RoomID, user: UserID) -> int:
        return 100 if user == ORGANISER else 0

    async def person(self, user: UserID, room: RoomID) -> Person:
        return Person(self.names.get(user, ""), "", "")

    async def units(self) -> list[Unit]:
        return []

    async def room_unit(self, room: RoomID) -> str | None:
        return None

    async def unit_rooms(self, unit: str, *, subunits: bool = True) -> list[RoomID]:
        return []

    async def members(self, room: RoomID) -> list[tuple[UserID, str]]:
        return []


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))] if s else 0.0


def row(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {pct(ms, 0.99):.1f} | {max(ms):.1f} |"


async def run(people_n: int, events_n: int, per_event: int) -> None:
    from search import sample_people  # bench/search.py: the sample city as the sync lists it for search

    people = sample_people(people_n)
    index = SearchIndex(people)
    # People whose full name finds only them: an organiser typing it gets no question back.
    unique = [
        p for p in people if [h.person.user_id for h in index.search(p.display_name, 2).hits] == [p.user_id]
    ]
    invitees = unique[: events_n * per_event]
    assert len(invitees) == events_n * per_event, f"only {len(unique)} people with a unique full name"
    names = {p.user_id: p.display_name for p in people}
    tmp = Path(tempfile.mkdtemp(prefix="bench-invitees-"))
    snap = tmp / "search.json"
    write_snapshot(snap, people, generated_at=1.0)
    store = open_sqlite(str(tmp / "bot.db"))
    await store.open()
    clock = ManualClock(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    svc = EventService(store, clock, Settings(MSK), MemoryDirectory(names), SnapshotPeople(snap))  # type: ignore[arg-type]
    n = 0
    lat: dict[str, list[float]] = {}

    async def say(step: str, sender: UserID, text: str) -> list[object]:
        nonlocal n
        n += 1
        t0 = time.perf_counter()
        eff = await svc.handle_message(ROOM, sender, MatrixEventID(f"$bench{n}"), text)
        lat.setdefault(step, []).append(time.perf_counter() - t0)
        return list(eff)

    await say("warm-up (index load)", ORGANISER, "!who Иванов")
    events: list[tuple[str, list[str]]] = []
    for e in range(events_n):
        group = invitees[e * per_event : (e + 1) * per_event]
        named = ", ".join(f'"{p.display_name}"' for p in group)
        eff = await say(f"create + invite {per_event} by name", ORGANISER,
                        f'!событие создать "Совещание {e}" 2026-12-10 {9 + e % 8}:00 до 2026-12-09 18:00 '
                        f"подразделение нет пригласить {named}")  # fmt: skip
        invited = [x for x in eff if isinstance(x, Invitation)]
        assert len(invited) == per_event, [x for x in eff if isinstance(x, Reply)]
        events.append((invited[0].event_id, [p.user_id for p in group]))
    going: list[tuple[str, str]] = []
    for eid, group in events:
        for u in group[: per_event // 2]:
            await say("answer (!иду)", UserID(u), f"!иду {eid}")
            going.append((eid, u))
    nudged = 0
    for eid, _ in events:
        eff = await say("nudge", ORGANISER, f"!событие напомнить {eid}")
        nudged += len([x for x in eff if isinstance(x, Invitation)])
        eff = await say("nudge again at once", ORGANISER, f"!событие напомнить {eid}")
        assert not [x for x in eff if isinstance(x, Invitation)]
    clock.set(datetime(2026, 12, 8, 15, 0, tzinfo=UTC))  # 24 h before the deadline (18:00 MSK)
    t0 = time.perf_counter()
    queued = await svc.queue_due_reminders()
    lat["automatic nudges queued (one look)"] = [time.perf_counter() - t0]
    clock.set(datetime(2026, 12, 10, 5, 50, tzinfo=UTC))  # 08:50 MSK: the first events' windows are open
    checked = 0
    for eid, u in going:
        ev = await store.get_event(eid)  # type: ignore[arg-type]
        assert ev is not None
        clock.set(ev.starts_at - timedelta(minutes=10))
        eff = await say("check-in (!пришёл)", UserID(u), f"!пришёл {eid}")
        checked += "Отметил" in " ".join(x.text.body for x in eff if isinstance(x, Reply))
    for eid, _ in events:
        ev = await store.get_event(eid)  # type: ignore[arg-type]
        clock.set(ev.starts_at + timedelta(hours=1))  # type: ignore[union-attr]
        await say("close the list", ORGANISER, f"!событие закрыть {eid}")
        await say("export (CSV + ics)", ORGANISER, f"!событие экспорт {eid}")

    outbox = [decode(p) for _, p in await store.outbox(limit=1_000_000)]
    kinds = Counter(("nudge" if "ещё не ответили" in x.text.body else "invitation")
                    for x in outbox if isinstance(x, Invitation))  # fmt: skip
    pairs = Counter(
        (x.event_id, x.user_id) for x in outbox if isinstance(x, Invitation) and "ещё не" not in x.text.body
    )
    stored_checkins = sum([len(await store.checkins(eid)) for eid, _ in events])  # type: ignore[arg-type]
    stored_invitees = sum([len(await store.invitees(eid)) for eid, _ in events])  # type: ignore[arg-type]
    await store.close()
    total = events_n * per_event
    unanswered = total - len(going)
    print(f"people in the index: {len(people)}, events: {events_n}, invitees: {total}\n")
    print("| step | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for name, xs in lat.items():
        print(row(name, xs))
    print()
    print(f"invitations in the outbox: {kinds['invitation']} (expected {total}), each (event, person) once: "
          f"{all(c == 1 for c in pairs.values())}")  # fmt: skip
    print(f"nudges: by command {nudged} + automatic {queued.nudges} = {kinds['nudge']} in the outbox "
          f"(expected {unanswered} + {unanswered})")  # fmt: skip
    print(f"invitees stored: {stored_invitees} (expected {total}); check-ins: {checked} answered, "
          f"{stored_checkins} stored (expected {len(going)})")  # fmt: skip
    ok = (kinds["invitation"] == total and kinds["nudge"] == 2 * unanswered == nudged + queued.nudges
          and stored_invitees == total and stored_checkins == checked == len(going))  # fmt: skip
    print("zero lost, zero doubled:", ok)
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--people", type=int, default=25_000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--per-event", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.people, args.events, args.per_event))


if __name__ == "__main__":
    main()
