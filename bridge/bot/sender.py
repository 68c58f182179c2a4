"""The outbox sender: delivers what the service queued, in lanes, and measures how fast it gets through.

Rule 1. An outbox entry is deleted only after the homeserver has it, and is sent with a transaction id
        derived from its outbox id, so a re-send (after a crash, or after an answer that was lost on the way)
        is deduplicated by the homeserver.
Rule 2. A transient failure (:mod:`bridge.bot.failures`) keeps the entry and retries it after the delay of
        the one retry policy (:class:`~bridge.matrix.client.RetryPolicy`), never sooner than the server's
        ``retry_after_ms``; its lane waits, other lanes go on. A permanent failure moves the entry to the
        dead letters with the reason, in one transaction: nothing is ever dropped without a trace.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bridge.bot.failures import Defer, NotInRoom, SendFailed
from bridge.events.clock import Clock, SystemClock
from bridge.events.model import Announce, DirectMessage, DirectUpload, Effect, Reply, UpdateTally, Upload
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
    if isinstance(effect, DirectMessage | DirectUpload) and user:
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
        self._rng = random.Random()
        self._attempts: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()

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
        # Entries read and not yet deleted, by group: True for reminders, False for everything else.
        queued: dict[bool, set[str]] = {True: set(), False: set()}
        more = {True: False, False: False}  # the group's last read was full: the outbox holds more
        lanes: dict[str, collections.deque[tuple[str, Effect]]] = {}
        workers: set[asyncio.Task[None]] = set()
        gates = {True: asyncio.Semaphore(INTERACTIVE_LANES), False: asyncio.Semaphore(BACKGROUND_LANES)}
        waiting = {True: 0, False: 0}  # entries queued per kind (interactive or not), not yet delivered

        def group(oid: str) -> bool:
            return oid.startswith(REMINDER_OUTBOX)

        def needs_read() -> bool:
            return not any(queued.values()) or any(
                more[g] and len(queued[g]) <= OUTBOX_BATCH // 2 for g in queued
            )

        async def lane_worker(key: str, interactive: bool) -> None:
            todo = lanes[key]
            try:
                while todo:
                    oid, effect = todo[0]
                    async with gates[interactive]:
                        retry_in = await self.deliver(oid, effect)
                    if retry_in is not None:
                        # Kept: tried again later with the same txn id, which dedups what did arrive.
                        await asyncio.sleep(retry_in)
                        continue
                    todo.popleft()
                    queued[group(oid)].discard(oid)
                    waiting[interactive] -= 1
                    if not interactive:
                        self.rate.delivered(time.monotonic(), waiting[False])
            except Exception:
                log.exception("sending lane %s failed; its entries are read again", key)
                await asyncio.sleep(self.policy.backoff(0, self._rng))
            finally:
                # What is left stays in the outbox; forgetting it here lets the next read pick it up.
                for oid, _ in todo:
                    queued[group(oid)].discard(oid)
                waiting[interactive] -= len(todo)
                del lanes[key]
                if todo or needs_read():
                    self.wake.set()

        def enqueue(oid: str, effect: Effect) -> None:
            queued[group(oid)].add(oid)
            interactive = is_interactive(effect)
            waiting[interactive] += 1
            key = f"{interactive}:{lane_of(effect)}"
            if key in lanes:
                lanes[key].append((oid, effect))
                return
            lanes[key] = collections.deque([(oid, effect)])
            task = asyncio.create_task(lane_worker(key, interactive), name=f"bot-lane-{key}")
            workers.add(task)
            task.add_done_callback(workers.discard)

        try:
            while True:
                self.wake.clear()
                dropped = False
                for g in (False, True):  # everything but reminders first
                    held = len(queued[g])
                    if held >= OUTBOX_BATCH:
                        continue
                    # The oldest rows are the ones held already; what is new comes after them.
                    limit = OUTBOX_BATCH + held
                    rows = await self.store.outbox(limit, reminders=g)
                    more[g] = len(rows) >= limit
                    for oid, payload in rows:
                        if oid in queued[g]:
                            continue
                        try:
                            effect = decode(payload)
                        except Exception as e:
                            log.exception("could not read outbox entry %s", oid)
                            await self._dead(oid, f"unreadable entry: {type(e).__name__}: {e}")
                            dropped = True
                            continue
                        enqueue(oid, effect)
                if dropped:
                    self.wake.set()  # rows behind the dropped ones did not fit into this read
                if any(queued.values()) or self.wake.is_set():
                    self.idle.clear()
                else:
                    self.idle.set()
                await self.wake.wait()
        finally:
            for task in list(workers):
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

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
        self._attempts.pop(oid, None)
        await self.store.write([DeleteOutbox(oid)])
        return None

    def _retry(self, oid: str, why: str, retry_after_ms: int | None) -> float:
        n = self._attempts.get(oid, 0)
        self._attempts[oid] = n + 1
        delay = max(self.policy.backoff(n, self._rng), (retry_after_ms or 0) / 1000)
        log.warning("sending %s failed (%s); retry %d in %.1f s", oid, why, n + 1, delay)
        return delay

    async def _dead(self, oid: str, why: str) -> None:
        self._attempts.pop(oid, None)
        log.error("giving up on %s: %s (kept as a dead letter; see bridge status)", oid, why)
        await self.store.write([DeadLetter(oid, self.clock.now(), why), DeleteOutbox(oid)])
