"""Benchmark: what the event bot's /sync receives with its old filter and with the current one, side by side.

    nice python bench/bot_sync_traffic.py                          # 10 rooms x 50 people, 4 presence rounds
    nice python bench/bot_sync_traffic.py --rooms 20 --per-room 100 --rounds 4 --messages 5

One real Synapse on loopback (SQLite). Two bot accounts sit in the same rooms and in one space holding
everyone, each running the bot's sync pattern (a first sync with the full state, then long polls of
``sync_timeout_ms``), one with the filter the bot used before (timeline window only), one with
:data:`bridge.bot.intake.SYNC_FILTER`. Both see the same scenario at the same time: every person sets their
presence ``--rounds`` times (online, then unavailable, each with a status message) and ``--messages`` messages
are posted in every room. The rooms are not encrypted (no client here holds keys): encryption changes message
sizes and adds to-device traffic, the same under either filter. Bytes are the JSON bodies as Synapse sends them
(no compression on its listener).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bridge.bot.config import BotConfig
from bridge.bot.intake import SYNC_FILTER
from bridge.matrix.client import HomeserverClient
from provisioner.embedded.synapse import EmbeddedSynapse, RegisteredAccount
from provisioner.synapse.config import TEST_RATE_LIMITS

OLD_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 100}}}  # the bot's filter before lazy loading
END = "end of scenario"
# Synapse keeps one presence update per person per 10 s by default; the scenario sets them faster.
RATE_LIMITS = {**TEST_RATE_LIMITS, "rc_presence": {"per_user": {"per_second": 1000, "burst_count": 1000}}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def count_events(body: dict[str, Any]) -> Counter[str]:
    """Events in one /sync answer, by section."""
    n: Counter[str] = Counter()
    for section in ("presence", "account_data", "to_device"):
        n[section] += len(body.get(section, {}).get("events", []))
    for room in body.get("rooms", {}).get("join", {}).values():
        for section in ("timeline", "state", "ephemeral", "account_data"):
            n[f"room {section}"] += len(room.get(section, {}).get("events", []))
    for room in body.get("rooms", {}).get("invite", {}).values():
        n["invite state"] += len(room.get("invite_state", {}).get("events", []))
    return n


@dataclass
class Meter:
    """One bot account's sync loop, counting what it receives."""

    name: str
    url: str
    token: str
    filter: dict[str, Any]
    timeout_ms: int
    initial_bytes: int = 0
    initial: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    responses: int = 0
    events: Counter[str] = field(default_factory=Counter)
    ends: set[str] = field(default_factory=set)  # rooms whose end marker arrived
    started: asyncio.Event = field(default_factory=asyncio.Event)
    counting: bool = False

    async def run(self, http: aiohttp.ClientSession) -> None:
        since: str | None = None
        flt = json.dumps(self.filter)
        while True:
            params = {"filter": flt, "timeout": "0" if since is None else str(self.timeout_ms)}
            if since is None:
                params["full_state"] = "true"
            else:
                params["since"] = since
            async with http.get(f"{self.url}/_matrix/client/v3/sync", params=params,
                                headers={"Authorization": f"Bearer {self.token}"}) as r:  # fmt: skip
                raw = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{self.name}: /sync answered {r.status}: {raw[:300]!r}")
            body = json.loads(raw)
            if since is None:
                self.initial_bytes, self.initial = len(raw), count_events(body)
                self.started.set()
            elif self.counting:
                self.bytes += len(raw)
                self.responses += 1
                self.events += count_events(body)
            for room_id, room in body.get("rooms", {}).get("join", {}).items():
                if any(
                    e.get("content", {}).get("body") == END
                    for e in room.get("timeline", {}).get("events", [])
                ):
                    self.ends.add(room_id)
            since = body["next_batch"]


