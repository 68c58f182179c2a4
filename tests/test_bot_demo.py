"""The event bot in the demo, as a unit head meets it: the real sync's rooms, spaces and profile fields.

The demo (``provisioner demo``, 60 people on a real slapd and Synapse, the real bot process) is started; the
head it prints logs in with the directory password in a client with end-to-end encryption, announces an event
to their unit *by the unit's name as the space shows it* (lower case, only its start), votes in the poll and
exports: the CSV shows their title and their department's path as the directory has them, no internal key.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from nio import RoomEncryptedFile

from tests.test_bot_live import Person, _download, until

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]
ROOT = Path(__file__).resolve().parents[1]
MSK = ZoneInfo("Europe/Moscow")
MARKER = "org.civmatrix.managed"


def _login(url: str, user: str, password: str) -> dict[str, Any]:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    req = urllib.request.Request(f"{url}/_matrix/client/v3/login", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return dict(json.loads(r.read()))


async def test_a_head_announces_to_their_unit_by_name_and_exports_readable_rows(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    cmd = [sys.executable, "-m", "provisioner.cli", "demo", "--dir", str(root), "--people", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})  # fmt: skip
    head: Person | None = None
    try:
        out = ""
        deadline = time.time() + 400
        while "Press Ctrl-C" not in out and time.time() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            if not line:
                break
            out += line
        assert "civmatrix demo is running" in out, out[-3000:]
        url = re.search(r"Homeserver URL : (http://\S+)", out).group(1)  # type: ignore[union-attr]
        who = re.search(r"Log in as\s+: (\S+)\s+/\s+(\S+)\s+\((.+), (.+)\)", out)
        assert who, out
        login, password, name, title = who.groups()
        session = await asyncio.to_thread(_login, url, login, password)
        head = Person(
            url, session["user_id"], session["access_token"], session["device_id"], tmp_path / "head"
        )
        head.start()
        bot_id = re.search(r"The event bot is (@\S+:\S+) ", out).group(1)  # type: ignore[union-attr]

        def my_room() -> str | None:
            for room_id, room in head.client.rooms.items():
                if bot_id in room.users and room.encrypted and room.topic and not room.room_type:
                    return room_id
            return None

        room_id = await until(my_room, "the head's department room")
        path = head.client.rooms[room_id].topic  # the unit's path, as the sync writes it into the topic
        await until(
            lambda: list(head.client.device_store.active_user_devices(bot_id)), "the bot's device keys", 90
        )
        day = (datetime.now(UTC) + timedelta(days=3)).astimezone(MSK).strftime("%Y-%m-%d")
        # As a person types it: lower case, "е" for "ё" (or the reverse), the parent's name too where units
        # of that name exist in several places ("Отдел ЖКХ").
        shown = " / ".join(path.split(" / ")[-2:])
        typed = shown.lower().replace("ё", "е") if "ё" in shown else shown.lower().replace("е", "ё", 1)
        await head.say(room_id, f'!событие создать "Планёрка" {day} 15:00 подразделение "{typed}"')
        poll = (await until(lambda: [s for s in head.seen if s.type == "m.poll.start" and s.room_id == room_id],
                            "the poll in the head's room", 60))[0]  # fmt: skip
        eid = poll.content["m.poll"]["question"]["m.text"][0]["body"].rsplit("[", 1)[1].rstrip("]")
        note = await until(lambda: [s for s in head.notices(room_id, bot_id) if "объявлено подразделению" in s.content["body"]],
                           "where it was announced")  # fmt: skip
        assert f"«{path}»" in note[0].content["body"]
        await head.send(room_id, "m.poll.response", {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll.event_id}, "m.selections": ["going"]})  # fmt: skip
        # The vote is handled once the bot has edited the announcement's count to it; only then may the
        # export be asked for (it lists the answers stored when it runs).
        await until(lambda: [s for s in head.seen if s.room_id == room_id and s.sender == bot_id
                             and s.content.get("m.relates_to", {}).get("rel_type") == "m.replace"
                             and "идут 1" in str(s.content.get("m.new_content", {}))], "the count edited to the vote")  # fmt: skip
        await head.say(room_id, f"!событие экспорт {eid}")
        files = await until(lambda: [s for s in head.seen if s.room_id == room_id and isinstance(s.raw, RoomEncryptedFile)
                                     and s.raw.body.endswith(".csv")], "the CSV", 60)  # fmt: skip
        rows = list(csv.DictReader(io.StringIO((await _download(head, files[0].raw)).decode("utf-8-sig"))))
        mine = [r for r in rows if r["Matrix ID"] == session["user_id"]]
        assert mine and (mine[0]["ФИО"], mine[0]["Должность"], mine[0]["Подразделение"]) == (
            name,
            title,
            path,
        )
        assert mine[0]["Ответ"] == "Иду" and not any("ou:" in v for r in rows for v in r.values())
    finally:
        if head is not None:
            await head.stop()
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
