"""Raw LDAP entries → people and units. Pure: the reader does the I/O, this decides what the entries mean."""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from provisioner.core.dn import DN, DNError, Subtrees, normalize_dn, parse_dn, relative_to, split_first_rdn
from provisioner.core.groups import GroupRead, resolve_groups, unit_keys_for
from provisioner.core.identity import clean_text, display_name
from provisioner.core.model import (
    ROOT_UNIT,
    DirectorySnapshot,
    Group,
    Person,
    RawEntry,
    SetAside,
    Skipped,
    Unit,
)
from provisioner.core.phones import join_values
from provisioner.core.policy import DirectoryPolicy

log = logging.getLogger(__name__)

# RDN types that make up an organisational path. ``cn`` containers (AD's CN=Users) and ``dc`` are structure,
# not departments.
_UNIT_RDN_TYPES = frozenset({"ou", "o", "organizationalunitname", "organizationname"})
MAX_UNIT_NAME = 255


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What the reader hands over: entries plus whether the read was complete."""

    people: Sequence[RawEntry]
    units: Sequence[RawEntry]
    disabled_dns: frozenset[str]
    complete: bool
    stop_reason: str | None
    groups: GroupRead = field(default_factory=GroupRead)


def path_key(path: Sequence[str]) -> str:
    """A unit's key from its path: case and spacing do not count, Unicode is compared in NFC.

    A name may itself contain "/" ("Юр/Отдел" is not "Юр" › "Отдел"): it is escaped, and so is the escape
    character, so that keys of names without either stay what they always were.
    """

    def part(p: str) -> str:
        name = " ".join(unicodedata.normalize("NFC", p).casefold().split())
        return name.replace("\\", "\\\\").replace("/", "\\/")

    return "path:" + "/".join(part(p) for p in path)


def _unit_path_from_dn(dn: DN, base: DN) -> tuple[str, ...] | None:
    rel = relative_to(dn, base)
    if rel is None:
        return None
    names: list[str] = []
    for rdn in reversed(rel):
        for ava in rdn:
            if ava.type in _UNIT_RDN_TYPES:
                name = _unit_name(ava.value)
                if name:
                    names.append(name)
                break
    return tuple(names)


def _unit_name(value: str) -> str | None:
    """A unit's name, cut to MAX_UNIT_NAME: an over-long name must not drop its people into the parent."""
    name = clean_text(value, max_len=len(value))
    return name[:MAX_UNIT_NAME].rstrip() if name else None


def _split_department(value: str | None, separator: str) -> tuple[str, ...]:
    if not value:
        return ()
    parts = value.split(separator) if separator.strip() else [value]
    out: list[str] = []
    for part in parts:
        name = _unit_name(part)
        if name:
            out.append(name)
    return tuple(out)


class _UnitIndex:
    """Builds the unit tree: every prefix of every path is a unit; keys from OU anchors when known.

    Paths that differ only in case, spacing or Unicode form are one unit; it is named the way most of its
    people's entries spell it (ties: the first spelling in sort order), so one odd entry cannot rename a
    department for everyone.
    """

    def __init__(self, anchors_by_path: dict[str, str]) -> None:
        self.anchors_by_path = anchors_by_path
        self._key_of_path: dict[tuple[str, ...], str] = {}
        self._spellings: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self._parent: dict[str, str] = {}

    def key_for(self, path: tuple[str, ...]) -> str:
        if not path:
            return ROOT_UNIT
        parent = self.key_for(path[:-1])
        key = self._key_of_path.get(path)
        if key is None:
            anchor = self.anchors_by_path.get(path_key(path))
            key = f"ou:{anchor}" if anchor else path_key(path)
            self._key_of_path[path] = key
        self._spellings[key][path] += 1
        self._parent[key] = parent
        return key

    def units(self) -> list[Unit]:
        return [
            Unit(
                key=key,
                path=min(seen.items(), key=lambda kv: (-kv[1], kv[0]))[0],
                parent_key=self._parent[key],
            )
            for key, seen in self._spellings.items()
        ]


class Scope:
    """Rule: an entry at or below a ``directory.exclude`` DN or in a ``directory.leavers`` container is not in
    the roster, so its person is a leaver (locked, deactivated after the grace period, under the removal
    thresholds) and no unit, space or room is ever made for the container. Exclusion wins over leavers.
    """

    def __init__(self, exclude: Iterable[str], leavers: Iterable[str]) -> None:
        self.exclude = Subtrees(exclude)
        self.leavers = Subtrees(leavers)
        self._by_parent: dict[str, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self.exclude) or bool(self.leavers)

    def _cause(self, dn: str) -> str | None:
        if (found := self.exclude.container_of(dn)) is not None:
            return f"moved out of scope (directory.exclude: {found})"
        if (found := self.leavers.container_of(dn)) is not None:
            return f"moved to the leavers container {found}"
        return None

    def cause(self, dn: str) -> str | None:
        """Why the entry at ``dn`` is out of the roster, or ``None`` if it is in scope (or unparseable)."""
        if not self:
            return None
        try:
            first, parent = split_first_rdn(dn)
            if self.exclude.may_list(first) or self.leavers.may_list(first):
                return self._cause(dn)  # the entry itself may be listed: the rare, full check
            if parent not in self._by_parent:
                self._by_parent[parent] = self._cause(parent) if parent.strip() else None
            return self._by_parent[parent]
        except DNError:
            return None  # the caller skips it for its DN, with the parser's reason


def set_aside(entries: Iterable[RawEntry], scope: Scope, anchor_attr: str) -> tuple[SetAside, ...]:
    """The entries ``scope`` takes out of the roster, with their anchors and causes."""
    if not scope:
        return ()
    out: list[SetAside] = []
    for entry in entries:
        cause = scope.cause(entry.dn)
        if cause is not None:
            out.append(SetAside(entry.dn, entry.first(anchor_attr), cause))
    return tuple(out)


