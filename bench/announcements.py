"""Benchmark: what one unsplit read-only announcement channel of N members costs on a real Synapse.

    python bench/announcements.py --members 5000

Creates N accounts, one channel exactly as the sync makes it (``create_room_body`` with the announcement
power levels), joins everyone (the channel is public until its initial joins are done, as the sync does),
closes it, then measures: events and seconds the joins took, the channel's state size, and one member's
initial ``/sync`` with and without lazy-loaded members (bytes, seconds, member events in the answer).
The numbers and the command are in docs/SIZING.md ("Announcement channels").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.matrix.client import HomeserverClient
from provisioner.apply import create_room_body
from provisioner.core.actions import CreateRoom
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.synapse.config import TEST_RATE_LIMITS


def _events(hs: EmbeddedSynapse, room_id: str) -> int:
    db = sqlite3.connect(f"file:{hs.data_dir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM events WHERE room_id = ?", (room_id,)).fetchone()[0])
    finally:
        db.close()


def _http(url: str, token: str, *, data: bytes | None = None) -> tuple[bytes, float]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    began = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        body = resp.read()
    return body, time.perf_counter() - began


def _initial_sync(hs: EmbeddedSynapse, admin: str, user: str, *, lazy: bool) -> dict[str, Any]:
    login, _ = _http(
        f"{hs.admin_url}/_synapse/admin/v1/users/{urllib.parse.quote(user)}/login", admin, data=b"{}"
    )
    token = json.loads(login)["access_token"]
    flt = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}} if lazy else {}
    query = urllib.parse.urlencode({"filter": json.dumps(flt), "full_state": "false"})
    body, seconds = _http(f"{hs.admin_url}/_matrix/client/v3/sync?{query}", token)
    rooms = json.loads(body)["rooms"]["join"]
    members = sum(
        1
        for r in rooms.values()
        for e in (*r.get("state", {}).get("events", []), *r.get("timeline", {}).get("events", []))
        if e["type"] == "m.room.member"
    )
    return {"bytes": len(body), "seconds": round(seconds, 2), "member_events": members}


async def main(members: int, concurrency: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="civmatrix-announce-"))
    hs = EmbeddedSynapse(work / "synapse", rate_limits=TEST_RATE_LIMITS, presence_scope=True)
    hs.start()
    try:
        admin = hs.create_admin("admin")
        async with HomeserverClient(hs.admin_url, admin.access_token) as c:
            users = [f"@reader{i:05d}:{hs.server_name}" for i in range(members)]
            sem = asyncio.Semaphore(concurrency)

            async def make(u: str) -> None:
                async with sem:
                    await c.put_user(u, displayname=f"Читатель {u[7:12]}")

            began = time.perf_counter()
            await asyncio.gather(*(make(u) for u in users))
            created = time.perf_counter() - began
            action = CreateRoom(
                key="announce:u", room_kind="room", unit_key="u", shard=0, name="Департамент — Объявления",
                alias="bench.announcements", topic="Департамент", parent_key=None,
                power_users=((admin.user_id, 100),), encrypted=True, purpose="announcements", post_level=50, room_version="11",
            )  # fmt: skip
            room = await c.create_room(create_room_body(action, server=hs.server_name, parent_room_id=None))
            before = _events(hs, room)
            began = time.perf_counter()
            for u in users:  # one room's joins are serialised by Synapse anyway
                await c.admin_join(room, u)
            joined = time.perf_counter() - began
            await c.send_state(room, "m.room.join_rules", "", {"join_rule": "invite"})
            join_events = _events(hs, room) - before - 1
        reader = users[members // 2]
        return {
            "members": members,
            "accounts_seconds": round(created, 1),
            "join_seconds": round(joined, 1),
            "joins_per_second": round(members / joined, 1),
            "join_events": join_events,
            "room_events_total": _events(hs, room),
            "initial_sync_lazy": _initial_sync(hs, admin.access_token, reader, lazy=True),
            "initial_sync_full": _initial_sync(hs, admin.access_token, reader, lazy=False),
        }
    finally:
        hs.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.members, args.concurrency)), indent=1))
