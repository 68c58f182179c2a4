"""The configuration file, parsed once into frozen objects.

Loading has no side effects: it reads the YAML file and the secret files it names, validates every key and
returns a :class:`Config`. Any problem raises :class:`ConfigError` naming the file and the dotted key, so an
operator can fix it without reading code. Secrets come only from ``*_file`` keys or environment variables.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bridge.matrix.contract import ModeratorLevelError, moderator_level
from bridge.matrix.secrets import SecretError, read_secret
from bridge.search.config import SearchConfigError, index_path
from provisioner.core.policy import (
    AnnouncementPolicy,
    AttributeMap,
    DepartmentFrom,
    DirectoryPolicy,
    GroupPolicy,
    GroupRule,
    LayoutPolicy,
)
from provisioner.ldap_common import is_filter

Preset = Literal["openldap", "active_directory"]
# Version 11 is the newest whose room IDs keep the ":server" part: v12's bare "!…" IDs fail the room-ID checks
# of Cinny 4.2 and matrix-commander 8, and with no federation its state-resolution fixes protect little.
DEFAULT_ROOM_VERSION = "11"


class ConfigError(Exception):
    """A configuration problem, with the file and the dotted key it concerns."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None) -> None:
        self.message = message
        self.path = path
        self.key = key
        where = ":".join(x for x in (path, key) if x)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    uri: str
    bind_dn: str
    bind_password: str = field(repr=False)
    base_dn: str
    preset: Preset
    filter: str
    attributes: AttributeMap
    department_from: DepartmentFrom
    department_separator: str
    disabled_filter: str | None
    unit_filter: str | None
    start_tls: bool
    page_size: int
    timeout_seconds: float
    ca_file: str | None
    client: str = "auto"
    # How `provisioner watch` notices changes: csn (OpenLDAP contextCSN, syncprov), usn (AD
    # highestCommittedUSN), none (the interval only); auto picks by preset.
    change_detection: str = "auto"
    # Subtrees out of scope, and containers of leavers (see provisioner.core.directory.Scope).
    exclude: tuple[str, ...] = ()
    leavers: tuple[str, ...] = ()
    # The groups: section, here because the directory read is what reads them.
    groups: GroupsConfig | None = None


@dataclass(frozen=True, slots=True)
class GroupSelector:
    """One ``groups.map`` entry: which groups (a DN, or a filter under a base) and what they give."""

    key: str  # "groups.map[0]", for messages
    dn: str | None
    base: str | None
    filter: str | None
    rule: GroupRule


