"""``!who``'s lookup: the directory search index, loaded lazily from the sync's snapshot.

The same snapshot and index the search service answers from (``search.index``). The file is stat'ed on
every command and re-read only when it changed; reading and building run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from bridge.events.render import FoundPerson
from bridge.search.index import SearchIndex
from bridge.search.snapshot import IndexedPerson, SnapshotError, Stamp, read_snapshot, snapshot_stamp

log = logging.getLogger(__name__)


def found(person: IndexedPerson) -> FoundPerson:
    return FoundPerson(
        user_id=person.user_id,
        display_name=person.display_name,
        title=person.title or "",
        department=" / ".join(person.department),
        phone=person.phone or "",
    )


class SnapshotPeople:
    """Implements :class:`bridge.events.context.PeopleSearch` over the snapshot at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = SearchIndex(())
        self._stamp: Stamp | None = None
        self._lock = asyncio.Lock()

    def _load(self, stamp: Stamp) -> None:
        try:
            _, people = read_snapshot(self.path)
        except SnapshotError as e:
            log.warning("%s; !who answers from the previous index (%d people)", e, len(self.index))
            return
        self.index, self._stamp = SearchIndex(people), stamp

    async def find(self, term: str, limit: int) -> tuple[Sequence[FoundPerson], bool]:
        stamp = snapshot_stamp(self.path)
        if stamp is not None and stamp != self._stamp:
            async with self._lock:
                if stamp != self._stamp:
                    await asyncio.to_thread(self._load, stamp)
        result = self.index.search(term, limit)
        return [found(h.person) for h in result.hits], result.limited
