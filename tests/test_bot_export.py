"""CSV and iCalendar exports, and HTML escaping of everything a person typed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.events import render
from bridge.events.export import attendance_csv, event_ics, fold, ics_escape, uid
from bridge.events.model import Answer, Event, EventID, RoomID, Rsvp, Source, UserID, attendance

MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
EVIL = '<img src=x onerror=alert(1)> & <a href="javascript:x">**bold**</a>'


def ev(**kw: object) -> Event:
    base: dict[str, object] = dict(
        id=EventID("ab3cd"), title="Совещание; по благоустройству, этап 2", starts_at=T0 + timedelta(days=4),
        place="каб. 301", capacity=1, deadline=None, organiser=UserID("@org:x"), origin_room=RoomID("!r:x"),
        audience_unit=None, private=False, lang="ru", created_at=T0,
    )  # fmt: skip
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


ANSWERS = [
    Rsvp(EventID("ab3cd"), UserID("@ivanov:x"), Answer.GOING, T0, 1, Source.POLL, None, None,
         "Иванов Иван", "Префектура ЦАО / Управа района Арбат", "=HYPERLINK(1)", "+7 495 123-45-67"),
    Rsvp(EventID("ab3cd"), UserID("@petrov:x"), Answer.GOING, T0 + timedelta(minutes=1), 2, Source.REACTION, None,
         None, "Петров, Пётр", "Финансы", "Главный специалист"),
    Rsvp(EventID("ab3cd"), UserID("@sid:x"), Answer.NOT_GOING, T0 + timedelta(minutes=2), 3, Source.COMMAND, None,
         None, "", "", ""),
]  # fmt: skip


def test_csv() -> None:
    data = attendance_csv(ev(), ANSWERS, MSK)
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    # What a person reads: the directory's name, title, department path and phone, then the answer and when.
    assert rows[0] == [
        "ФИО",
        "Должность",
        "Подразделение",
        "Телефон",
        "Ответ",
        "Статус",
        "Время ответа",
        "Matrix ID",
        "Приглашение",
        "Присутствие",
    ]
    # A leading "=" or "+" would be run as a formula by Excel ("+7 495 …" gives #NULL!): quoted.
    assert rows[1] == ["Иванов Иван", "'=HYPERLINK(1)", "Префектура ЦАО / Управа района Арбат", "'+7 495 123-45-67",
                       "Иду", "идёт", "2026-11-29 10:00", "@ivanov:x", "", ""]  # fmt: skip
    assert rows[2][:6] == ["Петров, Пётр", "Главный специалист", "Финансы", "", "Иду", "лист ожидания"]
    assert rows[3][0] == "sid" and rows[3][4:6] == ["Не иду", "не идёт"]
    english = list(csv.reader(io.StringIO(attendance_csv(ev(lang="en"), ANSWERS, MSK).decode("utf-8-sig"))))
    assert english[0][:4] == ["Name", "Title", "Department", "Phone"] and english[2][4:6] == [
        "Going",
        "waitlist",
    ]


def test_ics_escaping_folding_and_stable_uid() -> None:
    e = ev(title="Очень длинное название; с запятой, и обратной косой \\ чертой\nи переводом строки " * 2)
    data = event_ics(e, T0, "city.example")
    text = data.decode("utf-8")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    for line in text.split("\r\n"):
        assert len(line.encode("utf-8")) <= 75
    unfolded = text.replace("\r\n ", "")
    assert (
        "SUMMARY:Очень длинное название\\; с запятой\\, и обратной косой \\\\ чертой\\nи переводом"
        in unfolded
    )
    assert "DTSTART:20261203T070000Z" in unfolded and "DTEND:20261203T080000Z" in unfolded
    assert "LOCATION:каб. 301" in unfolded
    assert f"UID:{uid(e, 'city.example')}" in unfolded
    edited = event_ics(ev(sequence=3, place="каб. 5"), T0 + timedelta(hours=1), "city.example").decode()
    assert f"UID:{uid(e, 'city.example')}" in edited and "SEQUENCE:3" in edited
    assert "STATUS:CANCELLED" in event_ics(ev(cancelled=True), T0, "x").decode()


def test_fold_never_splits_a_character() -> None:
    line = "SUMMARY:" + "ж" * 100
    folded = fold(line)
    assert folded.replace("\r\n ", "") == line
    for part in folded.split("\r\n"):
        part.encode("utf-8").decode("utf-8")
        assert len(part.encode("utf-8")) <= 75
    assert ics_escape("a;b,c\\d\ne") == "a\\;b\\,c\\\\d\\ne"


def test_html_injection_is_escaped_everywhere() -> None:
    e = ev(title=EVIL, place=EVIL)
    r = Rsvp(e.id, UserID("@x:x"), Answer.GOING, T0, 1, Source.POLL, None, None, EVIL, EVIL)
    texts = [
        render.announcement(e, MSK),
        render.show(e, attendance(1, [r]), MSK, "ru", names_visible=True),
        render.event_list([e], {e.id: 1}, MSK, "en"),
        render.changed(e, ev(title=EVIL + "2", place=EVIL + "3"), MSK),
        render.cancelled(e, MSK),
        render.reminder_dm(e, MSK, timedelta(hours=1), Answer.GOING),
        render.room_reminder(e, MSK, 1),
        render.promoted_dm(e, MSK),
        render.rsvp_reply(e, "en", "waitlisted", 1, False, MSK),
        render.refused(e, "ru", "deadline", MSK),
        render.invitation(e, MSK, required=True),
        render.show(e, attendance(1, [r]), MSK, "ru", names_visible=True,
                    roster=render.Roster(unanswered=(("@x:x", EVIL),), attended=(("@x:x", EVIL),), checkin=True)),
    ]  # fmt: skip
    for t in texts:
        # The only links are the mention pills the bot makes itself (a matrix.to link, the name escaped).
        html = t.html.replace('<a href="https://matrix.to/#/@x:x">', "")
        assert "<img" not in html and "<a href" not in html, t.html
        assert "&lt;img" in t.html
        assert EVIL in t.body or "<img" in t.body  # the plain body keeps the text as typed


def test_private_list_hides_names() -> None:
    e = ev(private=True)
    r = Rsvp(e.id, UserID("@x:x"), Answer.GOING, T0, 1, Source.POLL, None, None, "Секретов Сергей")
    assert "Секретов" not in render.show(e, attendance(1, [r]), MSK, "ru", names_visible=False).body
    assert "Секретов" in render.show(e, attendance(1, [r]), MSK, "ru", names_visible=True).body
