"""The event bot against a real Synapse, used by real matrix-nio clients (one room end-to-end encrypted).

One story, in order, because each step depends on the state the previous one left:

1. A command sent before the bot arrived in a room is history and is never answered.
2. An unprivileged member's create is refused; nothing is announced.
3. A moderator in the encrypted room announces an event to the whole unit "Департамент финансов", typed by
   its name in lower case: the bot finds the unit's rooms through the provisioner's markers and the space
   tree (two shard rooms, and a sub-unit's room whose different unit key only the space walk can find) and
   posts a native poll in each, but not in another unit's room.
4. People answer by poll (encrypted), by reaction and by command; the third "going" lands on the waitlist.
5. The bot is stopped; while it is down one person cancels by command. After a restart that answer is
   handled exactly once, the waitlisted person is promoted and told by DM, and nothing earlier is replayed.
6. The organiser exports: the CSV (downloaded and decrypted by the client) lists everyone with the title and
   department the directory gives them (nested or separate profile fields, or their room's unit), never a key;
   every announcement was edited to the count across its three rooms.
7. The clock is moved to 24 h before the start: the going people get a reminder DM, others do not.
8. The organiser cancels: everyone who answered gets a DM, the polls are closed, later answers are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    RoomCreateResponse,
    RoomEncryptedFile,
    RoomSendResponse,
)
from nio.crypto.attachments import decrypt_attachment

from bridge.bot.app import EventBot
from bridge.bot.config import BotConfig
from bridge.events.clock import ManualClock
from bridge.events.store import Store, open_postgres, open_sqlite
from tests.fixtures.postgres import drop_schema, pg_schema
from tests.fixtures.synapse import SynapseHandle, unique_localpart

pytestmark = pytest.mark.synapse

MSK = ZoneInfo("Europe/Moscow")
MARKER = "org.civmatrix.managed"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


@dataclass
class Seen:
    room_id: str
    sender: str
    type: str
    content: dict[str, Any]
    event_id: str
    raw: Any = field(repr=False)


PEOPLE: list[Person] = []


class Person:
    """A real client: syncs in the background, accepts invitations, records every event it can read."""

    def __init__(self, url: str, user_id: str, token: str, device: str, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            url,
            user_id,
            device_id=device,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True),
        )
        self.client.restore_login(user_id, device, token)
        self.seen: list[Seen] = []
        PEOPLE.append(self)
        self.task: asyncio.Task[Any] | None = None
        self.client.add_event_callback(self._on_event, object)  # type: ignore[arg-type]
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)  # type: ignore[arg-type]

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def _on_event(self, room: Any, ev: Any) -> None:
        src = getattr(ev, "source", None) or {}
        etype = src.get("type", type(ev).__name__)
        self.seen.append(
            Seen(
                room.room_id,
                getattr(ev, "sender", ""),
                etype,
                src.get("content", {}),
                src.get("event_id", ""),
                ev,
            )
        )

    async def _on_invite(self, room: Any, ev: Any) -> None:
        if ev.membership == "invite" and ev.state_key == self.user_id:
            await self.client.join(room.room_id)

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.sync_forever(timeout=1000, full_state=True))

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.client.close()

    async def send(self, room: str, etype: str, content: dict[str, Any]) -> str:
        for _ in range(3):
            if self.client.should_query_keys:
                await self.client.keys_query()
            resp = await self.client.room_send(room, etype, content, ignore_unverified_devices=True)
            if isinstance(resp, RoomSendResponse):
                return str(resp.event_id)
            await asyncio.sleep(0.5)
        raise AssertionError(f"send failed: {resp}")

    async def say(self, room: str, text: str) -> str:
        return await self.send(room, "m.room.message", {"msgtype": "m.text", "body": text})

    def notices(self, room: str | None = None, sender: str | None = None) -> list[Seen]:
        """Notices, not counting edits (the bot edits its announcements' counts in place)."""
        return [
            s
            for s in self.seen
            if s.content.get("msgtype") == "m.notice"
            and s.content.get("m.relates_to", {}).get("rel_type") != "m.replace"
            and (room is None or s.room_id == room)
            and (sender is None or s.sender == sender)
        ]


async def until(cond: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.2)
    seen = [(p.user_id, s.room_id, s.content.get("body")) for p in PEOPLE for s in p.notices()]
    raise AssertionError(f"timed out waiting for {what}; notices seen: {seen}")


def bot_config(synapse: SynapseHandle, acct: Any, tmp_path: Path) -> BotConfig:
    """The bot's config for a test: its account on the test Synapse, store and keys under ``tmp_path``."""
    return BotConfig(
        homeserver_url=synapse.url,
        user_id=acct.user_id,
        access_token=acct.access_token,
        device_id=acct.device_id,
        store=str(tmp_path / "bot.db"),
        crypto_store_dir=tmp_path / "bot-crypto",
        sync_timeout_ms=1000,
    )


def reply_to(s: Seen) -> str | None:
    """The event a notice answers (every reply of the bot's carries ``m.in_reply_to``)."""
    return s.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")


async def settled(p: Person, room: str, bot_id: str, bot: EventBot | None = None) -> None:
    """Return once ``p`` has seen everything the bot had to send so far: for the assertions that it sent
    nothing more (no duplicate, no replay).

    A fixed sleep would pass in silence whenever the bot is slower than the sleep, so this waits for positive
    signals instead. First, when the bot runs in this process, its outbox is empty (``bot.idle``): everything
    it queued has reached the server. Then ``p`` sends a marker command (``!event show`` of an event that
    does not exist) and waits for the bot's answer to it. The bot handles a room's timeline in order, so the
    answer means the commands before the marker were handled; its answers go out in order, and a client's
    sync hands events over in the order the server took them, so a duplicate answer in ``room`` (or anything
    sent before the bot went idle, in any room) reaches ``p`` before the marker's answer does. The
    observation window is thus the marker's round trip, bounded by ``until``'s deadline. Pick ``p`` and
    ``room`` so that the answer itself is not counted by the assertions that follow.
    """
    if bot is not None:
        await until(lambda: bot.idle.is_set(), "the bot's outbox empty")
    marker = await p.say(room, f"!event show settle{uuid.uuid4().hex[:8]}")
    await until(
        lambda: [s for s in p.notices(room, bot_id) if reply_to(s) == marker], "the answer to the marker"
    )
    if bot is not None:
        # The answer can reach the client before the bot has heard the server's reply and deleted it from
        # the outbox (or, behind a failure, before its retry): leave the outbox empty for the checks.
        await until(lambda: bot.idle.is_set(), "the bot's outbox empty after the marker")


async def synced(p: Person, room: str) -> None:
    """Return once ``p``'s client has received everything the server took before now: ``p`` sends a plain
    message (the bot ignores it) and waits for its own message to come back through sync, which hands events
    over in the order the server took them. For checks after the bot was stopped."""
    marker = await p.say(room, f"sync marker {uuid.uuid4().hex[:8]}")
    await until(lambda: any(s.event_id == marker for s in p.seen), "the sync marker")


class ReminderLooks:
    """Counts the reminder scheduler's looks at due reminders (a spy around the real service method), so a
    test can wait for a look that began after it moved the manual clock instead of sleeping."""

    def __init__(self, bot: EventBot) -> None:
        self.started = 0
        self.finished: list[int] = []
        real = bot.service.queue_due_reminders

        async def look(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            number = self.started
            result = await real(*args, **kwargs)
            self.finished.append(number)
            return result

        bot.service.queue_due_reminders = look  # type: ignore[method-assign]
        self.bot = bot

    async def after_wake(self) -> None:
        """Wake the scheduler and wait until a look that began after the wake-up has finished (the one
        before, if it was running, may have read the clock before it moved)."""
        mark = self.started
        self.bot.wake_scheduler()
        await until(lambda: any(n > mark for n in self.finished), "a look at due reminders after the wake-up")


def _window(events: int) -> dict[str, Any]:
    """The bot's sync filter with a timeline window of ``events`` (a gap after a few messages)."""
    from bridge.bot.intake import SYNC_FILTER

    return {**SYNC_FILTER, "room": {**SYNC_FILTER["room"], "timeline": {"limit": events}}}


async def make_room(p: Person, *, encrypted: bool, marker: dict[str, Any], space: bool = False,
                    invite: list[str], name: str | None = None, topic: str | None = None) -> str:  # fmt: skip
    """A room or space as the provisioner makes them: its marker, the unit's name, its path as the topic."""
    state = [{"type": MARKER, "state_key": "", "content": marker}]
    if encrypted:
        state.append(ENCRYPTION)
    resp = await p.client.room_create(name=name or marker["unit"], topic=topic, invite=invite, initial_state=state,
                                      space=space)  # fmt: skip
    assert isinstance(resp, RoomCreateResponse), resp
    return str(resp.room_id)


async def set_profile(synapse: SynapseHandle, p: Person, field_name: str, value: Any) -> None:
    """An MSC4133 custom profile field, set as the sync sets it: with the admin's token (the server refuses
    people's own writes of directory-owned fields)."""
    import aiohttp

    path = f"/_matrix/client/v3/profile/{p.user_id}/{field_name}"
    async with aiohttp.ClientSession() as http:
        resp = await http.put(synapse.public_url + path, json={field_name: value},
                              headers={"Authorization": f"Bearer {synapse.admin_token}"})  # fmt: skip
        assert resp.status == 200, await resp.text()


async def link(p: Person, parent: str, child: str, server: str) -> None:
    await p.client.room_put_state(parent, "m.space.child", {"via": [server]}, state_key=child)
    await p.client.room_put_state(child, "m.space.parent", {"via": [server]}, state_key=parent)


@pytest.fixture
async def people(synapse: SynapseHandle, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    made: list[Person] = []

    def person(name: str) -> Person:
        acct = synapse.register(unique_localpart(name), "pw-" + name, displayname=name.title())
        p = Person(synapse.public_url, acct.user_id, acct.access_token, acct.device_id, tmp_path / name)
        made.append(p)
        return p

    bot_acct = synapse.register(unique_localpart("eventbot"), "pw-bot", displayname="Events")
    yield {"person": person, "bot": bot_acct}
    for p in made:
        await p.stop()


async def test_event_bot_end_to_end(synapse: SynapseHandle, people: dict[str, Any], tmp_path: Path) -> None:
    person = people["person"]
    bot_acct = people["bot"]
    mod, alice, bob, carol, dave, erin = (person(n) for n in ("mod", "alice", "bob", "carol", "dave", "erin"))
    bot_id = bot_acct.user_id
    server = synapse.server_name
    for p in (mod, alice, bob, carol, dave, erin):
        p.start()

    # The provisioner's layout: space "Департамент финансов" > (its rooms 1/2 [encrypted] and 2/2, space
    # "Налоговое управление" > its room); "Управление кадров" apart. Unit keys are internal (ou:<uuid>).
    everyone = [alice.user_id, carol.user_id, bot_id]
    fin, tax = "Департамент финансов", "Налоговое управление"
    k_fin, k_tax, k_hr = (f"ou:{uuid.uuid4()}" for _ in range(3))
    s_fin = await make_room(mod, encrypted=False, marker={"kind": "space", "unit": k_fin, "shard": 1, "version": 1},
                            space=True, invite=[bot_id], name=fin, topic=fin)  # fmt: skip
    s_tax = await make_room(mod, encrypted=False, space=True, invite=[bot_id], name=tax, topic=f"{fin} / {tax}",
                            marker={"kind": "space", "unit": k_tax, "shard": 1, "version": 1})  # fmt: skip
    r_fin = await make_room(mod, encrypted=True, invite=everyone, name=f"{fin} (1/2)", topic=fin,
                            marker={"kind": "room", "unit": k_fin, "shard": 1, "version": 1})  # fmt: skip
    r_tax = await make_room(mod, encrypted=False, invite=[bob.user_id, bot_id], name=tax, topic=f"{fin} / {tax}",
                            marker={"kind": "room", "unit": k_tax, "shard": 1, "version": 1})  # fmt: skip
    # A second shard of the same unit: a unit too big for one room.
    r_fin2 = await make_room(mod, encrypted=True, invite=[erin.user_id, bot_id], name=f"{fin} (2/2)", topic=fin,
                             marker={"kind": "room", "unit": k_fin, "shard": 2, "version": 1})  # fmt: skip
    r_hr = await make_room(dave, encrypted=False, invite=[bot_id], name="Управление кадров",
                           topic="Управление кадров",
                           marker={"kind": "room", "unit": k_hr, "shard": 1, "version": 1})  # fmt: skip
    # Directory details as the sync publishes them: bob's in the nested field written today, alice's in the
    # separate keys with only the unit's key as her department; carol has none (her room's unit is used).
    await set_profile(
        synapse,
        bob,
        "org.civmatrix.directory",
        {"title": "Главный специалист", "department": f"{fin} / {tax}", "phone": "+7 495 000-00-01"},
    )
    await set_profile(synapse, alice, "org.civmatrix.title", "Начальник отдела")
    await set_profile(synapse, alice, "org.civmatrix.department", k_fin)  # fmt: skip
    await link(mod, s_fin, r_fin, server)
    await link(mod, s_fin, r_fin2, server)
    await link(mod, s_fin, s_tax, server)
    await link(mod, s_tax, r_tax, server)
    await until(lambda: r_fin in alice.client.rooms and r_fin in carol.client.rooms, "alice and carol joined")
    await until(lambda: r_tax in bob.client.rooms and r_fin2 in erin.client.rooms, "bob and erin joined")

    # 1. Before the bot ever ran: this command is history.
    early = await mod.say(r_tax, "!event help")

    clock = ManualClock(datetime.now(UTC))
    cfg = bot_config(synapse, bot_acct, tmp_path)
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await until(
            lambda: all(r in bot.client.rooms for r in (r_fin, r_fin2, r_tax, r_hr, s_fin, s_tax)),
            "bot joined",
        )
        # People's clients must know the bot's device before they encrypt for it.
        await until(
            lambda: all(list(p.client.device_store.active_user_devices(bot_id)) for p in (mod, alice, carol)),
            "bot's device keys",
        )

        # 2. Unprivileged create: refused, nothing announced. The first command after the start is answered
        # within the usual latency (it once waited 20 s for key queries behind the first sync).
        t_first = asyncio.get_running_loop().time()
        await carol.say(r_fin, '!event create "Carol party" tomorrow 3pm')
        await until(lambda: any("moderators" in s.content.get("body", "") for s in carol.notices(r_fin, bot_id)),
                    "refusal")  # fmt: skip
        print(f"first command answered after {asyncio.get_running_loop().time() - t_first:.2f} s")

        # 3. The moderator announces to the unit from the encrypted room.
        day = (clock.now() + timedelta(days=3)).astimezone(MSK).strftime("%Y-%m-%d")
        start = datetime.fromisoformat(f"{day}T15:00").replace(tzinfo=MSK)
        # By the unit's name as people see it (any case), not its internal key.
        await mod.say(r_fin, f'!событие создать "Совещание <script>x</script>" {day} 15:00 место "каб. 301" '
                             'вместимость 2 подразделение "департамент финансов"')  # fmt: skip

        def polls(p: Person, room: str) -> list[Seen]:
            return [
                s for s in p.seen if s.room_id == room and s.type == "m.poll.start" and s.sender == bot_id
            ]

        poll_fin = (await until(lambda: polls(alice, r_fin), "poll in the encrypted room"))[0]
        poll_tax = (await until(lambda: polls(bob, r_tax), "poll in the sub-unit room"))[0]
        await until(lambda: polls(erin, r_fin2), "poll in the second shard")
        # The same announcement as a plain notice, for clients without polls; erin reacts to that one.
        text_fin2 = (await until(lambda: [s for s in erin.notices(r_fin2, bot_id) if "📅" in s.content["body"]],
                                 "announcement text in the second shard"))[0]  # fmt: skip
        poll = poll_fin.content["m.poll"]
        assert [a["m.text"][0]["body"] for a in poll["answers"]] == ["Иду", "Возможно", "Не иду"]
        html = next(t["body"] for t in poll_fin.content["m.text"] if t.get("mimetype") == "text/html")
        assert "<script>" not in html and "&lt;script&gt;" in html
        eid = poll["question"]["m.text"][0]["body"].rsplit("[", 1)[1].rstrip("]")

        # 4. Answers: encrypted poll vote, reaction on the announcement, command.
        await alice.send(r_fin, "m.poll.response", {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll_fin.event_id}, "m.selections": ["going"]})  # fmt: skip
        await bob.send(r_tax, "m.reaction", {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": poll_tax.event_id, "key": "✅"}})  # fmt: skip
        erin_reaction = await erin.send(r_fin2, "m.reaction", {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": text_fin2.event_id, "key": "❔"}})  # fmt: skip
        await until(lambda: len(_answers(bot, eid)) == 3, "three answers stored")
        await carol.say(r_fin, f"!иду {eid}")
        await until(lambda: any("листе ожидания" in s.content.get("body", "") for s in carol.notices(r_fin, bot_id)),
                    "waitlist reply")  # fmt: skip
        await until(lambda: bot.idle.is_set(), "bot idle")
    finally:
        # 5. Down.
        await bot.stop()
    assert not polls(dave, r_hr) and not dave.notices(r_hr, bot_id)  # another unit's room is left alone

    await bob.say(r_tax, f"!notgoing {eid}")
    notices_before = {p.user_id: len(p.notices()) for p in (mod, alice, bob, carol)}

    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    looks = ReminderLooks(bot)
    await bot.start()
    try:
        await until(lambda: any("не идёте" in s.content.get("body", "") or "not going" in s.content.get("body", "")
                                for s in bob.notices(r_tax, bot_id)), "bob's answer after the restart")  # fmt: skip
        await until(lambda: any("Освободилось место" in s.content.get("body", "") for s in carol.notices()),
                    "carol promoted by DM")  # fmt: skip
        # Dave's room: no one counted below sees the marker's answer.
        await settled(dave, r_hr, bot_id, bot)
        # Exactly once, and nothing before the restart was replayed.
        assert len(bob.notices()) == notices_before[bob.user_id] + 1
        assert len(carol.notices()) == notices_before[carol.user_id] + 1
        assert len(alice.notices()) == notices_before[alice.user_id]
        assert len(polls(alice, r_fin)) == 1 and len(polls(bob, r_tax)) == 1
        refusals = [s for s in carol.notices(r_fin, bot_id) if "moderators" in s.content.get("body", "")]
        assert len(refusals) == 1
        assert not [s for s in bob.notices(r_tax, bot_id) if s.content.get("m.relates_to", {}).get(
            "m.in_reply_to", {}).get("event_id") == early]  # fmt: skip
        assert not [s for s in bob.notices(r_tax, bot_id) if "!event create" in s.content.get("body", "")]

        # 6. Export from the encrypted room: one CSV with people from both rooms.
        await mod.say(r_fin, f"!event export {eid}")
        files = await until(lambda: [s for s in mod.seen if s.room_id == r_fin and isinstance(s.raw, RoomEncryptedFile)
                                     and s.sender == bot_id] if len([s for s in mod.seen if isinstance(s.raw, RoomEncryptedFile)]) >= 2 else None,
                            "export files")  # fmt: skip
        by_name = {f.raw.body: f.raw for f in files}
        assert set(by_name) == {f"{eid}-attendance.csv", f"{eid}.ics"}
        rows = list(
            csv.DictReader(
                io.StringIO((await _download(mod, by_name[f"{eid}-attendance.csv"])).decode("utf-8-sig"))
            )
        )
        got = {(r["Matrix ID"], r["Ответ"], r["Статус"]) for r in rows}
        assert got == {
            (alice.user_id, "Иду", "идёт"),
            (carol.user_id, "Иду", "идёт"),
            (bob.user_id, "Не иду", "не идёт"),
            (erin.user_id, "Возможно", "возможно"),
        }
        # What the directory says about each person, as they see it: titles and department names.
        person_rows = {
            r["Matrix ID"]: (r["ФИО"], r["Должность"], r["Подразделение"], r["Телефон"]) for r in rows
        }
        assert person_rows[bob.user_id] == (
            "Bob",
            "Главный специалист",
            f"{fin} / {tax}",
            "'+7 495 000-00-01",
        )
        assert person_rows[alice.user_id] == ("Alice", "Начальник отдела", fin, "")
        assert person_rows[carol.user_id] == ("Carol", "", fin, "")
        assert not any("ou:" in cell for r in rows for cell in r.values())
        # Each announcement was edited to the count across all three rooms.
        edits = await until(lambda: [s for s in alice.seen if s.room_id == r_fin and s.sender == bot_id
                                     and s.content.get("m.relates_to", {}).get("rel_type") == "m.replace"], "count edit")  # fmt: skip
        assert "📊 Сейчас — во всех 3 комнатах: идут 2/2" in edits[-1].content["m.new_content"]["body"]
        ics = (await _download(mod, by_name[f"{eid}.ics"])).decode("utf-8")
        assert (
            ics.startswith("BEGIN:VCALENDAR\r\n") and f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}" in ics
        )

        # Taking the reaction back takes the answer back.
        await erin.client.room_redact(r_fin2, erin_reaction)
        await until(lambda: erin.user_id not in [u for u, _ in _answers(bot, eid)], "erin's answer withdrawn")

        # The attendance list matches the CSV.
        await alice.say(r_fin, f"!событие показать {eid}")
        show = await until(lambda: [s for s in alice.notices(r_fin, bot_id) if "Идут: 2" in s.content.get("body", "")],
                           "attendance list")  # fmt: skip
        assert "Alice" in show[0].content["body"] and "Carol" in show[0].content["body"]

        # 7. Reminders: move the clock, the going people get a DM, Bob (not going) does not.
        dm_before = {p.user_id: _reminders(p) for p in (alice, bob, carol)}
        clock.set(start.astimezone(UTC) - timedelta(hours=24))
        await looks.after_wake()
        await until(lambda: _reminders(alice) > dm_before[alice.user_id] and _reminders(carol) > dm_before[carol.user_id],
                    "reminder DMs")  # fmt: skip
        await until(lambda: [s for s in bob.notices(r_tax, bot_id) if "Скоро" in s.content.get("body", "")],
                    "room reminder")  # fmt: skip
        await settled(dave, r_hr, bot_id, bot)
        assert _reminders(bob) == dm_before[bob.user_id]
        assert _reminders(alice) == dm_before[alice.user_id] + 1

        # 7b. A late "going": an event 67 minutes away. Its 24 h mark has passed, so Bob's confirmation names
        # the 1 h reminder, nothing is sent at once, and at the 1 h mark exactly one reminder arrives.
        soon = (clock.now() + timedelta(minutes=68)).astimezone(MSK).replace(second=0, microsecond=0)
        await mod.say(r_tax, f'!событие создать "Летучка" {soon:%Y-%m-%d %H:%M}')
        late = (
            await until(lambda: [p for p in polls(bob, r_tax) if "Летучка" in str(p.content)], "late poll")
        )[0]
        eid2 = late.content["m.poll"]["question"]["m.text"][0]["body"].rsplit("[", 1)[1].rstrip("]")
        await bob.say(r_tax, f"!иду {eid2}")
        confirm = await until(lambda: [s for s in bob.notices(r_tax, bot_id) if "«Летучка»" in s.content.get("body", "")
                                       and "Напомню" in s.content.get("body", "")], "late confirmation")  # fmt: skip
        assert "Напомню за 60 минут" in confirm[0].content["body"], confirm[0].content["body"]
        bob_before = _reminders(bob)
        await looks.after_wake()
        await settled(dave, r_hr, bot_id, bot)
        assert _reminders(bob) == bob_before  # no 24 h reminder "in 67 minutes"
        clock.set(soon.astimezone(UTC) - timedelta(hours=1))
        await looks.after_wake()
        await until(lambda: _reminders(bob) > bob_before, "the 1 h reminder")
        await settled(dave, r_hr, bot_id, bot)
        late_dms = [s for s in bob.notices() if "Напоминание" in s.content.get("body", "")][bob_before:]
        assert len(late_dms) == 1 and "Летучка" in late_dms[0].content["body"], late_dms

        # 8. The organiser cancels: everyone who answered is told, the polls are closed, RSVPs are refused.
        await mod.say(r_fin, f"!событие отменить {eid}")

        def cancellation_dm(p: Person) -> list[Seen]:
            return [
                s
                for s in p.notices()
                if "отменено" in s.content.get("body", "") and s.room_id not in (r_fin, r_tax)
            ]

        for who in (alice, bob, carol):
            await until(lambda: cancellation_dm(who), f"cancellation DM to {who.user_id}")  # noqa: B023
        await until(
            lambda: [s for s in alice.seen if s.type == "m.poll.end" and s.room_id == r_fin], "poll closed"
        )
        await bob.say(r_tax, f"!going {eid}")
        await until(lambda: [s for s in bob.notices(r_tax, bot_id) if "was cancelled" in s.content.get("body", "")],
                    "refusal after the cancellation")  # fmt: skip
    finally:
        await bot.stop()


def _outbox_empty(path: str) -> bool:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    finally:
        conn.close()


def _reminders(p: Person) -> int:
    return len([s for s in p.notices() if "Напоминание" in s.content.get("body", "")])


def _answers(bot: EventBot, eid: str) -> list[tuple[str, str]]:
    import sqlite3

    conn = sqlite3.connect(bot.cfg.store)
    try:
        return list(conn.execute("SELECT user_id, answer FROM answers WHERE event_id = ?", (eid,)))
    finally:
        conn.close()


async def _download(p: Person, f: RoomEncryptedFile) -> bytes:
    resp = await p.client.download(f.url)
    return bytes(decrypt_attachment(resp.body, f.key["k"], f.hashes["sha256"], f.iv))


async def test_bot_killed_with_sigkill_loses_and_repeats_nothing(
    synapse: SynapseHandle, people: dict[str, Any], tmp_path: Path
) -> None:
    """The real ``bridge --config FILE run`` process, killed with SIGKILL; commands sent while it is dead are
    answered exactly once after the restart, and nothing handled before the kill is handled again."""
    person = people["person"]
    bot_acct = people["bot"]
    mod, alice = person("mod"), person("alice")
    bot_id = bot_acct.user_id
    mod.start()
    alice.start()
    room = await make_room(mod, encrypted=True, invite=[alice.user_id, bot_id],
                           marker={"kind": "room", "unit": "k", "shard": 1, "version": 1})  # fmt: skip
    await until(lambda: room in alice.client.rooms, "alice joined")
    (tmp_path / "bot.token").write_text(bot_acct.access_token, encoding="utf-8")
    cfg = tmp_path / "civmatrix.yaml"
    cfg.write_text(
        f"homeserver: {{url: '{synapse.url}', server_name: {synapse.server_name}}}\n"
        "bot:\n"
        f"  user_id: '{bot_id}'\n"
        "  access_token_file: bot.token\n"
        f"  device_id: {bot_acct.device_id}\n"
        "  store: bot.db\n"
        "  crypto_store_dir: crypto\n"
        "  reminder_offsets: [24h, 1h]\n",
        encoding="utf-8",
    )
    log_file = (tmp_path / "bot.log").open("ab")

    def spawn() -> asyncio.subprocess.Process:
        return asyncio.create_subprocess_exec(  # type: ignore[return-value]
            sys.executable, "-m", "bridge.cli", "--config", str(cfg), "run", stdout=log_file, stderr=log_file
        )

    def answers() -> list[tuple[str, str]]:
        import sqlite3

        if not (tmp_path / "bot.db").exists():
            return []
        conn = sqlite3.connect(tmp_path / "bot.db")
        try:
            return sorted(conn.execute("SELECT user_id, answer FROM answers"))
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def replies(p: Person, fragment: str) -> list[Seen]:
        return [s for s in p.notices(room, bot_id) if fragment in s.content.get("body", "")]

    proc = await spawn()
    try:
        await until(lambda: bot_id in mod.client.rooms[room].users and not mod.client.rooms[room].users[bot_id].invited,
                    "bot joined")  # fmt: skip
        await until(lambda: all(list(p.client.device_store.active_user_devices(bot_id)) for p in (mod, alice)),
                    "bot's device keys")  # fmt: skip
        await mod.say(room, '!event create "Kill test" tomorrow 3pm capacity 1')
        poll = (await until(lambda: [s for s in alice.seen if s.type == "m.poll.start" and s.sender == bot_id],
                            "poll"))[0]  # fmt: skip
        eid = poll.content["m.poll"]["question"]["m.text"][0]["body"].rsplit("[", 1)[1].rstrip("]")
        await alice.send(room, "m.poll.response", {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll.event_id}, "m.selections": ["going"]})  # fmt: skip
        await until(lambda: answers() == [(alice.user_id, "going")], "alice's vote stored")
        await mod.say(room, f"!going {eid}")
        await until(lambda: replies(mod, "waitlist"), "mod waitlisted")
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        await proc.wait()

    while_dead = [await alice.say(room, f"!notgoing {eid}"), await mod.say(room, f"!event show {eid}")]
    # Both are in the room's timeline before the bot comes back (the server took them: sync shows them).
    await until(
        lambda: all(any(s.event_id == e for s in mod.seen) for e in while_dead),
        "the commands sent while dead",
    )
    proc = await spawn()
    try:
        await until(lambda: replies(alice, "Noted: you are not going"), "alice's answer after the restart")
        await until(lambda: replies(mod, "Going: 1"), "show after the restart")
        await settled(mod, room, bot_id)
        assert answers() == sorted([(alice.user_id, "not_going"), (mod.user_id, "going")])
        assert len(replies(alice, "Noted: you are not going")) == 1
        assert len(replies(mod, "Going: 1")) == 1
        assert len(replies(mod, "waitlist")) == 1  # the command before the kill was not replayed
        assert len([s for s in alice.seen if s.type == "m.poll.start" and s.sender == bot_id]) == 1
        show = replies(mod, "Going: 1")[0].content["body"]
        assert "Mod" in show.split("Going: 1")[1].split("\n")[0]  # promoted from the waitlist when alice left
    finally:
        proc.terminate()
        await proc.wait()
        log_file.close()


async def test_resent_outbox_entry_is_deduplicated(
    synapse: SynapseHandle, people: dict[str, Any], tmp_path: Path
) -> None:
    """A crash after the homeserver took a message but before the outbox entry was deleted: the restarted bot
    sends it again with the same transaction id, and the room still shows it once."""
    from bridge.events.model import RoomID, RoomNotice, Text
    from bridge.events.outbox import encode
    from bridge.events.store import PutOutbox

    person = people["person"]
    bot_acct = people["bot"]
    mod = person("mod")
    mod.start()
    room = await make_room(mod, encrypted=True, invite=[bot_acct.user_id],
                           marker={"kind": "room", "unit": "d", "shard": 1, "version": 1})  # fmt: skip
    cfg = bot_config(synapse, bot_acct, tmp_path)
    clock = ManualClock(datetime.now(UTC))
    entry = PutOutbox(
        "probe#0", clock.now(), encode(RoomNotice(RoomID(room), Text("dedup probe", "dedup probe")))
    )

    def probes() -> list[Seen]:
        return [s for s in mod.notices(room) if s.content.get("body") == "dedup probe"]

    for _ in range(2):
        bot = EventBot(cfg, open_sqlite(cfg.store), clock)
        await bot.start()
        try:
            await until(lambda: room in bot.client.rooms, "bot in the room")  # noqa: B023
            await bot.store.write([entry])  # the same entry, as if the first delete never happened
            bot.sender.notify()
            await until(lambda: probes(), "probe delivered")
            await until(lambda: _outbox_empty(cfg.store), "outbox drained")
        finally:
            await bot.stop()
    await synced(mod, room)
    assert len(probes()) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_busy_room_while_down_is_backfilled(
    synapse: SynapseHandle,
    people: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    """More happened while the bot was down than one sync shows (a "limited" timeline): the command buried
    under the chatter is still answered, once. Run on both stores: the bot's state lives in either."""
    import bridge.bot.intake

    # Asked for only by the PostgreSQL variant, so the SQLite one does not start the cluster.
    dsn: str = request.getfixturevalue("pg_dsn") if backend == "postgres" else ""
    monkeypatch.setattr(bridge.bot.intake, "SYNC_FILTER", _window(3))
    person = people["person"]
    bot_acct = people["bot"]
    mod = person("mod")
    mod.start()
    room = await make_room(mod, encrypted=True, invite=[bot_acct.user_id],
                           marker={"kind": "room", "unit": "b", "shard": 1, "version": 1})  # fmt: skip
    cfg = bot_config(synapse, bot_acct, tmp_path)
    clock = ManualClock(datetime.now(UTC))
    schema = pg_schema("bot")

    def store() -> Store:
        if backend == "sqlite":
            return open_sqlite(cfg.store)
        return open_postgres(dsn, schema=schema)

    bot = EventBot(cfg, store(), clock)
    await bot.start()
    try:
        await until(lambda: room in bot.client.rooms, "bot in the room")
        await until(lambda: list(mod.client.device_store.active_user_devices(bot_acct.user_id)), "bot's keys")
        await mod.say(room, "!event list")
        await until(lambda: [s for s in mod.notices(room) if "No upcoming events" in s.content.get("body", "")],
                    "first reply")  # fmt: skip
    finally:
        await bot.stop()
    await mod.say(room, "!event help")
    for i in range(12):
        await mod.say(room, f"chatter {i}")
    bot = EventBot(cfg, store(), clock)
    await bot.start()
    try:
        await until(lambda: [s for s in mod.notices(room) if "!event create" in s.content.get("body", "")],
                    "the buried command answered")  # fmt: skip
        await settled(mod, room, bot_acct.user_id, bot)
        assert len([s for s in mod.notices(room) if "!event create" in s.content.get("body", "")]) == 1
        assert len([s for s in mod.notices(room) if "No upcoming events" in s.content.get("body", "")]) == 1
    finally:
        await bot.stop()
        if backend == "postgres":
            drop_schema(dsn, schema)


async def test_bot_refuses_to_run_as_server_admin(synapse: SynapseHandle, tmp_path: Path) -> None:
    admin = synapse.server.create_admin(unique_localpart("botadmin"))
    cfg = bot_config(synapse, admin, tmp_path)
    bot = EventBot(cfg, open_sqlite(cfg.store), ManualClock(datetime.now(UTC)))
    with pytest.raises(RuntimeError, match="server admin"):
        await bot.start()
    await bot.stop()


async def test_votes_missed_in_a_gap_are_counted_from_relations_after_a_restart(
    synapse: SynapseHandle, people: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Votes the timeline never showed the bot (a gap it could not backfill) still count after a restart: the
    bot re-reads every open poll's responses from ``/relations``, once."""
    import bridge.bot.intake

    person = people["person"]
    bot_acct = people["bot"]
    mod, alice = person("mod"), person("alice")
    mod.start()
    alice.start()
    room = await make_room(mod, encrypted=True, invite=[alice.user_id, bot_acct.user_id],
                           marker={"kind": "room", "unit": "ou:rel", "shard": 1, "version": 1})  # fmt: skip
    await until(lambda: room in alice.client.rooms, "alice joined")
    cfg = bot_config(synapse, bot_acct, tmp_path)
    clock = ManualClock(datetime.now(UTC))
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await until(lambda: room in bot.client.rooms, "bot in the room")
        await until(lambda: all(list(p.client.device_store.active_user_devices(bot_acct.user_id)) for p in (mod, alice)),
                    "bot's keys")  # fmt: skip
        await mod.say(room, '!event create "Relations" tomorrow 3pm')
        poll = (await until(lambda: [s for s in alice.seen if s.type == "m.poll.start"], "poll"))[0]
        eid = poll.content["m.poll"]["question"]["m.text"][0]["body"].rsplit("[", 1)[1].rstrip("]")
        await until(lambda: bot.idle.is_set(), "bot idle")
    finally:
        await bot.stop()
    # While the bot is down: a vote buried under chatter, in a gap the restarted bot will not backfill.
    await alice.send(room, "m.poll.response", {
        "m.relates_to": {"rel_type": "m.reference", "event_id": poll.event_id}, "m.selections": ["going"]})  # fmt: skip
    for i in range(6):
        await mod.say(room, f"chatter {i}")
    monkeypatch.setattr(bridge.bot.intake, "SYNC_FILTER", _window(2))
    monkeypatch.setattr(bridge.bot.intake, "BACKFILL_PAGES", 0)
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await until(
            lambda: _answers(bot, eid) == [(alice.user_id, "going")], "the vote counted from /relations"
        )
        # Read again: handled already, nothing changes. reread_polls hands each response to the service and
        # returns after that, so the store already shows the outcome: there is nothing to wait for.
        assert await bot.intake.reread_polls() >= 1
        assert _answers(bot, eid) == [(alice.user_id, "going")]
    finally:
        await bot.stop()


async def _set_presence(synapse: SynapseHandle, p: Person, presence: str, status: str) -> None:
    import aiohttp

    path = f"/_matrix/client/v3/presence/{quote(p.user_id, safe='')}/status"
    async with aiohttp.ClientSession() as http:
        resp = await http.put(synapse.public_url + path, json={"presence": presence, "status_msg": status},
                              headers={"Authorization": f"Bearer {p.client.access_token}"})  # fmt: skip
        assert resp.status == 200, await resp.text()


async def test_bot_sync_drops_presence_and_lazy_loads_members(
    synapse: SynapseHandle, people: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every /sync the bot makes asks for members lazily and carries no presence, while the people in its
    room change theirs (and the others see it); its encrypted replies still reach every member: after a
    restart alice, who never spoke, is in no sync the bot got, and carol was only invited when it answered."""
    import bridge.bot.intake
    from provisioner.embedded.synapse import admin_request
    from tests.fixtures.faultproxy import FaultProxy, forward_all

    person = people["person"]
    bot_acct = people["bot"]
    mod, alice, carol, dana = person("mod"), person("alice"), person("carol"), person("dana")
    mod.start()
    alice.start()
    await carol.client.keys_upload()  # her device exists (and can be given keys) before she ever syncs
    room = await make_room(mod, encrypted=True, invite=[alice.user_id, dana.user_id, bot_acct.user_id],
                           marker={"kind": "room", "unit": "ou:presence", "shard": 1, "version": 1})  # fmt: skip
    await dana.client.join(room)  # dana never syncs: her presence is only what she sets below
    # Synapse drops a person's presence updates beyond one per 10 s; dana sets hers many times.
    admin_request(synapse.admin_url, "POST", f"/_synapse/admin/v1/users/{quote(dana.user_id, safe='')}/override_ratelimit",
                  {"messages_per_second": 0, "burst_count": 0}, token=synapse.admin_token)  # fmt: skip
    await until(lambda: room in alice.client.rooms, "alice joined")

    syncs: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (filter asked for, answer)

    def observe(method: str, path: str, status: int, body: bytes) -> None:
        url = urlsplit(path)
        if url.path.endswith("/sync") and status == 200:
            sent = json.loads(parse_qs(url.query).get("filter", ["{}"])[0])
            syncs.append((sent, json.loads(body)))

    proxy = FaultProxy(synapse.url, forward_all, observe)
    cfg = replace(bot_config(synapse, bot_acct, tmp_path), homeserver_url=await proxy.start())
    clock = ManualClock(datetime.now(UTC))
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await until(lambda: room in bot.client.rooms, "bot in the room")
        await until(lambda: all(list(p.client.device_store.active_user_devices(bot_acct.user_id)) for p in (mod, alice)),
                    "bot's keys")  # fmt: skip
        for i in range(3):
            await _set_presence(synapse, dana, "online", f"in, round {i}")
            await _set_presence(synapse, dana, "unavailable", f"away, round {i}")

        def mod_sees_dana() -> bool:
            user = mod.client.rooms[room].users.get(dana.user_id)
            return user is not None and user.status_msg == "away, round 2"

        await until(mod_sees_dana, "dana's presence at mod's client")
        await mod.say(room, "!event list")  # a sync after the presence changes, to be sure the bot saw them
        await until(lambda: mod.notices(room, bot_acct.user_id), "the bot's reply")
    finally:
        await bot.stop()
    # After a gap the restarted bot's first sync shows only mod's last messages: it learns no one else from it.
    monkeypatch.setattr(bridge.bot.intake, "SYNC_FILTER", _window(2))
    await mod.client.room_invite(room, carol.user_id)
    for i in range(3):
        await mod.say(room, f"chatter {i}")
    restart = len(syncs)
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    try:
        await mod.say(room, "!event help")
        await until(lambda: [s for s in alice.notices(room, bot_acct.user_id) if "!event create" in s.content["body"]],
                    "the reply decrypted by alice")  # fmt: skip
        carol.start()  # joins now, and reads what the bot sent while she was invited
        await until(lambda: [s for s in carol.notices(room, bot_acct.user_id) if "!event create" in s.content["body"]],
                    "the reply decrypted by carol")  # fmt: skip
    finally:
        await bot.stop()
        await proxy.close()

    assert len(syncs) > restart > 2
    for sent, _ in syncs:
        assert sent.get("room", {}).get("state", {}).get("lazy_load_members") is True, sent
    assert [ev for _, answer in syncs for ev in answer.get("presence", {}).get("events", [])] == []
    first = syncs[restart][1]["rooms"]["join"][room]
    members = {ev["state_key"] for ev in first["state"]["events"] if ev["type"] == "m.room.member"}
    assert {alice.user_id, dana.user_id, carol.user_id}.isdisjoint(members), members
