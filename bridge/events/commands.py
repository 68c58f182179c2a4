"""Parse chat commands in Russian and English into typed commands, or a typed error with a message to show.

Pure: the current time and the organisation's time zone are arguments, so relative dates ("завтра 15:00",
"friday 10am") are deterministic in tests. A text that is not addressed to this bot yields ``None`` so
other bots in the room keep their own ``!`` commands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
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
    # People named as the directory search finds them, @mentions, logins or units (see ``invitees``).
    invite: tuple[str, ...] = ()  # required, like ``required``
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InviteEvent:
    """``!event invite ID people``: invite more people to an event (``invite``/``required`` are required)."""

    lang: Lang
    event_id: EventID
    invite: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NudgeEvent:
    """``!event nudge ID``: remind the required invitees who have not answered, once per person and while."""

    lang: Lang
    event_id: EventID


@dataclass(frozen=True, slots=True)
class CheckIn:
    """``!here ID`` (``people`` empty: the sender) or ``!event checkin ID people`` (the organiser)."""

    lang: Lang
    event_id: EventID | None
    people: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CloseList:
    """``!event close ID``: the attendance list is final; check-ins are refused from now on."""

    lang: Lang
    event_id: EventID


@dataclass(frozen=True, slots=True)
class MyEvents:
    """``!my`` / ``!мои``: the sender's upcoming events across all rooms, with their answer."""

    lang: Lang


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
    audience_unit: str | None = None  # a new audience: announced in the rooms it adds, withdrawn from others
    private: bool | None = None


@dataclass(frozen=True, slots=True)
class UninviteEvent:
    """``!event uninvite ID people``: withdraw invitations; answers already given stay."""

    lang: Lang
    event_id: EventID
    people: tuple[str, ...]


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
    CreateEvent
    | EditEvent
    | CancelEvent
    | ListEvents
    | ShowEvent
    | ExportEvent
    | RsvpCommand
    | Help
    | Who
    | InviteEvent
    | NudgeEvent
    | CheckIn
    | CloseList
    | MyEvents
    | UninviteEvent
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

_CREATE = {"create", "new", "add", "создать", "новое", "новый", "добавить"}
_LIST = {"list", "ls", "список", "все"}
_SHOW = {"show", "info", "показать", "покажи", "инфо", "кто"}
_EXPORT = {"export", "csv", "экспорт", "выгрузить", "выгрузка"}
_EDIT = {"edit", "change", "update", "изменить", "правка", "редактировать"}
_CANCEL = {"cancel", "delete", "отменить", "отмена", "удалить"}
_HELP = {"help", "?", "помощь", "справка"}
_INVITE = {"invite", "пригласить"}
_UNINVITE = {"uninvite", "отозвать", "исключить"}
_NUDGE = {"nudge", "напомнить", "поторопить"}
_CHECKIN = {"checkin", "check-in", "отметить"}
_CLOSE = {"close", "закрыть"}

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
_HERE_WORDS: dict[str, Lang] = {
    "!here": "en",
    "!пришёл": "ru",
    "!пришел": "ru",
    "!пришла": "ru",
    "!здесь": "ru",
}
_MY_WORDS: dict[str, Lang] = {"!my": "en", "!мои": "ru"}


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


@dataclass(slots=True)
class _DateParts:
    """What a date phrase said so far; each setter refuses a part given twice."""

    today: date
    day: date | None = None
    at: time | None = None
    month_day: tuple[int, int] | None = None  # the year not given yet: decided at the end

    def set_day(self, d: date) -> None:
        self._no_date_yet()
        self.day = d

    def set_month_day(self, md: tuple[int, int]) -> None:
        self._no_date_yet()
        self.month_day = md

    def _no_date_yet(self) -> None:
        if self.day is not None or self.month_day is not None:
            raise DateError("дата указана дважды", "the date is given twice")

    def set_time(self, at: time) -> None:
        if self.at is not None:
            raise DateError("время указано дважды", "the time is given twice")
        self.at = at

    def result(self, tz: ZoneInfo, *, need_time: bool) -> datetime:
        day = self.day
        if self.month_day is not None:
            month, d = self.month_day
            day = _mkdate(self.today.year, month, d) if not (month == 2 and d == 29) else None
            if day is None or day < self.today:
                day = _mkdate(self.today.year + 1, month, d)
        if day is None and self.at is None:
            raise DateError("не указаны дата и время", "no date or time given")
        at = self.at
        if at is None:
            if need_time:
                raise DateError("укажите время, например 15:00", "give a time, e.g. 15:00 or 3pm")
            at = time(23, 59)
        return datetime.combine(day or self.today, at, tzinfo=tz).astimezone(UTC)


