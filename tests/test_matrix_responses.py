"""Typed answers parsed at the boundary: Synapse's shapes in, frozen dataclasses out, a named error otherwise.

The live shapes are exercised against a real Synapse in test_homeserver_client.py; these cases pin the
parsing rules (renamed keys, 0/1 flags, missing optional fields) and what a malformed answer raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bridge.matrix.errors import UnexpectedResponse
from bridge.matrix.responses import (
    ExternalId,
    RoomSummary,
    StateEvent,
    UserDetails,
    UserSummary,
    WhoAmI,
    page,
    parse,
    scalars,
)
from bridge.matrix.transport import Request

REQ = Request("GET", "/_synapse/admin/v2/users/@ivanova:city.test", "admin.get_user")


def test_user_details_as_synapse_sends_them() -> None:
    body = {
        "name": "@ivanova:city.test",
        "displayname": "Иванова Анна",
        "admin": 0,  # SQLite answers flags as integers
        "deactivated": False,
        "locked": 1,
        "user_type": None,
        "external_ids": [{"auth_provider": "ldap", "external_id": "0f8e-uuid"}],
        "creation_ts": 1764000000,
        "avatar_url": None,  # fields we do not model are ignored
    }
    user = parse(REQ, body, UserDetails.from_dict)
    assert user == UserDetails(
        user_id="@ivanova:city.test",
        displayname="Иванова Анна",
        admin=False,
        deactivated=False,
        locked=True,
        user_type=None,
        creation_ts=1764000000,
        external_ids=(ExternalId("ldap", "0f8e-uuid"),),
    )


def test_missing_optional_fields_take_their_defaults() -> None:
    row = UserSummary.from_dict({"name": "@p:city.test"})
    assert (row.displayname, row.admin, row.is_guest, row.creation_ts) == (None, False, False, 0)
    assert row.avatar_url is None
    assert UserSummary.from_dict(
        {"name": "@p:city.test", "avatar_url": "mxc://city.test/abc"}
    ).avatar_url == ("mxc://city.test/abc")
    me = WhoAmI.from_dict({"user_id": "@bot:city.test"})
    assert me.device_id is None and me.server_name == "city.test"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"displayname": "no name key"}, "'name'"),
        ({"name": "@p:city.test", "admin": "yes"}, "'admin'"),
        ({"name": "@p:city.test", "creation_ts": True}, "'creation_ts'"),
        ({"name": "@p:city.test", "external_ids": {"ldap": "x"}}, "'external_ids'"),
    ],
)
def test_a_malformed_answer_names_the_request_and_the_field(body: dict, field: str) -> None:
    with pytest.raises(UnexpectedResponse) as err:
        parse(REQ, body, UserDetails.from_dict)
    assert "GET /_synapse/admin/v2/users/@ivanova:city.test" in str(err.value) and field in str(err.value)


def test_a_page_continues_at_the_servers_token() -> None:
    body = {
        "rooms": [{"room_id": "!a:city.test", "name": "Бухгалтерия", "joined_members": 3}],
        "next_batch": 500,
    }
    got = page(body, "rooms", "next_batch", RoomSummary.from_dict)
    assert [r.name for r in got.items] == ["Бухгалтерия"] and got.next == "500"
    last = page({"rooms": []}, "rooms", "next_batch", RoomSummary.from_dict)
    assert last.items == () and last.next is None


def test_state_event_keeps_its_content_read_only() -> None:
    ev = StateEvent.from_dict(
        {
            "type": "m.room.name",
            "state_key": "",
            "content": {"name": "Отдел кадров"},
            "sender": "@a:c",
            "event_id": "$e",
        }
    )
    assert ev.content["name"] == "Отдел кадров"
    with pytest.raises(TypeError):
        ev.content["name"] = "changed"  # type: ignore[index]


def test_a_field_type_without_a_reader_fails_loudly() -> None:
    @dataclass(frozen=True)
    class Odd:
        ratio: float

    with pytest.raises(TypeError, match="Odd.ratio"):
        scalars(Odd, {"ratio": 0.5})