@dataclass(frozen=True, slots=True)
class GroupsConfig:
    object_filter: str  # what a group is
    name_attribute: str
    member_attributes: tuple[str, ...]
    nesting: str  # client | server | none
    max_depth: int
    cycles: str  # report | error
    selectors: tuple[GroupSelector, ...]

    def policy(self, anchor: str) -> GroupPolicy:
        named = tuple(u for s in self.selectors for u in (s.rule.units or ()))
        return GroupPolicy(
            anchor=anchor, name_attribute=self.name_attribute, member_attributes=self.member_attributes,
            nesting=self.nesting, max_depth=self.max_depth, cycles=self.cycles, named_units=named,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class HomeserverConfig:
    url: str
    server_name: str
    admin_token: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class LayoutConfig:
    max_room_size: int
    org_name: str
    alias_prefix: str
    head_title_pattern: str | None
    room_encryption: bool
    moderator_power_level: int
    room_version: str | None = DEFAULT_ROOM_VERSION
    space_members: str = "tree"
    # Units live so far (names, paths, DNs or keys, each with the units below it); None: the whole directory.
    onboarded_units: tuple[str, ...] | None = None
    announcements: AnnouncementPolicy | None = None


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    max_removals: int
    max_removal_percent: float
    min_directory_fraction: float
    deactivate_after_days: int


@dataclass(frozen=True, slots=True)
class SyncConfig:
    concurrency: int
    state_dir: str
    audit_log: str
    full_read_hours: float = 24.0


@dataclass(frozen=True, slots=True)
class WatchConfig:
    poll_seconds: float = 1.0
    debounce_seconds: float = 1.0
    max_delay_seconds: float = 10.0
    full_interval_seconds: float = 3600.0
    fallback_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    homeserver: HomeserverConfig
    directory: DirectoryConfig
    layout: LayoutConfig
    safety: SafetyConfig
    sync: SyncConfig
    exclude: frozenset[str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    watch: WatchConfig = field(default_factory=WatchConfig)
    search_index: str | None = None  # search.index: where each sync leaves the search snapshot

    @property
    def bot_user_id(self) -> str | None:
        """The event bot's account when the file has a ``bot`` section: it keeps a seat in every room."""
        bot = self.raw.get("bot")
        if isinstance(bot, dict) and isinstance(bot.get("user_id"), str):
            return str(bot["user_id"])
        return None

    def directory_policy(self) -> DirectoryPolicy:
        """What the pure core needs to interpret the entries read with :attr:`directory`."""
        d = self.directory
        return DirectoryPolicy(
            base_dn=d.base_dn,
            attributes=d.attributes,
            department_from=d.department_from,
            department_separator=d.department_separator,
            exclude=d.exclude,
            leavers=d.leavers,
            groups=d.groups.policy(d.attributes.anchor) if d.groups else None,
        )

    def layout_policy(self) -> LayoutPolicy:
        """The layout policy of the sync, and so of every preview of it (``layout``, ``plan``)."""
        return LayoutPolicy(
            server_name=self.homeserver.server_name,
            max_room_size=self.layout.max_room_size,
            org_name=self.layout.org_name,
            alias_prefix=self.layout.alias_prefix,
            head_title_pattern=self.layout.head_title_pattern,
            # The provisioner, and the bot if there is one, stay in every managed room.
            reserved_seats=2 if self.bot_user_id else 1,
            space_members=self.layout.space_members,
            group_rules=tuple(s.rule for s in self.directory.groups.selectors)
            if self.directory.groups
            else (),
            announcements=self.layout.announcements,
            moderator_level=self.layout.moderator_power_level,
        )


# The one table of what each preset means: the parser fills unset keys from it, `provisioner directory` prints
# it (effective_settings), and tests check that config/example.yaml and README.md state the same defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "openldap": {
        "filter": "(objectClass=inetOrgPerson)",
        "department_from": "dn",
        # ppolicy's administrative lock: "000001010000Z" means locked until an administrator unlocks, unlike
        # the timed lockout after failed binds, which must not lock a Matrix account. On a server without the
        # ppolicy overlay the attribute is undefined and the filter matches nobody (no error), so the default
        # is safe everywhere; directories that mark leavers otherwise set their own filter.
        "disabled_filter": "(pwdAccountLockedTime=000001010000Z)",
        "change_detection": "csn",
        "unit_filter": "(objectClass=organizationalUnit)",
        "attributes": {
            "anchor": "entryUUID",
            "login": "uid",
            "display_name": "displayName",
            "title": "title",
            "department": None,
            "phone": "telephoneNumber",
            "email": "mail",
            "given_name": "givenName",
            "surname": "sn",
            "common_name": "cn",
            "manager": "manager",
            "mobile": "mobile",
        },
    },
    "active_directory": {
        # Computers are also objectClass=user in AD; objectCategory=person keeps them out.
        "filter": "(&(objectCategory=person)(objectClass=user))",
        "department_from": "attribute",
        # userAccountControl bit 2 (ACCOUNTDISABLE), via the LDAP_MATCHING_RULE_BIT_AND rule.
        "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
        "change_detection": "usn",
        "unit_filter": None,
        "attributes": {
            "anchor": "objectGUID",
            "login": "sAMAccountName",
            "display_name": "displayName",
            "title": "title",
            "department": "department",
            "phone": "telephoneNumber",
            "email": "mail",
            "given_name": "givenName",
            "surname": "sn",
            "common_name": "cn",
            "manager": "manager",
            "mobile": "mobile",
        },
    },
}

#: The settings `provisioner directory` prints with where each value came from, in this order.
SHOWN_SETTINGS = ("filter", "disabled_filter", "anchor", "change_detection", "department_from", "unit_filter")