# Each form of a date phrase reads the words at ``i`` into the parts and says how many it took (0: not its
# form). They are tried in the order of _DATE_FORMS; the first that takes the words wins.


def _filler(p: _DateParts, words: list[str], i: int) -> int:
    return 1 if words[i] in _FILLER else 0


def _iso(p: _DateParts, words: list[str], i: int) -> int:
    if not (m := _ISO_DT.match(words[i])):
        return 0
    p.set_day(_mkdate(int(m[1]), int(m[2]), int(m[3])))
    if m[4]:
        p.set_time(_hour(int(m[4]), int(m[5]), None))
    return 1


def _dotted(p: _DateParts, words: list[str], i: int) -> int:
    # "03.12" is a date unless the date is known ("завтра 15.00") or it cannot be one ("15.00").
    m = _DOTTED.match(words[i])
    if not m or not (m[3] or (p.day is None and p.month_day is None and 1 <= int(m[2]) <= 12)):
        return 0
    if m[3]:
        y = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
        p.set_day(_mkdate(y, int(m[2]), int(m[1])))
    else:
        p.set_month_day((int(m[2]), int(m[1])))
    return 1


def _clock_time(p: _DateParts, words: list[str], i: int) -> int:
    nxt = words[i + 1] if i + 1 < len(words) else None
    if m := _HHMM.match(words[i]):
        if m[3] is None and nxt in ("am", "pm"):  # "3:30 pm"
            p.set_time(_hour(int(m[1]), int(m[2]), nxt))
            return 2
        p.set_time(_hour(int(m[1]), int(m[2]), m[3]))
        return 1
    if m := _H_AMPM.match(words[i]):  # "3pm"
        p.set_time(_hour(int(m[1]), 0, m[2]))
        return 1
    return 0


def _named_day(p: _DateParts, words: list[str], i: int) -> int:
    w = words[i]
    if w in _RELATIVE:
        p.set_day(p.today + timedelta(days=_RELATIVE[w]))
    elif w in _WEEKDAYS:  # its next occurrence after today
        p.set_day(p.today + timedelta(days=(_WEEKDAYS[w] - p.today.weekday()) % 7 or 7))
    else:
        return 0
    return 1


def _month_and_day(p: _DateParts, words: list[str], i: int) -> int:
    w = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else None
    if nxt is None:
        return 0
    if w in _MONTHS and (dm := _DAY.match(nxt)):  # "december 3"
        md = (_MONTHS[w], int(dm[1]))
    elif (dm := _DAY.match(w)) and nxt in _MONTHS:  # "3 декабря"
        md = (_MONTHS[nxt], int(dm[1]))
    else:
        return 0
    j = i + 2
    if j < len(words) and (ym := _YEAR.match(words[j])):
        p.set_day(_mkdate(int(ym[1]), *md))
        j += 1
        while j < len(words) and words[j] in ("г", "г.", "года"):
            j += 1
    else:
        p.set_month_day(md)
    return j - i


def _bare_hour(p: _DateParts, words: list[str], i: int) -> int:
    nxt = words[i + 1] if i + 1 < len(words) else None
    if not (m := re.match(r"^(\d{1,2})$", words[i])) or nxt not in ("am", "pm"):  # "3 pm"
        return 0
    p.set_time(_hour(int(m[1]), 0, nxt))
    return 2


_DATE_FORMS = (_filler, _iso, _dotted, _clock_time, _named_day, _month_and_day, _bare_hour)


def parse_when(words: list[str], now: datetime, tz: ZoneInfo, *, need_time: bool) -> datetime:
    """Parse a date-and-time phrase in the organisation's zone; return an aware UTC datetime.

    Without a year the next such date is meant; a weekday means its next occurrence after today; a date
    without a time is an error for a start (``need_time``) and the end of that day for a deadline.
    """
    parts = _DateParts(now.astimezone(tz).date())
    words = [w.lower().strip(",") for w in words if w.strip(",")]
    i = 0
    while i < len(words):
        for form in _DATE_FORMS:
            if took := form(parts, words, i):
                i += took
                break
        else:
            raise DateError(f"не понял «{words[i]}» в дате", f"did not understand “{words[i]}” in the date")
    return parts.result(tz, need_time=need_time)


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
    if head in _MY_WORDS:
        return MyEvents(_MY_WORDS[head])
    if head in _HERE_WORDS:
        lang = _HERE_WORDS[head]
        if len(rest) > 1:
            return ParseError(lang, t(lang, f"Формат: {head} ID", f"Usage: {head} ID"))
        return CheckIn(lang, normalise_id(rest[0].text) if rest else None)
    if head in _RSVP_WORDS:
        lang, answer = _RSVP_WORDS[head]
        if len(rest) > 1:
            return ParseError(lang, t(lang, f"Формат: {head} ID", f"Usage: {head} ID"))
        return RsvpCommand(lang, normalise_id(rest[0].text) if rest else None, answer)
    if head not in _EVENT_WORDS:
        return None
    return _parse_event_command(head, rest, now, tz)


