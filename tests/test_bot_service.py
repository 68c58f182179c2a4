"""The service over a real store (SQLite file and a PostgreSQL cluster the tests start), with a manual clock and a
fake directory.

The directory is the only fake: it stands in for power levels and profiles, which the live test reads from Synapse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.events.clock import ManualClock
from bridge.events.model import (
    Announce,
    DirectMessage,
    DirectUpload,
    EndPoll,
    EventID,
    MatrixEventID,
    Reply,
    RoomID,
    RoomNotice,
    UpdateTally,
    Upload,
    UserID,
)
from bridge.events.outbox import decode, encode
from bridge.events.service import REMINDER_AHEAD, EventService, Person, Settings
from bridge.events.store import (
    DeadLetter,
    DeleteOutbox,
    PutOutbox,
    SetPoll,
    Store,
    open_postgres,
    open_sqlite,
)
from bridge.events.units import Unit
from tests.fixtures.postgres import drop_schema, pg_schema

MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
ROOM = RoomID("!dept:x")
ROOM2 = RoomID("!dept2:x")
MOD = UserID("@boss:x")


class FakeDirectory:
    """Units as the space tree would give them: "Финансы" with a sub-unit "Финансы / Налоги"."""

    def __init__(self) -> None:
        self.levels: dict[tuple[RoomID, UserID], int] = {(ROOM, MOD): 100, (ROOM2, MOD): 50}
        self.tree = [Unit("ou:fin", ("Финансы",)), Unit("ou:tax", ("Финансы", "Налоги"))]
        self.rooms: dict[str, list[RoomID]] = {"ou:fin": [ROOM], "ou:tax": [ROOM2]}
        self.joined: dict[RoomID, list[UserID]] = {}

    async def power_level(self, room: RoomID, user: UserID) -> int:
        return self.levels.get((room, user), 0)

    async def person(self, user: UserID, room: RoomID) -> Person:
        return Person(user[1:].split(":")[0].title(), "dept" if room == ROOM else "dept2", "")

    async def units(self) -> list[Unit]:
        return self.tree

    async def room_unit(self, room: RoomID) -> str | None:
        return next((k for k, rs in self.rooms.items() if room in rs), None)

    async def unit_rooms(self, unit: str, *, subunits: bool = True) -> list[RoomID]:
        keys = [
            u.key for u in self.tree if u.key == unit or (subunits and u.key == "ou:tax" and unit == "ou:fin")
        ]
        return sorted(r for k in keys for r in self.rooms.get(k, []))

    async def members(self, room: RoomID) -> list[tuple[UserID, str]]:
        return [(u, u[1:].split(":")[0].title()) for u in self.joined.get(room, [])]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = open_sqlite(str(tmp_path / "bot.db"))
    else:
        # Asked for only here, so the SQLite variants do not start the cluster.
        dsn: str = request.getfixturevalue("pg_dsn")
        schema = pg_schema()
        s = open_postgres(dsn, schema=schema)
    await s.open()
    yield s
    await s.close()
    if request.param == "postgres":
        drop_schema(dsn, schema)


_n = 0


def mid() -> MatrixEventID:
    global _n
    _n += 1
    return MatrixEventID(f"$e{_n}")


async def make(store: Store, **kw: object) -> tuple[EventService, ManualClock]:
    clock = ManualClock(T0)
    return EventService(store, clock, Settings(MSK, **kw), FakeDirectory()), clock  # type: ignore[arg-type]


def only(effects: list[object], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


def said(effects: list[object]) -> list[object]:
    """The messages to people, without the announcement edits (UpdateTally) that every change brings."""
    return [e for e in effects if not isinstance(e, UpdateTally)]


async def create(svc: EventService, text: str, room: RoomID = ROOM) -> str:
    effects = await svc.handle_message(room, MOD, mid(), text)
    ann = only(effects, Announce)
    assert ann, effects
    for a in ann:
        assert isinstance(a, Announce)
        await svc.poll_posted(a.event_id, a.room_id, MatrixEventID(f"$poll-{a.event_id}-{a.room_id}"))
    assert isinstance(ann[0], Announce)
    return ann[0].event_id


async def test_full_flow(store: Store) -> None:
    svc, clock = await make(store)
    eid = await create(svc, '!событие создать "Совещание <b>" завтра 15:00 место "каб. 301" вместимость 2')
    ev = await store.get_event(eid)  # type: ignore[arg-type]
    assert ev is not None and ev.title == "Совещание <b>" and ev.capacity == 2 and len(eid) == 5
    poll = f"$poll-{eid}-{ROOM}"
    # Poll, reaction and command all feed one list.
    first = await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), poll, ["going"])
    assert first == [UpdateTally(eid, ROOM)]  # type: ignore[arg-type]  # nothing said; the count edited
    assert said(await svc.handle_reaction(ROOM, UserID("@b:x"), mid(), poll, "✅️")) == []
    eff = await svc.handle_message(ROOM, UserID("@c:x"), mid(), f"!иду {eid}")
    assert "листе ожидания" in eff[0].text.body  # type: ignore[union-attr]
    # A waitlisted poll voter is told by DM, since the poll cannot show it.
    eff = said(await svc.handle_poll_response(ROOM, UserID("@d:x"), mid(), poll, ["going"]))
    assert [type(e) for e in eff] == [DirectMessage]
    # ... as urgently as a reply in the room (not behind reminders), and it survives the outbox.
    assert isinstance(eff[0], DirectMessage) and eff[0].answer and decode(encode(eff[0])) == eff[0]
    # @a cancels: @c (first on the waitlist) is promoted and told.
    eff = said(await svc.handle_reaction(ROOM, UserID("@a:x"), mid(), poll, "❌"))
    assert [(type(e), getattr(e, "user_id", None)) for e in eff] == [(DirectMessage, "@c:x")]
    assert not eff[0].answer  # type: ignore[union-attr]  # news for @c, not an answer to them
    eff = await svc.handle_message(ROOM, UserID("@e:x"), mid(), "!event show")
    body = eff[0].text.body  # type: ignore[union-attr]
    assert "Going: 2 — B, C" in body and "Waitlist: 1 — D" in body and "Not going: 1 — A" in body
    # Export: CSV + ICS uploaded to the room.
    eff = await svc.handle_message(ROOM, MOD, mid(), f"!event export {eid}")
    up = only(eff, Upload)[0]
    assert isinstance(up, Upload) and [a.filename for a in up.attachments] == [
        f"{eid}-attendance.csv",
        f"{eid}.ics",
    ]
    csv_text = up.attachments[0].data.decode("utf-8-sig")
    assert csv_text.count("\r\n") == 5 and "@c:x" in csv_text
    # Reminders at 24 h and 1 h, once each, survive a new service instance (restart).
    clock.set(ev.starts_at - timedelta(hours=24))
    items = await svc.due_reminders()
    assert sorted(d.effect.user_id for d in items if isinstance(d.effect, DirectMessage)) == ["@b:x", "@c:x"]
    assert len([d for d in items if isinstance(d.effect, RoomNotice)]) == 1
    for d in items:
        await svc.mark_sent(d)
    svc2 = EventService(store, clock, svc.settings, svc.directory)
    assert await svc2.due_reminders() == []
    assert await svc2.next_reminder_at() == ev.starts_at - timedelta(hours=1)
    # Cancel: everyone who answered is told, the poll is closed, reminders stop.
    eff = await svc2.handle_message(ROOM, MOD, mid(), f"!событие отменить {eid}")
    told = sorted(e.user_id for e in eff if isinstance(e, DirectMessage))
    assert told == ["@a:x", "@b:x", "@c:x", "@d:x"]
    assert only(eff, EndPoll) and only(eff, RoomNotice)
    clock.set(ev.starts_at - timedelta(minutes=30))
    assert await svc2.due_reminders() == []
    eff = await svc2.handle_message(ROOM, UserID("@f:x"), mid(), f"!going {eid}")
    assert "cancelled" in eff[0].text.body  # type: ignore[union-attr]


async def test_unprivileged_and_bad_input_store_nothing(store: Store) -> None:
    svc, _ = await make(store)
    eff = await svc.handle_message(ROOM, UserID("@nobody:x"), mid(), '!event create "X" tomorrow 3pm')
    assert len(eff) == 1 and isinstance(eff[0], Reply) and "moderators" in eff[0].text.body
    for bad in ['!event create "X" 2020-01-01 10:00', '!event create "X" tomorrow 3pm capacity 0',
                '!event create "' + "a" * 201 + '" tomorrow 3pm', '!event create "X" tomorrow 3pm deadline 2026-12-31']:  # fmt: skip
        eff = await svc.handle_message(ROOM, MOD, mid(), bad)
        assert len(eff) == 1 and isinstance(eff[0], Reply)
    assert await store.event_ids() == frozenset()
    eff = await svc.handle_message(ROOM, MOD, mid(), "!event nonsense")
    assert "Unknown command" in eff[0].text.body  # type: ignore[union-attr]
    assert await svc.handle_message(ROOM, MOD, mid(), "just chatting") == []


async def test_deadline_refuses(store: Store) -> None:
    svc, clock = await make(store)
    eid = await create(svc, '!event create "X" 2026-12-03 15:00 deadline 2026-12-01 18:00')
    clock.set(datetime(2026, 12, 1, 18, 0, tzinfo=MSK))
    eff = await svc.handle_message(ROOM, UserID("@a:x"), mid(), f"!going {eid}")
    assert "closed" in eff[0].text.body  # type: ignore[union-attr]
    eff = await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    assert isinstance(eff[0], DirectMessage) and "closed" in eff[0].text.body
    assert await store.answers(eid) == []  # type: ignore[arg-type]


async def test_unit_audience_one_list(store: Store) -> None:
    svc, _ = await make(store)
    eid = await create(svc, '!event create "Unit day" tomorrow 3pm audience финансы private')
    assert sorted(r for r, _ in await store.audience(eid)) == sorted([ROOM, ROOM2])  # type: ignore[arg-type]
    await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    await svc.handle_reaction(ROOM2, UserID("@b:x"), mid(), f"$poll-{eid}-{ROOM2}", "❔")
    answers = await store.answers(eid)  # type: ignore[arg-type]
    assert [(a.user_id, a.department, a.source.value) for a in answers] == [
        ("@a:x", "dept", "poll"), ("@b:x", "dept2", "reaction")]  # fmt: skip
    # Private list: an ordinary member sees counts only; an export goes to the moderator's DM.
    eff = await svc.handle_message(ROOM, UserID("@a:x"), mid(), f"!event show {eid}")
    assert "A" not in eff[0].text.body.split("Going: 1")[1].split("\n")[0]  # type: ignore[union-attr]
    eff = await svc.handle_message(ROOM, UserID("@a:x"), mid(), f"!event export {eid}")
    assert "private" in eff[0].text.body and not only(eff, Upload)  # type: ignore[union-attr]
    eff = await svc.handle_message(ROOM, MOD, mid(), f"!event export {eid}")
    assert only(eff, DirectUpload) and not only(eff, Upload)


async def test_edit_announces_and_promotes(store: Store) -> None:
    svc, _ = await make(store)
    eid = await create(svc, '!event create "X" tomorrow 3pm capacity 1')
    poll = f"$poll-{eid}-{ROOM}"
    await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), poll, ["going"])
    await svc.handle_poll_response(ROOM, UserID("@b:x"), mid(), poll, ["going"])
    eff = await svc.handle_message(ROOM, UserID("@a:x"), mid(), f"!event edit {eid} capacity 5")
    assert "moderators" in eff[0].text.body  # type: ignore[union-attr]
    eff = await svc.handle_message(
        ROOM, MOD, mid(), f'!event edit {eid} capacity 2 when tomorrow 4pm place "<i>"'
    )
    dms = [(e.user_id, e.text.body) for e in eff if isinstance(e, DirectMessage)]
    assert ("@a:x", dms[0][1]) in dms and any(u == "@b:x" and "freed up" in b for u, b in dms)
    ev = await store.get_event(eid)  # type: ignore[arg-type]
    assert ev is not None and ev.capacity == 2 and ev.sequence == 1 and ev.place == "<i>"
    notice = only(eff, RoomNotice)[0]
    assert isinstance(notice, RoomNotice) and "&lt;i&gt;" in notice.text.html


async def test_times_round_trip_exactly(store: Store) -> None:
    # Answers at the same millisecond must keep their order after a reload (a rounded time once put a later
    # answer before an earlier one).
    svc, clock = await make(store)
    clock.set(datetime(2026, 11, 29, 7, 0, 0, 999_600, tzinfo=UTC))
    eid = await create(svc, '!event create "X" tomorrow 3pm capacity 1')
    await svc.handle_message(ROOM, UserID("@a:x"), mid(), f"!going {eid}")
    eff = await svc.handle_message(ROOM, UserID("@b:x"), mid(), f"!going {eid}")
    assert "waitlist" in eff[0].text.body  # type: ignore[union-attr]
    answers = await store.answers(eid)  # type: ignore[arg-type]
    assert answers[0].answered_at == clock.now()


async def test_processed_marks_and_values(store: Store) -> None:
    svc, _ = await make(store)
    m = mid()
    await svc.handle_message(ROOM, MOD, m, "!event list")
    assert await store.is_processed(m)
    assert not await store.is_processed("$other")
    await store.write([SetPoll("ev1", ROOM, MatrixEventID("$p"))])  # type: ignore[arg-type]
    assert await store.event_by_poll("$p") == "ev1"


async def test_effects_wait_in_the_outbox(store: Store) -> None:
    """Effects are committed with the state that produced them and survive in the outbox until sent."""
    svc, clock = await make(store)
    m = mid()
    effects = await svc.handle_message(ROOM, MOD, m, '!event create "X" tomorrow 3pm capacity 5 place "<b>"')
    pending = await store.outbox()
    assert [oid for oid, _ in pending] == [f"{m}#0"]
    assert [decode(p) for _, p in pending] == effects  # every kind round-trips, files included
    eid = only(effects, Announce)[0].event_id  # type: ignore[attr-defined]
    await svc.poll_posted(eid, ROOM, MatrixEventID("$poll"))
    await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), "$poll", ["going"])
    eff = await svc.handle_message(ROOM, MOD, mid(), f"!event export {eid}")
    assert decode(encode(eff[1])) == eff[1]
    eff = await svc.handle_message(ROOM, MOD, mid(), f"!event cancel {eid}")
    for e in eff:
        assert decode(encode(e)) == e
    await store.write([DeleteOutbox(oid) for oid, _ in await store.outbox()])
    assert await store.outbox() == []


async def test_reminders_queue_once(store: Store) -> None:
    svc, clock = await make(store)
    eid = await create(svc, '!event create "X" 2026-12-03 15:00')
    await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    await store.write([DeleteOutbox(oid) for oid, _ in await store.outbox()])
    clock.set(datetime(2026, 12, 3, 14, 30, tzinfo=MSK))
    items = (await svc.queue_due_reminders()).items
    assert len(items) == 2  # the DM (only the 1 h one: the 24 h one is past) and the room reminder
    kinds = sorted(type(decode(p)).__name__ for _, p in await store.outbox())
    assert kinds == ["DirectMessage", "RoomNotice"]
    assert (await svc.queue_due_reminders()).items == []
    assert len(await store.outbox()) == 2


async def test_queued_reminders_are_dropped_when_the_event_is_cancelled_or_moved(store: Store) -> None:
    """A reminder read into the outbox but not yet sent must not go out for a cancelled or moved event."""
    svc, clock = await make(store)
    a = await create(svc, '!event create "A" 2026-12-03 15:00')
    b = await create(svc, '!event create "B" 2026-12-03 15:00')
    for eid in (a, b):
        await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    await store.write([DeleteOutbox(oid) for oid, _ in await store.outbox()])
    clock.set(datetime(2026, 12, 2, 15, 0, tzinfo=MSK))
    assert len((await svc.queue_due_reminders()).items) == 4

    def reminders() -> set[str]:
        return {oid.split(":")[1] for oid, _ in pending if oid.startswith("rem:")}

    pending = await store.outbox()
    assert reminders() == {a, b}
    a_ids = [oid for oid, _ in pending if oid.startswith(f"rem:{a}:")]
    await svc.handle_message(ROOM, MOD, mid(), f'!event edit {b} title "B2"')  # same time: kept
    pending = await store.outbox()
    assert reminders() == {a, b}
    await svc.handle_message(ROOM, MOD, mid(), f"!event cancel {a}")
    pending = await store.outbox()
    assert reminders() == {b}
    # What the sender checks before sending a reminder it read earlier.
    assert a_ids and [await store.in_outbox(oid) for oid in a_ids] == [False] * len(a_ids)
    await svc.handle_message(ROOM, MOD, mid(), f"!event edit {b} when 2026-12-04 15:00")
    pending = await store.outbox()
    assert reminders() == set()
    # The new time re-arms: 24 h before it, the reminders are due again.
    clock.set(datetime(2026, 12, 3, 15, 0, tzinfo=MSK))
    assert len((await svc.queue_due_reminders()).items) == 2


async def test_a_reminder_burst_is_released_early_at_the_senders_rate(store: Store) -> None:
    svc, clock = await make(store)
    eid = await create(svc, '!event create "X" 2026-12-03 15:00')
    for i in range(40):
        await svc.handle_poll_response(ROOM, UserID(f"@p{i}:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    await store.write([DeleteOutbox(oid) for oid, _ in await store.outbox()])
    due_at = datetime(2026, 12, 2, 15, 0, tzinfo=MSK)
    clock.set(due_at - timedelta(seconds=20))
    assert (await svc.queue_due_reminders()).items == []  # without a rate nothing leaves early
    q = await svc.queue_due_reminders(rate=20.0)
    # 40 DMs and the room reminder at 20 per second: released 41 / 40 s early, so centred on the due moment.
    assert q.items == [] and q.next_release == due_at - timedelta(seconds=41 / 40)
    # Beyond the look-ahead the scheduler sleeps until the 1 h mark comes within reach.
    start = datetime(2026, 12, 3, 15, 0, tzinfo=MSK)
    assert await svc.next_reminder_at(REMINDER_AHEAD) == start - timedelta(hours=1) - REMINDER_AHEAD
    clock.set(q.next_release)
    q = await svc.queue_due_reminders(rate=20.0)
    assert len(q.items) == 41 and len(await store.outbox()) == 41 and q.next_release is None
    assert (await svc.queue_due_reminders(rate=20.0)).items == []


async def test_removed_reaction_withdraws_and_promotes(store: Store) -> None:
    svc, _ = await make(store)
    eid = await create(svc, '!event create "X" tomorrow 3pm capacity 1')
    poll = f"$poll-{eid}-{ROOM}"
    react = mid()
    await svc.handle_reaction(ROOM, UserID("@a:x"), react, poll, "✅")
    await svc.handle_poll_response(ROOM, UserID("@b:x"), mid(), poll, ["going"])
    # Someone else's redaction of the reaction (a moderator cleaning up) does not change the answer.
    assert await svc.handle_redaction(ROOM, MOD, mid(), react) == []
    eff = said(await svc.handle_redaction(ROOM, UserID("@a:x"), mid(), react))
    assert [(type(e), e.user_id) for e in eff] == [(DirectMessage, "@b:x")]  # type: ignore[union-attr]
    assert [a.user_id for a in await store.answers(eid)] == ["@b:x"]  # type: ignore[arg-type]
    # Redacting something that is not an answer is a no-op.
    assert await svc.handle_redaction(ROOM, UserID("@a:x"), mid(), "$unrelated") == []


async def test_next_reminder_time_is_exact_with_many_events(store: Store) -> None:
    """The scheduler sleeps until the true next due time, whichever offset and event it belongs to."""
    svc, clock = await make(store)
    for day in range(3, 8):
        await create(svc, f'!event create "E{day}" 2026-12-0{day} 10:00')
    await create(svc, '!event create "Soon" 2026-11-29 20:00')  # 1 h reminder at 19:00 MSK
    clock.set(datetime(2026, 11, 29, 18, 0, tzinfo=MSK))
    # Candidates: "Soon" at 19:00 (1 h) and E3 at 2 Dec 10:00 (24 h); the earlier wins.
    assert await svc.next_reminder_at() == datetime(2026, 11, 29, 19, 0, tzinfo=MSK)
    clock.set(datetime(2026, 11, 29, 21, 0, tzinfo=MSK))
    assert await svc.next_reminder_at() == datetime(2026, 12, 2, 10, 0, tzinfo=MSK)


async def test_audience_by_the_names_people_see(store: Store) -> None:
    svc, _ = await make(store)
    directory = svc.directory
    assert isinstance(directory, FakeDirectory)
    # By path, from another room of the organiser: announced there, the organiser told where.
    eff = await svc.handle_message(
        ROOM, MOD, mid(), '!event create "Tax day" tomorrow 3pm audience "финансы / налоги"'
    )
    ann = only(eff, Announce)
    assert [a.room_id for a in ann] == [ROOM2]  # type: ignore[attr-defined]
    assert "Финансы / Налоги" in only(eff, Reply)[0].text.body  # type: ignore[attr-defined]
    # "here": the unit of the room the command is sent in, with its sub-units.
    eff = await svc.handle_message(
        ROOM, MOD, mid(), '!событие создать "Все" завтра 15:00 подразделение здесь'
    )
    assert sorted(a.room_id for a in only(eff, Announce)) == sorted([ROOM, ROOM2])  # type: ignore[attr-defined]
    # Not found: nothing created, and the refusal says what to type.
    before = await store.event_ids()
    eff = await svc.handle_message(ROOM, MOD, mid(), '!event create "X" tomorrow 3pm audience "Юстиция"')
    text = eff[0].text.body  # type: ignore[attr-defined]
    assert "Found no unit “Юстиция”" in text and "audience here" in text and "Nothing was created" in text
    assert "(Финансы)" in text  # the unit "here" would mean, by its name
    # The same name in two places: both paths listed, nothing guessed.
    directory.tree.append(Unit("ou:just-tax", ("Юстиция", "Налоги")))
    eff = await svc.handle_message(ROOM, MOD, mid(), '!событие создать "X" завтра 15:00 подразделение налоги')
    text = eff[0].text.body  # type: ignore[attr-defined]
    assert "Финансы / Налоги" in text and "Юстиция / Налоги" in text and "Ничего не создано" in text
    assert await store.event_ids() == before


async def test_default_audience_is_every_shard_of_the_rooms_unit(store: Store) -> None:
    svc, _ = await make(store)
    directory = svc.directory
    assert isinstance(directory, FakeDirectory)
    shard2 = RoomID("!dept-2:x")
    directory.rooms["ou:fin"] = [ROOM, shard2]
    directory.levels[(shard2, MOD)] = 100
    eid = await create(svc, '!event create "All of us" tomorrow 3pm')
    assert sorted(r for r, _ in await store.audience(eid)) == sorted([ROOM, shard2])  # type: ignore[arg-type]


async def test_poll_rules_unvote_spoiled_redacted_and_which_answer_counts(store: Store) -> None:
    svc, _ = await make(store)
    eid = await create(svc, '!event create "X" tomorrow 3pm')
    poll = f"$poll-{eid}-{ROOM}"
    a = UserID("@a:x")

    async def answer() -> str | None:
        got = [r.answer.value for r in await store.answers(eid) if r.user_id == a]  # type: ignore[arg-type]
        return got[0] if got else None

    v1, v2 = mid(), mid()
    await svc.handle_poll_response(ROOM, a, v1, poll, ["going"], ts=1000)
    await svc.handle_poll_response(ROOM, a, v2, poll, ["not_going"], ts=2000)
    assert await answer() == "not_going"
    # An older response arriving late (a backfilled gap) does not override the newer one.
    await svc.handle_poll_response(ROOM, a, mid(), poll, ["maybe"], ts=1500)
    assert await answer() == "not_going"
    # Redacting the latest vote brings back the one before it (by time: the late "maybe").
    await svc.handle_redaction(ROOM, a, mid(), v2)
    assert await answer() == "maybe"
    # An empty selection is an unvote; a spoiled vote (unknown answer) counts for nothing.
    await svc.handle_poll_response(ROOM, a, mid(), poll, [], ts=3000)
    assert await answer() is None
    await svc.handle_poll_response(ROOM, a, mid(), poll, ["going"], ts=4000)
    await svc.handle_poll_response(ROOM, a, mid(), poll, ["definitely"], ts=5000)
    assert await answer() is None
    # A command after a vote: the reply says the poll still shows the vote, and which answer counts.
    await svc.handle_poll_response(ROOM, a, mid(), poll, ["not_going"], ts=6000)
    eff = await svc.handle_message(ROOM, a, mid(), f"!going {eid}")
    text = eff[0].text.body  # type: ignore[attr-defined]
    assert "The poll still shows your vote “Not going”, but this latest answer counts: “Going”" in text
    assert await answer() == "going"
    # An unvote in the poll does not take back the answer given by command.
    await svc.handle_poll_response(ROOM, a, mid(), poll, [], ts=7000)
    assert await answer() == "going"
    # Votes after the poll ended (the event was cancelled) are ignored without a word.
    await svc.handle_message(ROOM, MOD, mid(), f"!event cancel {eid}")
    assert await svc.handle_poll_response(ROOM, UserID("@b:x"), mid(), poll, ["going"], ts=8000) == []


async def test_every_answer_edits_the_announcements_with_the_count_across_rooms(store: Store) -> None:
    svc, _ = await make(store)
    eid = await create(svc, '!event create "Unit day" tomorrow 3pm audience here capacity 10')
    await svc.handle_poll_response(ROOM, UserID("@a:x"), mid(), f"$poll-{eid}-{ROOM}", ["going"])
    eff = await svc.handle_reaction(ROOM2, UserID("@b:x"), mid(), f"$poll-{eid}-{ROOM2}", "✅")
    assert sorted(e.room_id for e in only(eff, UpdateTally)) == sorted([ROOM, ROOM2])  # type: ignore[attr-defined]
    text = await svc.tally_text(eid)  # type: ignore[arg-type]
    assert text is not None and "📊 Now — all 2 rooms: going 2/10, maybe 0, not going 0" in text.body
    # Reminder wording and the confirmation say when the (one) reminder comes.
    eff = await svc.handle_message(ROOM, UserID("@c:x"), mid(), f"!going {eid}")
    assert "I will remind you 24 hours before it starts" in eff[0].text.body  # type: ignore[attr-defined]


async def test_dead_letters_and_outbox_figures(store: Store) -> None:
    now = T0
    await store.write(
        [PutOutbox("a#0", now, '{"t": "notice"}'), PutOutbox("b#0", now + timedelta(seconds=5), "{}")]
    )
    assert await store.outbox_stats() == (2, now)
    await store.write(
        [DeadLetter("a#0", now + timedelta(minutes=1), "M_FORBIDDEN: not in room"), DeleteOutbox("a#0")]
    )
    assert await store.outbox_stats() == (1, now + timedelta(seconds=5))
    total, rows = await store.dead_letters()
    assert total == 1 and rows[0].id == "a#0" and rows[0].reason.startswith("M_FORBIDDEN")
    assert rows[0].payload == '{"t": "notice"}' and rows[0].created_at == now


async def test_a_store_from_before_the_phone_column_gets_it(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE answers (event_id TEXT NOT NULL, user_id TEXT NOT NULL, answer TEXT NOT NULL,
        answered_at BIGINT NOT NULL, seq BIGINT NOT NULL, source TEXT NOT NULL, source_event_id TEXT,
        room_id TEXT, display_name TEXT NOT NULL, department TEXT NOT NULL, job_title TEXT NOT NULL,
        PRIMARY KEY (event_id, user_id))"""
    )
    conn.execute(
        "INSERT INTO answers VALUES ('e1', '@a:x', 'going', 0, 1, 'poll', NULL, NULL, 'A', 'D', 'T')"
    )
    conn.commit()
    conn.close()
    s = open_sqlite(str(path))
    await s.open()
    try:
        (kept,) = await s.answers(EventID("e1"))
        assert (kept.display_name, kept.department, kept.job_title, kept.phone) == ("A", "D", "T", "")
    finally:
        await s.close()
