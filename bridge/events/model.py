"""Plain data of the event bot: events, answers and the effects the transport executes.

Invariants (checked by the property tests):

Rule 1. A person has at most one answer per event; a new answer replaces the old one and moves the person
        to the end of the answer-time order.
Rule 2. Who is confirmed and who waits is *derived*, never stored: the first ``capacity`` "going" answers
        in answer-time order are confirmed, the rest are the waitlist in that same order. So the confirmed
        count can never exceed the capacity and a promotion is simply "confirmed now, was not before".
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, NewType

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
MatrixEventID = NewType("MatrixEventID", str)
EventID = NewType("EventID", str)

Lang = Literal["ru", "en"]


def t(lang: Lang, ru: str, en: str) -> str:
    """The one place a Russian/English text pair is chosen (commands, replies and notices all call it)."""
    return ru if lang == "ru" else en


# No look-alikes (0/o, 1/l/i) so people can type an id they read on a phone.
ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
ID_LENGTH = 5
DEFAULT_DURATION = timedelta(hours=1)
MAX_TITLE = 200
MAX_CAPACITY = 100_000

# People type ids on Russian keyboards; these Cyrillic letters look exactly like Latin ones in the ids.
_HOMOGLYPHS = str.maketrans("аеокмнрстухв", "aeokmhpctyxb")


class Answer(StrEnum):
    GOING = "going"
    MAYBE = "maybe"
    NOT_GOING = "not_going"


class Source(StrEnum):
    POLL = "poll"
    REACTION = "reaction"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class Event:
    id: EventID
    title: str
    starts_at: datetime  # aware, UTC
    place: str | None
    capacity: int | None
    deadline: datetime | None  # aware, UTC; answers at or after it are refused
    organiser: UserID
    origin_room: RoomID
    audience_unit: str | None
    private: bool
    lang: Lang
    created_at: datetime
    cancelled: bool = False
    sequence: int = 0  # bumped on every edit; the .ics SEQUENCE
    timezone: str = "Europe/Moscow"
    checkin_closed: bool = False  # the organiser closed the attendance list: no more check-ins

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + DEFAULT_DURATION


@dataclass(frozen=True, slots=True)
class Rsvp:
    event_id: EventID
    user_id: UserID
    answer: Answer
    answered_at: datetime
    seq: int  # tie-breaker for equal timestamps: the order answers were accepted
    source: Source
    source_event_id: MatrixEventID | None
    room_id: RoomID | None
    display_name: str = ""
    department: str = ""  # the unit's path as people see it ("Департамент финансов / Отдел налогов")
    job_title: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class Invitee:
    """A person the organiser named: their answer counts in the one tally like anyone's (Rule 1); being
    invited only adds that they are expected to answer (``required``) and may be nudged."""

    event_id: EventID
    user_id: UserID
    required: bool
    display_name: str
    invited_at: datetime
    nudged_at: datetime | None = None  # the last nudge (by command or automatic): the rate limit's clock


@dataclass(frozen=True, slots=True)
class Checkin:
    """``user_id`` was there: marked by themselves (``by`` is them) or by the organiser."""

    event_id: EventID
    user_id: UserID
    at: datetime
    by: UserID
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Attendance:
    """The answers to one event split by Rule 2."""

    confirmed: tuple[Rsvp, ...]
    waitlist: tuple[Rsvp, ...]
    maybe: tuple[Rsvp, ...]
    not_going: tuple[Rsvp, ...]


def order(answers: Sequence[Rsvp]) -> list[Rsvp]:
    return sorted(answers, key=lambda r: (r.answered_at, r.seq))


def attendance(capacity: int | None, answers: Sequence[Rsvp]) -> Attendance:
    ordered = order(answers)
    going = [r for r in ordered if r.answer is Answer.GOING]
    cut = len(going) if capacity is None else capacity
    return Attendance(
        confirmed=tuple(going[:cut]),
        waitlist=tuple(going[cut:]),
        maybe=tuple(r for r in ordered if r.answer is Answer.MAYBE),
        not_going=tuple(r for r in ordered if r.answer is Answer.NOT_GOING),
    )


def new_event_id(taken: set[str] | frozenset[str], rand: secrets.SystemRandom | None = None) -> EventID:
    r = rand or secrets.SystemRandom()
    for _ in range(1000):
        candidate = "".join(r.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
        if candidate not in taken:
            return EventID(candidate)
    raise RuntimeError("could not find a free event id")  # 31^5 ≈ 28 million ids; unreachable in practice


def normalise_id(text: str) -> EventID:
    return EventID(text.strip().strip("#").lower().translate(_HOMOGLYPHS))


# --- effects: what the transport must do, as data -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A message in plain text and HTML; the HTML has every user-provided string escaped."""

    body: str
    html: str


@dataclass(frozen=True, slots=True)
class Reply:
    room_id: RoomID
    in_reply_to: MatrixEventID | None
    text: Text


@dataclass(frozen=True, slots=True)
class RoomNotice:
    room_id: RoomID
    text: Text


@dataclass(frozen=True, slots=True)
class DirectMessage:
    user_id: UserID
    text: Text
    # The answer to something the person just did (a poll click refused or waitlisted): sent as urgently as
    # a reply in the room, not with the background traffic of reminders and notices.
    answer: bool = False


@dataclass(frozen=True, slots=True)
class Announce:
    """Post the poll for ``event_id`` in ``room_id`` and remember the poll's Matrix event id."""

    event_id: EventID
    room_id: RoomID
    text: Text
    question: str
    answers: tuple[tuple[Answer, str], ...]


@dataclass(frozen=True, slots=True)
class Invitation:
    """A direct message about ``event_id`` to ``user_id`` with one-tap answers: the bot reacts to its own
    message with the answer reactions, so a tap adds the person's; their reactions there count like the
    room's (the message is recorded as an anchor of the event)."""

    event_id: EventID
    user_id: UserID
    text: Text


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    mimetype: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Upload:
    room_id: RoomID
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True, slots=True)
class DirectUpload:
    user_id: UserID
    text: Text
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True, slots=True)
class EndPoll:
    """Close the poll of a cancelled event so clients stop offering the buttons."""

    event_id: EventID
    room_id: RoomID
    text: str
    # The poll to end, when the room is no longer the event's (its record is gone by the time this is sent).
    poll: MatrixEventID | None = None


@dataclass(frozen=True, slots=True)
class UpdateTally:
    """Edit the announcement of ``event_id`` in ``room_id`` in place (``m.replace``) to show the attendance
    across all the event's rooms. The text is rendered when it is sent, from the state then: a burst of
    answers costs one edit, and a late edit never shows an older count than an earlier one."""

    event_id: EventID
    room_id: RoomID


Effect = (
    Reply | RoomNotice | DirectMessage | Announce | Upload | DirectUpload | EndPoll | UpdateTally | Invitation
)
