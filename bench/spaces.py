"""Benchmark: what a big space costs, private (invite) against public join rule, on a real Synapse.

    nice python bench/spaces.py --people 3000            # a few minutes; results extrapolate linearly / quadratically

For N people joined into one space it measures: the join events and the time to make them (admin join:
invite + join for a private space, one join for a public one), the rows Synapse's user directory keeps
(``users_who_share_private_rooms`` grows with N², ``users_in_public_rooms`` with N), and a member's initial
/sync (with and without lazy-loaded members, as Element and as a plain client without lazy loading).
SQLite, so the row counts are read from the database file; the times are this 2-core box's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bridge.matrix.client import HomeserverClient
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.synapse.config import TEST_RATE_LIMITS

SERVER = "example.test"


def count(hs: EmbeddedSynapse, sql: str) -> int:
    db = sqlite3.connect(f"file:{hs.data_dir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


async def settle(hs: EmbeddedSynapse, table: str, want: int, timeout: float = 600.0) -> int:
    """The user directory is filled in the background: wait until ``table`` stops growing (or has ``want``)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(hs, f"SELECT count(*) FROM {table}")
        if n >= want:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 20:
            return n
        await asyncio.sleep(1)
    return last


async def initial_sync(url: str, token: str, lazy: bool) -> tuple[float, int]:
    flt = {"room": {"state": {"lazy_load_members": lazy}, "timeline": {"limit": 10}}}
    t0 = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{url}/_matrix/client/v3/sync",
            params={"filter": json.dumps(flt), "timeout": "0"},
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        body = await r.read()
        assert r.status == 200, body[:200]
    return time.perf_counter() - t0, len(body)


async def scenario(hs: EmbeddedSynapse, token: str, users: list[str], join_rule: str) -> dict[str, Any]:
    events_before = count(hs, "SELECT count(*) FROM events")
    async with HomeserverClient(hs.admin_url, token, pool_limit=16) as c:
        room = await c.create_room({
            "name": f"Space {join_rule}", "preset": "public_chat" if join_rule == "public" else "private_chat",
            "visibility": "private", "creation_content": {"type": "m.space"},
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": join_rule}},
                              {"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "world_readable"}}],
        })  # fmt: skip
        t0 = time.perf_counter()
        # Joins into one room are serialised by Synapse: a single lane, as the sync does.
        for uid in users:
            await c.admin_join(room, uid)
        joins_s = time.perf_counter() - t0
    events = count(hs, "SELECT count(*) FROM events") - events_before
    n = len(users) + 1
    if join_rule == "public":
        rows = await settle(hs, "users_in_public_rooms", n)
    else:
        rows = await settle(hs, "users_who_share_private_rooms", n * (n - 1))
    return {"join_rule": join_rule, "members": n, "events": events, "joins_s": joins_s,
            "joins_per_s": len(users) / joins_s, "directory_rows": rows}  # fmt: skip


async def run(people: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-spaces-"))
    hs = EmbeddedSynapse(tmp / "synapse", log_level="WARNING", rate_limits=TEST_RATE_LIMITS)
    hs.start()
    try:
        admin = hs.create_admin("admin")
        token = admin.access_token
        users = [f"@p{i:06d}:{SERVER}" for i in range(people)]
        sem = asyncio.Semaphore(16)
        async with HomeserverClient(hs.admin_url, token, pool_limit=32) as c:

            async def mk(uid: str) -> None:
                async with sem:
                    await c.put_user(uid, displayname=f"Сотрудник {uid[2:8]}")

            t0 = time.perf_counter()
            await asyncio.gather(*(mk(u) for u in users))
            print(json.dumps({"accounts": people, "seconds": time.perf_counter() - t0}), flush=True)
        half = people // 2
        for rule, members in (("invite", users[:half]), ("public", users[half:])):
            row = await scenario(hs, token, members, rule)
            member_token = hs.register(f"probe{rule}", "probe-password-1", admin=False).access_token
            async with HomeserverClient(hs.admin_url, token) as c:
                rooms = [r async for r in c.list_rooms()]
                space = next(r.room_id for r in rooms if r.name == f"Space {rule}")
                await c.admin_join(space, f"@probe{rule}:{SERVER}")
            row["sync_lazy_s"], row["sync_lazy_bytes"] = await initial_sync(hs.public_url, member_token, True)
            row["sync_full_s"], row["sync_full_bytes"] = await initial_sync(
                hs.public_url, member_token, False
            )
            print(json.dumps(row), flush=True)
    finally:
        hs.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=3000)
    asyncio.run(run(ap.parse_args().people))


if __name__ == "__main__":
    main()
