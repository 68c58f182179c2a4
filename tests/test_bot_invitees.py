"""Named attendees: parsing the people, the pure decisions (``invitees`` Rules 1-5), and the whole flow through
the service over a real store (SQLite and PostgreSQL) and the real search index built from a snapshot.

The directory (power levels, profiles, unit rooms) is the only fake, as in ``test_bot_service``.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.bot.people import SnapshotPeople
from bridge.events.clock import ManualClock
from bridge.events.commands import (
    CheckIn,
    CloseList,
    CreateEvent,
    EditEvent,
    InviteEvent,
    MyEvents,
    NudgeEvent,
    ParseError,
    UninviteEvent,
    parse_command,
    split_people,
)
from bridge.events.export import attendance_csv
from bridge.events.invitees import (
    Candidates,
    Resolved,
    auto_nudge_targets,
    checkin_refusal,
    nudge_targets,
    pick,
    presence,
)
from bridge.events.model import (
    Announce,
    Answer,
    Checkin,
    DirectMessage,
    Event,
    EventID,
    Invitation,
    Invitee,
    MatrixEventID,
    Reply,
    RoomID,
    Rsvp,
    Source,
    Upload,
    UserID,
    attendance,
)
from bridge.events.outbox import decode, encode
from bridge.events.render import FoundPerson
from bridge.events.service import EventService, Settings
from bridge.events.store import SetDmRoom, Store, open_sqlite
from bridge.events.units import Unit
from bridge.search.snapshot import IndexedPerson, write_snapshot
from tests.test_bot_service import MOD, ROOM, FakeDirectory, store  # noqa: F401  # the store fixture

MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
E = EventID("ab3cd")


# --- parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "people"),
    [
        (["Иванов"], ("Иванов",)),
        (["Иванов", "Иван,", "Петров"], ("Иванов Иван", "Петров")),
        (["Иванов Отдел ЖКХ"], ("Иванов Отдел ЖКХ",)),  # a quoted token is one person
        (["@a:x", "@b:x", "Петров"], ("@a:x", "@b:x", "Петров")),
        (["Иванов,Петров,", ",Сидоров"], ("Иванов", "Петров", "Сидоров")),
        (["Иванов,", "Иванов"], ("Иванов",)),  # named twice, invited once
    ],
)
def test_split_people(words: list[str], people: tuple[str, ...]) -> None:
    assert split_people(words) == people


def test_parse_invitations_and_the_attendance_commands() -> None:
    def p(text: str) -> object:
        return parse_command(text, T0, MSK)

    c = p('!событие создать "Совещание" завтра 15:00 пригласить Иванов Иван, «Петров Отдел ЖКХ» '
          "необязательно Сидоров подразделение нет")  # fmt: skip
    assert isinstance(c, CreateEvent)
    assert (c.invite, c.optional, c.audience_unit) == (
        ("Иванов Иван", "Петров Отдел ЖКХ"),
        ("Сидоров",),
        "нет",
    )
    assert p("!event invite AB3CD Ivanov, @p:x optional Sidorov required Kuznetsov") == InviteEvent(
        "en", E, ("Ivanov", "@p:x"), ("Kuznetsov",), ("Sidorov",)
    )
    assert p("!event nudge ab3cd") == NudgeEvent("en", E)
    assert p("!событие закрыть ab3cd") == CloseList("ru", E)
    assert p("!пришёл ab3cd") == CheckIn("ru", E) and p("!here") == CheckIn("en", None)
    assert p("!событие отметить ab3cd Иванов, Петров") == CheckIn("ru", E, ("Иванов", "Петров"))
    assert p("!мои") == MyEvents("ru") and p("!my") == MyEvents("en")
    assert p("!событие отозвать ab3cd Иванов") == UninviteEvent("ru", E, ("Иванов",))
    # An edit may now change only the audience or the privacy.
    edit = p('!событие изменить ab3cd подразделение "Финансы" открытый список')
    assert isinstance(edit, EditEvent) and (edit.audience_unit, edit.private, edit.title) == (
        "Финансы",
        False,
        None,
    )
    edit = p("!event edit ab3cd private")
    assert isinstance(edit, EditEvent) and edit.private is True and edit.audience_unit is None
    assert isinstance(p('!event edit ab3cd title "New"'), EditEvent)
    created = p('!event create "X" tomorrow 3pm')
    assert isinstance(created, CreateEvent) and created.private is False
    for bad, says in [
        ("!event invite ab3cd", "Whom to invite"),
        ("!event invite", "Give the event ID"),
        ("!event checkin ab3cd", "Whom?"),
        ("!event uninvite ab3cd", "Whom?"),
        ("!event edit ab3cd invite Ivanov", "!event invite ab3cd"),
        ("!event nudge ab3cd more", "Usage"),
        ("!event invite ab3cd Ivanov invite Petrov", "a second time"),
    ]:
        got = p(bad)
        assert isinstance(got, ParseError) and says in got.message, (bad, got)


# --- the decisions ----------------------------------------------------------------------------------------


def person(uid: str, name: str) -> FoundPerson:
    return FoundPerson(uid, name)


def test_pick_a_person_by_name_or_login() -> None:
    ivanov, ivanova = person("@ivanov.ii:x", "Иванов Иван"), person("@ivanova.ms:x", "Иванова Мария")
    assert pick("Иванов Иван", [ivanov], False) == Resolved(UserID("@ivanov.ii:x"), "Иванов Иван")
    assert pick("ivanov.ii", [ivanov, ivanova], False) == Resolved(UserID("@ivanov.ii:x"), "Иванов Иван")
    # The search matches prefixes: "Иванов" finds Иванова too, but is a whole word of one name only.
    assert pick("Иванов", [ivanov, ivanova], False) == Resolved(UserID("@ivanov.ii:x"), "Иванов Иван")
    petr = person("@ivanov.pp:x", "Иванов Пётр")
    both = pick("Иванов", [ivanov, petr, ivanova], False)
    assert isinstance(both, Candidates) and both.people == (ivanov, petr, ivanova)
    assert pick("иванов пётр", [ivanov, petr], False) == Resolved(UserID("@ivanov.pp:x"), "Иванов Пётр")
    # One hit shown but more matched: still ambiguous, however whole the words.
    assert isinstance(pick("Иванов", [ivanov], True), Candidates)
    assert isinstance(pick("Иванов", [ivanov, ivanova], True), Candidates)
    assert pick("Зайцев", [], False) is None


def ev(**kw: object) -> Event:
    base = dict(id=E, title="Совет", starts_at=T0 + timedelta(days=3), place=None, capacity=1,
                deadline=T0 + timedelta(days=2), organiser=MOD, origin_room=ROOM, audience_unit=None,
                private=False, lang="ru", created_at=T0)  # fmt: skip
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def inv(user: str, *, required: bool = True, nudged: datetime | None = None) -> Invitee:
    return Invitee(E, UserID(user), required, user[1:].title(), T0, nudged)


def ans(user: str, answer: Answer, seq: int) -> Rsvp:
    return Rsvp(
        E, UserID(user), answer, T0 + timedelta(minutes=seq), seq, Source.REACTION, None, None, user[1:]
    )


def test_nudges_reach_only_required_people_without_an_answer_once_a_while() -> None:
    invitees = [inv("@a"), inv("@b"), inv("@c"), inv("@d", required=False), inv("@e", nudged=T0)]
    answers = [ans("@a", Answer.GOING, 1), ans("@b", Answer.NOT_GOING, 2)]  # a decline is an answer
    due, recent = nudge_targets(invitees, answers, T0 + timedelta(hours=1), timedelta(hours=12))
    assert [i.user_id for i in due] == ["@c"] and [i.user_id for i in recent] == ["@e"]
    due, recent = nudge_targets(invitees, answers, T0 + timedelta(hours=12), timedelta(hours=12))
    assert [i.user_id for i in due] == ["@c", "@e"] and recent == []


def test_automatic_nudge_at_its_moment_to_those_not_nudged_since() -> None:
    e = ev()  # deadline T0 + 2 days
    moment = e.deadline - timedelta(hours=24)  # type: ignore[operator]
    invitees = [inv("@a"), inv("@b", nudged=moment - timedelta(hours=1)), inv("@c", nudged=moment)]
    before = timedelta(hours=24)
    assert auto_nudge_targets(e, invitees, [], moment - timedelta(seconds=1), before) == []
    assert [i.user_id for i in auto_nudge_targets(e, invitees, [], moment, before)] == ["@a", "@b"]
    assert auto_nudge_targets(e, invitees, [], e.deadline, before) == []  # type: ignore[arg-type]
    assert auto_nudge_targets(ev(cancelled=True), invitees, [], moment, before) == []


def test_checkin_window_and_closing() -> None:
    e = ev()
    before, after = timedelta(minutes=30), timedelta(hours=3)
    assert checkin_refusal(e, e.starts_at - timedelta(minutes=31), before, after) == "early"
    assert checkin_refusal(e, e.starts_at - timedelta(minutes=30), before, after) is None
    assert checkin_refusal(e, e.starts_at + timedelta(hours=3), before, after) is None
    assert checkin_refusal(e, e.starts_at + timedelta(hours=3, seconds=1), before, after) == "late"
    assert checkin_refusal(ev(checkin_closed=True), e.starts_at, before, after) == "closed"
    assert checkin_refusal(ev(cancelled=True), e.starts_at, before, after) == "cancelled"


def test_registered_attended_no_show_and_the_csv() -> None:
    e = ev(capacity=2)
    answers = [ans("@a", Answer.GOING, 1), ans("@b", Answer.GOING, 2), ans("@w", Answer.GOING, 3),
               ans("@m", Answer.MAYBE, 4)]  # fmt: skip
    checkins = [Checkin(E, UserID("@a"), e.starts_at, UserID("@a"), "A"),
                Checkin(E, UserID("@walkin"), e.starts_at, MOD, "Walk In")]  # fmt: skip
    p = presence(attendance(e.capacity, answers), checkins)
    # @w is on the waitlist: not registered, so not a no-show either.
    assert (p.registered, p.attended, p.no_show) == (("@a", "@b"), ("@a", "@walkin"), ("@b",))
    invitees = [inv("@a"), inv("@q"), inv("@m", required=False)]
    rows = list(
        csv.DictReader(io.StringIO(attendance_csv(e, answers, MSK, invitees, checkins).decode("utf-8-sig")))
    )
    got = {r["Matrix ID"]: (r["Статус"], r["Приглашение"], r["Присутствие"]) for r in rows}
    assert got == {
        "@a": ("идёт", "обязательно", "пришёл"),
        "@b": ("идёт", "", "не пришёл"),
        "@w": ("лист ожидания", "", ""),
        "@m": ("возможно", "по желанию", ""),
        "@q": ("нет ответа", "обязательно", ""),
        "@walkin": ("", "", "пришёл"),
    }
    assert next(r for r in rows if r["Matrix ID"] == "@q")["ФИО"] == "Q"


def test_invitation_survives_the_outbox() -> None:
    from bridge.events.render import invitation

    effect = Invitation(E, UserID("@a:x"), invitation(ev(), MSK, required=False))
    assert decode(encode(effect)) == effect
    assert "по желанию" in effect.text.body and "✅" in effect.text.body


# --- the flow through the service -------------------------------------------------------------------------

IVANOV = IndexedPerson("@ivanov.ii:x", "Иванов Иван Иванович", "ivanov.ii", title="Начальник отдела")
IVANOVA = IndexedPerson("@ivanova.ms:x", "Иванова Мария Сергеевна", "ivanova.ms")
IVANOV_P = IndexedPerson("@ivanov.pp:x", "Иванов Пётр Петрович", "ivanov.pp")
FEDOROV = IndexedPerson("@fedorov.pa:x", "Фёдоров Пётр Алексеевич", "fedorov.pa")
DM_IVANOV = RoomID("!dm-ivanov:x")
DM_FEDOROV = RoomID("!dm-fedorov:x")

_n = 0


def mid() -> MatrixEventID:
    global _n
    _n += 1
    return MatrixEventID(f"$inv{_n}")


async def say(svc: EventService, text: str, *, room: RoomID = ROOM, sender: UserID = MOD) -> list[object]:
    return list(await svc.handle_message(room, sender, mid(), text))


def replies(effects: list[object]) -> str:
    return "\n".join(e.text.body for e in effects if isinstance(e, Reply))


async def test_invite_answer_nudge_checkin_export(store: Store, tmp_path: Path) -> None:  # noqa: F811
    snap = tmp_path / "search.json"
    write_snapshot(snap, [IVANOV, IVANOVA, IVANOV_P, FEDOROV], generated_at=1.0)
    clock = ManualClock(T0)
    settings = Settings(MSK)
    svc = EventService(store, clock, settings, FakeDirectory(), SnapshotPeople(snap))  # type: ignore[arg-type]

    # An ambiguous name: candidates, nothing created.
    eff = await say(svc, '!событие создать "Совет" 2026-12-02 15:00 до 2026-12-01 18:00 пригласить Иванов')
    assert (
        "несколько человек" in replies(eff)
        and "ivanov.pp" in replies(eff)
        and "Никто не приглашён" in replies(eff)
    )
    assert (
        not [e for e in eff if isinstance(e, Announce | Invitation)]
        and await store.event_ids() == frozenset()
    )

    # By name as the search finds them, one by login: an invitation each, announced in the room too.
    eff = await say(svc, '!событие создать "Совет" 2026-12-02 15:00 до 2026-12-01 18:00 '
                         'пригласить "Иванов Иван", fedorov.pa необязательно Иванова Мария')  # fmt: skip
    invitations = {e.user_id: e for e in eff if isinstance(e, Invitation)}
    assert set(invitations) == {"@ivanov.ii:x", "@fedorov.pa:x", "@ivanova.ms:x"}
    assert "обязательно" in invitations["@ivanov.ii:x"].text.body
    assert "по желанию" in invitations["@ivanova.ms:x"].text.body
    eid = invitations["@ivanov.ii:x"].event_id
    assert [a.room_id for a in eff if isinstance(a, Announce)] == [ROOM]
    assert "Приглашения отправлены: 3 человека" in replies(eff)
    # Inviting the same people again sends nothing new.
    eff = await say(svc, f"!событие пригласить {eid} Фёдоров")
    assert not [e for e in eff if isinstance(e, Invitation)] and "отправлены: 0 человек" in replies(eff)
    # Only the organiser (or a moderator) invites.
    eff = await say(svc, f"!событие пригласить {eid} Фёдоров", sender=UserID("@nobody:x"))
    assert "модераторы" in replies(eff)

    # Ivanov answers with one tap in his DM: the reaction on the invitation counts in the one tally.
    await store.write([SetDmRoom(UserID("@ivanov.ii:x"), DM_IVANOV)])
    await svc.announcement_posted(eid, DM_IVANOV, MatrixEventID("$invite-ivanov"))
    await svc.handle_reaction(DM_IVANOV, UserID("@ivanov.ii:x"), mid(), "$invite-ivanov", "✅")
    assert [(a.user_id, a.answer) for a in await store.answers(eid)] == [("@ivanov.ii:x", Answer.GOING)]

    # show: Fedorov (required) has not answered; Ivanova is optional and is not listed. Names, not logins.
    eff = await say(svc, f"!событие показать {eid}")
    body = replies(eff)
    assert "Не ответили: 1 — Фёдоров Пётр Алексеевич" in body and "Идут: 1 — " in body and "@" not in body
    html = next(e.text.html for e in eff if isinstance(e, Reply))
    assert '<a href="https://matrix.to/#/@fedorov.pa:x">Фёдоров Пётр Алексеевич</a>' in html

    # nudge: only Fedorov, once; again at once nobody; 12 h later again.
    eff = await say(svc, f"!событие напомнить {eid}")
    assert [e.user_id for e in eff if isinstance(e, Invitation)] == ["@fedorov.pa:x"]
    assert "Напомнил: Фёдоров Пётр Алексеевич" in replies(eff)
    eff = await say(svc, f"!событие напомнить {eid}")
    assert not [e for e in eff if isinstance(e, Invitation)] and "напоминали недавно" in replies(eff)
    # The automatic nudge 24 h before the deadline: Fedorov was nudged before that moment, so again.
    ev0 = await store.get_event(eid)  # type: ignore[arg-type]
    assert ev0 is not None and ev0.deadline is not None
    assert await svc.next_reminder_at() == ev0.deadline - timedelta(hours=24)
    clock.set(ev0.deadline - timedelta(hours=24))
    queued = await svc.queue_due_reminders()
    assert queued.nudges == 1
    outbox = [decode(p) for _, p in await store.outbox()]
    nudges = [e for e in outbox if isinstance(e, Invitation) and "ещё не ответили" in e.text.body]
    assert [e.user_id for e in nudges] == ["@fedorov.pa:x", "@fedorov.pa:x"]  # the command's, then this one
    assert (await svc.queue_due_reminders()).nudges == 0  # a restart or a second look sends none again
    # Fedorov declines: never nudged again.
    await say(svc, f"!не иду {eid}", sender=UserID("@fedorov.pa:x"))
    clock.set(ev0.deadline - timedelta(hours=1))
    eff = await say(svc, f"!событие напомнить {eid}")
    assert not [e for e in eff if isinstance(e, Invitation)] and "все обязательные ответили" in replies(eff)

    # Check-in: too early, then in the window; the organiser marks a walk-in; closing ends it.
    eff = await say(svc, f"!пришёл {eid}", sender=UserID("@ivanov.ii:x"))
    assert "незадолго до начала" in replies(eff)
    clock.set(ev0.starts_at - timedelta(minutes=10))
    eff = await say(svc, "!пришёл", sender=UserID("@ivanov.ii:x"))  # the only open check-in of the room
    assert "Отметил" in replies(eff)
    eff = await say(svc, f"!событие отметить {eid} Иванова Мария")
    assert "Отметил присутствие" in replies(eff) and "Иванова Мария Сергеевна" in replies(eff)
    eff = await say(svc, f"!событие отметить {eid} Иванова", sender=UserID("@ivanov.ii:x"))
    assert "модераторы" in replies(eff)  # only the organiser marks others
    eff = await say(svc, f"!событие закрыть {eid}")
    assert "Записались: 1, пришли: 2, не пришли: 0" in replies(eff)
    eff = await say(svc, f"!here {eid}", sender=UserID("@late:x"))
    assert "has closed the list" in replies(eff)
    assert {c.user_id for c in await store.checkins(eid)} == {"@ivanov.ii:x", "@ivanova.ms:x"}

    # Export: registered / attended, the invitee rows.
    eff = await say(svc, f"!event export {eid}")
    up = next(e for e in eff if isinstance(e, Upload))
    rows = list(csv.DictReader(io.StringIO(up.attachments[0].data.decode("utf-8-sig"))))
    got = {r["Matrix ID"]: (r["Статус"], r["Приглашение"], r["Присутствие"]) for r in rows}
    assert got == {
        "@ivanov.ii:x": ("идёт", "обязательно", "пришёл"),
        "@fedorov.pa:x": ("не идёт", "обязательно", ""),
        "@ivanova.ms:x": ("нет ответа", "по желанию", "пришёл"),  # optional, never answered, came
    }


async def test_invitation_only_event_and_my_events(store: Store, tmp_path: Path) -> None:  # noqa: F811
    snap = tmp_path / "search.json"
    write_snapshot(snap, [IVANOV, FEDOROV], generated_at=1.0)
    svc = EventService(store, ManualClock(T0), Settings(MSK), FakeDirectory(), SnapshotPeople(snap))  # type: ignore[arg-type]
    eff = await say(svc, '!событие создать "Один на один" завтра 15:00 подразделение нет')
    assert "только для приглашённых" in replies(eff) and await store.event_ids() == frozenset()
    eff = await say(svc, '!событие создать "Один на один" завтра 15:00 подразделение нет пригласить Фёдоров')
    assert not [e for e in eff if isinstance(e, Announce)]
    assert [e.user_id for e in eff if isinstance(e, Invitation)] == ["@fedorov.pa:x"]
    eid = next(e.event_id for e in eff if isinstance(e, Invitation))
    assert await store.audience(eid) == []
    # !мои in the person's DM lists it with "no answer"; in a shared room the list goes to the DM.
    await store.write([SetDmRoom(UserID("@fedorov.pa:x"), DM_FEDOROV)])
    eff = await say(svc, "!мои", room=DM_FEDOROV, sender=UserID("@fedorov.pa:x"))
    assert f"{eid} — Один на один" in replies(eff) and "нет ответа (приглашены, обязательно)" in replies(eff)
    await say(svc, f"!иду {eid}", room=DM_FEDOROV, sender=UserID("@fedorov.pa:x"))
    eff = await say(svc, "!my", sender=UserID("@fedorov.pa:x"))
    dm = [e for e in eff if isinstance(e, DirectMessage)]
    assert len(dm) == 1 and "Going (invited, required)" in dm[0].text.body and "directly" in replies(eff)
    eff = await say(svc, "!my", sender=UserID("@ivanov.ii:x"))
    assert [e.text.body for e in eff if isinstance(e, DirectMessage)] == ["You have no upcoming events."]


async def test_a_store_from_before_invitations_is_migrated(tmp_path: Path) -> None:
    """A SQLite store written by the previous release (no invitees/checkins tables, no checkin_closed column)
    opens, keeps its events and gains the new tables."""
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("""CREATE TABLE events (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, starts_at BIGINT NOT NULL, place TEXT, capacity INTEGER,
        deadline BIGINT, organiser TEXT NOT NULL, origin_room TEXT NOT NULL, audience_unit TEXT,
        private INTEGER NOT NULL, lang TEXT NOT NULL, created_at BIGINT NOT NULL, cancelled INTEGER NOT NULL,
        sequence INTEGER NOT NULL, timezone TEXT NOT NULL)""")
    conn.execute(
        "INSERT INTO events VALUES ('ab3cd', 'Old', 1, NULL, NULL, NULL, '@o:x', '!r:x', NULL, 0, 'ru', 0, 0, 0, 'Europe/Moscow')"
    )
    conn.commit()
    conn.close()
    s = open_sqlite(path)
    await s.open()
    try:
        old = await s.get_event(E)
        assert old is not None and old.title == "Old" and not old.checkin_closed
        assert await s.invitees(E) == [] and await s.checkins(E) == []
    finally:
        await s.close()


async def test_edits_reach_only_the_people_they_concern(store: Store, tmp_path: Path) -> None:  # noqa: F811
    from bridge.events.model import EndPoll, RoomNotice
    from tests.test_bot_service import ROOM2

    snap = tmp_path / "search.json"
    write_snapshot(snap, [IVANOV, FEDOROV], generated_at=1.0)
    svc = EventService(store, ManualClock(T0), Settings(MSK), FakeDirectory(), SnapshotPeople(snap))  # type: ignore[arg-type]
    eff = await say(svc, '!событие создать "Совет" завтра 15:00 пригласить Фёдоров')
    eid = next(e.event_id for e in eff if isinstance(e, Invitation))
    await svc.poll_posted(eid, ROOM, MatrixEventID("$poll-room"))
    await say(svc, f"!иду {eid}", sender=UserID("@a:x"))

    # Privacy: only the organiser hears of it.
    eff = await say(svc, f"!событие изменить {eid} закрытый список")
    assert [type(e) for e in eff] == [Reply] and "теперь закрыт" in replies(eff)
    assert (await store.get_event(eid)).private  # type: ignore[union-attr]

    # Audience: the unit "Налоги" (ROOM2) instead of this room: ROOM2 gets the announcement, ROOM a notice
    # and the end of its poll; nobody is messaged directly; the answer given stays.
    eff = await say(svc, f'!событие изменить {eid} подразделение "Налоги"')
    assert [e.room_id for e in eff if isinstance(e, Announce)] == [ROOM2]
    assert [e.room_id for e in eff if isinstance(e, RoomNotice)] == [ROOM]
    assert [(e.room_id, e.poll) for e in eff if isinstance(e, EndPoll)] == [(ROOM, "$poll-room")]
    assert not [e for e in eff if isinstance(e, DirectMessage | Invitation)]
    assert [r for r, _ in await store.audience(eid)] == [ROOM2]
    assert [a.user_id for a in await store.answers(eid)] == ["@a:x"]
    assert await store.event_by_poll("$poll-room") is None  # votes in the withdrawn poll no longer count

    # A time change reaches the rooms, who answered and who is invited.
    eff = await say(svc, f"!событие изменить {eid} когда завтра 16:00")
    assert sorted(e.user_id for e in eff if isinstance(e, DirectMessage)) == ["@a:x", "@fedorov.pa:x"]

    # Required → optional: only that person is told. Uninvite: only them.
    eff = await say(svc, f"!событие пригласить {eid} необязательно Фёдоров")
    assert [(type(e), e.user_id) for e in eff if isinstance(e, DirectMessage)] == [
        (DirectMessage, "@fedorov.pa:x")
    ]
    assert "по желанию" in next(e.text.body for e in eff if isinstance(e, DirectMessage))
    eff = await say(svc, f"!событие отозвать {eid} Фёдоров, Иванов")  # Ivanov was never invited
    assert [e.user_id for e in eff if isinstance(e, DirectMessage)] == ["@fedorov.pa:x"]
    assert "отозвано: Фёдоров Пётр Алексеевич" in replies(eff) and await store.invitees(eid) == []

    # No audience is allowed only with invitees.
    eff = await say(svc, f"!событие изменить {eid} подразделение нет")
    assert "только для приглашённых, а их нет" in replies(eff)


async def test_cancelling_tells_the_invitees_too(store: Store, tmp_path: Path) -> None:  # noqa: F811
    snap = tmp_path / "search.json"
    write_snapshot(snap, [IVANOV, FEDOROV], generated_at=1.0)
    clock = ManualClock(T0)
    svc = EventService(store, clock, Settings(MSK), FakeDirectory(), SnapshotPeople(snap))  # type: ignore[arg-type]
    create = '!событие создать "Совет" 2026-12-03 15:00 подразделение нет пригласить Фёдоров, ivanov.ii'
    eff = await say(svc, create)
    eid = next(e.event_id for e in eff if isinstance(e, Invitation))
    await say(svc, f"!иду {eid}", sender=UserID("@ivanov.ii:x"))

    async def queued_nudges() -> list[object]:
        return [
            e
            for _, p in await store.outbox()
            if isinstance(e := decode(p), Invitation) and "ещё не" in e.text.body
        ]

    # The automatic nudge to Fedorov is queued 24 h before the start (no deadline); cancelling drops it unsent.
    clock.set(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert (await svc.queue_due_reminders()).nudges == 1 and len(await queued_nudges()) == 1
    eff = await say(svc, f"!событие отменить {eid}")
    assert await queued_nudges() == []
    assert sorted(e.user_id for e in eff if isinstance(e, DirectMessage)) == ["@fedorov.pa:x", "@ivanov.ii:x"]


async def test_a_unit_by_name_invites_everyone_in_its_rooms(store: Store, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_bot_service import ROOM2

    snap = tmp_path / "search.json"
    # Someone whose department is "Налоги": the search would find him by that word too.
    tax = IndexedPerson("@tax:x", "Налогов Олег", "tax", department=("Финансы", "Налоги"))
    write_snapshot(snap, [IVANOV, tax], generated_at=1.0)
    directory = FakeDirectory()
    directory.joined = {ROOM2: [UserID("@tax:x"), UserID("@b:x")]}
    svc = EventService(store, ManualClock(T0), Settings(MSK), directory, SnapshotPeople(snap))  # type: ignore[arg-type]
    eff = await say(svc, '!событие создать "Сверка" завтра 15:00 пригласить "Финансы / Налоги", Иванов')
    assert sorted(e.user_id for e in eff if isinstance(e, Invitation)) == ["@b:x", "@ivanov.ii:x", "@tax:x"]
    # Two units of the same name: their paths, nobody invited.
    directory.tree.append(Unit("ou:tax2", ("Мэрия", "Налоги")))
    eff = await say(svc, '!событие создать "Сверка" завтра 15:00 пригласить Налоги')
    assert "Финансы / Налоги" in replies(eff) and "Мэрия / Налоги" in replies(eff)
    assert not [e for e in eff if isinstance(e, Invitation)]
    eff = await say(svc, '!событие создать "Сверка" завтра 15:00 пригласить Нет-такого')
    assert "Не нашёл «Нет-такого»" in replies(eff)
