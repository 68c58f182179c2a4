"""Command parsing in both languages, table-driven, with a fixed clock (Sunday 29 Nov 2026, 10:00 Moscow)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.events.commands import (
    CancelEvent,
    CreateEvent,
    EditEvent,
    ExportEvent,
    Help,
    ListEvents,
    ParseError,
    RsvpCommand,
    ShowEvent,
    parse_command,
    tokenize,
)
from bridge.events.model import Answer

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)  # 10:00 in Moscow, a Sunday


def msk(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=MSK).astimezone(UTC)


def p(text: str) -> object:
    return parse_command(text, NOW, MSK)


CREATE_CASES = [
    (
        '!event create "Совещание по благоустройству" 2026-12-03 15:00 place "каб. 301" capacity 40 '
        "deadline 2026-12-02",
        CreateEvent("en", "Совещание по благоустройству", msk(2026, 12, 3, 15), "каб. 301", 40,
                    msk(2026, 12, 2, 23, 59), None, False),
    ),
    (
        '!событие создать "Планёрка" завтра 15:00 место "каб. 1" 40 мест до завтра 12:00 подразделение fin '
        "закрытый список",
        CreateEvent("ru", "Планёрка", msk(2026, 11, 30, 15), "каб. 1", 40, msk(2026, 11, 30, 12), "fin", True),
    ),
    ('!событие "Обучение" 03.12.2026 15:00', CreateEvent("ru", "Обучение", msk(2026, 12, 3, 15), None, None,
                                                          None, None, False)),
    ('!событие «Приём граждан» 3 декабря 15:00 вместимость 10', CreateEvent("ru", "Приём граждан",
                                                                             msk(2026, 12, 3, 15), None, 10, None,
                                                                             None, False)),
    ('!event create "X" tomorrow 3pm', CreateEvent("en", "X", msk(2026, 11, 30, 15), None, None, None, None, False)),
    ('!event create "X" today 17:30', CreateEvent("en", "X", msk(2026, 11, 29, 17, 30), None, None, None, None,
                                                  False)),
    ('!событие создать "X" послезавтра 10:00', CreateEvent("ru", "X", msk(2026, 12, 1, 10), None, None, None,
                                                           None, False)),
    ('!событие создать "X" в пятницу 10:00', CreateEvent("ru", "X", msk(2026, 12, 4, 10), None, None, None, None,
                                                         False)),
    ('!event create "X" friday 10am', CreateEvent("en", "X", msk(2026, 12, 4, 10), None, None, None, None, False)),
    # Today is Sunday: "sunday" means next week, not today.
    ('!event create "X" sunday 10am', CreateEvent("en", "X", msk(2026, 12, 6, 10), None, None, None, None, False)),
    ('!event create "X" December 3, 2026 3:30 pm', CreateEvent("en", "X", msk(2026, 12, 3, 15, 30), None, None,
                                                                None, None, False)),
    # No year and the date has passed this year: next year.
    ('!event create "X" 5 января 09:00', CreateEvent("en", "X", msk(2027, 1, 5, 9), None, None, None, None, False)),
    ('!event create "X" 2026-12-03T15:00 private', CreateEvent("en", "X", msk(2026, 12, 3, 15), None, None, None,
                                                                None, True)),
    ('!event create "X" 03.12 15:00 deadline 02.12 audience "Управа района"',
     CreateEvent("en", "X", msk(2026, 12, 3, 15), None, None, msk(2026, 12, 2, 23, 59), "Управа района", False)),
    # A deadline on the day of the event without a time means "before it starts".
    ('!event create "X" 2026-12-03 15:00 deadline 2026-12-03',
     CreateEvent("en", "X", msk(2026, 12, 3, 15), None, None, msk(2026, 12, 3, 15), None, False)),
    ('!событие создать "X" завтра в 15.00 срок записи сегодня 20:00',
     CreateEvent("ru", "X", msk(2026, 11, 30, 15), None, None, msk(2026, 11, 29, 20), None, False)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CREATE_CASES)
def test_create(text: str, expected: CreateEvent) -> None:
    assert p(text) == expected


MORE_DATES = [
    ('!событие "X" 3 декабря 2026 г. 15:00', msk(2026, 12, 3, 15)),
    ('!event create "X" Dec 3rd 2026 at 9am', msk(2026, 12, 3, 9)),
    ('!event create "X" 3 dec 12:30 pm', msk(2026, 12, 3, 12, 30)),
    ('!event create "X" 12am tomorrow', msk(2026, 11, 30, 0, 0)),
    ('!событие "X" 31.12.26 23:59', msk(2026, 12, 31, 23, 59)),
]


@pytest.mark.parametrize(("text", "when"), MORE_DATES)
def test_more_date_forms(text: str, when: datetime) -> None:
    r = p(text)
    assert isinstance(r, CreateEvent), r
    assert r.starts_at == when


ERROR_CASES = [
    ('!event create "X" 2020-01-01 10:00', "en", "past"),
    ('!событие создать "X" 2020-01-01 10:00', "ru", "прошло"),
    ('!event create "X" today 09:00', "en", "past"),  # 09:00 < 10:00 now
    ('!event create "X" tomorrow', "en", "give a time"),
    ('!событие создать "X" завтра', "ru", "укажите время"),
    ('!event create "X" tomorrow 3pm capacity 0', "en", "between 1 and 100000"),
    ('!event create "X" tomorrow 3pm capacity 100001', "en", "between 1 and 100000"),
    ('!событие создать "X" завтра 15:00 вместимость -5', "ru", "от 1 до 100000"),
    ('!event create "X" tomorrow 3pm capacity lots', "en", "whole number"),
    ('!event create "" tomorrow 3pm', "en", "cannot be empty"),
    ('!event create "' + "a" * 201 + '" tomorrow 3pm', "en", "longer than 200"),
    ('!событие создать "' + "я" * 201 + '" завтра 15:00', "ru", "длиннее 200"),
    ('!event create "X" tomorrow 3pm deadline 2026-12-05', "en", "after the start"),
    ('!событие создать "X" завтра 15:00 до 2026-12-05', "ru", "позже начала"),
    ('!event create "X" 2026-02-30 10:00', "en", "no such date"),
    ('!event create "X" 25:00', "en", "does not exist"),
    ('!event create "X" 13pm tomorrow', "en", "1 to 12"),
    ('!event create "X" 3 December 4 December 10:00', "en", "twice"),
    ('!event create "X" tomorrow 10:00 11:00', "en", "twice"),
    ('!event create "X" yesterday 3pm', "en", "yesterday"),
    ("!event create Meeting tomorrow 3pm", "en", "in quotes"),
    ('!event create "unterminated tomorrow', "en", "not closed"),
    ('!event create "X" tomorrow 3pm place', "en", "No value"),
    ("!event edit abcde", "en", "What should change"),
    # A date keyword with no date, or a date keyword named again, is said, not guessed at: joined, the two
    # deadlines below would read as "tomorrow 03:12".
    ("!event edit abcde when", "en", "no date or time given"),
    ('!событие создать "X" 2026-12-03 15:00 до завтра срок 03.12', "ru", "«срок» второй раз"),
    ('!event create "X" tomorrow when 3pm', "en", "“when” a second time"),
    ("!event cancel", "en", "Give the event ID"),
]


@pytest.mark.parametrize(("text", "lang", "fragment"), ERROR_CASES)
def test_errors(text: str, lang: str, fragment: str) -> None:
    r = p(text)
    assert isinstance(r, ParseError), r
    assert r.lang == lang
    assert fragment in r.message


OTHER_CASES = [
    ("!event list", ListEvents("en")),
    ("!события", ListEvents("ru")),
    ("!событие список", ListEvents("ru")),
    ("!event show AB3CD", ShowEvent("en", "ab3cd")),  # type: ignore[arg-type]
    ("!событие показать ab3cd", ShowEvent("ru", "ab3cd")),  # type: ignore[arg-type]
    ("!event export ab3cd", ExportEvent("en", "ab3cd")),  # type: ignore[arg-type]
    ("!событие экспорт", ExportEvent("ru", None)),
    ("!event cancel ab3cd", CancelEvent("en", "ab3cd")),  # type: ignore[arg-type]
    ("!событие отменить ab3cd", CancelEvent("ru", "ab3cd")),  # type: ignore[arg-type]
    ("!going ab3cd", RsvpCommand("en", "ab3cd", Answer.GOING)),  # type: ignore[arg-type]
    ("!maybe ab3cd", RsvpCommand("en", "ab3cd", Answer.MAYBE)),  # type: ignore[arg-type]
    ("!notgoing ab3cd", RsvpCommand("en", "ab3cd", Answer.NOT_GOING)),  # type: ignore[arg-type]
    ("!not going ab3cd", RsvpCommand("en", "ab3cd", Answer.NOT_GOING)),  # type: ignore[arg-type]
    ("!иду ab3cd", RsvpCommand("ru", "ab3cd", Answer.GOING)),  # type: ignore[arg-type]
    ("!возможно ab3cd", RsvpCommand("ru", "ab3cd", Answer.MAYBE)),  # type: ignore[arg-type]
    ("!не иду ab3cd", RsvpCommand("ru", "ab3cd", Answer.NOT_GOING)),  # type: ignore[arg-type]
    # Typed on a Russian layout: Cyrillic look-alikes map to the Latin id.
    ("!иду аb3сd", RsvpCommand("ru", "ab3cd", Answer.GOING)),  # type: ignore[arg-type]
    ("!иду", RsvpCommand("ru", None, Answer.GOING)),
    ("!event help", Help("en")),
    ("!событие помощь", Help("ru")),
    ("!помощь", Help("ru")),
    ("!event", Help("en")),
    ("!event frobnicate", Help("en", "frobnicate")),
    ("!событие сломать", Help("ru", "сломать")),
    ("!event edit ab3cd when tomorrow 16:00 place \"Room 2\"",
     EditEvent("en", "ab3cd", None, msk(2026, 11, 30, 16), "Room 2", None, None)),  # type: ignore[arg-type]
    # The date of a create may also follow its keyword.
    ('!event create "X" when 2026-12-03 15:00 place "A"',
     CreateEvent("en", "X", msk(2026, 12, 3, 15), "A", None, None, None, False)),
    ("!событие изменить ab3cd название \"Новое\" вместимость 12",
     EditEvent("ru", "ab3cd", "Новое", None, None, 12, None)),  # type: ignore[arg-type]
    # Not for this bot: other bots' commands and plain chat are left alone.
    ("!remindme 5m", None),
    ("hello !event", None),
    ("event create", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), OTHER_CASES)
def test_other(text: str, expected: object) -> None:
    assert p(text) == expected


def test_timezone_is_configurable() -> None:
    r = parse_command('!event create "X" 2026-12-03 15:00', NOW, ZoneInfo("Asia/Vladivostok"))
    assert isinstance(r, CreateEvent)
    assert r.starts_at == datetime(2026, 12, 3, 5, 0, tzinfo=UTC)


def test_tokenizer_quotes() -> None:
    assert [t.text for t in tokenize('a "b c" «d e» “f g”')] == ["a", "b c", "d e", "f g"]
