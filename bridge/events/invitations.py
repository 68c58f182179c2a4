"""Named attendees: invitations by name, unit or Matrix id, who has not answered, nudges, check-in, and a
person's own events across rooms. The decisions are in :mod:`bridge.events.invitees`; this part resolves
names through the directory search and the unit tree, stores, and hands back the messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace

from bridge.events import render
from bridge.events.audience import Audience
from bridge.events.commands import CheckIn, CloseList, InviteEvent, MyEvents, NudgeEvent, UninviteEvent
from bridge.events.context import Context, Handled, ReplyFn, say
from bridge.events.invitees import (
    Candidates,
    Resolved,
    auto_nudge_at,
    auto_nudge_targets,
    checkin_refusal,
    is_user_id,
    localpart,
    nudge_targets,
    pick,
    presence,
    unanswered,
)
from bridge.events.model import (
    Checkin,
    DirectMessage,
    Effect,
    Event,
    Invitation,
    Invitee,
    Lang,
    RoomID,
    Text,
    UserID,
    attendance,
)
from bridge.events.outbox import encode
from bridge.events.store import (
    DeleteInvitee,
    MarkNudged,
    PutCheckin,
    PutEvent,
    PutInvitee,
    PutOutbox,
    Write,
    reminder_outbox_prefix,
)
from bridge.events.units import Ambiguous, Found, Unit, fold, match_unit, parts

log = logging.getLogger(__name__)

SEARCH_LIMIT = 8
_LOGIN = re.compile(r"^[a-z0-9._=\-/]+$")


class Invitations:
    def __init__(self, ctx: Context, audience: Audience) -> None:
        self.ctx = ctx
        self.audience = audience

    # --- who a name means -----------------------------------------------------------------------------------

    async def resolve(
        self, items: Sequence[str], room: RoomID, sender: UserID, lang: Lang
    ) -> list[Resolved] | Text:
        """Everyone ``items`` name, or (if any item names nobody or several people) what to tell the
        organiser: every such item at once, with the candidates for the ambiguous ones."""
        out: dict[UserID, Resolved] = {}
        problems_body: list[str] = []
        problems_html: list[str] = []
        for item in items:
            found = await self._one(item, room, sender, lang)
            if isinstance(found, Text):
                problems_body.append(found.body)
                problems_html.append(found.html)
            else:
                out.update({r.user_id: r for r in found})
        if problems_body:
            tail = t_nothing(lang)
            return Text("\n".join([*problems_body, tail]), "<br>".join([*problems_html, render.esc(tail)]))
        return list(out.values())

    async def _one(self, item: str, room: RoomID, sender: UserID, lang: Lang) -> list[Resolved] | Text:
        domain = sender.split(":", 1)[1] if ":" in sender else ""
        people = self.ctx.people
        if is_user_id(item):
            user = UserID(item)
            if people is not None:
                hits, _ = await people.find(localpart(item), SEARCH_LIMIT)
                named = next((h for h in hits if h.user_id == user), None)
                if named is not None:
                    return [Resolved(user, named.display_name)]
            return [Resolved(user, (await self.ctx.directory.person(user, room)).display_name)]
        units = await self.ctx.directory.units()
        # A unit's whole name or path means the unit, though the search would also find people by their
        # department ("Отдел ЖКХ"); a name with more words ("Иванов Отдел ЖКХ") is a person.
        typed = parts(item)
        exact = [u for u in units if typed and tuple(fold(p) for p in u.path)[-len(typed) :] == typed]
        if len(exact) == 1:
            return await self._unit_members(exact[0], item, lang)
        if exact and isinstance(match := match_unit(item, units), Ambiguous):
            return render.unit_refusal(lang, match, None)  # "Отдел ЖКХ" of which Управа: their paths
        if people is not None:
            hits, more = await people.find(item, SEARCH_LIMIT)
            picked = pick(item, hits, more)
            if isinstance(picked, Resolved):
                return [picked]
            if isinstance(picked, Candidates):
                body, html = render.candidates(lang, item, picked.people, picked.more)
                return Text(body, html)
        elif _LOGIN.match(item.lower()) and domain:
            # Without the search index a login is the only name the bot can check (by its profile).
            user = UserID(f"@{item.lower()}:{domain}")
            person = await self.ctx.directory.person(user, room)
            if person.display_name:
                return [Resolved(user, person.display_name)]
        match = match_unit(item, units)
        if isinstance(match, Found):
            return await self._unit_members(match.unit, item, lang)
        return say(
            lang,
            f"Не нашёл «{item}» ни среди сотрудников, ни среди подразделений.",
            f"Found nobody and no unit for “{item}”.",
        )

    async def _unit_members(self, unit: Unit, item: str, lang: Lang) -> list[Resolved] | Text:
        """Everyone in the rooms of ``unit`` and its sub-units, as the server lists them now."""
        members: dict[UserID, str] = {}
        for r in await self.ctx.directory.unit_rooms(unit.key):
            members.update(dict(await self.ctx.directory.members(r)))
        if not members:
            return say(
                lang,
                f"В подразделении «{unit.label}» нет комнат с участниками, где есть бот.",
                f"Unit “{unit.label}” has no rooms with members that the bot is in.",
            )
        return [Resolved(u, n) for u, n in sorted(members.items())]

    # --- inviting -------------------------------------------------------------------------------------------

    async def invite(
        self, ev: Event, required: Sequence[Resolved], optional: Sequence[Resolved], sender: UserID
    ) -> tuple[list[Effect], list[Write], int]:
        """Store the invitations and queue a direct message to each person newly invited; a person named as
        both is required. Returns the effects, the writes and how many were new."""
        now = self.ctx.clock.now()
        known = {i.user_id: i for i in await self.ctx.store.invitees(ev.id)}
        wanted: dict[UserID, tuple[Resolved, bool]] = {r.user_id: (r, False) for r in optional}
        wanted.update({r.user_id: (r, True) for r in required})
        effects: list[Effect] = []
        writes: list[Write] = []
        new = 0
        for user, (person, need) in wanted.items():
            before = known.get(user)
            if before is not None and before.required == need:
                continue
            writes.append(PutInvitee(Invitee(ev.id, user, need, person.display_name, now)))
            if before is None:
                new += 1
                effects.append(Invitation(ev.id, user, render.invitation(ev, self.ctx.tz, required=need)))
            else:  # required became optional or back: only this person is told
                effects.append(DirectMessage(user, render.invitation_changed(ev, required=need)))
        log.info("event %s: %d invited by %s (%d new)", ev.id, len(wanted), sender, new)
        return effects, writes, new

    async def invite_command(self, cmd: InviteEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        lang = cmd.lang
        ev = await self.audience.managed(cmd.event_id, room, sender, lang)
        if isinstance(ev, Text):
            return [reply(ev)], []
        req = await self.resolve([*cmd.invite, *cmd.required], room, sender, lang)
        opt = await self.resolve(cmd.optional, room, sender, lang)
        for refusal in (req, opt):
            if isinstance(refusal, Text):
                return [reply(refusal)], []
        assert not isinstance(req, Text) and not isinstance(opt, Text)
        effects, writes, new = await self.invite(ev, req, opt, sender)
        everyone = len({r.user_id for r in [*req, *opt]})
        effects.append(reply(invited_reply(lang, ev, new, everyone)))
        return effects, writes

    async def uninvite(self, cmd: UninviteEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        """Withdraw invitations: each person named who was invited is told, and nobody else."""
        lang = cmd.lang
        ev = await self.audience.managed(cmd.event_id, room, sender, lang)
        if isinstance(ev, Text):
            return [reply(ev)], []
        people = await self.resolve(cmd.people, room, sender, lang)
        if isinstance(people, Text):
            return [reply(people)], []
        invited = {i.user_id for i in await self.ctx.store.invitees(ev.id)}
        gone = [p for p in people if p.user_id in invited]
        effects: list[Effect] = [DirectMessage(p.user_id, render.uninvited(ev)) for p in gone]
        writes: list[Write] = [DeleteInvitee(ev.id, p.user_id) for p in gone]
        body, html = render.pills([(p.user_id, p.display_name) for p in gone])
        head = t_lang(lang, f"Приглашение на {ev.id} отозвано: ", f"Invitation to {ev.id} withdrawn: ")
        text = Text(head + (body or "—"), render.esc(head) + (html or "—"))
        return [*effects, reply(text)], writes

    # --- who has not answered, nudges ----------------------------------------------------------------------

    async def roster(self, ev: Event) -> render.Roster:
        store = self.ctx.store
        answers, invitees, checkins = (
            await store.answers(ev.id), await store.invitees(ev.id), await store.checkins(ev.id)
        )  # fmt: skip
        names = {a.user_id: a.display_name for a in answers}
        names.update({c.user_id: c.display_name for c in checkins})
        names.update({i.user_id: i.display_name for i in invitees})
        p = presence(attendance(ev.capacity, answers), checkins)
        return render.Roster(
            unanswered=tuple((i.user_id, i.display_name) for i in unanswered(invitees, answers)),
            attended=tuple((u, names.get(u, "")) for u in p.attended),
            no_show=tuple((u, names.get(u, "")) for u in p.no_show),
            checkin=bool(checkins) or ev.checkin_closed,
        )

    async def nudge(self, cmd: NudgeEvent, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        lang = cmd.lang
        ev = await self.audience.managed(cmd.event_id, room, sender, lang)
        if isinstance(ev, Text):
            return [reply(ev)], []
        now = self.ctx.clock.now()
        if now >= ev.starts_at or (ev.deadline is not None and now >= ev.deadline):
            return [reply(say(lang, "Ответы больше не принимаются: напоминать поздно.",
                              "Answers are closed: too late to nudge."))], []  # fmt: skip
        due, recent = nudge_targets(
            await self.ctx.store.invitees(ev.id), await self.ctx.store.answers(ev.id), now,
            self.ctx.settings.nudge_every,
        )  # fmt: skip
        text = render.invitation(ev, self.ctx.tz, required=True, nudge=True)
        effects: list[Effect] = [Invitation(ev.id, i.user_id, text) for i in due]
        writes: list[Write] = [MarkNudged(ev.id, i.user_id, now) for i in due]
        effects.append(reply(nudged_reply(lang, [(i.user_id, i.display_name) for i in due], len(recent))))
        log.info("event %s: %d nudged by %s, %d nudged recently", ev.id, len(due), sender, len(recent))
        return effects, writes

    async def queue_auto_nudges(self) -> int:
        """Put the automatic nudges due now into the outbox with their marks, in one transaction (Rule 3)."""
        before = self.ctx.settings.nudge_before
        if before is None:
            return 0
        now = self.ctx.clock.now()
        writes: list[Write] = []
        for ev in await self.ctx.store.invited_events(now):
            targets = auto_nudge_targets(
                ev, await self.ctx.store.invitees(ev.id), await self.ctx.store.answers(ev.id), now, before
            )
            moment = int(auto_nudge_at(ev, before).timestamp())
            text = render.invitation(ev, self.ctx.tz, required=True, nudge=True)
            for i in targets:
                # The id names the nudge's moment: queued twice (a crash before the mark), sent once.
                # Under the event's reminder prefix: a cancellation or a new time drops it unsent.
                oid = f"{reminder_outbox_prefix(ev.id)}nudge:{moment}:{i.user_id}"
                writes += [PutOutbox(oid, now, encode(Invitation(ev.id, i.user_id, text))),
                           MarkNudged(ev.id, i.user_id, now)]  # fmt: skip
        if writes:
            await self.ctx.store.write(writes)
        return len(writes) // 2

    async def next_auto_nudge(self) -> Event | None:
        """The invited event whose automatic nudge comes next after now, if any."""
        before = self.ctx.settings.nudge_before
        if before is None:
            return None
        now = self.ctx.clock.now()
        later = [e for e in await self.ctx.store.invited_events(now) if auto_nudge_at(e, before) > now]
        return min(later, key=lambda e: auto_nudge_at(e, before), default=None)

    # --- check-in -------------------------------------------------------------------------------------------

    async def checkin_target(self, room: RoomID, sender: UserID, lang: Lang) -> Event | Text:
        """The event a ``!here`` without an ID means: the only one of this room (or, in a direct chat, of
        this person) whose check-in is open now."""
        s = self.ctx.settings
        now = self.ctx.clock.now()
        since = now - s.checkin_after
        candidates = await self.ctx.store.upcoming_in_room(room, since)
        if not candidates:
            candidates = await self.ctx.store.upcoming_for(sender, since)
        open_now = [
            e for e in candidates if checkin_refusal(e, now, s.checkin_before, s.checkin_after) is None
        ]
        if len(open_now) == 1:
            return open_now[0]
        if not open_now:
            return say(lang, "Сейчас отметиться не на что: укажите ID события.",
                       "No check-in is open here now: give the event ID.")  # fmt: skip
        ids = ", ".join(e.id for e in open_now)
        return say(lang, f"Укажите ID события: {ids}", f"Which event? Give its ID: {ids}")

    async def checkin(self, cmd: CheckIn, ev: Event, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        lang = cmd.lang
        now = self.ctx.clock.now()
        s = self.ctx.settings
        why = checkin_refusal(ev, now, s.checkin_before, s.checkin_after)
        marking_others = bool(cmd.people)
        if marking_others:
            if not await self.audience.may_manage(ev, room, sender):
                return [reply(self.audience.not_allowed(lang))], []
            if why == "late":
                why = None  # the organiser completes the list after the event, until they close it
        if why is not None:
            return [reply(checkin_refused(ev, lang, why))], []
        if marking_others:
            people = await self.resolve(cmd.people, room, sender, lang)
            if isinstance(people, Text):
                return [reply(people)], []
        else:
            people = [Resolved(sender, (await self.ctx.directory.person(sender, room)).display_name)]
        already = {c.user_id for c in await self.ctx.store.checkins(ev.id)}
        writes: list[Write] = [
            PutCheckin(Checkin(ev.id, p.user_id, now, sender, p.display_name))
            for p in people
            if p.user_id not in already
        ]
        if not marking_others:
            text = say(lang, f"Отметил: вы на «{ev.title}».", f"Checked in: you are at “{ev.title}”.")
        else:
            body, html = render.pills([(p.user_id, p.display_name) for p in people])
            head = t_lang(lang, f"Отметил присутствие ({ev.id}): ", f"Marked present ({ev.id}): ")
            text = Text(head + body, render.esc(head) + html)
        return [reply(text)], writes

    async def close(self, cmd: CloseList, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        lang = cmd.lang
        ev = await self.audience.managed(cmd.event_id, room, sender, lang)
        if isinstance(ev, Text):
            return [reply(ev)], []
        roster = await self.roster(replace(ev, checkin_closed=True))
        registered = len(attendance(ev.capacity, await self.ctx.store.answers(ev.id)).confirmed)
        text = say(
            lang,
            f"Список {ev.id} закрыт. Записались: {registered}, пришли: {len(roster.attended)}, "
            f"не пришли: {len(roster.no_show)}. Выгрузка: !событие экспорт {ev.id}",
            f"List {ev.id} is closed. Registered: {registered}, attended: {len(roster.attended)}, "
            f"no-show: {len(roster.no_show)}. Export: !event export {ev.id}",
        )
        return [reply(text)], [PutEvent(replace(ev, checkin_closed=True))]

    # --- a person's own events ------------------------------------------------------------------------------

    async def mine(self, cmd: MyEvents, room: RoomID, sender: UserID, reply: ReplyFn) -> Handled:
        store = self.ctx.store
        events = await store.upcoming_for(sender, self.ctx.clock.now())
        answers = await store.answers_for([e.id for e in events])
        rows = []
        for ev in events:
            mine = next((a.answer for a in answers[ev.id] if a.user_id == sender), None)
            inv = next((i for i in await store.invitees(ev.id) if i.user_id == sender), None)
            rows.append((ev, mine, None if inv is None else inv.required))
        text = render.my_events(rows, self.ctx.tz, cmd.lang)
        if await store.dm_room(sender) == room:
            return [reply(text)], []
        # In a shared room the list would show everyone where this person is invited: it goes to them.
        sent = say(cmd.lang, "Отправил список вам в личные сообщения.", "I sent the list to you directly.")
        return [reply(sent), DirectMessage(sender, text, answer=True)], []


def t_lang(lang: Lang, ru: str, en: str) -> str:
    return ru if lang == "ru" else en


def t_nothing(lang: Lang) -> str:
    return t_lang(lang, "Уточните имя (или укажите логин). Никто не приглашён.",
                  "Give a longer name (or the login). Nobody was invited.")  # fmt: skip


def invited_reply(lang: Lang, ev: Event, new: int, everyone: int) -> Text:
    n = render.plural(lang, new, render.PEOPLE_WORD[lang])
    return say(
        lang,
        f"Приглашения к {ev.id} отправлены: {n} (всего названо {everyone}). Кто не ответил: "
        f"!событие показать {ev.id}; напомнить им: !событие напомнить {ev.id}",
        f"Invitations to {ev.id} sent: {n} ({everyone} named in all). Who has not answered: "
        f"!event show {ev.id}; nudge them: !event nudge {ev.id}",
    )


def nudged_reply(lang: Lang, people: Sequence[tuple[str, str]], recent: int) -> Text:
    later = t_lang(
        lang, f" Ещё {recent} — напоминали недавно, позже.", f" {recent} more were nudged recently."
    )
    tail = later if recent else ""
    if not people:
        return say(lang, "Напоминать некому: все обязательные ответили." + tail,
                   "Nobody to nudge: every required invitee has answered." + tail)  # fmt: skip
    body, html = render.pills(people)
    head = t_lang(lang, "Напомнил: ", "Nudged: ")
    return Text(head + body + tail, render.esc(head) + html + render.esc(tail))


def checkin_refused(ev: Event, lang: Lang, why: str) -> Text:
    match why:
        case "cancelled":
            return say(lang, "Событие отменено.", "The event is cancelled.")
        case "closed":
            return say(lang, "Организатор уже закрыл список.", "The organiser has closed the list.")
        case "early":
            return say(
                lang,
                f"Отметиться можно незадолго до начала «{ev.title}».",
                f"Check-in for “{ev.title}” opens shortly before it starts.",
            )
        case _:
            return say(lang, "Отмечаться уже поздно.", "Check-in is over.")
