"""Which unit a person means when they type one: by the name or path they see in room and space names.

One implementation for both sides: the event bot's ``audience`` (units read from the space tree) and the
provisioner's ``--unit`` and ``layout.onboarded_units`` (units read from the directory). Pure: the units are
an argument, so the matching is tested without a homeserver or a directory.

Rule 1. Text is compared case-insensitively with ё = е, runs of spaces collapsed, quotes dropped and any
        spelling of the path separator ("/", " / ", "»") read as one separator.
Rule 2. An exact match wins over a prefix: the unit's key, its full path, a trailing part of its path
        ("Управа района Арбат / Отдел ЖКХ"), then its name. Several exact matches (every district council
        has an "Отдел ЖКХ") are an ambiguity, never a guess.
Rule 3. Otherwise a prefix of the name or of the path that fits exactly one unit is that unit; one that fits
        several is an ambiguity listing them; none is "not found" with the closest names (a word of the
        query inside the path, those with the most such words) as suggestions.
Rule 4. ``here`` / ``здесь`` / ``тут`` mean the unit of the room the command is sent in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HERE_WORDS = frozenset({"here", "this", "здесь", "тут", "это", "этот"})
MAX_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class Unit:
    key: str  # the provisioner's unit key (the room marker's ``unit``); never shown to people
    path: tuple[str, ...]  # names from the top level down, as in space names and room topics

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else self.key

    @property
    def label(self) -> str:
        """The unit as people see it: its path, top level first."""
        return " / ".join(self.path) or self.key


@dataclass(frozen=True, slots=True)
class Found:
    unit: Unit


@dataclass(frozen=True, slots=True)
class Ambiguous:
    query: str
    candidates: tuple[Unit, ...]  # at most MAX_CANDIDATES, in path order
    more: int  # how many more fit


@dataclass(frozen=True, slots=True)
class NotFound:
    query: str
    suggestions: tuple[Unit, ...]


Match = Found | Ambiguous | NotFound


_SEP = re.compile(r"\s*(?:/|»|\\|>)\s*")
_SPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """Rule 1: the form in which names are compared."""
    s = text.casefold().replace("ё", "е").strip().strip("\"'«»“”„")
    s = _SPACE.sub(" ", s)
    return _SEP.sub(" / ", s).strip(" /")


def parts(text: str) -> tuple[str, ...]:
    return tuple(p for p in fold(text).split(" / ") if p)


def is_here(query: str) -> bool:
    return fold(query) in HERE_WORDS


def sort_units(units: Iterable[Unit]) -> list[Unit]:
    return sorted(set(units), key=lambda u: (tuple(fold(p) for p in u.path), u.key))


def _result(query: str, hits: Sequence[Unit]) -> Match | None:
    hits = sort_units(hits)
    if len(hits) == 1:
        return Found(hits[0])
    if hits:
        return Ambiguous(query, tuple(hits[:MAX_CANDIDATES]), max(0, len(hits) - MAX_CANDIDATES))
    return None


def match_unit(query: str, units: Iterable[Unit]) -> Match:
    """Rules 2 and 3 (Rule 4 is the caller's: it knows the room)."""
    pool = list(units)
    q = parts(query)
    if not q:
        return NotFound(query, ())
    by_key = [u for u in pool if u.key == query.strip()]
    if by_key:
        return Found(by_key[0])
    folded = [(u, tuple(fold(p) for p in u.path)) for u in pool]
    n = len(q)
    exact = [u for u, p in folded if p == q] or [u for u, p in folded if len(p) >= n and p[-n:] == q]
    if (hit := _result(query, exact)) is not None:
        return hit

    def prefix_of(p: tuple[str, ...]) -> bool:
        # The last typed part may be cut short; the ones before it must be whole ("Управа / Отд").
        return len(p) >= n and p[-n : len(p) - 1] == q[:-1] and p[-1].startswith(q[-1])

    if (hit := _result(query, [u for u, p in folded if prefix_of(p)])) is not None:
        return hit
    words = {w for w in " ".join(q).replace("/", " ").split() if len(w) >= 3}
    score = {u: sum(w in " / ".join(p) for w in words) for u, p in folded}
    best = max(score.values(), default=0)
    near = [u for u, n in score.items() if best and n == best]
    return NotFound(query, tuple(sort_units(near)[:MAX_CANDIDATES]))
