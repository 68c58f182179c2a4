"""A meeting of named people, run end to end against a real Synapse by real matrix-nio clients (every chat
end-to-end encrypted), across a bot restart:

1. The organiser, in an encrypted unit room, creates an event and invites two people by name as the
   directory search finds them (the same snapshot index ``!who`` reads). A name that fits two people is
   answered with both, and nothing is created.
2. Each invitee gets an encrypted direct message with the event and the bot's reactions ✅ ❔ ❌ under it;
   Ivanov taps ✅ there, and his answer is counted.
3. ``show`` lists Petrov (required, no answer) by name, as a mention pill; ``nudge`` DMs only him.
4. The bot restarts: nothing is re-sent; a second nudge at once reaches nobody (the rate limit is stored).
5. In the check-in window Ivanov writes ``!пришёл`` in his DM with the bot; the organiser closes the list;
   the export (downloaded and decrypted) says registered / attended and lists Petrov as "no answer".
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from nio import RoomEncryptedFile

from bridge.bot.app import EventBot
from bridge.events.clock import ManualClock
from bridge.events.store import open_sqlite
from bridge.search.snapshot import IndexedPerson, write_snapshot
from tests.fixtures.synapse import SynapseHandle
from tests.test_bot_live import (  # noqa: F401  # people: the fixture
    Person,
    Seen,
    _answers,
    _download,
    bot_config,
    make_room,
    people,
    reply_to,
    set_profile,
    settled,
    until,
)

pytestmark = pytest.mark.synapse

MSK = ZoneInfo("Europe/Moscow")


def invitations(p: Person, bot_id: str, eid: str | None = None) -> list[Seen]:
    return [
        s
        for s in p.notices(sender=bot_id)
        if ("Вас пригласили" in s.content.get("body", "") or "ещё не ответили" in s.content.get("body", ""))
        and (eid is None or f"[{eid}]" in s.content["body"])
    ]


def nudges(p: Person, bot_id: str) -> list[Seen]:
    return [s for s in invitations(p, bot_id) if "ещё не ответили" in s.content["body"]]


async def test_named_meeting_invite_answer_nudge_checkin_export_across_a_restart(
    synapse: SynapseHandle,
    people: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    person, bot_acct = people["person"], people["bot"]
    mod, ivanov, petrov = person("mod"), person("ivanov"), person("petrov")
    bot_id = bot_acct.user_id
    for p in (mod, ivanov, petrov):
        p.start()
    # The directory search snapshot the sync writes: display names as in the directory, and a namesake.
    snap = tmp_path / "search.json"
    write_snapshot(
        snap,
        [
            IndexedPerson(ivanov.user_id, "Иванов Иван Иванович", ivanov.user_id[1:].split(":")[0],
                          title="Начальник отдела", department=("Управа", "Отдел ЖКХ")),
            IndexedPerson(petrov.user_id, "Петров Пётр Петрович", petrov.user_id[1:].split(":")[0],
                          department=("Управа", "Отдел ЖКХ")),
            IndexedPerson("@petrova.ms:elsewhere", "Петрова Мария", "petrova.ms", department=("Управа",)),
            IndexedPerson("@petrov.aa:elsewhere", "Петров Андрей", "petrov.aa", department=("Управа", "Финансы")),
        ],
        generated_at=1.0,
    )  # fmt: skip
    # The sync sets each account's display name from the directory: the same names as in the snapshot.
    await set_profile(synapse, ivanov, "displayname", "Иванов Иван Иванович")
    await set_profile(synapse, petrov, "displayname", "Петров Пётр Петрович")
    room = await make_room(mod, encrypted=True, invite=[bot_id], name="Управа",
                           marker={"kind": "room", "unit": "ou:uprava", "shard": 1, "version": 1})  # fmt: skip

    clock = ManualClock(datetime.now(UTC))
    cfg = bot_config(synapse, bot_acct, tmp_path)
    from dataclasses import replace

    cfg = replace(cfg, search_index=snap)
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await until(lambda: room in bot.client.rooms, "bot joined")
        await until(lambda: list(mod.client.device_store.active_user_devices(bot_id)), "bot's device keys")
        day = (clock.now() + timedelta(days=3)).astimezone(MSK).strftime("%Y-%m-%d")
        start = datetime.fromisoformat(f"{day}T15:00").replace(tzinfo=MSK)

        # 1. "Петров" fits two people: both are shown, nothing is created.
        ask = await mod.say(room, f'!событие создать "Совещание руководителей" {day} 15:00 пригласить Петров')
        refusal = await until(
            lambda: [s for s in mod.notices(room, bot_id) if reply_to(s) == ask], "candidates"
        )
        assert (
            "несколько человек" in refusal[0].content["body"]
            and "Никто не приглашён" in refusal[0].content["body"]
        )
        await mod.say(room, f'!событие создать "Совещание руководителей" {day} 15:00 место "каб. 301" '
                            'пригласить "Иванов Иван", Петров Пётр')  # fmt: skip

        # 2. Each gets the invitation in an encrypted DM, with the bot's one-tap reactions under it.
        inv_ivanov = (await until(lambda: invitations(ivanov, bot_id), "Ivanov's invitation"))[0]
        inv_petrov = (await until(lambda: invitations(petrov, bot_id), "Petrov's invitation"))[0]
        eid = inv_ivanov.content["body"].split("[", 1)[1].split("]", 1)[0]
        for p, inv in ((ivanov, inv_ivanov), (petrov, inv_petrov)):
            assert p.client.rooms[inv.room_id].encrypted and inv.room_id != room
            assert "Ваше участие обязательно" in inv.content["body"]

        def bot_reactions(p: Person, inv: Seen) -> set[str]:
            return {
                s.content["m.relates_to"]["key"]
                for s in p.seen
                if s.sender == bot_id and s.type == "m.reaction"
                and s.content.get("m.relates_to", {}).get("event_id") == inv.event_id
            }  # fmt: skip

        await until(lambda: bot_reactions(ivanov, inv_ivanov) == {"✅", "❔", "❌"}, "the one-tap reactions")
        await ivanov.send(inv_ivanov.room_id, "m.reaction", {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": inv_ivanov.event_id, "key": "✅"}})  # fmt: skip
        await until(lambda: _answers(bot, eid) == [(ivanov.user_id, "going")], "Ivanov's tap counted")

        # 3. show: Petrov has not answered, by name (a pill in the HTML), never a login.
        ask = await mod.say(room, f"!событие показать {eid}")
        shown = (await until(lambda: [s for s in mod.notices(room, bot_id) if reply_to(s) == ask], "show"))[0]
        assert "Идут: 1 — Иванов Иван Иванович" in shown.content["body"]
        assert "Не ответили: 1 — Петров Пётр Петрович" in shown.content["body"]
        assert "@" not in shown.content["body"]
        pill = f'<a href="https://matrix.to/#/{petrov.user_id}">Петров Пётр Петрович</a>'
        assert pill in shown.content["formatted_body"]
        ask = await mod.say(room, f"!событие напомнить {eid}")
        await until(lambda: nudges(petrov, bot_id), "Petrov nudged")
        await until(lambda: [s for s in mod.notices(room, bot_id) if reply_to(s) == ask], "nudge reply")
        await settled(mod, room, bot_id, bot)
        assert nudges(ivanov, bot_id) == [] and len(nudges(petrov, bot_id)) == 1
        await until(lambda: bot.idle.is_set(), "bot idle")
    finally:
        await bot.stop()

    # 4. Restarted: nothing repeated; the nudge's rate limit holds.
    counts = {p.user_id: len(p.notices(sender=bot_id)) for p in (ivanov, petrov)}
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        ask = await mod.say(room, f"!событие напомнить {eid}")
        again = await until(
            lambda: [s for s in mod.notices(room, bot_id) if reply_to(s) == ask], "second nudge"
        )
        assert "напоминали недавно" in again[0].content["body"]
        await settled(mod, room, bot_id, bot)
        assert {p.user_id: len(p.notices(sender=bot_id)) for p in (ivanov, petrov)} == counts

        # 5. Check-in in the window, in Ivanov's DM with the bot; the organiser closes; the export.
        clock.set(start.astimezone(UTC) - timedelta(minutes=10))
        here = await ivanov.say(inv_ivanov.room_id, f"!пришёл {eid}")
        await until(lambda: [s for s in ivanov.notices(inv_ivanov.room_id, bot_id) if reply_to(s) == here
                             and "Отметил" in s.content["body"]], "check-in confirmed")  # fmt: skip
        ask = await mod.say(room, f"!событие закрыть {eid}")
        closed = await until(lambda: [s for s in mod.notices(room, bot_id) if reply_to(s) == ask], "closed")
        assert "Записались: 1, пришли: 1, не пришли: 0" in closed[0].content["body"]
        await mod.say(room, f"!событие экспорт {eid}")
        files = await until(
            lambda: [s.raw for s in mod.seen if s.room_id == room and isinstance(s.raw, RoomEncryptedFile)
                     and s.raw.body == f"{eid}-attendance.csv"], "the CSV")  # fmt: skip
        rows = list(csv.DictReader(io.StringIO((await _download(mod, files[0])).decode("utf-8-sig"))))
        got = {r["Matrix ID"]: (r["ФИО"], r["Статус"], r["Приглашение"], r["Присутствие"]) for r in rows}
        assert got == {
            ivanov.user_id: ("Иванов Иван Иванович", "идёт", "обязательно", "пришёл"),
            petrov.user_id: ("Петров Пётр Петрович", "нет ответа", "обязательно", ""),
        }
        await until(lambda: [s for s in mod.seen if isinstance(s.raw, RoomEncryptedFile) and s.raw.body == f"{eid}.ics"],
                    "the .ics")  # fmt: skip
    finally:
        await bot.stop()
