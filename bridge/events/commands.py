"""Parse chat commands in Russian and English into typed commands, or a typed error with a message to show.

Pure: the current time and the organisation's time zone are arguments, so relative dates ("завтра 15:00",
"friday 10am") are deterministic in tests. A text that is not addressed to this bot yields ``None`` so
other bots in the room keep their own ``!`` commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bridge.events.model import MAX_CAPACITY, MAX_TITLE, Answer, EventID, Lang, normalise_id, t

# --- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateEvent:
    lang: Lang
    title: str
    starts_at: datetime
    place: str | None
    capacity: int | None
    deadline: datetime | None
    audience_unit: str | None
    private: bool


@dataclass(frozen=True, slots=True)
class EditEvent:
    """Only the fields given are changed; ``None`` means "keep"."""

    lang: Lang
    event_id: EventID
    title: str | None
    starts_at: datetime | None
    place: str | None
    capacity: int | None
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class CancelEvent:
    lang: Lang
    event_id: EventID


@dataclass(frozen=True, slots=True)
class ListEvents:
    lang: Lang


@dataclass(frozen=True, slots=True)
class ShowEvent:
    lang: Lang
    event_id: EventID | None


@dataclass(frozen=True, slots=True)
class ExportEvent:
    lang: Lang
    event_id: EventID | None


@dataclass(frozen=True, slots=True)
class RsvpCommand:
    lang: Lang
    event_id: EventID | None  # None: the only open event of the room, if there is exactly one
    answer: Answer


@dataclass(frozen=True, slots=True)
class Help:
    lang: Lang
    unknown: str | None = None  # the word that was not understood, if any


@dataclass(frozen=True, slots=True)
class Who:
    """``!who TERM`` / ``!кто TERM``: look colleagues up in the directory search index."""

    lang: Lang
    term: str


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command addressed to the bot that could not be understood; ``message`` is shown as is."""

    lang: Lang
    message: str


Command = (
    CreateEvent | EditEvent | CancelEvent | ListEvents | ShowEvent | ExportEvent | RsvpCommand | Help | Who
)


# --- tokens ---------------------------------------------------------------------------------------

_QUOTES = {'"': '"', "«": "»", "“": "”", "„": "“"}


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    quoted: bool

    @property
    def low(self) -> str:
        return self.text.lower()


class _TokenError(Exception):
    pass


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in _QUOTES:
            close = _QUOTES[c]
            j = text.find(close, i + 1)
            if j < 0 and close == "“":
                j = text.find("”", i + 1)
            if j < 0:
                raise _TokenError(c)
            out.append(Token(text[i + 1 : j], True))
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _QUOTES:
            j += 1
        out.append(Token(text[i:j], False))
        i = j
    return out


# --- keywords -------------------------------------------------------------------------------------

_PLACE = {"place", "where", "location", "venue", "место", "где"}
_CAPACITY = {"capacity", "limit", "seats", "вместимость", "мест", "места", "лимит"}
_CAPACITY_AFTER = {"мест", "места", "seats", "people", "человек", "чел", "чел."}
_DEADLINE = {"deadline", "until", "rsvp", "до", "срок"}
_DEADLINE_FILLER = {"записи", "регистрации", "ответа", "до", "by"}
_AUDIENCE = {"audience", "unit", "подразделение", "аудитория", "отдел"}
_PRIVATE = {"private", "закрытый", "закрыто", "приватно", "приватный"}
_PRIVATE_FILLER = {"список", "list"}
_TITLE = {"title", "name", "название", "заголовок"}
_WHEN = {"when", "date", "time", "start", "когда", "дата", "время", "начало"}

_CREATE = {"create", "new", "add", "создать", "новое", "новый", "добавить"}
_LIST = {"list", "ls", "список", "все"}
_SHOW = {"show", "info", "показать", "покажи", "инфо", "кто"}
_EXPORT = {"export", "csv", "экспорт", "выгрузить", "выгрузка"}
_EDIT = {"edit", "change", "update", "изменить", "правка", "редактировать"}
_CANCEL = {"cancel", "delete", "отменить", "отмена", "удалить"}
_HELP = {"help", "?", "помощь", "справка"}

