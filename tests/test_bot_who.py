"""``!who`` / ``!кто``: parsing, the reply people see, and the lookup over the real search index and snapshot."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.bot.people import SnapshotPeople
from bridge.cli import BotConfigError, parse_config
from bridge.events.clock import ManualClock
from bridge.events.commands import ParseError, Who, parse_command
from bridge.events.model import MatrixEventID, Reply, RoomID, UserID
from bridge.events.render import FoundPerson, help_text, who_reply
from bridge.events.service import EventService, Settings
from bridge.events.store import Store, open_sqlite
from bridge.search.snapshot import IndexedPerson, write_snapshot

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
ROOM = RoomID("!any:x")
ASKER = UserID("@asker:x")

IVANOV = IndexedPerson(
    "@ivanov.ii:city.test", "Иванов Иван Иванович", "ivanov.ii", title="Начальник отдела",
    department=("Префектура ЮАО", "Отдел ЖКХ"), email="ivanov.ii@mos.ru", phone="+7 (495) 123-45-67",
)  # fmt: skip
IVANOVA = IndexedPerson(
    "@ivanova.ms:city.test", "Иванова Мария Сергеевна", "ivanova.ms", title="Главный специалист",
    department=("Префектура ЮАО", "Отдел ЖКХ"), phone="+7 495 765-43-21",
)  # fmt: skip
FEDOROV = IndexedPerson(
    "@fedorov.pa:city.test", "Фёдоров Пётр Алексеевич", "fedorov.pa", title="Специалист",
    department=("ГБУ МФЦ", "Единый контакт-центр"), phone="8 499 000-12-34",
)  # fmt: skip


# --- parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!who Ivanov", Who("en", "Ivanov")),
        ("!WHO  ivanov ivan ", Who("en", "ivanov ivan")),
        ("!кто Иванов", Who("ru", "Иванов")),
        ("!Кто Отдел ЖКХ", Who("ru", "Отдел ЖКХ")),
        ('!кто "Иванов Иван"', Who("ru", "Иванов Иван")),
        ("!кто «Иванов", Who("ru", "Иванов")),  # an unclosed quote is no error in free text
        ("!who 123-45-67", Who("en", "123-45-67")),
    ],
)
def test_parse(text: str, expected: Who) -> None:
    assert parse_command(text, NOW, MSK) == expected


@pytest.mark.parametrize(
    ("text", "lang", "fragment"), [("!who", "en", "Usage: !who"), ("!кто  ", "ru", "Формат: !кто")]
)
def test_empty_term_is_a_usage_line(text: str, lang: str, fragment: str) -> None:
    r = parse_command(text, NOW, MSK)
    assert isinstance(r, ParseError) and r.lang == lang and fragment in r.message


def test_other_bots_words_are_not_taken() -> None:
    assert parse_command("!whois Ivanov", NOW, MSK) is None
    assert parse_command("кто Иванов", NOW, MSK) is None


def test_help_mentions_who() -> None:
    assert "!who" in help_text("en").body
    assert "!кто" in help_text("ru").body


# --- rendering --------------------------------------------------------------------------------------------


def test_reply_lists_what_a_person_sees() -> None:
    people = [
        FoundPerson(
            "@ivanov.ii:city.test", "Иванов Иван", "Начальник отдела", "Префектура / Отдел ЖКХ", "123-45"
        )
    ]
    text = who_reply("ru", "Иванов", people, more=True)
    line = text.body.splitlines()[1]
    assert "Иванов Иван" in line and "Начальник отдела" in line and "Префектура / Отдел ЖКХ" in line
    # A person, not a login: the name in the body, a mention pill with that name in the HTML.
    assert "123-45" in line and "@ivanov" not in line and "matrix.to" not in line
    assert '<a href="https://matrix.to/#/@ivanov.ii:city.test">Иванов Иван</a>' in text.html
    assert "уточните" in text.body


def test_no_match_says_nobody() -> None:
    assert who_reply("en", "Zz", [], more=False).body == "Nobody found for “Zz”."
    assert "Никого не нашёл" in who_reply("ru", "Яя", [], more=False).body


# --- the service over a real index ------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_sqlite(str(tmp_path / "bot.db"))
    await s.open()
    yield s
    await s.close()


class NoDirectory:
    async def power_level(self, room: RoomID, user: UserID) -> int:
        return 0


_n = 0


async def ask(svc: EventService, text: str) -> str:
    global _n
    _n += 1
    effects = await svc.handle_message(ROOM, ASKER, MatrixEventID(f"$who{_n}"), text)
    assert len(effects) == 1 and isinstance(effects[0], Reply), effects
    assert effects[0].room_id == ROOM
    return effects[0].text.body


def service(store: Store, people: SnapshotPeople | None) -> EventService:
    return EventService(store, ManualClock(NOW), Settings(MSK), NoDirectory(), people)  # type: ignore[arg-type]


async def test_who_answers_from_the_snapshot_index(store: Store, tmp_path: Path) -> None:
    snap = tmp_path / "search.json"
    write_snapshot(snap, [FEDOROV, IVANOVA, IVANOV], generated_at=1.0)
    svc = service(store, SnapshotPeople(snap))
    body = await ask(svc, "!кто иванов")
    assert "Иванов Иван Иванович — Начальник отдела — Префектура ЮАО / Отдел ЖКХ — +7 (495) 123-45-67" in body
    assert "@ivanov.ii" not in body  # the name, never the bare login
    assert "Иванова Мария Сергеевна" in body and "Фёдоров" not in body
    assert "ivanov.ii@" not in body  # no internal keys or login beyond the Matrix link
    assert "Фёдоров Пётр Алексеевич — Специалист — ГБУ МФЦ / Единый контакт-центр" in await ask(
        svc, "!who 000-12-34"
    )
    assert await ask(svc, "!who Petrov") == "Nobody found for “Petrov”."


async def test_who_finds_a_phone_as_printed_with_its_extension(store: Store, tmp_path: Path) -> None:
    """!who shares the search index, so a number typed as printed finds the one person behind it."""
    desk = IndexedPerson(
        "@desk:city.test", "Абрамов Олег", "desk", phone="+7 (495) 149-03-75 ext. 25139, +7 916 1"
    )
    same = IndexedPerson("@same:city.test", "Борисова Анна", "same", phone="8 (495) 149-03-75 доб. 25140")
    snap = tmp_path / "search.json"
    write_snapshot(snap, [desk, same], generated_at=1.0)
    svc = service(store, SnapshotPeople(snap))
    body = await ask(svc, "!кто 8 495 149-03-75 доб. 25139")
    assert "Абрамов Олег — +7 (495) 149-03-75 ext. 25139, +7 916 1" in body and "Борисова" not in body
    assert "Борисова Анна" in await ask(svc, "!who ext 25140")
    both = await ask(svc, "!who 149-03-75")
    assert "Абрамов" in both and "Борисова" in both


async def test_who_reloads_when_the_snapshot_changes(store: Store, tmp_path: Path) -> None:
    snap = tmp_path / "search.json"
    people = SnapshotPeople(snap)
    svc = service(store, people)
    assert "Никого не нашёл" in await ask(svc, "!кто Фёдоров")  # no snapshot yet: an empty index
    write_snapshot(snap, [FEDOROV], generated_at=1.0)
    assert "Фёдоров Пётр Алексеевич" in await ask(svc, "!кто Фёдоров")
    index = people.index
    assert "Фёдоров" in await ask(svc, "!кто Фёдоров")
    assert people.index is index  # unchanged file: no rebuild
    write_snapshot(snap, [IVANOV], generated_at=2.0)
    os.utime(snap, ns=(1, 10**18))
    assert "Никого не нашёл" in await ask(svc, "!кто Фёдоров")
    assert "Иванов Иван Иванович" in await ask(svc, "!кто Иванов")


async def test_who_caps_the_list(store: Store, tmp_path: Path) -> None:
    snap = tmp_path / "search.json"
    many = [
        IndexedPerson(f"@p{i:02d}:x", f"Петров Пётр {i}", f"p{i:02d}", title="Специалист") for i in range(30)
    ]
    write_snapshot(snap, many, generated_at=1.0)
    body = await ask(service(store, SnapshotPeople(snap)), "!who Петров")
    assert 5 <= body.count("• Петров Пётр") <= 10
    assert "narrow the search" in body


async def test_who_without_search_section(store: Store) -> None:
    svc = service(store, None)
    assert "not configured" in await ask(svc, "!who Ivanov")
    assert "не настроен" in await ask(svc, "!кто Иванов")


# --- config -----------------------------------------------------------------------------------------------


def _raw(tmp_path: Path, **extra: object) -> dict[str, object]:
    (tmp_path / "bot.token").write_text("syt_secret\n", encoding="utf-8")
    bot = {"user_id": "@events:city.test", "access_token_file": "bot.token"}
    return {"homeserver": {"url": "https://matrix.city.test/"}, "bot": bot, **extra}


def test_config_search_index(tmp_path: Path) -> None:
    path = str(tmp_path / "c.yaml")
    assert parse_config(_raw(tmp_path), path, env={}).search_index is None
    cfg = parse_config(_raw(tmp_path, search={"index": "state/s.json"}), path, env={})
    assert cfg.search_index == tmp_path.resolve() / "state" / "s.json"
    assert parse_config(_raw(tmp_path, search={}), path, env={}).search_index == (
        tmp_path.resolve() / "state" / "search.json"
    )
    with pytest.raises(BotConfigError, match=r"search\.index"):
        parse_config(_raw(tmp_path, search={"index": ""}), path, env={})
