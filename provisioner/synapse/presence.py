"""Presence stays in the rooms: the provisioner's spaces are kept out of presence fan-out, live.

Everyone is in their unit's space and every space above it (``layout.space_members: tree``), so the top
space holds the whole organisation. A space is a room to Synapse's presence code: without an exclusion
every presence change (someone's client coming online, going idle) would be routed to everyone in it —
25,000 people — which is the pattern that pins Synapse's CPU on large servers. Synapse has the knob,
``exclude_rooms_from_presence`` (1.157+), but reads it from the config file once at start, while the
spaces appear later, when the sync creates them: a config-file list needs a restart of every Synapse
process after each sync that creates a space, and nobody would remember it.

This module makes the exclusion follow the server itself. Loaded in every Synapse process (``modules:``
of the shared ``homeserver.yaml``; workers read it too), it asks the database every
``interval_seconds`` which rooms are spaces carrying the provisioner's marker state
(:data:`bridge.matrix.contract.MARKER_TYPE` with ``kind: space``, or ``kind: announcements``: a unit's
announcement channel holds its whole subtree too), and hands that set, together with any
``exclude_rooms_from_presence`` of the config file, to the two places that consult it:

* the presence handler (``BasePresenceHandler``: which users a change is routed to, who is woken, and the
  presence a new joiner is sent of a room's members), and
* the presence event source (``PresenceEventSource``: which changes a syncing client is shown).

Both hold it as a frozenset read on every use, so replacing the attribute takes effect at the next
presence change, with no restart and no lost connection. The cost is one small query per interval per
process: the markers of the managed rooms are read (one row per room, a few hundred at 25,000 people).
Rooms that are neither — department rooms, group rooms, DMs, anything people create — keep presence: two
people who share a room see each other, two who share only spaces or a channel do not.

The attributes are private to Synapse (there is no module API for this: the presence router can only add
recipients). A Synapse upgrade that renames them is reported with an ERROR at the first refresh and
presence then simply fans out as in stock Synapse; tests/test_space_tree_live.py fails on such an upgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.matrix.contract import MARKER_TYPE

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 10.0
# Where the live set is installed: (how to reach the object from the HomeServer, its attribute).
_TARGETS: tuple[tuple[str, str], ...] = (
    ("presence handler", "_rooms_to_exclude_from_presence"),
    ("presence event source", "_rooms_to_exclude_from_presence"),
)

# Every managed room's marker (a few hundred rows at 25,000 people); the kind is read from its content.
_SPACES_SQL = (
    "SELECT c.room_id, j.json FROM current_state_events AS c"
    " JOIN event_json AS j ON j.event_id = c.event_id"
    " WHERE c.type = ? AND c.state_key = ''"
)
# Rooms that hold a whole subtree: the spaces, and the units' announcement channels (read-only rooms of up
# to announcements.max_members people, where a presence change would otherwise reach every reader).
EXCLUDED_KINDS = frozenset({"space", "announcements"})


def managed_spaces(rows: Iterable[tuple[str, str | bytes]]) -> frozenset[str]:
    """The room IDs whose marker event (``rows`` of room ID and event JSON) says ``kind: space`` or
    ``kind: announcements``.

    A marker that cannot be read is skipped: a room the module cannot classify keeps presence, which
    is Synapse's default and never hides anyone.
    """
    found: set[str] = set()
    for room_id, raw in rows:
        try:
            event = json.loads(raw)
        except (TypeError, ValueError):
            continue
        content = event.get("content") if isinstance(event, dict) else None
        if isinstance(content, dict) and content.get("kind") in EXCLUDED_KINDS:
            found.add(room_id)
    return frozenset(found)


class PresenceScope:
    """Synapse module (``modules:``): the provisioner's spaces kept out of presence, found live.

    Config: ``interval_seconds`` (default 10): how stale the set may be. A space created by a sync shares
    presence for at most this long, which costs nothing before people are online.
    """

    def __init__(self, config: Mapping[str, Any], api: Any) -> None:
        self._api = api
        self._hs = api._hs
        self._static = frozenset(self._hs.config.server.rooms_to_exclude_from_presence or ())
        self._current: frozenset[str] | None = None
        self._broken = False
        interval = float(config.get("interval_seconds", DEFAULT_INTERVAL_SECONDS))
        # The handlers are looked up at the first refresh, not here: building them while modules load
        # would run into Synapse's own start-up order (the presence source depends on the module API).
        api.looping_background_call(
            self.refresh, interval * 1000, desc="civmatrix_presence_scope", run_on_all_instances=True
        )
        # ... and once as soon as the reactor runs, so a restarted process is right from its first sync.
        self._hs.get_reactor().callWhenRunning(self._first_refresh)

    @staticmethod
    def parse_config(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
        config = dict(config or {})
        interval = config.get("interval_seconds", DEFAULT_INTERVAL_SECONDS)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.5 <= interval <= 3600:
            raise ValueError(
                f"PresenceScope: interval_seconds is {interval!r}; it must be a number of seconds "
                "between 0.5 and 3600"
            )
        unknown = set(config) - {"interval_seconds"}
        if unknown:
            raise ValueError(f"PresenceScope: unknown config keys {sorted(unknown)}; known: interval_seconds")
        return config

    def _first_refresh(self) -> None:
        self._api.run_as_background_process("civmatrix_presence_scope_start", self.refresh)

    async def refresh(self) -> None:
        rows = await self._api.run_db_interaction("civmatrix_presence_scope", _read_spaces)
        excluded = self._static | managed_spaces(rows)
        if excluded == self._current or self._broken:
            return
        installed = self._install(excluded)
        if not installed:
            return
        added = len(excluded - (self._current or frozenset()))
        removed = len((self._current or frozenset()) - excluded)
        self._current = excluded
        log.info(
            "presence: %d rooms kept out of presence fan-out (%d managed spaces; +%d -%d)",
            len(excluded),
            len(excluded - self._static),
            added,
            removed,
        )

    def _install(self, excluded: frozenset[str]) -> bool:
        objects = {
            "presence handler": self._hs.get_presence_handler(),
            "presence event source": self._hs.get_event_sources().sources.presence,
        }
        missing = [name for name, attr in _TARGETS if not hasattr(objects[name], attr)]
        if missing:
            self._broken = True
            log.error(
                "presence: this Synapse has no %s; the provisioner's spaces are NOT kept out of presence "
                "and every presence change reaches everyone in them. Pin Synapse to a version the "
                "civmatrix tests pass on (see pyproject.toml) or list the spaces in "
                "exclude_rooms_from_presence by hand",
                " / ".join(f"{n}.{a}" for n, a in _TARGETS if n in missing),
            )
            return False
        for name, attr in _TARGETS:
            setattr(objects[name], attr, excluded)
        return True


def _read_spaces(txn: Any) -> list[tuple[str, str | bytes]]:
    txn.execute(_SPACES_SQL, (MARKER_TYPE,))
    return [(str(room_id), raw) for room_id, raw in txn.fetchall()]
