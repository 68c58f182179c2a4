"""Texts the bot sends, in the language of the command, as plain ``body`` plus HTML ``formatted_body``.

Rule: every string a person typed (title, place, unit, names) goes through :func:`esc` before it enters HTML,
so a title like ``<b>`` or ``<a href=...>`` shows as text in every client.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime, format_timedelta

from bridge.events.model import Answer, Attendance, Event, EventID, Lang, Rsvp, Text, t
from bridge.events.units import Ambiguous, NotFound, Unit

# CLDR forms through Babel rather than hand-written tables: Russian has one/few/many ("1 ответ", "2 ответа",
# "5 ответов"), English one/other; month names are genitive in Russian dates ("3 декабря").
_LOCALES: dict[Lang, Locale] = {"ru": Locale.parse("ru"), "en": Locale.parse("en")}
_DATE_PATTERN = "EEE, d MMMM y, HH:mm"

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


def when(dt: datetime, tz: ZoneInfo, lang: Lang) -> str:
    """ "чт, 3 декабря 2026, 15:00" / "Thu, 3 December 2026, 15:00" in the organisation's zone."""
    return format_datetime(dt.astimezone(tz), _DATE_PATTERN, tzinfo=tz, locale=_LOCALES[lang])


def within(remaining: timedelta, lang: Lang) -> str:
    """ "через 67 минут", "через 24 часа": minutes below two hours, hours below two days."""
    minutes = max(1, round(remaining.total_seconds() / 60))
    span = timedelta(minutes=minutes)
    loc = _LOCALES[lang]
    return format_timedelta(span, threshold=2, granularity="minute", add_direction=True, locale=loc)


def plural(lang: Lang, n: int, forms: dict[str, str]) -> str:
    """``n`` and the word in the CLDR plural form for ``n``: forms by category ("one", "few", "many",
    "other"); a missing category falls back to "other"."""
    category = _LOCALES[lang].plural_form(n)
    return f"{n} {forms.get(category, forms['other'])}"


ANSWERS_WORD: dict[Lang, dict[str, str]] = {
    "ru": {"one": "ответ", "few": "ответа", "many": "ответов", "other": "ответа"},
    "en": {"one": "answer", "other": "answers"},
}
ROOMS_WORD: dict[Lang, dict[str, str]] = {
    "ru": {"one": "комнате", "few": "комнатах", "many": "комнатах", "other": "комнатах"},
    "en": {"one": "room", "other": "rooms"},
}
PEOPLE_WORD: dict[Lang, dict[str, str]] = {
    "ru": {"one": "человек", "few": "человека", "many": "человек", "other": "человека"},
    "en": {"one": "person", "other": "people"},
}


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


def announcement(event: Event, tz: ZoneInfo, att: Attendance | None = None, rooms: int = 1) -> Text:
    """The announcement; with ``att``, as edited later: the attendance across all ``rooms`` of the event,
    which is the list that counts (each room's native poll only shows that room's votes)."""
    lang = event.lang
    d_body, d_html = _details(event, tz, lang)
    how = t(
        lang,
        f"Ответьте в опросе, реакцией ✅ иду / ❔ возможно / ❌ не иду, или командой !иду {event.id}. "
        "Считается последний ответ, как бы он ни был дан.",
        f"Answer in the poll, with a reaction ✅ going / ❔ maybe / ❌ not going, or with !going {event.id}. "
        "Your latest answer counts, however you give it.",
    )
    head = t(lang, "Событие", "Event")
    body = [f"📅 {head} {event.id}: {event.title}", *d_body, how]
    htm = [f"📅 {head} <code>{event.id}</code>: <b>{esc(event.title)}</b>", *d_html, esc(how)]
    if att is not None:
        line = tally_line(event, att, rooms)
        body.append(line)
        htm.append(f"<b>{esc(line)}</b>")
    return Text("\n".join(body), "<br>".join(htm))


