"""The sync against a real Synapse and a real slapd: convergence, churn, safety rails, faults.

Directories are small (tens of people, rooms of 20) so each full sync takes seconds; the 25,000-person
runs live in bench/.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from nio import AsyncClient

from bridge.matrix.client import HomeserverClient
from bridge.matrix.contract import MARKER_TYPE
from provisioner import exitcodes
from provisioner.config import Config, load_config
from provisioner.core.actions import CreateRoom
from provisioner.core.directory import interpret
from provisioner.core.dn import normalize_dn
from provisioner.core.model import ROOT_UNIT
from provisioner.ldap_reader import read_directory_sync
from provisioner.observe import observe
from provisioner.sample import generate_directory
from provisioner.sync import run
from tests.helpers import write_config

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

PEOPLE = 60
ROOM = 20


@pytest.fixture
def world(make_slapd, fresh_synapse, tmp_path):
    """A fresh slapd (60 people, a 30-person unit) and a fresh Synapse, and a config for both."""
    directory = generate_directory(PEOPLE, seed=11, big_unit=30, broken=True)
    ldap = make_slapd(directory=directory)
    hs = fresh_synapse()
    path = write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, layout={"max_room_size": ROOM})
    return ldap, hs, path, directory


def sync(path: Path, *, apply: bool = True, allow: int | None = None):
    cfg = load_config(path, token_required=True)
    return asyncio.run(run(cfg, apply=apply, allow_removals=allow, progress=False))


def cli(path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def observed(cfg: Config):
    assert cfg.homeserver.admin_token
    async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as c:
        who = await c.whoami()
        return await observe(c, who.user_id)


def login_as(hs, user_id: str) -> str:
    req = urllib.request.Request(
        f"{hs.url}/_synapse/admin/v1/users/{urllib.request.quote(user_id)}/login",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {hs.admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())["access_token"]


def test_full_sync_converges_and_second_sync_writes_nothing(world):
    ldap, hs, path, directory = world
    first = sync(path)
    assert first.exit_code == exitcodes.OK, (first.message, first.report)
    assert first.report is not None and not first.report.failed
    second = sync(path)
    assert second.exit_code == exitcodes.OK
    assert second.plan.actions == ()
    assert second.stats["writes"] == 0, second.stats

    cfg = load_config(path, token_required=True)
    obs = asyncio.run(observed(cfg))
    rooms = [r for r in obs.rooms.values() if r.kind == "room"]
    assert all(len(r.members) <= ROOM for r in rooms)
    big = [r for r in rooms if "контакт" in (r.name or "").lower()]
    assert len(big) >= 2  # the 30-person unit was split
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    enabled = {f"@{first.desired.localparts[p.anchor]}:example.test" for p in snap.enabled}
    counted: dict[str, int] = {}
    for r in rooms:
        for m in r.members:
            counted[m] = counted.get(m, 0) + 1
    assert {m for m in counted if m in enabled} == enabled
    assert all(counted[m] == 1 for m in enabled)
    # Disabled people never got an account.
    assert all(f"@{first.desired.localparts[p.anchor]}:example.test" not in obs.users for p in snap.disabled)
    # Rooms are closed again after the initial joins; spaces stay public (layout.space_members: tree).
    assert all(r.join_rule == "invite" for r in rooms)
    spaces = {r.key: r for r in obs.rooms.values() if r.kind == "space"}
    assert all(r.join_rule == "public" for r in spaces.values())
    # Everyone is in their unit's space and every space above it, the split contact centre included.
    units = {u.key: u for u in snap.units}
    for p in snap.enabled:
        uid = f"@{first.desired.localparts[p.anchor]}:example.test"
        k = p.unit_key
        while k is not None:
            assert uid in spaces[k].members, (uid, k)
            k = units[k].parent_key if k in units else None
        assert uid in spaces[ROOT_UNIT].members
    # (Presence through those spaces: tests/test_space_tree_live.py.)


def test_real_client_sees_room_space_and_finds_colleague(world):
    ldap, hs, path, directory = world
    result = sync(path)
    assert result.exit_code == exitcodes.OK
    desired = result.desired
    room = next(r for r in desired.layout.rooms if len(r.members) >= 3)
    me = room.members[0]
    colleague = room.members[1]
    other = next(
        r for r in desired.layout.rooms if r.unit_key not in (room.unit_key, "root") and r.members
    ).members[0]
    other_person = desired.people[other]
    surname = other_person.display_name.split()[0]

    async def check() -> None:
        client = AsyncClient(hs.public_url, me)
        client.access_token = login_as(hs, me)
        client.user_id = me
        try:
            resp = await client.sync(timeout=0, full_state=True)
            joined = resp.rooms.join
            names = {
                rid: next((e.name for e in r.state if getattr(e, "name", None)), None)
                for rid, r in joined.items()
            }
            assert room.name in names.values()
            members = await client.joined_members(next(rid for rid, n in names.items() if n == room.name))
            assert colleague in {m.user_id for m in members.members}
            space = next((s for s in desired.layout.spaces if s.unit_key == room.unit_key), None)
            if space is not None and space.members:
                assert space.name in names.values()
            # nio has no user-directory call: a raw client request, as Element makes it.
            import aiohttp

            # Synapse fills its user directory in the background: give it a few seconds, as a person would.
            found: dict = {}
            async with aiohttp.ClientSession() as http:
                for _ in range(60):
                    async with http.post(
                        f"{hs.public_url}/_matrix/client/v3/user_directory/search",
                        json={"search_term": surname, "limit": 50},
                        headers={"Authorization": f"Bearer {client.access_token}"},
                    ) as r:
                        found = await r.json()
                    if other in {u["user_id"] for u in found["results"]}:
                        break
                    await asyncio.sleep(0.5)
            assert other in {u["user_id"] for u in found["results"]}, (surname, found)
            # Title and department are on the colleague's profile.
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{hs.public_url}/_matrix/client/v3/profile/{other}",
                    headers={"Authorization": f"Bearer {client.access_token}"},
                ) as r,
            ):
                profile = await r.json()
            # One MSC4133 key per field; the department is the path people see in the space names.
            unit_space = next(s for s in desired.layout.spaces if s.unit_key == other_person.unit_key)
            department = profile["org.civmatrix.department"]
            assert department.split(" / ")[-1] == unit_space.name
            assert department == other_person.department and not department.startswith("ou:")
            assert profile.get("org.civmatrix.title") == other_person.title
            assert profile.get("org.civmatrix.email") == other_person.email
            assert profile.get("org.civmatrix.phone") == other_person.phone
        finally:
            await client.close()

    asyncio.run(check())


def _person_ldif(directory, uid: str) -> str:
    return next(e for e in directory.entries if e.dn.startswith(f"uid={uid},")).dn


def test_churn_converges_in_one_sync(world):
    ldap, hs, path, directory = world
    first = sync(path)
    assert first.exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    people = sorted(snap.enabled, key=lambda p: p.dn)
    uid_of = {p.anchor: f"@{first.desired.localparts[p.anchor]}:example.test" for p in snap.people}
    room_of = first.desired.layout.room_of()
    units = {p.unit_key for p in people}
    leaver, disabled, mover, renamed, relogin = people[0], people[1], people[2], people[3], people[4]
    target_unit_dn = next(p.dn.split(",", 1)[1] for p in people if p.unit_key != mover.unit_key)
    ldap.modify(
        f"dn: {leaver.dn}\nchangetype: delete\n\n"
        f"dn: {disabled.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n"
        f"dn: {renamed.dn}\nchangetype: modify\nreplace: displayName\ndisplayName: Новикова-Переименованная Анна\n\n"
        f"dn: {mover.dn}\nchangetype: modrdn\nnewrdn: {mover.dn.split(',', 1)[0]}\ndeleteoldrdn: 1\nnewsuperior: {target_unit_dn}\n\n"
        f"dn: {relogin.dn}\nchangetype: modrdn\nnewrdn: uid=renamed.login\ndeleteoldrdn: 1\n\n"
    )
    hire_unit = people[5].dn.split(",", 1)[1]
    ldap.modify(
        f"dn: uid=novyy.sotrudnik,{hire_unit}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: novyy.sotrudnik\n"
        "cn: Новый Сотрудник\nsn: Новый\ngivenName: Сотрудник\ndisplayName: Новый Сотрудник Петрович\n"
        "title: Специалист\n\n"
    )
    # A unit rename: the OU keeps its entryUUID, so its rooms must be renamed, not recreated.
    unit_entry = next(u for u in snap.units if u.key in units and len(u.path) >= 2)
    unit_dn = next(p.dn.split(",", 1)[1] for p in people if p.unit_key == unit_entry.key)
    ldap.modify(f"dn: {unit_dn}\nchangetype: modrdn\nnewrdn: ou=Переименованный отдел\ndeleteoldrdn: 1\n\n")

    second = sync(path, allow=10)
    assert second.exit_code == exitcodes.OK, (second.message, second.report and second.report.failed)
    obs = asyncio.run(observed(cfg))
    rooms_with = lambda uid: {k for k, r in obs.rooms.items() if uid in r.members and r.kind == "room"}  # noqa: E731
    assert obs.users[uid_of[leaver.anchor]].locked and not rooms_with(uid_of[leaver.anchor])
    assert obs.users[uid_of[disabled.anchor]].locked and not rooms_with(uid_of[disabled.anchor])
    moved = rooms_with(uid_of[mover.anchor])
    assert len(moved) == 1 and moved != {room_of[uid_of[mover.anchor]]}
    assert obs.users[uid_of[renamed.anchor]].displayname == "Новикова-Переименованная Анна"
    # The login rename keeps the account (same anchor, same Matrix ID), and nobody is duplicated.
    assert rooms_with(uid_of[relogin.anchor])
    assert "@renamed.login:example.test" not in obs.users
    assert "@novyy.sotrudnik:example.test" in obs.users and rooms_with("@novyy.sotrudnik:example.test")
    renamed_rooms = [r for r in obs.rooms.values() if r.key.split("#")[0] == unit_entry.key]
    assert renamed_rooms and all("Переименованный отдел" in (r.name or "") for r in renamed_rooms)
    assert {r.room_id for r in renamed_rooms} <= {r.room_id for r in first.observed.rooms.values()} | {
        r.room_id for r in obs.rooms.values()
    }
    before_ids = {k: r.room_id for k, r in asyncio.run(observed(cfg)).rooms.items()}
    third = sync(path)
    assert third.plan.actions == () and third.stats["writes"] == 0
    assert {k: r.room_id for k, r in asyncio.run(observed(cfg)).rooms.items()} == before_ids


def test_deletion_threshold_holds_everything(world):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    victims = sorted(snap.enabled, key=lambda p: p.dn)[:5]  # 5 of ~60 is over 5 %
    ldap.modify("".join(f"dn: {p.dn}\nchangetype: delete\n\n" for p in victims))
    held = cli(path, "sync", "--quiet")
    assert held.returncode == exitcodes.REMOVALS_HELD, held.stderr
    assert "--allow-removals 5" in held.stderr
    obs = asyncio.run(observed(cfg))
    assert not any(u.locked for u in obs.users.values())
    allowed = cli(path, "sync", "--quiet", "--allow-removals", "5")
    assert allowed.returncode == exitcodes.OK, allowed.stderr
    obs = asyncio.run(observed(cfg))
    assert sum(1 for u in obs.users.values() if u.locked) == 5


def test_short_directory_read_removes_nobody_but_adds(world, tmp_path):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    big_unit = max({p.unit_key for p in snap.people}, key=lambda u: sum(p.unit_key == u for p in snap.people))
    gone = [p for p in snap.people if p.unit_key == big_unit]
    assert len(gone) > 0.1 * len(snap.people)
    ldap.modify(
        "".join(f"dn: {p.dn}\nchangetype: delete\n\n" for p in gone)
        + f"dn: uid=eshche.odin,{snap.enabled[0].dn.split(',', 1)[1]}\nchangetype: add\nobjectClass: inetOrgPerson\n"
        "uid: eshche.odin\ncn: Ещё Один\nsn: Один\ndisplayName: Ещё Один\n\n"
    )
    result = sync(path, allow=1000)
    assert result.exit_code == exitcodes.OK, result.message
    assert result.plan.held_removals > 0
    assert not [a for a in result.plan.actions if a.kind in ("lock_user", "kick", "deactivate_user")]
    obs = asyncio.run(observed(cfg))
    assert "@eshche.odin:example.test" in obs.users
    assert not any(u.locked for u in obs.users.values())


def test_stale_saved_plan_is_refused(world, tmp_path):
    ldap, hs, path, directory = world
    plan_file = tmp_path / "plan.json"
    made = cli(path, "plan", "--out", str(plan_file))
    assert made.returncode == exitcodes.OK, made.stderr
    assert json.loads(plan_file.read_text())["actions"]
    some = next(e for e in directory.entries if e.dn.startswith("uid="))
    ldap.modify(f"dn: {some.dn}\nchangetype: modify\nreplace: title\ntitle: Новая должность\n\n")
    stale = cli(path, "sync", "--plan", str(plan_file), "--quiet")
    assert stale.returncode == exitcodes.STALE_PLAN
    assert "stale" in stale.stderr
    fresh = tmp_path / "fresh.json"
    assert cli(path, "plan", "--out", str(fresh)).returncode == 0
    applied = cli(path, "sync", "--plan", str(fresh), "--quiet")
    assert applied.returncode == exitcodes.OK, applied.stderr


def test_synapse_killed_mid_sync_then_converges(world):
    ldap, hs, path, directory = world
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), "sync", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    audit = path.parent / "state" / "audit.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not audit.exists() or audit.read_text().count("\n") < 40):
        time.sleep(0.2)
    hs.server.kill()
    proc.communicate(timeout=300)
    assert proc.returncode != exitcodes.OK
    hs.server.start()
    again = sync(path)
    assert again.exit_code == exitcodes.OK, (again.message, again.report and again.report.failed)
    final = sync(path)
    assert final.plan.actions == () and final.stats["writes"] == 0
    cfg = load_config(path, token_required=True)
    obs = asyncio.run(observed(cfg))
    # Nothing duplicated: one managed room per key, every alias unique.
    aliases = [r.alias for r in obs.rooms.values()]
    assert len(aliases) == len(set(aliases))


@pytest.fixture
def flaky_proxy():
    """A reverse proxy that answers 429 (with retry_after_ms) or 503 to a share of requests: fault injection."""
    state: dict[str, object] = {}

    async def start(target: str, every: int = 3):
        import aiohttp

        counter = {"n": 0, "faults": 0}
        session = aiohttp.ClientSession()

        async def handle(request: web.Request) -> web.StreamResponse:
            counter["n"] += 1
            if counter["n"] % every == 0:
                counter["faults"] += 1
                if counter["n"] % (every * 2) == 0:
                    return web.json_response(
                        {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 20},
                        status=429,
                    )
                return web.Response(status=503, text="unavailable")
            body = await request.read()
            async with session.request(
                request.method,
                target + request.rel_url.path_qs,
                data=body or None,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as r:
                payload = await r.read()
                return web.Response(status=r.status, body=payload, content_type=r.content_type)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.update(runner=runner, session=session)
        return f"http://127.0.0.1:{port}", counter

    yield start, state


def test_429_and_503_storm_still_converges(world, flaky_proxy, tmp_path):
    ldap, hs, path, directory = world
    start, state = flaky_proxy

    async def go():
        url, counter = await start(hs.url)
        (tmp_path / "proxied").mkdir()
        proxied = write_config(
            tmp_path / "proxied", ldap, hs_url=url, token=hs.admin_token, layout={"max_room_size": ROOM}
        )
        cfg = load_config(proxied, token_required=True)
        try:
            # Every third request fails; non-idempotent creates are not replayed blindly, so a run may leave
            # failures to the next run, which must converge without duplicates.
            for _ in range(4):
                result = await run(cfg, apply=True, progress=False, allow_removals=None)
                if result.exit_code == exitcodes.OK and not result.plan.actions:
                    break
            assert counter["faults"] > 20
        finally:
            await state["session"].close()  # type: ignore[attr-defined]
            await state["runner"].cleanup()  # type: ignore[attr-defined]
        final = await run(load_config(path, token_required=True), apply=True, progress=False)
        assert final.plan.actions == () and final.stats["writes"] == 0

    asyncio.run(go())


def test_marker_is_what_makes_a_room_managed(world):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)

    async def make_unmanaged() -> str:
        async with HomeserverClient(hs.url, hs.admin_token) as c:
            rid = await c.create_room({"name": "Чат по обедам", "preset": "private_chat"})
            someone = next(u for u in (await observed(cfg)).users if u != hs.admin_user_id)
            await c.admin_join(rid, someone)
            return rid

    rid = asyncio.run(make_unmanaged())
    result = sync(path)
    assert result.plan.actions == ()
    obs = asyncio.run(observed(cfg))
    assert rid not in {r.room_id for r in obs.rooms.values()}
    assert MARKER_TYPE == "org.civmatrix.managed"


def test_room_cache_skips_unchanged_rooms_but_sees_a_member_leave(world):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    second = sync(path)
    assert second.stats["writes"] == 0
    assert second.stats["rooms_cached"] > 0  # unchanged rooms were not read again
    room = next(r for r in second.desired.layout.rooms if r.members)
    leaver = room.members[0]
    room_id = second.observed.rooms[room.key].room_id

    async def leave() -> None:
        async with HomeserverClient(hs.public_url, login_as(hs, leaver)) as c:
            await c.send(
                __import__("bridge.matrix.client", fromlist=["Request"]).Request(
                    "POST", f"/_matrix/client/v3/rooms/{room_id}/leave", "client.leave", body={}
                )
            )

    asyncio.run(leave())
    third = sync(path)
    assert [a for a in third.plan.actions if a.kind == "join"] == [
        a for a in third.plan.actions if a.kind == "join" and a.user_id == leaver
    ]
    assert any(a.kind == "join" and a.user_id == leaver for a in third.plan.actions)
    assert sync(path).stats["writes"] == 0


def test_directory_down_changes_nothing(world):
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    ldap.stop()
    down = cli(path, "sync", "--quiet")
    assert down.returncode == exitcodes.DIRECTORY, down.stderr
    assert "cannot reach the directory" in down.stderr and "Traceback" not in down.stderr
    cfg = load_config(path, token_required=True)
    obs = asyncio.run(observed(cfg))
    assert not any(u.locked for u in obs.users.values())
    assert all(r.members for r in obs.rooms.values() if r.kind == "room")


def test_sync_lifts_synapse_rate_limits_for_the_bot(make_slapd, fresh_synapse, tmp_path):
    """With Synapse's own limits (as in production) the bot is throttled after 10 messages; after a sync it
    is not, so a reminder burst to a whole department leaves at once."""
    ldap = make_slapd(directory=generate_directory(12, seed=5))
    hs = fresh_synapse(rate_limits={})
    bot = hs.register("events", "pw-bot", displayname="События")
    extra = {"bot": {"user_id": bot.user_id}}
    path = write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, extra=extra)

    def call(method: str, endpoint: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{hs.public_url}/_matrix/client/v3/{endpoint}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {bot.access_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, created = call("POST", "createRoom", {"preset": "private_chat"})
    assert status == 200, created
    room = urllib.request.quote(created["room_id"])

    def refused(n: int, tag: str) -> int:
        codes = [
            call("PUT", f"rooms/{room}/send/m.room.message/{tag}{i}", {"msgtype": "m.notice", "body": "x"})[0]
            for i in range(n)
        ]
        assert set(codes) <= {200, 429}, codes
        return codes.count(429)

    assert refused(15, "before") > 0
    first = sync(path)
    assert first.exit_code == exitcodes.OK, first.message
    assert [a.user_id for a in first.plan.actions if a.kind == "exempt_rate_limit"] == [bot.user_id]
    assert refused(40, "after") == 0
    assert sync(path).plan.actions == ()


def test_renamed_units_old_name_reused_and_unit_moved_converge(world):
    """A renamed OU releases its old alias (a new OU with the old name gets it, no failed sync), and an OU
    moved under another parent leaves the old parent space."""
    ldap, hs, path, directory = world
    assert sync(path).exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    people = sorted(snap.enabled, key=lambda p: p.dn)
    unit = next(
        u for u in snap.units
        if len(u.path) >= 2 and any(p.unit_key == u.key and "\\" not in p.dn for p in people)
    )  # fmt: skip
    unit_dn = next(p.dn.split(",", 1)[1] for p in people if p.unit_key == unit.key)
    old_rdn, parent_dn = unit_dn.split(",", 1)
    old_alias = asyncio.run(observed(cfg)).rooms[f"{unit.key}#1"].alias
    ldap.modify(f"dn: {unit_dn}\nchangetype: modrdn\nnewrdn: ou=Отдел с новым именем\ndeleteoldrdn: 1\n\n")
    assert sync(path).exit_code == exitcodes.OK
    # A new OU with the old name, with one person in it.
    ldap.modify(
        f"dn: {old_rdn},{parent_dn}\nchangetype: add\nobjectClass: organizationalUnit\n"
        f"ou: {old_rdn.split('=', 1)[1]}\n\n"
        f"dn: uid=povtor.imeni,{old_rdn},{parent_dn}\nchangetype: add\nobjectClass: inetOrgPerson\n"
        "uid: povtor.imeni\ncn: Повтор Имени\nsn: Повтор\ndisplayName: Повтор Имени\n\n"
    )
    third = sync(path)
    assert third.exit_code == exitcodes.OK, (third.message, third.report and third.report.failed)
    obs = asyncio.run(observed(cfg))
    assert obs.rooms[f"{unit.key}#1"].alias != old_alias
    reborn = next(
        r for r in obs.rooms.values() if r.kind == "room" and "@povtor.imeni:example.test" in r.members
    )
    assert reborn.alias == old_alias
    # Move the renamed OU (two levels down) to the top of the tree.
    top_dn, top_key = cfg.directory.base_dn, ROOT_UNIT
    moved_dn = f"ou=Отдел с новым именем,{parent_dn}"
    ldap.modify(
        f"dn: {moved_dn}\nchangetype: modrdn\nnewrdn: ou=Отдел с новым именем\ndeleteoldrdn: 1\n"
        f"newsuperior: {top_dn}\n\n"
    )
    assert sync(path).exit_code == exitcodes.OK
    obs = asyncio.run(observed(cfg))
    space = obs.rooms[unit.key].room_id
    assert [k for k, r in obs.rooms.items() if space in r.children] == [top_key]
    last = sync(path)
    assert last.exit_code == exitcodes.OK and last.plan.actions == ()


def test_profile_field_edited_by_its_owner_is_put_back_on_a_full_read(world):
    ldap, hs, path, directory = world
    first = sync(path)
    assert first.exit_code == exitcodes.OK
    uid, person = next((u, p) for u, p in sorted(first.desired.people.items()) if p.title and not p.disabled)
    token = login_as(hs, uid)
    url = f"{hs.url}/_matrix/client/v3/profile/{urllib.request.quote(uid)}/org.civmatrix.title"

    def call(method: str, body: dict | None = None, as_token: str = token) -> dict:
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {as_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    # MSC4133 lets people overwrite fields an admin set; on this server the guard refuses it outright.
    with pytest.raises(urllib.error.HTTPError) as refused:
        call("PUT", {"org.civmatrix.title": "Министр всего"})
    assert refused.value.code == 403
    assert call("GET")["org.civmatrix.title"] == person.title
    # A field changed behind the sync's back all the same (another admin, a server without the guard) is
    # put back by the next full read.
    call("PUT", {"org.civmatrix.title": "Министр всего"}, as_token=hs.admin_token)
    assert call("GET")["org.civmatrix.title"] == "Министр всего"
    cfg = load_config(path, token_required=True)
    fixed = asyncio.run(run(cfg, apply=True, progress=False, full_read=True))
    assert fixed.exit_code == exitcodes.OK
    assert fixed.plan.counts() == {"update_user": 1}, fixed.plan.counts()
    assert call("GET")["org.civmatrix.title"] == person.title
    again = asyncio.run(run(cfg, apply=True, progress=False, full_read=True))
    assert again.plan.actions == () and again.stats["writes"] == 0


def test_room_version_setting_applies_to_new_rooms_only(world, tmp_path):
    ldap, hs, path, directory = world
    first = sync(path)
    assert first.exit_code == exitcodes.OK
    cfg = load_config(path, token_required=True)
    obs = asyncio.run(observed(cfg))
    # The default keeps "!id:server" room IDs, which Cinny 4.2 and matrix-commander 8 require.
    assert {r.room_version for r in obs.rooms.values()} == {"11"}
    assert all(":" in r.room_id for r in obs.rooms.values())
    # Changing the setting later never recreates or rewrites existing rooms.
    text = path.read_text(encoding="utf-8").replace(
        "max_room_size: 20", "max_room_size: 20\n  room_version: '12'"
    )
    path.write_text(text, encoding="utf-8")
    again = sync(path)
    assert again.plan.actions == () and again.stats["writes"] == 0, again.plan.counts()
    # A unit added afterwards gets the new version, with the creator kept out of its power levels (v12).
    unit_dn = next(e.dn for e in directory.entries if e.dn.startswith("ou=") and e.dn.count(",") == 2)
    ldap.modify(
        f"dn: ou=Новый сектор,{unit_dn}\nchangetype: add\nobjectClass: organizationalUnit\nou: Новый сектор\n\n"
        f"dn: uid=novyy.v12,ou=Новый сектор,{unit_dn}\nchangetype: add\nobjectClass: inetOrgPerson\n"
        "uid: novyy.v12\ncn: Новый Двенадцатый\nsn: Новый\ndisplayName: Новый Двенадцатый\n\n"
    )
    third = sync(path)
    assert third.exit_code == exitcodes.OK, (third.message, third.report and third.report.failed)
    after = asyncio.run(observed(cfg))
    new = [r for k, r in after.rooms.items() if k not in obs.rooms]
    assert new and {r.room_version for r in new} == {"12"}
    assert {r.room_version for k, r in after.rooms.items() if k in obs.rooms} == {"11"}
    fourth = sync(path)
    assert fourth.plan.actions == () and fourth.stats["writes"] == 0, fourth.plan.counts()


def _head_and_staff(snap, n: int):  # type: ignore[no-untyped-def]
    """A unit's head and ``n`` of the people who name them as manager (the sample directory sets ``manager``)."""
    by_dn = {p.dn.casefold(): p for p in snap.enabled}
    reports: dict[str, list] = {}
    for p in snap.enabled:
        if p.manager_dn:
            reports.setdefault(p.manager_dn, []).append(p)
    for manager_dn, staff in sorted(reports.items(), key=lambda kv: -len(kv[1])):
        head = next((h for d, h in by_dn.items() if normalize_dn(d) == manager_dn), None)
        if head is not None and len(staff) >= n:
            return head, sorted(staff, key=lambda p: p.dn)[:n]
    raise AssertionError("the sample directory has no head with enough reports")