def interpret(result: ReadResult, policy: DirectoryPolicy, *, skip_log: bool = True) -> DirectorySnapshot:
    """Turn a read into people and units; every entry that cannot be used is skipped with its reason.

    Entries out of scope (:class:`Scope`) are neither people nor units; they are listed in ``set_aside``.
    """
    base = parse_dn(policy.base_dn)
    skipped: list[Skipped] = []
    scope = Scope(policy.exclude, policy.leavers)
    aside = set_aside(result.people, scope, policy.attributes.anchor)
    out_dns = {a.dn for a in aside}
    units = [u for u in result.units if scope.cause(u.dn) is None] if scope else result.units
    index = _UnitIndex(_anchors_by_path(units, policy, base))

    @functools.cache
    def unit_path_of(parent_dn: str) -> tuple[str, ...] | None:
        try:
            return _unit_path_from_dn(parse_dn(parent_dn), base) if parent_dn else None
        except DNError:
            return None

    people: list[Person] = []
    seen_anchor: dict[str, str] = {}
    # Sorted by DN so that "which of two duplicates is kept" does not depend on the server's order.
    for entry in sorted(result.people, key=lambda e: e.dn.casefold()):
        if entry.dn in out_dns:
            continue
        read = _person(entry, policy, unit_path_of, seen_anchor, result.disabled_dns, index.key_for)
        if isinstance(read, str):
            skipped.append(Skipped(entry.dn, read))
            if skip_log:
                log.warning("skipped %s: %s", entry.dn, read)
            continue
        seen_anchor[read.anchor] = entry.dn
        people.append(read)
    groups: tuple[Group, ...] = ()
    notes: tuple[str, ...] = ()
    unit_list = tuple(sorted(index.units(), key=lambda u: u.path))
    if policy.groups is not None:
        groups, notes = resolve_groups(result.groups, people, policy.groups)
        unit_keys_for(policy.groups.named_units, unit_list)  # a unit named that does not exist stops here
        for note in notes:
            log.warning("%s", note)
    return DirectorySnapshot(
        people=tuple(people),
        units=unit_list,
        skipped=tuple(skipped),
        complete=result.complete,
        stop_reason=result.stop_reason,
        entries_read=len(result.people),
        set_aside=aside,
        groups=groups,
        notes=notes,
    )


def _anchors_by_path(units: Iterable[RawEntry], policy: DirectoryPolicy, base: DN) -> dict[str, str]:
    """Path key → the anchor of the OU entry at that path, so a renamed OU keeps its unit key."""
    anchors: dict[str, str] = {}
    if policy.department_from != "dn":
        return anchors
    for entry in units:
        try:
            path = _unit_path_from_dn(parse_dn(entry.dn), base)
        except DNError:
            continue
        anchor = entry.first(policy.attributes.anchor)
        if path and anchor:
            anchors.setdefault(path_key(path), anchor)
    return anchors


def _person(
    entry: RawEntry,
    policy: DirectoryPolicy,
    unit_path_of: Callable[[str], tuple[str, ...] | None],
    seen_anchor: Mapping[str, str],
    disabled: frozenset[str],
    unit_key_for: Callable[[tuple[str, ...]], str],
) -> Person | str:
    """The person an entry describes, or why it cannot be used (checked in this order)."""
    attrs = policy.attributes
    try:
        first_rdn, parent_dn = split_first_rdn(entry.dn)
        parse_dn(first_rdn)
    except DNError as e:
        return f"unparseable DN: {e}"
    anchor = entry.first(attrs.anchor)
    if not anchor or not anchor.strip():
        return f"no {attrs.anchor} (anchor)"
    if anchor in seen_anchor:
        return f"duplicate {attrs.anchor} {anchor} (also on {seen_anchor[anchor]})"
    login = clean_text(entry.first(attrs.login), max_len=255)
    if not login:
        return f"no usable {attrs.login} (login)"
    name, why = display_name(
        entry.first(attrs.display_name),
        entry.first(attrs.common_name),
        entry.first(attrs.surname),
        entry.first(attrs.given_name),
    )
    if name is None:
        return f"no usable name: {why}"
    if policy.department_from == "dn":
        path = unit_path_of(parent_dn)
        if path is None:
            return f"not under base DN {policy.base_dn}"
    else:
        path = _split_department(entry.first(attrs.department), policy.department_separator)
    manager = entry.first(attrs.manager)
    try:
        manager_dn = normalize_dn(manager) if manager else None
    except DNError:
        manager_dn = None
    return Person(
        anchor=anchor,
        login=login,
        dn=entry.dn,
        display_name=name,
        unit_key=unit_key_for(path),  # last: it counts this spelling of the unit's name
        title=clean_text(entry.first(attrs.title)),
        department=" / ".join(path) or None,
        # Every value of the desk and mobile attributes: a directory lists a second number as a second value.
        phone=join_values(entry.values(attrs.phone) + entry.values(attrs.mobile)),
        email=clean_text(entry.first(attrs.email), max_len=254),
        manager_dn=manager_dn,
        disabled=entry.dn in disabled,
        sort_name=name.casefold(),
    )


def units_by_key(units: Iterable[Unit]) -> dict[str, Unit]:
    return {u.key: u for u in units}


def unit_path_of_dn(dn: str, base_dn: str) -> tuple[str, ...] | None:
    """The unit path a DN names below ``base_dn`` (its ``ou``/``o`` names, top first); None outside the base.

    Raises :class:`~provisioner.core.dn.DNError` when either is not a DN.
    """
    return _unit_path_from_dn(parse_dn(dn), parse_dn(base_dn))
