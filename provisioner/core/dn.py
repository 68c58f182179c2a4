"""Distinguished names per RFC 4514, with the Cyrillic and escaping that real directories contain.

``ou=Отдел ЖКХ\\, благоустройства,ou=Управа+l=Москва,dc=mos,dc=test`` must come apart into the right
pieces: escaped commas and plus signs, hex-escaped UTF-8 (``\\D0\\9E``), quoted values from older servers and
multi-valued RDNs. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_SPECIAL = set(',+"\\<>;=# ')


class DNError(ValueError):
    """A string that is not a distinguished name."""


@dataclass(frozen=True, slots=True)
class AVA:
    """One ``type=value`` pair; ``type`` lowercased (attribute types are case-insensitive)."""

    type: str
    value: str


RDN = tuple[AVA, ...]
DN = tuple[RDN, ...]


def _hexval(s: str, i: int, dn: str) -> int:
    pair = s[i : i + 2]
    if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
        raise DNError(f"bad escape at position {i} in DN {dn!r}")
    return int(pair, 16)


def _parse_value(dn: str, i: int) -> tuple[str, int]:
    """Parse one attribute value starting at ``i``; return it and the index after it."""
    n = len(dn)
    if i < n and dn[i] == "#":
        # BER-encoded value: keep it as its hex text, which is unique and stable.
        j = i + 1
        while j < n and dn[j] not in ",+;":
            j += 1
        return dn[i:j].strip(), j
    if i < n and dn[i] == '"':
        # RFC 2253 section 4 allows quoted values from older servers.
        j = i + 1
        out: list[str] = []
        while j < n and dn[j] != '"':
            if dn[j] == "\\" and j + 1 < n:
                j += 1
            out.append(dn[j])
            j += 1
        if j >= n:
            raise DNError(f"unterminated quote in DN {dn!r}")
        j += 1
        while j < n and dn[j] == " ":
            j += 1
        return "".join(out), j
    raw = bytearray()
    trailing_unescaped_spaces = 0
    j = i
    while j < n and dn[j] == " ":  # unescaped leading spaces are insignificant
        j += 1
    while j < n:
        c = dn[j]
        if c in ",+;":
            break
        if c == "\\":
            if j + 1 >= n:
                raise DNError(f"DN ends with a lone backslash: {dn!r}")
            nxt = dn[j + 1]
            if nxt in _SPECIAL or nxt == "\\":
                raw += nxt.encode()
                j += 2
            else:
                raw.append(_hexval(dn, j + 1, dn))
                j += 3
            trailing_unescaped_spaces = 0
            continue
        raw += c.encode("utf-8")
        trailing_unescaped_spaces = trailing_unescaped_spaces + 1 if c == " " else 0
        j += 1
    if trailing_unescaped_spaces:
        raw = raw[: len(raw) - trailing_unescaped_spaces]
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DNError(f"escaped bytes are not UTF-8 in DN {dn!r}") from None
    return value, j


_NEEDS_FULL_PARSE = re.compile(r'[\\"+;]')
_PLAIN_ATTR = re.compile(r"^[A-Za-z][A-Za-z0-9\-]*$|^[0-9]+(\.[0-9]+)*$")


def _parse_plain(dn: str) -> DN | None:
    """The common case without escapes, quotes or multi-valued RDNs, in one pass of str.split."""
    rdns: list[RDN] = []
    for part in dn.split(","):
        attr, eq, value = part.partition("=")
        attr = attr.strip()
        value = value.strip(" ")
        if not eq or not _PLAIN_ATTR.match(attr) or not value or value.startswith("#"):
            return None
        rdns.append((AVA(attr.lower(), value),))
    return tuple(rdns)


@lru_cache(maxsize=65536)
def parse_dn(dn: str) -> DN:
    """Split a DN into RDNs, most specific first, each a tuple of :class:`AVA`."""
    if not isinstance(dn, str) or not dn.strip():
        raise DNError("empty DN")
    if _NEEDS_FULL_PARSE.search(dn) is None:
        plain = _parse_plain(dn)
        if plain is not None:
            return plain
    rdns: list[RDN] = []
    avas: list[AVA] = []
    i, n = 0, len(dn)
    while True:
        while i < n and dn[i] == " ":
            i += 1
        eq = dn.find("=", i)
        if eq < 0:
            raise DNError(f"missing '=' after position {i} in DN {dn!r}")
        attr = dn[i:eq].strip()
        if not attr or any(c in attr for c in ',+"\\<>;'):
            raise DNError(f"bad attribute type {attr!r} in DN {dn!r}")
        value, i = _parse_value(dn, eq + 1)
        avas.append(AVA(attr.lower(), value))
        if i >= n:
            rdns.append(tuple(avas))
            break
        sep = dn[i]
        i += 1
        if sep == "+":
            continue
        rdns.append(tuple(avas))
        avas = []
        if i >= n:
            raise DNError(f"DN ends with a separator: {dn!r}")
    return tuple(rdns)


_ESCAPABLE = re.compile(r'[,+"\\<>;=#\0]|^ | $')


def _escape_value(value: str) -> str:
    if _ESCAPABLE.search(value) is None:
        return value
    out = []
    for k, c in enumerate(value):
        if c in ',+"\\<>;=' or (c == "#" and k == 0) or (c == " " and k in (0, len(value) - 1)):
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)


def format_dn(dn: DN) -> str:
    """The RFC 4514 string of a parsed DN (escaping only what must be escaped)."""
    return ",".join("+".join(f"{a.type}={_escape_value(a.value)}" for a in rdn) for rdn in dn)


def split_first_rdn(dn: str) -> tuple[str, str]:
    """``"uid=a,ou=B,dc=x"`` → ``("uid=a", "ou=B,dc=x")``, honouring escapes and quotes."""
    if "\\" not in dn and '"' not in dn:
        first, _, rest = dn.partition(",")
        return first, rest
    quoted = False
    i = 0
    while i < len(dn):
        c = dn[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            return dn[:i], dn[i + 1 :]
        i += 1
    return dn, ""


def _normalize_rdn(rdn: RDN) -> str:
    return "+".join(sorted(f"{a.type}={_escape_value(' '.join(a.value.casefold().split()))}" for a in rdn))


@lru_cache(maxsize=131072)
def normalize_dn(dn: str) -> str:
    """A comparison key: types and values casefolded, whitespace collapsed, escapes resolved then re-applied
    (so splitting the key on unescaped commas still gives the RDNs). Parents are cached: a directory has
    25,000 people but only a few thousand distinct parent DNs."""
    first, rest = split_first_rdn(dn)
    head = ",".join(_normalize_rdn(r) for r in parse_dn(first))
    return f"{head},{normalize_dn(rest)}" if rest.strip() else head


def _rdn_key(rdn: RDN) -> tuple[tuple[str, str], ...]:
    """How two RDNs compare: types and values casefolded, whitespace collapsed, Unicode in NFC."""
    return tuple(
        sorted((a.type, " ".join(unicodedata.normalize("NFC", a.value).casefold().split())) for a in rdn)
    )


def relative_to(dn: DN, base: DN) -> DN | None:
    """The RDNs of ``dn`` below ``base`` (most specific first); ``None`` if ``dn`` is not under it."""
    if len(dn) < len(base):
        return None
    tail = dn[len(dn) - len(base) :]
    if any(_rdn_key(x) != _rdn_key(y) for x, y in zip(tail, base, strict=True)):
        return None
    return dn[: len(dn) - len(base)]


class Subtrees:
    """A set of containers (or single entries), asked "is this DN one of them or below one?".

    Matching is by parsed RDNs, so ``OU=Уволенные , DC=Mos,dc=test``, ``ou=уволенные,dc=mos,dc=test`` and
    the hex-escaped ``ou=\\D0\\A3...`` are one container, and an escaped comma inside a value never splits it.
    Answers are cached per parent DN: 25,000 people sit in a few thousand containers.
    """

    def __init__(self, dns: Iterable[str]) -> None:
        self._dns = tuple(dns)
        self._parsed = tuple((d, parse_dn(d)) for d in self._dns)
        # Each container's RDN keys, top (dc=...) first: most DNs differ near the top of the tree's
        # branch they are in, so comparing from there answers "no" after a key or two.
        self._keys = tuple((d, tuple(_rdn_key(r) for r in reversed(c))) for d, c in self._parsed)
        self._cache: dict[str, str | None] = {}
        self._first_types = frozenset(a.type for _, c in self._parsed for a in c[0])

    def __bool__(self) -> bool:
        return bool(self._dns)

    def _match_parsed(self, dn: DN) -> str | None:
        best: tuple[int, str] | None = None
        for text, keys in self._keys:
            n = len(keys)
            if n > len(dn) or (best is not None and n <= best[0]):
                continue
            if all(_rdn_key(dn[len(dn) - 1 - i]) == k for i, k in enumerate(keys)):
                best = (n, text)
        return best[1] if best else None

    def container_of(self, dn: str) -> str | None:
        """The listed DN that ``dn`` is or lies under (the most specific one), else ``None``.

        Raises :class:`DNError` for a DN that does not parse.
        """
        if not self._dns:
            return None
        first, parent = split_first_rdn(dn)
        if parent.strip():
            if parent not in self._cache:
                self._cache[parent] = self._match_parsed(parse_dn(parent))
            found = self._cache[parent]
            if found is not None:
                return found
        return self._match_parsed(parse_dn(dn)) if self._entry_listed(first) else None

    def may_list(self, first_rdn: str) -> bool:
        """Whether an entry with this first RDN could itself be listed (not only lie below one): the
        attribute type alone says no for people (``uid=``, ``CN=``) when containers (``ou=``) are listed,
        without parsing 25,000 RDNs."""
        return first_rdn.partition("=")[0].strip().lower() in self._first_types

    def _entry_listed(self, first_rdn: str) -> bool:
        """Only a DN whose own RDN is the first RDN of a listed DN can itself be listed."""
        if not self.may_list(first_rdn):
            return False
        key = _rdn_key(parse_dn(first_rdn)[0])
        return any(_rdn_key(c[0]) == key for _, c in self._parsed)