def preset_default(preset: str, name: str) -> str | None:
    """The preset's value of one of :data:`SHOWN_SETTINGS` (``anchor`` is ``attributes.anchor``)."""
    table = PRESETS[preset]
    value = table["attributes"]["anchor"] if name == "anchor" else table[name]
    return None if value is None else str(value)


def effective_settings(d: DirectoryConfig) -> list[tuple[str, str | None, str]]:
    """(name, value in effect, where it came from) for each of :data:`SHOWN_SETTINGS`."""
    values: dict[str, str | None] = {
        "filter": d.filter,
        "disabled_filter": d.disabled_filter,
        "anchor": d.attributes.anchor,
        "change_detection": d.change_detection,
        "department_from": d.department_from,
        "unit_filter": d.unit_filter,
    }
    out: list[tuple[str, str | None, str]] = []
    for name in SHOWN_SETTINGS:
        default = preset_default(d.preset, name)
        value = values[name]
        if name == "change_detection" and value == "auto":
            out.append((name, default, f"auto: the {d.preset} preset's"))
        elif value == default:
            out.append((name, value, f"the {d.preset} preset's default"))
        else:
            out.append((name, value, "set in the config"))
    return out


_TOP_KEYS = {
    "homeserver",
    "directory",
    "layout",
    "safety",
    "sync",
    "exclude",
    "bot",
    "server",
    "demo",
    "watch",
    "search",
    "groups",
}
CHANGE_DETECTION = ("auto", "csn", "usn", "none")
_USER_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-:\[\]]+$")


