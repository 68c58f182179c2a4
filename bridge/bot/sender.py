"""The outbox sender: delivers what the service queued, in lanes, and measures how fast it gets through.

Rule 1. An outbox entry is deleted only after the homeserver has it, and is sent with a transaction id
        derived from its outbox id, so a re-send (after a crash, or after an answer that was lost on the way)
        is deduplicated by the homeserver.
Rule 2. A transient failure (:mod:`bridge.bot.failures`) keeps the entry and retries it after the delay of
        the one retry policy (:class:`~bridge.matrix.client.RetryPolicy`), never sooner than the server's
        ``retry_after_ms``; its lane waits, other lanes go on. A permanent failure moves the entry to the
        dead letters with the reason, in one transaction: nothing is ever dropped without a trace.
Rule 3. An entry read from the outbox is held by the sender until it is settled (accepted, or dead-lettered)
        or its lane ends; a read passes over held entries, so an entry is in one lane at most, never sent by
        two at once.
Rule 4. A lane sends only its head and lets it go only once settled, so a lane never reorders; a lane that
        ends with entries left (its task failed or was cancelled) lets them go too: they are still in the
        outbox, and the next read holds them again, in order.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from bridge.bot.failures import Defer, NotInRoom, SendFailed
from bridge.events.clock import Clock, SystemClock
from bridge.events.model import (
    Announce,
    DirectMessage,
    DirectUpload,
    Effect,
    Invitation,
    Reply,
    UpdateTally,
    Upload,
)
from bridge.events.outbox import decode
from bridge.events.store import REMINDER_OUTBOX, DeadLetter, DeleteOutbox, Store
from bridge.matrix.client import RetryPolicy

log = logging.getLogger(__name__)

OUTBOX_BATCH = 400
# Messages in flight at once. Synapse persists one event at a time per room, so more parallel rooms is what
# raises throughput; bench/bot.py found 16 background lanes enough to keep the embedded Synapse busy.
INTERACTIVE_LANES = 8
BACKGROUND_LANES = 16

Execute = Callable[[Effect, str], Awaitable[None]]
# An outbox entry is retried until it is accepted (the retry count only grows the delay): a homeserver that
# is down for an hour gets everything once it is back, at most a minute after.
SEND_RETRY = RetryPolicy(base_delay=0.5, multiplier=2.0, max_delay=60.0)


def is_interactive(effect: Effect) -> bool:
    """What a person is waiting for right now; everything else (reminders, notices to many) is background."""
    if isinstance(effect, DirectMessage):
        return effect.answer
    return isinstance(effect, Reply | Announce | Upload | DirectUpload)


def lane_of(effect: Effect) -> str:
    """Messages to one room (or one person) keep their order; different rooms go in parallel. Count edits
    have lanes of their own: their throttle must not hold up a room's messages."""
    if isinstance(effect, UpdateTally):
        return f"tally:{effect.room_id}"
    user = getattr(effect, "user_id", None)
    if isinstance(effect, DirectMessage | DirectUpload | Invitation) and user:
        return f"dm:{user}"
    return f"room:{getattr(effect, 'room_id', '')}"


def txn_id(outbox_id: str) -> str:
    """A Matrix transaction id from an outbox id: stable, so a re-send after a crash is deduplicated."""
    return "cm" + hashlib.sha256(outbox_id.encode()).hexdigest()[:32]


class SendRate:
    """Messages per second the sender gets through while busy, from the gaps between deliveries.

    Only gaps while more messages were waiting count (an idle sender says nothing about its speed); until
    enough were seen the rate is a cautious default (a lower rate only releases a reminder burst earlier).
    """

    DEFAULT = 50.0
    SAMPLES = 50

    def __init__(self) -> None:
        self._last: float | None = None
        self._busy = False
        self._gaps: collections.deque[float] = collections.deque(maxlen=500)

    def delivered(self, at: float, waiting: int) -> None:
        """One message delivered at ``at``; ``waiting`` more were queued behind it."""
        if self._busy and self._last is not None and at - self._last < 1.0:
            self._gaps.append(at - self._last)
        self._last = at
        self._busy = waiting > 0

    def per_second(self) -> float:
        total = sum(self._gaps)
        if len(self._gaps) < self.SAMPLES or total <= 0:
            return self.DEFAULT
        return min(max(len(self._gaps) / total, 1.0), 1000.0)


@dataclass(slots=True)
class Lane:
    """The held entries of one lane, oldest first (Rule 4); ``key`` names its kind and room or person."""

    key: str
    interactive: bool
    todo: collections.deque[tuple[str, Effect]] = field(default_factory=collections.deque)


