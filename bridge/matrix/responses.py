"""Typed answers of the homeserver: small frozen dataclasses parsed at the boundary, and the one place a
malformed answer turns into :class:`~bridge.matrix.errors.UnexpectedResponse`.

Each type has a ``from_dict`` that raises :class:`Shape` for a missing or mistyped field; :func:`parse` runs
such a parser on the body of one request and names that request in the error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar

from bridge.matrix.errors import UnexpectedResponse
from bridge.matrix.transport import JsonValue, Request

T = TypeVar("T")
P = ParamSpec("P")


class Shape(Exception):
    """A response field is missing or of the wrong type (turned into UnexpectedResponse with the path)."""


def str_field(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise Shape(f"field {key!r} is {type(value).__name__}, expected a string")
    return value


def opt_str_field(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Shape(f"field {key!r} is {type(value).__name__}, expected a string or null")
    return value


def bool_field(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    # Synapse's admin API returns 0/1 for some flags on SQLite.
    if isinstance(value, bool | int):
        return bool(value)
    raise Shape(f"field {key!r} is {type(value).__name__}, expected a boolean")


def int_field(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise Shape(f"field {key!r} is {type(value).__name__}, expected an integer")
    return value


def object_field(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise Shape(f"field {key!r} is {type(value).__name__}, expected an object")
    return value


def list_field(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise Shape(f"field {key!r} is {type(value).__name__}, expected a list")
    return value


# How a field is read, by its annotation (a string: every module here uses postponed annotations).
_SCALARS: Final[Mapping[str, Callable[[Mapping[str, Any], str], Any]]] = {
    "str": str_field,
    "str | None": opt_str_field,
    "bool": bool_field,
    "int": int_field,
}


def scalars(
    cls: type[Any],
    data: Mapping[str, Any],
    *,
    renamed: Mapping[str, str] | None = None,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The constructor arguments of dataclass ``cls``, each field read from ``data`` by its annotation.

    ``renamed`` maps a field to the key the server calls it (``user_id`` ← ``name``); ``given`` holds the
    fields the caller parsed itself (nested objects). Only ``str``, ``str | None``, ``bool`` and ``int``
    fields are read here, so a new field of another type fails loudly the first time it is parsed.
    """
    renamed = renamed or {}
    args = dict(given or {})
    for f in dataclasses.fields(cls):
        if f.name in args:
            continue
        reader = _SCALARS.get(str(f.type))
        if reader is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no reader for a field of type {f.type}")
        args[f.name] = reader(data, renamed.get(f.name, f.name))
    return args


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of an admin list; ``next`` is where the following page starts, None after the last."""

    items: tuple[T, ...]
    next: str | None


def page(
    data: Mapping[str, Any], items_key: str, next_key: str, item: Callable[[Mapping[str, Any]], T]
) -> Page[T]:
    """A :class:`Page` of ``data[items_key]`` read by ``item``, continued at ``data[next_key]``."""
    token = data.get(next_key)
    return Page(tuple(item(x) for x in list_field(data, items_key)), None if token is None else str(token))


@dataclass(frozen=True, slots=True)
class WhoAmI:
    user_id: str
    device_id: str | None
    is_guest: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhoAmI:
        return cls(**scalars(cls, data))

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class Account:
    """What both admin user endpoints (the list and the single user) say about an account."""

    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    user_type: str | None
    creation_ts: int


@dataclass(frozen=True, slots=True)
class UserSummary(Account):
    """One row of the admin user list."""

    is_guest: bool
    avatar_url: str | None = None  # the person's own picture (mxc://), for the search service's results

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserSummary:
        return cls(**scalars(cls, data, renamed={"user_id": "name"}))


@dataclass(frozen=True, slots=True)
class ExternalId:
    """A link to an identity provider (``auth_provider`` e.g. ``ldap``, ``external_id`` e.g. an entryUUID)."""

    auth_provider: str
    external_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExternalId:
        return cls(**scalars(cls, data))

    def to_dict(self) -> dict[str, str]:
        return {"auth_provider": self.auth_provider, "external_id": self.external_id}


@dataclass(frozen=True, slots=True)
class UserDetails(Account):
    """One user from ``GET/PUT /_synapse/admin/v2/users/<id>``."""

    external_ids: tuple[ExternalId, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserDetails:
        ext = data.get("external_ids") or []
        if not isinstance(ext, list):
            raise Shape("field 'external_ids' is not a list")
        external_ids = tuple(ExternalId.from_dict(e) for e in ext)
        return cls(**scalars(cls, data, renamed={"user_id": "name"}, given={"external_ids": external_ids}))


@dataclass(frozen=True, slots=True)
class PutUserResult:
    """The user after ``put_user``; ``created`` is true when the PUT made a new account (201)."""

    user: UserDetails
    created: bool


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One row of the admin room list."""

    room_id: str
    name: str | None
    canonical_alias: str | None
    joined_members: int
    joined_local_members: int
    creator: str | None
    room_type: str | None
    join_rules: str | None
    encryption: str | None
    public: bool
    state_events: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoomSummary:
        return cls(**scalars(cls, data))


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A current state event of a room. ``content`` is the event's JSON content, parsed by the caller."""

    type: str
    state_key: str
    content: Mapping[str, JsonValue]
    sender: str
    event_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateEvent:
        content = MappingProxyType(object_field(data, "content"))
        return cls(**scalars(cls, data, given={"content": content}))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server lets clients do, as far as the sync cares (profile fields, room versions)."""

    profile_fields_enabled: bool
    profile_fields_allowed: frozenset[str] | None
    profile_fields_disallowed: frozenset[str]
    default_room_version: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        caps = object_field(data, "capabilities")
        fields = caps.get("m.profile_fields") or caps.get("uk.tcpip.msc4133.profile_fields")
        enabled = False
        allowed: frozenset[str] | None = None
        disallowed: frozenset[str] = frozenset()
        if isinstance(fields, dict):
            enabled = bool_field(fields, "enabled")
            if isinstance(fields.get("allowed"), list):
                allowed = frozenset(str(x) for x in fields["allowed"])
            if isinstance(fields.get("disallowed"), list):
                disallowed = frozenset(str(x) for x in fields["disallowed"])
        versions = caps.get("m.room_versions")
        default = opt_str_field(versions, "default") if isinstance(versions, dict) else None
        return cls(enabled, allowed, disallowed, default)

    def can_set_profile_field(self, name: str) -> bool:
        if not self.profile_fields_enabled or name in self.profile_fields_disallowed:
            return False
        return self.profile_fields_allowed is None or name in self.profile_fields_allowed


def parse(
    req: Request,
    body: Mapping[str, Any],
    parser: Callable[Concatenate[Mapping[str, Any], P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``parser(body, ...)``, or :class:`UnexpectedResponse` naming ``req`` when the body has the wrong shape.

    The one parse-or-raise step of every typed call: ``parse(req, body, WhoAmI.from_dict)``,
    ``parse(req, body, str_field, "room_id")``.
    """
    try:
        return parser(body, *args, **kwargs)
    except Shape as exc:
        raise UnexpectedResponse(str(exc), method=req.method, path=req.path) from None


def str_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A list field of ids (``joined_rooms``, ``members``) as strings."""
    return tuple(str(x) for x in list_field(data, key))


def state_events(data: Mapping[str, Any]) -> tuple[StateEvent, ...]:
    """The ``state`` list of the admin room-state answer."""
    return tuple(StateEvent.from_dict(e) for e in list_field(data, "state"))
