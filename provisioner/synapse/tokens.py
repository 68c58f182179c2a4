"""A new access token for an existing device, minted by a server admin on the loopback admin listener.

Local passwords are off (Rule 4 of :mod:`provisioner.synapse.config`), so the two local accounts (the
provisioning admin and the bot) can never log in again once registered. Synapse's own admin API mints
tokens (``POST /_synapse/admin/v1/users/<id>/login``), but not for the caller itself and never bound to a
device; the bot's end-to-end keys belong to its device, so a device-less token would cut it off from
encrypted rooms. This resource fills exactly that gap and nothing more:

``POST /_synapse/civmatrix/v1/device_token`` with ``{"user_id": ..., "device_id": ...}`` and a server
admin's token → ``{"access_token": ...}``: a token for that account and that existing device, after which
every other token of the device is deleted (a rotation: the old token stops working at once).

It is mounted on the admin listener only (Rule 6), which binds loopback only; the public listener's
``/_synapse`` tree has no such path. It uses Synapse's ``AuthHandler.create_access_token_for_user_id`` (what
the login servlet uses) and ``user_delete_access_tokens`` (what a password change uses), reached through the
module API's ``_hs``; tests/test_closed_server.py exercises it on a real Synapse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.web.resource import Resource

PATH = "/_synapse/civmatrix/v1/device_token"


def device_token_minter(config: Mapping[str, Any], module_api: Any) -> Resource:
    """Synapse ``additional_resources`` factory for :data:`PATH` (admin listener only)."""
    from synapse.api.errors import AuthError, Codes, NotFoundError, SynapseError
    from synapse.http.server import DirectServeJsonResource
    from synapse.http.servlet import parse_json_object_from_request

    hs = module_api._hs
    auth, auth_handler, store = hs.get_auth(), hs.get_auth_handler(), hs.get_datastores().main

    class _Minter(DirectServeJsonResource):
        isLeaf = True

        async def _async_render_POST(self, request: Any) -> tuple[int, dict[str, Any]]:
            requester = await auth.get_user_by_req(request)
            if not await auth.is_server_admin(requester):
                raise AuthError(403, "You are not a server admin", Codes.FORBIDDEN)
            body = parse_json_object_from_request(request)
            user_id, device_id = body.get("user_id"), body.get("device_id")
            if not isinstance(user_id, str) or not hs.is_mine_id(user_id):
                raise SynapseError(400, "user_id must be a local Matrix ID", Codes.INVALID_PARAM)
            if not isinstance(device_id, str) or not device_id:
                raise SynapseError(400, "device_id must be the ID of an existing device", Codes.INVALID_PARAM)
            if await store.get_device(user_id, device_id) is None:
                raise NotFoundError(f"{user_id} has no device {device_id}")
            token = await auth_handler.create_access_token_for_user_id(user_id, device_id, None)
            made = await store.get_user_by_access_token(token)
            await store.user_delete_access_tokens(user_id, except_token_id=made.token_id, device_id=device_id)
            return 200, {"access_token": token, "user_id": user_id, "device_id": device_id}

    resource: Resource = _Minter(clock=hs.get_clock())
    return resource
