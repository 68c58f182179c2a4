"""The small frozen policies the pure core takes instead of the configuration.

:mod:`provisioner.config` builds them once from the parsed file (:meth:`Config.directory_policy`,
:meth:`Config.layout_policy`); the core sees only the few values each step decides with, so it can be
used and tested without YAML, secret files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DepartmentFrom = Literal["dn", "attribute"]


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """Which LDAP attribute carries each field of a person; ``None`` means "not read"."""

    anchor: str
    login: str
    display_name: str | None
    title: str | None
    department: str | None
    phone: str | None
    email: str | None
    given_name: str | None
    surname: str | None
    common_name: str | None
    manager: str | None
    # A second phone attribute (mobile); its values follow the desk phone's. Last, with a default, so a map
    # built before it existed still builds.
    mobile: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryPolicy:
    """What :func:`provisioner.core.directory.interpret` needs to give raw entries a meaning."""

    base_dn: str
    attributes: AttributeMap
    department_from: DepartmentFrom
    # Not stripped: " / " splits "Префектура ЮАО / Отдел ЖКХ" but keeps "Юр/Отдел" one name.
    department_separator: str = " / "
    # DNs (subtrees or single entries) out of scope: nothing in them is a person or a unit.
    exclude: tuple[str, ...] = ()
    # Containers whose people are leavers whatever their other attributes (AD's OU=Disabled Users).
    leavers: tuple[str, ...] = ()
    groups: GroupPolicy | None = None  # set when the config has a groups: section


@dataclass(frozen=True, slots=True)
class LayoutPolicy:
    """What the layout and the desired state need: room size, names, aliases, who moderates."""

    server_name: str
    max_room_size: int
    org_name: str
    alias_prefix: str = ""
    head_title_pattern: str | None = None
    # Seats every room keeps for service accounts: the provisioner, and the event bot if one is set.
    reserved_seats: int = 1
    # "unit": people join their unit's space only when its direct members fit in one room (layout rule 5);
    # "tree": everyone joins their unit's space and every space above it.
    space_members: str = "unit"
    group_rules: tuple[GroupRule, ...] = ()
    announcements: AnnouncementPolicy | None = None
    moderator_level: int = 50  # the level group rules without their own level give


@dataclass(frozen=True, slots=True)
class GroupRule:
    """One entry of ``groups.map``: what the groups it selects give their members.

    ``room``: a room of the group's members (split like a unit's). ``level``: a power level in rooms and
    spaces the member sits in, of their own unit (``units`` is ``None``) or of the named units and the units
    below them (``units`` holds unit keys, resolved from the paths the config names).
    """

    index: int  # its place in groups.map, which the reader tags each selected group with
    room: bool
    level: int | None = None
    units: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """How :func:`provisioner.core.groups.resolve_groups` reads group entries into members."""

    anchor: str  # the groups' immutable key attribute (entryUUID, objectGUID)
    name_attribute: str  # what names a group's room (cn)
    member_attributes: tuple[str, ...]  # member, uniqueMember
    # "client": nested groups are followed here (OpenLDAP); "server": the reader already asked the
    # server for every member, nested ones included (AD's LDAP_MATCHING_RULE_IN_CHAIN); "none": direct only.
    nesting: str = "client"
    max_depth: int = 8
    cycles: str = "report"  # or "error": a cycle stops the run with exit 2
    # Every unit path a rule names (groups.map[].units): each must exist, or the run stops with exit 2.
    named_units: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AnnouncementPolicy:
    """Which units get an announcement channel: read by all of the unit's subtree, written by its heads."""

    units: str = "top"  # "top": units right below the organisation; "all": any unit
    min_members: int = 0  # people in the unit's subtree needed for a channel
    max_members: int = 10_000  # above this a unit gets none (its rooms get the announcements instead)
    name_suffix: str = "Объявления"