_EVENT_WORDS: dict[str, Lang] = {
    "!event": "en",
    "!events": "en",
    "!событие": "ru",
    "!события": "ru",
    "!мероприятие": "ru",
}
_RSVP_WORDS: dict[str, tuple[Lang, Answer]] = {
    "!going": ("en", Answer.GOING),
    "!yes": ("en", Answer.GOING),
    "!maybe": ("en", Answer.MAYBE),
    "!notgoing": ("en", Answer.NOT_GOING),
    "!not-going": ("en", Answer.NOT_GOING),
    "!no": ("en", Answer.NOT_GOING),
    "!иду": ("ru", Answer.GOING),
    "!приду": ("ru", Answer.GOING),
    "!возможно": ("ru", Answer.MAYBE),
    "!может": ("ru", Answer.MAYBE),
    "!неиду": ("ru", Answer.NOT_GOING),
    "!не-иду": ("ru", Answer.NOT_GOING),
}
_HELP_WORDS: dict[str, Lang] = {"!help": "en", "!помощь": "ru", "!справка": "ru"}
_WHO_WORDS: dict[str, Lang] = {"!who": "en", "!кто": "ru"}


# --- dates ----------------------------------------------------------------------------------------

_MONTHS: dict[str, int] = {}
for _i, _names in enumerate(
    [
        "января январь янв january jan",
        "февраля февраль фев feb february",
        "марта март мар march mar",
        "апреля апрель апр april apr",
        "мая май may",
        "июня июнь июн june jun",
        "июля июль июл july jul",
        "августа август авг august aug",
        "сентября сентябрь сен сент september sep sept",
        "октября октябрь окт october oct",
        "ноября ноябрь ноя нояб november nov",
        "декабря декабрь дек december dec",
    ],
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _i

_WEEKDAYS: dict[str, int] = {}
for _i, _names in enumerate(
    [
        "понедельник понедельника пн monday mon",
        "вторник вторника вт tuesday tue tues",
        "среда среду ср wednesday wed",
        "четверг четверга чт thursday thu thurs",
        "пятница пятницу пт friday fri",
        "суббота субботу сб saturday sat",
        "воскресенье вс sunday sun",
    ]
):
    for _name in _names.split():
        _WEEKDAYS[_name] = _i

_RELATIVE = {"today": 0, "сегодня": 0, "tomorrow": 1, "завтра": 1, "послезавтра": 2}
_FILLER = {"в", "во", "at", "on", "next", "г", "г.", "года", "year", "the", "this", ","}

_ISO_DT = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[tT](\d{1,2}):(\d{2}))?$")
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.(\d{2}|\d{4}))?$")
_HHMM = re.compile(r"^(\d{1,2})[:.](\d{2})(am|pm)?$")
_H_AMPM = re.compile(r"^(\d{1,2})(am|pm)$")
_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?,?$")
_YEAR = re.compile(r"^(\d{4}),?$")


class DateError(Exception):
    def __init__(self, ru: str, en: str) -> None:
        super().__init__(en)
        self.ru = ru
        self.en = en


def _hour(h: int, minute: int, ampm: str | None) -> time:
    if ampm:
        if not 1 <= h <= 12:
            raise DateError("час должен быть от 1 до 12 с am/pm", "with am/pm the hour must be 1 to 12")
        h = h % 12 + (12 if ampm == "pm" else 0)
    if not (0 <= h <= 23 and 0 <= minute <= 59):
        raise DateError("такого времени не бывает", "that time of day does not exist")
    return time(h, minute)


def _mkdate(y: int, m: int, d: int) -> date:
    try:
        return date(y, m, d)
    except ValueError:
        raise DateError(
            f"такой даты нет: {d:02d}.{m:02d}.{y}", f"no such date: {y}-{m:02d}-{d:02d}"
        ) from None


