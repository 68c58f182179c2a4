"""Benchmark: the event bot under RSVP load and with 10,000 scheduled reminders, on a fresh real Synapse.

    python bench/bot.py                                   # full run (about 12 minutes on 2 cores)
    python bench/bot.py --users 40 --rsvps 200 --reminder-events 5 --reminder-gap 4   # quick check

One run prints one markdown table. The bot is the real ``python -m bridge.cli --config FILE run`` process
(system clock, default reminder offsets 24 h and 1 h); people are matrix-nio clients on the public listener.

Part 1, RSVP latency: ``--rooms`` rooms (the first ``--encrypted-rooms`` end-to-end encrypted), ``--users``
people spread evenly over them, a moderator announces one event per room. ``--rsvps`` answers are then sent
at an even pace over ``--rsvp-seconds``: each person answers several times (every answer changes the
previous one); the last answer of 20 % of the people is a poll vote and of 20 % a reaction, the rest are
``!going`` / ``!иду`` / ``!maybe`` / ``!возможно`` / ``!notgoing`` / ``!неиду`` commands. A command's latency
runs from just before the client's send to the moment the bot's reply (``m.in_reply_to`` the command) reaches
the moderator's syncing client; a vote or reaction has no reply in the room, so its latency runs from the
send to the ``answered_at`` the bot stored (same host clock). Afterwards the stored answers and each room's
``!event show`` counts are compared with what was sent.

Part 2, reminders: the bot is stopped, its store seeded (through ``bridge.events.store``) with
``--reminder-events`` events that every person is going to, each event's 24 h reminder falling due
``--reminder-gap`` seconds after the previous one (a burst of one DM per person plus one room reminder), and
the bot restarted. Direct chats with everyone already exist (made beforehand with the bot's token, as if the
bot had written to each person before), so the numbers are for steady operation, not first contact. Each
reminder's delay is the homeserver's receive time of the message (found through the bot's transaction id,
which is derived from the reminder's outbox id) minus its due time. The bot releases a burst early so that it
is centred on its due moment, so the table gives the distance from due (absolute) and the signed range.
Memory is the bot process's peak RSS (``VmHWM``). While the bursts go out the moderator sends ``!event list``
every ``--probe-every`` seconds in the last (unencrypted) room: its reply latency shows whether a burst of
reminders holds up an answer to a person who is waiting.

Only loopback; every count and wait is bounded; all files live in one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nio import AsyncClient, AsyncClientConfig, RoomCreateResponse, RoomPreset, RoomSendResponse

from bridge.bot.sender import txn_id
from bridge.events.model import Answer, Event, EventID, RoomID, Rsvp, Source, UserID, new_event_id
from bridge.events.store import PutAnswer, PutAudience, PutEvent, SetDmRoom, SetRoomSince, open_sqlite
from provisioner.embedded.synapse import EmbeddedSynapse, RegisteredAccount
from provisioner.synapse.config import TEST_RATE_LIMITS
from tests.fixtures.faultproxy import FaultProxy, at_rate

ROOT = Path(__file__).resolve().parents[1]
MSK = ZoneInfo("Europe/Moscow")
MARKER = "org.civmatrix.managed"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
ANSWERS = (Answer.GOING, Answer.MAYBE, Answer.NOT_GOING)
COMMANDS = {
    Answer.GOING: ("!going", "!иду"),
    Answer.MAYBE: ("!maybe", "!возможно"),
    Answer.NOT_GOING: ("!notgoing", "!неиду"),
}
POLL_IDS = {Answer.GOING: "going", Answer.MAYBE: "maybe", Answer.NOT_GOING: "not_going"}
REACTION_KEYS = {Answer.GOING: "✅", Answer.MAYBE: "❔", Answer.NOT_GOING: "❌"}
DAY = timedelta(hours=24)
SEND_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 1,000 samples is the 990th smallest)."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def summary(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{pct(values, 50):.3f} / {pct(values, 99):.3f} / {max(values):.3f}"


async def until(cond: Callable[[], Any], what: str, timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


async def bounded(n: int, jobs: Iterable[Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(job: Awaitable[Any]) -> Any:
        async with sem:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


# --- people -----------------------------------------------------------------------------------------------


@dataclass
class Client:
    acct: RegisteredAccount
    client: AsyncClient
    room: str = ""


def make_client(url: str, acct: RegisteredAccount, store: Path | None) -> Client:
    if store is None:
        client = AsyncClient(url, acct.user_id, config=AsyncClientConfig(encryption_enabled=False))
    else:
        store.mkdir(parents=True, exist_ok=True)
        client = AsyncClient(
            url,
            acct.user_id,
            device_id=acct.device_id,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        )
    client.restore_login(acct.user_id, acct.device_id, acct.access_token)
    return Client(acct, client)


async def send(c: Client, etype: str, content: dict[str, Any]) -> str:
    if c.client.olm is not None and c.client.should_query_keys:
        await c.client.keys_query()
    resp = await asyncio.wait_for(
        c.client.room_send(c.room, etype, content, ignore_unverified_devices=True), SEND_TIMEOUT
    )
    if not isinstance(resp, RoomSendResponse):
        raise RuntimeError(f"send by {c.acct.user_id} failed: {resp}")
    return str(resp.event_id)


@dataclass
class Watcher:
    """The moderator's syncing client: records when each bot message arrives, and the polls."""

    bot_id: str
    replies: dict[str, tuple[float, str]] = field(default_factory=dict)  # command event id -> (time, body)
    reply_ids: dict[str, str] = field(default_factory=dict)  # command event id -> the reply's event id
    polls: dict[str, tuple[str, str]] = field(default_factory=dict)  # room -> (poll event id, our event ID)
    counts: dict[str, int] = field(
        default_factory=dict
    )  # command event id -> replies seen (1 = exactly once)

    async def on_event(self, room: Any, ev: Any) -> None:
        now = time.time()
        if getattr(ev, "sender", None) != self.bot_id:
            return
        src = getattr(ev, "source", None) or {}
        content = src.get("content", {})
        if src.get("type") == "m.poll.start":
            q = content["m.poll"]["question"]["m.text"][0]["body"]
            self.polls[room.room_id] = (str(src["event_id"]), q.rsplit("[", 1)[1].rstrip("]"))
            return
        target = content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
        if isinstance(target, str):
            self.replies.setdefault(target, (now, str(content.get("body", ""))))
            self.counts[target] = self.counts.get(target, 0) + 1
            self.reply_ids.setdefault(target, str(src.get("event_id", "")))


