"""Benchmark: people online — Element-like clients against the production topology, then against stock Synapse.

    nice python bench/online.py --people 3000 --steps 100,250,500,1000,2000 --window 300 --storm 500
    nice python bench/online.py --people 400 --steps 50,100 --window 60 --storm 100 --storm-seconds 20  # quick

One run, one generated city (one slapd, every person's directory password set), two sides one after the other:

* **civmatrix**: :class:`provisioner.embedded.topology.Topology` as ``make demo ARGS=--workers`` starts it
  (PostgreSQL, Redis, Synapse main + sync worker(s) + event persister + presence writer, nginx in front), the
  directory login module, the presence and space-browsing modules every deployment renders;
* **stock** (``--sides stock`` alone, or both, the default): one Synapse process on its own PostgreSQL, nginx in
  front, Synapse's defaults — no civmatrix module but the directory login module (a stock server's LDAP login
  is synapse-ldap3, the same kind of password provider; both sides pay the same bind per login).

Both sides carry the tests' raised rate limits (``TEST_RATE_LIMITS``): every simulated person comes from
127.0.0.1, and Synapse's per-address login limit (0.17/s) would otherwise refuse them all but a few. The space
hierarchy limit is not among them: the stock side meets Synapse's own (its 429s are counted).

Each side: the provisioner's sync of the city (space tree: the top space holds everyone), then

1. **login storm** (``--storm N`` over ``--storm-seconds``): N people log in with their directory password
   (``POST /login``, ``m.login.password``: an LDAP bind in the login module), upload device keys and 50
   one-time keys (``POST /keys/upload``, as Element does on a new device), and make their initial sync;
   logins/s sustained, time from the login's start to the first sync's answer, CPU per process over the storm.
2. **steps** (``--steps``): the number of people online is stepped up; each new person logs in the same way
   and stays online: ``/sync`` long polls (``timeout=30000``, Element's lazy-loading filter,
   ``set_presence``) or, for ``--sliding`` of them (30 %), Element X's simplified sliding sync (``POST
   /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`` with ``pos`` and ``timeout``, the room-list
   request of the topology test, with 10 events of timeline; it takes no ``set_presence``, so those people
   state theirs with ``PUT /presence`` as they log in). While online a person, at random (Poisson)
   times at the ``--rate`` stated below: goes idle (``PUT /presence`` unavailable; the long poll's
   ``set_presence`` follows) after a mean of ``--active-minutes`` and comes back after ``--away-minutes``;
   types (``PUT /typing``, 1–3 s) then sends a message, a share ``--dm-share`` in a DM with a room mate and
   the rest in one of their department rooms; sends a read receipt for the latest message each sync brings in
   a room while active; searches the directory (``POST /user_directory/search``: the search service when one
   runs, else Synapse; none runs here); opens the lobby of one of their spaces (``GET /hierarchy``,
   ``max_depth=1``, ``limit=20``, page by page, as tests/test_space_tree_live.py does). After everyone of a
   step is online and a few seconds of settling, ``--window`` seconds are measured.

Every message body carries a unique tag; each client records when its sync first returns a tag, so a message's
latency is measured to each recipient online at the moment it was sent (a recipient that never sees it within
the window and 10 s of grace counts as undelivered). CPU is read from /proc per server process tree (each
Synapse process, PostgreSQL's postmaster with its backends, nginx's master with its worker, Redis) and stated
in CPU seconds per 1,000 online people per minute, with its memory (PSS of the tree) at the end of the window;
the load generator's own CPU (this process: it shares the cores) and what the rest of the machine spent (other
people's load: ``/proc/stat`` less the two) are stated beside it. Before the storm, each process's CPU with
nobody online is measured (``min(window, 60)`` s); each step also states its CPU less that idle share, the
cost of the people themselves (what a larger server adds per person). Stepping stops after the first step
whose delivery p99 exceeds 1 s or where this run (server and generator) filled ≥ 90 % of the cores;
``--all-steps`` measures every step anyway (a functional run on a shared, noisy machine).

Why not Locust (the field's standard driver, which matrix-locust builds on): each person here is a handful of
coroutines that mostly wait on a 30-second long poll, and one message's delivery is correlated across all its
recipients' syncs; an asyncio/aiohttp generator holds thousands of idle long polls in one process for less CPU
than Locust's gevent greenlets (matrix-locust is reported unstable above ~5,000 users), and the shared
bookkeeping (who was online when a message was sent, when each of them saw it) is plain in-process state
rather than a Locust event-hook protocol. The load generator's CPU is measured and reported either way.

Results are printed as markdown (and each step as JSON on stderr as soon as it is measured); everything runs on
loopback in one temporary directory, removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import os
import random
import re
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.presence import FILTER, rooms_of
from bench.proc import cpu_seconds, memory_mib
from bench.topology import Shape, Single, Workers, pct, timed_sync, workdir, write_cfg
from provisioner.config import load_config
from provisioner.deploy import LOGIN_MODULE
from provisioner.embedded.postgres import EmbeddedPostgres
from provisioner.embedded.slapd import EmbeddedSlapd, ssha
from provisioner.sample import SampleDirectory, generate_directory
from provisioner.synapse.auth import module_config_from
from tests.helpers import write_config
from tests.test_topology import ELEMENT_X_SYNC

PASSWORD = "directory-password-1"
TAG = re.compile(r"\[lg:([0-9a-f]+)\]")
SLIDING_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
# Element X's room list, with enough timeline that a burst of messages in one room between two polls arrives.
SLIDING_BODY = copy.deepcopy(ELEMENT_X_SYNC)
SLIDING_BODY["lists"]["all"]["timeline_limit"] = 10
P99_LIMIT = 1.0
BUSY_LIMIT = 0.9
GRACE = 10.0
# Element shows its spinner until the first sync answers, however long that takes; a client giving up sooner
# would count a slow server as failed logins.
FIRST_SYNC_WAIT = 600.0


# --------------------------------------------------------------------------------------------------------
# Bookkeeping (pure)
# --------------------------------------------------------------------------------------------------------


@dataclass
class Deliveries:
    """Each tagged message: when it was sent and to whom; when each recipient's sync first returned it."""

    sent: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    seen: dict[str, dict[str, float]] = field(default_factory=dict)

    def on_send(self, tag: str, at: float, recipients: Iterable[str]) -> None:
        self.sent[tag] = (at, frozenset(recipients))

    def on_seen(self, tag: str, user: str, at: float) -> None:
        # A sync can return a message before its sender's PUT has answered: seen is kept whatever the order.
        self.seen.setdefault(tag, {}).setdefault(user, at)

    def between(self, t0: float, t1: float) -> tuple[list[float], int, int]:
        """(latencies, undelivered, messages) of the messages sent in ``[t0, t1)``, one latency per recipient."""
        latencies: list[float] = []
        missing = messages = 0
        for tag, (at, recipients) in self.sent.items():
            if not t0 <= at < t1:
                continue
            messages += 1
            seen = self.seen.get(tag, {})
            for user in recipients:
                if user in seen:
                    latencies.append(max(0.0, seen[user] - at))
                else:
                    missing += 1
        return latencies, missing, messages


