"""The LDAP vocabulary the sync and the login module share: filters, escaping, value decoding."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st
from ldap3.utils.conv import escape_bytes, escape_filter_chars

from provisioner.ldap_common import (
    anchor_filter,
    decode_value,
    escape_octets,
    escape_value,
    is_filter,
    person_filter,
)


@given(st.text())
def test_values_are_escaped_as_ldap3_escapes_them(text: str) -> None:
    # ldap3 is what the sync used before; a login must produce the same search as it always did.
    assert escape_value(text) == escape_filter_chars(text)


@given(st.binary(min_size=1))
def test_octets_are_escaped_as_ldap3_escapes_them(value: bytes) -> None:
    assert escape_octets(value) == escape_bytes(value)


def test_a_login_cannot_widen_the_search() -> None:
    flt = person_filter("(objectClass=inetOrgPerson)", "uid", "*)(uid=*")
    assert flt == r"(&(objectClass=inetOrgPerson)(uid=\2a\29\28uid=\2a))"


def test_a_guid_anchor_is_searched_for_as_the_bytes_it_was_read_from() -> None:
    raw = uuid.uuid4().bytes_le
    anchor = decode_value("objectguid", raw)
    assert anchor == str(uuid.UUID(bytes_le=raw))  # the form AD tools print
    assert anchor_filter("(objectClass=user)", "objectGUID", anchor) == (
        f"(&(objectClass=user)(objectGUID={escape_bytes(raw)}))"
    )
    assert anchor_filter("(objectClass=user)", "objectGUID", "not-a-guid") is None
    assert anchor_filter("(o=x)", "entryUUID", "a*b") == r"(&(o=x)(entryUUID=a\2ab))"


def test_values_decode_to_text_whatever_the_bytes() -> None:
    assert decode_value("cn", "Иванов".encode()) == "Иванов"
    assert decode_value("cn", b"\xff\xfe") == "fffe"  # not UTF-8: kept, as hex, rather than dropped
    assert (
        decode_value("cn", bytes(16)) == bytes(16).decode()
    )  # 16 bytes are a GUID only for a GUID attribute


def test_filter_shape() -> None:
    assert is_filter("(objectClass=*)") and is_filter("(&(a=b)(c=d))")
    assert not is_filter("objectClass=*") and not is_filter("(&(a=b)") and not is_filter("(a=b))(")
