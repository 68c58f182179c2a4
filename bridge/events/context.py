"""What every part of the event service shares: the store, the clock, the settings and the ports to Matrix.

The parts (``organise``, ``queries``, ``answers``, ``responses``, ``audience``, ``reminder_queue``) each hold
one :class:`Context`; :class:`bridge.events.service.EventService` builds it once and hands it to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bridge.events import render
from bridge.events.clock import Clock
from bridge.events.model import Effect, Event, Lang, MatrixEventID, Reply, RoomID, Text, UserID, t
from bridge.events.outbox import encode
from bridge.events.reminders import DEFAULT_OFFSETS
from bridge.events.store import MarkProcessed, PutOutbox, Store, Write
from bridge.events.units import Unit


@dataclass(frozen=True, slots=True)
class Settings:
    tz: ZoneInfo
    moderator_level: int = 50
    reminder_offsets: tuple[timedelta, ...] = DEFAULT_OFFSETS
    remind_maybe: bool = False
    uid_domain: str = "civmatrix.local"
    nudge_before: timedelta | None = timedelta(hours=24)  # the automatic nudge (invitees Rule 3); None: off
    nudge_every: timedelta = timedelta(hours=12)  # the least time between two nudges of one person
    checkin_before: timedelta = timedelta(minutes=30)  # check-in opens this long before the start
    checkin_after: timedelta = timedelta(hours=3)  # and closes this long after it (invitees Rule 4)


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

    async def members(self, room: RoomID) -> Sequence[tuple[UserID, str]]:
        """The joined members of ``room`` with their display names (the bot itself not among them)."""
        ...


class PeopleSearch(Protocol):
    """The directory search index, as ``!who`` needs it; the transport implements it over the snapshot."""

    async def find(self, term: str, limit: int) -> tuple[Sequence[render.FoundPerson], bool]:
        """The best ``limit`` people for ``term``, and whether more matched."""
        ...


class ReplyFn(Protocol):
    def __call__(self, text: Text, /) -> Reply: ...


# What a handler decided: the effects to send and the state to write, committed together by the caller.
Handled = tuple[list[Effect], list[Write]]


def say(lang: Lang, ru: str, en: str) -> Text:
    return render.plain(t(lang, ru, en))


@dataclass(frozen=True, slots=True)
class Context:
    store: Store
    clock: Clock
    settings: Settings
    directory: Directory
    people: PeopleSearch | None = None  # None: the config has no search: section

    @property
    def tz(self) -> ZoneInfo:
        return self.settings.tz

    async def is_moderator(self, room: RoomID, user: UserID) -> bool:
        return await self.directory.power_level(room, user) >= self.settings.moderator_level

    async def rooms(self, ev: Event) -> list[RoomID]:
        """The rooms ``ev`` was announced in."""
        return [r for r, _ in await self.store.audience(ev.id)]

    async def commit(
        self, mid: MatrixEventID, room: RoomID, writes: Sequence[Write] = (), effects: Sequence[Effect] = ()
    ) -> None:
        """Commit the state change, the effects to send and the "processed" mark in one transaction."""
        now = self.clock.now()
        outbox = [PutOutbox(f"{mid}#{i}", now, encode(e)) for i, e in enumerate(effects)]
        await self.store.write([*writes, *outbox, MarkProcessed(mid, room, now)])
