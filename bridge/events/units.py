"""The bot's units: built from the space tree it reads; matched by :mod:`provisioner.core.unitmatch`.

The matching rules (case, ё = е, exact before prefix, ambiguity listed) live in the provisioner's pure core so
that ``audience`` and the provisioner's ``--unit`` read a unit name the same way; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.core.unitmatch import (
    HERE_WORDS,
    MAX_CANDIDATES,
    Ambiguous,
    Found,
    Match,
    NotFound,
    Unit,
    fold,
    is_here,
    match_unit,
    parts,
    sort_units,
)

__all__ = [
    "HERE_WORDS", "MAX_CANDIDATES", "Ambiguous", "Found", "Match", "NotFound", "SpaceSeen", "Unit",
    "build_units", "fold", "is_here", "match_unit", "parts",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpaceSeen:
    """What the transport read from one space of the provisioner: its marker's unit, name, topic, parent."""

    key: str
    name: str
    topic: str
    parent_key: str | None


def build_units(spaces: Iterable[SpaceSeen]) -> list[Unit]:
    """Units with the path people see: the space topic (the provisioner writes the full path there, while
    a long space name may be shortened), else the chain of space names up to the top."""
    by_key = {s.key: s for s in spaces}
    out: list[Unit] = []
    for s in by_key.values():
        path = tuple(p.strip() for p in s.topic.split(" / ") if p.strip())
        if not path:
            chain: list[str] = []
            cur: SpaceSeen | None = s
            seen: set[str] = set()
            while cur is not None and cur.key not in seen and cur.name:
                seen.add(cur.key)
                chain.append(cur.name)
                cur = by_key.get(cur.parent_key) if cur.parent_key else None
            path = tuple(reversed(chain))
        out.append(Unit(s.key, path))
    return sort_units(out)