def _parse_event_command(head: str, rest: list[Token], now: datetime, tz: ZoneInfo) -> Command | ParseError:
    """``!event ...`` / ``!событие ...``: the sub-command is the first word (a quoted title means create)."""
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
    if word in _EDIT | _INVITE | _UNINVITE | _NUDGE | _CHECKIN | _CLOSE and not args:
        return ParseError(lang, t(lang, "Укажите ID события.", "Give the event ID."))
    if word in _EDIT:
        return _parse_fields(lang, args[1:], now, tz, create=False, event_id=normalise_id(args[0].text))
    if word not in _INVITE | _UNINVITE | _NUDGE | _CHECKIN | _CLOSE:
        return Help(lang, unknown=sub.text)
    eid = normalise_id(args[0].text)
    if word in _NUDGE | _CLOSE:
        if len(args) > 1:
            return ParseError(lang, t(lang, f"Формат: {head} {sub.text} ID", f"Usage: {head} {sub.text} ID"))
        return NudgeEvent(lang, eid) if word in _NUDGE else CloseList(lang, eid)
    if word in _INVITE:
        return _parse_invite(lang, eid, args[1:], now, tz)
    items = split_people([a.text for a in args[1:]])
    if not items:
        return ParseError(lang, t(lang, f"Кого? {head} {sub.text} ID Иванов, Петров",
                                  f"Whom? {head} {sub.text} ID Ivanov, Petrov"))  # fmt: skip
    return CheckIn(lang, eid, items) if word in _CHECKIN else UninviteEvent(lang, eid, items)


def _parse_invite(
    lang: Lang, eid: EventID, tokens: list[Token], now: datetime, tz: ZoneInfo
) -> InviteEvent | ParseError:
    try:
        d = _read_fields(tokens, Draft(), now, tz, start=INVITE)
    except FieldError as e:
        return ParseError(lang, t(lang, e.ru, e.en))
    if not (d.invite or d.required or d.optional):
        return ParseError(
            lang,
            t(
                lang,
                "Кого пригласить? Например: !событие пригласить ID Иванов, «Петров Отдел ЖКХ» "
                "необязательно Сидоров",
                'Whom to invite? E.g. !event invite ID Ivanov, "Petrov Housing" optional Sidorov',
            ),
        )
    return InviteEvent(lang, eid, d.invite, d.required, d.optional)


def _parse_fields(
    lang: Lang,
    tokens: list[Token],
    now: datetime,
    tz: ZoneInfo,
    *,
    create: bool,
    event_id: EventID | None = None,
) -> CreateEvent | EditEvent | ParseError:
    tokens = _number_before_keyword(tokens)
    draft = Draft()
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
        draft.title = tokens[0].text.strip()
        tokens = tokens[1:]
    try:
        d = _read_fields(tokens, draft, now, tz, start=WHEN if create else None)
    except FieldError as e:
        return ParseError(lang, t(lang, e.ru, e.en))
    # "до 2026-12-03" with the start on that same day means "before it starts", not "until midnight".
    if (
        d.deadline is not None
        and d.starts_at is not None
        and d.deadline > d.starts_at
        and not d.deadline_has_time
        and d.deadline.astimezone(tz).date() == d.starts_at.astimezone(tz).date()
    ):
        d.deadline = d.starts_at
    err = validate(lang, now, title=d.title, starts_at=d.starts_at, capacity=d.capacity, deadline=d.deadline)
    if err is not None:
        return err
    if create:
        assert d.title is not None and d.starts_at is not None
        return CreateEvent(
            lang, d.title, d.starts_at, d.place, d.capacity, d.deadline, d.audience, bool(d.private),
            d.invite, d.required, d.optional,
        )  # fmt: skip
    assert event_id is not None
    if d.invite or d.required or d.optional:
        return ParseError(
            lang,
            t(
                lang,
                f"Пригласить людей к событию: !событие пригласить {event_id} Иванов, Петров",
                f"To invite people to an event: !event invite {event_id} Ivanov, Petrov",
            ),
        )
    if (d.title, d.starts_at, d.place, d.capacity, d.deadline, d.audience, d.private) == (None,) * 7:
        return ParseError(
            lang,
            t(
                lang,
                'Что изменить? Например: !событие изменить ID когда завтра 16:00 место "каб. 2"',
                'What should change? E.g. !event edit ID when tomorrow 4pm place "Room 2"',
            ),
        )
    return EditEvent(
        lang, event_id, d.title, d.starts_at, d.place, d.capacity, d.deadline, d.audience, d.private
    )


