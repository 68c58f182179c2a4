"""Directory groups → their members, nesting resolved. Pure: the reader hands over entries, this decides.

Rules (each tested):
1. A member value that is a person read (by DN, whatever its case, spacing or escaping) is a member; one
   that is a group read is followed; anything else (the placeholder DN an empty ``groupOfNames`` must hold,
   a person out of scope, a deleted entry) is ignored.
2. Nesting is followed to ``max_depth`` levels below the mapped group; a group found deeper stops the run
   (:class:`GroupError`, exit 2): members silently missing would be removed from the group's room.
3. A cycle (A ∋ B ∋ A) is cut where it closes: every group in it has the members of all of them, as AD's
   server-side rule resolves it. It is reported, or with ``cycles: error`` stops the run.
4. With ``nesting: server`` the reader already asked the server for every member (AD's
   LDAP_MATCHING_RULE_IN_CHAIN); with ``none`` only direct members count.
5. A group that the read returned only in part (AD's ``member;range=0-1499``) is never taken as whole: the
   run stops (exit 2) naming the group, so a big group's members are never dropped for the range's sake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from provisioner.core.dn import DNError, normalize_dn
from provisioner.core.model import Group, Person, RawEntry, Unit
from provisioner.core.policy import GroupPolicy


class GroupError(ValueError):
    """A groups: problem that must stop the run before anything is touched (exit 2)."""


@dataclass(frozen=True, slots=True)
class GroupRead:
    """What the reader hands over about groups.

    ``entries``: every group entry read (the mapped ones and, with client nesting, the groups nested in
    them). ``selected``: normalized DN → indexes of the ``groups.map`` entries that selected it.
    ``server_members``: with server nesting, normalized group DN → the DNs of all its members.
    """

    entries: Sequence[RawEntry] = ()
    selected: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    server_members: Mapping[str, tuple[str, ...]] | None = None


def norm(dn: str) -> str:
    try:
        return normalize_dn(dn)
    except DNError:
        return dn.casefold()


def ranged(entry: RawEntry, attributes: Sequence[str]) -> bool:
    """Whether the server sent only a range of a member attribute (``member;range=0-1499``)."""
    names = {a.lower() for a in attributes}
    return any(";range=" in k and k.split(";", 1)[0] in names for k in entry.attrs)


def member_dns(entry: RawEntry, attributes: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for a in attributes:
        out += entry.values(a)
    return tuple(out)


def resolve_groups(
    read: GroupRead, people: Sequence[Person], policy: GroupPolicy
) -> tuple[tuple[Group, ...], tuple[str, ...]]:
    """The mapped groups with the anchors of their members, and what is worth reporting (cycles)."""
    by_dn = {norm(e.dn): e for e in read.entries}
    person_of = {norm(p.dn): p.anchor for p in people}
    for entry in by_dn.values():
        if policy.nesting != "server" and ranged(entry, policy.member_attributes):
            raise GroupError(
                f"group {entry.dn} has more members than the server returns at once (a ranged member "
                "attribute): set groups.nesting: server so the members are searched instead"
            )
    notes: list[str] = []
    groups: list[Group] = []
    for dn in sorted(read.selected):
        found = by_dn.get(dn)
        if found is None:
            continue
        entry = found
        if read.server_members is not None:
            members = {person_of[m] for m in map(norm, read.server_members.get(dn, ())) if m in person_of}
        else:
            members = _walk(dn, by_dn, person_of, policy, notes)
        groups.append(
            Group(
                key=entry.first(policy.anchor) or dn,
                dn=entry.dn,
                name=entry.first(policy.name_attribute) or entry.dn.split(",", 1)[0].split("=", 1)[-1],
                rules=read.selected[dn],
                members=tuple(sorted(members)),
            )
        )
    return tuple(groups), tuple(dict.fromkeys(notes))


def _walk(
    start: str,
    by_dn: Mapping[str, RawEntry],
    person_of: Mapping[str, str],
    policy: GroupPolicy,
    notes: list[str],
) -> set[str]:
    """Members of ``start`` and of the groups nested in it (rules 1–3), depth first with the path kept."""
    members: set[str] = set()
    seen: set[str] = {start}
    stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
    while stack:
        dn, path = stack.pop()
        for value in member_dns(by_dn[dn], policy.member_attributes):
            m = norm(value)
            if m in person_of:
                members.add(person_of[m])
            elif m in by_dn and policy.nesting == "client":
                if m in path:
                    chain = " → ".join(by_dn[x].dn for x in (*path[path.index(m) :], m))
                    if policy.cycles == "error":
                        raise GroupError(f"groups nest in a cycle: {chain} (groups.cycles: error)")
                    notes.append(f"groups nest in a cycle, cut where it closes: {chain}")
                elif m not in seen:
                    if len(path) > policy.max_depth:
                        chain = " → ".join(by_dn[x].dn for x in (*path, m))
                        raise GroupError(
                            f"groups nest deeper than groups.max_depth ({policy.max_depth}): {chain}; "
                            "raise groups.max_depth or flatten the groups"
                        )
                    seen.add(m)
                    stack.append((m, (*path, m)))
    return members


def unit_keys_for(paths: Sequence[str], units: Sequence[Unit]) -> dict[str, str]:
    """Each named unit path → its unit key; the path as people see it (" / " between levels), any case,
    ё as е. A path that names no unit, or several, is a :class:`GroupError`."""
    seen: dict[str, list[str]] = {}
    for u in units:
        seen.setdefault(_fold(" / ".join(u.path)), []).append(u.key)
    out: dict[str, str] = {}
    for path in paths:
        keys = seen.get(_fold(path), [])
        if len(keys) != 1:
            what = "names no unit" if not keys else f"names {len(keys)} units"
            raise GroupError(f'groups.map: the unit {path!r} {what}; write its full path, e.g. "A / B"')
        out[path] = keys[0]
    return out


def _fold(text: str) -> str:
    return " / ".join(p.strip() for p in text.casefold().replace("ё", "е").split("/"))
