"""Plain data shared by the reader, the planner and the sync. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ROOT_UNIT = "root"
"""Key of the organisation itself: people directly under the base DN (or with no department) sit here."""


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One LDAP entry as read: attribute names lowercased, every value a string.

    Binary values (AD ``objectGUID``) are already turned into their canonical text by the reader.
    """

    dn: str
    attrs: Mapping[str, tuple[str, ...]]

    def first(self, name: str | None) -> str | None:
        if not name:
            return None
        values = self.attrs.get(name.lower())
        return values[0] if values else None

    def values(self, name: str | None) -> tuple[str, ...]:
        """Every value of a multi-valued attribute, in the order the server sent them."""
        if not name:
            return ()
        return tuple(self.attrs.get(name.lower(), ()))


@dataclass(frozen=True, slots=True)
class Unit:
    """An organisational unit. ``key`` is stable across renames where the directory allows it."""

    key: str
    path: tuple[str, ...]
    parent_key: str | None

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""


@dataclass(frozen=True, slots=True)
class Person:
    anchor: str
    login: str
    dn: str
    display_name: str
    unit_key: str
    title: str | None = None
    department: str | None = None
    phone: str | None = None
    email: str | None = None
    manager_dn: str | None = None
    disabled: bool = False
    sort_name: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """A directory group a ``groups.map`` entry selected, its members (anchors) with nesting resolved."""

    key: str  # the group's anchor (entryUUID, objectGUID): stable across renames and moves
    dn: str
    name: str
    rules: tuple[int, ...]  # indexes of the groups.map entries that selected it
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    dn: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetAside:
    """An entry read but out of the roster by configuration (``directory.exclude``/``directory.leavers``).

    Its person counts as gone from the directory: locked, then deactivated after the grace period.
    """

    dn: str
    anchor: str | None
    cause: str


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """Everything one directory read produced.

    ``complete`` is False when the read stopped early (size or time limit, lost connection): such a snapshot
    must never be taken as "the missing people left".
    """

    people: tuple[Person, ...]
    units: tuple[Unit, ...]
    skipped: tuple[Skipped, ...]
    complete: bool
    stop_reason: str | None
    entries_read: int
    set_aside: tuple[SetAside, ...] = ()
    groups: tuple[Group, ...] = ()
    notes: tuple[str, ...] = ()  # worth an operator's eye, not an error (a group cycle cut)

    @property
    def enabled(self) -> tuple[Person, ...]:
        return tuple(p for p in self.people if not p.disabled)

    @property
    def disabled(self) -> tuple[Person, ...]:
        return tuple(p for p in self.people if p.disabled)
