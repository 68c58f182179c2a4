"""The bot's application layer: decoded Matrix input in, effects out, state written through the store.

Decisions are made by the pure modules (``commands``, ``rsvp``, ``reminders``, ``render``, ``export``); the
parts below only load what those need, store what they decided and hand the effects back to the transport.
Every handler writes its state changes *and* the "processed" mark of the Matrix event in one transaction.

:class:`EventService` is the one door the runtime uses; behind it each seam of the domain has its part:

- ``organise``: the organiser's commands (create and announce, edit, cancel);
- ``queries``: the commands that only read (list, show, export, ``!who``);
- ``answers``: an answer from any source, decided, stored and counted;
- ``responses``: poll votes, reactions and their redactions;
- ``audience``: who an event is for, and who may act on it;
- ``invitations``: named attendees: invitations, who has not answered, nudges, check-in, a person's events;
- ``reminder_queue``: reminders moved into the outbox when due;
- ``context``: what they share (store, clock, settings, the ports to Matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import assert_never

from bridge.events import render
from bridge.events.answers import Answers
from bridge.events.audience import Audience
from bridge.events.clock import Clock
from bridge.events.commands import (
    CancelEvent,
    CheckIn,
    CloseList,
    Command,
    CreateEvent,
    EditEvent,
    ExportEvent,
    Help,
    InviteEvent,
    ListEvents,
    MyEvents,
    NudgeEvent,
    ParseError,
    RsvpCommand,
    ShowEvent,
    UninviteEvent,
    Who,
    parse_command,
)
from bridge.events.context import Context, Directory, Handled, PeopleSearch, Person, ReplyFn, Settings
from bridge.events.invitations import Invitations
from bridge.events.model import Effect, EventID, MatrixEventID, Reply, RoomID, Source, Text, UserID
from bridge.events.organise import Organiser
from bridge.events.poll import Vote
from bridge.events.queries import Queries
from bridge.events.reminder_queue import REMINDER_AHEAD, Queued, ReminderQueue
from bridge.events.reminders import Due
from bridge.events.responses import Responses
from bridge.events.store import Store

# The names the runtime and the tests import from here, wherever they are defined.
__all__ = [
    "REMINDER_AHEAD",
    "Directory",
    "EventService",
    "PeopleSearch",
    "Person",
    "Queued",
    "Settings",
]


class EventService:
    """Routes each input to the part that owns it; its attributes are what the parts share, and the parts."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        directory: Directory,
        people: PeopleSearch | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.directory = directory
        self.people = people  # None: the config has no search: section
        self.ctx = Context(store, clock, settings, directory, people)
        self.audience = Audience(self.ctx)
        self.invitations = Invitations(self.ctx, self.audience)
        self.organiser = Organiser(self.ctx, self.audience, self.invitations)
        self.queries = Queries(self.ctx, self.invitations)
        self.answers = Answers(self.ctx)
        self.responses = Responses(self.ctx, self.answers)
        self.reminders = ReminderQueue(self.ctx, self.invitations)

    # --- messages -------------------------------------------------------------------------------------------

    async def handle_message(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, body: str
    ) -> list[Effect]:
        """Handle one text message; returns no effects for messages that are not bot commands."""
        cmd = parse_command(body, self.clock.now(), self.settings.tz)
        if cmd is None:
            return []

        def reply(text: Text) -> Reply:
            return Reply(room, mid, text)

        if isinstance(cmd, ParseError):
            effects: list[Effect] = [reply(render.plain(cmd.message))]
            await self.ctx.commit(mid, room, (), effects)
            return effects
        effects, writes = await self._dispatch(cmd, room, sender, mid, reply)
        await self.ctx.commit(mid, room, writes, effects)
        return effects

    async def _dispatch(
        self, cmd: Command, room: RoomID, sender: UserID, mid: MatrixEventID, reply: ReplyFn
    ) -> Handled:
        match cmd:
            case Help(lang, unknown):
                return [reply(render.help_text(lang, unknown))], []
            case Who(lang, term):
                return [reply(await self.queries.who(term, lang))], []
            case ListEvents(lang):
                return [reply(await self.queries.upcoming(room, lang))], []
            case CreateEvent():
                return await self.organiser.create(cmd, room, sender, reply)
            case EditEvent():
                return await self.organiser.edit(cmd, room, sender, reply)
            case CancelEvent():
                return await self.organiser.cancel(cmd, room, sender, reply)
            case InviteEvent():
                return await self.invitations.invite_command(cmd, room, sender, reply)
            case UninviteEvent():
                return await self.invitations.uninvite(cmd, room, sender, reply)
            case NudgeEvent():
                return await self.invitations.nudge(cmd, room, sender, reply)
            case CloseList():
                return await self.invitations.close(cmd, room, sender, reply)
            case MyEvents():
                return await self.invitations.mine(cmd, room, sender, reply)
            case CheckIn(lang, eid):
                found = (
                    await self.queries.resolve(eid, room, lang)
                    if eid is not None
                    else await self.invitations.checkin_target(room, sender, lang)
                )
                if isinstance(found, Text):
                    return [reply(found)], []
                return await self.invitations.checkin(cmd, found, room, sender, reply)
            case ShowEvent(lang, eid) | ExportEvent(lang, eid) | RsvpCommand(lang, eid):
                ev = await self.queries.resolve(eid, room, lang)
                if isinstance(ev, Text):
                    return [reply(ev)], []
                if isinstance(cmd, ShowEvent):
                    return [reply(await self.queries.show(ev, room, sender, lang))], []
                if isinstance(cmd, ExportEvent):
                    return await self.queries.export(ev, room, sender, lang, reply)
                return await self.answers.rsvp(ev, room, sender, mid, cmd.answer, Source.COMMAND, lang, reply)
            case _:
                assert_never(cmd)

    # --- poll votes, reactions, redactions ------------------------------------------------------------------

    async def handle_poll_response(
        self,
        room: RoomID,
        sender: UserID,
        mid: MatrixEventID,
        poll_event_id: str,
        answer_ids: Sequence[str],
        ts: int | None = None,
    ) -> list[Effect]:
        """A vote, read by the poll rules (``poll`` Rules 2-6); ``ts`` is its origin_server_ts (ms)."""
        stamp = ts if ts is not None else int(self.clock.now().timestamp() * 1000)
        return await self.responses.poll_response(
            room, poll_event_id, Vote(mid, sender, stamp, tuple(answer_ids))
        )

    async def handle_reaction(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, target: str, key: str
    ) -> list[Effect]:
        return await self.responses.reaction(room, sender, mid, target, key)

    async def handle_redaction(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, redacts: str
    ) -> list[Effect]:
        return await self.responses.redaction(room, sender, mid, redacts)

    async def poll_posted(self, eid: EventID, room: RoomID, poll_event_id: MatrixEventID) -> None:
        await self.responses.poll_posted(eid, room, poll_event_id)

    async def announcement_posted(self, eid: EventID, room: RoomID, message_id: MatrixEventID) -> None:
        await self.responses.announcement_posted(eid, room, message_id)

    async def tally_text(self, eid: EventID) -> Text | None:
        """The announcement of ``eid`` with the attendance now; ``None`` if the event is gone."""
        return await self.answers.tally_text(eid)

    # --- reminders ------------------------------------------------------------------------------------------

    async def due_reminders(self, ahead: timedelta = timedelta(0)) -> list[Due]:
        return await self.reminders.due(ahead)

    async def mark_sent(self, item: Due) -> None:
        await self.reminders.mark_sent(item)

    async def queue_due_reminders(self, rate: float | None = None) -> Queued:
        """Move the reminders due now into the outbox (see :meth:`ReminderQueue.queue`)."""
        return await self.reminders.queue(rate)

    async def next_reminder_at(self, ahead: timedelta = timedelta(0)) -> datetime | None:
        """When to look again (see :meth:`ReminderQueue.next_at`)."""
        return await self.reminders.next_at(ahead)