def tally_line(event: Event, att: Attendance, rooms: int) -> str:
    lang = event.lang
    cap = f"/{event.capacity}" if event.capacity is not None else ""
    n = plural(lang, rooms, ROOMS_WORD[lang])
    where = t(lang, f" — во всех {n}", f" — all {n}") if rooms > 1 else ""
    parts = [t(lang, f"идут {len(att.confirmed)}{cap}", f"going {len(att.confirmed)}{cap}")]
    if att.waitlist:
        parts.append(t(lang, f"в листе ожидания {len(att.waitlist)}", f"waitlist {len(att.waitlist)}"))
    parts.append(t(lang, f"возможно {len(att.maybe)}", f"maybe {len(att.maybe)}"))
    parts.append(t(lang, f"не идут {len(att.not_going)}", f"not going {len(att.not_going)}"))
    return t(lang, "📊 Сейчас", "📊 Now") + where + ": " + ", ".join(parts)


def poll_question(event: Event, tz: ZoneInfo) -> str:
    """Labelled as one way to answer: the poll shows only this room's votes, not the list that counts."""
    note = t(
        event.lang,
        "опрос — один из способов ответить; общий итог — в объявлении",
        "the poll is one way to answer; the full count is in the announcement",
    )
    return f"{event.title} — {when(event.starts_at, tz, event.lang)} ({note}) [{event.id}]"


def person_name(user_id: str, display_name: str) -> str:
    """What people read for a person: the display name; without one, the login (never ``@login:server``)."""
    return display_name.strip() or user_id[1:].split(":", 1)[0]


def pill(user_id: str, display_name: str) -> tuple[str, str]:
    """A person in ``body`` (the name) and ``formatted_body`` (a mention pill: a matrix.to link whose text
    is the name, which Element shows as the person's avatar and name)."""
    name = person_name(user_id, display_name)
    return name, f'<a href="{esc(matrix_to(user_id))}">{esc(name)}</a>'


