"""The Synapse admin API calls the provisioner makes (accounts, rooms, rate limits), typed at the boundary.

Admin calls go to the loopback admin listener (the public listener refuses them). The few that fall back on
a client-API read to stay idempotent (``admin_join``) use :class:`~bridge.matrix.client_api.ClientAPI`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from bridge.matrix.client_api import ClientAPI
from bridge.matrix.errors import MForbidden
from bridge.matrix.responses import (
    ExternalId,
    PutUserResult,
    RoomSummary,
    StateEvent,
    UserDetails,
    UserSummary,
    bool_field,
    page,
    parse,
    state_events,
    str_field,
    str_list,
)
from bridge.matrix.transport import ADMIN_V1, ADMIN_V2, Request
from bridge.matrix.transport import path_segment as _seg

T = TypeVar("T")


class AdminAPI(ClientAPI):
    """The Synapse admin API (and the client API beneath it); needs a server admin's token."""

    async def _paginate(
        self,
        first: Request,
        page_size: int,
        items_key: str,
        next_key: str,
        item: Callable[[Mapping[str, Any]], T],
    ) -> AsyncIterator[T]:
        """Every item of an offset-paginated admin list, page by page (``first`` without ``from``/``limit``).

        Offset pagination: read before writing (the sync does) or a concurrent change may shift a page.
        """
        start = "0"
        while True:
            query = (("from", start), ("limit", str(page_size)), *first.query)
            req = dataclasses.replace(first, query=query)
            got = await self._fetch(req, page, items_key, next_key, item)
            for x in got.items:
                yield x
            if got.next is None or not got.items:
                return
            start = got.next

    async def server_version(self) -> str:
        req = Request("GET", f"{ADMIN_V1}/server_version", "admin.server_version")
        return await self._fetch(req, str_field, "server_version")

    async def is_admin(self, user_id: str) -> bool:
        """Whether ``user_id`` is a server admin. Only an admin may ask: anyone else gets MForbidden."""
        req = Request("GET", f"{ADMIN_V1}/users/{_seg(user_id)}/admin", "admin.is_admin")
        return await self._fetch(req, bool_field, "admin")

    async def list_users(self, *, page_size: int = 1000) -> AsyncIterator[UserSummary]:
        """Every local account, deactivated and locked included, in pages of ``page_size`` ordered by id."""
        req = Request(
            "GET",
            f"{ADMIN_V2}/users",
            "admin.list_users",
            query=(("deactivated", "true"), ("locked", "true"), ("order_by", "name")),
        )
        async for user in self._paginate(req, page_size, "users", "next_token", UserSummary.from_dict):
            yield user

    async def get_user(self, user_id: str) -> UserDetails:
        """One account; raises :class:`MNotFound` if it does not exist. Never loop this."""
        req = Request("GET", f"{ADMIN_V2}/users/{_seg(user_id)}", "admin.get_user")
        return await self._fetch(req, UserDetails.from_dict)

    async def put_user(
        self,
        user_id: str,
        *,
        displayname: str | None = None,
        locked: bool | None = None,
        admin: bool | None = None,
        deactivated: bool | None = None,
        external_ids: Sequence[ExternalId] | None = None,
        user_type: str | None = None,
    ) -> PutUserResult:
        """Create or update an account (``PUT /_synapse/admin/v2/users/<id>``); only given fields change.

        Never sends a password: people log in with the directory, and bcrypt costs ~250 ms per account.
        Re-sending unchanged values creates no events (idempotent).
        """
        body: dict[str, Any] = {}
        if displayname is not None:
            body["displayname"] = displayname
        if locked is not None:
            body["locked"] = locked
        if admin is not None:
            body["admin"] = admin
        if deactivated is not None:
            body["deactivated"] = deactivated
        if external_ids is not None:
            body["external_ids"] = [e.to_dict() for e in external_ids]
        if user_type is not None:
            body["user_type"] = user_type
        req = Request("PUT", f"{ADMIN_V2}/users/{_seg(user_id)}", "admin.put_user", body=body)
        status, reply = await self.send(req)
        return PutUserResult(parse(req, reply, UserDetails.from_dict), created=status == 201)

    async def deactivate_user(self, user_id: str, *, erase: bool = False) -> None:
        """Irreversible: ends sessions, leaves rooms, drops keys. Repeating it is a no-op: replayable."""
        await self._call(
            Request(
                "POST",
                f"{ADMIN_V1}/deactivate/{_seg(user_id)}",
                "admin.deactivate_user",
                body={"erase": erase},
                idempotent=True,
            )
        )

    async def rate_limited(self, user_id: str) -> bool:
        """False if ``user_id`` has a "no limits" override.

        Synapse then skips every rate limiter that knows the requester: messages, joins, invites, profile
        changes; not the per-room limits that apply to everyone in a room.

        Synapse answers ``{}`` when there is no override; a ``messages_per_second`` of 0 disables limiting.
        """
        req = Request("GET", f"{ADMIN_V1}/users/{_seg(user_id)}/override_ratelimit", "admin.get_ratelimit")
        body = await self._call(req)
        return "messages_per_second" not in body or bool(body["messages_per_second"])

    async def override_ratelimit(
        self, user_id: str, *, messages_per_second: int = 0, burst_count: int = 0
    ) -> None:
        """Exempt ``user_id`` from rate limits (0/0 = unlimited); sets a value, so it is replayable."""
        await self._call(
            Request(
                "POST",
                f"{ADMIN_V1}/users/{_seg(user_id)}/override_ratelimit",
                "admin.override_ratelimit",
                body={"messages_per_second": messages_per_second, "burst_count": burst_count},
                idempotent=True,
            )
        )

    async def admin_join(self, room_id_or_alias: str, user_id: str) -> str:
        """Join a local user to a room the admin is in (invite+join for non-public rooms); returns room id.

        Idempotent, so it is replayable: in a ``public`` room Synapse accepts a second join and writes no
        event; in any other room its invite step refuses a member with ``403 M_FORBIDDEN "... is already in
        the room"``, so on M_FORBIDDEN this reads the user's membership and succeeds if it is ``join``.
        """
        req = Request(
            "POST",
            f"{ADMIN_V1}/join/{_seg(room_id_or_alias)}",
            "admin.join",
            body={"user_id": user_id},
            idempotent=True,
        )
        try:
            body = await self._call(req)
        except MForbidden:
            room_id = room_id_or_alias
            if not room_id.startswith("!"):
                room_id = await self.resolve_alias(room_id_or_alias)
            if await self.membership(room_id, user_id) == "join":
                return room_id
            raise
        return parse(req, body, str_field, "room_id")

    async def list_rooms(self, *, page_size: int = 500) -> AsyncIterator[RoomSummary]:
        """Every room on the server (admin API), in pages of ``page_size``."""
        req = Request("GET", f"{ADMIN_V1}/rooms", "admin.list_rooms", query=(("order_by", "name"),))
        async for room in self._paginate(req, page_size, "rooms", "next_batch", RoomSummary.from_dict):
            yield room

    async def room_state(self, room_id: str) -> tuple[StateEvent, ...]:
        """All current state events of a room (admin API: works without being a member)."""
        req = Request("GET", f"{ADMIN_V1}/rooms/{_seg(room_id)}/state", "admin.room_state")
        return await self._fetch(req, state_events)

    async def room_members(self, room_id: str) -> tuple[str, ...]:
        """User ids *joined* to a room (admin API). Invites and leaves are in :meth:`room_state`."""
        req = Request("GET", f"{ADMIN_V1}/rooms/{_seg(room_id)}/members", "admin.room_members")
        return await self._fetch(req, str_list, "members")