# --- the bot process --------------------------------------------------------------------------------------


class BotProcess:
    """``python -m bridge.cli --config FILE run`` with its RSS sampled; :meth:`stop` returns the peak (MB)."""

    def __init__(self, cfg: Path, log_file: Path) -> None:
        self.cfg, self.log_file = cfg, log_file
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_kb = 0
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with self.log_file.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.cli", "--config", str(self.cfg), "run",
                cwd=ROOT, env=env, stdout=out, stderr=out,
            )  # fmt: skip
        self._sampler = asyncio.create_task(self._sample())

    def _status_kb(self, key: str) -> int:
        assert self.proc is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    async def _sample(self) -> None:
        while self.proc is not None and self.proc.returncode is None:
            self.peak_kb = max(self.peak_kb, self._status_kb("VmHWM"), self._status_kb("VmRSS"))
            await asyncio.sleep(0.5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-30:])

    async def stop(self) -> float:
        if self.proc is None:
            return 0.0
        if self.proc.returncode is None:
            self.peak_kb = max(self.peak_kb, self._status_kb("VmHWM"))
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self.proc = None
        return self.peak_kb / 1024


# --- the run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    at: float  # seconds after the start of the RSVP minute
    person: int
    answer: Answer
    kind: str  # "command" | "poll" | "reaction"
    text: str = ""


def plan_rsvps(n: int, users: int, seconds: float) -> list[Action]:
    """Round robin over people, so each person's answers are spread over the whole minute; every answer
    differs from the same person's previous one, so every one of them is a real change."""
    rounds = math.ceil(n / users)
    out: list[Action] = []
    for j in range(n):
        c, r = j % users, j // users
        last = r == rounds - 1 or j + users >= n
        answer = ANSWERS[(c + rounds - 1 - r) % 3]
        kind = "command"
        if last and c % 10 in (6, 7):
            kind = "poll"
        elif last and c % 10 in (8, 9):
            kind = "reaction"
        word = COMMANDS[answer][(c + r) % 2]
        out.append(Action(j * seconds / n, c, answer, kind, word))
    return out