def pills(people: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Several people, as :func:`pill`, comma-separated: ``people`` are (user id, display name)."""
    parts = [pill(u, n) for u, n in people]
    return ", ".join(b for b, _ in parts), ", ".join(h for _, h in parts)


def _names(rs: Sequence[Rsvp]) -> tuple[str, str]:
    return pills([(r.user_id, r.display_name) for r in rs])


@dataclass(frozen=True, slots=True)
class Roster:
    """What ``show`` adds for an event with named attendees: required invitees without an answer, and the
    attendance once people check in (``invitees`` Rule 5). People are (user id, display name)."""

    unanswered: tuple[tuple[str, str], ...] = ()
    attended: tuple[tuple[str, str], ...] = ()
    no_show: tuple[tuple[str, str], ...] = ()
    checkin: bool = False  # the check-in has begun (someone checked in, or the list was closed)


def show(
    event: Event,
    att: Attendance,
    tz: ZoneInfo,
    lang: Lang,
    *,
    names_visible: bool,
    roster: Roster | None = None,
) -> Text:
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
    people_rows: list[tuple[str, list[tuple[str, str]]]] = [
        (label, [(r.user_id, r.display_name) for r in rs]) for label, rs in rows
    ]
    if roster is not None:
        if roster.unanswered:
            people_rows.append((t(lang, "Не ответили", "No answer yet"), list(roster.unanswered)))
        if roster.checkin:
            people_rows.append((t(lang, "Пришли", "Attended"), list(roster.attended)))
            people_rows.append((t(lang, "Не пришли", "No-show"), list(roster.no_show)))
    for label, ps in people_rows:
        if not ps and label == rows[1][0]:
            continue
        line = f"{label}: {len(ps)}"
        if names_visible and ps:
            names_body, names_html = pills(ps)
            body.append(f"{line} — {names_body}")
            htm.append(f"<b>{esc(line)}</b> — {names_html}")
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


@dataclass(frozen=True, slots=True)
class FoundPerson:
    """One ``!who`` result as people see it: the department is the unit path, never its internal key."""

    user_id: str
    display_name: str
    title: str = ""
    department: str = ""
    phone: str = ""


def matrix_to(user_id: str) -> str:
    return f"https://matrix.to/#/{user_id}"


def who_reply(lang: Lang, term: str, people: Sequence[FoundPerson], more: bool) -> Text:
    if not people:
        msg = t(lang, f"Никого не нашёл по запросу «{term}».", f"Nobody found for “{term}”.")
        return Text(msg, esc(msg))
    head = t(lang, f"Нашёл по запросу «{term}»:", f"Found for “{term}”:")
    plain, rich = [head], [f"<p>{esc(head)}</p><ul>"]
    for p in people:
        extra = [x for x in (p.title, p.department, p.phone) if x]
        name_body, name_html = pill(p.user_id, p.display_name)
        plain.append(" — ".join([f"• {name_body}", *extra]))
        rich.append(f"<li>{name_html}" + "".join(f" — {esc(x)}" for x in extra) + "</li>")
    rich.append("</ul>")
    if more:
        tail = t(
            lang,
            "Показаны не все: уточните запрос (например, добавьте имя или отдел).",
            "Not everyone is shown: narrow the search (add a first name or department).",
        )
        plain.append(tail)
        rich.append(f"<p>{esc(tail)}</p>")
    return Text("\n".join(plain), "".join(rich))


def who_not_configured(lang: Lang) -> Text:
    msg = t(
        lang,
        "Поиск сотрудников не настроен (нет раздела search: в конфигурации бота).",
        "People search is not configured (the bot's config has no search: section).",
    )
    return Text(msg, esc(msg))


def help_text(lang: Lang, unknown: str | None = None) -> Text:
    lines_ru = [
        '!событие создать "Название" 2026-12-03 15:00 место "каб. 301" вместимость 40 до 2026-12-02 '
        '[подразделение "Название или путь" | подразделение здесь] [закрытый список]',
        "!событие список | показать ID | экспорт ID | изменить ID когда завтра 16:00 | отменить ID",
        "!иду ID · !возможно ID · !не иду ID — или ответьте в опросе / реакцией ✅ ❔ ❌",
        '!событие пригласить ID Иванов, "Петров Отдел ЖКХ", @login:server [необязательно Сидоров] — '
        "личное приглашение с ответом в одно нажатие; при создании: пригласить …; подразделение нет — "
        "только для приглашённых",
        '!событие изменить ID подразделение "Название" | закрытый список | открытый список · '
        "!событие отозвать ID Иванов",
        "!событие напомнить ID — тем, кто не ответил · !пришёл ID — отметиться · "
        "!событие отметить ID Иванов · !событие закрыть ID — закрыть список",
        "!мои — ваши предстоящие события во всех комнатах",
        "!кто Иванов — найти коллегу: имя, должность, отдел, телефон",
        "Даты: 03.12.2026 15:00, 3 декабря 15:00, завтра 15:00, послезавтра 10:00, в пятницу 10:00",
        "Без «подразделение» событие объявляется во всех комнатах подразделения этой комнаты; "
        'подразделение "Управа / Отдел ЖКХ" — ещё и во всех его отделах.',
    ]
    lines_en = [
        '!event create "Title" 2026-12-03 15:00 place "Room 301" capacity 40 deadline 2026-12-02 '
        '[audience "unit name or path" | audience here] [private]',
        "!event list | show ID | export ID | edit ID when tomorrow 4pm | cancel ID",
        "!going ID · !maybe ID · !notgoing ID — or answer the poll / react ✅ ❔ ❌",
        '!event invite ID Ivanov, "Petrov Housing", @login:server [optional Sidorov] — a direct '
        "invitation answered in one tap; on create: invite …; audience none — invitees only",
        '!event edit ID audience "Unit" | private | public · !event uninvite ID Ivanov',
        "!event nudge ID — those who have not answered · !here ID — check in · "
        "!event checkin ID Ivanov · !event close ID — close the list",
        "!my — your upcoming events across all rooms",
        "!who Ivanov — find a colleague: name, title, department, phone",
        "Dates: 2026-12-03 15:00, December 3 3pm, tomorrow 3pm, today 17:30, friday 10am",
        "Without “audience” the event is announced in every room of this room's unit; "
        'audience "Council / Housing" announces it in all of that unit and its sub-units.',
    ]
    lines = lines_ru if lang == "ru" else lines_en
    if unknown is not None:
        lines = [t(lang, f"Не знаю команду «{unknown}».", f"Unknown command “{unknown}”."), *lines]
    return Text("\n".join(lines), "<br>".join(esc(x) for x in lines))


def rsvp_reply(
    event: Event,
    lang: Lang,
    status: str,
    position: int | None,
    unchanged: bool,
    tz: ZoneInfo,
    *,
    reminder: timedelta | None = None,
    poll_vote: Answer | None = None,
    counted: Answer | None = None,
) -> Text:
    """The answer to an answer. ``reminder``: the first reminder the person will get (before the start);
    ``poll_vote``: what a poll still shows for them, said to be overridden if it differs from ``counted``."""
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
    if poll_vote is not None and counted is not None and poll_vote is not counted:
        shown, now = ANSWER_LABELS[lang][poll_vote], ANSWER_LABELS[lang][counted]
        s += t(
            lang,
            f" В опросе у вас отмечено «{shown}», но учитывается этот, последний ответ: «{now}».",
            f" The poll still shows your vote “{shown}”, but this latest answer counts: “{now}”.",
        )
    if reminder is not None:
        span = format_timedelta(reminder, threshold=2, granularity="minute", locale=_LOCALES[lang])
        s += t(lang, f" Напомню за {span} до начала.", f" I will remind you {span} before it starts.")
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
    span = within(remaining, lang)
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


def unit_refusal(lang: Lang, match: Ambiguous | NotFound, here: Unit | None) -> Text:
    """Why ``audience X`` named no unit, and what to type instead."""
    kw = t(lang, "подразделение", "audience")
    here_hint = t(
        lang,
        f"или «{kw} здесь» — подразделение этой комнаты" + (f" ({here.label})" if here else ""),
        f"or “{kw} here” for the unit of this room" + (f" ({here.label})" if here else ""),
    )
    if isinstance(match, Ambiguous):
        listed = [f"• {u.label}" for u in match.candidates]
        if match.more:
            listed.append(t(lang, f"… и ещё {match.more}", f"… and {match.more} more"))
        head = t(
            lang,
            f"Под «{match.query}» подходят несколько подразделений:",
            f"Several units match “{match.query}”:",
        )
        tail = t(
            lang,
            f'Уточните путём, например: {kw} "{match.candidates[0].label}". Ничего не создано.',
            f'Give more of the path, e.g. {kw} "{match.candidates[0].label}". Nothing was created.',
        )
        return plain("\n".join([head, *listed, tail]))
    lines = [
        t(
            lang,
            f"Не нашёл подразделение «{match.query}». Напишите название, как в названии комнаты или "
            f'пространства (можно начало или путь через «/»), например {kw} "Отдел кадров", {here_hint}. '
            "Ничего не создано.",
            f"Found no unit “{match.query}”. Type its name as in the room or space names (the start of it, "
            f'or a path with “/” will do), e.g. {kw} "Human resources", {here_hint}. Nothing was created.',
        )
    ]
    if match.suggestions:
        lines.append(t(lang, "Может быть:", "Did you mean:"))
        lines += [f"• {u.label}" for u in match.suggestions]
    return plain("\n".join(lines))


def invitation(event: Event, tz: ZoneInfo, *, required: bool, nudge: bool = False) -> Text:
    """The direct message an invitee gets: the event, whether they are expected, and the one-tap answers
    (the bot's own reactions under it)."""
    lang = event.lang
    d_body, d_html = _details(event, tz, lang)
    if nudge:
        head = t(
            lang, f"⏳ Вы ещё не ответили: «{event.title}»", f"⏳ You have not answered yet: “{event.title}”"
        )
    else:
        head = t(lang, f"📨 Вас пригласили: «{event.title}»", f"📨 You are invited: “{event.title}”")
    need = (
        t(lang, "Ваше участие обязательно.", "Your attendance is required.")
        if required
        else t(lang, "Участие по желанию.", "Attendance is optional.")
    )
    how = t(
        lang,
        f"Ответьте одним нажатием на реакцию ниже: ✅ иду / ❔ возможно / ❌ не иду — или командой "
        f"!иду {event.id}. Считается последний ответ.",
        f"Answer with one tap on a reaction below: ✅ going / ❔ maybe / ❌ not going — or with "
        f"!going {event.id}. Your latest answer counts.",
    )
    body = [f"{head} [{event.id}]", need, *d_body, how]
    htm = [f"<b>{esc(head)}</b> [<code>{event.id}</code>]", esc(need), *d_html, esc(how)]
    return Text("\n".join(body), "<br>".join(htm))


def candidates(lang: Lang, item: str, people: Sequence[FoundPerson], more: bool) -> tuple[str, str]:
    """The people a name matches, for the organiser to pick one by a longer name or the login."""
    head = t(lang, f"«{item}» — это несколько человек:", f"“{item}” matches several people:")
    body, htm = [head], [f"{esc(head)}<ul>"]
    for p in people:
        extra = [x for x in (p.title, p.department) if x]
        login = p.user_id[1:].split(":", 1)[0]
        name_body, name_html = pill(p.user_id, p.display_name)
        body.append(" — ".join([f"• {name_body}", *extra, login]))
        htm.append(f"<li>{name_html}" + "".join(f" — {esc(x)}" for x in [*extra, login]) + "</li>")
    if more:
        body.append(t(lang, "… и другие", "… and more"))
        htm.append(f"<li>{esc(t(lang, '… и другие', '… and more'))}</li>")
    htm.append("</ul>")
    return "\n".join(body), "".join(htm)


def my_events(events: Sequence[tuple[Event, Answer | None, bool | None]], tz: ZoneInfo, lang: Lang) -> Text:
    """``!my``: each upcoming event with the person's answer; the flag says whether they were invited as
    required (``True``), optional (``False``) or not invited (``None``)."""
    if not events:
        return plain(t(lang, "У вас нет предстоящих событий.", "You have no upcoming events."))
    head = t(lang, "Ваши предстоящие события:", "Your upcoming events:")
    body, htm = [head], [f"<b>{esc(head)}</b><ul>"]
    for ev, answer, required in events:
        said = ANSWER_LABELS[lang][answer] if answer is not None else t(lang, "нет ответа", "no answer")
        invited = {
            True: t(lang, "приглашены, обязательно", "invited, required"),
            False: t(lang, "приглашены, по желанию", "invited, optional"),
            None: "",
        }[required]
        tail = f"{said}" + (f" ({invited})" if invited else "")
        body.append(f"{ev.id} — {ev.title} — {when(ev.starts_at, tz, lang)} — {tail}")
        htm.append(
            f"<li><code>{ev.id}</code> — {esc(ev.title)} — {esc(when(ev.starts_at, tz, lang))} — "
            f"<b>{esc(tail)}</b></li>"
        )
    htm.append("</ul>")
    if any(a is None for _, a, _ in events):
        hint = t(
            lang,
            "Ответить: !иду ID · !возможно ID · !не иду ID",
            "Answer: !going ID · !maybe ID · !notgoing ID",
        )
        body.append(hint)
        htm.append(esc(hint))
    return Text("\n".join(body), "".join(htm))


def withdrawn(event: Event) -> Text:
    """To a room the event is no longer announced in (its audience was edited)."""
    lang = event.lang
    return plain(
        t(
            lang,
            f"Событие «{event.title}» ({event.id}) больше не объявлено в этой комнате. "
            "Данные ответы сохраняются.",
            f"“{event.title}” ({event.id}) is no longer announced in this room. Answers given still stand.",
        )
    )


def uninvited(event: Event) -> Text:
    lang = event.lang
    return plain(
        t(
            lang,
            f"Приглашение на «{event.title}» ({event.id}) отозвано организатором.",
            f"The organiser withdrew your invitation to “{event.title}” ({event.id}).",
        )
    )


def invitation_changed(event: Event, *, required: bool) -> Text:
    lang = event.lang
    now = t(lang, "обязательно", "required") if required else t(lang, "по желанию", "optional")
    return plain(
        t(
            lang,
            f"Ваше участие в «{event.title}» ({event.id}) теперь: {now}.",
            f"Your attendance at “{event.title}” ({event.id}) is now {now}.",
        )
    )
