"""The reminder scheduler: sleeps on the injected clock until the next reminder is due, then queues it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bridge.bot.sender import SendRate
from bridge.events.clock import Clock
from bridge.events.service import REMINDER_AHEAD, EventService

# The longest sleep: a reminder added by another process (or a clock jump) is noticed within this.
MAX_SLEEP = 300.0


class ReminderScheduler:
    """Queues due reminders into the outbox at the pace the sender gets through (``rate``).

    ``ready`` is awaited before the first look (reminders go out once the bot knows its rooms); ``queued``
    is called when reminders were put into the outbox.
    """

    def __init__(
        self,
        service: EventService,
        clock: Clock,
        rate: SendRate,
        ready: asyncio.Event,
        queued: Callable[[], None],
    ) -> None:
        self.service = service
        self.clock = clock
        self.rate = rate
        self.ready = ready
        self.queued = queued
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Re-check reminders now (an event was added or moved, or a test moved a manual clock)."""
        self._wake.set()

    async def run(self) -> None:
        await self.ready.wait()
        while True:
            # Cleared before looking, not before sleeping: a wake-up that arrives while we look is kept.
            self._wake.clear()
            queued = await self.service.queue_due_reminders(self.rate.per_second())
            if queued.items or queued.nudges:
                self.queued()
            times = [queued.next_release, await self.service.next_reminder_at(REMINDER_AHEAD)]
            nxt = min((t for t in times if t is not None), default=None)
            wait = MAX_SLEEP if nxt is None else max(0.0, (nxt - self.clock.now()).total_seconds())
            await self._sleep_or_wake(min(wait, MAX_SLEEP))

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.create_task(self.clock.sleep(seconds))
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
