"""The async homeserver client: the Synapse admin API and the client-server calls the sync and the bot need.

:class:`HomeserverClient` is the one name to import; it is built in layers, one module each:

* :mod:`bridge.matrix.retry` — the one retry policy (its module docstring holds the retry rules);
* :mod:`bridge.matrix.transport` — requests as data and the one network path, the only place that retries;
* :mod:`bridge.matrix.responses` — the typed answers and the one parse-or-raise step;
* :mod:`bridge.matrix.client_api` — client-server calls; :mod:`bridge.matrix.admin_api` — Synapse admin calls;
* :mod:`bridge.matrix.errors` — the errcode → exception tree.

The types the calls return are importable from here too, so callers need one import line.
"""

from __future__ import annotations

from bridge.matrix.admin_api import AdminAPI
from bridge.matrix.responses import (
    Capabilities,
    ExternalId,
    PutUserResult,
    RoomSummary,
    StateEvent,
    UserDetails,
    UserSummary,
    WhoAmI,
)
from bridge.matrix.retry import RetryPolicy
from bridge.matrix.transport import JsonObject, JsonValue, Request, RequestStats

__all__ = [
    "Capabilities",
    "ExternalId",
    "HomeserverClient",
    "JsonObject",
    "JsonValue",
    "PutUserResult",
    "Request",
    "RequestStats",
    "RetryPolicy",
    "RoomSummary",
    "StateEvent",
    "UserDetails",
    "UserSummary",
    "WhoAmI",
]


class HomeserverClient(AdminAPI):
    """Async client for one homeserver and one access token; use it as ``async with``.

    ``base_url`` is the loopback admin listener for admin calls (the public listener refuses them).
    ``pool_limit`` bounds concurrent connections (the apply step runs up to ~32 requests at once).
    ``sleep`` and ``rng`` are injectable so tests move time instead of waiting.
    """
