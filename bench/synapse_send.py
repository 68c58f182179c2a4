"""Benchmark: how many messages per second does the embedded Synapse accept from one account?

    python bench/synapse_send.py                 # SQLite, 200 rooms, 1 / 4 / 16 / 32 / 64 in flight
    python bench/synapse_send.py --postgres      # the same on the local PostgreSQL

The ceiling the event bot's reminder bursts run into: one ``m.notice`` into each of ``--rooms`` rooms (as a
burst of reminders goes to that many direct chats), sent with raw HTTP (no encryption, no client library) at
each concurrency in turn. Prints one markdown table. Only loopback; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sync import fresh_pg
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.synapse.config import TEST_RATE_LIMITS


async def measure(url: str, token: str, rooms: int, levels: list[int]) -> list[tuple[int, float]]:
    headers = {"Authorization": f"Bearer {token}"}
    out: list[tuple[int, float]] = []
    async with aiohttp.ClientSession(headers=headers) as http:

        async def create(sem: asyncio.Semaphore) -> str:
            async with (
                sem,
                http.post(f"{url}/_matrix/client/v3/createRoom", json={"preset": "private_chat"}) as r,
            ):
                body: dict[str, Any] = await r.json()
                return str(body["room_id"])

        made = asyncio.Semaphore(8)
        room_ids = await asyncio.gather(*(create(made) for _ in range(rooms)))
        for level in levels:
            sem = asyncio.Semaphore(level)

            async def send(room: str, txn: str, sem: asyncio.Semaphore = sem) -> None:
                path = f"{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"
                async with sem, http.put(path, json={"msgtype": "m.notice", "body": "reminder"}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"send refused: {r.status} {await r.text()}")

            t = time.monotonic()
            await asyncio.gather(*(send(r, f"c{level}-{i}") for i, r in enumerate(room_ids)))
            out.append((level, rooms / (time.monotonic() - t)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=200)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    ap.add_argument("--postgres", action="store_true", help="Synapse on the local PostgreSQL (trust auth)")
    args = ap.parse_args()
    if args.rooms <= 0 or any(n <= 0 for n in args.in_flight):
        ap.error("--rooms and --in-flight must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="civmatrix-bench-send-"))
    database = fresh_pg("civmatrix_bench_send") if args.postgres else None
    hs = EmbeddedSynapse(tmp / "hs", rate_limits=TEST_RATE_LIMITS, log_level="WARNING", database=database)
    load0 = "/".join(f"{x:.1f}" for x in os.getloadavg())
    hs.start()
    try:
        acct = hs.create_user_with_password("sender", "pw-sender")
        rows = asyncio.run(measure(hs.admin_url, acct.access_token, args.rooms, args.in_flight))
    finally:
        hs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    db = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nSynapse send rate — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {db}, "
          f"{args.rooms} rooms, load at start {load0}\n")  # fmt: skip
    print("| in flight | messages/s |")
    print("|---|---|")
    for level, rate in rows:
        print(f"| {level} | {rate:.0f} |")


if __name__ == "__main__":
    main()
