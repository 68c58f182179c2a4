"""Which reminders are due: an injected time, never twice, none when cancelled, late ones collapse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.events.model import (
    Answer,
    DirectMessage,
    Event,
    EventID,
    RoomID,
    RoomNotice,
    Rsvp,
    Source,
    UserID,
)
from bridge.events.reminders import Due, ReminderKey, due, next_due, release
from bridge.events.render import plain

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
OFFSETS = (timedelta(hours=24), timedelta(hours=1))


def ev(**kw: object) -> Event:
    base: dict[str, object] = dict(
        id=EventID("ab3cd"), title="Совещание", starts_at=START, place="каб. 301", capacity=2, deadline=None,
        organiser=UserID("@org:x"), origin_room=RoomID("!r:x"), audience_unit=None, private=False, lang="ru",
        created_at=START - timedelta(days=5),
    )  # fmt: skip
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def r(user: str, a: Answer, n: int) -> Rsvp:
    return Rsvp(
        EventID("ab3cd"), UserID(user), a, START - timedelta(days=4, seconds=-n), n, Source.POLL, None, None
    )


ANSWERS = [
    r("@a:x", Answer.GOING, 1),
    r("@b:x", Answer.MAYBE, 2),
    r("@c:x", Answer.GOING, 3),
    r("@d:x", Answer.GOING, 4),  # waitlisted: capacity 2
    r("@e:x", Answer.NOT_GOING, 5),
]
ROOMS = {EventID("ab3cd"): [RoomID("!r:x"), RoomID("!s:x")]}


def run(now: datetime, sent: set[ReminderKey], event: Event | None = None, maybe: bool = False) -> list[Due]:
    e = event or ev()
    return due([e], {e.id: ANSWERS}, ROOMS, sent, now, MSK, OFFSETS, maybe)


def dms(items: list[Due]) -> list[str]:
    return sorted(d.effect.user_id for d in items if isinstance(d.effect, DirectMessage))


def test_schedule_over_time() -> None:
    sent: set[ReminderKey] = set()
    assert run(START - timedelta(hours=25), sent) == []
    first = run(START - timedelta(hours=24), sent)
    assert dms(first) == ["@a:x", "@c:x"]  # going and confirmed only; waitlist and maybe are not reminded
    assert sorted(d.effect.room_id for d in first if isinstance(d.effect, RoomNotice)) == ["!r:x", "!s:x"]
    assert "через 24 ч" in first[0].effect.text.body
    for d in first:
        sent.update(d.marks)
    assert run(START - timedelta(hours=23), sent) == []  # never twice
    second = run(START - timedelta(minutes=59), sent)
    assert dms(second) == ["@a:x", "@c:x"] and all(isinstance(d.effect, DirectMessage) for d in second)
    for d in second:
        sent.update(d.marks)
    assert run(START - timedelta(minutes=1), sent) == []
    assert run(START, set()) == []  # nothing at or after the start


def test_late_start_sends_only_the_latest() -> None:
    items = run(START - timedelta(minutes=30), set())
    assert dms(items) == ["@a:x", "@c:x"]
    d = next(d for d in items if isinstance(d.effect, DirectMessage))
    assert {k.offset_s for k in d.marks} == {86400, 3600}  # the missed 24 h one is marked, not sent
    assert "через 30 мин" in d.effect.text.body


def test_maybe_optional_and_cancelled_never() -> None:
    assert dms(run(START - timedelta(hours=1), set(), maybe=True)) == ["@a:x", "@b:x", "@c:x"]
    assert run(START - timedelta(hours=1), set(), event=ev(cancelled=True)) == []


def test_moving_the_event_rearms() -> None:
    sent: set[ReminderKey] = set()
    for d in run(START - timedelta(hours=1), sent):
        sent.update(d.marks)
    moved = ev(starts_at=START + timedelta(days=1))
    assert dms(run(START + timedelta(days=1) - timedelta(hours=1), sent, event=moved)) == ["@a:x", "@c:x"]


def test_next_due() -> None:
    e = ev()
    assert next_due([e], START - timedelta(days=3), OFFSETS) == START - timedelta(hours=24)
    assert next_due([e], START - timedelta(hours=24), OFFSETS) == START - timedelta(hours=1)
    assert next_due([e], START - timedelta(minutes=1), OFFSETS) is None
    assert next_due([ev(cancelled=True)], START - timedelta(days=3), OFFSETS) is None


def burst(n: int, at: datetime) -> list[Due]:
    return [Due((), DirectMessage(UserID(f"@p{i}:x"), plain(f"{i}")), at) for i in range(n)]


AHEAD = timedelta(seconds=30)


def test_a_burst_is_centred_on_its_due_moment() -> None:
    # 200 due at START at 100 messages/s: sent one after the other from START, the last would be 2 s late;
    # released 1 s early, none is more than 1 s away from START.
    items = burst(200, START)
    ready, later = release(items, START - timedelta(seconds=1.5), 100.0, AHEAD)
    assert ready == [] and later == START - timedelta(seconds=1)
    ready, later = release(items, START - timedelta(seconds=1), 100.0, AHEAD)
    assert ready == items and later is None
    # One reminder alone leaves (almost) on time; a slow sender never makes one leave more than AHEAD early.
    assert release(burst(1, START), START - timedelta(seconds=1), 100.0, AHEAD) == (
        [],
        START - timedelta(seconds=0.005),
    )
    assert release(burst(10_000, START), START - timedelta(minutes=1), 1.0, AHEAD)[1] == START - AHEAD
    # Two bursts at different moments are released separately.
    mixed = burst(100, START) + burst(100, START + timedelta(seconds=10))
    ready, later = release(mixed, START - timedelta(seconds=0.5), 100.0, AHEAD)
    assert [d.at for d in ready] == [START] * 100 and later == START + timedelta(seconds=9.5)


def test_due_ahead_returns_what_falls_due_soon_with_the_right_wording() -> None:
    now = START - timedelta(hours=24, seconds=20)
    assert run(now, set()) == []
    e = ev()
    soon = due([e], {e.id: ANSWERS}, ROOMS, set(), now, MSK, OFFSETS, ahead=timedelta(seconds=30))
    assert dms(soon) == ["@a:x", "@c:x"] and {d.at for d in soon} == {START - timedelta(hours=24)}
    assert all("через 24 ч" in d.effect.text.body for d in soon if isinstance(d.effect, DirectMessage))
    # An event starting within the look-ahead still gets its late reminder.
    late = due([e], {e.id: ANSWERS}, ROOMS, set(), START - timedelta(seconds=10), MSK, OFFSETS, ahead=AHEAD)
    assert dms(late) == ["@a:x", "@c:x"]


def going_at(user: str, at: datetime, n: int = 10) -> Rsvp:
    return Rsvp(EventID("ab3cd"), UserID(user), Answer.GOING, at, n, Source.COMMAND, None, None)


def deliver(event: Event, answers: list[Rsvp], moments: list[datetime]) -> list[tuple[datetime, Due]]:
    """Run the scheduler at each moment as the bot would, recording what is sent and when."""
    sent: set[ReminderKey] = set()
    out: list[tuple[datetime, Due]] = []
    for now in moments:
        for d in due([event], {event.id: answers}, ROOMS, sent, now, MSK, OFFSETS):
            sent.update(d.marks)
            out.append((now, d))
    return out


def every_minute(start: datetime, end: datetime) -> list[datetime]:
    return [start + timedelta(minutes=i) for i in range(int((end - start) / timedelta(minutes=1)) + 1)]


def test_a_late_going_gets_one_reminder_not_the_missed_24h_one_at_once() -> None:
    # The case: "going" 67 minutes before the start. The 24 h moment had passed when they answered.
    answered = START - timedelta(minutes=67)
    got = deliver(ev(), [going_at("@late:x", answered)], every_minute(answered, START))
    dms_sent = [(at, d) for at, d in got if isinstance(d.effect, DirectMessage)]
    assert len(dms_sent) == 1
    at, d = dms_sent[0]
    assert at == START - timedelta(hours=1) and "через 60 минут" in d.effect.text.body


def test_an_answer_just_before_a_reminder_moment_is_not_followed_by_it() -> None:
    # Going 62 minutes before: the 1 h reminder would come 2 minutes after the confirmation: skipped.
    got = deliver(
        ev(),
        [going_at("@x:x", START - timedelta(minutes=62))],
        every_minute(START - timedelta(minutes=62), START),
    )
    assert [d for _, d in got if isinstance(d.effect, DirectMessage)] == []


def test_two_offsets_close_together_give_one_reminder() -> None:
    e = ev()
    offsets = (timedelta(hours=2), timedelta(minutes=100), timedelta(hours=1))
    sent: set[ReminderKey] = set()
    times = []
    for now in every_minute(START - timedelta(hours=3), START):
        for d in due([e], {e.id: [going_at("@a:x", START - timedelta(days=1))]}, {}, sent, now, MSK, offsets):
            sent.update(d.marks)
            times.append(START - now)
    assert times == [
        timedelta(hours=2),
        timedelta(hours=1),
    ]  # the 100-minute one is 20 minutes after the first


def test_no_room_notice_right_after_an_announcement_less_than_a_day_ahead() -> None:
    created = START - timedelta(hours=3)
    got = deliver(ev(created_at=created), [], every_minute(created, START))
    rooms = [(at, d) for at, d in got if isinstance(d.effect, RoomNotice)]
    # No "coming up" at once for the missed 24 h mark; one per room at the 1 h mark instead.
    assert sorted((at, d.effect.room_id) for at, d in rooms) == [
        (START - timedelta(hours=1), "!r:x"),
        (START - timedelta(hours=1), "!s:x"),
    ]
    just_before = deliver(
        ev(created_at=START - timedelta(minutes=50)), [], every_minute(START - timedelta(minutes=50), START)
    )
    assert just_before == []
