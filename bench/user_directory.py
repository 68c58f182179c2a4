"""Benchmark: when does an account the sync creates become searchable in Synapse's *own* user directory?

    nice python bench/user_directory.py --people 2000

That directory is what the proxy falls back to when the search service is down. A real Synapse (the project's
closed-server config: ``user_directory.search_all_users: true``, SQLite) is started fresh; accounts are
created the way the sync creates them (``PUT /_synapse/admin/v2/users/<id>`` with a display name, 16 at a
time), each with a display name holding a word no other account has; then ``user_directory/search`` is
polled for the last one created and, once it is found, for a sample of all of them. Two rounds:

* ``fresh``: right after the server answers, while its first-start background updates (which rebuild the
  user directory: ``populate_user_directory``) may still be running — a first bulk sync on a new server;
* ``settled``: once ``background_updates`` is empty — every later sync.

Prints one JSON line per round: seconds to create, seconds from the last creation until the last account
is found, and how many of a fixed sample of the accounts search finds, once a second, until the background
updates are done and ``--grace`` seconds more (the least and the last of those counts, and when they changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import aiohttp

from bridge.matrix.client import HomeserverClient
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.synapse.config import TEST_RATE_LIMITS

SERVER = "example.test"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tag(round_name: str, i: int) -> str:
    """A word only this account's display name holds: letters only, so Synapse indexes it as one token."""
    word = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        word = LETTERS[r] + word
    return f"q{round_name[0]}{word}"


async def create(hs: EmbeddedSynapse, token: str, names: list[tuple[str, str]]) -> float:
    sem = asyncio.Semaphore(16)
    t0 = time.perf_counter()
    async with HomeserverClient(hs.admin_url, token, pool_limit=32) as c:

        async def one(user_id: str, display: str) -> None:
            async with sem:
                await c.put_user(user_id, displayname=display)

        await asyncio.gather(*(one(u, d) for u, d in names))
    return time.perf_counter() - t0


async def found(session: aiohttp.ClientSession, url: str, token: str, word: str, user_id: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(url, json={"search_term": word, "limit": 10}, headers=headers) as r:
        data: dict[str, Any] = await r.json()
        if r.status != 200:
            raise RuntimeError(f"user_directory/search answered {r.status}: {data}")
    return any(x.get("user_id") == user_id for x in data.get("results", ()))


async def measure(
    hs: EmbeddedSynapse, token: str, round_name: str, n: int, timeout: float, grace: float, sample: int
) -> dict[str, Any]:
    names = [(f"@{tag(round_name, i)}:{SERVER}", f"Проверкин {tag(round_name, i)}") for i in range(n)]
    pending_before = hs.pending_background_updates()
    created_s = await create(hs, token, names)
    t_created = time.perf_counter()
    url = f"{hs.public_url}/_matrix/client/v3/user_directory/search"
    picks = random.Random(5).sample(range(n), min(sample, n))
    last_user, last_display = names[-1]
    row: dict[str, Any] = {"round": round_name, "people": n, "create_s": round(created_s, 1),
                           "background_updates_pending_at_start": pending_before}  # fmt: skip
    async with aiohttp.ClientSession() as s:
        last_found_s: float | None = None
        while time.perf_counter() - t_created < timeout:
            if await found(s, url, token, last_display.split()[1], last_user):
                last_found_s = time.perf_counter() - t_created
                break
            await asyncio.sleep(0.1)
        row["last_found_after_s"] = None if last_found_s is None else round(last_found_s, 2)

        async def count() -> int:
            hits = 0
            for i in picks:
                user_id, display = names[i]
                hits += await found(s, url, token, display.split()[1], user_id)
            return hits

        # Then watch the sample until the background updates are done (and ``grace`` more): a rebuild of the
        # directory empties it first, so accounts found a moment ago can vanish for a while, or for good.
        timeline: list[tuple[float, int, int]] = []
        settled_at: float | None = None
        while True:
            now = time.perf_counter() - t_created
            pending = hs.pending_background_updates()
            timeline.append((round(now, 1), await count(), pending))
            if pending == 0 and settled_at is None:
                settled_at = now
            if (settled_at is not None and now - settled_at >= grace) or now > timeout:
                break
            await asyncio.sleep(1.0)
    seen = [hits for _, hits, _ in timeline]
    row["sample"] = len(picks)
    row["sample_found_first"] = seen[0]
    row["sample_found_min"] = min(seen)
    row["sample_found_final"] = seen[-1]
    row["seconds_with_some_missing"] = sum(
        b[0] - a[0] for a, b in itertools.pairwise(timeline) if a[1] < len(picks)
    )
    row["background_updates_done_after_s"] = None if settled_at is None else round(settled_at, 1)
    # Only the moments something changed: what a reader needs to see the dip.
    row["timeline_s_found_pending"] = [
        t for i, t in enumerate(timeline) if i == 0 or t[1:] != timeline[i - 1][1:] or i == len(timeline) - 1
    ]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=2000, help="accounts created per round")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on the last account after this")
    ap.add_argument(
        "--grace", type=float, default=30.0, help="seconds the sample is watched after the updates"
    )
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-userdir-"))
    hs = EmbeddedSynapse(tmp / "synapse", server_name=SERVER, log_level="WARNING", rate_limits=TEST_RATE_LIMITS,
                         overrides={"rc_user_directory": {"per_second": 10000, "burst_count": 10000}})  # fmt: skip
    hs.start()
    try:
        token = hs.create_admin("admin").access_token
        fresh = asyncio.run(measure(hs, token, "fresh", args.people, args.timeout, args.grace, args.sample))
        print(json.dumps(fresh), flush=True)
        hs.wait_for_background_updates()
        settled = asyncio.run(
            measure(hs, token, "settled", args.people, args.timeout, args.grace, args.sample)
        )
        print(json.dumps(settled), flush=True)
    finally:
        hs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
