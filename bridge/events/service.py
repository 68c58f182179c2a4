"""The bot's application layer: decoded Matrix input in, effects out, state written through the store.

Decisions are made by the pure modules (``commands``, ``rsvp``, ``reminders``, ``render``, ``export``); this
module only loads what they need, stores what they decided and hands the effects back to the transport. Every
handler writes its state changes *and* the "processed" mark of the Matrix event in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, assert_never
from zoneinfo import ZoneInfo

from bridge.events import export, render
from bridge.events.clock import Clock
from bridge.events.commands import (
    CancelEvent,
    Command,
    CreateEvent,
    EditEvent,
    ExportEvent,
    Help,
    ListEvents,
    ParseError,
    RsvpCommand,
    ShowEvent,
    Who,
    parse_command,
    validate,
)
from bridge.events.model import (
    Announce,
    Answer,
    Attachment,
    DirectMessage,
    DirectUpload,
    Effect,
    EndPoll,
    Event,
    EventID,
    Lang,
    MatrixEventID,
    Reply,
    RoomID,
    RoomNotice,
    Source,
    Text,
    UpdateTally,
    Upload,
    UserID,
    attendance,
    new_event_id,
    t,
)
from bridge.events.outbox import encode
from bridge.events.poll import PollSpec, Vote, counted, tally
from bridge.events.reminders import DEFAULT_OFFSETS, Due, due, next_due, release, schedule
from bridge.events.rsvp import Accepted, Refused, RsvpRequest, decide, recompute_after_edit, withdraw
from bridge.events.store import (
    DeleteAnswer,
    DeleteVote,
    DropQueuedReminders,
    MarkProcessed,
    MarkReminder,
    PutAnswer,
    PutAudience,
    PutEvent,
    PutOutbox,
    PutVote,
    SetAnchor,
    SetPoll,
    Store,
    Write,
    reminder_outbox_prefix,
)
from bridge.events.units import Found, Unit, is_here, match_unit

log = logging.getLogger(__name__)

# How far ahead of its due moment a burst of reminders may be released (reminders Rule 5).
REMINDER_AHEAD = timedelta(seconds=30)

POLL_ANSWER_IDS: dict[str, Answer] = {
    "going": Answer.GOING,
    "maybe": Answer.MAYBE,
    "not_going": Answer.NOT_GOING,
}
BOT_POLL = PollSpec(frozenset(POLL_ANSWER_IDS), max_selections=1)


@dataclass(frozen=True, slots=True)
class Settings:
    tz: ZoneInfo
    moderator_level: int = 50
    reminder_offsets: tuple[timedelta, ...] = DEFAULT_OFFSETS
    remind_maybe: bool = False
    uid_domain: str = "civmatrix.local"


@dataclass(frozen=True, slots=True)
class Person:
    display_name: str
    department: str  # the unit's path as people see it, never its internal key
    job_title: str
    phone: str = ""


class Directory(Protocol):
    """What the service needs to know about Matrix; the transport implements it."""

    async def power_level(self, room: RoomID, user: UserID) -> int: ...

    async def person(self, user: UserID, room: RoomID) -> Person: ...

    async def units(self) -> Sequence[Unit]:
        """Every unit the bot can see in the space tree, with the path people see."""
        ...

    async def room_unit(self, room: RoomID) -> str | None:
        """The key of the unit whose room ``room`` is (its marker), if any."""
        ...

    async def unit_rooms(self, unit: str, *, subunits: bool = True) -> list[RoomID]:
        """The joined rooms of unit ``unit`` (a key): all its shards, and those of its sub-units."""
        ...


class PeopleSearch(Protocol):
    """The directory search index, as ``!who`` needs it; the transport implements it over the snapshot."""

    async def find(self, term: str, limit: int) -> tuple[Sequence[render.FoundPerson], bool]:
        """The best ``limit`` people for ``term``, and whether more matched."""
        ...


WHO_LIMIT = 8


def _t(lang: Lang, ru: str, en: str) -> Text:
    return render.plain(t(lang, ru, en))


class EventService:
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

    @property
    def tz(self) -> ZoneInfo:
        return self.settings.tz

    async def _is_moderator(self, room: RoomID, user: UserID) -> bool:
        return await self.directory.power_level(room, user) >= self.settings.moderator_level

    async def _done(
        self, mid: MatrixEventID, room: RoomID, writes: Sequence[Write] = (), effects: Sequence[Effect] = ()
    ) -> None:
        """Commit the state change, the effects to send and the "processed" mark in one transaction."""
        now = self.clock.now()
        outbox = [PutOutbox(f"{mid}#{i}", now, encode(e)) for i, e in enumerate(effects)]
        await self.store.write([*writes, *outbox, MarkProcessed(mid, room, now)])

    # --- messages -------------------------------------------------------------------------------------------

    async def handle_message(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, body: str
    ) -> list[Effect]:
        """Handle one text message; returns no effects for messages that are not bot commands."""
        cmd = parse_command(body, self.clock.now(), self.tz)
        if cmd is None:
            return []

        def reply(text: Text) -> Reply:
            return Reply(room, mid, text)

        if isinstance(cmd, ParseError):
            effects: list[Effect] = [reply(render.plain(cmd.message))]
            await self._done(mid, room, (), effects)
            return effects
        effects, writes = await self._dispatch(cmd, room, sender, mid, reply)
        await self._done(mid, room, writes, effects)
        return effects

    async def _dispatch(
        self, cmd: Command, room: RoomID, sender: UserID, mid: MatrixEventID, reply: _ReplyFn
    ) -> tuple[list[Effect], list[Write]]:
        match cmd:
            case Help(lang, unknown):
                return [reply(render.help_text(lang, unknown))], []
            case Who(lang, term):
                if self.people is None:
                    return [reply(render.who_not_configured(lang))], []
                found, more = await self.people.find(term, WHO_LIMIT)
                return [reply(render.who_reply(lang, term, found, more))], []
            case ListEvents(lang):
                events = await self.store.upcoming_in_room(room, self.clock.now())
                answers = await self.store.answers_for([e.id for e in events])
                going = {e.id: len(attendance(e.capacity, answers[e.id]).confirmed) for e in events}
                return [reply(render.event_list(events, going, self.tz, lang))], []
            case CreateEvent():
                return await self._create(cmd, room, sender, reply)
            case EditEvent():
                return await self._edit(cmd, room, sender, reply)
            case CancelEvent():
                return await self._cancel(cmd, room, sender, reply)
            case ShowEvent(lang, eid) | ExportEvent(lang, eid):
                ev, err = await self._resolve(eid, room, lang)
                if ev is None:
                    return [reply(err)], []
                return await self._show_or_export(cmd, ev, room, sender, reply)
            case RsvpCommand(lang, eid, answer):
                ev, err = await self._resolve(eid, room, lang)
                if ev is None:
                    return [reply(err)], []
                return await self._rsvp(ev, room, sender, mid, answer, Source.COMMAND, lang, reply)
            case _:
                assert_never(cmd)

    async def _resolve(self, eid: EventID | None, room: RoomID, lang: Lang) -> tuple[Event | None, Text]:
        if eid is not None:
            ev = await self.store.get_event(eid)
            if ev is None:
                return None, _t(lang, f"Нет события с ID {eid}. Список: !событие список", f"No event {eid}. "
                                "See !event list")  # fmt: skip
            return ev, render.plain("")
        upcoming = await self.store.upcoming_in_room(room, self.clock.now())
        if len(upcoming) == 1:
            return upcoming[0], render.plain("")
        if not upcoming:
            return None, _t(lang, "Здесь нет предстоящих событий.", "There are no upcoming events here.")
        ids = ", ".join(e.id for e in upcoming)
        return None, _t(lang, f"Укажите ID события: {ids}", f"Which event? Give its ID: {ids}")

    async def _create(
        self, cmd: CreateEvent, room: RoomID, sender: UserID, reply: _ReplyFn
    ) -> tuple[list[Effect], list[Write]]:
        lang = cmd.lang
        if not await self._is_moderator(room, sender):
            return [reply(self._not_allowed(lang))], []
        target = await self._audience(cmd.audience_unit, room, lang)
        if isinstance(target, Text):
            return [reply(target)], []
        unit, found = target
        rooms: list[RoomID] = []
        skipped: list[RoomID] = []
        for r in found:
            # Announcing pings everyone in a room, so the organiser must be allowed to do that in each.
            if r == room or await self._is_moderator(r, sender):
                rooms.append(r)
            else:
                skipped.append(r)
        if not rooms:
            return [reply(self._not_allowed(lang))], []
        now = self.clock.now()
        ev = Event(
            id=new_event_id(await self.store.event_ids()),
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
            created_at=now,
            timezone=self.tz.key,
        )
        writes: list[Write] = [PutEvent(ev), *(PutAudience(ev.id, r) for r in rooms)]
        effects: list[Effect] = [self._announce(ev, r) for r in rooms]
        if room not in rooms or skipped or len(rooms) > 1:
            where = render.plural(lang, len(rooms), render.ROOMS_WORD[lang])
            whom = f" «{unit.label}»" if unit is not None and lang == "ru" else ""
            whom_en = f" “{unit.label}”" if unit is not None else ""
            note = _t(
                lang,
                f"Событие {ev.id} создано и объявлено подразделению{whom} в {where}."
                + (f" Пропущены (вы там не модератор): {len(skipped)}." if skipped else ""),
                f"Event {ev.id} created and announced to{whom_en or ' the unit'} in {where}."
                + (f" Skipped (you are not a moderator there): {len(skipped)}." if skipped else ""),
            )
            effects.append(reply(note))
        log.info("event %s created by %s in %s for %d rooms", ev.id, sender, room, len(rooms))
        return effects, writes

    async def _audience(
        self, query: str | None, room: RoomID, lang: Lang
    ) -> tuple[Unit | None, list[RoomID]] | Text:
        """The unit an event is announced to and its rooms, or the refusal to show (units Rules 1-4).

        Without ``audience`` the event goes to every shard of the current room's unit (one list for the
        people who were split over several rooms only by the room size limit), not to its sub-units.
        """
        here = await self.directory.room_unit(room)
        units = list(await self.directory.units())
        by_key = {u.key: u for u in units}
        if query is None:
            if here is None:
                return None, [room]
            shards = await self.directory.unit_rooms(here, subunits=False)
            return by_key.get(here), sorted({room, *shards})
        if is_here(query):
            if here is None:
                return _t(
                    lang,
                    "Эта комната не относится к подразделению. Укажите его название: подразделение "
                    '"Название". Ничего не создано.',
                    'This room belongs to no unit. Give the unit\'s name: audience "Name". '
                    "Nothing was created.",
                )
            unit = by_key.get(here, Unit(here, ()))
        else:
            match = match_unit(query, units)
            if not isinstance(match, Found):
                return render.unit_refusal(lang, match, by_key.get(here) if here else None)
            unit = match.unit
        found = await self.directory.unit_rooms(unit.key)
        if not found:
            return _t(
                lang,
                f"В подразделении «{unit.label}» нет комнат, где есть бот. Ничего не создано.",
                f"Unit “{unit.label}” has no rooms that the bot is in. Nothing was created.",
            )
        return unit, found

    def _announce(self, ev: Event, room: RoomID) -> Announce:
        labels = render.ANSWER_LABELS[ev.lang]
        return Announce(
            ev.id,
            room,
            render.announcement(ev, self.tz),
            render.poll_question(ev, self.tz),
            tuple((a, labels[a]) for a in Answer),
        )

    def _not_allowed(self, lang: Lang) -> Text:
        lvl = self.settings.moderator_level
        return _t(
            lang,
            f"Создавать, менять и отменять события могут модераторы комнаты (уровень ≥ {lvl}) и организатор.",
            f"Only room moderators (power level ≥ {lvl}) and the organiser can create, edit or cancel "
            "events.",
        )

    async def _may_manage(self, ev: Event, room: RoomID, sender: UserID) -> bool:
        if sender == ev.organiser:
            return True
        return await self._is_moderator(ev.origin_room, sender) or (
            room != ev.origin_room
            and await self._is_moderator(room, sender)
            and room in await self._rooms(ev)
        )

    async def _rooms(self, ev: Event) -> list[RoomID]:
        return [r for r, _ in await self.store.audience(ev.id)]

    async def _edit(
        self, cmd: EditEvent, room: RoomID, sender: UserID, reply: _ReplyFn
    ) -> tuple[list[Effect], list[Write]]:
        lang = cmd.lang
        ev = await self.store.get_event(cmd.event_id)
        if ev is None:
            return [reply(_t(lang, f"Нет события с ID {cmd.event_id}.", f"No event {cmd.event_id}."))], []
        if not await self._may_manage(ev, room, sender):
            return [reply(self._not_allowed(lang))], []
        if ev.cancelled:
            return [reply(_t(lang, "Событие отменено, менять нечего.", "The event is cancelled."))], []
        new = replace(
            ev,
            title=cmd.title if cmd.title is not None else ev.title,
            starts_at=cmd.starts_at or ev.starts_at,
            place=cmd.place if cmd.place is not None else ev.place,
            capacity=cmd.capacity if cmd.capacity is not None else ev.capacity,
            deadline=cmd.deadline or ev.deadline,
            sequence=ev.sequence + 1,
        )
        now = self.clock.now()
        err = validate(
            lang,
            now,
            title=new.title,
            starts_at=new.starts_at if cmd.starts_at else None,
            capacity=new.capacity,
            deadline=cmd.deadline,
        )
        if err is None and new.deadline is not None and new.deadline > new.starts_at:
            err = ParseError(
                lang, t(lang, "Срок записи позже начала события.", "The deadline is after the start.")
            )
        answers = await self.store.answers(ev.id)
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
        if err is not None:
            return [reply(render.plain(err.message))], []
        notice = render.changed(ev, new, self.tz)
        effects: list[Effect] = [RoomNotice(r, notice) for r in await self._rooms(ev)]
        effects += [DirectMessage(a.user_id, notice) for a in answers if a.user_id != sender]
        effects += [
            DirectMessage(p.user_id, render.promoted_dm(new, self.tz))
            for p in recompute_after_edit(ev, new, answers)
        ]
        if room not in await self._rooms(ev):
            effects.append(reply(notice))
        writes: list[Write] = [PutEvent(new)]
        if new.starts_at != ev.starts_at:
            # Reminders queued for the old time would name the wrong time; the new time re-arms them.
            writes.append(DropQueuedReminders(ev.id))
        return effects, writes

    async def _cancel(
        self, cmd: CancelEvent, room: RoomID, sender: UserID, reply: _ReplyFn
    ) -> tuple[list[Effect], list[Write]]:
        lang = cmd.lang
        ev = await self.store.get_event(cmd.event_id)
        if ev is None:
            return [reply(_t(lang, f"Нет события с ID {cmd.event_id}.", f"No event {cmd.event_id}."))], []
        if not await self._may_manage(ev, room, sender):
            return [reply(self._not_allowed(lang))], []
        if ev.cancelled:
            return [reply(_t(lang, "Событие уже отменено.", "The event is already cancelled."))], []
        new = replace(ev, cancelled=True, sequence=ev.sequence + 1)
        notice = render.cancelled(new, self.tz)
        audience = await self.store.audience(ev.id)
        effects: list[Effect] = [RoomNotice(r, notice) for r, _ in audience]
        effects += [EndPoll(ev.id, r, notice.body) for r, poll in audience if poll is not None]
        effects += [
            DirectMessage(a.user_id, notice) for a in await self.store.answers(ev.id) if a.user_id != sender
        ]
        if room not in [r for r, _ in audience]:
            effects.append(reply(notice))
        return effects, [PutEvent(new), DropQueuedReminders(ev.id)]

    async def _show_or_export(
        self, cmd: ShowEvent | ExportEvent, ev: Event, room: RoomID, sender: UserID, reply: _ReplyFn
    ) -> tuple[list[Effect], list[Write]]:
        lang = cmd.lang
        answers = await self.store.answers(ev.id)
        privileged = sender == ev.organiser or await self._is_moderator(room, sender)
        if isinstance(cmd, ShowEvent):
            text = render.show(
                ev,
                attendance(ev.capacity, answers),
                self.tz,
                lang,
                names_visible=privileged or not ev.private,
            )
            return [reply(text)], []
        if ev.private and not privileged:
            refusal = _t(
                lang,
                "Список закрыт: выгрузка только для организатора и модераторов.",
                "The list is private: only the organiser and moderators can export it.",
            )
            return [reply(refusal)], []
        files = (
            Attachment(f"{ev.id}-attendance.csv", "text/csv", export.attendance_csv(ev, answers, self.tz)),
            Attachment(
                f"{ev.id}.ics",
                "text/calendar",
                export.event_ics(ev, self.clock.now(), self.settings.uid_domain),
            ),
        )
        if ev.private:
            # A file posted in a room is visible to all its members; a private list goes to the requester.
            sent = _t(lang, "Отправил выгрузку вам в личные сообщения.", "I sent the export to you directly.")
            caption = _t(lang, f"Выгрузка {ev.id}", f"Export of {ev.id}")
            return [reply(sent), DirectUpload(sender, caption, files)], []
        count = render.plural(lang, len(answers), render.ANSWERS_WORD[lang])
        return [
            reply(_t(lang, f"Выгрузка {ev.id}: {count}.", f"Export of {ev.id}: {count}.")),
            Upload(room, files),
        ], []

    # --- RSVP from any source -------------------------------------------------------------------------------

    async def _rsvp(
        self,
        ev: Event,
        room: RoomID,
        sender: UserID,
        mid: MatrixEventID,
        answer: Answer,
        source: Source,
        lang: Lang,
        reply: _ReplyFn | None,
    ) -> tuple[list[Effect], list[Write]]:
        answers = await self.store.answers(ev.id)
        person = await self.directory.person(sender, room)
        req = RsvpRequest(
            sender,
            answer,
            source,
            mid,
            room,
            person.display_name,
            person.department,
            person.job_title,
            person.phone,
        )
        outcome = decide(ev, answers, req, self.clock.now(), await self.store.next_seq(ev.id))
        effects: list[Effect] = []
        if not isinstance(outcome, Accepted):
            text = render.refused(ev, lang, outcome.reason, self.tz)
            effects.append(reply(text) if reply else DirectMessage(sender, text, answer=True))
            return effects, []
        nxt = schedule(ev.starts_at, outcome.rsvp.answered_at, self.settings.reminder_offsets)
        text = render.rsvp_reply(
            ev,
            lang,
            outcome.status,
            outcome.waitlist_position,
            outcome.unchanged,
            self.tz,
            reminder=nxt[0] if nxt and outcome.status == "confirmed" else None,
            poll_vote=None if source is Source.POLL else await self._poll_vote(ev, sender),
            counted=answer,
        )
        if reply is not None:
            effects.append(reply(text))
        elif outcome.status == "waitlisted" and not outcome.unchanged:
            # A poll click shows nothing about the waitlist; the person must learn they are not confirmed.
            effects.append(DirectMessage(sender, text, answer=True))
        effects += [DirectMessage(p.user_id, render.promoted_dm(ev, self.tz)) for p in outcome.promoted]
        writes: list[Write] = [] if outcome.unchanged else [PutAnswer(outcome.rsvp)]
        if not outcome.unchanged:
            effects += await self._tallies(ev)
        log.info("rsvp %s %s %s via %s (%s)", ev.id, sender, answer.value, source.value, outcome.status)
        return effects, writes

    async def _tallies(self, ev: Event) -> list[Effect]:
        """Every announcement of ``ev`` edited to the attendance across all its rooms (the transport
        renders it when it sends, so a burst of answers becomes one edit)."""
        return [UpdateTally(ev.id, r) for r in await self._rooms(ev)]

    async def tally_text(self, eid: EventID) -> Text | None:
        """The announcement of ``eid`` with the attendance now; ``None`` if the event is gone."""
        ev = await self.store.get_event(eid)
        if ev is None:
            return None
        att = attendance(ev.capacity, await self.store.answers(eid))
        return render.announcement(ev, self.tz, att, len(await self._rooms(ev)))

    async def _poll_vote(self, ev: Event, user: UserID) -> Answer | None:
        """What ``user``'s vote in a poll of ``ev`` shows, if they have one (the latest over its polls)."""
        best: tuple[int, str] | None = None
        shown: Answer | None = None
        for _, poll in await self.store.audience(ev.id):
            if poll is None:
                continue
            votes = await self.store.votes(poll, user)
            counted_now = tally(BOT_POLL, votes).get(user)
            latest = max(votes, key=lambda v: (v.ts, v.event_id), default=None)
            if counted_now and latest is not None and (best is None or (latest.ts, latest.event_id) > best):
                best, shown = (latest.ts, latest.event_id), POLL_ANSWER_IDS[counted_now[0]]
        return shown

    async def handle_poll_response(
        self,
        room: RoomID,
        sender: UserID,
        mid: MatrixEventID,
        poll_event_id: str,
        answer_ids: Sequence[str],
        ts: int | None = None,
    ) -> list[Effect]:
        """A vote, read by the poll rules (``poll`` Rules 2-6): the person's latest response in this poll
        decides; an empty or spoiled one takes back an answer that came from this poll."""
        eid = await self.store.event_by_poll(poll_event_id)
        ev = None if eid is None else await self.store.get_event(eid)
        if ev is None:
            await self._done(mid, room)
            return []
        stamp = ts if ts is not None else int(self.clock.now().timestamp() * 1000)
        vote = Vote(mid, sender, stamp, tuple(answer_ids))
        record = PutVote(mid, MatrixEventID(poll_event_id), sender, stamp, vote.selections)
        earlier = await self.store.votes(poll_event_id, sender)
        if ev.cancelled or any((v.ts, v.event_id) > (stamp, mid) for v in earlier):
            # The poll was ended with the event, or a later response of this person already decided.
            await self._done(mid, room, [record])
            return []
        effects, writes = await self._apply_vote(ev, room, sender, mid, counted(BOT_POLL, vote.selections))
        await self._done(mid, room, [record, *writes], effects)
        return effects

    async def _apply_vote(
        self, ev: Event, room: RoomID, sender: UserID, vote_id: MatrixEventID, selection: tuple[str, ...]
    ) -> tuple[list[Effect], list[Write]]:
        if selection:
            answer = POLL_ANSWER_IDS[selection[0]]
            return await self._rsvp(ev, room, sender, vote_id, answer, Source.POLL, ev.lang, None)
        current = next((a for a in await self.store.answers(ev.id) if a.user_id == sender), None)
        if current is None or current.source is not Source.POLL:
            return [], []  # an answer given by command or reaction is not the poll's to take back
        return await self._withdraw(ev, sender, "unvoted")

    async def handle_reaction(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, target: str, key: str
    ) -> list[Effect]:
        answer = render.REACTIONS.get(key.strip("\ufe0f"))
        eid = await self.store.event_by_poll(target)
        ev = None if eid is None or answer is None else await self.store.get_event(eid)
        if ev is None or answer is None:
            await self._done(mid, room)
            return []
        effects, writes = await self._rsvp(ev, room, sender, mid, answer, Source.REACTION, ev.lang, None)
        await self._done(mid, room, writes, effects)
        return effects

    async def _withdraw(self, ev: Event, sender: UserID, why: str) -> tuple[list[Effect], list[Write]]:
        outcome = withdraw(ev, await self.store.answers(ev.id), sender, self.clock.now())
        effects: list[Effect] = []
        writes: list[Write] = []
        if isinstance(outcome, Refused):
            refusal = render.refused(ev, ev.lang, outcome.reason, self.tz)
            effects.append(DirectMessage(sender, refusal, answer=True))
        elif outcome is not None:
            writes.append(DeleteAnswer(ev.id, sender))
            effects += [DirectMessage(p.user_id, render.promoted_dm(ev, self.tz)) for p in outcome.promoted]
            effects += await self._tallies(ev)
            log.info("rsvp %s %s withdrawn (%s)", ev.id, sender, why)
        return effects, writes

    async def handle_redaction(
        self, room: RoomID, sender: UserID, mid: MatrixEventID, redacts: str
    ) -> list[Effect]:
        """A removed reaction takes the answer back; a redacted vote gives way to the vote before it (poll
        Rule 5). Either only if it is still the answer on record."""
        rsvp = await self.store.answer_by_source(redacts)
        ev = None if rsvp is None else await self.store.get_event(rsvp.event_id)
        vote = await self.store.vote(redacts)
        writes: list[Write] = [] if vote is None else [DeleteVote(redacts)]
        effects: list[Effect] = []
        mine = rsvp is not None and ev is not None and rsvp.user_id == sender
        if mine and ev is not None and vote is not None:
            rest = [v for v in await self.store.votes(vote[0], sender) if v.event_id != redacts]
            before = max(rest, key=lambda v: (v.ts, v.event_id), default=None)
            selection = tally(BOT_POLL, rest).get(sender, ())
            vote_id = MatrixEventID(before.event_id) if before is not None else MatrixEventID(redacts)
            effects, more = await self._apply_vote(ev, room, sender, vote_id, selection)
            writes += more
        elif (
            rsvp is not None and ev is not None and rsvp.user_id == sender and rsvp.source is Source.REACTION
        ):
            effects, more = await self._withdraw(ev, sender, "reaction removed")
            writes += more
        await self._done(mid, room, writes, effects)
        return effects

    async def poll_posted(self, eid: EventID, room: RoomID, poll_event_id: MatrixEventID) -> None:
        await self.store.write([SetPoll(eid, room, poll_event_id)])

    async def announcement_posted(self, eid: EventID, room: RoomID, message_id: MatrixEventID) -> None:
        await self.store.write([SetAnchor(message_id, eid, room)])

    # --- reminders ------------------------------------------------------------------------------------------

    async def due_reminders(self, ahead: timedelta = timedelta(0)) -> list[Due]:
        now = self.clock.now()
        horizon = now + max(self.settings.reminder_offsets, default=timedelta(0)) + ahead
        events = await self.store.starting_between(now, horizon)
        ids = [e.id for e in events]
        return due(
            events,
            await self.store.answers_for(ids),
            await self.store.audiences_for(ids),
            await self.store.reminders_sent(ids),
            now,
            self.tz,
            self.settings.reminder_offsets,
            self.settings.remind_maybe,
            ahead,
        )

    async def mark_sent(self, item: Due) -> None:
        now = self.clock.now()
        await self.store.write([MarkReminder(k, now) for k in item.marks])

    async def queue_due_reminders(self, rate: float | None = None) -> Queued:
        """Move the reminders due now into the outbox and mark them sent, in one transaction.

        Given the sender's ``rate`` (messages per second), a burst is released early enough to be centred on
        its due moment (``reminders`` Rule 5); without it nothing leaves before it is due.
        """
        ahead = REMINDER_AHEAD if rate else timedelta(0)
        items = await self.due_reminders(ahead)
        later: datetime | None = None
        if rate:
            items, later = release(items, self.clock.now(), rate, ahead)
        if items:
            now = self.clock.now()
            writes: list[Write] = []
            for d in items:
                k = d.marks[-1]
                writes.append(
                    PutOutbox(
                        f"{reminder_outbox_prefix(k.event_id)}{k.slot}:{k.offset_s}:{k.target}",
                        now,
                        encode(d.effect),
                    )
                )
                writes += [MarkReminder(m, now) for m in d.marks]
            await self.store.write(writes)
        return Queued(items, later)

    async def next_reminder_at(self, ahead: timedelta = timedelta(0)) -> datetime | None:
        """When to look again: the first due moment later than ``now + ahead``, minus ``ahead``.

        (Per offset, the first event starting after that moment plus the offset.) Due moments closer than
        ``ahead`` are the business of :meth:`queue_due_reminders`, which says when it releases them.
        """
        after = self.clock.now() + ahead
        candidates: list[Event] = []
        for offset in self.settings.reminder_offsets:
            candidates += await self.store.first_starting_after(after + offset)
        nxt = next_due(candidates, after, self.settings.reminder_offsets)
        return None if nxt is None else nxt - ahead


@dataclass(frozen=True, slots=True)
class Queued:
    items: list[Due]
    next_release: datetime | None  # when a reminder held back for now (Rule 5) is released


class _ReplyFn(Protocol):
    def __call__(self, text: Text, /) -> Reply: ...
