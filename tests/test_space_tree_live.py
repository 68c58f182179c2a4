"""The space tree with people in it: a real sync, a real Synapse, people's own requests.

Everyone is in the top space (``layout.space_members: tree``). Two things every rendered ``homeserver.yaml``
adds for that, each checked against the same server without it (``stock``: the run these tests would be
without the module):

* :class:`provisioner.synapse.presence.PresenceScope`: two people who share only spaces do not see each
  other's presence, two who share a room do;
* :class:`provisioner.synapse.limits.SpaceBrowsing`: a person browsing the whole tree the way a client's
  space lobby does (page after page, sub-space after sub-space) never meets a 429.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from bridge.matrix.client import HomeserverClient
from provisioner import exitcodes
from provisioner.config import Config, load_config
from provisioner.core.model import ROOT_UNIT
from provisioner.core.reconcile import Observed
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.observe import observe
from provisioner.sample import generate_directory
from provisioner.sync import run
from tests.closed_probes import http
from tests.fixtures.synapse import SynapseHandle, unique_localpart
from tests.fixtures.synapse import _start as start_synapse
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


@dataclass(frozen=True)
class Tree:
    side: str
    hs: SynapseHandle
    obs: Observed


@pytest.fixture(scope="module", params=["civmatrix", "stock"])
def tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """A synced sample city in the space tree, on a Synapse with (civmatrix) or without (stock) the modules."""
    stock = request.param == "stock"
    directory = generate_directory(40, seed=7)
    ldap = EmbeddedSlapd(tmp_path_factory.mktemp("tree-slapd"), suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    hs = start_synapse(
        tmp_path_factory.mktemp("tree-synapse"), presence_scope=not stock, space_browsing=not stock
    )
    try:
        path = write_config(
            tmp_path_factory.mktemp("tree-cfg"), ldap, hs_url=hs.url, token=hs.admin_token,
            layout={"max_room_size": ROOM},
        )  # fmt: skip
        cfg = load_config(path, token_required=True)
        result = asyncio.run(run(cfg, apply=True, progress=False))
        assert result.exit_code == exitcodes.OK, result.message
        yield Tree(request.param, hs, asyncio.run(_observed(cfg)))
    finally:
        hs.server.stop()
        ldap.stop()


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


def test_presence_reaches_room_mates_and_not_the_organisation(tree: Tree) -> None:
    hs, scoped = tree.hs, tree.side == "civmatrix"
    a, b, c, spaces, top = _three_people(tree.obs, hs.admin_user_id)
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


def test_browsing_the_whole_tree_never_meets_a_429(tree: Tree) -> None:
    """Every space's lobby, page by page (3 rooms a page), five times over, six requests at a time as a
    browser sends them: 429 never with the module; Synapse's own limit (5/s, burst 10) refuses the same walk."""
    hs = tree.hs
    # A token of the person's own (an admin's puppet token would be exempt from rate limits as the admin
    # is), in every space as the sync's people are: the spaces are public to local people.
    token = hs.register(unique_localpart("browser"), "browser-password-1").access_token
    spaces = sorted(r.room_id for r in tree.obs.rooms.values() if r.kind == "space")
    for space in spaces:
        url = f"{hs.public_url}/_matrix/client/v3/join/{urllib.parse.quote(space)}"
        status, joined = http("POST", url, {}, token)
        while status == 429:  # rc_joins_per_room still counts the sync's joins into the space
            time.sleep(joined.get("retry_after_ms", 1000) / 1000)
            status, joined = http("POST", url, {}, token)
        assert status == 200, joined

    def lobby(space: str) -> tuple[list[int], set[str]]:
        statuses: list[int] = []
        shown: set[str] = set()
        since: str | None = ""
        while since is not None:
            query = {"limit": "3", "max_depth": "1"} | ({"from": since} if since else {})
            status, body = http(
                "GET",
                f"{hs.public_url}/_matrix/client/v1/rooms/{urllib.parse.quote(space)}/hierarchy?"
                + urllib.parse.urlencode(query),
                token=token,
            )
            statuses.append(status)
            if status != 200:
                break
            shown |= {r["room_id"] for r in body.get("rooms", [])}
            since = body.get("next_batch")
        return statuses, shown

    answers: dict[int, int] = {}
    listed: set[str] = set()
    with ThreadPoolExecutor(max_workers=6) as pool:
        for statuses, shown in pool.map(lobby, spaces * 5):
            for status in statuses:
                answers[status] = answers.get(status, 0) + 1
            listed |= shown
    calls = sum(answers.values())
    assert calls >= 30, answers
    if tree.side == "civmatrix":
        assert answers == {200: calls}, answers
        assert set(spaces) <= listed  # every space of the tree was shown to the person
    else:
        assert answers.get(429, 0) > 0, answers
