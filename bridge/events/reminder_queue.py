"""Reminders moved from the schedule into the outbox: which are due (the ``reminders`` rules decide), when
to look again, and the "sent" marks written with them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.events.context import Context
from bridge.events.invitations import Invitations
from bridge.events.invitees import auto_nudge_at
from bridge.events.model import Event
from bridge.events.outbox import encode
from bridge.events.reminders import Due, due, next_due, release
from bridge.events.store import MarkReminder, PutOutbox, Write, reminder_outbox_prefix

# How far ahead of its due moment a burst of reminders may be released (reminders Rule 5).
REMINDER_AHEAD = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Queued:
    items: list[Due]
    next_release: datetime | None  # when a reminder held back for now (Rule 5) is released
    nudges: int = 0  # automatic nudges put into the outbox


class ReminderQueue:
    """Reminders, and the automatic nudges of invitees that the same scheduler wakes for."""

    def __init__(self, ctx: Context, invitations: Invitations) -> None:
        self.ctx = ctx
        self.invitations = invitations

    async def due(self, ahead: timedelta = timedelta(0)) -> list[Due]:
        now = self.ctx.clock.now()
        settings, store = self.ctx.settings, self.ctx.store
        horizon = now + max(settings.reminder_offsets, default=timedelta(0)) + ahead
        events = await store.starting_between(now, horizon)
        ids = [e.id for e in events]
        return due(
            events,
            await store.answers_for(ids),
            await store.audiences_for(ids),
            await store.reminders_sent(ids),
            now,
            self.ctx.tz,
            settings.reminder_offsets,
            settings.remind_maybe,
            ahead,
        )

    async def mark_sent(self, item: Due) -> None:
        now = self.ctx.clock.now()
        await self.ctx.store.write([MarkReminder(k, now) for k in item.marks])

    async def queue(self, rate: float | None = None) -> Queued:
        """Move the reminders due now into the outbox and mark them sent, in one transaction.

        Given the sender's ``rate`` (messages per second), a burst is released early enough to be centred on
        its due moment (``reminders`` Rule 5); without it nothing leaves before it is due.
        """
        ahead = REMINDER_AHEAD if rate else timedelta(0)
        items = await self.due(ahead)
        later: datetime | None = None
        if rate:
            items, later = release(items, self.ctx.clock.now(), rate, ahead)
        if items:
            now = self.ctx.clock.now()
            writes: list[Write] = []
            for d in items:
                k = d.marks[-1]
                oid = f"{reminder_outbox_prefix(k.event_id)}{k.slot}:{k.offset_s}:{k.target}"
                writes.append(PutOutbox(oid, now, encode(d.effect)))
                writes += [MarkReminder(m, now) for m in d.marks]
            await self.ctx.store.write(writes)
        nudges = await self.invitations.queue_auto_nudges()
        return Queued(items, later, nudges)

    async def next_at(self, ahead: timedelta = timedelta(0)) -> datetime | None:
        """When to look again: the first due moment later than ``now + ahead``, minus ``ahead``.

        (Per offset, the first event starting after that moment plus the offset.) Due moments closer than
        ``ahead`` are the business of :meth:`queue`, which says when it releases them.
        """
        after = self.ctx.clock.now() + ahead
        candidates: list[Event] = []
        for offset in self.ctx.settings.reminder_offsets:
            candidates += await self.ctx.store.first_starting_after(after + offset)
        nxt = next_due(candidates, after, self.ctx.settings.reminder_offsets)
        times = [] if nxt is None else [nxt - ahead]
        nudge = await self.invitations.next_auto_nudge()
        if nudge is not None and self.ctx.settings.nudge_before is not None:
            times.append(auto_nudge_at(nudge, self.ctx.settings.nudge_before))
        return min(times, default=None)
