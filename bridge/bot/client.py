"""The bot's matrix-nio client, with nio's own retries bounded by the one retry policy.

matrix-nio retries inside every call (``AsyncClient._send``): after a 429 it sleeps the server's
``retry_after_ms`` and tries again, after a timeout or a broken connection it backs off and tries again —
both without limit by default, so one call could hang for as long as the homeserver misbehaves, out of
reach of the bot's own loops. Here both counts are capped at the policy's ``max_retries``; after that nio
returns the error response (429) or raises the connection error, and the caller's loop (sync, send lane)
waits through :class:`~bridge.matrix.retry.Backoff` over the same policy. nio does not retry 5xx answers.

nio replays a timed-out request whatever its method. For the bot's sends that is safe (``PUT`` with a
transaction id, deduplicated by the homeserver); ``createRoom`` for a direct chat is the one exception, as it
was before the cap.
"""

from __future__ import annotations

import logging
import random
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import AsyncClient, AsyncClientConfig, RoomMemberEvent
from nio import Event as NioEvent

from bridge.matrix.retry import RetryPolicy

log = logging.getLogger(__name__)

# How long one request may take before nio counts it as a timeout (``sync`` adds its own long-poll time).
REQUEST_TIMEOUT = 60.0


def client_config(policy: RetryPolicy, *, request_timeout: float = REQUEST_TIMEOUT) -> AsyncClientConfig:
    """nio's config for the bot: end-to-end encryption on, internal retries capped by ``policy``."""
    return AsyncClientConfig(
        encryption_enabled=True,
        # The bot persists its sync token itself, in the same transaction as the events it handled.
        store_sync_tokens=False,
        request_timeout=request_timeout,
        max_limit_exceeded=policy.max_retries,
        max_timeouts=policy.max_retries,
        backoff_factor=policy.base_delay,
        max_timeout_retry_wait_time=policy.max_delay,
    )


class BotClient(AsyncClient):  # type: ignore[misc]  # nio ships no type information
    """nio's ``AsyncClient`` whose waits between timeout retries are the policy's jittered backoff."""

    def __init__(
        self,
        homeserver: str,
        user: str,
        *,
        retry: RetryPolicy,
        rng: random.Random | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            homeserver, user, config=client_config(retry, request_timeout=request_timeout), **kwargs
        )
        self.retry = retry
        self._rng = rng if rng is not None else random.Random()

    async def get_timeout_retry_wait_time(self, got_timeouts: int) -> float:
        # nio's own formula has no jitter: many lanes timing out together would retry in lockstep.
        return self.retry.backoff(max(0, got_timeouts - 1), self._rng)


async def load_members(client: AsyncClient, room_id: str) -> bool:
    """Read the joined and invited members of ``room_id`` into nio's room; False if that failed.

    The bot's sync lazy-loads members, so nio knows only those who spoke lately. Before it shares a room key
    nio reads the joined ones itself (``joined_members``) but not the invited: a person invited and not yet
    joined would never read a message sent meanwhile, as the full member list in the sync allowed. After a
    failure here nio's own read still runs. Later changes come with the sync: Synapse sends every membership
    change, in the timeline or, after a gap, in the state (it does not lazy-load a limited sync).
    """
    room = client.rooms.get(room_id)
    if room is None:
        return False
    path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/members?not_membership=leave"
    try:
        resp = await client.send("GET", path, headers={"Authorization": f"Bearer {client.access_token}"})
        try:
            if resp.status != 200:
                log.warning("members of %s: HTTP %s", room_id, resp.status)
                return False
            body = await resp.json()
        finally:
            resp.release()
    except (aiohttp.ClientError, TimeoutError) as e:
        log.warning("members of %s: %r", room_id, e)
        return False
    members: set[str] = set()
    changed = False
    for raw in body.get("chunk", []):
        ev = NioEvent.parse_event(raw) if isinstance(raw, dict) else None
        if isinstance(ev, RoomMemberEvent) and ev.membership in ("join", "invite"):
            changed = room.handle_membership(ev) or changed
            members.add(ev.state_key)
    for user in set(room.users) - members:
        changed = room.remove_member(user) or changed
    room.members_synced = True
    if client.olm is not None:
        client.olm.update_tracked_users(room)
        if changed:
            # A room key already given out reached only the members nio knew then: the next send makes one.
            client.invalidate_outbound_session(room_id)
    return True