# --- the fields of a create or edit command --------------------------------------------------------
#
# One row of FIELDS per field: its keywords in Russian and English, how many tokens it takes, and how it reads
# them. The loop in _read_fields knows no field by name, so a new field is a new row (and its attribute on
# Draft and on the command it ends up in).


class Takes(Enum):
    """What follows a field's keyword."""

    NOTHING = "nothing"  # a flag: the keyword alone ("private")
    ONE = "one"  # the next token, quoted or not ("place "Room 301"")
    WORDS = "words"  # every token up to the next keyword ("deadline friday 10am")


class FieldError(Exception):
    """A field's value that cannot be read, with the message to show in each language."""

    def __init__(self, ru: str, en: str) -> None:
        super().__init__(en)
        self.ru = ru
        self.en = en


@dataclass(slots=True)
class Draft:
    """What the fields of one create or edit command said; ``None`` means "not given"."""

    title: str | None = None
    starts_at: datetime | None = None
    place: str | None = None
    capacity: int | None = None
    deadline: datetime | None = None
    deadline_has_time: bool = False  # "до 2026-12-03" alone may mean "before it starts" (see _parse_fields)
    audience: str | None = None
    private: bool | None = None  # None: not said (a new event is public, an edit keeps it)
    invite: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


Reader = Callable[[Draft, list[str], datetime, ZoneInfo], None]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of ``!event create`` / ``!event edit``."""

    name: str  # also one of its keywords: "40 мест" is read as "capacity 40"
    keywords: frozenset[str]  # lower case, Russian and English
    takes: Takes
    read: Reader  # stores the value in the draft, or raises FieldError
    fillers: frozenset[str] = frozenset()  # words skipped right after the keyword ("срок записи до ...")
    after_number: frozenset[str] = frozenset()  # words that name the field after its number ("40 мест")


def _read_title(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.title = words[0].strip()


def _read_place(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.place = words[0].strip()


def _read_capacity(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    if not re.fullmatch(r"-?\d+", words[0]):
        raise FieldError(
            f"Вместимость — целое число, а не «{words[0]}».",
            f"Capacity must be a whole number, not “{words[0]}”.",
        )
    d.capacity = int(words[0])


def _read_audience(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.audience = words[0].strip()


def _read_private(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.private = True


def _read_public(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.private = False


def split_people(words: list[str]) -> tuple[str, ...]:
    """The people a field names: a quoted token is one ("Иванов Отдел ЖКХ"), an @mention is one, and other
    words run together up to a comma ("Иванов Иван, Петров" is two)."""
    items: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            items.append(" ".join(run))
            run.clear()

    for w in words:
        if " " in w.strip():  # only a quoted token has a space inside
            flush()
            items.append(w.strip())
            continue
        pieces = w.split(",")
        for j, piece in enumerate(pieces):
            if piece.startswith("@"):
                flush()
                items.append(piece)
            elif piece:
                run.append(piece)
            if j < len(pieces) - 1:
                flush()
    flush()
    return tuple(dict.fromkeys(items))


def _read_invite(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.invite = split_people(words)


def _read_required(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.required = split_people(words)


def _read_optional(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.optional = split_people(words)


def _read_date(words: list[str], now: datetime, tz: ZoneInfo, *, need_time: bool) -> datetime:
    try:
        return parse_when(words, now, tz, need_time=need_time)
    except DateError as e:
        raise FieldError(
            f"Не понял дату: {e.ru}. Примеры: 2026-12-03 15:00, 03.12.2026 15:00, 3 декабря 15:00, "
            "завтра 15:00, в пятницу 10:00.",
            f"Could not read the date: {e.en}. Examples: 2026-12-03 15:00, 03.12.2026 15:00, December 3 3pm, "
            "tomorrow 3pm, friday 10am.",
        ) from None


def _read_start(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.starts_at = _read_date(words, now, tz, need_time=True)


def _read_deadline(d: Draft, words: list[str], now: datetime, tz: ZoneInfo) -> None:
    d.deadline = _read_date(words, now, tz, need_time=False)
    d.deadline_has_time = any(":" in w or w.lower().endswith(("am", "pm")) for w in words)


def _words(*names: str) -> frozenset[str]:
    return frozenset(" ".join(names).split())


WHEN = Field("when", _words("when date time start", "когда дата время начало"), Takes.WORDS, _read_start)
INVITE = Field(
    "invite", _words("invite invitees", "пригласить приглашены участники"), Takes.WORDS, _read_invite
)
FIELDS: tuple[Field, ...] = (
    Field("title", _words("title name", "название заголовок"), Takes.ONE, _read_title),
    WHEN,  # read before the deadline: a wrong start is the error to show first
    Field("place", _words("place where location venue", "место где"), Takes.ONE, _read_place),
    Field(
        "capacity",
        _words("capacity limit seats", "вместимость мест места лимит"),
        Takes.ONE,
        _read_capacity,
        after_number=_words("seats people", "мест места человек чел чел."),
    ),
    Field(
        "deadline",
        _words("deadline until rsvp", "до срок"),
        Takes.WORDS,
        _read_deadline,
        fillers=_words("by", "записи регистрации ответа до"),
    ),
    Field("audience", _words("audience unit", "подразделение аудитория отдел"), Takes.ONE, _read_audience),
    Field(
        "private",
        _words("private", "закрытый закрыто приватно приватный"),
        Takes.NOTHING,
        _read_private,
        fillers=_words("list", "список"),
    ),
    Field(
        "public",
        _words("public open", "открытый открыто открытая"),
        Takes.NOTHING,
        _read_public,
        fillers=_words("list", "список"),
    ),
    INVITE,
    Field("required", _words("required", "обязательно обязательные"), Takes.WORDS, _read_required),
    Field("optional", _words("optional", "необязательно желающие"), Takes.WORDS, _read_optional),
)
_BY_KEYWORD: dict[str, Field] = {k: f for f in FIELDS for k in f.keywords}
# A keyword names one field, and each field answers to its own name.
assert len(_BY_KEYWORD) == sum(len(f.keywords) for f in FIELDS), "a keyword belongs to two fields"
assert all(f.name in f.keywords for f in FIELDS)


def _read_fields(
    tokens: list[Token], draft: Draft, now: datetime, tz: ZoneInfo, *, start: Field | None
) -> Draft:
    """Read the fields into ``draft`` (raises :class:`FieldError`).

    Tokens before the first keyword belong to ``start`` (the date of a create), and those after a
    ``Takes.WORDS`` keyword to that field until the next keyword; such a field named again after it has
    words is an error, a ``Takes.ONE`` field named again keeps the last value. Any other token is not
    understood.
    """
    runs: dict[str, list[str]] = {} if start is None else {start.name: []}
    current = start
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        field = None if tok.quoted else _BY_KEYWORD.get(tok.low)
        i += 1
        if field is None:
            if current is None:
                raise FieldError(
                    f"Не понял «{tok.text}». Напишите !событие помощь.",
                    f"Did not understand “{tok.text}”. Try !event help.",
                )
            runs[current.name].append(tok.text)
            continue
        while i < len(tokens) and not tokens[i].quoted and tokens[i].low in field.fillers:
            i += 1
        current = field if field.takes is Takes.WORDS else None
        if field.takes is Takes.WORDS:
            if runs.get(field.name):
                # Joined, "до завтра ... срок 03.12" would read as "tomorrow 03:12": say so instead.
                raise FieldError(
                    f"«{tok.text}» второй раз: это уже указано раньше.",
                    f"“{tok.text}” a second time: that is given already.",
                )
            runs[field.name] = []
        elif field.takes is Takes.NOTHING:
            field.read(draft, [], now, tz)
        elif i < len(tokens):
            field.read(draft, [tokens[i].text], now, tz)
            i += 1
        else:
            raise FieldError(f"После «{tok.text}» нет значения.", f"No value after “{tok.text}”.")
    for field in FIELDS:
        if field.name in runs:
            field.read(draft, runs[field.name], now, tz)
    return draft


def _number_before_keyword(tokens: list[Token]) -> list[Token]:
    """Rewrite "40 мест" / "40 seats" into "capacity 40" so that :func:`_read_fields` sees one form."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        field = _number_named_by(tok, nxt)
        if field is not None and not (out and not out[-1].quoted and out[-1].low in field.keywords):
            out += [Token(field.name, False), tok]
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _number_named_by(tok: Token, nxt: Token | None) -> Field | None:
    if tok.quoted or nxt is None or nxt.quoted or not re.fullmatch(r"-?\d+", tok.text):
        return None
    return next((f for f in FIELDS if nxt.low in f.after_number), None)
