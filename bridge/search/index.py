"""The in-memory people index behind ``user_directory/search``. Pure: built from a snapshot, no I/O.

Rules (each tested in tests/test_search_index.py):
1. Every word of the query must prefix-match some token of the person: a word of the display name (name,
   patronymic, surname), the login, a word of the title, a word of any level of the department path, the
   e-mail (whole, or a piece of it), a phone number (rule 4).
2. Case and ё/е do not count; every Cyrillic token is also indexed in the project's transliteration
   (``provisioner.core.identity.transliterate``), and each query word is also tried transliterated, so
   "ivanov" finds Иванов and "иванов" finds the login ``ivanov``.
3. Ranking: the exact full name first, then people matched on their name (and login) alone, then the rest
   (title, department, e-mail, phone); within a tier, the directory's name order. A person appears once.
4. Phones (a person may have several: ``provisioner.core.phones`` splits them and their extensions). Digits
   typed together ("540-02-01", "+7 (495) 149-03-75", "8 495 149 03 75") are one number; they match when
   they end some number of the person or their extension: at least ``MIN_PHONE_DIGITS`` (4) of them, so
   that "12" or "201" cannot list a thousand people; a Russian number compares without its 7/8 trunk code.
   A number typed with its extension ("… ext. 25139", "… доб. 25139") matches the number whose extension is
   exactly that; an extension typed with its marker alone ("доб. 25139", "x215", "#215") matches that
   extension exactly, whatever its length, since the marker says what it is.

Why in memory rather than SQLite FTS5: every query word needs a prefix match over both spellings and a
ranking FTS5's bm25 cannot express; with people numbered in name order, the best ``limit`` results are
the smallest numbers that pass, found by a lazy merge of the posting lists that stops as soon as
``limit + 1`` are found (docs/PERFORMANCE.md has the numbers).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import unicodedata
from array import array
from bisect import bisect_left
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge.search.snapshot import IndexedPerson
from provisioner.core.identity import transliterate
from provisioner.core.phones import EXTENSION_MARKER, Phone, digits_of, national, numbers

MAX_LIMIT = 50
SEP = "\x00"  # never inside a token: tokens are runs of letters and digits, e-mails, logins
# Answers kept per index: the first letters of names are what everyone types first, over and over.
CACHE_SIZE = 4096
MIN_PHONE_DIGITS = 4
_WORD = re.compile(r"[^\W_]+")
_NUMBER_CHUNK = re.compile(r"^[\d+()\-.]*\d[\d+()\-.]*$")
# A query chunk holding an extension marker: "ext.", "доб", "x25139", "149-03-75#25139", "(доб.".
_MARKED_CHUNK = re.compile(rf"^\(?(?P<main>[\d+()\-.]*?){EXTENSION_MARKER}[.:]*(?P<ext>\d*)\)?$")
_DIGITS_CHUNK = re.compile(r"^\(?(\d+)\)?$")


def fold(text: str) -> str:
    """Case, compatibility forms and ё/е folded away: how both the index and the query compare text."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def _spellings(word: str) -> tuple[str, ...]:
    latin = transliterate(word)
    return (word,) if latin == word or not latin else (word, latin)


def phone_keys(phones: Sequence[Phone]) -> tuple[str, ...]:
    """The digit strings a person's phones are matched on as suffixes: each number as written and without
    its trunk code, and each extension."""
    keys: dict[str, None] = {}
    for p in phones:
        keys.update(dict.fromkeys(p.forms))
        if p.extension:
            keys[p.extension] = None
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class Hit:
    user_id: str
    display_name: str
    avatar_url: str | None
    person: IndexedPerson


@dataclass(frozen=True, slots=True)
class Result:
    limited: bool
    hits: tuple[Hit, ...]