def write_bot_config(tmp: Path, hs: EmbeddedSynapse, bot: RegisteredAccount, url: str | None = None) -> Path:
    """``url``: where the bot reaches the homeserver (the fault proxy when one runs)."""
    (tmp / "bot.token").write_text(bot.access_token, encoding="utf-8")
    cfg = tmp / "civmatrix.yaml"
    cfg.write_text(
        f"homeserver: {{url: '{url or hs.admin_url}', server_name: {hs.server_name}}}\n"
        "bot:\n"
        f"  user_id: '{bot.user_id}'\n"
        "  access_token_file: bot.token\n"
        f"  device_id: {bot.device_id}\n"
        "  store: bot.db\n"
        "  crypto_store_dir: bot-crypto\n"
        "  reminder_offsets: [24h, 1h]\n",
        encoding="utf-8",
    )
    return cfg


def read_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


async def run(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    hs = EmbeddedSynapse(tmp / "hs", rate_limits=TEST_RATE_LIMITS, log_level="WARNING")
    hs.start()
    bot_proc: BotProcess | None = None
    clients: list[Client] = []
    proxy: FaultProxy | None = None
    proxy_url: str | None = None
    try:
        log(f"Synapse up in {hs.last_start_seconds:.1f} s; registering {args.users} people")
        with ThreadPoolExecutor(8) as pool:
            accts = list(
                pool.map(
                    lambda i: hs.create_user_with_password(f"p{i:04d}", f"pw-{i}", displayname=f"Person {i}"),
                    range(args.users),
                )
            )
        bot = hs.create_user_with_password("eventbot", "pw-bot", displayname="Events")
        mod_acct = hs.create_user_with_password("mod", "pw-mod", displayname="Moderator")
        per_room = args.users // args.rooms
        mod = make_client(hs.public_url, mod_acct, tmp / "clients" / "mod")
        watcher = Watcher(bot.user_id)
        mod.client.add_event_callback(watcher.on_event, object)  # type: ignore[arg-type]
        rooms: list[str] = []
        for i in range(args.rooms):
            members = accts[i * per_room : (i + 1) * per_room]
            state: list[dict[str, Any]] = [
                {"type": MARKER, "state_key": "", "content": {"kind": "room", "unit": f"u{i}", "shard": 1}}
            ]
            if i < args.encrypted_rooms:
                state.append(ENCRYPTION)
            resp = await mod.client.room_create(
                name=f"bench {i}", invite=[bot.user_id, *(a.user_id for a in members)], initial_state=state
            )
            assert isinstance(resp, RoomCreateResponse), resp
            rooms.append(str(resp.room_id))
            for a in members:
                enc = i < args.encrypted_rooms
                c = make_client(hs.public_url, a, tmp / "clients" / a.user_id[1:6] if enc else None)
                c.room = str(resp.room_id)
                clients.append(c)
        encrypted = set(rooms[: args.encrypted_rooms])

        async def join(c: Client) -> None:
            r = await c.client.join(c.room)
            if not hasattr(r, "room_id"):
                raise RuntimeError(f"{c.acct.user_id} could not join: {r}")

        await bounded(10, (join(c) for c in clients))
        log(f"{len(rooms)} rooms ({len(encrypted)} encrypted), {len(clients)} people joined")

        sync_task = asyncio.create_task(mod.client.sync_forever(timeout=1000, full_state=True))
        if args.fault_rate > 0 or args.proxy:
            # The bot's every request goes through the proxy; a fault_rate share of its sends gets a 503.
            # With --proxy and no fault rate it only forwards: what the extra hop itself costs.
            proxy = FaultProxy(hs.admin_url, at_rate(args.fault_rate, seed=13, status=503))
            proxy_url = await proxy.start()
        bot_proc = BotProcess(write_bot_config(tmp, hs, bot, proxy_url), tmp / "bot.log")
        await bot_proc.start()

        def bot_joined() -> bool:
            if not bot_proc or not bot_proc.alive():
                raise RuntimeError("the bot exited:\n" + (bot_proc.tail() if bot_proc else ""))
            return all(
                r in mod.client.rooms
                and bot.user_id in mod.client.rooms[r].users
                and not mod.client.rooms[r].users[bot.user_id].invited
                for r in rooms
            )

        await until(bot_joined, "the bot to join every room", 120)
        await until(lambda: list(mod.client.device_store.active_user_devices(bot.user_id)), "bot keys", 60)

        async def prepare(c: Client) -> None:
            # People in an encrypted room have talked before: their client knows the room's members and has
            # shared its room key with them, so the measured minute does not pay for the first key exchange.
            if c.room not in encrypted:
                return
            if c.client.should_upload_keys:
                await c.client.keys_upload()
            await c.client.sync(timeout=0, full_state=True)
            if c.client.should_query_keys:
                await c.client.keys_query()
            await c.client.share_group_session(c.room, ignore_unverified_devices=True)

        t = time.monotonic()
        await bounded(8, (prepare(c) for c in clients))
        log(f"encrypted clients prepared in {time.monotonic() - t:.0f} s")

        day = (datetime.now(UTC) + timedelta(days=3)).astimezone(MSK).strftime("%Y-%m-%d")
        for i, r in enumerate(rooms):
            mod.room = r
            await send(mod, "m.room.message", {"msgtype": "m.text",
                       "body": f'!event create "Bench meeting {i}" {day} 15:00 place "room {i}"'})  # fmt: skip
        await until(lambda: len(watcher.polls) == len(rooms), "a poll in every room", 120)
        await asyncio.sleep(3)  # the bot stores the poll's id right after the homeserver accepts it
        log(f"events announced: {sorted(e for _, e in watcher.polls.values())}")

        # -- part 1: RSVPs --
        plan = plan_rsvps(args.rsvps, len(clients), args.rsvp_seconds)
        sent: list[tuple[Action, float, str | None]] = []

        async def act(a: Action) -> None:
            c = clients[a.person]
            poll_id, eid = watcher.polls[c.room]
            t0 = time.time()
            try:
                if a.kind == "command":
                    mid = await send(c, "m.room.message", {"msgtype": "m.text", "body": f"{a.text} {eid}"})
                elif a.kind == "poll":
                    mid = await send(c, "m.poll.response", {
                        "m.relates_to": {"rel_type": "m.reference", "event_id": poll_id},
                        "m.selections": [POLL_IDS[a.answer]]})  # fmt: skip
                else:
                    mid = await send(c, "m.reaction", {"m.relates_to": {
                        "rel_type": "m.annotation", "event_id": poll_id, "key": REACTION_KEYS[a.answer]}})  # fmt: skip
                sent.append((a, t0, mid))
            except Exception as e:  # a failed send is reported, never retried (it would not be "one minute")
                log(f"send failed: {e}")
                sent.append((a, t0, None))

        load_rsvp = [load()]
        log(f"sending {len(plan)} RSVPs over {args.rsvp_seconds:.0f} s (load {load_rsvp[0]})")
        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for a in plan:
            delay = start + a.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(act(a)))
        await asyncio.gather(*tasks)
        send_span = time.monotonic() - start
        load_rsvp.append(load())
        commands = [(a, t0, mid) for a, t0, mid in sent if a.kind == "command" and mid]
        with contextlib.suppress(RuntimeError):
            await until(lambda: all(m in watcher.replies for _, _, m in commands), "every reply", 90)
        store = tmp / "bot.db"
        ann = [(a, t0) for a, t0, mid in sent if a.kind != "command" and mid]

        def read_stored() -> dict[tuple[str, str], tuple[str, float]]:
            q = "SELECT room_id, user_id, answer, answered_at FROM answers"
            return {(r, u): (ans, at / 1e6) for r, u, ans, at in read_rows(store, q)}

        def annotation_stored(a: Action, t0: float, stored: dict[tuple[str, str], tuple[str, float]]) -> bool:
            got = stored.get((clients[a.person].room, clients[a.person].acct.user_id))
            return got is not None and got[0] == a.answer.value and got[1] >= t0

        with contextlib.suppress(RuntimeError):
            await until(
                lambda: all(annotation_stored(a, t0, read_stored()) for a, t0 in ann), "votes stored", 60
            )
        stored = read_stored()
        cmd_lat = [watcher.replies[m][0] - t0 for _, t0, m in commands if m in watcher.replies]
        # When the homeserver accepted each reply: the bot's share of the latency, without the watcher's sync.
        ids = [watcher.reply_ids[m] for _, _, m in commands if m in watcher.reply_ids]
        q = f"SELECT event_id, origin_server_ts FROM events WHERE event_id IN ({', '.join('?' * len(ids))})"
        accepted = dict(read_rows(hs.data_dir / "homeserver.db", q, tuple(ids))) if ids else {}
        hs_lat = [accepted[watcher.reply_ids[m]] / 1000 - t0 for _, t0, m in commands
                  if watcher.reply_ids.get(m) in accepted]  # fmt: skip
        wall0 = time.time() - (time.monotonic() - start)
        windows: list[str] = []
        for w in range(0, math.ceil(args.rsvp_seconds), 10):
            lat = [watcher.replies[m][0] - t0 for _, t0, m in commands
                   if m in watcher.replies and w <= t0 - wall0 < w + 10]  # fmt: skip
            if lat:
                windows.append(f"{statistics.median(lat):.2f}")
        no_reply = sum(1 for _, _, m in commands if m not in watcher.replies)
        ann_lat = [stored[(clients[a.person].room, clients[a.person].acct.user_id)][1] - t0
                   for a, t0 in ann if annotation_stored(a, t0, stored)]  # fmt: skip
        ann_lost = len(ann) - len(ann_lat)
        failed_sends = sum(1 for *_, mid in sent if mid is None)
        # The final answer of each person, as sent, against the store and against "!event show".
        final: dict[int, Answer] = {}
        for a in plan:
            final[a.person] = a.answer
        mismatched = sum(
            1
            for p, ans in final.items()
            if stored.get((clients[p].room, clients[p].acct.user_id), ("",))[0] != ans.value
        )
        show_ok = 0
        for r in rooms:
            mod.room = r
            eid = watcher.polls[r][1]
            want = {
                x: sum(1 for p, ans in final.items() if clients[p].room == r and ans == x) for x in ANSWERS
            }
            mid = await send(mod, "m.room.message", {"msgtype": "m.text", "body": f"!event show {eid}"})
            with contextlib.suppress(RuntimeError):
                await until(lambda: mid in watcher.replies, "the show reply", 60)  # noqa: B023
            body = watcher.replies.get(mid, (0.0, ""))[1]
            lines = {
                ln.split(":")[0]: ln.split(":")[1].split("—")[0].strip()
                for ln in body.splitlines()
                if ":" in ln
            }
            got = {Answer.GOING: lines.get("Going"), Answer.MAYBE: lines.get("Maybe"),
                   Answer.NOT_GOING: lines.get("Not going")}  # fmt: skip
            show_ok += all(got[x] == str(want[x]) for x in ANSWERS)
        counts = {k: sum(1 for a in plan if a.kind == k) for k in ("command", "poll", "reaction")}
        rows += [
            (
                "RSVPs sent",
                f"{len(sent)} in {send_span:.1f} s by {len(clients)} clients in {len(rooms)} rooms "
                f"({len(encrypted)} encrypted)",
                f"{counts['command']} commands, {counts['poll']} poll votes, {counts['reaction']} reactions; "
                f"{failed_sends} sends failed",
            ),
            (
                "command → reply, p50 / p99 / max (s)",
                f"**{summary(cmd_lat)}**",
                f"{len(cmd_lat)} replies; targets p50 ≤ 0.5, p99 ≤ 2",
            ),
            (
                "…in encrypted rooms",
                summary(
                    [
                        watcher.replies[m][0] - t0
                        for a, t0, m in commands
                        if m in watcher.replies and clients[a.person].room in encrypted
                    ]
                ),
                "",
            ),
            (
                "…in unencrypted rooms",
                summary(
                    [
                        watcher.replies[m][0] - t0
                        for a, t0, m in commands
                        if m in watcher.replies and clients[a.person].room not in encrypted
                    ]
                ),
                "",
            ),
            (
                "…reply accepted by the homeserver, p50 / p99 / max (s)",
                summary(hs_lat),
                "send → the reply's origin_server_ts: the bot's share, without the watcher's sync",
            ),
            ("…median by 10-s window of sending (s)", " · ".join(windows), "does the latency grow?"),
            ("vote / reaction → stored, p50 / p99 / max (s)", summary(ann_lat), f"{len(ann_lat)} answers"),
            (
                "lost",
                f"**{no_reply + ann_lost + failed_sends}**",
                f"{no_reply} commands without a reply, {ann_lost} votes/reactions not stored",
            ),
            (
                "duplicated",
                f"**{sum(watcher.counts.get(m, 0) - 1 for _, _, m in commands if watcher.counts.get(m, 0) > 1)}**",
                "replies beyond the first to one command",
            ),
            (
                "attendance matches",
                f"{len(final) - mismatched}/{len(final)} people; `!event show` {show_ok}/{len(rooms)} rooms",
                "final answer per person vs. the store",
            ),
            ("load average during RSVPs (1/5/15 min)", f"{load_rsvp[0]} → {load_rsvp[1]}", ""),
        ]
        peak_a = await bot_proc.stop()
        rows.append(("bot peak RSS, part 1", f"{peak_a:.0f} MB", "whole part 1 incl. start-up"))
        sync_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sync_task
        for c in clients:
            await c.client.close()

        # -- part 2: reminders --
        rows += await reminders(args, tmp, hs, bot, mod_acct, [c.acct for c in clients], rooms)
        await mod.client.close()
    finally:
        if bot_proc is not None:
            await bot_proc.stop()
        for c in clients:
            await c.client.close()
        if proxy is not None:
            rows.append(("503s injected by the fault proxy", f"{sum(proxy.injected.values())}",
                         f"{args.fault_rate:.0%} of the bot's sends (seeded), both parts"))  # fmt: skip
            await proxy.close()
        hs.stop()
    return rows


