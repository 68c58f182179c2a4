"""Texts the bot sends, in the language of the command, as plain ``body`` plus HTML ``formatted_body``.

Rule: every string a person typed (title, place, unit, names) goes through :func:`esc` before it enters HTML,
so a title like ``<b>`` or ``<a href=...>`` shows as text in every client.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.events.model import Answer, Attendance, Event, EventID, Lang, Rsvp, Text

_MONTHS_RU = [
    *("января", "февраля", "марта", "апреля", "мая", "июня"),
    *("июля", "августа", "сентября", "октября", "ноября", "декабря"),
]
_MONTHS_EN = [
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
]
_WD_RU = ["пн", "вт", "ср", "чт", "пт", "сб", "вс"]
_WD_EN = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

ANSWER_LABELS: dict[Lang, dict[Answer, str]] = {
    "ru": {Answer.GOING: "Иду", Answer.MAYBE: "Возможно", Answer.NOT_GOING: "Не иду"},
    "en": {Answer.GOING: "Going", Answer.MAYBE: "Maybe", Answer.NOT_GOING: "Not going"},
}
REACTIONS: dict[str, Answer] = {
    "✅": Answer.GOING,
    "❔": Answer.MAYBE,
    "❓": Answer.MAYBE,
    "❌": Answer.NOT_GOING,
}


def esc(s: str) -> str:
    return html.escape(s, quote=True)


def t(lang: Lang, ru: str, en: str) -> str:
    return ru if lang == "ru" else en


def when(dt: datetime, tz: ZoneInfo, lang: Lang) -> str:
    local = dt.astimezone(tz)
    if lang == "ru":
        wd, month = _WD_RU[local.weekday()], _MONTHS_RU[local.month - 1]
    else:
        wd, month = _WD_EN[local.weekday()], _MONTHS_EN[local.month - 1]
    return f"{wd}, {local.day} {month} {local.year}, {local:%H:%M}"


def plain(s: str) -> Text:
    return Text(s, esc(s).replace("\n", "<br>"))


def _details(event: Event, tz: ZoneInfo, lang: Lang) -> tuple[list[str], list[str]]:
    body = [t(lang, "Когда: ", "When: ") + when(event.starts_at, tz, lang) + f" ({tz.key})"]
    htm = [f"<b>{t(lang, 'Когда', 'When')}:</b> {esc(when(event.starts_at, tz, lang))} ({esc(tz.key)})"]
    if event.place:
        body.append(t(lang, "Место: ", "Place: ") + event.place)
        htm.append(f"<b>{t(lang, 'Место', 'Place')}:</b> {esc(event.place)}")
    if event.capacity is not None:
        body.append(t(lang, "Мест: ", "Capacity: ") + str(event.capacity))
        htm.append(f"<b>{t(lang, 'Мест', 'Capacity')}:</b> {event.capacity}")
    if event.deadline is not None:
        body.append(t(lang, "Запись до: ", "RSVP by: ") + when(event.deadline, tz, lang))
        htm.append(f"<b>{t(lang, 'Запись до', 'RSVP by')}:</b> {esc(when(event.deadline, tz, lang))}")
    return body, htm


def announcement(event: Event, tz: ZoneInfo) -> Text:
    lang = event.lang
    d_body, d_html = _details(event, tz, lang)
    how = t(
        lang,
        f"Ответьте в опросе, реакцией ✅ иду / ❔ возможно / ❌ не иду, или командой !иду {event.id}",
        f"Answer in the poll, with a reaction ✅ going / ❔ maybe / ❌ not going, or with !going {event.id}",
    )
    head = t(lang, "Событие", "Event")
    body = "\n".join([f"📅 {head} {event.id}: {event.title}", *d_body, how])
    htm = "<br>".join([f"📅 {head} <code>{event.id}</code>: <b>{esc(event.title)}</b>", *d_html, esc(how)])
    return Text(body, htm)


def poll_question(event: Event, tz: ZoneInfo) -> str:
    return f"{event.title} — {when(event.starts_at, tz, event.lang)} [{event.id}]"


def _names(rs: Sequence[Rsvp]) -> str:
    return ", ".join(r.display_name or r.user_id for r in rs)


def show(event: Event, att: Attendance, tz: ZoneInfo, lang: Lang, *, names_visible: bool) -> Text:
    d_body, d_html = _details(event, tz, lang)
    rows: list[tuple[str, Sequence[Rsvp]]] = [
        (t(lang, "Идут", "Going"), att.confirmed),
        (t(lang, "Лист ожидания", "Waitlist"), att.waitlist),
        (t(lang, "Возможно", "Maybe"), att.maybe),
        (t(lang, "Не идут", "Not going"), att.not_going),
    ]
    body = [
        f"{event.id}: {event.title}" + (t(lang, " (ОТМЕНЕНО)", " (CANCELLED)") if event.cancelled else "")
    ]
    htm = [
        f"<code>{event.id}</code>: <b>{esc(event.title)}</b>"
        + (t(lang, " <b>(ОТМЕНЕНО)</b>", " <b>(CANCELLED)</b>") if event.cancelled else "")
    ]
    body += d_body
    htm += d_html
    for label, rs in rows:
        if not rs and label == rows[1][0]:
            continue
        line = f"{label}: {len(rs)}"
        if names_visible and rs:
            body.append(f"{line} — {_names(rs)}")
            htm.append(f"<b>{esc(line)}</b> — {esc(_names(rs))}")
        else:
            body.append(line)
            htm.append(f"<b>{esc(line)}</b>")
    if not names_visible:
        note = t(lang, "Список имён закрыт организатором.", "The organiser keeps the list of names private.")
        body.append(note)
        htm.append(f"<i>{esc(note)}</i>")
    return Text("\n".join(body), "<br>".join(htm))


def event_list(events: Sequence[Event], going: Mapping[EventID, int], tz: ZoneInfo, lang: Lang) -> Text:
    if not events:
        return plain(t(lang, "Предстоящих событий нет.", "No upcoming events."))
    body = [t(lang, "Предстоящие события:", "Upcoming events:")]
    htm = [f"<b>{esc(body[0])}</b>", "<ul>"]
    for e in events:
        cap = f"/{e.capacity}" if e.capacity is not None else ""
        count = t(lang, f"идут {going.get(e.id, 0)}{cap}", f"going {going.get(e.id, 0)}{cap}")
        line = f"{e.id} — {e.title} — {when(e.starts_at, tz, lang)} — {count}"
        body.append(line)
        htm.append(
            f"<li><code>{e.id}</code> — {esc(e.title)} — "
            f"{esc(when(e.starts_at, tz, lang))} — {esc(count)}</li>"
        )
    htm.append("</ul>")
    return Text("\n".join(body), "".join(htm[:1]) + "".join(htm[1:]))


def help_text(lang: Lang, unknown: str | None = None) -> Text:
    lines_ru = [
        '!событие создать "Название" 2026-12-03 15:00 место "каб. 301" вместимость 40 до 2026-12-02 '
        "[подразделение КЛЮЧ] [закрытый список]",
        "!событие список | показать ID | экспорт ID | изменить ID когда завтра 16:00 | отменить ID",
        "!иду ID · !возможно ID · !не иду ID — или ответьте в опросе / реакцией ✅ ❔ ❌",
        "Даты: 03.12.2026 15:00, 3 декабря 15:00, завтра 15:00, послезавтра 10:00, в пятницу 10:00",
    ]
    lines_en = [
        '!event create "Title" 2026-12-03 15:00 place "Room 301" capacity 40 deadline 2026-12-02 '
        "[audience UNIT] [private]",
        "!event list | show ID | export ID | edit ID when tomorrow 4pm | cancel ID",
        "!going ID · !maybe ID · !notgoing ID — or answer the poll / react ✅ ❔ ❌",
        "Dates: 2026-12-03 15:00, December 3 3pm, tomorrow 3pm, today 17:30, friday 10am",
    ]
    lines = lines_ru if lang == "ru" else lines_en
    if unknown is not None:
        lines = [t(lang, f"Не знаю команду «{unknown}».", f"Unknown command “{unknown}”."), *lines]
    return Text("\n".join(lines), "<br>".join(esc(x) for x in lines))


def rsvp_reply(
    event: Event, lang: Lang, status: str, position: int | None, unchanged: bool, tz: ZoneInfo
) -> Text:
    title = event.title
    match status:
        case "confirmed":
            s = t(lang, f"Вы идёте на «{title}».", f"You are going to “{title}”.")
        case "waitlisted":
            s = t(
                lang,
                f"Мест на «{title}» нет: вы в листе ожидания, №{position}. Сообщу, если место освободится.",
                f"“{title}” is full: you are number {position} on the waitlist. "
                "I will tell you if a place frees up.",
            )
        case "maybe":
            s = t(lang, f"Записал: возможно придёте на «{title}».", f"Noted: you may come to “{title}”.")
        case _:
            s = t(lang, f"Записал: вы не идёте на «{title}».", f"Noted: you are not going to “{title}”.")
    if unchanged:
        s = t(lang, "Ответ не изменился. ", "Your answer is unchanged. ") + s
    return plain(s)


def refused(event: Event, lang: Lang, reason: str, tz: ZoneInfo) -> Text:
    match reason:
        case "cancelled":
            return plain(t(lang, f"Событие «{event.title}» отменено.", f"“{event.title}” was cancelled."))
        case "started":
            return plain(
                t(lang, f"Событие «{event.title}» уже началось.", f"“{event.title}” has already started.")
            )
        case _:
            dl = when(event.deadline, tz, lang) if event.deadline else ""
            return plain(
                t(
                    lang,
                    f"Запись на «{event.title}» закрыта: срок был {dl}. Обратитесь к организатору.",
                    f"RSVPs for “{event.title}” closed at {dl}. Please contact the organiser.",
                )
            )


def promoted_dm(event: Event, tz: ZoneInfo) -> Text:
    lang = event.lang
    return plain(
        t(
            lang,
            f"Освободилось место: вы идёте на «{event.title}» ({when(event.starts_at, tz, lang)}).",
            f"A place freed up: you are now going to “{event.title}” ({when(event.starts_at, tz, lang)}).",
        )
    )


def reminder_dm(event: Event, tz: ZoneInfo, remaining: timedelta, answer: Answer) -> Text:
    lang = event.lang
    minutes = max(1, round(remaining.total_seconds() / 60))
    span = (
        t(lang, f"через {round(minutes / 60)} ч", f"in {round(minutes / 60)} h")
        if minutes >= 120
        else t(lang, f"через {minutes} мин", f"in {minutes} min")
    )
    maybe = t(lang, " Вы ответили «возможно».", " You answered 'maybe'.") if answer is Answer.MAYBE else ""
    place = f" — {event.place}" if event.place else ""
    body = t(
        lang,
        f"⏰ Напоминание: «{event.title}» {span}, {when(event.starts_at, tz, lang)}{place}.{maybe}"
        f" Не сможете — !не иду {event.id}",
        f"⏰ Reminder: “{event.title}” {span}, {when(event.starts_at, tz, lang)}{place}.{maybe}"
        f" Can't make it? !notgoing {event.id}",
    )
    return plain(body)


def room_reminder(event: Event, tz: ZoneInfo, going: int) -> Text:
    lang = event.lang
    cap = f"/{event.capacity}" if event.capacity is not None else ""
    return plain(
        t(
            lang,
            f"⏰ Скоро: «{event.title}», {when(event.starts_at, tz, lang)}. Идут: {going}{cap}. "
            f"Ещё можно ответить: !иду {event.id}",
            f"⏰ Coming up: “{event.title}”, {when(event.starts_at, tz, lang)}. Going: {going}{cap}. "
            f"You can still answer: !going {event.id}",
        )
    )


def changed(old: Event, new: Event, tz: ZoneInfo) -> Text:
    lang = new.lang
    parts: list[str] = []
    if old.title != new.title:
        parts.append(t(lang, f"название: «{new.title}»", f"title: “{new.title}”"))
    if old.starts_at != new.starts_at:
        parts.append(t(lang, "время: ", "time: ") + when(new.starts_at, tz, lang))
    if old.place != new.place:
        parts.append(t(lang, "место: ", "place: ") + (new.place or "—"))
    if old.capacity != new.capacity:
        parts.append(t(lang, "мест: ", "capacity: ") + str(new.capacity))
    if old.deadline != new.deadline and new.deadline is not None:
        parts.append(t(lang, "запись до: ", "RSVP by: ") + when(new.deadline, tz, lang))
    what = "; ".join(parts) or t(lang, "детали", "details")
    return plain(
        t(
            lang,
            f"✏️ Событие «{old.title}» ({new.id}) изменено — {what}.",
            f"✏️ “{old.title}” ({new.id}) was changed — {what}.",
        )
    )


def cancelled(event: Event, tz: ZoneInfo) -> Text:
    lang = event.lang
    return plain(
        t(
            lang,
            f"❌ Событие «{event.title}» ({when(event.starts_at, tz, lang)}) отменено.",
            f"❌ “{event.title}” ({when(event.starts_at, tz, lang)}) is cancelled.",
        )
    )
