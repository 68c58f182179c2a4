"""Typed actions: the plan is an ordered list of these, printed for review, saved as JSON, and applied.

Rooms and spaces are referred to by their *key* (``<unit key>#<shard>`` for rooms, the unit key for spaces),
not by room ID: a room created earlier in the same plan has no ID when the plan is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, assert_never, get_args

RoomKind = Literal["room", "space"]


@dataclass(frozen=True, slots=True)
class CreateUser:
    kind: ClassVar[str] = "create_user"
    user_id: str
    anchor: str
    displayname: str
    profile: tuple[tuple[str, str | None], ...] = ()
    cause: str = "new in the directory"


@dataclass(frozen=True, slots=True)
class UpdateUser:
    """Display name and/or custom profile fields differ from the directory."""

    kind: ClassVar[str] = "update_user"
    user_id: str
    displayname: str | None = None
    profile: tuple[tuple[str, str | None], ...] = ()
    anchor: str | None = None  # set when adopting an existing account: write its external id
    cause: str = "changed in the directory"


@dataclass(frozen=True, slots=True)
class LockUser:
    kind: ClassVar[str] = "lock_user"
    user_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class UnlockUser:
    kind: ClassVar[str] = "unlock_user"
    user_id: str
    cause: str = "back in the directory"


@dataclass(frozen=True, slots=True)
class DeactivateUser:
    kind: ClassVar[str] = "deactivate_user"
    user_id: str
    locked_since: float
    cause: str = "locked longer than the grace period"


@dataclass(frozen=True, slots=True)
class CreateRoom:
    kind: ClassVar[str] = "create_room"
    key: str
    room_kind: RoomKind
    unit_key: str
    shard: int
    name: str
    alias: str
    topic: str
    parent_key: str | None
    power_users: tuple[tuple[str, int], ...]
    encrypted: bool
    cause: str = "new unit or shard"
    room_version: str | None = None  # layout.room_version; None: the server's default
    # The levels given to people (the provisioner's own excluded), recorded in the marker: see UpdateRoom.
    raised: tuple[tuple[str, int], ...] = ()
    purpose: str = "unit"  # the marker's kind for rooms: "unit" rooms say "room"; "group", "announcements"
    # Announcement channels: the level needed to post (heads, moderators, the bot); None: anyone may.
    post_level: int | None = None


# Every managed room and space: members read its history, nobody without a token reads anything
# ("world_readable" would give anyone holding the room ID its name, topic and member count).
MEMBERS_ONLY = "shared"


@dataclass(frozen=True, slots=True)
class UpdateRoom:
    """Changed name, topic, alias, power levels, join rule or history visibility; ``None``: unchanged.

    ``lowered`` are users whose level the provisioner itself raised (with that level) and who no longer
    hold the role: their entry leaves ``power_levels.users`` (back to the default). ``raised`` is the new
    record of the levels the provisioner gave, kept in the marker state so that it never lowers a level an
    administrator set by hand; ``None``: the record is unchanged.
    """

    kind: ClassVar[str] = "update_room"
    key: str
    name: str | None = None
    topic: str | None = None
    alias: str | None = None
    power_users: tuple[tuple[str, int], ...] | None = None
    join_rule: str | None = None
    history_visibility: str | None = None
    cause: str = "changed in the directory"
    lowered: tuple[tuple[str, int], ...] = ()
    raised: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class LinkChild:
    kind: ClassVar[str] = "link_child"
    parent_key: str
    child_key: str
    child_kind: RoomKind
    cause: str = "layout"


@dataclass(frozen=True, slots=True)
class UnlinkChild:
    kind: ClassVar[str] = "unlink_child"
    parent_key: str
    child_room_id: str
    cause: str = "no longer in this unit"


@dataclass(frozen=True, slots=True)
class Join:
    kind: ClassVar[str] = "join"
    room_key: str
    room_kind: RoomKind
    user_id: str
    cause: str = "member of the unit"


@dataclass(frozen=True, slots=True)
class Kick:
    kind: ClassVar[str] = "kick"
    room_key: str
    room_kind: RoomKind
    user_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class ExemptRateLimit:
    """Lift Synapse's rate limits for a service account (the provisioner, the event bot).

    With Synapse's defaults (0.2 messages/s, bursts of 10) the bot would need minutes to send one event's
    reminders to a department, and the provisioner hours to join a city into its rooms.
    """

    kind: ClassVar[str] = "exempt_rate_limit"
    user_id: str
    cause: str = "service account"


@dataclass(frozen=True, slots=True)
class SaveRegistry:
    """Record anchor → localpart (and lock dates) on the server, so IDs stay stable across runs."""

    kind: ClassVar[str] = "save_registry"
    entries: tuple[tuple[str, str, float | None, str | None], ...]  # anchor, localpart, locked_since, profile
    cause: str = "bookkeeping"


Action: TypeAlias = (
    CreateUser | UpdateUser | LockUser | UnlockUser | DeactivateUser | CreateRoom | UpdateRoom | LinkChild
    | UnlinkChild | Join | Kick | SaveRegistry | ExemptRateLimit
)  # fmt: skip

# Derived from the union, so a new action is known to the plan file as soon as it is part of ``Action``.
ACTION_TYPES: dict[str, type[Action]] = {t.kind: t for t in get_args(Action)}

REMOVALS = frozenset({"lock_user", "kick", "deactivate_user"})


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def action_to_dict(action: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": action.kind}
    out.update(dataclasses.asdict(action))
    return out


def action_from_dict(data: Mapping[str, Any]) -> Action:
    kind = data.get("kind")
    cls = ACTION_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown action kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    args = {k: _tuplify(v) for k, v in data.items() if k in names}
    return cls(**args)


def describe(action: Action) -> str:
    """One human line for the plan summary."""
    match action:
        case CreateUser(user_id=u, displayname=d):
            return f"create {u} ({d})"
        case UpdateUser(user_id=u, displayname=d, profile=p, anchor=anchor):
            parts = ([f"name → {d}"] if d else []) + [f"{k} → {v or '∅'}" for k, v in p]
            parts += [f"adopt as {anchor}"] if anchor else []
            return f"update {u}: {', '.join(parts)}"
        case LockUser(user_id=u, cause=c):
            return f"lock {u} ({c})"
        case UnlockUser(user_id=u, cause=c):
            return f"unlock {u} ({c})"
        case DeactivateUser(user_id=u):
            return f"deactivate {u} (locked longer than the grace period)"
        case CreateRoom(room_kind=k, name=n, alias=a):
            return f"create {k} {n} #{a}"
        case UpdateRoom(key=k, name=n, topic=t, alias=a, power_users=p, join_rule=j, history_visibility=h):
            what = [x for x, v in (("name", n), ("topic", t), ("alias", a), ("power levels", p),
                                   ("join rule", j), ("history visibility", h)) if v is not None]  # fmt: skip
            what += [f"lower {u} from {lvl} ({action.cause})" for u, lvl in action.lowered]
            return f"update {k}: {', '.join(what)}"
        case LinkChild(parent_key=p, child_key=c):
            return f"link {c} under {p}"
        case UnlinkChild(parent_key=p, child_room_id=c):
            return f"unlink {c} from {p}"
        case Join(room_key=r, user_id=u):
            return f"join {u} → {r}"
        case Kick(room_key=r, user_id=u, cause=c):
            return f"kick {u} from {r} ({c})"
        case SaveRegistry(entries=e):
            return f"record {len(e)} identity entries"
        case ExemptRateLimit(user_id=u, cause=c):
            return f"exempt {u} from rate limits ({c})"
        case _:
            # mypy proves this unreachable; a new action without a case above fails the type check here.
            assert_never(action)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    fingerprint: str  # hash of the directory read and the observed server state the plan was made from
    created_at: float
    notes: tuple[str, ...] = field(default=())
    held_removals: int = 0  # removals left out because the directory read was not trustworthy
    # The content digest a saved file carried (``None`` for a plan made in this process): a plan whose
    # content no longer hashes to it was edited after it was made.
    saved_digest: str | None = field(default=None, compare=False)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.kind] = out.get(a.kind, 0) + 1
        return out

    def removals(self) -> int:
        return sum(1 for a in self.actions if a.kind in REMOVALS)

    def lowerings(self) -> int:
        """Power levels taken back: each is a right someone loses, held by the same rails as removals."""
        return sum(len(a.lowered) for a in self.actions if isinstance(a, UpdateRoom))

    def _content(self) -> dict[str, Any]:
        return {
            "version": 1,
            "fingerprint": self.fingerprint,
            "created_at": self.created_at,
            "notes": list(self.notes),
            "held_removals": self.held_removals,
            "actions": [action_to_dict(a) for a in self.actions],
        }

    def content_digest(self) -> str:
        """SHA-256 over the inputs' fingerprint *and* every action: what a saved plan's file must hash to."""
        canonical = json.dumps(self._content(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({**self._content(), "digest": self.content_digest()}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a civmatrix plan (version 1)")
        return cls(
            actions=tuple(action_from_dict(a) for a in data["actions"]),
            fingerprint=str(data["fingerprint"]),
            created_at=float(data["created_at"]),
            notes=tuple(data.get("notes", ())),
            held_removals=int(data.get("held_removals", 0)),
            saved_digest=str(data["digest"]) if data.get("digest") is not None else None,
        )