class _Postings:
    """Sorted unique tokens with the sorted person numbers holding each; prefix ranges by bisection."""

    def __init__(self, by_token: dict[str, list[int]]) -> None:
        self.tokens = sorted(by_token)
        # Each person adds a token once and people are added in number order: lists are already sorted.
        self.lists = [array("i", by_token[t]) for t in self.tokens]
        # cum[i] = postings in tokens[:i]: the cost of a prefix range without walking it.
        self.cum = array("q", [0])
        total = 0
        for lst in self.lists:
            total += len(lst)
            self.cum.append(total)

    def span(self, prefix: str) -> tuple[int, int]:
        lo = bisect_left(self.tokens, prefix)
        hi = bisect_left(self.tokens, prefix + "\U0010ffff", lo)
        return lo, hi

    def cost(self, prefixes: Iterable[str]) -> int:
        total = 0
        for p in prefixes:
            lo, hi = self.span(p)
            total += self.cum[hi] - self.cum[lo]
        return total

    def holders(self, prefixes: Iterable[str]) -> list[int]:
        """Person numbers holding a token with one of ``prefixes``, ascending, each once."""
        found: set[int] = set()
        for p in prefixes:
            lo, hi = self.span(p)
            for i in range(lo, hi):
                found.update(self.lists[i])
        return sorted(found)


@dataclass(frozen=True, slots=True)
class _Word:
    """One query word: prefix spellings, or a phone number (and extension), or an e-mail prefix."""

    spellings: tuple[str, ...] = ()
    digits: str | None = None  # national form; "" when only an extension was typed
    extension: str | None = None  # typed with a marker: must equal the extension
    email: str | None = None

    @property
    def needles(self) -> tuple[str, ...]:
        # A token starts with s exactly when SEP + s occurs in the person's SEP-joined tokens.
        return tuple(SEP + s for s in self.spellings)


def parse_query(term: str) -> tuple[_Word, ...]:
    """Query words: chunks of digits typed one after another are one phone number (rule 4), with the
    extension that follows its marker; an e-mail is one word; everything else is words to prefix-match."""
    chunks = fold(term).replace(",", " ").replace(";", " ").split()
    words: list[_Word] = []
    run: list[str] = []  # the chunks of the number being read

    def end_number(extension: str | None) -> None:
        digits = digits_of("".join(run))
        if extension is not None or len(digits) >= MIN_PHONE_DIGITS:
            # "8 495 …" and "+7 495 …" are the same number: match on the form without the trunk code.
            words.append(_Word(digits=national(digits), extension=extension))
        else:  # "отдел 2": too few digits for a phone, a word like any other
            words.extend(_Word(spellings=(w,)) for c in run for w in _WORD.findall(c))
        run.clear()

    i = 0
    while i < len(chunks):
        chunk = chunks[i]
        marked = _MARKED_CHUNK.match(chunk)
        if marked is not None and (marked["ext"] or _next_digits(chunks, i)):
            run.append(marked["main"])
            ext = marked["ext"]
            if not ext:
                i += 1
                ext = _next_digits(chunks, i - 1)
            end_number(ext)
        elif _NUMBER_CHUNK.match(chunk):
            run.append(chunk)
        else:
            if run:
                end_number(None)
            if "@" in chunk:
                words.append(_Word(email=chunk))
            else:
                words.extend(_Word(spellings=_spellings(w)) for w in _WORD.findall(chunk))
        i += 1
    if run:
        end_number(None)
    return tuple(words)


def _next_digits(chunks: Sequence[str], i: int) -> str:
    """The digits of the chunk after ``i`` when it is only digits ("25139", "25139)"), else ""."""
    if i + 1 >= len(chunks):
        return ""
    m = _DIGITS_CHUNK.match(chunks[i + 1])
    return m.group(1) if m else ""


