"""Presence stays in the rooms: a real sync in the space tree, a real Synapse, people's own /sync.

Everyone is in the top space (``layout.space_members: tree``). With :class:`provisioner.synapse.presence.
PresenceScope` loaded (every rendered ``homeserver.yaml`` has it), two people who share only spaces do not
see each other's presence, and two who share a room do. The same scenario on a Synapse without the module
(``presence_scope=False``, what a config-file exclusion that nobody reloaded amounts to) shows the top space
carrying presence to everyone: that is the run this test would be without the module.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from pathlib import Path

import pytest

from bridge.matrix.client import HomeserverClient
from provisioner import exitcodes
from provisioner.config import Config, load_config
from provisioner.core.model import ROOT_UNIT
from provisioner.core.reconcile import Observed
from provisioner.observe import observe
from provisioner.sample import generate_directory
from provisioner.sync import run
from tests.closed_probes import http
from tests.helpers import write_config

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

ROOM = 10


def _login_as(hs, user_id: str) -> str:
    status, body = http(
        "POST", f"{hs.url}/_synapse/admin/v1/users/{urllib.parse.quote(user_id)}/login", {}, hs.admin_token
    )
    assert status == 200, body
    return str(body["access_token"])


def _sync(hs, token: str, since: str | None, timeout_ms: int, *, presence_only: bool = False) -> dict:
    query = {"timeout": str(timeout_ms), "set_presence": "offline"}
    if since:
        query["since"] = since
    if presence_only:
        # Also a request Synapse has not answered before: it caches an initial sync's reply by its key.
        query["filter"] = '{"room": {"rooms": []}, "account_data": {"not_types": ["*"]}}'
    status, body = http(
        "GET", f"{hs.public_url}/_matrix/client/v3/sync?{urllib.parse.urlencode(query)}", token=token
    )
    assert status == 200, body
    return body


def _presence_of(body: dict) -> set[str]:
    return {e["sender"] for e in body.get("presence", {}).get("events", []) if e.get("type") == "m.presence"}


def _wait_for_scope(hs, spaces: set[str], deadline: float) -> None:
    """Until the module has found every space the sync made (it polls the database)."""
    want = f"presence: {len(spaces)} rooms kept out of presence fan-out"
    while time.monotonic() < deadline:
        if want in hs.server.log_path.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"Synapse's log never said {want!r}")


async def _observed(cfg: Config) -> Observed:
    assert cfg.homeserver.admin_token
    async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as client:
        return await observe(client, (await client.whoami()).user_id)


def _synced_world(make_slapd, fresh_synapse, tmp_path: Path, *, scoped: bool):
    ldap = make_slapd(directory=generate_directory(40, seed=7))
    hs = fresh_synapse(presence_scope=scoped)
    path = write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, layout={"max_room_size": ROOM})
    cfg = load_config(path, token_required=True)
    result = asyncio.run(run(cfg, apply=True, progress=False))
    assert result.exit_code == exitcodes.OK, result.message
    return hs, asyncio.run(_observed(cfg))


def _three_people(obs: Observed, service: str) -> tuple[str, str, str, set[str], str]:
    """A and B share a department room; C is in another unit's room and shares only spaces with A."""
    members = {r.key: sorted(r.members - {service}) for r in obs.rooms.values() if r.kind == "room"}
    people = [m for ms in members.values() for m in ms]
    assert len(people) == len(set(people)), "everyone is in exactly one department room"
    first, other = (k for k in sorted(members, key=lambda k: (-len(members[k]), k))[:2])
    assert first.rpartition("#")[0] != other.rpartition("#")[0] or len(members) == 2
    a, b = members[first][:2]
    c = members[other][0]
    spaces = {r.room_id for r in obs.rooms.values() if r.kind == "space"}
    return a, b, c, spaces, obs.rooms[ROOT_UNIT].room_id


@pytest.mark.parametrize("scoped", [True, False], ids=["civmatrix", "without-the-module"])
def test_presence_reaches_room_mates_and_not_the_organisation(make_slapd, fresh_synapse, tmp_path, scoped):
    hs, obs = _synced_world(make_slapd, fresh_synapse, tmp_path, scoped=scoped)
    a, b, c, spaces, top = _three_people(obs, hs.admin_user_id)
    tokens = {u: _login_as(hs, u) for u in (a, b, c)}
    # C really is in the top space with A (so only the exclusion can keep A's presence from C).
    for user in (a, c):
        status, joined = http("GET", f"{hs.public_url}/_matrix/client/v3/joined_rooms", token=tokens[user])
        assert status == 200 and top in joined["joined_rooms"], (user, joined)
    if scoped:
        _wait_for_scope(hs, spaces, time.monotonic() + 60)

    since = {u: _sync(hs, tokens[u], None, 0)["next_batch"] for u in (b, c)}
    status, body = http(
        "PUT",
        f"{hs.public_url}/_matrix/client/v3/presence/{urllib.parse.quote(a)}/status",
        {"presence": "online", "status_msg": "at my desk"},
        tokens[a],
    )
    assert status == 200, body

    # B shares a room with A: A's change arrives (the long poll returns as soon as it is there).
    deadline = time.monotonic() + 30
    seen_by_b: set[str] = set()
    while a not in seen_by_b and time.monotonic() < deadline:
        reply = _sync(hs, tokens[b], since[b], 5000)
        since[b] = reply["next_batch"]
        seen_by_b |= _presence_of(reply)
    assert a in seen_by_b, "a room mate never saw the colleague come online"

    # By now the change is persisted and routed; C's stream either has it or never will.
    seen_by_c = _presence_of(_sync(hs, tokens[c], since[c], 2000))
    fresh_c = _presence_of(_sync(hs, tokens[c], None, 0, presence_only=True))  # lists all one can see
    if scoped:
        assert a not in seen_by_c and a not in fresh_c, "presence crossed the organisation through a space"
    else:
        assert a in seen_by_c and a in fresh_c, "stock Synapse should route presence through the top space"