async def put(http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> None:
    async with http.put(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status != 200:
            raise RuntimeError(f"PUT {url}: {r.status} {await r.text()}")


async def run(args: argparse.Namespace, tmp: Path) -> tuple[Meter, Meter]:
    hs = EmbeddedSynapse(tmp / "hs", rate_limits=RATE_LIMITS, log_level="WARNING")
    hs.start()
    try:
        admin = hs.create_admin("admin")
        people_n = args.rooms * args.per_room
        log(f"Synapse up in {hs.last_start_seconds:.1f} s; registering {people_n} people and two bots")
        with ThreadPoolExecutor(8) as pool:
            people: list[RegisteredAccount] = list(
                pool.map(lambda i: hs.register(f"p{i:05d}", displayname=f"Person {i}"), range(people_n))
            )
        bots = [hs.register(name, displayname="Events") for name in ("bot-old", "bot-new")]
        sem = asyncio.Semaphore(8)
        async with HomeserverClient(hs.admin_url, admin.access_token, pool_limit=16) as c:
            space = await c.create_room({"name": "Organisation", "preset": "public_chat",
                                         "creation_content": {"type": "m.space"}})  # fmt: skip
            rooms = [
                await c.create_room({"name": f"Department {i}", "preset": "public_chat"})
                for i in range(args.rooms)
            ]

            async def join(room: str, user: str) -> None:
                async with sem:
                    await c.admin_join(room, user)

            for b in bots:
                await asyncio.gather(*(join(r, b.user_id) for r in [space, *rooms]))
            for i, room in enumerate(rooms):
                members = people[i * args.per_room : (i + 1) * args.per_room]
                await asyncio.gather(*(join(room, p.user_id) for p in members))
            log(
                "rooms joined; joining everyone into the space (one lane: Synapse serialises one room's joins)"
            )
            for p in people:
                await c.admin_join(space, p.user_id)
        timeout_ms = next(f.default for f in fields(BotConfig) if f.name == "sync_timeout_ms")
        assert isinstance(timeout_ms, int)
        meters = (
            Meter("old filter", hs.public_url, bots[0].access_token, OLD_FILTER, timeout_ms),
            Meter("new filter", hs.public_url, bots[1].access_token, SYNC_FILTER, timeout_ms),
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            loops = [asyncio.create_task(m.run(http)) for m in meters]
            try:
                await asyncio.wait_for(asyncio.gather(*(m.started.wait() for m in meters)), 600)
                await asyncio.sleep(2)
                for m in meters:
                    m.counting = True
                log(
                    f"scenario: {people_n} people x {args.rounds} presence rounds, {args.messages} messages per room"
                )
                t0 = time.perf_counter()
                await scenario(http, hs.public_url, people, rooms, args)
                deadline = time.monotonic() + 300
                while not all(m.ends >= set(rooms) for m in meters):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the end markers did not arrive within 5 min")
                    for task in loops:
                        if task.done():
                            task.result()
                    await asyncio.sleep(0.5)
                await asyncio.sleep(args.settle)  # late presence (none expected: it is written synchronously)
                log(f"scenario done in {time.perf_counter() - t0:.1f} s")
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
        return meters
    finally:
        hs.stop()


async def send(http: aiohttp.ClientSession, url: str, token: str, room: str, text: str) -> None:
    txn = f"t{time.monotonic_ns()}"
    await put(http, f"{url}/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.message/{txn}", token,
              {"msgtype": "m.text", "body": text})  # fmt: skip


async def scenario(
    http: aiohttp.ClientSession,
    url: str,
    people: list[RegisteredAccount],
    rooms: list[str],
    args: argparse.Namespace,
) -> None:
    sem = asyncio.Semaphore(16)

    async def presence(p: RegisteredAccount, state: str, msg: str) -> None:
        async with sem:
            path = f"{url}/_matrix/client/v3/presence/{quote(p.user_id, safe='')}/status"
            await put(http, path, p.access_token, {"presence": state, "status_msg": msg})

    async def say(p: RegisteredAccount, room: str, text: str) -> None:
        async with sem:
            await send(http, url, p.access_token, room, text)

    for k in range(args.rounds):
        for state in ("online", "unavailable"):
            await asyncio.gather(*(presence(p, state, f"{state} {k}") for p in people))
    for j in range(args.messages):
        await asyncio.gather(
            *(
                say(people[i * args.per_room + j % args.per_room], room, f"message {j}")
                for i, room in enumerate(rooms)
            )
        )
    await asyncio.gather(*(say(people[i * args.per_room], room, END) for i, room in enumerate(rooms)))


def report(meters: tuple[Meter, Meter], args: argparse.Namespace) -> None:
    old, new = meters
    sections = sorted({*old.events, *new.events, *old.initial, *new.initial})

    def ratio(a: int, b: int) -> str:
        return f"{a / b:.1f}x" if b else ("=" if a == 0 else "inf")

    rows = [
        ("first sync (full state): bytes", old.initial_bytes, new.initial_bytes),
        ("first sync: events", sum(old.initial.values()), sum(new.initial.values())),
        ("scenario: /sync answers", old.responses, new.responses),
        ("scenario: bytes", old.bytes, new.bytes),
        ("scenario: events", sum(old.events.values()), sum(new.events.values())),
        *((f"scenario: {s} events", old.events[s], new.events[s]) for s in sections),
    ]
    people = args.rooms * args.per_room
    print(f"{args.rooms} rooms x {args.per_room} people ({people}), one space of all; "
          f"{args.rounds} presence rounds (x2 changes each), {args.messages} messages per room")  # fmt: skip
    print("| measure | old filter | new filter | old / new |\n|---|---:|---:|---:|")
    for label, a, b in rows:
        print(f"| {label} | {a:,} | {b:,} | {ratio(a, b)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=10, help="department rooms (default 10)")
    ap.add_argument("--per-room", type=int, default=50, help="people in each room (default 50)")
    ap.add_argument("--rounds", type=int, default=4, help="presence rounds per person (default 4)")
    ap.add_argument("--messages", type=int, default=5, help="messages per room (default 5)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to keep syncing after the end markers")
    args = ap.parse_args()
    if min(args.rooms, args.per_room) < 1 or min(args.rounds, args.messages) < 0:
        ap.error("--rooms and --per-room must be at least 1, --rounds and --messages at least 0")
    with tempfile.TemporaryDirectory(prefix="bench-bot-sync-") as tmp:
        report(asyncio.run(run(args, Path(tmp))), args)


if __name__ == "__main__":
    main()
