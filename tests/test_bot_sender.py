"""The bot's sender over a real SQLite outbox, with the homeserver send replaced by a recorder.

The recorder is a fault-injection stand-in (slow sends, an unreachable homeserver); that messages really
arrive, in encrypted rooms, is shown by the live tests against Synapse.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from bridge.bot import sender as botmod
from bridge.bot.sender import Sender
from bridge.events.model import DirectMessage, Effect, MatrixEventID, Reply, RoomID, RoomNotice, UserID
from bridge.events.outbox import encode
from bridge.events.render import plain
from bridge.events.store import PutOutbox, open_sqlite

T0 = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
ROOM = RoomID("!dept:x")


class Recorder:
    """Stands in for ``Effects.execute``: records start/end and the peak number of sends in flight."""

    def __init__(self, seconds: float, fail_first: set[str] | None = None) -> None:
        self.seconds = seconds
        self.fail_first = set(fail_first or ())
        self.done: list[tuple[str, float]] = []  # (txn, finished at)
        self.in_flight = {True: 0, False: 0}
        self.peak = {True: 0, False: 0}
        self.attempts: dict[str, int] = {}
        self.peak_lanes = 0  # lane tasks alive at once: what the reader holds in memory

    async def __call__(self, effect: Effect, txn: str) -> None:
        kind = botmod.is_interactive(effect)
        lanes = sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("bot-lane-"))
        self.peak_lanes = max(self.peak_lanes, lanes)
        self.attempts[txn] = self.attempts.get(txn, 0) + 1
        if txn in self.fail_first:
            self.fail_first.discard(txn)
            raise aiohttp.ClientConnectionError("homeserver unreachable")
        self.in_flight[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.in_flight[kind])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight[kind] -= 1
        self.done.append((txn, time.monotonic()))


async def offline_sender(tmp_path: Path, rec: Recorder) -> Sender:
    """The bot's sender over a real SQLite store whose sends go to ``rec``; it never contacts a homeserver."""
    store = open_sqlite(str(tmp_path / "bot.db"))
    await store.open()
    return Sender(store, rec)


