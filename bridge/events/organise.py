"""The organiser's commands: create an event and announce it, edit it, cancel it."""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.events import invitations, render
from bridge.events.audience import Audience
from bridge.events.commands import CancelEvent, CreateEvent, EditEvent, ParseError, validate
from bridge.events.context import Context, Handled, ReplyFn, say
from bridge.events.invitations import Invitations
from bridge.events.model import (
    Announce,
    Answer,
    DirectMessage,
    Effect,
    EndPoll,
    Event,
    EventID,
    Lang,
    RoomID,
    RoomNotice,
    Rsvp,
    Text,
    UserID,
    attendance,
    new_event_id,
    t,
)
from bridge.events.rsvp import recompute_after_edit
from bridge.events.store import DropQueuedReminders, PutAudience, PutEvent, Write
from bridge.events.units import Unit

log = logging.getLogger(__name__)


# ``audience none`` / ``подразделение нет``: announced in no room, only to the people invited.
NO_AUDIENCE = frozenset({"none", "nobody", "нет", "никому", "никто"})


class Organiser:
    def __init__(self, ctx: Context, audience: Audience, invitations: Invitations) -> None:
        self.ctx = ctx
        self.audience = audience
        self.invitations = invitations

    async def create(self, cmd: CreateEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        lang = cmd.lang
        if not await self.ctx.is_moderator(room, sender):
            return [reply(self.audience.not_allowed(lang))], []
        required = await self.invitations.resolve([*cmd.invite, *cmd.required], room, sender, lang)
        optional = await self.invitations.resolve(cmd.optional, room, sender, lang)
        if isinstance(required, Text) or isinstance(optional, Text):
            return [reply(required if isinstance(required, Text) else optional)], []  # type: ignore[arg-type]
        invitation_only = (cmd.audience_unit or "").strip().lower() in NO_AUDIENCE
        if invitation_only and not (required or optional):
            refusal = say(
                lang,
                "Событие без подразделения — только для приглашённых: укажите, кого пригласить.",
                "An event with no audience is for invitees only: say whom to invite.",
            )
            return [reply(refusal)], []
        unit: Unit | None = None
        rooms: list[RoomID] = []
        skipped: list[RoomID] = []
        if not invitation_only:
            target = await self.audience.resolve(cmd.audience_unit, room, lang)
            if isinstance(target, Text):
                return [reply(target)], []
            unit, found = target
            rooms, skipped = await self.audience.announcing(found, room, sender)
            if not rooms:
                return [reply(self.audience.not_allowed(lang))], []
        ev = Event(
            id=new_event_id(await self.ctx.store.event_ids()),
            title=cmd.title,
            starts_at=cmd.starts_at,
            place=cmd.place,
            capacity=cmd.capacity,
            deadline=cmd.deadline,
            organiser=sender,
            origin_room=room,
            audience_unit=unit.key if unit is not None else None,
            private=cmd.private,
            lang=lang,
            created_at=self.ctx.clock.now(),
            timezone=self.ctx.tz.key,
        )
        writes: list[Write] = [PutEvent(ev), *(PutAudience(ev.id, r) for r in rooms)]
        effects: list[Effect] = [self.announce(ev, r) for r in rooms]
        invited, invite_writes, new = await self.invitations.invite(ev, required, optional, sender)
        effects += invited
        writes += invite_writes
        if invitation_only:
            effects.append(reply(invitations.invited_reply(lang, ev, new, new)))
        elif room not in rooms or skipped or len(rooms) > 1 or new:
            effects.append(reply(_announced_to(ev.id, unit, len(rooms), len(skipped), lang, new)))
        log.info("event %s created by %s in %s for %d rooms", ev.id, sender, room, len(rooms))
        return effects, writes

    def announce(self, ev: Event, room: RoomID) -> Announce:
        labels = render.ANSWER_LABELS[ev.lang]
        return Announce(
            ev.id,
            room,
            render.announcement(ev, self.ctx.tz),
            render.poll_question(ev, self.ctx.tz),
            tuple((a, labels[a]) for a in Answer),
        )

    async def _managed(self, cmd: EditEvent | CancelEvent, room: RoomID, sender: UserID) -> Event | Text:
        return await self.audience.managed(
            cmd.event_id, room, sender, cmd.lang, cancel=isinstance(cmd, CancelEvent)
        )

    async def edit(self, cmd: EditEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        ev = await self._managed(cmd, room, sender)
        if isinstance(ev, Text):
            return [reply(ev)], []
        new = replace(
            ev,
            title=cmd.title if cmd.title is not None else ev.title,
            starts_at=cmd.starts_at or ev.starts_at,
            place=cmd.place if cmd.place is not None else ev.place,
            capacity=cmd.capacity if cmd.capacity is not None else ev.capacity,
            deadline=cmd.deadline or ev.deadline,
            sequence=ev.sequence + 1,
        )
        answers = await self.ctx.store.answers(ev.id)
        err = self._edit_refusal(cmd, ev, new, answers)
        if err is not None:
            return [reply(render.plain(err.message))], []
        notice = render.changed(ev, new, self.ctx.tz)
        rooms = await self.ctx.rooms(ev)
        effects: list[Effect] = [RoomNotice(r, notice) for r in rooms]
        effects += [DirectMessage(a.user_id, notice) for a in answers if a.user_id != sender]
        effects += [
            DirectMessage(p.user_id, render.promoted_dm(new, self.ctx.tz))
            for p in recompute_after_edit(ev, new, answers)
        ]
        if room not in rooms:
            effects.append(reply(notice))
        writes: list[Write] = [PutEvent(new)]
        if new.starts_at != ev.starts_at:
            # Reminders queued for the old time would name the wrong time; the new time re-arms them.
            writes.append(DropQueuedReminders(ev.id))
        return effects, writes

    def _edit_refusal(self, cmd: EditEvent, ev: Event, new: Event, answers: list[Rsvp]) -> ParseError | None:
        """Why ``ev`` edited into ``new`` cannot stand, if it cannot: the fields checked as for a new event,
        against each other, and against the people going now."""
        lang = cmd.lang
        err = validate(
            lang,
            self.ctx.clock.now(),
            title=new.title,
            starts_at=new.starts_at if cmd.starts_at else None,
            capacity=new.capacity,
            deadline=cmd.deadline,
        )
        if err is None and new.deadline is not None and new.deadline > new.starts_at:
            err = ParseError(
                lang, t(lang, "Срок записи позже начала события.", "The deadline is after the start.")
            )
        going = len(attendance(ev.capacity, answers).confirmed)
        if err is None and new.capacity is not None and new.capacity < going:
            err = ParseError(
                lang,
                t(
                    lang,
                    f"Уже идут {going} человек — вместимость не может быть меньше.",
                    f"{going} people are already going; the capacity cannot be lower.",
                ),
            )
        return err

    async def cancel(self, cmd: CancelEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        ev = await self._managed(cmd, room, sender)
        if isinstance(ev, Text):
            return [reply(ev)], []
        new = replace(ev, cancelled=True, sequence=ev.sequence + 1)
        notice = render.cancelled(new, self.ctx.tz)
        audience = await self.ctx.store.audience(ev.id)
        effects: list[Effect] = [RoomNotice(r, notice) for r, _ in audience]
        effects += [EndPoll(ev.id, r, notice.body) for r, poll in audience if poll is not None]
        effects += [
            DirectMessage(a.user_id, notice)
            for a in await self.ctx.store.answers(ev.id)
            if a.user_id != sender
        ]
        if room not in [r for r, _ in audience]:
            effects.append(reply(notice))
        return effects, [PutEvent(new), DropQueuedReminders(ev.id)]


def _announced_to(
    eid: EventID, unit: Unit | None, rooms: int, skipped: int, lang: Lang, invited: int
) -> Text:
    """What the organiser is told when the announcement went beyond the room they wrote in, or people were
    invited."""
    where = render.plural(lang, rooms, render.ROOMS_WORD[lang])
    people = render.plural(lang, invited, render.PEOPLE_WORD[lang])
    also = t(lang, f" Приглашения отправлены: {people}.", f" Invitations sent: {people}.") if invited else ""
    whom = f" «{unit.label}»" if unit is not None and lang == "ru" else ""
    whom_en = f" “{unit.label}”" if unit is not None else ""
    return say(
        lang,
        f"Событие {eid} создано и объявлено подразделению{whom} в {where}."
        + (f" Пропущены (вы там не модератор): {skipped}." if skipped else "")
        + also,
        f"Event {eid} created and announced to{whom_en or ' the unit'} in {where}."
        + (f" Skipped (you are not a moderator there): {skipped}." if skipped else "")
        + also,
    )