class _Reader:
    """Typed access to one mapping of the YAML file, naming the dotted key in every error."""

    def __init__(self, data: Any, path: str, prefix: str, base_dir: Path) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", path, prefix or None)
        self.data: dict[str, Any] = data
        self.path = path
        self.prefix = prefix
        self.base_dir = base_dir

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def section(self, name: str) -> _Reader:
        return _Reader(self.data.get(name), self.path, self.key(name), self.base_dir)

    def check_known(self, known: set[str]) -> None:
        for k in self.data:
            if k not in known:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})", self.path, self.key(k))

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.key(name))

    def str_(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.data.get(name, default)
        if value is None:
            if required:
                raise self.fail(name, "is required")
            raise self.fail(name, "must be a string")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(name, f"must be a string, not {type(value).__name__}")
        text = str(value).strip()
        if required and not text:
            raise self.fail(name, "must not be empty")
        return text

    def opt_str(self, name: str, default: str | None = None) -> str | None:
        if name in self.data and self.data[name] is None:
            return None
        if name not in self.data:
            return default
        text = self.str_(name)
        return text or None

    def int_(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a whole number, not {value!r}")
        if not lo <= value <= hi:
            raise self.fail(name, f"must be between {lo} and {hi}, not {value}")
        return value

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"must be a number, not {value!r}")
        if not lo <= float(value) <= hi:
            raise self.fail(name, f"must be between {lo} and {hi}, not {value}")
        return float(value)

    def bool_(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, not {value!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str_(name, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def path_(self, name: str, default: str) -> str:
        """A filesystem path, relative ones taken from the config file's directory."""
        value = self.str_(name, default)
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else (self.base_dir / p))

    def secret(self, name: str, *, required: bool) -> str | None:
        """A secret from ``<name>_file`` or ``<name>_env``; a plain ``<name>`` key is refused."""
        if name in self.data:
            raise self.fail(name, f"secrets are never written in the config: use {name}_file or {name}_env")
        file_key, env_key = f"{name}_file", f"{name}_env"
        try:
            if self.data.get(file_key):
                p = Path(os.path.expanduser(self.str_(file_key)))
                return read_secret(file=p if p.is_absolute() else self.base_dir / p)
            if self.data.get(env_key):
                return read_secret(env=self.str_(env_key))
        except SecretError as e:
            raise self.fail(file_key if e.source == "file" else env_key, e.message) from None
        if required:
            raise self.fail(file_key, f"is required (or {env_key})")
        return None


def _attribute_map(r: _Reader, preset: dict[str, Any]) -> AttributeMap:
    fields = preset["attributes"]
    r.check_known(set(fields))
    values: dict[str, str | None] = {}
    for name, default in fields.items():
        values[name] = r.opt_str(name, default) if name in r.data else default
    for required in ("anchor", "login"):
        if not values[required]:
            raise r.fail(required, "is required: people are keyed on it")
    return AttributeMap(**values)  # type: ignore[arg-type]


def _check_filter(r: _Reader, name: str, value: str | None) -> None:
    if value is None:
        return
    if not is_filter(value):
        raise r.fail(name, f"is not an LDAP filter (RFC 4515): {value!r}")


def _containers(r: _Reader, name: str, base_dn: str) -> tuple[str, ...]:
    """``directory.exclude`` / ``directory.leavers``: DNs strictly below the base DN, each one parsed."""
    from provisioner.core.dn import DNError, parse_dn, relative_to

    raw = r.data.get(name)
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, list):
        raise r.fail(name, f"must be a list of DNs under {base_dn}, not {type(raw).__name__}")
    base = parse_dn(base_dn)
    out: list[str] = []
    for i, item in enumerate(raw):
        key = f"{name}[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise r.fail(key, f"must be a DN like ou=Leavers,{base_dn}, not {item!r}")
        try:
            dn = parse_dn(item.strip())
        except DNError as e:
            raise r.fail(key, f"is not a valid DN: {e}") from None
        below = relative_to(dn, base)
        if below is None:
            raise r.fail(key, f"{item!r} is not under directory.base_dn {base_dn!r}: nothing there is read")
        if not below:
            raise r.fail(key, f"{item!r} is the base DN itself: that would put everyone out of scope")
        out.append(item.strip())
    return tuple(out)


def _directory(r: _Reader) -> DirectoryConfig:
    r.check_known(
        {
            "uri", "bind_dn", "bind_password_file", "bind_password_env", "bind_password", "base_dn",
            "preset", "filter", "attributes", "department_from", "department_separator",
            "disabled_filter", "unit_filter", "start_tls", "page_size", "timeout_seconds", "ca_file",
            "client", "change_detection", "exclude", "leavers",
        }
    )  # fmt: skip
    preset_name = r.choice("preset", "openldap", tuple(PRESETS))
    preset = PRESETS[preset_name]
    uri = r.str_("uri", required=True).rstrip("/")
    if not re.match(r"^ldaps?://[^/\s]+/?$", uri):
        raise r.fail("uri", f"must look like ldap://host:port or ldaps://host:port, not {uri!r}")
    base_dn = r.str_("base_dn", required=True)
    from provisioner.core.dn import DNError, parse_dn

    try:
        parse_dn(base_dn)
    except DNError as e:
        raise r.fail("base_dn", str(e)) from None
    flt = r.str_("filter", preset["filter"])
    _check_filter(r, "filter", flt)
    disabled = r.opt_str("disabled_filter", preset["disabled_filter"])
    _check_filter(r, "disabled_filter", disabled)
    unit_filter = r.opt_str("unit_filter", preset["unit_filter"])
    _check_filter(r, "unit_filter", unit_filter)
    attrs = _attribute_map(r.section("attributes"), preset)
    dep_from = r.choice("department_from", preset["department_from"], ("dn", "attribute"))
    if dep_from == "attribute" and not attrs.department:
        raise r.fail("department_from", "is 'attribute' but attributes.department is not set")
    ca_file = r.opt_str("ca_file")
    # Not stripped: " / " splits "Префектура ЮАО / Отдел ЖКХ" but keeps "Юр/Отдел" one name.
    separator = r.data.get("department_separator") or " / "
    if not isinstance(separator, str):
        raise r.fail("department_separator", f"must be a string, not {type(separator).__name__}")
    return DirectoryConfig(
        uri=uri,
        bind_dn=r.str_("bind_dn", required=True),
        bind_password=r.secret("bind_password", required=True) or "",
        base_dn=base_dn,
        preset=preset_name,  # type: ignore[arg-type]
        filter=flt,
        attributes=attrs,
        department_from=dep_from,  # type: ignore[arg-type]
        department_separator=separator,
        disabled_filter=disabled,
        unit_filter=unit_filter,
        start_tls=r.bool_("start_tls", False),
        # 1000 is AD's default MaxPageSize, and pages that large keep ldap3's per-page overhead low.
        page_size=r.int_("page_size", 1000, 1, 100_000),
        timeout_seconds=r.float_("timeout_seconds", 30.0, 1.0, 3600.0),
        ca_file=r.path_("ca_file", ca_file) if ca_file else None,
        client=r.choice("client", "auto", ("auto", "python-ldap", "ldap3")),
        change_detection=r.choice("change_detection", "auto", CHANGE_DETECTION),
        exclude=_containers(r, "exclude", base_dn),
        leavers=_containers(r, "leavers", base_dn),
    )


def _homeserver(r: _Reader, *, token_required: bool) -> HomeserverConfig:
    r.check_known({"url", "server_name", "admin_token_file", "admin_token_env", "admin_token"})
    url = r.str_("url", required=True).rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/.*)?$", url):
        raise r.fail("url", f"must be an http:// or https:// URL, not {url!r}")
    server_name = r.str_("server_name", required=True)
    if not re.match(r"^[A-Za-z0-9.\-]+(:\d+)?$", server_name):
        raise r.fail("server_name", f"is not a valid Matrix server name: {server_name!r}")
    return HomeserverConfig(
        url=url, server_name=server_name, admin_token=r.secret("admin_token", required=token_required)
    )


def _layout(r: _Reader, server_name: str, moderator: int) -> LayoutConfig:
    r.check_known(
        {"max_room_size", "org_name", "alias_prefix", "head_title_pattern", "room_encryption",
         "moderator_power_level", "room_version", "space_members", "onboarded_units", "announcements"}
    )  # fmt: skip
    version = r.opt_str("room_version", DEFAULT_ROOM_VERSION)
    if version is not None and not re.fullmatch(r"[0-9a-z][0-9a-z.\-]*", version):
        raise r.fail(
            "room_version", f"must be a room version like 11, not {version!r} (null: the server's default)"
        )
    pattern = r.opt_str("head_title_pattern")
    if pattern:
        try:
            re.compile(pattern)
        except re.error as e:
            raise r.fail("head_title_pattern", f"is not a valid regular expression: {e}") from None
    prefix = r.str_("alias_prefix", "")
    if prefix and not re.fullmatch(r"[a-z0-9][a-z0-9\-]*", prefix):
        raise r.fail("alias_prefix", "must be lowercase ASCII letters, digits and '-'")
    return LayoutConfig(
        # Below 2 a "room" is a DM; above 10,000 presence and state resolution become the bottleneck.
        max_room_size=r.int_("max_room_size", 200, 2, 10_000),
        org_name=r.str_("org_name", server_name) or server_name,
        alias_prefix=prefix,
        head_title_pattern=pattern,
        room_encryption=r.bool_("room_encryption", True),
        moderator_power_level=moderator,
        room_version=version,
        space_members=r.choice("space_members", "tree", ("tree", "unit")),
        onboarded_units=_onboarded(r),
        announcements=_announcements(r.section("announcements")) if r.data.get("announcements") else None,
    )


def _onboarded(r: _Reader) -> tuple[str, ...] | None:
    """``layout.onboarded_units``: unit names as people see them; matched against the directory when it is
    read (an unknown or ambiguous one stops the run then, exit 2)."""
    raw = r.data.get("onboarded_units")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise r.fail("onboarded_units", "must be a list of units (names, paths or DNs), or null for all")
    out: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise r.fail("onboarded_units", f"item {i} must be a unit's name, path or DN, not {item!r}")
        out.append(item.strip())
    return tuple(out)


def _announcements(r: _Reader) -> AnnouncementPolicy:
    r.check_known({"units", "min_members", "max_members", "name_suffix"})
    return AnnouncementPolicy(
        units=r.choice("units", "top", ("top", "all")),
        min_members=r.int_("min_members", 0, 0, 10_000_000),
        max_members=r.int_("max_members", 10_000, 2, 100_000),
        name_suffix=r.str_("name_suffix", "Объявления"),
    )


GROUP_OBJECTS = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"


def _groups(r: _Reader, directory: DirectoryConfig, moderator: int) -> GroupsConfig:
    """The groups: section; DNs are checked for form and place here, for existence by the read."""
    r.check_known({"object_filter", "name_attribute", "member_attributes", "nesting", "max_depth", "cycles",
                   "map"})  # fmt: skip
    flt = r.str_("object_filter", GROUP_OBJECTS)
    if not is_filter(flt):
        raise r.fail("object_filter", f"is not an LDAP filter in parentheses: {flt!r}")
    members = r.data.get("member_attributes", ["member", "uniqueMember"])
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise r.fail("member_attributes", f"must be a list of attribute names, not {members!r}")
    nesting_default = "server" if directory.preset == "active_directory" else "client"
    raw_map = r.data.get("map")
    if not isinstance(raw_map, list) or not raw_map:
        raise r.fail("map", "must be a list of groups to map (each with dn, or base and/or filter)")
    selectors = tuple(
        _group_selector(_Reader(item, r.path, f"{r.key('map')}[{i}]", r.base_dir), i, directory, moderator)
        for i, item in enumerate(raw_map)
    )
    return GroupsConfig(
        object_filter=flt,
        name_attribute=r.str_("name_attribute", "cn"),
        member_attributes=tuple(m.lower() for m in members),
        nesting=r.choice("nesting", nesting_default, ("client", "server", "none")),
        max_depth=r.int_("max_depth", 8, 1, 100),
        cycles=r.choice("cycles", "report", ("report", "error")),
        selectors=selectors,
    )


def _group_selector(r: _Reader, index: int, directory: DirectoryConfig, moderator: int) -> GroupSelector:
    from provisioner.core.dn import DNError, parse_dn, relative_to

    r.check_known({"dn", "base", "filter", "room", "level", "units"})
    dn, base, flt = r.opt_str("dn"), r.opt_str("base"), r.opt_str("filter")
    if dn is not None and (base is not None or flt is not None):
        raise r.fail("dn", "names one group: give either dn, or base and/or filter, not both")
    if dn is None and base is None and flt is None:
        raise r.fail(
            "dn", "is missing: give the group's dn, or a base (every group under it) and/or a filter"
        )
    for name, value in (("dn", dn), ("base", base)):
        if value is None:
            continue
        try:
            inside = relative_to(parse_dn(value), parse_dn(directory.base_dn))
        except DNError as e:
            raise r.fail(name, f"is not a valid DN: {e}") from None
        if inside is None:
            raise r.fail(name, f"{value!r} is not under directory.base_dn {directory.base_dn!r}")
    if flt is not None and not is_filter(flt):
        raise r.fail("filter", f"is not an LDAP filter in parentheses: {flt!r}")
    room = r.bool_("room", False)
    level = r.data.get("level")
    units_raw = r.data.get("units", "own")
    if level is None and "units" not in r.data and not room:
        raise r.fail("room", "the entry gives nothing: set room: true and/or level (with units)")
    if level is not None:
        level = r.int_("level", moderator, 1, 99)
    elif "units" in r.data:
        level = moderator
    units: tuple[str, ...] | None
    if units_raw == "own":
        units = None
    elif (
        isinstance(units_raw, list) and units_raw and all(isinstance(u, str) and u.strip() for u in units_raw)
    ):
        units = tuple(u.strip() for u in units_raw)
    else:
        raise r.fail(
            "units", f'must be own or a list of unit paths like ["Департамент транспорта"], not {units_raw!r}'
        )
    return GroupSelector(r.prefix, dn, base, flt, GroupRule(index, room, level, units))


def _safety(r: _Reader) -> SafetyConfig:
    r.check_known({"max_removals", "max_removal_percent", "min_directory_fraction", "deactivate_after_days"})
    return SafetyConfig(
        max_removals=r.int_("max_removals", 500, 0, 10_000_000),
        max_removal_percent=r.float_("max_removal_percent", 5.0, 0.0, 100.0),
        min_directory_fraction=r.float_("min_directory_fraction", 0.9, 0.0, 1.0),
        deactivate_after_days=r.int_("deactivate_after_days", 30, 0, 36_500),
    )


def _sync(r: _Reader) -> SyncConfig:
    r.check_known({"concurrency", "state_dir", "audit_log", "full_read_hours"})
    state_dir = r.path_("state_dir", "./state")
    return SyncConfig(
        concurrency=r.int_("concurrency", 8, 1, 256),
        state_dir=state_dir,
        audit_log=r.path_("audit_log", os.path.join(state_dir, "audit.jsonl")),
        full_read_hours=r.float_("full_read_hours", 24.0, 0.0, 24.0 * 365),
    )


def _watch(r: _Reader) -> WatchConfig:
    r.check_known(
        {
            "poll_seconds",
            "debounce_seconds",
            "max_delay_seconds",
            "full_interval_seconds",
            "tidy_after_seconds",
            "fallback_seconds",
        }
    )
    poll = r.float_("poll_seconds", 1.0, 0.05, 3600.0)
    debounce = r.float_("debounce_seconds", 1.0, 0.0, 3600.0)
    max_delay = r.float_("max_delay_seconds", 10.0, 0.0, 86400.0)
    if max_delay < debounce:
        raise r.fail(
            "max_delay_seconds", f"must be at least debounce_seconds ({debounce:g}), not {max_delay:g}"
        )
    return WatchConfig(
        poll_seconds=poll,
        debounce_seconds=debounce,
        max_delay_seconds=max_delay,
        # Deletions on a server without change detection, and changes made on the Matrix side, show only in a
        # full run: at least daily.
        full_interval_seconds=r.float_("full_interval_seconds", 3600.0, 10.0, 86400.0),
        # While change detection cannot work: the roster read's interval, the bound on a leaver's wait.
        fallback_seconds=r.float_("fallback_seconds", 10.0, 1.0, 3600.0),
    )


def parse_config(data: Any, path: str = "<config>", *, base_dir: Path | None = None,
                 token_required: bool = False) -> Config:  # fmt: skip
    """Validate an already-loaded YAML document into a :class:`Config`."""
    root = _Reader(data, path, "", base_dir or Path.cwd())
    for k in root.data:
        if k not in _TOP_KEYS:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(_TOP_KEYS))})", path, k)
    hs = _homeserver(root.section("homeserver"), token_required=token_required)
    exclude_raw = root.data.get("exclude", []) or []
    if not isinstance(exclude_raw, list):
        raise ConfigError("must be a list of Matrix user IDs", path, "exclude")
    exclude: set[str] = set()
    for i, item in enumerate(exclude_raw):
        if not isinstance(item, str) or not _USER_ID.match(item):
            raise ConfigError(f"is not a Matrix user ID like @admin:{hs.server_name}: {item!r}", path,
                              f"exclude[{i}]")  # fmt: skip
        exclude.add(item)
    try:
        moderator = moderator_level(root.data)
    except ModeratorLevelError as e:
        raise ConfigError(e.message, path, e.key) from None
    layout = _layout(root.section("layout"), hs.server_name, moderator)
    bot = root.data.get("bot")
    if isinstance(bot, dict) and bot.get("user_id") and layout.max_room_size < 3:
        raise ConfigError(
            "must be at least 3 with a bot: the provisioner and the bot take a seat in every room",
            path,
            "layout.max_room_size",
        )
    try:
        search_index = index_path(root.data, path, base_dir=root.base_dir)
    except SearchConfigError as e:
        raise ConfigError(e.message, path, e.key) from None
    directory = _directory(root.section("directory"))
    if root.data.get("groups") is not None:
        groups = _groups(root.section("groups"), directory, moderator)
        directory = dataclasses.replace(directory, groups=groups)
    return Config(
        path=path,
        search_index=str(search_index) if search_index else None,
        homeserver=hs,
        directory=directory,
        layout=layout,
        safety=_safety(root.section("safety")),
        sync=_sync(root.section("sync")),
        exclude=frozenset(exclude),
        raw=root.data,
        watch=_watch(root.section("watch")),
    )


def load_config(path: str | os.PathLike[str], *, token_required: bool = False) -> Config:
    """Read and validate the YAML file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"is not valid YAML: {e}", str(p)) from None
    return parse_config(data, str(p), base_dir=p.resolve().parent, token_required=token_required)
