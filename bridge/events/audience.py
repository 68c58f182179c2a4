"""Who an event is for and who may act on it: the unit and rooms it is announced to, and the people allowed
to create, edit or cancel it (``units`` Rules 1-4)."""

from __future__ import annotations

from bridge.events import render
from bridge.events.context import Context, say
from bridge.events.model import Event, EventID, Lang, RoomID, Text, UserID
from bridge.events.units import Found, Unit, is_here, match_unit


class Audience:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def resolve(
        self, query: str | None, room: RoomID, lang: Lang
    ) -> tuple[Unit | None, list[RoomID]] | Text:
        """The unit an event is announced to and its rooms, or the refusal to show (units Rules 1-4).

        Without ``audience`` the event goes to every shard of the current room's unit (one list for the
        people who were split over several rooms only by the room size limit), not to its sub-units.
        """
        directory = self.ctx.directory
        here = await directory.room_unit(room)
        units = list(await directory.units())
        by_key = {u.key: u for u in units}
        if query is None:
            if here is None:
                return None, [room]
            shards = await directory.unit_rooms(here, subunits=False)
            return by_key.get(here), sorted({room, *shards})
        if is_here(query):
            if here is None:
                return say(
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
        found = await directory.unit_rooms(unit.key)
        if not found:
            return say(
                lang,
                f"В подразделении «{unit.label}» нет комнат, где есть бот. Ничего не создано.",
                f"Unit “{unit.label}” has no rooms that the bot is in. Nothing was created.",
            )
        return unit, found

    async def announcing(
        self, found: list[RoomID], room: RoomID, sender: UserID
    ) -> tuple[list[RoomID], list[RoomID]]:
        """The rooms of ``found`` that ``sender`` may announce in, and those skipped."""
        rooms: list[RoomID] = []
        skipped: list[RoomID] = []
        for r in found:
            # Announcing pings everyone in a room, so the organiser must be allowed to do that in each.
            if r == room or await self.ctx.is_moderator(r, sender):
                rooms.append(r)
            else:
                skipped.append(r)
        return rooms, skipped

    async def managed(
        self, eid: EventID, room: RoomID, sender: UserID, lang: Lang, *, cancel: bool = False
    ) -> Event | Text:
        """The event ``sender`` wants to change, or the refusal: no such event, not theirs to change, or
        cancelled already."""
        ev = await self.ctx.store.get_event(eid)
        if ev is None:
            return say(lang, f"Нет события с ID {eid}.", f"No event {eid}.")
        if not await self.may_manage(ev, room, sender):
            return self.not_allowed(lang)
        if ev.cancelled and cancel:
            return say(lang, "Событие уже отменено.", "The event is already cancelled.")
        if ev.cancelled:
            return say(lang, "Событие отменено, менять нечего.", "The event is cancelled.")
        return ev

    async def may_manage(self, ev: Event, room: RoomID, sender: UserID) -> bool:
        if sender == ev.organiser:
            return True
        return await self.ctx.is_moderator(ev.origin_room, sender) or (
            room != ev.origin_room
            and await self.ctx.is_moderator(room, sender)
            and room in await self.ctx.rooms(ev)
        )

    def not_allowed(self, lang: Lang) -> Text:
        lvl = self.ctx.settings.moderator_level
        return say(
            lang,
            f"Создавать, менять и отменять события могут модераторы комнаты (уровень ≥ {lvl}) и организатор.",
            f"Only room moderators (power level ≥ {lvl}) and the organiser can create, edit or cancel "
            "events.",
        )