def per_thousand_minute(cpu: float, online: int, seconds: float) -> float:
    """CPU seconds per 1,000 online people per minute."""
    return cpu / (online / 1000) / (seconds / 60) if online and seconds else 0.0


def machine_busy_seconds(proc: Path = Path("/proc")) -> float:
    """CPU seconds the whole machine has spent not idle since boot (all cores)."""
    fields = [int(x) for x in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: Mapping[str, float]
    memory: Mapping[str, float]
    loadgen: float
    machine: float


def snapshot(pids: Mapping[str, int]) -> Snapshot:
    return Snapshot(
        time.monotonic(),
        {name: cpu_seconds(pid) for name, pid in pids.items()},
        {name: memory_mib(pid) for name, pid in pids.items()},
        time.process_time(),
        machine_busy_seconds(),
    )


def cost(a: Snapshot, b: Snapshot, online: int) -> dict[str, Any]:
    """What each process spent between two snapshots, per 1,000 online per minute, and its memory at ``b``."""
    seconds = b.at - a.at
    server = {name: b.cpu[name] - a.cpu.get(name, 0.0) for name in b.cpu}
    loadgen = b.loadgen - a.loadgen
    machine = b.machine - a.machine
    return {
        "seconds": round(seconds, 1),
        "cpu_per_1000_per_min": {
            k: round(per_thousand_minute(v, online, seconds), 2) for k, v in server.items()
        },
        "memory_mib": {k: round(v) for k, v in b.memory.items()},
        "server_cores": round(sum(server.values()) / seconds, 3),
        "loadgen_cores": round(loadgen / seconds, 3),
        "other_cores": round(max(0.0, machine - sum(server.values()) - loadgen) / seconds, 3),
        "machine_busy": round(machine / seconds / (os.cpu_count() or 1), 3),
    }


# --------------------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """The stated working-day activity of one person online."""

    messages_per_hour: float = 6.0
    dm_share: float = 0.3
    searches_per_hour: float = 1.0
    browses_per_hour: float = 1.0
    active_minutes: float = 15.0
    away_minutes: float = 5.0

    def __str__(self) -> str:
        return (
            f"{self.messages_per_hour:g} messages per person per hour ({self.dm_share:.0%} in a DM with a room "
            f"mate, the rest in a department room), {self.searches_per_hour:g} directory searches and "
            f"{self.browses_per_hour:g} space-lobby browses per hour; idle after a mean {self.active_minutes:g} "
            f"min, back after {self.away_minutes:g} min"
        )


@dataclass
class Person:
    uid: str
    sliding: bool
    user_id: str = ""
    token: str = ""
    device: str = ""
    state: str = "online"
    since: str = ""
    rooms: list[str] = field(default_factory=list)
    spaces: list[str] = field(default_factory=list)
    dm: str = ""


def device_keys(user_id: str, device: str, rng: random.Random) -> dict[str, Any]:
    """A plausible first key upload of a new Element device: identity keys and 50 signed one-time keys."""

    def b64(n: int) -> str:
        return rng.randbytes(n).hex()[: n * 4 // 3]

    sig = {user_id: {f"ed25519:{device}": b64(64)}}
    return {
        "device_keys": {
            "user_id": user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device}": b64(32), f"ed25519:{device}": b64(32)},
            "signatures": sig,
        },
        "one_time_keys": {
            f"signed_curve25519:AAAAA{i:02d}": {"key": b64(32), "signatures": sig} for i in range(50)
        },
    }


class Load:
    """The simulated people of one side, their HTTP traffic, and what their syncs returned."""

    def __init__(
        self,
        base: str,
        uids: list[str],
        rooms: Mapping[str, Iterable[str]],
        spaces: Mapping[str, Iterable[str]],
        rate: Rate,
        sliding: float,
        seed: int,
    ) -> None:
        self.base = base
        self.rate = rate
        self.rng = random.Random(seed)
        self.people = [Person(uid, self.rng.random() < sliding) for uid in uids]
        self.members = {room: set(m) for room, m in rooms.items()}
        self.rooms_of: dict[str, list[str]] = {}
        for room, members in self.members.items():
            for user in members:
                self.rooms_of.setdefault(user, []).append(room)
        self.spaces_of: dict[str, list[str]] = {}
        for space, members in spaces.items():
            for user in members:
                self.spaces_of.setdefault(user, []).append(space)
        self.online: set[str] = set()
        self.by_user: dict[str, Person] = {}
        self.deliveries = Deliveries()
        self.traffic: Counter[tuple[str, int]] = Counter()
        # (start, seconds) of every request by name, 429 retries included: where a login's time goes.
        self.timings: dict[str, list[tuple[float, float]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.started = 0

    # --- HTTP ------------------------------------------------------------------------------------------

    async def call(
        self,
        name: str,
        method: str,
        path: str,
        person: Person | None = None,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> tuple[int, dict[str, Any]]:
        """One request; a 429 is counted, then retried after ``retry_after_ms`` as Element does (4 times)."""
        assert self.session is not None
        headers = {"Authorization": f"Bearer {person.token}"} if person and person.token else {}
        status, reply = 0, {}
        began = time.monotonic()
        for _ in range(5):
            status, reply = 0, {}
            try:
                async with self.session.request(
                    method, self.base + path, json=body, params=params, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:  # fmt: skip
                    status = resp.status
                    parsed = await resp.json(content_type=None)
                    reply = parsed if isinstance(parsed, dict) else {}
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            self.traffic[(name, status)] += 1
            if status != 429:
                break
            await asyncio.sleep(float(reply.get("retry_after_ms", 1000)) / 1000)
        self.timings.setdefault(name, []).append((began, time.monotonic() - began))
        return status, reply

    def timings_between(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        """p50 and p99 seconds of the requests started in ``[t0, t1)``, by name; the long polls left out."""
        out: dict[str, dict[str, float]] = {}
        for name, rows in sorted(self.timings.items()):
            took = [s for at, s in rows if t0 <= at < t1]
            if took and name not in ("sync", "sliding sync"):
                out[name] = {
                    "n": len(took),
                    "p50": round(pct(took, 0.5), 3),
                    "p99": round(pct(took, 0.99), 3),
                }
        return out

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- a person's arrival ----------------------------------------------------------------------------

    async def log_in(self, p: Person) -> float | None:
        """Login, key upload, initial sync; seconds from the login's start to the first sync, None on failure."""
        t0 = time.monotonic()
        status, login = await self.call(
            "login", "POST", "/_matrix/client/v3/login",
            body={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": p.uid},
                  "password": PASSWORD, "initial_device_display_name": "bench/online.py"},
        )  # fmt: skip
        if status != 200:
            return None
        p.token, p.user_id, p.device = login["access_token"], login["user_id"], login["device_id"]
        p.rooms = list(self.rooms_of.get(p.user_id, []))
        p.spaces = list(self.spaces_of.get(p.user_id, []))
        status, _ = await self.call(
            "keys/upload",
            "POST",
            "/_matrix/client/v3/keys/upload",
            p,
            body=device_keys(p.user_id, p.device, self.rng),
        )
        if status != 200:
            return None
        if p.sliding:
            status, first = await self.call(
                "sliding sync (initial)", "POST", SLIDING_PATH, p, body=SLIDING_BODY, params={"timeout": "0"},
                timeout=FIRST_SYNC_WAIT,
            )  # fmt: skip
            p.since = str(first.get("pos", ""))
        else:
            status, first = await self.call(
                "sync (initial)", "GET", "/_matrix/client/v3/sync", p,
                params={"filter": FILTER, "timeout": "0", "set_presence": "online"}, timeout=FIRST_SYNC_WAIT,
            )  # fmt: skip
            p.since = str(first.get("next_batch", ""))
        if status != 200 or not p.since:
            return None
        took = time.monotonic() - t0
        self.by_user[p.user_id] = p
        if p.sliding:  # Synapse's sliding sync takes no set_presence: Element X's app states it on its own
            path = f"/_matrix/client/v3/presence/{_q(p.user_id)}/status"
            await self.call("presence", "PUT", path, p, body={"presence": "online"})
        return took

    async def live(self, p: Person) -> bool:
        """Log ``p`` in and keep them online, active at the stated rate, until cancelled."""
        if await self.log_in(p) is None:
            return False
        self.online.add(p.user_id)
        self.spawn(self.sync_loop(p))
        r = self.rate
        self.spawn(self.every(r.messages_per_hour, self.message, p))
        self.spawn(self.every(r.searches_per_hour, self.search, p))
        self.spawn(self.every(r.browses_per_hour, self.browse, p))
        self.spawn(self.presence_loop(p))
        await self.open_dm(p)
        return True

    async def every(self, per_hour: float, action: Callable[[Person], Awaitable[None]], p: Person) -> None:
        if per_hour <= 0:
            return
        while True:
            await asyncio.sleep(self.rng.expovariate(per_hour / 3600))
            await action(p)

    # --- syncing ---------------------------------------------------------------------------------------

    async def sync_loop(self, p: Person) -> None:
        while True:
            if p.sliding:
                status, body = await self.call(
                    "sliding sync", "POST", SLIDING_PATH, p, body=SLIDING_BODY,
                    params={"timeout": "30000"} | ({"pos": p.since} if p.since else {}), timeout=90,
                )  # fmt: skip
                token = body.get("pos")
                if status == 400 and body.get("errcode") == "M_UNKNOWN_POS":
                    p.since = (
                        ""  # the server dropped the connection's state: start it again, as Element X does
                    )
            else:
                status, body = await self.call(
                    "sync", "GET", "/_matrix/client/v3/sync", p,
                    params={"filter": FILTER, "timeout": "30000", "since": p.since, "set_presence": p.state},
                    timeout=90,
                )  # fmt: skip
                token = body.get("next_batch")
            if status != 200 or not token:
                await asyncio.sleep(1)
                continue
            p.since = str(token)
            self.observe(p, body, time.monotonic())

    def observe(self, p: Person, body: Mapping[str, Any], now: float) -> None:
        """Record the tags this sync brought; read receipts while active; accept DM invites."""
        if p.sliding:
            rooms = body.get("rooms", {})
            timelines = {r: v.get("timeline", []) for r, v in rooms.items()}
            invites = [r for r, v in rooms.items() if "invite_state" in v]
        else:
            joined = body.get("rooms", {}).get("join", {})
            timelines = {r: v.get("timeline", {}).get("events", []) for r, v in joined.items()}
            invites = list(body.get("rooms", {}).get("invite", {}))
        for room, events in timelines.items():
            latest = ""
            for event in events:
                if event.get("type") != "m.room.message":
                    continue
                found = TAG.search(str(event.get("content", {}).get("body", "")))
                if found:
                    self.deliveries.on_seen(found.group(1), p.user_id, now)
                if event.get("sender") != p.user_id:
                    latest = str(event.get("event_id", ""))
            if latest and p.state == "online":
                path = f"/_matrix/client/v3/rooms/{_q(room)}/receipt/m.read/{_q(latest)}"
                self.spawn(self.call("receipt", "POST", path, p, body={}))
        for room in invites:
            self.spawn(self.accept_dm(p, room))

    # --- activity --------------------------------------------------------------------------------------

    async def open_dm(self, p: Person) -> None:
        """A DM with an online room mate who has none yet (one per person at most)."""
        if p.dm:
            return
        mates = sorted({m for room in p.rooms for m in self.members[room]} & self.online - {p.user_id})
        free = [m for m in mates if not self.person(m).dm]
        if not free:
            return
        mate = self.rng.choice(free)
        status, made = await self.call(
            "createRoom (DM)", "POST", "/_matrix/client/v3/createRoom", p,
            body={"preset": "trusted_private_chat", "is_direct": True, "invite": [mate]},
        )  # fmt: skip
        if status == 200:
            p.dm = made["room_id"]
            self.members[p.dm] = {p.user_id}
            self.person(mate).dm = p.dm  # reserved; the mate's client joins when its sync brings the invite

    def person(self, user_id: str) -> Person:
        return self.by_user[user_id]

    async def accept_dm(self, p: Person, room: str) -> None:
        status, _ = await self.call("join (DM)", "POST", f"/_matrix/client/v3/join/{_q(room)}", p, body={})
        if status == 200:
            self.members.setdefault(room, set()).add(p.user_id)
            p.dm = room

    async def message(self, p: Person) -> None:
        if p.dm and len(self.members.get(p.dm, ())) == 2 and self.rng.random() < self.rate.dm_share:
            room = p.dm
        elif p.rooms:
            room = self.rng.choice(p.rooms)
        else:
            return
        typing = f"/_matrix/client/v3/rooms/{_q(room)}/typing/{_q(p.user_id)}"
        await self.call("typing", "PUT", typing, p, body={"typing": True, "timeout": 5000})
        await asyncio.sleep(self.rng.uniform(1, 3))
        tag = f"{self.rng.getrandbits(64):016x}"
        recipients = self.members.get(room, set()) & self.online - {p.user_id}
        sent_at = time.monotonic()
        self.deliveries.on_send(tag, sent_at, recipients)
        await self.call(
            "send", "PUT", f"/_matrix/client/v3/rooms/{_q(room)}/send/m.room.message/{tag}", p,
            body={"msgtype": "m.text", "body": f"Коллеги, по вопросу {tag[:4]} [lg:{tag}]"},
        )  # fmt: skip
        await self.call("typing", "PUT", typing, p, body={"typing": False})

    async def search(self, p: Person) -> None:
        mates = [m for room in p.rooms for m in self.members[room]] or [p.user_id]
        term = self.rng.choice(mates)[1:].split(".")[0][:5]
        await self.call(
            "user_directory/search", "POST", "/_matrix/client/v3/user_directory/search", p,
            body={"search_term": term, "limit": 10},
        )  # fmt: skip

    async def browse(self, p: Person) -> None:
        if not p.spaces:
            return
        space = self.rng.choice(p.spaces)
        since: str | None = ""
        for _ in range(5):  # Element pages on as the person scrolls; a few pages at most
            params = {"max_depth": "1", "limit": "20"} | ({"from": since} if since else {})
            path = f"/_matrix/client/v1/rooms/{_q(space)}/hierarchy"
            status, body = await self.call("hierarchy", "GET", path, p, params=params)
            since = body.get("next_batch")
            if status != 200 or not since:
                return

    async def presence_loop(self, p: Person) -> None:
        path = f"/_matrix/client/v3/presence/{_q(p.user_id)}/status"
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / (60 * self.rate.active_minutes)))
            p.state = "unavailable"
            await self.call("presence", "PUT", path, p, body={"presence": "unavailable"})
            await asyncio.sleep(self.rng.expovariate(1 / (60 * self.rate.away_minutes)))
            p.state = "online"
            await self.call("presence", "PUT", path, p, body={"presence": "online"})

    # --- phases ----------------------------------------------------------------------------------------

    async def arrive(
        self, people: list[Person], seconds: float, action: Callable[[Person], Awaitable[Any]]
    ) -> list[Any]:
        """Start ``action`` for each person, evenly spread over ``seconds``; their results in order."""
        started: list[asyncio.Task[Any]] = []
        t0 = time.monotonic()
        for i, p in enumerate(people):
            await asyncio.sleep(max(0.0, t0 + i * seconds / max(1, len(people)) - time.monotonic()))
            started.append(asyncio.ensure_future(action(p)))
        return list(await asyncio.gather(*started))

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def requests_summary(
    before: Counter[tuple[str, int]], after: Counter[tuple[str, int]]
) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for (name, status), n in sorted((after - before).items()):
        out.setdefault(name, {})[status] = n
    return out


# --------------------------------------------------------------------------------------------------------
# One side
# --------------------------------------------------------------------------------------------------------


async def storm(load: Load, shape: Shape, n: int, seconds: float) -> dict[str, Any]:
    people = load.people[:n]
    before, traffic0 = snapshot(shape.pids()), Counter(load.traffic)
    t0 = time.monotonic()
    ends: list[float] = []

    async def one(p: Person) -> float | None:
        took = await load.log_in(p)
        ends.append(time.monotonic())
        return took

    times = [t for t in await load.arrive(people, seconds, one) if t is not None]
    after = snapshot(shape.pids())
    span = (max(ends) - t0) if ends else 0.0
    spent = {k: after.cpu[k] - before.cpu.get(k, 0.0) for k in after.cpu}
    loadgen = after.loadgen - before.loadgen
    return {
        "people": n,
        "over_s": seconds,
        "ok": len(times),
        "logins_per_s": round(len(times) / span, 1) if span else 0.0,
        "first_sync_p50_s": round(pct(times, 0.5), 2) if times else None,
        "first_sync_p99_s": round(pct(times, 0.99), 2) if times else None,
        "first_sync_max_s": round(max(times), 2) if times else None,
        "cpu_s": {k: round(v, 1) for k, v in spent.items()},
        "loadgen_cpu_s": round(loadgen, 1),
        "other_cpu_s": round(max(0.0, after.machine - before.machine - sum(spent.values()) - loadgen), 1),
        "requests": requests_summary(traffic0, load.traffic),
        "request_seconds": load.timings_between(t0, after.at),
    }


async def idle(shape: Shape, seconds: float) -> dict[str, float]:
    """Cores each process spends with nobody online (its timers, replication, the database's own work)."""
    before = snapshot(shape.pids())
    await asyncio.sleep(seconds)
    after = snapshot(shape.pids())
    span = after.at - before.at
    return {k: round((after.cpu[k] - before.cpu.get(k, 0.0)) / span, 4) for k in after.cpu}


def above_idle(
    per_1000_per_min: Mapping[str, float], idle_cores: Mapping[str, float], online: int
) -> dict[str, float]:
    """Per-1,000-per-minute CPU less what the process spends with nobody online: the cost of the people."""
    return {
        k: round(v - idle_cores.get(k, 0.0) * 60 * 1000 / online, 2) if online else 0.0
        for k, v in per_1000_per_min.items()
    }


async def steps(
    load: Load, shape: Shape, args: argparse.Namespace, idle_cores: Mapping[str, float]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    people = [p for p in load.people if not p.token]  # the storm's people are not online
    for n in args.steps:
        new = people[load.started : n]
        if not new:
            break
        load.started = n
        arrived, traffic_arrival = time.monotonic(), Counter(load.traffic)
        ok = await load.arrive(new, len(new) / args.login_rate, load.live)
        arrival = {
            "seconds": round(time.monotonic() - arrived, 1),
            "requests": requests_summary(traffic_arrival, load.traffic),
            "request_seconds": load.timings_between(arrived, time.monotonic()),
        }
        await asyncio.sleep(5)  # let the DM invites be accepted and the first long polls settle
        online = len(load.online)
        before, traffic0 = snapshot(shape.pids()), Counter(load.traffic)
        await asyncio.sleep(args.window)
        after = snapshot(shape.pids())
        await asyncio.sleep(GRACE)
        latencies, missing, messages = load.deliveries.between(before.at, after.at)
        row = {
            "online": online,
            "sliding": sum(1 for p in load.people if p.sliding and p.user_id in load.online),
            "failed_logins": ok.count(False),
            "messages": messages,
            "deliveries": len(latencies),
            "undelivered": missing,
            "p50_s": round(pct(latencies, 0.5), 3) if latencies else None,
            "p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
            "max_s": round(max(latencies), 3) if latencies else None,
            **cost(before, after, online),
            "requests": requests_summary(traffic0, load.traffic),
            "request_seconds": load.timings_between(before.at, after.at),
            "arrival": arrival,
        }
        row["above_idle_per_1000_per_min"] = above_idle(row["cpu_per_1000_per_min"], idle_cores, online)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), file=sys.stderr, flush=True)
        # The box saturates when this run (server and generator) fills it; other people's load is reported.
        ours = row["server_cores"] + row["loadgen_cores"]
        if not args.all_steps and (
            (row["p99_s"] or 0) > P99_LIMIT or ours >= BUSY_LIMIT * (os.cpu_count() or 1)
        ):
            break
    return rows


def directory_with_passwords(people: int, seed: int) -> SampleDirectory:
    """The generated city, every person with ``PASSWORD`` (one hash: slapd checks it per bind anyway)."""
    directory = generate_directory(people, seed=seed, broken=False, disabled_fraction=0.0)
    hashed = ssha(PASSWORD)
    entries = tuple(
        dataclasses.replace(e, attributes=(*e.attributes, ("userPassword", (hashed,)))) if e.get("uid") else e
        for e in directory.entries
    )
    return dataclasses.replace(directory, entries=entries)


async def one_side(
    name: str, work: Path, ldap: EmbeddedSlapd, uids: list[str], args: argparse.Namespace, rate: Rate
) -> dict[str, Any]:
    (work / f"login-{name}").mkdir()
    login = module_config_from(load_config(write_config(work / f"login-{name}", ldap)))
    shape: Shape
    if name == "civmatrix":
        shape = Workers(work / name, login=login, sync_workers=args.sync_workers, durable=False)
    else:
        shape = Single(work / name, name, EmbeddedPostgres(work / name / "postgres", durable=False),
                       modules=[{"module": LOGIN_MODULE, "config": login}], refuse_admin_on_public=False,
                       presence_scope=False, space_browsing=False)  # fmt: skip
    shape.start()
    try:
        admin = shape.create_admin()
        cfg = write_cfg(work / f"cfg-{name}", ldap, shape, admin.access_token, None)
        shape.wait_for_background_updates()
        print(f"[{name}] sync of {len(uids)} people…", file=sys.stderr, flush=True)
        out: dict[str, Any] = {"sync_s": round(timed_sync(cfg, shape)["wall"], 1)}
        rooms = rooms_of(shape.admin_url, admin.access_token)
        spaces = rooms_of(shape.admin_url, admin.access_token, spaces=True)
        out["rooms"], out["spaces"] = len(rooms), len(spaces)
        await asyncio.sleep(12)  # the presence module looks for new spaces every 10 s
        load = Load(shape.public_url, uids, rooms, spaces, rate, args.sliding, args.seed)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            load.session = session
            try:
                out["idle_cores"] = await idle(shape, min(args.window, 60.0))
                if args.storm:
                    print(f"[{name}] login storm of {args.storm}…", file=sys.stderr, flush=True)
                    out["storm"] = await storm(load, shape, args.storm, args.storm_seconds)
                    print(json.dumps(out["storm"]), file=sys.stderr, flush=True)
                out["steps"] = await steps(load, shape, args, out["idle_cores"])
            finally:
                await load.stop()
        return out
    finally:
        shape.stop()


# --------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------


def print_report(args: argparse.Namespace, rate: Rate, load_before: str, results: Mapping[str, Any]) -> None:
    print(f"\n{args.people} people in the city; activity: {rate}; {args.sliding:.0%} on sliding sync; "
          f"window {args.window:g} s per step. Machine: {os.cpu_count()} cores, load average before: "
          f"{load_before}.\n")  # fmt: skip
    print("| side | online (sliding) | messages | deliveries | p50 | p99 | max | undelivered | "
          "server cores | loadgen cores | other load (cores) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side, r in results.items():
        for s in r.get("steps", []):
            ms = [f"{s[k] * 1000:.0f} ms" if s[k] is not None else "—" for k in ("p50_s", "p99_s", "max_s")]
            print(f"| {side} | {s['online']} ({s['sliding']}) | {s['messages']} | {s['deliveries']} | "
                  f"{' | '.join(ms)} | {s['undelivered']} | {s['server_cores']:.2f} | {s['loadgen_cores']:.2f} | "
                  f"{s['other_cores']:.2f} |")  # fmt: skip
    print("\nCPU seconds per 1,000 online people per minute (in brackets: less the process's CPU with nobody "
          "online; then its memory, PSS of the process tree, MiB):\n")  # fmt: skip
    for side, r in results.items():
        idle_cores = r.get("idle_cores", {})
        print(f"- {side}, nobody online: " + ", ".join(f"{k} {v:.3f}" for k, v in idle_cores.items())
              + f" cores (total {sum(idle_cores.values()):.2f})")  # fmt: skip
        for s in r.get("steps", []):
            above = s["above_idle_per_1000_per_min"]
            parts = [
                f"{proc} {v:.1f} [{above[proc]:.1f}] ({s['memory_mib'][proc]} MiB)"
                for proc, v in s["cpu_per_1000_per_min"].items()
            ]
            total, marginal = sum(s["cpu_per_1000_per_min"].values()), sum(above.values())
            loadgen = per_thousand_minute(s["loadgen_cores"] * s["seconds"], s["online"], s["seconds"])
            print(f"- **{side}, {s['online']} online**: " + ", ".join(parts) + f"; **server total {total:.1f} "
                  f"[{marginal:.1f}]** (= {total / 60:.3f} [{marginal / 60:.3f}] core per 1,000); "
                  f"load generator {loadgen:.1f}")  # fmt: skip
    if len(results) == 2:
        (first, a_side), (second, b_side) = results.items()
        for a, b in zip(a_side.get("steps", []), b_side.get("steps", []), strict=False):
            ratios = [
                sum(b[k].values()) / max(0.01, sum(a[k].values()))
                for k in ("cpu_per_1000_per_min", "above_idle_per_1000_per_min")
            ]
            print(f"- {a['online']} online: {second} / {first} server CPU = {ratios[0]:.2f} "
                  f"[above idle: {ratios[1]:.2f}]")  # fmt: skip
    for side, r in results.items():
        st = r.get("storm")
        if st:
            print(f"\n**Login storm, {side}**: {st['ok']}/{st['people']} people over {st['over_s']:g} s: "
                  f"{st['logins_per_s']} logins/s; login → first sync p50 {st['first_sync_p50_s']} s, "
                  f"p99 {st['first_sync_p99_s']} s, max {st['first_sync_max_s']} s; CPU s: "
                  + ", ".join(f"{k} {v}" for k, v in st["cpu_s"].items())
                  + f"; load generator {st['loadgen_cpu_s']}, rest of the machine {st['other_cpu_s']}. "
                  + "Per request p50/p99 s: "
                  + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in st["request_seconds"].items()))  # fmt: skip
    for side, r in results.items():
        for s in r.get("steps", []):
            bad = {n: c for n, c in s["requests"].items() if {int(k) for k in c} - {200}}  # str once in JSON
            slow = ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in s["request_seconds"].items())
            print(f"\n{side}, {s['online']} online: per request p50/p99 s: {slow}"
                  + (f"; answers other than 200: {json.dumps(bad)}" if bad else ""))  # fmt: skip
            came = s.get("arrival")
            if came:
                took = ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in came["request_seconds"].items())
                print(
                    f"  (arriving, {came['seconds']} s: {took}; {s['failed_logins']} failed to come online)"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=3000, help="people in the generated city")
    ap.add_argument("--steps", default="100,250,500,1000,2000", help="people online at each step")
    ap.add_argument("--window", type=float, default=300.0, help="seconds measured per step")
    ap.add_argument("--login-rate", type=float, default=10.0, help="logins per second while stepping up")
    ap.add_argument("--storm", type=int, default=0, help="people in the login storm (0: none)")
    ap.add_argument("--storm-seconds", type=float, default=60.0)
    ap.add_argument("--sliding", type=float, default=0.3, help="share of people on simplified sliding sync")
    ap.add_argument("--sides", default="civmatrix,stock")
    ap.add_argument("--stock", action="store_true", help="the stock side alone (same as --sides stock)")
    ap.add_argument("--sync-workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) for inspection")
    ap.add_argument(
        "--all-steps", action="store_true", help="measure every step even past p99 > 1 s or a saturated box"
    )
    for f in dataclasses.fields(Rate):
        ap.add_argument("--" + f.name.replace("_", "-"), type=float, default=f.default)
    args = ap.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    sides = ["stock"] if args.stock else args.sides.split(",")
    if unknown := set(sides) - {"civmatrix", "stock"}:
        raise SystemExit(f"--sides: unknown side(s) {sorted(unknown)}; use civmatrix and/or stock")
    if max(args.steps) + args.storm > args.people:
        raise SystemExit(f"--people {args.people} is fewer than the largest step plus the storm")
    rate = Rate(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Rate)})
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    directory = directory_with_passwords(args.people, args.seed)
    uids = [v for e in directory.entries for v in e.get("uid")]
    random.Random(args.seed).shuffle(uids)  # who is online: people from everywhere in the city
    results: dict[str, Any] = {}
    with workdir(args.keep) as work:
        ldap = EmbeddedSlapd(work / "ldap", suffix=directory.base_dn)
        ldap.load_ldif(directory.to_ldif())
        ldap.start()
        try:
            for side in sides:
                results[side] = asyncio.run(one_side(side, work, ldap, uids, args, rate))
                print(json.dumps({side: results[side]}, ensure_ascii=False), file=sys.stderr, flush=True)
        finally:
            ldap.stop()
    print_report(args, rate, " ".join(load_before), results)


if __name__ == "__main__":
    main()