def is_reminder(oid: str) -> bool:
    """Reminders are read from the outbox apart from everything else: a backlog of them never has to fit in
    memory, nor wait in front of a reply."""
    return oid.startswith(REMINDER_OUTBOX)


class SendState:
    """What the sender holds between reading the outbox and settling each entry: the held entries per group
    (reminders or not), the lanes, how many entries of each kind wait, and each entry's failed attempts.

    Each method is one transition of Rules 2-4; the sender's tasks change the state only through them.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self._held: dict[bool, set[str]] = {True: set(), False: set()}  # by group: True for reminders
        self._more = {True: False, False: False}  # the group's last read was full: the outbox holds more
        self._lanes: dict[str, Lane] = {}
        self._waiting = {True: 0, False: 0}  # held per kind (interactive or not), not yet settled
        self._attempts: dict[str, int] = {}

    # --- reading ------------------------------------------------------------------------------------------

    def read_limit(self, reminders: bool) -> int | None:
        """How many rows of the group to read (the oldest are the ones held already); ``None``: it is full."""
        held = len(self._held[reminders])
        return None if held >= OUTBOX_BATCH else OUTBOX_BATCH + held

    def was_read(self, reminders: bool, rows: int, limit: int) -> None:
        self._more[reminders] = rows >= limit

    def holds(self, oid: str) -> bool:
        return oid in self._held[is_reminder(oid)]

    def holding(self) -> bool:
        return any(self._held.values())

    def needs_read(self) -> bool:
        """Nothing is held, or a group that has more in the outbox is down to half a batch."""
        return not self.holding() or any(
            self._more[g] and len(self._held[g]) <= OUTBOX_BATCH // 2 for g in self._held
        )

    # --- lanes --------------------------------------------------------------------------------------------

    def claim(self, oid: str, effect: Effect) -> Lane | None:
        """Hold a newly read entry at the end of its lane; the lane if it is new (its task is to start)."""
        self._held[is_reminder(oid)].add(oid)
        interactive = is_interactive(effect)
        self._waiting[interactive] += 1
        key = f"{interactive}:{lane_of(effect)}"
        lane = self._lanes.get(key)
        if lane is not None:
            lane.todo.append((oid, effect))
            return None
        lane = self._lanes[key] = Lane(key, interactive, collections.deque([(oid, effect)]))
        return lane

    def head(self, lane: Lane) -> tuple[str, Effect] | None:
        return lane.todo[0] if lane.todo else None

    def settled(self, lane: Lane) -> int:
        """The lane's head is accepted or dead-lettered: let it go. Returns how many of its kind wait."""
        oid, _ = lane.todo.popleft()
        self._held[is_reminder(oid)].discard(oid)
        self._waiting[lane.interactive] -= 1
        return self._waiting[lane.interactive]

    def closed(self, lane: Lane) -> bool:
        """The lane's task ended: let what is left go (Rule 4). Returns whether anything was left."""
        for oid, _ in lane.todo:
            self._held[is_reminder(oid)].discard(oid)
        self._waiting[lane.interactive] -= len(lane.todo)
        del self._lanes[lane.key]
        return bool(lane.todo)

    # --- attempts (Rule 2) --------------------------------------------------------------------------------

    def failed_retryable(self, oid: str, retry_after_ms: int | None) -> tuple[int, float]:
        """One more failed attempt: its number and the seconds to wait before the next."""
        n = self._attempts.get(oid, 0)
        self._attempts[oid] = n + 1
        return n + 1, max(self.policy.backoff(n, self._rng), (retry_after_ms or 0) / 1000)

    def failed_final(self, oid: str) -> None:
        self._attempts.pop(oid, None)

    def accepted(self, oid: str) -> None:
        self._attempts.pop(oid, None)

    def lane_failed_delay(self) -> float:
        """How long a lane whose task failed waits before its entries are read again."""
        return self.policy.backoff(0, self._rng)