async def reminders(
    args: argparse.Namespace,
    tmp: Path,
    hs: EmbeddedSynapse,
    bot: RegisteredAccount,
    mod: RegisteredAccount,
    people: list[RegisteredAccount],
    rooms: list[str],
) -> list[tuple[str, str, str]]:
    store_path = tmp / "bot.db"
    store = open_sqlite(str(store_path))
    await store.open()
    # Direct chats made with the bot's token exactly as the bot makes them (bridge.bot.effects.Effects._open_dm).
    bot_http = AsyncClient(hs.admin_url, bot.user_id, config=AsyncClientConfig(encryption_enabled=False))
    bot_http.restore_login(bot.user_id, bot.device_id, bot.access_token)

    async def dm(p: RegisteredAccount) -> None:
        resp = await bot_http.room_create(is_direct=True, invite=[p.user_id], preset=RoomPreset.trusted_private_chat,
                                          initial_state=[ENCRYPTION])  # fmt: skip
        assert isinstance(resp, RoomCreateResponse), resp
        await store.write([SetDmRoom(UserID(p.user_id), RoomID(resp.room_id)),
                           SetRoomSince(RoomID(resp.room_id), int(time.time() * 1000))])  # fmt: skip

    t = time.monotonic()
    await bounded(8, (dm(p) for p in people))
    await bot_http.close()
    log(f"{len(people)} direct chats made in {time.monotonic() - t:.0f} s; seeding the store")

    lead = 45.0  # the restarted bot's start and first (full-state) sync
    first_due = datetime.fromtimestamp(math.ceil(time.time() + lead), UTC)
    events: list[Event] = []
    taken: set[str] = set(r[0] for r in read_rows(store_path, "SELECT id FROM events"))
    expected: dict[str, datetime] = {}  # txn id -> due time
    writes: list[Any] = []
    for k in range(args.reminder_events):
        eid = EventID(new_event_id(frozenset(taken)))
        taken.add(eid)
        due = first_due + timedelta(seconds=k * args.reminder_gap)
        room = RoomID(rooms[k % len(rooms)])
        ev = Event(id=eid, title=f"Reminder bench {k}", starts_at=due + DAY, place=None, capacity=None,
                   deadline=None, organiser=UserID(mod.user_id), origin_room=room, audience_unit=None,
                   private=False, lang="ru", created_at=datetime.now(UTC) - 2 * DAY)  # fmt: skip
        events.append(ev)
        writes += [PutEvent(ev), PutAudience(eid, room)]
        slot = int(ev.starts_at.timestamp())
        for seq, p in enumerate(people, 1):
            # Answered days before (a reminder whose moment had passed at the answer is skipped: reminders Rule 6).
            writes.append(PutAnswer(Rsvp(eid, UserID(p.user_id), Answer.GOING, datetime.now(UTC) - 2 * DAY, seq,
                                         Source.COMMAND, None, room, p.user_id)))  # fmt: skip
            expected[txn_id(f"rem:{eid}:{slot}:{int(DAY.total_seconds())}:{p.user_id}")] = due
        expected[txn_id(f"rem:{eid}:{slot}:{int(DAY.total_seconds())}:{room}")] = due
    await store.write(writes)
    await store.close()
    dms = args.reminder_events * len(people)
    last_due = first_due + timedelta(seconds=(args.reminder_events - 1) * args.reminder_gap)
    log(f"{dms} DM + {args.reminder_events} room reminders due {first_due:%H:%M:%S}–{last_due:%H:%M:%S} UTC")

    proc = BotProcess(tmp / "civmatrix.yaml", tmp / "bot.log")
    load_b = [load()]
    await proc.start()
    hs_db = hs.data_dir / "homeserver.db"

    def sent_times() -> dict[str, float]:
        q = ("SELECT t.txn_id, e.origin_server_ts FROM event_txn_id_device_id t JOIN events e "
             "ON e.event_id = t.event_id WHERE t.user_id = ?")  # fmt: skip
        return {txn: ts / 1000 for txn, ts in read_rows(hs_db, q, (bot.user_id,)) if txn in expected}

    # A moderator keeps asking "!event list" in an unencrypted room (the last one) while the bursts go out: a
    # command's reply must not wait behind 200 reminders.
    probe = make_client(hs.public_url, mod, None)
    probe.room = rooms[-1]
    watcher = Watcher(bot.user_id)
    probe.client.add_event_callback(watcher.on_event, object)  # type: ignore[arg-type]
    probe_sync = asyncio.create_task(probe.client.sync_forever(timeout=1000))
    probes: list[tuple[float, str]] = []

    async def ask() -> None:
        t0 = time.time()
        with contextlib.suppress(Exception):
            probes.append(
                (t0, await send(probe, "m.room.message", {"msgtype": "m.text", "body": "!event list"}))
            )

    try:
        deadline = last_due.timestamp() + args.reminder_tail
        asks: list[asyncio.Task[None]] = []
        while time.time() < deadline:
            if not proc.alive():
                raise RuntimeError("the bot exited:\n" + proc.tail())
            await asyncio.sleep(args.probe_every)
            if (
                args.encrypted_rooms < len(rooms)
                and first_due.timestamp() - 5 < time.time() < last_due.timestamp() + 5
            ):
                asks.append(asyncio.create_task(ask()))
            if time.time() > last_due.timestamp() + 5:
                done = read_rows(store_path, "SELECT COUNT(*) FROM outbox")[0][0] == 0 and (
                    len(sent_times()) == len(expected)
                )
                if done:
                    break
        await asyncio.gather(*asks)
        with contextlib.suppress(RuntimeError):
            await until(lambda: all(m in watcher.replies for _, m in probes), "the probes' replies", 60)
        load_b.append(load())
        peak = await proc.stop()
    finally:
        await proc.stop()
        probe_sync.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await probe_sync
        await probe.client.close()
    probe_lat = [watcher.replies[m][0] - t0 for t0, m in probes if m in watcher.replies]
    # The probes sent within a second of a burst's due moment are the ones that met it head on.
    due_moments = sorted({d.timestamp() for d in expected.values()})
    in_burst = [
        watcher.replies[m][0] - t0
        for t0, m in probes
        if m in watcher.replies and min(abs(t0 - d) for d in due_moments) <= 1.0
    ]
    got = sent_times()
    delays = [got[txn] - due.timestamp() for txn, due in expected.items() if txn in got]
    off = [abs(d) for d in delays]  # the bot may release a burst early, centred on its due moment
    late = sum(1 for d in off if d > 2.0)
    # The last reminder of a burst waits for all before it: a burst's worst delay is its drain time.
    worst: dict[datetime, float] = {}
    for txn, due in expected.items():
        if txn in got:
            worst[due] = max(worst.get(due, 0.0), abs(got[txn] - due.timestamp()))
    bursts = [worst[d] for d in sorted(worst)]
    span = max(got.values()) - min(got.values()) if got else 0.0
    return [
        (
            "reminders due",
            f"{len(expected)} ({dms} DMs to {len(people)} people + {args.reminder_events} room notices)",
            f"{args.reminder_events} bursts of {len(people) + 1}, one every {args.reminder_gap:g} s",
        ),
        (
            "reminders sent",
            f"{len(got)}/{len(expected)} in {span:.0f} s ({len(got) / max(span, 1e-9):.0f}/s)",
            "found on the homeserver by transaction id",
        ),
        (
            "distance from due, p50 / p99 / max (s)",
            f"**{summary(off)}**",
            f"{late} sent more than 2 s from due; target ≤ 2 s each",
        ),
        (
            "sent minus due: earliest / p50 / latest (s)",
            f"{min(delays):+.3f} / {pct(delays, 50):+.3f} / {max(delays):+.3f}" if delays else "–",
            "negative: released early so that the burst is centred on its due moment",
        ),
        (
            "worst distance per burst: first / median / last (s)",
            f"{bursts[0]:.1f} / {statistics.median(bursts):.1f} / {bursts[-1]:.1f}" if bursts else "–",
            "the first burst after the restart also shares a new room key in every DM",
        ),
        (
            "command → reply during the bursts, p50 / p99 / max (s)",
            summary(probe_lat),
            f"{len(probe_lat)}/{len(probes)} `!event list` answered, one every {args.probe_every:g} s; "
            f"those within 1 s of a due moment: {summary(in_burst)} ({len(in_burst)})",
        ),
        ("bot peak RSS, part 2", f"**{peak:.0f} MB**", "target ≤ 200 MB"),
        ("load average during reminders (1/5/15 min)", f"{load_b[0]} → {load_b[-1]}", ""),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--encrypted-rooms", type=int, default=5)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--rsvps", type=int, default=1000)
    ap.add_argument("--rsvp-seconds", type=float, default=60.0)
    ap.add_argument("--reminder-events", type=int, default=50, help="each with every person going")
    ap.add_argument("--reminder-gap", type=float, default=10.0, help="seconds between two events' due times")
    ap.add_argument(
        "--reminder-tail", type=float, default=300.0, help="wait at most this long after the last due"
    )
    ap.add_argument(
        "--probe-every", type=float, default=1.3, help="seconds between two commands sent during the bursts"
    )
    ap.add_argument("--fault-rate", type=float, default=0.0,
                    help="put a fault proxy between bot and Synapse answering this share of sends with 503")  # fmt: skip
    ap.add_argument("--proxy", action="store_true",
                    help="put the fault proxy in the bot's path even without faults (its own cost)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (for debugging)")
    args = ap.parse_args()
    if (
        not 0 < args.rooms <= args.users
        or args.users % args.rooms
        or not 0 <= args.encrypted_rooms <= args.rooms
    ):
        ap.error("--users must be a multiple of --rooms, and --encrypted-rooms at most --rooms")
    if not 0 < args.rsvps <= 5 * args.users or args.rsvp_seconds <= 0 or args.reminder_events <= 0:
        ap.error("need 0 < --rsvps ≤ 5 × --users, --rsvp-seconds > 0, --reminder-events > 0")
    # nio warns once per device it has no Olm session with yet: thousands of lines, none of them a problem.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nio").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="civmatrix-bench-bot-"))
    began = time.monotonic()
    load0 = load()
    try:
        rows = asyncio.run(run(args, tmp))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nEvent bot benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, load at start {load0}, run took {time.monotonic() - began:.0f} s\n")  # fmt: skip
    print("| measure | result | notes |")
    print("|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
