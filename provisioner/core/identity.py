"""Directory login → Matrix localpart, and display names. Pure functions.

Rules (each relied on elsewhere):
1. A person is keyed on the immutable anchor; the localpart is chosen once and then kept (``previous``), so
   a login rename or a move never creates a second account.
2. The base localpart is the login lowercased, Cyrillic transliterated, other letters stripped of accents,
   and every character outside the Matrix user-ID grammar mapped to ``_``. The LDAP login module applies the
   same :func:`base_localpart`, so a person logging in lands on the account the provisioner made.
3. Collisions are resolved deterministically: a person keeps an ID already assigned to them; among newcomers
   the one whose login already *is* the base localpart wins, then the lowest anchor; every other one gets
   ``-`` plus a hash of their anchor, which does not depend on who else exists, so nobody's ID changes when
   someone joins later.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping

MAX_LOCALPART = 64
_ALLOWED = re.compile(r"[^a-z0-9._\-]")

# GOST 7.79-2000 system B without diacritics, the form Russian government systems use for logins and e-mail.
_TRANSLIT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya",
    # Ukrainian, Belarusian and Kazakh letters appear in real staff names.
    "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u", "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o",
    "ұ": "u", "ү": "u", "һ": "h",
}  # fmt: skip


_TRANSLIT_TABLE = str.maketrans(_TRANSLIT)


def transliterate(text: str) -> str:
    """Lowercase Latin text for ``text``: Cyrillic transliterated, accents dropped, other scripts kept."""
    folded = text.casefold()
    if folded.isascii():
        return folded
    # One C-level pass handles Cyrillic; only what is left non-ASCII (accents, other scripts) goes slowly.
    fast = unicodedata.normalize("NFKC", folded).translate(_TRANSLIT_TABLE)
    if fast.isascii():
        return fast
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text).casefold():
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        out.append("".join(c for c in decomposed if not unicodedata.combining(c)))
    return "".join(out)


def short_hash(text: str, n: int = 6) -> str:
    """A stable hex prefix of SHA-256: disambiguates IDs, aliases and names the same way on every run."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def base_localpart(login: str) -> str:
    """The localpart a login maps to before collisions are resolved; never empty.

    Characters outside ``[a-z0-9._-]`` become ``_`` (``=``, ``/`` and ``+`` are legal in the grammar but
    confuse clients and the ``=`` escaping of other bridges). Leading/trailing punctuation is trimmed.
    """
    text = transliterate(login.strip())
    text = _ALLOWED.sub("_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._-")
    if not text:
        return "user-" + short_hash(login, 8)
    if len(text) > MAX_LOCALPART:
        text = text[: MAX_LOCALPART - 7].rstrip("._-") + "-" + short_hash(login)
    return text


def is_valid_localpart(localpart: str) -> bool:
    return bool(localpart) and len(localpart) <= MAX_LOCALPART and not _ALLOWED.search(localpart)


def assign_localparts(
    people: Iterable[tuple[str, str]],
    *,
    previous: Mapping[str, str] | None = None,
    taken: Iterable[str] = (),
) -> dict[str, str]:
    """Map each ``(anchor, login)`` to a unique localpart.

    ``previous`` maps anchors to the localparts they already have on the server (kept as they are);
    ``taken`` holds localparts that belong to accounts the directory does not manage (admins, bots).
    """
    previous = previous or {}
    used: set[str] = set(taken)
    result: dict[str, str] = {}
    newcomers: list[tuple[bool, str, str, str]] = []
    for anchor, login in people:
        if anchor in result:
            continue
        kept = previous.get(anchor)
        if kept and kept not in used:
            result[anchor] = kept
            used.add(kept)
            continue
        base = base_localpart(login)
        exact = login == base
        newcomers.append((not exact, anchor, base, login))
    for _, anchor, base, _login in sorted(newcomers):
        candidate = base
        if candidate in used:
            stem = base[: MAX_LOCALPART - 9].rstrip("._-")
            for n in range(6, 65):
                candidate = f"{stem}-{short_hash(anchor, n)}"
                if candidate not in used:
                    break
        result[anchor] = candidate
        used.add(candidate)
    return result


# Format characters that are part of how a name is written: the zero-width joiner holds emoji sequences
# together (👩‍💻), the non-joiner is spelling in Persian and other scripts. Every other format character
# (direction overrides that can disguise a name, zero-width spaces, soft hyphens) is dropped.
_KEPT_FORMAT = frozenset("\u200c\u200d")


def clean_text(value: str | None, *, max_len: int = 255) -> str | None:
    """Whitespace collapsed, control characters dropped; ``None`` for empty or over-long text."""
    if value is None:
        return None
    text = value
    if not text.isprintable():
        text = "".join(
            ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in "\t\n" or ch in _KEPT_FORMAT
        )
    text = " ".join(text.split())
    if not text or len(text) > max_len:
        return None
    return text


def display_name(
    display: str | None, cn: str | None, sn: str | None, given: str | None
) -> tuple[str | None, str | None]:
    """The display name from displayName, else cn, else "sn givenName"; with the reason when none fits."""
    reasons: list[str] = []
    for label, candidate in (("displayName", display), ("cn", cn)):
        if candidate is None:
            continue
        text = clean_text(candidate)
        if text and any(ch.isalnum() for ch in text):
            return text, None
        reasons.append(f"{label} is empty or over 255 characters")
    joined = " ".join(x for x in (sn, given) if x)
    text = clean_text(joined) if joined else None
    if text and any(ch.isalnum() for ch in text):
        return text, None
    return None, "; ".join(reasons) or "no displayName, cn or sn"
