"""The client API behind a token check, imported by the Synapse process (Rule 5 of
:mod:`provisioner.synapse.config`).

Synapse serves some client-API servlets without authentication (the spec allows it): room alias lookup
(``GET /directory/room/{alias}``), room summaries (``/v1/room_summary/{room}``), a room's directory
visibility (``GET /directory/list/room/{room}``), the public room list when so configured. The module API
has no per-request hook, and the client API is one leaf resource (``ClientRestResource``, ``isLeaf``), so
nothing can be mounted *under* ``/_matrix/client``. What can be done is what ``additional_resources`` does
for the admin refuser: mount a resource *at* ``/_matrix/client``, replacing the listener's own. This one is
Synapse's ``ClientRestResource`` itself, with one step before its routing: a request that
:func:`provisioner.synapse.access.needs_token` says needs a token must present a valid one, checked the way
Synapse's own ``Auth.get_user_by_req`` checks it — so the answers are Synapse's own (``401 M_MISSING_TOKEN``,
``401 M_UNKNOWN_TOKEN``, ``401 M_USER_LOCKED``), with CORS headers, from Synapse's own error path.

It needs the ``HomeServer`` to build the resource, which the factory reaches through the module API's
``_hs`` (there is no public accessor); a Synapse upgrade that changes this fails the live tests in
tests/test_closed_server.py, it cannot silently open the server: the resource would fail to load and
Synapse would not start.

The check is for access tokens of accounts: an application service's token would be refused (this server
has none). One more rule rides on the same check: profile fields the directory owns
(:data:`provisioner.synapse.access.DIRECTORY_PROFILE_PREFIX`) are written by a server admin only (the sync),
the way ``enable_set_displayname: false`` keeps the display name the directory's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from provisioner.synapse.access import needs_token, writes_directory_profile_field

if TYPE_CHECKING:
    from twisted.web.resource import Resource

# The servlets that accept a locked or expired token (LogoutRestServlet, LogoutAllRestServlet): a locked
# leaver's client can still sign out. Everything else gets Synapse's default, strict check.
_LENIENT = re.compile(r"^/_matrix/client/(api/v1|r0|v3|unstable)/logout(/all)?$")


def client_api_guard(config: Mapping[str, Any], module_api: Any) -> Resource:
    """Synapse ``additional_resources`` factory for ``/_matrix/client``: the client API, token-checked."""
    return _guarded_client_api(module_api._hs)


def _guarded_client_api(hs: Any, servlet_groups: list[str] | None = None) -> Resource:
    """Synapse's ``ClientRestResource`` (of ``servlet_groups``, default all) with the token check first."""
    from synapse.api.errors import AuthError, Codes, UserLockedError
    from synapse.rest import ClientRestResource

    auth = hs.get_auth()
    store = hs.get_datastores().main

    async def check(request: Any, lenient: bool) -> Any:
        # Auth.get_user_by_req would do, but it records the requester on the request, which Synapse
        # allows once; the servlet's own check comes after this one. These are its first steps.
        token = auth.get_access_token_from_request(request)  # MissingClientTokenError: M_MISSING_TOKEN
        requester = await auth.get_user_by_access_token(token, allow_expired=lenient)  # M_UNKNOWN_TOKEN
        if not lenient and await store.get_user_locked_status(requester.user.to_string()):
            raise UserLockedError()
        return requester

    class _GuardedClientResource(ClientRestResource):
        async def _async_render(self, request: Any) -> Any:
            path = request.path.decode("ascii", errors="replace")
            method = request.method.decode("ascii", errors="replace")
            if needs_token(method, path):
                requester = await check(request, _LENIENT.match(path) is not None)
                if writes_directory_profile_field(method, path) and not await auth.is_server_admin(requester):
                    raise AuthError(403, "This profile field comes from the directory", Codes.FORBIDDEN)
            return await super()._async_render(request)

    resource: Resource = _GuardedClientResource(hs, servlet_groups=servlet_groups)
    return resource


class WorkerGuard:
    """A Synapse module (``modules:`` in the shared ``homeserver.yaml``) that closes the workers' listeners
    the way Rules 2 and 5 of :mod:`provisioner.synapse.config` close the main process's.

    A worker ignores ``additional_resources`` but mounts what modules register
    (``ModuleApi.register_web_resource``, ``GenericWorkerServer._listen_http``), on *every* listener of the
    process. So, on a worker only (the main process has its listeners' resources), this registers:

    * ``/_matrix/client``: per listener, by the local address a request came in on, what that listener
      would serve anyway, token-checked: the whole client API where it names ``client``, the media servlets
      where it names only ``media``, and ``404 M_UNRECOGNIZED`` elsewhere (a replication listener gets no
      client API it did not have);
    * ``/_synapse/admin``: the refuser. A worker mounts admin servlets on each listener; the provisioner and
      the bot use the main process's loopback admin listener only.

    With it a worker's client port reached without nginx (the compose network, a mistaken firewall rule)
    answers the outsider probes exactly as the main process does.
    """

    def __init__(self, config: Mapping[str, Any], api: Any) -> None:
        hs = api._hs
        if hs.config.worker.worker_app is None:
            return
        from provisioner.synapse.refuser import admin_api_refuser

        by_listener: dict[Any, Resource] = {}
        for listener in hs.config.worker.worker_listeners:
            names = _resource_names(listener)
            groups: list[str] | None
            if "client" in names:
                groups = None
            elif "media" in names:
                groups = ["media"]
            else:
                continue
            by_listener[_listener_key(listener)] = _guarded_client_api(hs, groups)
        api.register_web_resource("/_matrix/client", _by_listener(by_listener))
        api.register_web_resource("/_synapse/admin", admin_api_refuser({}, api))

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
        return config


def _resource_names(listener: Any) -> set[str]:
    options = listener.http_options
    return {n for r in (options.resources if options is not None else ()) for n in r.names}


def _listener_key(listener: Any) -> Any:
    """What identifies a listener from inside a request: its TCP port, or its Unix socket's path."""
    port = getattr(listener, "port", None)
    return port if port is not None else getattr(listener, "path", None)


def _by_listener(resources: Mapping[Any, Resource]) -> Resource:
    """One leaf at ``/_matrix/client`` that hands each request to its own listener's resource."""
    from twisted.web.resource import Resource

    from provisioner.synapse.refuser import admin_api_refuser

    refuse = admin_api_refuser({}, None)

    class _ByListener(Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            host = request.getHost()
            key = getattr(host, "port", None) or getattr(host, "name", None)
            if isinstance(key, bytes):
                key = key.decode()
            return resources.get(key, refuse).render(request)  # type: ignore[no-untyped-call]

    return _ByListener()  # type: ignore[no-untyped-call]