class SearchIndex:
    """People numbered in name order; a name index, an all-fields index, phone suffixes, full names."""

    def __init__(self, people: Sequence[IndexedPerson]) -> None:
        ordered = sorted(people, key=lambda p: (fold(p.sort_name or p.display_name), p.user_id))
        seen: set[str] = set()
        self.people: list[IndexedPerson] = []
        for p in ordered:
            if p.user_id not in seen:  # one row per person, whatever the snapshot holds
                seen.add(p.user_id)
                self.people.append(p)
        name_tokens: dict[str, list[int]] = defaultdict(list)
        all_tokens: dict[str, list[int]] = defaultdict(list)
        phones: list[tuple[str, int]] = []  # reversed digits: a suffix of the number is a prefix of these
        full: dict[str, list[int]] = defaultdict(list)
        # Per person, for checking the other words of a query: tokens joined by SEP, so that "some token
        # starts with s" is one substring search in C.
        self._name_of: list[str] = []
        self._other_of: list[str] = []
        self._digits_of: list[tuple[str, ...]] = []
        self._phones_of: list[tuple[Phone, ...]] = []
        by_extension: dict[str, list[int]] = defaultdict(list)
        self._email_of: list[str] = []
        # Titles, unit names and common names repeat across thousands of people: tokenise each text once.
        cache: dict[str | tuple[str, ...], frozenset[str]] = {}
        spelled: dict[str, tuple[str, ...]] = {}

        def spell(word: str) -> tuple[str, ...]:
            got = spelled.get(word)
            if got is None:
                got = spelled[word] = _spellings(word)
            return got

        def tokens(text: str | tuple[str, ...] | None) -> frozenset[str]:
            if not text:
                return frozenset()
            got = cache.get(text)
            if got is None:
                parts = (text,) if isinstance(text, str) else text
                got = cache[text] = frozenset(
                    t for part in parts for w in _WORD.findall(fold(part)) for t in spell(w)
                )
            return got

        for n, p in enumerate(self.people):
            localpart = fold(p.user_id[1:].split(":", 1)[0])
            names = tokens(p.display_name) | tokens(p.login) | {fold(p.login), localpart}
            email = fold(p.email) if p.email else ""
            others = (
                tokens(p.title) | tokens(p.department) | tokens(p.email) | ({email} if email else set())
            ) - names
            for t in names:
                name_tokens[t].append(n)
                all_tokens[t].append(n)
            for t in others:
                all_tokens[t].append(n)
            own_phones = numbers(p.phone)
            digits = phone_keys(own_phones)
            phones.extend((d[::-1], n) for d in digits)
            for ext in dict.fromkeys(x.extension for x in own_phones if x.extension):
                by_extension[ext].append(n)
            words = _WORD.findall(fold(p.display_name))
            full[" ".join(words)].append(n)
            latin = " ".join(spell(w)[-1] for w in words)  # transliteration works letter by letter
            if latin != " ".join(words):
                full[latin].append(n)
            self._name_of.append(SEP + SEP.join(names))
            self._other_of.append(SEP + SEP.join(others))
            self._digits_of.append(digits)
            # Only extension queries look here; most people have none, and () is one shared object.
            self._phones_of.append(own_phones if any(x.extension for x in own_phones) else ())
            self._email_of.append(email)
        self._names = _Postings(name_tokens)
        self._all = _Postings(all_tokens)
        phones.sort()
        self._phone_keys = [k for k, _ in phones]
        self._phone_owner = array("i", [n for _, n in phones])
        self._by_extension = {k: array("i", v) for k, v in by_extension.items()}
        self._full = {k: v[0] if len(v) == 1 else tuple(v) for k, v in full.items()}
        # The index never changes once built (a new snapshot makes a new index), so answers can be kept.
        self._cache: OrderedDict[tuple[str, int], Result] = OrderedDict()

    def __len__(self) -> int:
        return len(self.people)

    # --- matching ------------------------------------------------------------------------------------

    def _matches(self, n: int, word: _Word, *, names_only: bool) -> bool:
        if word.digits is not None:
            return not names_only and self._phone_matches_person(n, word.digits, word.extension)
        if word.email is not None:
            return not names_only and self._email_of[n].startswith(word.email)
        needles = word.needles
        names = self._name_of[n]
        if any(s in names for s in needles):
            return True
        if names_only:
            return False
        others = self._other_of[n]
        return any(s in others for s in needles)

    def _phone_matches_person(self, n: int, digits: str, extension: str | None) -> bool:
        if extension is None:
            return any(d.endswith(digits) for d in self._digits_of[n])
        return any(
            p.extension == extension and any(f.endswith(digits) for f in p.forms) for p in self._phones_of[n]
        )

    def _holders(self, word: _Word, *, names_only: bool) -> Iterable[int]:
        if word.digits is not None:
            if names_only:
                return ()
            if word.extension is None:
                return self._phone_matches(word.digits)
            owners = self._by_extension.get(word.extension, ())
            return [n for n in owners if self._phone_matches_person(n, word.digits, word.extension)]
        if word.email is not None:
            if names_only:
                return ()
            return [n for n in self._all.holders((word.email,)) if self._email_of[n].startswith(word.email)]
        return (self._names if names_only else self._all).holders(word.spellings)

    def _cost(self, word: _Word, *, names_only: bool) -> int:
        if word.digits is not None:
            if names_only:
                return 0
            if word.extension is not None:
                return len(self._by_extension.get(word.extension, ()))
            lo, hi = self._phone_span(word.digits)
            return hi - lo
        if word.email is not None:
            return 0 if names_only else self._all.cost((word.email,))
        return (self._names if names_only else self._all).cost(word.spellings)

    def _phone_span(self, digits: str) -> tuple[int, int]:
        key = digits[::-1]  # a suffix of a number is a prefix of its reversed digits
        lo = bisect_left(self._phone_keys, key)
        return lo, bisect_left(self._phone_keys, key + "\U0010ffff", lo)

    def _phone_matches(self, digits: str) -> list[int]:
        lo, hi = self._phone_span(digits)
        return sorted(set(self._phone_owner[lo:hi]))

    def _exact(self, term: str) -> list[int]:
        out: list[int] = []
        for s in _spellings(" ".join(_WORD.findall(fold(term)))):
            got = self._full.get(s)
            if got is not None:
                out.extend((got,) if isinstance(got, int) else got)
        return sorted(set(out))

    def _tier(self, words: Sequence[_Word], want: int, skip: set[int], *, names_only: bool) -> list[int]:
        """Up to ``want`` person numbers, ascending, matching every word; driven by the cheapest word."""
        if want <= 0:
            return []
        lead = min(range(len(words)), key=lambda i: self._cost(words[i], names_only=names_only))
        holders = self._holders(words[lead], names_only=names_only)
        rest = [w for i, w in enumerate(words) if i != lead]
        out: list[int] = []
        for n in holders:
            if n in skip or not all(self._matches(n, w, names_only=names_only) for w in rest):
                continue
            out.append(n)
            if len(out) >= want:
                break
        return out

    def search(self, term: str, limit: int = 10) -> Result:
        """The best ``limit`` people for ``term`` (clamped to 0..50, like Synapse), and whether more exist."""
        limit = max(0, min(limit, MAX_LIMIT))
        key = (fold(term).strip(), limit)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        result = self._search(term, limit)
        self._cache[key] = result
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def _search(self, term: str, limit: int) -> Result:
        words = parse_query(term)
        if not words:
            return Result(False, ())
        want = limit + 1  # one more than asked tells whether the answer is limited
        chosen = self._exact(term)[:want]
        taken = set(chosen)
        by_name = self._tier(words, want - len(chosen), taken, names_only=True)
        taken.update(by_name)
        chosen += by_name
        chosen += self._tier(words, want - len(chosen), taken, names_only=False)
        hits = tuple(
            Hit(p.user_id, p.display_name, p.avatar_url, p) for p in (self.people[n] for n in chosen[:limit])
        )
        return Result(len(chosen) > limit, hits)


def build_index(people: Sequence[IndexedPerson]) -> SearchIndex:
    """Build with the cyclic collector paused, then move the index out of its reach.

    The index is a few million small acyclic objects; left to the collector, every full collection walks
    them all (hundreds of milliseconds at 25,000 people: a search that lands on it waits). Frozen objects
    are still freed by reference counting when the next index replaces this one.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        index = SearchIndex(people)
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
    _give_back_memory()
    return index


def _give_back_memory() -> None:
    """Return the heap freed by the build (the parsed snapshot, the token lists) to the system (glibc)."""
    # Not glibc: no malloc_trim, and the process reuses the memory instead.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def result_label(person: IndexedPerson, *, context: bool) -> str:
    """What the search result shows as ``display_name``: the name, with title and unit when asked.

    Only the search answer carries this: clients take room names and mention pills from member events,
    which keep the plain profile name.
    """
    if not context:
        return person.display_name
    extra = ", ".join(x for x in (person.title, person.department[-1] if person.department else None) if x)
    return f"{person.display_name} — {extra}" if extra else person.display_name
