"""The commands that only read: the list of upcoming events, one event shown or exported, ``!who``."""

from __future__ import annotations

from bridge.events import export, render
from bridge.events.context import Context, Handled, ReplyFn, say
from bridge.events.invitations import Invitations
from bridge.events.model import (
    Attachment,
    DirectUpload,
    Event,
    EventID,
    Lang,
    RoomID,
    Text,
    Upload,
    UserID,
    attendance,
)

WHO_LIMIT = 8


class Queries:
    def __init__(self, ctx: Context, invitations: Invitations) -> None:
        self.ctx = ctx
        self.invitations = invitations

    async def resolve(self, eid: EventID | None, room: RoomID, lang: Lang) -> Event | Text:
        """The event a command names, or the only upcoming one of the room; else what to tell the person."""
        if eid is not None:
            ev = await self.ctx.store.get_event(eid)
            if ev is None:
                return say(lang, f"Нет события с ID {eid}. Список: !событие список", f"No event {eid}. "
                           "See !event list")  # fmt: skip
            return ev
        upcoming = await self.ctx.store.upcoming_in_room(room, self.ctx.clock.now())
        if len(upcoming) == 1:
            return upcoming[0]
        if not upcoming:
            return say(lang, "Здесь нет предстоящих событий.", "There are no upcoming events here.")
        ids = ", ".join(e.id for e in upcoming)
        return say(lang, f"Укажите ID события: {ids}", f"Which event? Give its ID: {ids}")

    async def upcoming(self, room: RoomID, lang: Lang) -> Text:
        store = self.ctx.store
        events = await store.upcoming_in_room(room, self.ctx.clock.now())
        answers = await store.answers_for([e.id for e in events])
        going = {e.id: len(attendance(e.capacity, answers[e.id]).confirmed) for e in events}
        return render.event_list(events, going, self.ctx.tz, lang)

    async def who(self, term: str, lang: Lang) -> Text:
        if self.ctx.people is None:
            return render.who_not_configured(lang)
        found, more = await self.ctx.people.find(term, WHO_LIMIT)
        return render.who_reply(lang, term, found, more)

    async def _privileged(self, ev: Event, room: RoomID, sender: UserID) -> bool:
        """Whether ``sender`` sees the names of a private list."""
        return sender == ev.organiser or await self.ctx.is_moderator(room, sender)

    async def show(self, ev: Event, room: RoomID, sender: UserID, lang: Lang) -> Text:
        answers = await self.ctx.store.answers(ev.id)
        visible = await self._privileged(ev, room, sender) or not ev.private
        roster = await self.invitations.roster(ev)
        return render.show(
            ev, attendance(ev.capacity, answers), self.ctx.tz, lang, names_visible=visible, roster=roster
        )

    async def export(self, ev: Event, room: RoomID, sender: UserID, lang: Lang, reply: ReplyFn) -> Handled:
        answers = await self.ctx.store.answers(ev.id)
        if ev.private and not await self._privileged(ev, room, sender):
            refusal = say(
                lang,
                "Список закрыт: выгрузка только для организатора и модераторов.",
                "The list is private: only the organiser and moderators can export it.",
            )
            return [reply(refusal)], []
        tz = self.ctx.tz
        invitees, checkins = await self.ctx.store.invitees(ev.id), await self.ctx.store.checkins(ev.id)
        files = (
            Attachment(
                f"{ev.id}-attendance.csv",
                "text/csv",
                export.attendance_csv(ev, answers, tz, invitees, checkins),
            ),
            Attachment(
                f"{ev.id}.ics",
                "text/calendar",
                export.event_ics(ev, self.ctx.clock.now(), self.ctx.settings.uid_domain),
            ),
        )
        if ev.private:
            # A file posted in a room is visible to all its members; a private list goes to the requester.
            sent = say(
                lang, "Отправил выгрузку вам в личные сообщения.", "I sent the export to you directly."
            )
            caption = say(lang, f"Выгрузка {ev.id}", f"Export of {ev.id}")
            return [reply(sent), DirectUpload(sender, caption, files)], []
        count = render.plural(lang, len(answers), render.ANSWERS_WORD[lang])
        return [
            reply(say(lang, f"Выгрузка {ev.id}: {count}.", f"Export of {ev.id}: {count}.")),
            Upload(room, files),
        ], []
