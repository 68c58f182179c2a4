"""Typed answers of the homeserver: small frozen dataclasses parsed at the boundary, and the one place a
malformed answer turns into :class:`~bridge.matrix.errors.UnexpectedResponse`.

Each type has a ``from_dict`` that raises :class:`Shape` for a missing or mistyped field; :func:`parse` runs
such a parser on the body of one request and names that request in the error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Concatenate, ParamSpec, TypeVar

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


@dataclass(frozen=True, slots=True)
class WhoAmI:
    user_id: str
    device_id: str | None
    is_guest: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhoAmI:
        return cls(str_field(data, "user_id"), opt_str_field(data, "device_id"), bool_field(data, "is_guest"))

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One row of the admin user list."""

    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    user_type: str | None
    is_guest: bool
    creation_ts: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserSummary:
        return cls(
            user_id=str_field(data, "name"),
            displayname=opt_str_field(data, "displayname"),
            admin=bool_field(data, "admin"),
            deactivated=bool_field(data, "deactivated"),
            locked=bool_field(data, "locked"),
            user_type=opt_str_field(data, "user_type"),
            is_guest=bool_field(data, "is_guest"),
            creation_ts=int_field(data, "creation_ts"),
        )


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of the admin user list; ``next_token`` is None on the last page."""

    users: tuple[UserSummary, ...]
    next_token: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserPage:
        token = data.get("next_token")
        users = tuple(UserSummary.from_dict(u) for u in list_field(data, "users"))
        return cls(users, None if token is None else str(token))


@dataclass(frozen=True, slots=True)
class ExternalId:
    """A link to an identity provider (``auth_provider`` e.g. ``ldap``, ``external_id`` e.g. an entryUUID)."""

    auth_provider: str
    external_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExternalId:
        return cls(str_field(data, "auth_provider"), str_field(data, "external_id"))

    def to_dict(self) -> dict[str, str]:
        return {"auth_provider": self.auth_provider, "external_id": self.external_id}


@dataclass(frozen=True, slots=True)
class UserDetails:
    """One user from ``GET/PUT /_synapse/admin/v2/users/<id>``."""

    user_id: str
    displayname: str | None
    admin: bool
    deactivated: bool
    locked: bool
    user_type: str | None
    external_ids: tuple[ExternalId, ...]
    creation_ts: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserDetails:
        ext = data.get("external_ids") or []
        if not isinstance(ext, list):
            raise Shape("field 'external_ids' is not a list")
        return cls(
            user_id=str_field(data, "name"),
            displayname=opt_str_field(data, "displayname"),
            admin=bool_field(data, "admin"),
            deactivated=bool_field(data, "deactivated"),
            locked=bool_field(data, "locked"),
            user_type=opt_str_field(data, "user_type"),
            external_ids=tuple(ExternalId.from_dict(e) for e in ext),
            creation_ts=int_field(data, "creation_ts"),
        )


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
        return cls(
            room_id=str_field(data, "room_id"),
            name=opt_str_field(data, "name"),
            canonical_alias=opt_str_field(data, "canonical_alias"),
            joined_members=int_field(data, "joined_members"),
            joined_local_members=int_field(data, "joined_local_members"),
            creator=opt_str_field(data, "creator"),
            room_type=opt_str_field(data, "room_type"),
            join_rules=opt_str_field(data, "join_rules"),
            encryption=opt_str_field(data, "encryption"),
            public=bool_field(data, "public"),
            state_events=int_field(data, "state_events"),
        )


@dataclass(frozen=True, slots=True)
class RoomPage:
    """One page of the admin room list; ``next_batch`` is None on the last page."""

    rooms: tuple[RoomSummary, ...]
    next_batch: int | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoomPage:
        batch = data.get("next_batch")
        rooms = tuple(RoomSummary.from_dict(r) for r in list_field(data, "rooms"))
        if batch is None:
            return cls(rooms, None)
        try:
            return cls(rooms, int(str(batch)))
        except ValueError:
            raise Shape(f"field 'next_batch' is {batch!r}, expected an integer") from None


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
        return cls(
            type=str_field(data, "type"),
            state_key=str_field(data, "state_key"),
            content=MappingProxyType(object_field(data, "content")),
            sender=str_field(data, "sender"),
            event_id=str_field(data, "event_id"),
        )


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