def test_modrdn_into_the_leavers_ou_locks_and_creates_nothing(world, tmp_path):
    """Six people moved into ou=Уволенные (Cyrillic, listed with other case and spacing) are locked; no unit,
    space or room is made for the OU; and no room gives power to someone who is not in it."""
    ldap, hs, path, directory = world
    archive = "Уволенные"
    leavers_dn = f"OU={archive.upper()} , {ldap.suffix.upper()}"
    path = write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, layout={"max_room_size": ROOM},
                        directory={"leavers": [leavers_dn]},
                        safety={"max_removal_percent": 50, "min_directory_fraction": 0.5})  # fmt: skip
    ldap.modify(
        f"dn: ou={archive},{ldap.suffix}\nchangetype: add\nobjectClass: organizationalUnit\nou: {archive}\n\n"
    )
    first = sync(path)
    assert first.exit_code == exitcodes.OK, first.message
    cfg = load_config(path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    head, six = _head_and_staff(snap, 6)
    uid = lambda p: f"@{first.desired.localparts[p.anchor]}:example.test"  # noqa: E731
    ldap.modify("".join(f"dn: {p.dn}\nchangetype: modrdn\nnewrdn: {p.dn.split(',', 1)[0]}\ndeleteoldrdn: 1\n"
                        f"newsuperior: ou={archive},{ldap.suffix}\n\n" for p in six))  # fmt: skip
    second = sync(path)
    assert second.exit_code == exitcodes.OK, (second.message, second.report and second.report.failed)
    obs = asyncio.run(observed(cfg))
    for p in six:
        assert obs.users[uid(p)].locked, p.dn
        assert not any(uid(p) in r.members for r in obs.rooms.values() if r.kind == "room"), p.dn
    assert not obs.users[uid(head)].locked
    assert not any(archive.casefold() in (r.name or "").casefold() for r in obs.rooms.values())
    assert not any(isinstance(a, CreateRoom) for a in second.plan.actions)
    for r in obs.rooms.values():
        assert set(r.power_users) <= set(r.members), (
            r.name,
            r.power_users,
        )  # the provisioner is a member too
    audit = (path.parent / "state" / "audit.jsonl").read_text(encoding="utf-8")
    assert f"moved to the leavers container {leavers_dn}" in audit
    third = sync(path)
    assert third.plan.actions == ()