def parse_when(words: list[str], now: datetime, tz: ZoneInfo, *, need_time: bool) -> datetime:
    """Parse a date-and-time phrase in the organisation's zone; return an aware UTC datetime.

    Without a year the next such date is meant; a weekday means its next occurrence after today; a date
    without a time is an error for a start (``need_time``) and the end of that day for a deadline.
    """
    local_now = now.astimezone(tz)
    today = local_now.date()
    day: date | None = None
    at: time | None = None
    pending_month_day: tuple[int, int] | None = None  # year not given yet: decide after the loop
    words = [w.lower().strip(",") for w in words if w.strip(",")]
    i = 0

    def set_day(d: date) -> None:
        nonlocal day
        if day is not None or pending_month_day is not None:
            raise DateError("дата указана дважды", "the date is given twice")
        day = d

    def set_time(t: time) -> None:
        nonlocal at
        if at is not None:
            raise DateError("время указано дважды", "the time is given twice")
        at = t

    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if w in _FILLER:
            i += 1
            continue
        if m := _ISO_DT.match(w):
            set_day(_mkdate(int(m[1]), int(m[2]), int(m[3])))
            if m[4]:
                set_time(_hour(int(m[4]), int(m[5]), None))
            i += 1
            continue
        if (m := _DOTTED.match(w)) and (
            m[3] or (day is None and pending_month_day is None and 1 <= int(m[2]) <= 12)
        ):
            # "03.12" is a date unless the date is known ("завтра 15.00") or it cannot be one ("15.00").
            if m[3]:
                y = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
                set_day(_mkdate(y, int(m[2]), int(m[1])))
            else:
                pending_month_day = (int(m[2]), int(m[1]))
            i += 1
            continue
        if m := _HHMM.match(w):
            ampm = m[3]
            if ampm is None and nxt in ("am", "pm"):
                ampm, i = nxt, i + 1
            set_time(_hour(int(m[1]), int(m[2]), ampm))
            i += 1
            continue
        if m := _H_AMPM.match(w):
            set_time(_hour(int(m[1]), 0, m[2]))
            i += 1
            continue
        if w in _RELATIVE:
            set_day(today + timedelta(days=_RELATIVE[w]))
            i += 1
            continue
        if w in _WEEKDAYS:
            ahead = (_WEEKDAYS[w] - today.weekday()) % 7 or 7
            set_day(today + timedelta(days=ahead))
            i += 1
            continue
        md: tuple[int, int] | None = None
        if w in _MONTHS and nxt is not None and (dm := _DAY.match(nxt)):  # "december 3"
            md = (_MONTHS[w], int(dm[1]))
        elif (dm := _DAY.match(w)) and nxt is not None and nxt in _MONTHS:  # "3 декабря"
            md = (_MONTHS[nxt], int(dm[1]))
        if md is not None:
            i += 2
            if i < len(words) and (ym := _YEAR.match(words[i])):
                set_day(_mkdate(int(ym[1]), *md))
                i += 1
                while i < len(words) and words[i] in ("г", "г.", "года"):
                    i += 1
            elif day is not None or pending_month_day is not None:
                raise DateError("дата указана дважды", "the date is given twice")
            else:
                pending_month_day = md
            continue
        if (m := re.match(r"^(\d{1,2})$", w)) and nxt in ("am", "pm"):
            set_time(_hour(int(m[1]), 0, nxt))
            i += 2
            continue
        raise DateError(f"не понял «{w}» в дате", f"did not understand “{w}” in the date")

    if pending_month_day is not None:
        month, d = pending_month_day
        candidate = _mkdate(today.year, month, d) if not (month == 2 and d == 29) else None
        if candidate is None or candidate < today:
            candidate = _mkdate(today.year + 1, month, d)
        day = candidate
    if day is None and at is None:
        raise DateError("не указаны дата и время", "no date or time given")
    if at is None:
        if need_time:
            raise DateError("укажите время, например 15:00", "give a time, e.g. 15:00 or 3pm")
        at = time(23, 59)
    if day is None:
        day = today
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


# --- validation -----------------------------------------------------------------------------------


def validate(
    lang: Lang,
    now: datetime,
    *,
    title: str | None,
    starts_at: datetime | None,
    capacity: int | None,
    deadline: datetime | None,
) -> ParseError | None:
    """Check the fields of a new or edited event; ``None`` means valid (an edit passes the merged values)."""
    if title is not None:
        if not title.strip():
            return ParseError(lang, t(lang, "Название не может быть пустым.", "The title cannot be empty."))
        if len(title) > MAX_TITLE:
            return ParseError(
                lang,
                t(
                    lang,
                    f"Название длиннее {MAX_TITLE} символов ({len(title)}). Сократите его.",
                    f"The title is longer than {MAX_TITLE} characters ({len(title)}). Please shorten it.",
                ),
            )
    if capacity is not None and not 1 <= capacity <= MAX_CAPACITY:
        return ParseError(
            lang,
            t(
                lang,
                f"Вместимость должна быть от 1 до {MAX_CAPACITY}, а не {capacity}.",
                f"Capacity must be between 1 and {MAX_CAPACITY}, not {capacity}.",
            ),
        )
    if starts_at is not None and starts_at <= now:
        return ParseError(
            lang,
            t(lang, "Это время уже прошло. Укажите будущее.", "That time is in the past. Give a future one."),
        )
    if deadline is not None:
        if deadline <= now:
            return ParseError(
                lang, t(lang, "Срок записи уже прошёл.", "The RSVP deadline is already in the past.")
            )
        if starts_at is not None and deadline > starts_at:
            return ParseError(
                lang,
                t(
                    lang,
                    "Срок записи позже начала события. Укажите срок до начала.",
                    "The RSVP deadline is after the start. Give a deadline before the event starts.",
                ),
            )
    return None


