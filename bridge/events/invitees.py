"""Named attendees, pure: who a name means, who is still to answer, whom a nudge reaches, when check-in is
open and what the attendance report says. The service part (``invitations``) loads and stores around these.

Rule 1. An invitee's answer is an answer like any other: it counts once in the one tally (``model`` Rule 1);
        the invitation adds only that a *required* invitee without an answer is listed and may be nudged.
Rule 2. A nudge reaches a required invitee without an answer (a "not going" is an answer), at most once per
        ``every`` per person and event, whether by command or automatically.
Rule 3. The automatic nudge goes at ``before`` ahead of the deadline (or the start, without one) to those not
        nudged since that moment; before the moment and after the deadline it sends nothing.
Rule 4. Check-in is open from ``before`` ahead of the start to ``after`` past it, until the organiser closes
        the list; the first mark of a person stands.
Rule 5. Registered = confirmed "going" (not the waitlist); attended = checked in (a walk-in counts);
        no-show = registered and not checked in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bridge.events.model import Attendance, Checkin, Event, Invitee, Rsvp, UserID
from bridge.events.render import FoundPerson
from bridge.search.index import fold

NUDGE_EVERY = timedelta(hours=12)
NUDGE_BEFORE = timedelta(hours=24)
CHECKIN_BEFORE = timedelta(minutes=30)
CHECKIN_AFTER = timedelta(hours=3)
CANDIDATES = 5  # the people shown for a name that matches several


@dataclass(frozen=True, slots=True)
class Resolved:
    user_id: UserID
    display_name: str


@dataclass(frozen=True, slots=True)
class Candidates:
    """``item`` matches several people: the first few, to pick one by a longer name or the login."""

    item: str
    people: tuple[FoundPerson, ...]
    more: bool


def is_user_id(item: str) -> bool:
    return item.startswith("@") and ":" in item and " " not in item


def localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


def pick(item: str, hits: Sequence[FoundPerson], more: bool) -> Resolved | Candidates | None:
    """The person ``item`` names among the search ``hits``: the one whose login or Matrix id it is, else the
    only hit, else the only one whose name has every word of ``item`` whole; otherwise several hits are
    candidates, and no hit is ``None`` (perhaps a unit)."""
    key = item.strip().lower().lstrip("@")
    exact = [h for h in hits if key in (h.user_id.lower().lstrip("@"), localpart(h.user_id).lower())]
    if len(exact) == 1:
        return Resolved(UserID(exact[0].user_id), exact[0].display_name)
    if len(hits) == 1 and not more:
        return Resolved(UserID(hits[0].user_id), hits[0].display_name)
    # The search matches by word prefix ("Иванов Иван" finds "Иванова Мария" too): a name typed as whole
    # words of exactly one person's name is that person, if the search showed everyone it matched.
    words = set(fold(item).split())
    whole = [h for h in hits if words <= set(fold(h.display_name).split())]
    if len(whole) == 1 and not more:
        return Resolved(UserID(whole[0].user_id), whole[0].display_name)
    if hits:
        return Candidates(item, tuple(hits[:CANDIDATES]), more or len(hits) > CANDIDATES)
    return None


def answered(answers: Sequence[Rsvp]) -> set[UserID]:
    return {a.user_id for a in answers}


def unanswered(invitees: Sequence[Invitee], answers: Sequence[Rsvp]) -> list[Invitee]:
    """Required invitees without an answer, in invitation order (Rule 2)."""
    done = answered(answers)
    return [i for i in invitees if i.required and i.user_id not in done]


def nudge_targets(
    invitees: Sequence[Invitee], answers: Sequence[Rsvp], now: datetime, every: timedelta = NUDGE_EVERY
) -> tuple[list[Invitee], list[Invitee]]:
    """Whom ``!event nudge`` reaches now, and who is left out because they were nudged less than ``every``
    ago (Rule 2)."""
    due: list[Invitee] = []
    recent: list[Invitee] = []
    for i in unanswered(invitees, answers):
        (recent if i.nudged_at is not None and now - i.nudged_at < every else due).append(i)
    return due, recent


def auto_nudge_at(ev: Event, before: timedelta) -> datetime:
    return (ev.deadline or ev.starts_at) - before


def auto_nudge_targets(
    ev: Event, invitees: Sequence[Invitee], answers: Sequence[Rsvp], now: datetime, before: timedelta
) -> list[Invitee]:
    """Whom the automatic nudge reaches now (Rule 3)."""
    moment = auto_nudge_at(ev, before)
    if ev.cancelled or now < moment or now >= (ev.deadline or ev.starts_at):
        return []
    return [i for i in unanswered(invitees, answers) if i.nudged_at is None or i.nudged_at < moment]


CheckinRefusal = Literal["cancelled", "closed", "early", "late"]


def checkin_refusal(
    ev: Event, now: datetime, before: timedelta = CHECKIN_BEFORE, after: timedelta = CHECKIN_AFTER
) -> CheckinRefusal | None:
    """Why a check-in cannot be taken now, if it cannot (Rule 4)."""
    if ev.cancelled:
        return "cancelled"
    if ev.checkin_closed:
        return "closed"
    if now < ev.starts_at - before:
        return "early"
    if now > ev.starts_at + after:
        return "late"
    return None


@dataclass(frozen=True, slots=True)
class Presence:
    """Rule 5, each list in the order of the attendance or the check-ins."""

    registered: tuple[UserID, ...]
    attended: tuple[UserID, ...]
    no_show: tuple[UserID, ...]


def presence(att: Attendance, checkins: Sequence[Checkin]) -> Presence:
    came = [c.user_id for c in checkins]
    registered = tuple(r.user_id for r in att.confirmed)
    return Presence(registered, tuple(came), tuple(u for u in registered if u not in set(came)))
