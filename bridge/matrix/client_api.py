"""The client-server API calls the provisioner, the bot and the services make, typed at the boundary.

Each call builds a :class:`~bridge.matrix.transport.Request`, sends it through the one transport (which
retries) and parses the answer with :func:`~bridge.matrix.responses.parse`. Calls that Synapse answers with
an error when the state is already as wanted (an invite to a member, a kick of someone gone, a taken alias
pointing at the right room) read the state and succeed, so every call here is safe to repeat.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Concatenate, ParamSpec, TypeVar

from bridge.matrix.contract import CREATE_NONCE
from bridge.matrix.errors import MatrixError, MForbidden, MNotFound, MRoomInUse
from bridge.matrix.responses import (
    Capabilities,
    WhoAmI,
    parse,
    str_field,
    str_list,
)
from bridge.matrix.transport import CLIENT_V3, JsonObject, JsonValue, Request, Transport
from bridge.matrix.transport import path_segment as _seg

T = TypeVar("T")
P = ParamSpec("P")


class ClientAPI(Transport):
    """The client-server API over one :class:`~bridge.matrix.transport.Transport`."""

    _whoami: WhoAmI | None = None

    async def _call(self, req: Request) -> JsonObject:
        return (await self.send(req))[1]

    async def _fetch(
        self,
        req: Request,
        parser: Callable[Concatenate[Mapping[str, Any], P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Send ``req`` and parse the answer; UnexpectedResponse when it has the wrong shape."""
        return parse(req, await self._call(req), parser, *args, **kwargs)

    async def whoami(self) -> WhoAmI:
        """Who the token belongs to (cached after the first call; the token cannot change)."""
        if self._whoami is None:
            req = Request("GET", f"{CLIENT_V3}/account/whoami", "client.whoami")
            self._whoami = await self._fetch(req, WhoAmI.from_dict)
        return self._whoami

    async def capabilities(self) -> Capabilities:
        req = Request("GET", f"{CLIENT_V3}/capabilities", "client.capabilities")
        return await self._fetch(req, Capabilities.from_dict)

    async def joined_rooms(self) -> tuple[str, ...]:
        req = Request("GET", f"{CLIENT_V3}/joined_rooms", "client.joined_rooms")
        return await self._fetch(req, str_list, "joined_rooms")

    async def resolve_alias(self, alias: str) -> str:
        """Room id of ``alias``; raises :class:`~bridge.matrix.errors.MNotFound` when no room has it."""
        req = Request("GET", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.resolve_alias")
        return await self._fetch(req, str_field, "room_id")

    async def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` from the room directory; an alias that is already gone is fine (replayable)."""
        req = Request(
            "DELETE", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.delete_alias", idempotent=True
        )
        with contextlib.suppress(MNotFound):
            await self._call(req)

    async def set_alias(self, alias: str, room_id: str) -> None:
        """Point ``alias`` (``#local:server``) at ``room_id``; idempotent.

        Synapse answers ``409`` (errcode M_UNKNOWN, "Room alias ... already exists") for a taken alias, not
        M_ROOM_IN_USE; this resolves it and succeeds if it already points at ``room_id``, otherwise raises
        :class:`~bridge.matrix.errors.MRoomInUse` naming the room that holds it.
        """
        req = Request(
            "PUT", f"{CLIENT_V3}/directory/room/{_seg(alias)}", "client.set_alias", body={"room_id": room_id}
        )
        try:
            await self._call(req)
        except MatrixError as exc:
            if exc.status != 409 and not isinstance(exc, MRoomInUse):
                raise
            holder = await self.resolve_alias(alias)
            if holder != room_id:
                raise MRoomInUse(
                    exc.status,
                    "M_ROOM_IN_USE",
                    f"alias {alias} already points at {holder}",
                    method=req.method,
                    path=req.path,
                ) from None

    async def create_room(self, body: Mapping[str, Any], *, existing_alias_ok: bool = False) -> str:
        """``POST /createRoom`` with everything in one call; returns the room id.

        Not idempotent: a failure after the request may have reached the server raises ServerUnavailable
        with ``maybe_applied=True`` instead of creating a second room. With a ``room_alias_name`` in ``body``
        the alias makes a retry safe, and ``existing_alias_ok=True`` returns the room that already holds the
        alias (a run killed after the create, or synapse#13427) instead of raising MRoomInUse.
        """
        has_alias = isinstance(body.get("room_alias_name"), str)
        # A fresh create event per call, so parallel identical rooms never share a v12 room ID.
        body = dict(body)
        body["creation_content"] = dict(body.get("creation_content") or {})
        body["creation_content"].setdefault(CREATE_NONCE, secrets.token_hex(8))
        req = Request(
            "POST", f"{CLIENT_V3}/createRoom", "client.create_room", body=body, retry_on_429=has_alias
        )
        try:
            reply = await self._call(req)
        except MRoomInUse:
            if not (existing_alias_ok and has_alias):
                raise
            server_name = (await self.whoami()).server_name
            return await self.resolve_alias(f"#{body['room_alias_name']}:{server_name}")
        return parse(req, reply, str_field, "room_id")

    async def send_state(
        self, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> str:
        """Set a state event (idempotent PUT); returns the event id (the old one if nothing changed)."""
        req = Request(
            "PUT",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/state/{_seg(event_type)}/{_seg(state_key)}",
            "client.send_state",
            body=content,
        )
        return await self._fetch(req, str_field, "event_id")

    async def get_state(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> Mapping[str, JsonValue] | None:
        """Content of one state event, or None when the room has no such state."""
        req = Request(
            "GET",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/state/{_seg(event_type)}/{_seg(state_key)}",
            "client.get_state",
        )
        try:
            return MappingProxyType(await self._call(req))
        except MNotFound:
            return None

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """``user_id``'s membership in a room the token owner is in (join, invite, leave, ban), or None."""
        try:
            content = await self.get_state(room_id, "m.room.member", user_id)
        except MForbidden:
            return None
        value = content.get("membership") if content is not None else None
        return value if isinstance(value, str) else None

    async def invite(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        """Invite ``user_id``; idempotent: an already invited or joined user counts as success.

        Synapse refuses to invite a member (``403 M_FORBIDDEN``); on that answer this reads the membership
        and succeeds when it is ``invite`` or ``join``, so a replay after a lost answer is harmless.
        """
        await self._change_membership("invite", room_id, user_id, reason, lambda m: m in ("invite", "join"))

    async def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        """Remove ``user_id`` from a room; idempotent: someone already out (left, kicked, banned) is success.

        Synapse answers ``403 M_FORBIDDEN`` for a target not in the room; on that answer this reads the
        membership and succeeds unless the person is still joined or invited (then the 403 was about
        power levels and is raised).
        """
        await self._change_membership("kick", room_id, user_id, reason, lambda m: m not in ("join", "invite"))

    async def _change_membership(
        self,
        action: str,
        room_id: str,
        user_id: str,
        reason: str | None,
        settled: Callable[[str | None], bool],
    ) -> None:
        """POST ``/rooms/<room>/<action>``; on ``403`` succeed if the membership is ``settled`` already.

        Replayable for that reason: a repeat after a lost answer finds the membership as wanted.
        """
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        path = f"{CLIENT_V3}/rooms/{_seg(room_id)}/{action}"
        req = Request("POST", path, f"client.{action}", body=body, idempotent=True)
        try:
            await self._call(req)
        except MForbidden:
            if not settled(await self.membership(room_id, user_id)):
                raise

    async def send_message(
        self, room_id: str, content: Mapping[str, Any], txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        """Send an event with a transaction id: the server de-duplicates a replay, so this is idempotent."""
        req = Request(
            "PUT",
            f"{CLIENT_V3}/rooms/{_seg(room_id)}/send/{_seg(event_type)}/{_seg(txn_id)}",
            "client.send_message",
            body=content,
        )
        return await self._fetch(req, str_field, "event_id")

    async def get_account_data(self, user_id: str, data_type: str) -> Mapping[str, JsonValue] | None:
        """The token owner's global account data of ``data_type``, or None. ``user_id`` must be the owner."""
        req = Request(
            "GET",
            f"{CLIENT_V3}/user/{_seg(user_id)}/account_data/{_seg(data_type)}",
            "client.get_account_data",
        )
        try:
            return MappingProxyType(await self._call(req))
        except MNotFound:
            return None

    async def put_account_data(self, user_id: str, data_type: str, content: Mapping[str, Any]) -> None:
        await self._call(
            Request(
                "PUT",
                f"{CLIENT_V3}/user/{_seg(user_id)}/account_data/{_seg(data_type)}",
                "client.put_account_data",
                body=content,
            )
        )

    async def get_profile(self, user_id: str) -> Mapping[str, JsonValue]:
        """The whole profile (displayname, avatar_url and custom MSC4133 fields) of ``user_id``."""
        return MappingProxyType(
            await self._call(Request("GET", f"{CLIENT_V3}/profile/{_seg(user_id)}", "client.get_profile"))
        )

    async def set_profile_field(self, user_id: str, field_name: str, value: JsonValue) -> None:
        """Set one profile field (MSC4133, stable ``/_matrix/client/v3/profile/{userId}/{field}``).

        Synapse 1.163 serves the stable path without any experimental flag and lets a server admin set
        another local user's fields (``ProfileFieldRestServlet.on_PUT`` passes ``by_admin``). Custom field
        names must be namespaced (``gov.example.title``); check :meth:`capabilities` first.
        """
        await self._call(
            Request(
                "PUT",
                f"{CLIENT_V3}/profile/{_seg(user_id)}/{_seg(field_name)}",
                "client.set_profile_field",
                body={field_name: value},
            )
        )

    async def delete_profile_field(self, user_id: str, field_name: str) -> None:
        await self._call(
            Request(
                "DELETE",
                f"{CLIENT_V3}/profile/{_seg(user_id)}/{_seg(field_name)}",
                "client.delete_profile_field",
            )
        )
