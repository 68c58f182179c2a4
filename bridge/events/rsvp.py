"""RSVP transitions: a pure decision over the event and its current answers (Rules 1 and 2 in ``model``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bridge.events.model import (
    Answer,
    Attendance,
    Event,
    MatrixEventID,
    RoomID,
    Rsvp,
    Source,
    UserID,
    attendance,
)

Status = Literal["confirmed", "waitlisted", "maybe", "not_going"]
RefusalReason = Literal["deadline", "cancelled", "started"]


@dataclass(frozen=True, slots=True)
class RsvpRequest:
    user_id: UserID
    answer: Answer
    source: Source
    source_event_id: MatrixEventID | None
    room_id: RoomID | None
    display_name: str = ""
    department: str = ""
    job_title: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    rsvp: Rsvp  # the answer now on record (the old one if ``unchanged``)
    previous: Rsvp | None
    unchanged: bool  # the same answer again: nothing stored, the place in the queue is kept
    status: Status
    waitlist_position: int | None  # 1-based
    promoted: tuple[Rsvp, ...]  # people moved from the waitlist to confirmed by this answer
    after: Attendance


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RefusalReason


def status_of(att: Attendance, user: UserID) -> tuple[Status, int | None]:
    for r in att.confirmed:
        if r.user_id == user:
            return "confirmed", None
    for pos, r in enumerate(att.waitlist, start=1):
        if r.user_id == user:
            return "waitlisted", pos
    for r in att.maybe:
        if r.user_id == user:
            return "maybe", None
    return "not_going", None


def decide(
    event: Event, answers: Sequence[Rsvp], req: RsvpRequest, now: datetime, next_seq: int
) -> Accepted | Refused:
    """Decide what an answer does; the caller stores ``Accepted.rsvp`` unless ``unchanged``.

    Refusals come before anything else so a refused answer never changes the list.
    """
    if event.cancelled:
        return Refused("cancelled")
    if now >= event.starts_at:
        return Refused("started")
    if event.deadline is not None and now >= event.deadline:
        return Refused("deadline")
    before = attendance(event.capacity, answers)
    previous = next((r for r in answers if r.user_id == req.user_id), None)
    if previous is not None and previous.answer is req.answer:
        status, pos = status_of(before, req.user_id)
        return Accepted(previous, previous, True, status, pos, (), before)
    new = Rsvp(
        event_id=event.id,
        user_id=req.user_id,
        answer=req.answer,
        answered_at=now,
        seq=next_seq,
        source=req.source,
        source_event_id=req.source_event_id,
        room_id=req.room_id,
        display_name=req.display_name,
        department=req.department,
        job_title=req.job_title,
        phone=req.phone,
    )
    rest = [r for r in answers if r.user_id != req.user_id]
    after = attendance(event.capacity, [*rest, new])
    was = {r.user_id for r in before.confirmed}
    promoted = tuple(r for r in after.confirmed if r.user_id not in was and r.user_id != req.user_id)
    status, pos = status_of(after, req.user_id)
    return Accepted(new, previous, False, status, pos, promoted, after)


def recompute_after_edit(old: Event, new: Event, answers: Sequence[Rsvp]) -> tuple[Rsvp, ...]:
    """People promoted because the organiser raised the capacity."""
    before = {r.user_id for r in attendance(old.capacity, answers).confirmed}
    return tuple(r for r in attendance(new.capacity, answers).confirmed if r.user_id not in before)


@dataclass(frozen=True, slots=True)
class Withdrawn:
    removed: Rsvp
    promoted: tuple[Rsvp, ...]
    after: Attendance


def withdraw(
    event: Event, answers: Sequence[Rsvp], user: UserID, now: datetime
) -> Withdrawn | Refused | None:
    """Take back an answer (a removed reaction); ``None`` if there was none. Refused like answering."""
    if event.cancelled:
        return Refused("cancelled")
    if now >= event.starts_at:
        return Refused("started")
    if event.deadline is not None and now >= event.deadline:
        return Refused("deadline")
    removed = next((r for r in answers if r.user_id == user), None)
    if removed is None:
        return None
    before = {r.user_id for r in attendance(event.capacity, answers).confirmed}
    after = attendance(event.capacity, [r for r in answers if r.user_id != user])
    return Withdrawn(removed, tuple(r for r in after.confirmed if r.user_id not in before), after)
