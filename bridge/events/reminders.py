"""Which reminders are due at time ``now``: a pure function of events, answers and what was already sent.

Rule 1. A reminder is identified by (event, slot, offset, target); ``slot`` is the start time in epoch
        seconds, so moving an event re-arms its reminders and nothing else does.
Rule 2. A person gets at most one reminder per due moment: if the bot was down through the 24 h mark and
        it is now past the 1 h mark, only the 1 h reminder is sent and the 24 h one is marked as sent
        without sending.
Rule 3. Nothing is due for a cancelled event, or at or after its start.
Rule 4. One room reminder per audience room, at the largest offset (or late, once, if the bot was down then).
Rule 6. Quiet: a reminder whose moment had passed, or was less than ``grace`` away, when the person
        answered (or, for the room reminder, when the event was announced) is skipped: the confirmation or
        the announcement just said it all. Of two reminders for one event less than ``quiet`` apart only
        the first is sent. So a "going" 67 minutes before the start gets the 1 h reminder only, and an
        event announced less than 24 h ahead gets no "coming up" notice seconds after its announcement.
Rule 5. A burst (n reminders due at one moment) is released n / (2 * rate) seconds early, ``rate`` being how
        many messages per second the sender gets through: the burst is then centred on its due moment and no
        reminder of it is further than n / (2 * rate) from that moment, instead of the last one n / rate late.
        Never more than ``ahead`` early.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.events import render
from bridge.events.model import (
    DirectMessage,
    Event,
    EventID,
    RoomID,
    RoomNotice,
    Rsvp,
    attendance,
)

DEFAULT_OFFSETS = (timedelta(hours=24), timedelta(hours=1))
QUIET = timedelta(minutes=30)
GRACE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, order=True)
class ReminderKey:
    event_id: EventID
    slot: int
    offset_s: int
    target: str  # a user id for a DM, a room id for the room reminder


@dataclass(frozen=True, slots=True)
class Due:
    marks: tuple[ReminderKey, ...]  # all to be recorded as sent once ``effect`` is done
    effect: DirectMessage | RoomNotice
    at: datetime  # the moment it falls due: the start minus its offset


def slot(event: Event) -> int:
    return int(event.starts_at.timestamp())


def schedule(
    starts_at: datetime,
    since: datetime,
    offsets: Sequence[timedelta],
    quiet: timedelta = QUIET,
    grace: timedelta = GRACE,
) -> tuple[timedelta, ...]:
    """Rule 6: the offsets that will be sent to someone who answered (or a room announced) at ``since``,
    largest first."""
    kept: list[timedelta] = []
    for o in sorted(set(offsets), reverse=True):
        at = starts_at - o
        if at < since + grace or (kept and at < starts_at - kept[-1] + quiet):
            continue
        kept.append(o)
    return tuple(kept)


def due(
    events: Iterable[Event],
    answers: Mapping[EventID, Sequence[Rsvp]],
    rooms: Mapping[EventID, Sequence[RoomID]],
    sent: set[ReminderKey] | frozenset[ReminderKey],
    now: datetime,
    tz: ZoneInfo,
    offsets: Sequence[timedelta] = DEFAULT_OFFSETS,
    remind_maybe: bool = False,
    ahead: timedelta = timedelta(0),
    quiet: timedelta = QUIET,
) -> list[Due]:
    """Reminders due at ``now``, and those falling due up to ``ahead`` later (for :func:`release`)."""
    if not offsets:
        return []
    out: list[Due] = []
    horizon = now + ahead
    for ev in events:
        if ev.cancelled or now >= ev.starts_at:
            continue
        s = slot(ev)
        att = attendance(ev.capacity, answers.get(ev.id, ()))
        people: list[Rsvp] = list(att.confirmed) + (list(att.maybe) if remind_maybe else [])
        for r in people:
            item = _due_one(ev, s, r.user_id, schedule(ev.starts_at, r.answered_at, offsets, quiet), horizon)
            if item is None or item[0] in sent:
                continue
            _, marks, at = item
            text = render.reminder_dm(ev, tz, ev.starts_at - max(now, at), r.answer)
            out.append(Due(marks, DirectMessage(r.user_id, text), at))
        room_offsets = schedule(ev.starts_at, ev.created_at, offsets, quiet)[:1]  # Rule 4: one per room
        for room in rooms.get(ev.id, ()):
            item = _due_one(ev, s, room, room_offsets, horizon)
            if item is not None and item[0] not in sent:
                notice = RoomNotice(room, render.room_reminder(ev, tz, len(att.confirmed)))
                out.append(Due(item[1], notice, item[2]))
    return out


def _due_one(
    ev: Event, s: int, target: str, kept: Sequence[timedelta], horizon: datetime
) -> tuple[ReminderKey, tuple[ReminderKey, ...], datetime] | None:
    """The latest of ``kept`` whose moment has come (Rule 2), its key, and the keys it settles."""
    passed = [o for o in kept if ev.starts_at - o <= horizon]
    if not passed:
        return None
    latest = passed[-1]
    marks = tuple(ReminderKey(ev.id, s, int(o.total_seconds()), target) for o in passed)
    return marks[-1], marks, ev.starts_at - latest


def release(
    items: Sequence[Due], now: datetime, rate: float, ahead: timedelta
) -> tuple[list[Due], datetime | None]:
    """Rule 5: the reminders to hand to the sender at ``now``, and when the next of the others is released.

    ``items`` are what :func:`due` returned with the same ``ahead``; ``rate`` is messages per second.
    """
    sizes = Counter(d.at for d in items)
    ready: list[Due] = []
    later: datetime | None = None
    for d in items:
        lead = min(timedelta(seconds=sizes[d.at] / (2 * rate)), ahead)
        start = d.at - lead
        if start <= now:
            ready.append(d)
        elif later is None or start < later:
            later = start
    return ready, later


def next_due(events: Iterable[Event], now: datetime, offsets: Sequence[timedelta]) -> datetime | None:
    """The earliest moment after ``now`` at which some reminder may become due (for the scheduler's sleep)."""
    best: datetime | None = None
    for ev in events:
        if ev.cancelled:
            continue
        for o in offsets:
            at = ev.starts_at - o
            if at > now and at < ev.starts_at and (best is None or at < best):
                best = at
    return best
