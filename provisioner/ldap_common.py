"""What the directory sync and the login module inside Synapse must agree on about LDAP: which entries are
people, how one is found by login or anchor, and how raw attribute values become text.

Both sides search the same directory with the same filter; if they built it or decoded an anchor
differently, a person could log in under one identity and be synced under another. Standard library only,
so the config parser can check filters without loading an LDAP client.
"""

from __future__ import annotations

import uuid

# LDAP result codes (RFC 4511, 4.1.9) the readers act on; ldapsearch and ldapmodify exit with these too.
LDAP_SUCCESS = 0
LDAP_TIMELIMIT_EXCEEDED = 3
LDAP_SIZELIMIT_EXCEEDED = 4
LDAP_ADMINLIMIT_EXCEEDED = 11
LDAP_NO_SUCH_OBJECT = 32
LDAP_INVALID_CREDENTIALS = 49
LDAP_ALREADY_EXISTS = 68

# Anchors that AD stores as 16 raw bytes; read as a GUID string, searched for as escaped octets.
BINARY_ANCHORS = frozenset({"objectguid", "msds-consistencyguid"})


def is_filter(value: str) -> bool:
    """A cheap shape check (parenthesised, balanced) that catches a filter pasted without its brackets."""
    return value.startswith("(") and value.endswith(")") and value.count("(") == value.count(")")


def escape_value(text: str) -> str:
    """A value for an equality match, with the characters RFC 4515 reserves escaped."""
    for char, code in (("\\", "\\5c"), ("*", "\\2a"), ("(", "\\28"), (")", "\\29"), ("\x00", "\\00")):
        text = text.replace(char, code)
    return text


def escape_octets(value: bytes) -> str:
    """Raw bytes as an RFC 4515 value: every octet escaped."""
    return "".join(f"\\{b:02x}" for b in value)


def person_filter(people: str, login_attribute: str, login: str) -> str:
    """The one person of ``people`` (the configured filter) whose login is ``login``."""
    return f"(&{people}({login_attribute}={escape_value(login)}))"


def anchor_filter(people: str, anchor_attribute: str, anchor: str) -> str | None:
    """The one person with this anchor; ``None`` when a binary anchor's value is not a GUID."""
    if anchor_attribute.lower() in BINARY_ANCHORS:
        try:
            value = escape_octets(uuid.UUID(anchor).bytes_le)
        except ValueError:
            return None
    else:
        value = escape_value(anchor)
    return f"(&{people}({anchor_attribute}={value}))"


def decode_value(attribute: str, value: bytes) -> str:
    """An attribute value as text: GUIDs in the form AD tools print, UTF-8, and hex for anything else."""
    if attribute in BINARY_ANCHORS and len(value) == 16:
        # AD stores GUIDs little-endian in the first three fields.
        return str(uuid.UUID(bytes_le=value))
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()