# --- the parser -----------------------------------------------------------------------------------


def parse_command(text: str, now: datetime, tz: ZoneInfo) -> Command | ParseError | None:
    """Parse one message body; ``None`` if the message is not a command for this bot."""
    stripped = text.strip()
    if not stripped.startswith("!"):
        return None
    first = stripped.split(maxsplit=1)[0].lower()
    lang: Lang = "ru" if re.search("[а-яё]", first) else "en"
    if first in _WHO_WORDS:  # the term is free text: quotes in it are not an error
        lang = _WHO_WORDS[first]
        term = stripped[len(first) :].strip().strip('"«»“”„').strip()
        if not term:
            return ParseError(
                lang,
                t(
                    lang,
                    "Формат: !кто ФАМИЛИЯ, должность, отдел или телефон — например: !кто Иванов",
                    "Usage: !who NAME, title, department or phone — e.g. !who Ivanov",
                ),
            )
        return Who(lang, term)
    try:
        tokens = tokenize(stripped)
    except _TokenError as e:
        return ParseError(
            lang, t(lang, f"Не закрыта кавычка {e.args[0]}.", f"A quote {e.args[0]} is not closed.")
        )
    head = tokens[0].low
    rest = tokens[1:]
    if head == "!не" and rest and rest[0].low == "иду":
        head, rest = "!неиду", rest[1:]
    if head == "!not" and rest and rest[0].low == "going":
        head, rest = "!notgoing", rest[1:]
    if head in _HELP_WORDS:
        return Help(_HELP_WORDS[head])
    if head in _RSVP_WORDS:
        lang, answer = _RSVP_WORDS[head]
        if len(rest) > 1:
            return ParseError(lang, t(lang, f"Формат: {head} ID", f"Usage: {head} ID"))
        return RsvpCommand(lang, normalise_id(rest[0].text) if rest else None, answer)
    if head not in _EVENT_WORDS:
        return None
    lang = _EVENT_WORDS[head]
    if not rest:
        return ListEvents(lang) if head in ("!events", "!события") else Help(lang)
    sub = rest[0]
    args = rest[1:]
    if sub.quoted:  # "!событие "Title" ..." is a create
        return _parse_fields(lang, rest, now, tz, create=True)
    word = sub.low
    if word in _CREATE:
        return _parse_fields(lang, args, now, tz, create=True)
    if word in _LIST:
        return ListEvents(lang)
    if word in _HELP:
        return Help(lang)
    if word in _SHOW | _EXPORT | _CANCEL:
        if len(args) > 1:
            return ParseError(lang, t(lang, f"Формат: {head} {sub.text} ID", f"Usage: {head} {sub.text} ID"))
        eid = normalise_id(args[0].text) if args else None
        if word in _SHOW:
            return ShowEvent(lang, eid)
        if word in _EXPORT:
            return ExportEvent(lang, eid)
        if eid is None:
            return ParseError(lang, t(lang, "Укажите ID события.", "Give the event ID."))
        return CancelEvent(lang, eid)
    if word in _EDIT:
        if not args:
            return ParseError(lang, t(lang, "Укажите ID события.", "Give the event ID."))
        return _parse_fields(lang, args[1:], now, tz, create=False, event_id=normalise_id(args[0].text))
    return Help(lang, unknown=sub.text)


