"""The bot with Element's own client stack: matrix-js-sdk and its Rust crypto (npm), in an encrypted room.

``tests/interop/element_client.mjs`` is a person in Element: it decrypts the bot's poll, votes in it (the
MSC3381 shape Element sends), reacts to the announcement, sends a command and decrypts the bot's reply, then
accepts the bot's direct chat and decrypts the reminder there; invited by id to an event for invitees only,
it decrypts the invitation in that chat and answers with one tap on the bot's ✅. The versions are pinned by
``tests/interop/package-lock.json``; ``npm ci`` installs them into that directory (``node_modules`` is not
kept in the tree) the first time the test runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.bot.app import EventBot
from bridge.events.clock import ManualClock
from bridge.events.store import open_sqlite
from tests.fixtures.synapse import SynapseHandle, unique_localpart
from tests.test_bot_live import Person, bot_config, make_room, until

pytestmark = pytest.mark.synapse

INTEROP = Path(__file__).parent / "interop"
MSK = ZoneInfo("Europe/Moscow")


def _install() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("the interop test needs Node.js ≥ 20 and npm (apt-get install nodejs npm)")
    if not (INTEROP / "node_modules" / "matrix-js-sdk").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, capture_output=True)


async def _steps(proc: asyncio.subprocess.Process) -> Any:
    """The script's "@@" lines, as they come (its other output is the SDK's logging)."""
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise AssertionError(f"the Element client exited ({await proc.wait()}) before finishing")
        if line.startswith(b"@@"):
            step = json.loads(line[2:])
            if step.get("step") == "error":
                raise AssertionError(f"the Element client failed: {step['message']}")
            yield step


async def test_element_stack_reads_and_answers_the_bot(synapse: SynapseHandle, tmp_path: Path) -> None:
    await asyncio.to_thread(_install)
    mod_acct = synapse.register(unique_localpart("mod"), "pw-mod", displayname="Mod")
    js = synapse.register(unique_localpart("element"), "pw-element", displayname="Elena")
    bot_acct = synapse.register(unique_localpart("eventbot"), "pw-bot", displayname="Events")
    mod = Person(
        synapse.public_url, mod_acct.user_id, mod_acct.access_token, mod_acct.device_id, tmp_path / "mod"
    )
    mod.start()
    room = await make_room(mod, encrypted=True, invite=[js.user_id, bot_acct.user_id], name="Отдел связи",
                           topic="Отдел связи", marker={"kind": "room", "unit": "ou:interop", "shard": 1, "version": 1})  # fmt: skip
    clock = ManualClock(datetime.now(UTC))
    cfg = bot_config(synapse, bot_acct, tmp_path)
    bot = EventBot(cfg, open_sqlite(cfg.store), clock)
    await bot.start()
    log = (tmp_path / "element.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "node", "element_client.mjs", synapse.public_url, js.user_id, js.access_token, js.device_id, room,
        cwd=INTEROP, stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        steps = _steps(proc)
        joined = await asyncio.wait_for(anext(steps), 60)
        assert joined["step"] == "joined"
        await until(lambda: room in bot.client.rooms, "bot joined")
        # The bot must know the Element device before it encrypts the poll for it (as it would for a
        # colleague who joined a while ago), and the moderator's client the bot's.
        await until(
            lambda: list(bot.client.device_store.active_user_devices(js.user_id)), "Element's device keys"
        )
        await until(
            lambda: list(mod.client.device_store.active_user_devices(bot_acct.user_id)), "bot's device keys"
        )
        day = (clock.now() + timedelta(days=3)).astimezone(MSK).strftime("%Y-%m-%d")
        await mod.say(room, f'!event create "Interop check" {day} 15:00 place "Room 7"')

        going = await asyncio.wait_for(anext(steps), 90)
        assert going["step"] == "going"
        eid = going["event"]
        # The poll it decrypted is labelled as one way to answer; the reply says which answer counts.
        assert (
            going["question"].startswith("Interop check — ")
            and "the poll is one way to answer" in going["question"]
        )
        assert "You are going to “Interop check”" in going["reply"]
        assert (
            "The poll still shows your vote “Not going”, but this latest answer counts: “Going”"
            in going["reply"]
        )
        answers = bot.store
        rows = {r.user_id: r for r in await answers.answers(eid)}
        assert rows[js.user_id].answer.value == "going" and rows[js.user_id].source.value == "command"

        # The 24 h reminder, in the direct chat the bot opens with Elena.
        start = datetime.fromisoformat(f"{day}T15:00").replace(tzinfo=MSK)
        clock.set(start.astimezone(UTC) - timedelta(hours=24))
        bot.wake_scheduler()
        done = await asyncio.wait_for(anext(steps), 90)
        assert done["step"] == "done" and done["encrypted"] and done["room"] != room
        assert "⏰ Reminder: “Interop check” in 24 hours" in done["reminder"] and "Room 7" in done["reminder"]

        # Invited by Matrix id: the invitation comes in the same encrypted direct chat, the tap counts.
        await mod.say(room, f'!event create "Interop invite" {day} 16:00 audience none invite {js.user_id}')
        invited = await asyncio.wait_for(anext(steps), 90)
        assert invited["step"] == "invited" and invited["encrypted"] and invited["roomEncrypted"]
        assert invited["room"] == done["room"] and invited["offered"] in ("✅", "❔", "❌")
        assert "You are invited: “Interop invite”" in invited["invitation"]
        eid2 = invited["invitation"].split("[", 1)[1].split("]", 1)[0]

        async def tapped() -> list[Any]:
            return [(r.user_id, r.answer.value, r.source.value) for r in await bot.store.answers(eid2)]

        for _ in range(150):
            if await tapped():
                break
            await asyncio.sleep(0.2)
        assert await tapped() == [(js.user_id, "going", "reaction")]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
        await bot.stop()
        await mod.stop()
