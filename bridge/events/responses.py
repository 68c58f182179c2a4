"""What people do to an announcement rather than write: poll votes, reactions, and their redactions.

A vote is read by the poll rules (``poll`` Rules 2-6) and becomes an answer through
:mod:`bridge.events.answers`; the transport reports here where each announcement and poll landed, so later
responses find their event.
"""

from __future__ import annotations

from bridge.events import render
from bridge.events.answers import BOT_POLL, POLL_ANSWER_IDS, Answers
from bridge.events.context import Context, Handled
from bridge.events.model import Effect, Event, EventID, MatrixEventID, RoomID, Source, UserID
from bridge.events.poll import Vote, counted, tally
from bridge.events.store import DeleteVote, PutVote, SetAnchor, SetPoll, Write


class Responses:
    def __init__(self, ctx: Context, answers: Answers) -> None:
        self.ctx = ctx
        self.answers = answers

    async def poll_response(self, room: RoomID, poll_event_id: str, vote: Vote) -> list[Effect]:
        """``vote`` in the poll ``poll_event_id``: the person's latest response in this poll decides; an empty
        or spoiled one takes back an answer that came from this poll."""
        store = self.ctx.store
        mid, sender = MatrixEventID(vote.event_id), UserID(vote.sender)
        eid = await store.event_by_poll(poll_event_id)
        ev = None if eid is None else await store.get_event(eid)
        if ev is None:
            await self.ctx.commit(mid, room)
            return []
        record = PutVote(mid, MatrixEventID(poll_event_id), sender, vote.ts, vote.selections)
        earlier = await store.votes(poll_event_id, sender)
        if ev.cancelled or any((v.ts, v.event_id) > (vote.ts, mid) for v in earlier):
            # The poll was ended with the event, or a later response of this person already decided.
            await self.ctx.commit(mid, room, [record])
            return []
        effects, writes = await self._apply_vote(ev, room, sender, mid, counted(BOT_POLL, vote.selections))
        await self.ctx.commit(mid, room, [record, *writes], effects)
        return effects

    async def _apply_vote(
        self, ev: Event, room: RoomID, sender: UserID, vote_id: MatrixEventID, selection: tuple[str, ...]
    ) -> Handled:
        if selection:
            answer = POLL_ANSWER_IDS[selection[0]]
            return await self.answers.rsvp(ev, room, sender, vote_id, answer, Source.POLL, ev.lang, None)
        current = next((a for a in await self.ctx.store.answers(ev.id) if a.user_id == sender), None)
        if current is None or current.source is not Source.POLL:
            return [], []  # an answer given by command or reaction is not the poll's to take back
        return await self.answers.withdraw(ev, sender, "unvoted")

    async def reaction(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, target: str, key: str
    ) -> list[Effect]:
        answer = render.REACTIONS.get(key.strip("\ufe0f"))
        eid = await self.ctx.store.event_by_poll(target)
        ev = None if eid is None or answer is None else await self.ctx.store.get_event(eid)
        if ev is None or answer is None:
            await self.ctx.commit(mid, room)
            return []
        effects, writes = await self.answers.rsvp(
            ev, room, sender, mid, answer, Source.REACTION, ev.lang, None
        )
        await self.ctx.commit(mid, room, writes, effects)
        return effects

    async def redaction(self, room: RoomID, sender: UserID, mid: MatrixEventID, redacts: str) -> list[Effect]:
        """A removed reaction takes the answer back; a redacted vote gives way to the vote before it (poll
        Rule 5). Either only if it is still the answer on record."""
        store = self.ctx.store
        rsvp = await store.answer_by_source(redacts)
        ev = None if rsvp is None else await store.get_event(rsvp.event_id)
        vote = await store.vote(redacts)
        writes: list[Write] = [] if vote is None else [DeleteVote(redacts)]
        effects: list[Effect] = []
        mine = rsvp is not None and ev is not None and rsvp.user_id == sender
        if mine and ev is not None and vote is not None:
            rest = [v for v in await store.votes(vote[0], sender) if v.event_id != redacts]
            before = max(rest, key=lambda v: (v.ts, v.event_id), default=None)
            selection = tally(BOT_POLL, rest).get(sender, ())
            vote_id = MatrixEventID(before.event_id) if before is not None else MatrixEventID(redacts)
            effects, more = await self._apply_vote(ev, room, sender, vote_id, selection)
            writes += more
        elif mine and ev is not None and rsvp is not None and rsvp.source is Source.REACTION:
            effects, more = await self.answers.withdraw(ev, sender, "reaction removed")
            writes += more
        await self.ctx.commit(mid, room, writes, effects)
        return effects

    async def poll_posted(self, eid: EventID, room: RoomID, poll_event_id: MatrixEventID) -> None:
        await self.ctx.store.write([SetPoll(eid, room, poll_event_id)])

    async def announcement_posted(self, eid: EventID, room: RoomID, message_id: MatrixEventID) -> None:
        await self.ctx.store.write([SetAnchor(message_id, eid, room)])