class Sender:
    """Sends what the outbox holds through ``execute``; :meth:`run` is the bot's sender task.

    :attr:`wake` is set by whoever queues an entry; :attr:`idle` is set while nothing is queued (tests and
    benchmarks wait on it).
    """

    def __init__(
        self,
        store: Store,
        execute: Execute,
        rate: SendRate | None = None,
        policy: RetryPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.execute = execute
        self.rate = rate or SendRate()
        self.policy = policy or SEND_RETRY
        self.state = SendState(self.policy, random.Random())
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self._gates = {True: asyncio.Semaphore(INTERACTIVE_LANES), False: asyncio.Semaphore(BACKGROUND_LANES)}
        self._workers: set[asyncio.Task[None]] = set()

    def notify(self) -> None:
        """Something was queued: read the outbox again."""
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        """Send what the outbox holds; delete each entry once the homeserver has it.

        Entries go out in lanes, one per room (per person for direct messages) and kind, so a room's messages
        of one kind keep their order while different rooms proceed in parallel; a lane starts as soon as its
        first entry is committed, so nothing waits for an unrelated batch to finish. What a person is waiting
        for (replies, announcements, exports) and background traffic (reminders, notices to many) have
        separate lanes and limits, and reminders are read from the outbox apart from everything else, so a
        backlog of thousands of reminders neither holds up a reply nor has to fit in memory at once.
        """
        try:
            while True:
                self.wake.clear()
                if await self._read():
                    self.wake.set()  # rows behind the dropped ones did not fit into this read
                if self.state.holding() or self.wake.is_set():
                    self.idle.clear()
                else:
                    self.idle.set()
                await self.wake.wait()
        finally:
            for task in list(self._workers):
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def _read(self) -> bool:
        """Hold what is new in the outbox and start the lanes it needs; whether an unreadable row was
        dropped."""
        dropped = False
        for reminders in (False, True):  # everything but reminders first
            limit = self.state.read_limit(reminders)
            if limit is None:
                continue
            rows = await self.store.outbox(limit, reminders=reminders)
            self.state.was_read(reminders, len(rows), limit)
            for oid, payload in rows:
                if self.state.holds(oid):
                    continue
                try:
                    effect = decode(payload)
                except Exception as e:
                    log.exception("could not read outbox entry %s", oid)
                    await self._dead(oid, f"unreadable entry: {type(e).__name__}: {e}")
                    dropped = True
                    continue
                lane = self.state.claim(oid, effect)
                if lane is not None:
                    task = asyncio.create_task(self._send_lane(lane), name=f"bot-lane-{lane.key}")
                    self._workers.add(task)
                    task.add_done_callback(self._workers.discard)
        return dropped

    async def _send_lane(self, lane: Lane) -> None:
        try:
            while (entry := self.state.head(lane)) is not None:
                oid, effect = entry
                async with self._gates[lane.interactive]:
                    retry_in = await self.deliver(oid, effect)
                if retry_in is not None:
                    # Kept: tried again later with the same txn id, which dedups what did arrive.
                    await asyncio.sleep(retry_in)
                    continue
                waiting = self.state.settled(lane)
                if not lane.interactive:
                    self.rate.delivered(time.monotonic(), waiting)
        except Exception:
            log.exception("sending lane %s failed; its entries are read again", lane.key)
            await asyncio.sleep(self.state.lane_failed_delay())
        finally:
            if self.state.closed(lane) or self.state.needs_read():
                self.wake.set()

    async def deliver(self, oid: str, effect: Effect) -> float | None:
        """Send one outbox entry; ``None`` once it is settled (accepted and deleted, or dead-lettered),
        else the seconds to wait before trying it again (Rule 2)."""
        if not await self.store.in_outbox(oid):
            # Already sent (a read that overlapped its deletion), or a reminder of an event cancelled or
            # moved since it was read.
            return None
        try:
            await self.execute(effect, txn_id(oid))
        except asyncio.CancelledError:
            raise
        except Defer as e:
            return e.seconds
        except SendFailed as e:
            if e.transient:
                return self._retry(oid, str(e), e.retry_after_ms)
            await self._dead(oid, str(e))
            return None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return self._retry(oid, f"{type(e).__name__}: {e}", None)
        except NotInRoom as e:
            await self._dead(oid, str(e))
            return None
        except Exception as e:
            # A bug of ours, not the server's answer: sending again fails the same way. Kept for an operator.
            log.exception("could not send %s", oid)
            await self._dead(oid, f"{type(e).__name__}: {e}")
            return None
        self.state.accepted(oid)
        await self.store.write([DeleteOutbox(oid)])
        return None

    def _retry(self, oid: str, why: str, retry_after_ms: int | None) -> float:
        attempt, delay = self.state.failed_retryable(oid, retry_after_ms)
        log.warning("sending %s failed (%s); retry %d in %.1f s", oid, why, attempt, delay)
        return delay

    async def _dead(self, oid: str, why: str) -> None:
        self.state.failed_final(oid)
        log.error("giving up on %s: %s (kept as a dead letter; see bridge status)", oid, why)
        await self.store.write([DeadLetter(oid, self.clock.now(), why), DeleteOutbox(oid)])
