"""Persistence of the event bot: SQLite by default (one file, WAL), PostgreSQL as an option.

Both speak the same SQL through DB-API; every call runs in a worker thread (``asyncio.to_thread``) behind one
lock, because a DB-API connection must not be used by two threads at once. Writes are grouped: the caller
passes a list of small write operations and they commit in **one** transaction, so "answer stored" and
"Matrix event marked processed" can never be separated by a crash (no replay, no loss).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, assert_never

from bridge.events.model import (
    Answer,
    Checkin,
    Event,
    EventID,
    Invitee,
    Lang,
    MatrixEventID,
    RoomID,
    Rsvp,
    Source,
    UserID,
)
from bridge.events.poll import Vote
from bridge.events.reminders import ReminderKey

T = TypeVar("T")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, starts_at BIGINT NOT NULL, place TEXT, capacity INTEGER,
        deadline BIGINT, organiser TEXT NOT NULL, origin_room TEXT NOT NULL, audience_unit TEXT,
        private INTEGER NOT NULL, lang TEXT NOT NULL, created_at BIGINT NOT NULL, cancelled INTEGER NOT NULL,
        sequence INTEGER NOT NULL, timezone TEXT NOT NULL, checkin_closed INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS events_start ON events (starts_at)",
    """CREATE TABLE IF NOT EXISTS audience (
        event_id TEXT NOT NULL, room_id TEXT NOT NULL, poll_event_id TEXT,
        PRIMARY KEY (event_id, room_id))""",
    "CREATE INDEX IF NOT EXISTS audience_poll ON audience (poll_event_id)",
    "CREATE INDEX IF NOT EXISTS audience_room ON audience (room_id)",
    """CREATE TABLE IF NOT EXISTS answers (
        event_id TEXT NOT NULL, user_id TEXT NOT NULL, answer TEXT NOT NULL, answered_at BIGINT NOT NULL,
        seq BIGINT NOT NULL, source TEXT NOT NULL, source_event_id TEXT, room_id TEXT,
        display_name TEXT NOT NULL, department TEXT NOT NULL, job_title TEXT NOT NULL,
        phone TEXT NOT NULL DEFAULT '', PRIMARY KEY (event_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS reminders_sent (
        event_id TEXT NOT NULL, slot BIGINT NOT NULL, offset_s INTEGER NOT NULL, target TEXT NOT NULL,
        sent_at BIGINT NOT NULL, PRIMARY KEY (event_id, slot, offset_s, target))""",
    """CREATE TABLE IF NOT EXISTS processed (
        matrix_event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, processed_at BIGINT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS rooms (room_id TEXT PRIMARY KEY, since_ts BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dm_rooms (user_id TEXT PRIMARY KEY, room_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS anchors (
        matrix_event_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, room_id TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, payload TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS outbox_order ON outbox (created_at, id)",
    # Outbox entries the homeserver refused for good (the bot left the room, the room is gone): kept with the
    # reason so an operator sees them in `bridge status` instead of them vanishing from a log.
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, failed_at BIGINT NOT NULL, payload TEXT NOT NULL,
        reason TEXT NOT NULL)""",
    # Every poll response seen, so a redacted vote can fall back to the one before it (poll Rule 5).
    """CREATE TABLE IF NOT EXISTS poll_votes (
        matrix_event_id TEXT PRIMARY KEY, poll_event_id TEXT NOT NULL, sender TEXT NOT NULL,
        ts BIGINT NOT NULL, selections TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS poll_votes_poll ON poll_votes (poll_event_id, sender)",
    # The people an organiser named, and who was there. Added after the first release: an older store gets
    # these tables on open (CREATE ... IF NOT EXISTS), with nothing in them.
    """CREATE TABLE IF NOT EXISTS invitees (
        event_id TEXT NOT NULL, user_id TEXT NOT NULL, required INTEGER NOT NULL, display_name TEXT NOT NULL,
        invited_at BIGINT NOT NULL, nudged_at BIGINT, PRIMARY KEY (event_id, user_id))""",
    "CREATE INDEX IF NOT EXISTS invitees_user ON invitees (user_id)",
    """CREATE TABLE IF NOT EXISTS checkins (
        event_id TEXT NOT NULL, user_id TEXT NOT NULL, at BIGINT NOT NULL, by_user TEXT NOT NULL,
        display_name TEXT NOT NULL, PRIMARY KEY (event_id, user_id))""",
    "CREATE INDEX IF NOT EXISTS answers_user ON answers (user_id)",
]

# Columns added after a table first shipped: (table, column, definition). A store created by an older
# version gets them on open; CREATE TABLE IF NOT EXISTS alone would leave its tables as they were.
COLUMNS_ADDED = [
    ("answers", "phone", "TEXT NOT NULL DEFAULT ''"),
    ("events", "checkin_closed", "INTEGER NOT NULL DEFAULT 0"),
]


# --- write operations --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutEvent:
    event: Event


@dataclass(frozen=True, slots=True)
class PutAudience:
    event_id: EventID
    room_id: RoomID


@dataclass(frozen=True, slots=True)
class SetPoll:
    event_id: EventID
    room_id: RoomID
    poll_event_id: MatrixEventID


@dataclass(frozen=True, slots=True)
class SetAnchor:
    """A message that announces ``event_id`` (besides the poll): reactions to it are answers too."""

    matrix_event_id: MatrixEventID
    event_id: EventID
    room_id: RoomID


@dataclass(frozen=True, slots=True)
class PutAnswer:
    rsvp: Rsvp


@dataclass(frozen=True, slots=True)
class DeleteAnswer:
    event_id: EventID
    user_id: UserID


@dataclass(frozen=True, slots=True)
class MarkProcessed:
    matrix_event_id: MatrixEventID
    room_id: RoomID
    at: datetime


@dataclass(frozen=True, slots=True)
class MarkReminder:
    key: ReminderKey
    at: datetime


@dataclass(frozen=True, slots=True)
class SetRoomSince:
    room_id: RoomID
    since_ts: int  # origin_server_ts in ms; earlier events in this room are history and ignored


@dataclass(frozen=True, slots=True)
class SetDmRoom:
    user_id: UserID
    room_id: RoomID


@dataclass(frozen=True, slots=True)
class SetValue:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class PutOutbox:
    """An effect to send; ``id`` doubles as the Matrix transaction id, so it must be unique and stable."""

    id: str
    at: datetime
    payload: str


@dataclass(frozen=True, slots=True)
class DeleteOutbox:
    id: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Copy outbox entry ``id`` to the dead letters; pair it with :class:`DeleteOutbox` in the same write."""

    id: str
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class PutVote:
    matrix_event_id: MatrixEventID
    poll_event_id: MatrixEventID
    sender: UserID
    ts: int  # origin_server_ts, ms
    selections: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteVote:
    matrix_event_id: str


@dataclass(frozen=True, slots=True)
class DropQueuedReminders:
    """Unsent reminders of an event (outbox ids ``rem:<event>:...``): it was cancelled or moved."""

    event_id: EventID


@dataclass(frozen=True, slots=True)
class PutInvitee:
    """Invite, or change required/optional; an earlier nudge is kept (the rate limit must hold)."""

    invitee: Invitee


@dataclass(frozen=True, slots=True)
class DeleteInvitee:
    event_id: EventID
    user_id: UserID


@dataclass(frozen=True, slots=True)
class DeleteAudience:
    """The event is no longer announced in ``room_id`` (its audience was edited)."""

    event_id: EventID
    room_id: RoomID


@dataclass(frozen=True, slots=True)
class DropAnchors:
    """Reactions to the event's messages in ``room_id`` no longer answer it (pair with DeleteAudience)."""

    event_id: EventID
    room_id: RoomID


@dataclass(frozen=True, slots=True)
class MarkNudged:
    event_id: EventID
    user_id: UserID
    at: datetime


@dataclass(frozen=True, slots=True)
class PutCheckin:
    """The first mark stands: marking someone again changes nothing."""

    checkin: Checkin


Write = (
    PutEvent
    | PutAudience
    | SetPoll
    | SetAnchor
    | PutAnswer
    | DeleteAnswer
    | MarkProcessed
    | MarkReminder
    | SetRoomSince
    | SetDmRoom
    | SetValue
    | PutOutbox
    | DeleteOutbox
    | DeadLetter
    | PutVote
    | DeleteVote
    | DropQueuedReminders
    | PutInvitee
    | DeleteInvitee
    | DeleteAudience
    | DropAnchors
    | MarkNudged
    | PutCheckin
)


LAST_SYNC_KEY = "last_sync_at"  # kv: when the bot last handled a sync (ISO 8601, UTC), for `bridge status`
REMINDER_OUTBOX = "rem:"  # outbox ids of reminders start with this, then the event ID


def reminder_outbox_prefix(eid: EventID) -> str:
    return f"{REMINDER_OUTBOX}{eid}:"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _ms(dt: datetime) -> int:
    """Exact microseconds since the epoch: a rounded time read back could sort after a later answer."""
    return (dt - _EPOCH) // _US


def _dt(us: int | None) -> datetime | None:
    return None if us is None else _dt1(us)


def _dt1(us: int) -> datetime:
    return _EPOCH + us * _US


def _sql_for(w: Write) -> tuple[str, tuple[Any, ...]]:
    match w:
        case PutEvent(e):
            return (
                """INSERT INTO events (id, title, starts_at, place, capacity, deadline, organiser,
                    origin_room, audience_unit, private, lang, created_at, cancelled, sequence, timezone,
                    checkin_closed)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET title = excluded.title, starts_at = excluded.starts_at,
                    place = excluded.place, capacity = excluded.capacity, deadline = excluded.deadline,
                    audience_unit = excluded.audience_unit, private = excluded.private,
                    cancelled = excluded.cancelled, sequence = excluded.sequence,
                    checkin_closed = excluded.checkin_closed""",
                (
                    e.id, e.title, _ms(e.starts_at), e.place, e.capacity,
                    None if e.deadline is None else _ms(e.deadline), e.organiser, e.origin_room,
                    e.audience_unit, int(e.private), e.lang, _ms(e.created_at), int(e.cancelled), e.sequence,
                    e.timezone, int(e.checkin_closed),
                ),
            )  # fmt: skip
        case PutAudience(eid, room):
            return (
                "INSERT INTO audience (event_id, room_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (eid, room),
            )
        case SetPoll(eid, room, poll):
            return (
                """INSERT INTO audience (event_id, room_id, poll_event_id) VALUES (?, ?, ?)
                   ON CONFLICT (event_id, room_id) DO UPDATE SET poll_event_id = excluded.poll_event_id""",
                (eid, room, poll),
            )
        case SetAnchor(mid, eid, room):
            return (
                "INSERT INTO anchors (matrix_event_id, event_id, room_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (mid, eid, room),
            )
        case PutAnswer(r):
            return (
                """INSERT INTO answers (event_id, user_id, answer, answered_at, seq, source, source_event_id,
                    room_id, display_name, department, job_title, phone)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (event_id, user_id) DO UPDATE SET answer = excluded.answer,
                    answered_at = excluded.answered_at, seq = excluded.seq, source = excluded.source,
                    source_event_id = excluded.source_event_id, room_id = excluded.room_id,
                    display_name = excluded.display_name, department = excluded.department,
                    job_title = excluded.job_title, phone = excluded.phone""",
                (
                    r.event_id, r.user_id, r.answer.value, _ms(r.answered_at), r.seq, r.source.value,
                    r.source_event_id, r.room_id, r.display_name, r.department, r.job_title, r.phone,
                ),
            )  # fmt: skip
        case DeleteAnswer(eid, user):
            return ("DELETE FROM answers WHERE event_id = ? AND user_id = ?", (eid, user))
        case MarkProcessed(mid, room, at):
            return (
                "INSERT INTO processed (matrix_event_id, room_id, processed_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (mid, room, _ms(at)),
            )
        case MarkReminder(k, at):
            return (
                "INSERT INTO reminders_sent (event_id, slot, offset_s, target, sent_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (k.event_id, k.slot, k.offset_s, k.target, _ms(at)),
            )
        case SetRoomSince(room, ts):
            return ("INSERT INTO rooms (room_id, since_ts) VALUES (?, ?) ON CONFLICT DO NOTHING", (room, ts))
        case SetDmRoom(user, room):
            return (
                "INSERT INTO dm_rooms (user_id, room_id) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
                (user, room),
            )
        case SetValue(k, v):
            return (
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (k, v),
            )
        case PutOutbox(oid, at, payload):
            return (
                "INSERT INTO outbox (id, created_at, payload) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (oid, _ms(at), payload),
            )
        case DeleteOutbox(oid):
            return ("DELETE FROM outbox WHERE id = ?", (oid,))
        case DeadLetter(oid, at, reason):
            return (
                "INSERT INTO dead_letters (id, created_at, failed_at, payload, reason) "
                "SELECT id, created_at, ?, payload, ? FROM outbox WHERE id = ? ON CONFLICT DO NOTHING",
                (_ms(at), reason[:2000], oid),
            )
        case PutVote(vid, poll, sender, ts, sel):
            return (
                "INSERT INTO poll_votes (matrix_event_id, poll_event_id, sender, ts, selections) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (vid, poll, sender, ts, json.dumps(list(sel))),
            )
        case DeleteVote(vid):
            return ("DELETE FROM poll_votes WHERE matrix_event_id = ?", (vid,))
        case DropQueuedReminders(eid):
            prefix = reminder_outbox_prefix(eid)
            return ("DELETE FROM outbox WHERE substr(id, 1, ?) = ?", (len(prefix), prefix))
        case PutInvitee(i):
            return (
                """INSERT INTO invitees (event_id, user_id, required, display_name, invited_at, nudged_at)
                   VALUES (?, ?, ?, ?, ?, NULL)
                   ON CONFLICT (event_id, user_id) DO UPDATE SET required = excluded.required,
                    display_name = excluded.display_name""",
                (i.event_id, i.user_id, int(i.required), i.display_name, _ms(i.invited_at)),
            )
        case DeleteInvitee(eid, user):
            return ("DELETE FROM invitees WHERE event_id = ? AND user_id = ?", (eid, user))
        case DeleteAudience(eid, room):
            return ("DELETE FROM audience WHERE event_id = ? AND room_id = ?", (eid, room))
        case DropAnchors(eid, room):
            return ("DELETE FROM anchors WHERE event_id = ? AND room_id = ?", (eid, room))
        case MarkNudged(eid, user, at):
            return (
                "UPDATE invitees SET nudged_at = ? WHERE event_id = ? AND user_id = ?",
                (_ms(at), eid, user),
            )
        case PutCheckin(c):
            return (
                "INSERT INTO checkins (event_id, user_id, at, by_user, display_name) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (c.event_id, c.user_id, _ms(c.at), c.by, c.display_name),
            )
        case _:
            assert_never(w)


_EVENT_COLS = (
    "id, title, starts_at, place, capacity, deadline, organiser, origin_room, audience_unit, private, lang, "
    "created_at, cancelled, sequence, timezone, checkin_closed"
)
_INVITEE_COLS = "event_id, user_id, required, display_name, invited_at, nudged_at"
_ANSWER_COLS = (
    "event_id, user_id, answer, answered_at, seq, source, source_event_id, room_id, display_name, "
    "department, job_title, phone"
)


def _event(row: Sequence[Any]) -> Event:
    lang: Lang = "ru" if row[10] == "ru" else "en"
    return Event(
        id=EventID(row[0]),
        title=row[1],
        starts_at=_dt1(row[2]),
        place=row[3],
        capacity=row[4],
        deadline=_dt(row[5]),
        organiser=UserID(row[6]),
        origin_room=RoomID(row[7]),
        audience_unit=row[8],
        private=bool(row[9]),
        lang=lang,
        created_at=_dt1(row[11]),
        cancelled=bool(row[12]),
        sequence=row[13],
        timezone=row[14],
        checkin_closed=bool(row[15]),
    )


def _invitee(row: Sequence[Any]) -> Invitee:
    return Invitee(EventID(row[0]), UserID(row[1]), bool(row[2]), row[3], _dt1(row[4]), _dt(row[5]))


def _answer(row: Sequence[Any]) -> Rsvp:
    return Rsvp(
        event_id=EventID(row[0]),
        user_id=UserID(row[1]),
        answer=Answer(row[2]),
        answered_at=_dt1(row[3]),
        seq=row[4],
        source=Source(row[5]),
        source_event_id=None if row[6] is None else MatrixEventID(row[6]),
        room_id=None if row[7] is None else RoomID(row[7]),
        display_name=row[8],
        department=row[9],
        job_title=row[10],
        phone=row[11],
    )


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    created_at: datetime
    failed_at: datetime
    payload: str
    reason: str


class _Conn(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class Store:
    """The bot's database. Use :func:`open_store`; call :meth:`close` when done."""

    def __init__(self, connect: Callable[[], _Conn], placeholder: str, setup: Sequence[str] = ()) -> None:
        self._connect = connect
        self._ph = placeholder
        self._setup = setup
        self._conn: _Conn | None = None
        self._lock = threading.Lock()

    # -- plumbing --

    def _sql(self, sql: str) -> str:
        return sql if self._ph == "?" else re.sub(r"\?", self._ph, sql)

    def _run(self, fn: Callable[[Any], T]) -> T:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("store is closed")
            cur = self._conn.cursor()
            try:
                result = fn(cur)
                self._conn.commit()
                return result
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    async def _call(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self._run, fn)

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        q = self._sql(sql)

        def go(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(q, tuple(args))
            return [tuple(r) for r in cur.fetchall()]

        return await self._call(go)

    async def open(self) -> None:
        def go() -> None:
            conn = self._connect()
            cur = conn.cursor()
            for s in [*self._setup, *SCHEMA]:
                cur.execute(s)
            conn.commit()
            for table, column, definition in COLUMNS_ADDED:
                try:
                    cur.execute(f"SELECT {column} FROM {table} WHERE 1 = 0")
                except Exception:
                    conn.rollback()  # PostgreSQL refuses anything else in a failed transaction
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    conn.commit()
            cur.close()
            self._conn = conn

        await asyncio.to_thread(go)

    async def close(self) -> None:
        def go() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(go)

    # -- writes --

    async def write(self, ops: Iterable[Write]) -> None:
        """Apply all ``ops`` in one transaction."""
        stmts = [(self._sql(q), a) for q, a in map(_sql_for, ops)]

        def go(cur: Any) -> None:
            for q, a in stmts:
                cur.execute(q, a)

        await self._call(go)

    # -- reads --

    async def get_event(self, eid: EventID) -> Event | None:
        rows = await self._rows(f"SELECT {_EVENT_COLS} FROM events WHERE id = ?", (eid,))
        return _event(rows[0]) if rows else None

    async def event_ids(self) -> frozenset[str]:
        return frozenset(r[0] for r in await self._rows("SELECT id FROM events"))

    async def upcoming_in_room(self, room: RoomID, now: datetime) -> list[Event]:
        rows = await self._rows(
            f"""SELECT {_EVENT_COLS} FROM events WHERE cancelled = 0 AND starts_at > ?
                AND (origin_room = ? OR id IN (SELECT event_id FROM audience WHERE room_id = ?))
                ORDER BY starts_at, id""",
            (_ms(now), room, room),
        )
        return [_event(r) for r in rows]

    async def starting_between(self, start: datetime, end: datetime) -> list[Event]:
        rows = await self._rows(
            f"SELECT {_EVENT_COLS} FROM events WHERE cancelled = 0 AND starts_at > ? AND starts_at <= ? "
            "ORDER BY starts_at",
            (_ms(start), _ms(end)),
        )
        return [_event(r) for r in rows]

    async def first_starting_after(self, after: datetime) -> list[Event]:
        """The not-cancelled event(s) with the earliest start after ``after`` (ties all returned)."""
        rows = await self._rows(
            f"SELECT {_EVENT_COLS} FROM events WHERE cancelled = 0 AND starts_at = "
            "(SELECT MIN(starts_at) FROM events WHERE cancelled = 0 AND starts_at > ?)",
            (_ms(after),),
        )
        return [_event(r) for r in rows]

    async def answers(self, eid: EventID) -> list[Rsvp]:
        rows = await self._rows(
            f"SELECT {_ANSWER_COLS} FROM answers WHERE event_id = ? ORDER BY answered_at, seq", (eid,)
        )
        return [_answer(r) for r in rows]

    async def answers_for(self, eids: Sequence[EventID]) -> dict[EventID, list[Rsvp]]:
        out: dict[EventID, list[Rsvp]] = {e: [] for e in eids}
        if not eids:
            return out
        marks = ", ".join("?" for _ in eids)
        rows = await self._rows(
            f"SELECT {_ANSWER_COLS} FROM answers WHERE event_id IN ({marks}) ORDER BY answered_at, seq",
            tuple(eids),
        )
        for r in rows:
            a = _answer(r)
            out[a.event_id].append(a)
        return out

    async def answer_by_source(self, source_event_id: str) -> Rsvp | None:
        rows = await self._rows(
            f"SELECT {_ANSWER_COLS} FROM answers WHERE source_event_id = ?", (source_event_id,)
        )
        return _answer(rows[0]) if rows else None

    async def next_seq(self, eid: EventID) -> int:
        rows = await self._rows("SELECT COALESCE(MAX(seq), 0) FROM answers WHERE event_id = ?", (eid,))
        return int(rows[0][0]) + 1

    async def audience(self, eid: EventID) -> list[tuple[RoomID, MatrixEventID | None]]:
        rows = await self._rows(
            "SELECT room_id, poll_event_id FROM audience WHERE event_id = ? ORDER BY room_id", (eid,)
        )
        return [(RoomID(r[0]), None if r[1] is None else MatrixEventID(r[1])) for r in rows]

    async def audiences_for(self, eids: Sequence[EventID]) -> dict[EventID, list[RoomID]]:
        out: dict[EventID, list[RoomID]] = {e: [] for e in eids}
        if not eids:
            return out
        marks = ", ".join("?" for _ in eids)
        for eid, room in await self._rows(
            f"SELECT event_id, room_id FROM audience WHERE event_id IN ({marks})", tuple(eids)
        ):
            out[EventID(eid)].append(RoomID(room))
        return out

    async def event_by_poll(self, poll_event_id: str) -> EventID | None:
        """The event a poll or an announcement message belongs to (what reactions and votes point at)."""
        rows = await self._rows(
            "SELECT event_id FROM audience WHERE poll_event_id = ? "
            "UNION SELECT event_id FROM anchors WHERE matrix_event_id = ?",
            (poll_event_id, poll_event_id),
        )
        return EventID(rows[0][0]) if rows else None

    async def reminders_sent(self, eids: Sequence[EventID]) -> set[ReminderKey]:
        if not eids:
            return set()
        marks = ", ".join("?" for _ in eids)
        rows = await self._rows(
            f"SELECT event_id, slot, offset_s, target FROM reminders_sent WHERE event_id IN ({marks})",
            tuple(eids),
        )
        return {ReminderKey(EventID(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows}

    async def is_processed(self, mid: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM processed WHERE matrix_event_id = ?", (mid,)))

    async def room_since(self, room: RoomID) -> int | None:
        rows = await self._rows("SELECT since_ts FROM rooms WHERE room_id = ?", (room,))
        return int(rows[0][0]) if rows else None

    async def dm_room(self, user: UserID) -> RoomID | None:
        rows = await self._rows("SELECT room_id FROM dm_rooms WHERE user_id = ?", (user,))
        return RoomID(rows[0][0]) if rows else None

    async def outbox(self, limit: int = 100, *, reminders: bool | None = None) -> list[tuple[str, str]]:
        """Unsent effects, oldest first: (id, payload); only reminders, or all but reminders, if asked."""
        where = ""
        args: tuple[object, ...] = (limit,)
        if reminders is not None:
            where = f"WHERE substr(id, 1, ?) {'=' if reminders else '<>'} ?"
            args = (len(REMINDER_OUTBOX), REMINDER_OUTBOX, limit)
        sql = f"SELECT id, payload FROM outbox {where} ORDER BY created_at, id LIMIT ?"
        return [(str(r[0]), str(r[1])) for r in await self._rows(sql, args)]

    async def newest_outbox_entry(self, payload: str) -> str | None:
        """The id of the latest-written outbox entry with exactly this payload (edits superseding edits)."""
        rows = await self._rows(
            "SELECT id FROM outbox WHERE payload = ? ORDER BY created_at DESC, id DESC LIMIT 1", (payload,)
        )
        return str(rows[0][0]) if rows else None

    async def in_outbox(self, oid: str) -> bool:
        return bool(await self._rows("SELECT 1 FROM outbox WHERE id = ?", (oid,)))

    async def outbox_stats(self) -> tuple[int, datetime | None]:
        """How many entries wait in the outbox, and when the oldest was written."""
        rows = await self._rows("SELECT COUNT(*), MIN(created_at) FROM outbox")
        return int(rows[0][0]), _dt(rows[0][1])

    async def dead_letters(self, limit: int = 20) -> tuple[int, list[DeadLetterRow]]:
        """How many entries were given up on, and the latest ``limit`` of them."""
        total = int((await self._rows("SELECT COUNT(*) FROM dead_letters"))[0][0])
        rows = await self._rows(
            "SELECT id, created_at, failed_at, payload, reason FROM dead_letters "
            "ORDER BY failed_at DESC, id LIMIT ?",
            (limit,),
        )
        return total, [DeadLetterRow(r[0], _dt1(r[1]), _dt1(r[2]), r[3], r[4]) for r in rows]

    async def anchor(self, eid: EventID, room: RoomID) -> MatrixEventID | None:
        """The announcement text message of ``eid`` in ``room`` (what the count edits replace)."""
        rows = await self._rows(
            "SELECT matrix_event_id FROM anchors WHERE event_id = ? AND room_id = ? ORDER BY matrix_event_id",
            (eid, room),
        )
        return MatrixEventID(rows[0][0]) if rows else None

    async def open_polls(self, now: datetime) -> list[tuple[RoomID, MatrixEventID]]:
        """The polls of events not cancelled and not started yet: (room, poll event id)."""
        rows = await self._rows(
            "SELECT a.room_id, a.poll_event_id FROM audience a JOIN events e ON e.id = a.event_id "
            "WHERE e.cancelled = 0 AND e.starts_at > ? AND a.poll_event_id IS NOT NULL ORDER BY a.room_id",
            (_ms(now),),
        )
        return [(RoomID(r[0]), MatrixEventID(r[1])) for r in rows]

    async def votes(self, poll_event_id: str, sender: str) -> list[Vote]:
        rows = await self._rows(
            "SELECT matrix_event_id, sender, ts, selections FROM poll_votes "
            "WHERE poll_event_id = ? AND sender = ?",
            (poll_event_id, sender),
        )
        return [Vote(r[0], r[1], int(r[2]), tuple(json.loads(r[3]))) for r in rows]

    async def vote(self, matrix_event_id: str) -> tuple[MatrixEventID, UserID] | None:
        """The poll and the sender of a recorded response."""
        rows = await self._rows(
            "SELECT poll_event_id, sender FROM poll_votes WHERE matrix_event_id = ?", (matrix_event_id,)
        )
        return (MatrixEventID(rows[0][0]), UserID(rows[0][1])) if rows else None

    async def invitees(self, eid: EventID) -> list[Invitee]:
        rows = await self._rows(
            f"SELECT {_INVITEE_COLS} FROM invitees WHERE event_id = ? ORDER BY invited_at, user_id", (eid,)
        )
        return [_invitee(r) for r in rows]

    async def checkins(self, eid: EventID) -> list[Checkin]:
        rows = await self._rows(
            "SELECT event_id, user_id, at, by_user, display_name FROM checkins WHERE event_id = ? "
            "ORDER BY at, user_id",
            (eid,),
        )
        return [Checkin(EventID(r[0]), UserID(r[1]), _dt1(r[2]), UserID(r[3]), r[4]) for r in rows]

    async def invited_events(self, now: datetime) -> list[Event]:
        """Events not cancelled and not started that have invitees (the automatic nudge looks at these)."""
        rows = await self._rows(
            f"SELECT {_EVENT_COLS} FROM events WHERE cancelled = 0 AND starts_at > ? "
            "AND id IN (SELECT event_id FROM invitees) ORDER BY starts_at, id",
            (_ms(now),),
        )
        return [_event(r) for r in rows]

    async def upcoming_for(self, user: UserID, now: datetime) -> list[Event]:
        """Events not cancelled and not started that ``user`` is invited to or answered, in any room."""
        rows = await self._rows(
            f"""SELECT {_EVENT_COLS} FROM events WHERE cancelled = 0 AND starts_at > ?
                AND (id IN (SELECT event_id FROM invitees WHERE user_id = ?)
                     OR id IN (SELECT event_id FROM answers WHERE user_id = ?))
                ORDER BY starts_at, id""",
            (_ms(now), user, user),
        )
        return [_event(r) for r in rows]

    async def get_value(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None


def is_postgres(target: str) -> bool:
    return target.startswith(("postgres://", "postgresql://")) or "host=" in target or "dbname=" in target


def open_sqlite(path: str) -> Store:
    def connect() -> _Conn:
        conn = sqlite3.connect(path, check_same_thread=False)
        # WAL lets a reader (an operator's sqlite3 shell) look while the bot writes; NORMAL sync is durable
        # against process crashes, which is the failure mode that matters for "no replay, no loss".
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    return Store(connect, "?")


def open_postgres(dsn: str, schema: str | None = None) -> Store:
    """``schema`` keeps the bot's tables apart when the database is shared (and gives tests a clean slate)."""
    import psycopg2  # type: ignore[import-untyped]  # optional: only needed for PostgreSQL

    def connect() -> _Conn:
        conn: _Conn = psycopg2.connect(dsn)
        return conn

    setup: list[str] = []
    if schema is not None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
            raise ValueError(f"bad schema name {schema!r}")
        setup = [f"CREATE SCHEMA IF NOT EXISTS {schema}", f"SET search_path TO {schema}"]
    return Store(connect, "%s", setup)


def open_store(target: str) -> Store:
    return open_postgres(target) if is_postgres(target) else open_sqlite(target)