def _parse_fields(
    lang: Lang,
    tokens: list[Token],
    now: datetime,
    tz: ZoneInfo,
    *,
    create: bool,
    event_id: EventID | None = None,
) -> CreateEvent | EditEvent | ParseError:
    tokens = _number_before_seats(tokens)
    title: str | None = None
    if create:
        if not tokens or not tokens[0].quoted:
            return ParseError(
                lang,
                t(
                    lang,
                    'Название пишется в кавычках: !событие создать "Совещание" завтра 15:00 место "каб. 301"',
                    'Put the title in quotes: !event create "Meeting" tomorrow 3pm place "Room 301"',
                ),
            )
        title = tokens[0].text.strip()
        tokens = tokens[1:]
    when_words: list[str] = []
    place: str | None = None
    capacity: int | None = None
    deadline_words: list[str] | None = None
    unit: str | None = None
    private = False
    current: str = "when" if create else ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        w = tok.low
        if not tok.quoted and w in _PLACE | _CAPACITY | _DEADLINE | _AUDIENCE | _PRIVATE | _TITLE | _WHEN:
            current = ""
            value = tokens[i + 1] if i + 1 < len(tokens) else None
            if w in _PRIVATE:
                private = True
                i += 2 if value is not None and value.low in _PRIVATE_FILLER else 1
                continue
            if w in _DEADLINE:
                deadline_words = []
                current = "deadline"
                i += 1
                while i < len(tokens) and tokens[i].low in _DEADLINE_FILLER and not tokens[i].quoted:
                    i += 1
                continue
            if w in _WHEN and not create:
                current = "when"
                i += 1
                continue
            if value is None:
                return ParseError(
                    lang, t(lang, f"После «{tok.text}» нет значения.", f"No value after “{tok.text}”.")
                )
            if w in _PLACE:
                place = value.text.strip()
            elif w in _CAPACITY:
                if not re.fullmatch(r"-?\d+", value.text):
                    return ParseError(
                        lang,
                        t(
                            lang,
                            f"Вместимость — целое число, а не «{value.text}».",
                            f"Capacity must be a whole number, not “{value.text}”.",
                        ),
                    )
                capacity = int(value.text)
            elif w in _AUDIENCE:
                unit = value.text.strip()
            elif w in _TITLE:
                title = value.text.strip()
            i += 2
            continue
        if current == "when":
            when_words.append(tok.text)
        elif current == "deadline" and deadline_words is not None:
            deadline_words.append(tok.text)
        else:
            return ParseError(
                lang,
                t(
                    lang,
                    f"Не понял «{tok.text}». Напишите !событие помощь.",
                    f"Did not understand “{tok.text}”. Try !event help.",
                ),
            )
        i += 1

    starts_at: datetime | None = None
    deadline: datetime | None = None
    try:
        if when_words or create:
            starts_at = parse_when(when_words, now, tz, need_time=True)
        if deadline_words is not None:
            deadline = parse_when(deadline_words, now, tz, need_time=False)
    except DateError as e:
        what = t(lang, "Не понял дату: ", "Could not read the date: ")
        hint = t(
            lang,
            " Примеры: 2026-12-03 15:00, 03.12.2026 15:00, 3 декабря 15:00, завтра 15:00, в пятницу 10:00.",
            " Examples: 2026-12-03 15:00, 03.12.2026 15:00, December 3 3pm, tomorrow 3pm, friday 10am.",
        )
        return ParseError(lang, what + t(lang, e.ru, e.en) + "." + hint)
    # "до 2026-12-03" with the start on that same day means "before it starts", not "until midnight".
    if (
        deadline is not None
        and starts_at is not None
        and deadline > starts_at
        and deadline_words is not None
        and deadline.astimezone(tz).date() == starts_at.astimezone(tz).date()
        and not any(":" in w or w.lower().endswith(("am", "pm")) for w in deadline_words)
    ):
        deadline = starts_at
    err = validate(lang, now, title=title, starts_at=starts_at, capacity=capacity, deadline=deadline)
    if err is not None:
        return err
    if create:
        assert title is not None and starts_at is not None
        return CreateEvent(lang, title, starts_at, place, capacity, deadline, unit, private)
    assert event_id is not None
    if title is None and starts_at is None and place is None and capacity is None and deadline is None:
        return ParseError(
            lang,
            t(
                lang,
                'Что изменить? Например: !событие изменить ID когда завтра 16:00 место "каб. 2"',
                'What should change? E.g. !event edit ID when tomorrow 4pm place "Room 2"',
            ),
        )
    return EditEvent(lang, event_id, title, starts_at, place, capacity, deadline)


def _number_before_seats(tokens: list[Token]) -> list[Token]:
    """Rewrite "40 мест" / "40 seats" into "мест 40" so the keyword loop sees one form."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            not t.quoted
            and re.fullmatch(r"-?\d+", t.text)
            and nxt is not None
            and not nxt.quoted
            and nxt.low in _CAPACITY_AFTER
            and not (out and not out[-1].quoted and out[-1].low in _CAPACITY)
        ):
            out += [Token("мест", False), t]
            i += 2
            continue
        out.append(t)
        i += 1
    return out
