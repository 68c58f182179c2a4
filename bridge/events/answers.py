"""An answer to an event, from whichever source (command, reaction, poll vote): decided by the ``rsvp``
rules, stored, confirmed to the person, and counted on every announcement of the event."""

from __future__ import annotations

import logging

from bridge.events import render
from bridge.events.context import Context, Handled, ReplyFn
from bridge.events.model import (
    Answer,
    DirectMessage,
    Effect,
    Event,
    EventID,
    Lang,
    MatrixEventID,
    RoomID,
    Source,
    Text,
    UpdateTally,
    UserID,
    attendance,
)
from bridge.events.poll import PollSpec, tally
from bridge.events.reminders import schedule
from bridge.events.rsvp import Accepted, Refused, RsvpRequest, decide, withdraw
from bridge.events.store import DeleteAnswer, PutAnswer, Write

log = logging.getLogger(__name__)

POLL_ANSWER_IDS: dict[str, Answer] = {
    "going": Answer.GOING,
    "maybe": Answer.MAYBE,
    "not_going": Answer.NOT_GOING,
}
BOT_POLL = PollSpec(frozenset(POLL_ANSWER_IDS), max_selections=1)


class Answers:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def rsvp(
        self,
        ev: Event,
        room: RoomID,
        sender: UserID,
        mid: MatrixEventID,
        answer: Answer,
        source: Source,
        lang: Lang,
        reply: ReplyFn | None,
    ) -> Handled:
        """``sender``'s answer to ``ev``; without ``reply`` (a click, not a command) the person hears back
        only what they must know, directly."""
        store, tz = self.ctx.store, self.ctx.tz
        answers = await store.answers(ev.id)
        person = await self.ctx.directory.person(sender, room)
        req = RsvpRequest(
            sender, answer, source, mid, room, person.display_name, person.department, person.job_title,
            person.phone,
        )  # fmt: skip
        outcome = decide(ev, answers, req, self.ctx.clock.now(), await store.next_seq(ev.id))
        effects: list[Effect] = []
        if not isinstance(outcome, Accepted):
            text = render.refused(ev, lang, outcome.reason, tz)
            effects.append(reply(text) if reply else DirectMessage(sender, text, answer=True))
            return effects, []
        nxt = schedule(ev.starts_at, outcome.rsvp.answered_at, self.ctx.settings.reminder_offsets)
        text = render.rsvp_reply(
            ev,
            lang,
            outcome.status,
            outcome.waitlist_position,
            outcome.unchanged,
            tz,
            reminder=nxt[0] if nxt and outcome.status == "confirmed" else None,
            poll_vote=None if source is Source.POLL else await self._poll_vote(ev, sender),
            counted=answer,
        )
        if reply is not None:
            effects.append(reply(text))
        elif outcome.status == "waitlisted" and not outcome.unchanged:
            # A poll click shows nothing about the waitlist; the person must learn they are not confirmed.
            effects.append(DirectMessage(sender, text, answer=True))
        effects += [DirectMessage(p.user_id, render.promoted_dm(ev, tz)) for p in outcome.promoted]
        writes: list[Write] = [] if outcome.unchanged else [PutAnswer(outcome.rsvp)]
        if not outcome.unchanged:
            effects += await self.tallies(ev)
        log.info("rsvp %s %s %s via %s (%s)", ev.id, sender, answer.value, source.value, outcome.status)
        return effects, writes

    async def withdraw(self, ev: Event, sender: UserID, why: str) -> Handled:
        """``sender``'s answer taken back (a removed reaction, an emptied vote)."""
        outcome = withdraw(ev, await self.ctx.store.answers(ev.id), sender, self.ctx.clock.now())
        effects: list[Effect] = []
        writes: list[Write] = []
        if isinstance(outcome, Refused):
            refusal = render.refused(ev, ev.lang, outcome.reason, self.ctx.tz)
            effects.append(DirectMessage(sender, refusal, answer=True))
        elif outcome is not None:
            writes.append(DeleteAnswer(ev.id, sender))
            effects += [
                DirectMessage(p.user_id, render.promoted_dm(ev, self.ctx.tz)) for p in outcome.promoted
            ]
            effects += await self.tallies(ev)
            log.info("rsvp %s %s withdrawn (%s)", ev.id, sender, why)
        return effects, writes

    async def tallies(self, ev: Event) -> list[Effect]:
        """Every announcement of ``ev`` edited to the attendance across all its rooms (the transport
        renders it when it sends, so a burst of answers becomes one edit)."""
        return [UpdateTally(ev.id, r) for r in await self.ctx.rooms(ev)]

    async def tally_text(self, eid: EventID) -> Text | None:
        """The announcement of ``eid`` with the attendance now; ``None`` if the event is gone."""
        ev = await self.ctx.store.get_event(eid)
        if ev is None:
            return None
        att = attendance(ev.capacity, await self.ctx.store.answers(eid))
        return render.announcement(ev, self.ctx.tz, att, len(await self.ctx.rooms(ev)))

    async def _poll_vote(self, ev: Event, user: UserID) -> Answer | None:
        """What ``user``'s vote in a poll of ``ev`` shows, if they have one (the latest over its polls)."""
        best: tuple[int, str] | None = None
        shown: Answer | None = None
        for _, poll in await self.ctx.store.audience(ev.id):
            if poll is None:
                continue
            votes = await self.ctx.store.votes(poll, user)
            counted_now = tally(BOT_POLL, votes).get(user)
            latest = max(votes, key=lambda v: (v.ts, v.event_id), default=None)
            if counted_now and latest is not None and (best is None or (latest.ts, latest.event_id) > best):
                best, shown = (latest.ts, latest.event_id), POLL_ANSWER_IDS[counted_now[0]]
        return shown
