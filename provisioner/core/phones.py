"""Phone numbers as directories hold them and as people type them. Pure: text in, digits out.

A directory writes numbers every way there is: "+7 (495) 149-03-75 ext. 25139", "8 495 149-03-75, доб. 123",
"+7 495 111-22-33; +7 916 555-66-77", one number per value of a multi-valued attribute. This module says
what the numbers in such a text are (:func:`numbers`), so that the search matches on the number and the
extension separately, and joins a person's values into the one string the profile and search carry
(:func:`join_values`).

Rules (tests/test_phones.py):
1. A value holds one or more numbers separated by ",", ";" or "/"; a piece that is only an extension
   ("…, доб. 123") belongs to the number before it.
2. An extension is the digits after a marker at the end of a number: "ext", "extension", "x", "#",
   "доб", "добавочный", "доп", "вн", "внутр", "внутренний" (any case, with or without a dot or colon,
   in brackets or not). The main number is every digit before the marker.
3. Eleven digits starting with 7 or 8 are a Russian number with its trunk code: "8 495 …" and "+7 495 …"
   are the same number, compared on the ten digits after the code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.core.identity import clean_text

# The markers a printed extension starts with; not preceded by a letter, so "Доб" in "Добров" is no marker.
EXTENSION_MARKER = r"(?:ext(?:ension)?|доб(?:авочный)?|доп|вн(?:утр(?:енний)?)?|x|#)"
_EXT_TAIL = re.compile(rf"(?<![^\W\d_])\(?\s*{EXTENSION_MARKER}\s*[.:]*\s*(\d+)\s*\)?\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;/]")
MAX_VALUE = 64  # one number as the directory writes it; longer is not a phone number
MAX_JOINED = 255  # what the profile field and the search snapshot carry for all of a person's numbers


@dataclass(frozen=True, slots=True)
class Phone:
    """One number: its digits as written (trunk code included) and its extension's digits ("" if none)."""

    main: str
    extension: str = ""

    @property
    def national(self) -> str:
        """The digits to compare on: without the 7/8 trunk code of an eleven-digit Russian number."""
        return national(self.main)

    @property
    def forms(self) -> tuple[str, ...]:
        """The digit strings the main number is matched on, as a suffix: as written, and national."""
        n = self.national
        return (self.main,) if n == self.main else (self.main, n)


def national(digits: str) -> str:
    return digits[1:] if len(digits) == 11 and digits[0] in "78" else digits


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def split_extension(text: str) -> tuple[str, str]:
    """(the text before an extension marker, the extension's digits); ``(text, "")`` without one."""
    m = _EXT_TAIL.search(text)
    if m is None:
        return text, ""
    return text[: m.start()], m.group(1)


def numbers(text: str | None) -> tuple[Phone, ...]:
    """The numbers in one directory value (rule 1), in the order written; pieces without digits dropped."""
    out: list[Phone] = []
    for piece in _SEPARATORS.split(text or ""):
        before, ext = split_extension(piece)
        main = digits_of(before)
        if not main:
            if ext and out and not out[-1].extension:
                out[-1] = Phone(out[-1].main, ext)
            continue
        out.append(Phone(main, ext))
    return tuple(out)


def _key(phone: Phone) -> tuple[str, str]:
    return phone.national, phone.extension


def join_values(values: Iterable[str]) -> str | None:
    """All of a person's numbers (every value of every phone attribute, in order) as one string.

    Each value is kept as written, so a person with one number keeps exactly the string they always had;
    a value whose numbers all appeared in an earlier value (the desk number also given as the mobile) is
    dropped; values are joined with ", ", which :func:`numbers` splits again. Values longer than
    ``MAX_VALUE`` are not numbers and are skipped; values that would take the whole past ``MAX_JOINED``
    are left out, so the first numbers (the desk phone) always survive.
    """
    kept: list[str] = []
    seen: set[tuple[str, str]] = set()
    length = 0
    for raw in values:
        value = clean_text(raw, max_len=MAX_VALUE)
        if value is None:
            continue
        keys = {_key(p) for p in numbers(value)}
        if keys and keys <= seen:
            continue
        added = len(value) + (2 if kept else 0)
        if length + added > MAX_JOINED:
            continue
        seen |= keys
        kept.append(value)
        length += added
    return ", ".join(kept) or None
