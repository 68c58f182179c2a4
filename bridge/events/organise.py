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
    UpdateTally,
    UserID,
    attendance,
    new_event_id,
    t,
)
from bridge.events.rsvp import recompute_after_edit
from bridge.events.store import (
    DeleteAudience,
    DropAnchors,
    DropQueuedReminders,
    PutAudience,
    PutEvent,
    Write,
)
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
        """Details people see (title, time, place, capacity, deadline) are told to every room of the event and
        everyone who answered or was invited; a new audience only to the rooms it adds or drops; privacy only
        to the organiser."""
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
            private=cmd.private if cmd.private is not None else ev.private,
            sequence=ev.sequence + 1,
        )
        answers = await self.ctx.store.answers(ev.id)
        err = self._edit_refusal(cmd, ev, new, answers)
        if err is not None:
            return [reply(render.plain(err.message))], []
        effects: list[Effect] = []
        writes: list[Write] = []
        if cmd.audience_unit is not None:
            moved = await self._move_audience(cmd.audience_unit, new, room, sender, cmd.lang)
            if isinstance(moved, Text):
                return [reply(moved)], []
            new, effects, writes, summary = moved
            effects.append(reply(summary))
        rooms = await self.ctx.rooms(ev)
        if _seen_details(ev) != _seen_details(new):
            notice = render.changed(ev, new, self.ctx.tz)
            invited = {i.user_id for i in await self.ctx.store.invitees(ev.id)}
            people = sorted(({a.user_id for a in answers} | invited) - {sender})
            effects += [RoomNotice(r, notice) for r in rooms]
            effects += [DirectMessage(u, notice) for u in people]
            effects += [
                DirectMessage(p.user_id, render.promoted_dm(new, self.ctx.tz))
                for p in recompute_after_edit(ev, new, answers)
            ]
            if room not in rooms:
                effects.append(reply(notice))
        if new.private != ev.private:
            effects.append(reply(say(
                cmd.lang,
                "Список имён теперь закрыт: его видят организатор и модераторы." if new.private
                else "Список имён теперь открыт всем.",
                "The list of names is now private to the organiser and moderators." if new.private
                else "The list of names is now open to everyone.",
            )))  # fmt: skip
        writes.append(PutEvent(new))
        if new.starts_at != ev.starts_at:
            # Reminders queued for the old time would name the wrong time; the new time re-arms them.
            writes.append(DropQueuedReminders(ev.id))
        return effects, writes

    async def _move_audience(
        self, query: str, ev: Event, room: RoomID, sender: UserID, lang: Lang
    ) -> tuple[Event, list[Effect], list[Write], Text] | Text:
        """``ev`` announced to a new audience: the rooms it adds get the announcement, the rooms it drops a
        notice and the end of their poll; answers already given stay counted."""
        unit: Unit | None = None
        target: list[RoomID] = []
        if query.strip().lower() in NO_AUDIENCE:
            if not await self.ctx.store.invitees(ev.id):
                return say(lang, "Без подразделения событие только для приглашённых, а их нет.",
                           "With no audience the event is for invitees only, and it has none.")  # fmt: skip
        else:
            resolved = await self.audience.resolve(query, room, lang)
            if isinstance(resolved, Text):
                return resolved
            unit, found = resolved
            target, _ = await self.audience.announcing(found, room, sender)
            if not target:
                return self.audience.not_allowed(lang)
        new = replace(ev, audience_unit=unit.key if unit is not None else None)
        old = dict(await self.ctx.store.audience(ev.id))
        added = [r for r in target if r not in old]
        dropped = [r for r in old if r not in target]
        gone = render.withdrawn(new)
        effects: list[Effect] = [self.announce(new, r) for r in added]
        effects += [RoomNotice(r, gone) for r in dropped]
        effects += [EndPoll(ev.id, r, gone.body, poll) for r in dropped if (poll := old[r]) is not None]
        effects += [UpdateTally(ev.id, r) for r in target if r in old]
        writes: list[Write] = [PutAudience(ev.id, r) for r in added]
        writes += [w for r in dropped for w in (DeleteAudience(ev.id, r), DropAnchors(ev.id, r))]
        summary = say(
            lang,
            f"Аудитория {ev.id}: объявлено в новых комнатах — {len(added)}, снято — {len(dropped)}.",
            f"Audience of {ev.id}: announced in {len(added)} new rooms, withdrawn from {len(dropped)}.",
        )
        return new, effects, writes, summary

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
        told = {a.user_id for a in await self.ctx.store.answers(ev.id)}
        told |= {i.user_id for i in await self.ctx.store.invitees(ev.id)}  # invited, answered or not
        effects += [DirectMessage(u, notice) for u in sorted(told - {sender})]
        if room not in [r for r, _ in audience]:
            effects.append(reply(notice))
        return effects, [PutEvent(new), DropQueuedReminders(ev.id)]


def _seen_details(ev: Event) -> tuple[object, ...]:
    """What people were told about an event and are told again when it changes."""
    return (ev.title, ev.starts_at, ev.place, ev.capacity, ev.deadline)


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