async def run_sender(
    tmp_path: Path, rec: Recorder, entries: list[tuple[str, Effect]], late: list[tuple[str, Effect]]
):
    sender = await offline_sender(tmp_path, rec)
    store = sender.store
    await store.write([PutOutbox(oid, T0, encode(e)) for oid, e in entries])
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(0.05)
        await store.write([PutOutbox(oid, T0, encode(e)) for oid, e in late])
        sender.notify()
        await asyncio.wait_for(_drained(sender, store), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def _drained(sender: Sender, store) -> None:
    while not (sender.idle.is_set() and not await store.outbox(10)):
        await asyncio.sleep(0.02)


def dm(i: int) -> DirectMessage:
    return DirectMessage(UserID(f"@p{i}:x"), plain(f"reminder {i}"))


async def test_reply_is_not_held_up_by_a_reminder_burst_and_lanes_keep_order(tmp_path: Path) -> None:
    burst = [(f"rem:{i}", dm(i)) for i in range(120)]
    notices = [(f"room:{i}", RoomNotice(ROOM, plain(f"room notice {i}"))) for i in range(5)]
    reply = [("reply", Reply(ROOM, MatrixEventID("$cmd"), plain("You are going")))]
    rec = Recorder(0.05)
    start = time.monotonic()
    await run_sender(tmp_path, rec, burst + notices, reply)
    order = [txn for txn, _ in rec.done]
    finished = dict(rec.done)
    assert sorted(order) == sorted(
        botmod.txn_id(oid) for oid, _ in burst + notices + reply
    )  # each exactly once
    # 120 background sends of 50 ms through 16 lanes take ~0.4 s; the reply, queued 50 ms in, does not wait.
    assert finished[botmod.txn_id("reply")] - start < 0.5
    assert finished[botmod.txn_id("reply")] < sorted(finished.values())[len(order) // 2]
    # One room's notices leave in the order they were queued.
    room_order = [order.index(botmod.txn_id(oid)) for oid, _ in notices]
    assert room_order == sorted(room_order)
    assert rec.peak[False] == botmod.BACKGROUND_LANES
    assert rec.peak[True] == 1


async def test_unreachable_homeserver_keeps_the_entry_and_sends_it_once_later(tmp_path: Path) -> None:
    entries = [(f"rem:{i}", dm(i)) for i in range(3)]
    first = botmod.txn_id("rem:1")
    rec = Recorder(0.01, fail_first={first})
    await run_sender(tmp_path, rec, entries, [])
    assert rec.attempts[first] == 2
    assert [txn for txn, _ in rec.done].count(first) == 1
    assert len(rec.done) == 3


def test_send_state_holds_an_entry_in_one_lane_until_it_is_settled_or_the_lane_ends() -> None:
    import random

    from bridge.matrix.client import RetryPolicy

    st = botmod.SendState(RetryPolicy(base_delay=0.5, multiplier=2.0, max_delay=60.0), random.Random(7))
    first = Reply(ROOM, MatrixEventID("$a"), plain("one"))
    lane = st.claim("m1#0", first)
    assert lane is not None and lane.interactive
    # The same room's next reply joins the lane (kept in order); a reminder DM opens a lane of its own.
    second = Reply(ROOM, MatrixEventID("$b"), plain("two"))
    assert st.claim("m2#0", second) is None
    other = st.claim("rem:ev1:0:3600:@p1:x", dm(1))
    assert other is not None and not other.interactive
    assert st.holds("m1#0") and st.holds("m2#0") and st.holds("rem:ev1:0:3600:@p1:x")
    assert st.read_limit(False) == botmod.OUTBOX_BATCH + 2  # the held rows are read again, then new ones
    assert st.head(lane) == ("m1#0", first)
    assert st.settled(lane) == 1  # one reply still waits
    assert not st.holds("m1#0") and st.head(lane) == ("m2#0", second)
    # A lane that ends early lets its entries go: they are still in the outbox and are read again.
    assert st.closed(lane) is True
    assert not st.holds("m2#0") and st.holding()
    assert st.settled(other) == 0 and st.closed(other) is False
    assert not st.holding() and st.needs_read()
    # Failed attempts grow the delay, never below the server's retry_after_ms; a settled entry starts over.
    n1, d1 = st.failed_retryable("m3#0", None)
    n2, d2 = st.failed_retryable("m3#0", 5000)
    assert (n1, n2) == (1, 2) and 0.4 <= d1 <= 0.7 and d2 >= 5.0
    st.failed_final("m3#0")
    assert st.failed_retryable("m3#0", None)[0] == 1


def test_send_rate_counts_only_busy_gaps() -> None:
    rate = botmod.SendRate()
    assert rate.per_second() == botmod.SendRate.DEFAULT  # nothing seen yet: the cautious default
    t = 100.0
    for i in range(60):  # a burst: 60 messages 10 ms apart, more waiting behind each but the last
        t += 0.01
        rate.delivered(t, waiting=59 - i)
    assert abs(rate.per_second() - 100.0) < 1.0
    # Messages trickling in one at a time (the sender idle in between) say nothing about its speed.
    for _ in range(100):
        t += 0.5
        rate.delivered(t, waiting=0)
    assert abs(rate.per_second() - 100.0) < 1.0


async def test_a_reminder_backlog_is_read_in_slices_and_a_reply_overtakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(botmod, "OUTBOX_BATCH", 40)
    backlog = [(f"rem:ev1:1:86400:@p{i}:x", dm(i)) for i in range(400)]
    reply = [("reply", Reply(ROOM, MatrixEventID("$cmd"), plain("You are going")))]
    rec = Recorder(0.01)
    await run_sender(tmp_path, rec, backlog, reply)
    order = [txn for txn, _ in rec.done]
    assert sorted(order) == sorted(botmod.txn_id(oid) for oid, _ in backlog + reply)
    # Read 40 at a time (at most twice that held): the reply, committed behind 400 reminders, is not last.
    assert rec.peak_lanes <= 2 * 40
    assert order.index(botmod.txn_id("reply")) < 100


async def test_an_entry_no_longer_in_the_outbox_is_not_sent(tmp_path: Path) -> None:
    rec = Recorder(0.0)
    sender = await offline_sender(tmp_path, rec)
    try:
        # Sent and deleted by one lane while another read still held it; or a reminder of a cancelled event.
        assert await sender.deliver("rem:gone:1:3600:@p1:x", dm(1)) is None
        assert rec.attempts == {}
    finally:
        await sender.store.close()


class Answers:
    """Stands in for ``Effects.execute`` with the homeserver's answers: a scripted failure per attempt."""

    def __init__(self, script: dict[str, list[Exception]]) -> None:
        self.script = script
        self.accepted: list[str] = []

    async def __call__(self, effect: Effect, txn: str) -> None:
        todo = self.script.get(txn)
        if todo:
            raise todo.pop(0)
        self.accepted.append(txn)


async def test_transient_answers_are_retried_and_permanent_ones_become_dead_letters(tmp_path: Path) -> None:
    from bridge.bot.failures import NotInRoom, SendFailed
    from bridge.matrix.client import RetryPolicy

    t = botmod.txn_id
    script: dict[str, list[Exception]] = {
        t("busy"): [SendFailed("send", 503, "M_UNKNOWN", "Service unavailable"),
                    SendFailed("send", 502, None, "<html>502 Bad Gateway</html>"),
                    SendFailed("send", 500, "M_UNKNOWN", "Internal server error"),
                    SendFailed("send", 429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=50),
                    aiohttp.ServerDisconnectedError()],
        t("forbidden"): [SendFailed("send", 403, "M_FORBIDDEN", "User @bot:x not in room !gone:x")],
        t("left"): [NotInRoom("the bot is not in !left:x")],
    }  # fmt: skip
    answers = Answers(script)
    store = open_sqlite(str(tmp_path / "bot.db"))
    await store.open()
    sender = Sender(store, answers, policy=RetryPolicy(base_delay=0.01, max_delay=0.05))
    entries = {"busy": RoomNotice(ROOM, plain("a")), "forbidden": RoomNotice(RoomID("!gone:x"), plain("b")),
               "left": dm(1), "fine": dm(2)}  # fmt: skip
    await store.write([PutOutbox(oid, T0, encode(e)) for oid, e in entries.items()])
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.wait_for(_drained(sender, store), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    try:
        # Five transient failures in a row, then accepted: once, nothing lost.
        assert sorted(answers.accepted) == sorted([t("busy"), t("fine")])
        total, dead = await store.dead_letters()
        assert total == 2 and {d.id for d in dead} == {"forbidden", "left"}
        assert {d.id: d.reason for d in dead}["forbidden"].startswith(
            "send: 403 M_FORBIDDEN: User @bot:x not in"
        )
        assert await store.outbox_stats() == (0, None)
    finally:
        await store.close()
