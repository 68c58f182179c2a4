"""Directory search against a real slapd, a real Synapse, the real sync, the service started by its CLI and
a real nginx with the project's own site (provisioner.proxy) in front of both.

A nio client (knowing nothing of this project) calls the standard ``user_directory/search`` endpoint through
nginx, as Element would. One world per module: 60 people, one sync, one service process; the tests that
change the directory (hire, leaver) or stop the service run last.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient

from provisioner import exitcodes, proxy
from provisioner.config import load_config
from provisioner.core.model import Person
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import free_port
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.sample import generate_directory
from provisioner.sync import RunResult, run
from tests.fixtures.synapse import SynapseHandle, _start
from tests.helpers import write_config

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]


@dataclass
class World:
    ldap: EmbeddedSlapd
    hs: SynapseHandle
    config: Path
    port: int
    first: RunResult
    service: subprocess.Popen[bytes]
    me: str
    token: str
    nginx: EmbeddedNginx

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        """What clients reach: nginx, routing the search to the service and everything else to Synapse."""
        return f"http://127.0.0.1:{self.nginx.port}"

    def people(self) -> dict[str, Person]:
        return {u: p for u, p in self.first.desired.people.items() if not p.disabled}


def sync(path: Path, **kw: Any) -> RunResult:
    cfg = load_config(path, token_required=True)
    return asyncio.run(run(cfg, apply=True, progress=False, **kw))


def admin_login(hs: SynapseHandle, user_id: str) -> str:
    req = urllib.request.Request(
        f"{hs.url}/_synapse/admin/v1/users/{urllib.request.quote(user_id)}/login",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {hs.admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return str(json.loads(resp.read())["access_token"])


def start_service(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "--config", str(path), "search"],
        stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read())["people"] > 0:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"search service exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"search service did not come up: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("search")
    directory = generate_directory(60, seed=23, big_unit=25, broken=False)
    ldap = EmbeddedSlapd(tmp / "slapd", suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    hs = _start(tmp / "synapse")
    service: subprocess.Popen[bytes] | None = None
    nginx: EmbeddedNginx | None = None
    try:
        port, nginx_port = free_port(), free_port()
        search = {"listen": f"127.0.0.1:{port}", "index": "state/search.json", "homeserver": hs.public_url,
                  "auth_cache_seconds": 1, "reload_seconds": 0.2}  # fmt: skip
        path = write_config(
            tmp,
            ldap,
            hs_url=hs.url,
            token=hs.admin_token,
            layout={"max_room_size": 20},
            extra={"search": search},
        )
        first = sync(path)
        assert first.exit_code == exitcodes.OK, first.message
        service = start_service(path, port, tmp / "search.log")
        site = proxy.Proxy(
            server_name="example.test",
            public_baseurl=f"http://127.0.0.1:{nginx_port}/",
            listen=(f"127.0.0.1:{nginx_port}",),
            main=proxy.Upstream(proxy.MAIN, (f"127.0.0.1:{hs.server.public_port}",)),
            search=f"127.0.0.1:{port}",
        )
        nginx = EmbeddedNginx(tmp / "nginx", proxy.site(site), port=nginx_port)
        nginx.start()
        me = sorted(u for u, p in first.desired.people.items() if not p.disabled)[0]
        yield World(ldap, hs, path, port, first, service, me, admin_login(hs, me), nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGINT)
            try:
                service.wait(10)
            except subprocess.TimeoutExpired:
                service.kill()
        hs.server.stop()
        ldap.stop()


async def _search(base: str, token: str | None, body: Any, *, version: str = "v3") -> tuple[int, Any]:
    """POST the standard endpoint with a nio client, as any Matrix client would."""
    client = AsyncClient(base, "@nobody:example.test")
    try:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        resp = await client.send(
            "POST", f"/_matrix/client/{version}/user_directory/search", json.dumps(body), headers
        )
        return resp.status, await resp.json()
    finally:
        await client.close()


def search(w: World, term: str, limit: int | None = None, *, version: str = "v3", token: str | None = "me"):
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    status, data = asyncio.run(
        _search(w.public_url, w.token if token == "me" else token, body, version=version)
    )
    assert status == 200, data
    return data


def ids(data: Any) -> list[str]:
    return [r["user_id"] for r in data["results"]]


# --- matching -----------------------------------------------------------------------------------------


def test_title_department_phone_email_and_transliteration_find_people(world: World) -> None:
    people = world.people()
    uid, p = next(
        (u, p) for u, p in sorted(people.items()) if p.title and p.phone and p.email and p.department
    )
    title_word = max(p.title.split(), key=len)  # type: ignore[union-attr]
    found = search(world, title_word, 50)
    assert uid in ids(found) or found["limited"]
    # Everyone found has the word at the start of a word of what a person sees: name, title, unit.
    for r in found["results"]:
        q = people[r["user_id"]]
        seen = " ".join(x or "" for x in (q.display_name, q.title, q.department)).casefold().replace("ё", "е")
        assert any(
            w.startswith(title_word.casefold()) for w in seen.replace("/", " ").replace("-", " ").split()
        )

    unit_name = p.department.split(" / ")[-1]  # type: ignore[union-attr]
    in_unit = {u for u, q in people.items() if q.department and unit_name in q.department.split(" / ")}
    found = search(world, unit_name, 50)
    assert in_unit <= set(ids(found)) or found["limited"], (unit_name, found)

    digits = "".join(ch for ch in p.phone if ch.isdigit())  # type: ignore[union-attr]
    assert uid in ids(search(world, digits[-7:], 50))
    assert uid in ids(search(world, p.phone))  # typed as written, spaces and dashes included
    assert ids(search(world, p.email)) == [uid]  # type: ignore[arg-type]

    surname = p.display_name.split()[0]
    latin = search(world, transliterate_for_test(surname), 50)
    assert uid in ids(latin), (surname, latin)
    assert uid in ids(search(world, surname.upper().replace("Е", "Ё"), 50))


def transliterate_for_test(text: str) -> str:
    # What a person types on a Latin keyboard: GOST-style, as the project's login rule writes it.
    from provisioner.core.identity import transliterate

    return transliterate(text)


def test_multi_word_exact_name_first_and_no_duplicates(world: World) -> None:
    people = world.people()
    uid, p = next((u, p) for u, p in sorted(people.items()) if p.title and len(p.display_name.split()) >= 2)
    surname, given = p.display_name.split()[:2]
    both = search(world, f"{given} {surname}", 50)
    assert uid in ids(both)
    for r in both["results"]:
        q = people[r["user_id"]]
        words = q.display_name.casefold().replace("ё", "е").split()
        assert any(w.startswith(given.casefold().replace("ё", "е")) for w in words)
    exact = search(world, p.display_name)
    assert ids(exact)[0] == uid
    # Surname + a title word narrows to people with both.
    narrowed = search(world, f"{surname} {p.title.split()[0]}", 50)  # type: ignore[union-attr]
    assert uid in ids(narrowed)
    common = search(world, "а", 50)
    assert len(ids(common)) == len(set(ids(common)))


def test_limit_default_clamp_and_limited_flag(world: World) -> None:
    everyone = search(world, "mos", 50)  # every e-mail address is @mos.test: 59 people
    assert len(everyone["results"]) == 50 and everyone["limited"] is True
    assert len(set(ids(everyone))) == 50
    assert len(search(world, "mos")["results"]) == 10
    assert len(search(world, "mos", 3)["results"]) == 3
    assert len(search(world, "mos", 500)["results"]) == 50
    one = next(iter(world.people().values()))
    exact = search(world, one.display_name, 50)
    assert exact["limited"] is False


@pytest.mark.parametrize("version", ["r0", "v3", "unstable"])
def test_r0_v3_and_unstable_paths(world: World, version: str) -> None:
    p = next(iter(sorted(world.people().items())))[1]
    assert ids(search(world, p.display_name, version=version))


def test_result_shows_title_and_unit_but_room_names_and_pills_stay_plain(world: World) -> None:
    people = world.people()
    uid, p = next((u, p) for u, p in sorted(people.items()) if p.title and p.department and u != world.me)
    found = search(world, p.display_name)
    shown = next(r for r in found["results"] if r["user_id"] == uid)["display_name"]
    assert shown == f"{p.display_name} — {p.title}, {p.department.split(' / ')[-1]}"  # type: ignore[union-attr]

    async def dm_like_element() -> tuple[str | None, str | None, str]:
        # Element's "start chat" invites the user ID it picked from the search result; names come from events.
        client = AsyncClient(world.hs.public_url, world.me)
        client.access_token, client.user_id = world.token, world.me
        try:
            created = await client.room_create(is_direct=True, invite=[uid])
            room_id = created.room_id  # type: ignore[union-attr]
            await client.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": p.display_name, "format": "org.matrix.custom.html",
                 "formatted_body": f'<a href="https://matrix.to/#/{uid}">{p.display_name}</a>'},
            )  # fmt: skip
            await client.sync(timeout=0, full_state=True)
            room = client.rooms[room_id]
            return room.user_name(uid), room.display_name, room_id
        finally:
            await client.close()

    member_name, room_name, room_id = asyncio.run(dm_like_element())
    assert member_name == p.display_name
    assert room_name == p.display_name and "—" not in (room_name or "")
    # The profile itself keeps the plain name, so the member event (and any pill built from it) does too.
    req = urllib.request.Request(
        f"{world.hs.public_url}/_matrix/client/v3/profile/{urllib.request.quote(uid)}/displayname",
        headers={"Authorization": f"Bearer {world.token}"},
    )
    with urllib.request.urlopen(req) as r:
        assert json.loads(r.read())["displayname"] == p.display_name


# --- protocol -------------------------------------------------------------------------------------------


def test_cors_preflight_matches_synapse(world: World) -> None:
    def preflight(base: str) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(
            f"{base}/_matrix/client/v3/user_directory/search",
            method="OPTIONS",
            headers={"Origin": "https://element.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"},
        )  # fmt: skip
        with urllib.request.urlopen(req) as r:
            return r.status, {k: v for k, v in r.headers.items() if k.lower().startswith("access-control-")}

    ours, theirs = preflight(world.public_url), preflight(world.hs.public_url)
    assert ours == theirs and ours[0] == 204


def test_no_token_bad_token_get_synapses_own_errors(world: World) -> None:
    for token in (None, "syt_not_a_token"):
        body = {"search_term": "a"}
        ours = asyncio.run(_search(world.public_url, token, body))
        direct = asyncio.run(_search(world.service_url, token, body))  # the service itself, without nginx
        theirs = asyncio.run(_search(world.hs.public_url, token, body))
        assert ours[0] == direct[0] == theirs[0] == 401
        assert direct[1]["errcode"] == theirs[1]["errcode"]
        assert ours[1]["errcode"] == theirs[1]["errcode"]  # M_MISSING_TOKEN / M_UNKNOWN_TOKEN
    status, data = asyncio.run(_search(world.public_url, world.token, {"limit": 5}))
    assert status == 400 and "search_term" in data["error"]


def test_locked_caller_is_refused_like_synapse(world: World) -> None:
    uid = sorted(world.people())[-1]
    token = admin_login(world.hs, uid)
    assert asyncio.run(_search(world.public_url, token, {"search_term": "a"}))[0] == 200
    req = urllib.request.Request(
        f"{world.hs.url}/_synapse/admin/v2/users/{urllib.request.quote(uid)}",
        data=json.dumps({"locked": True}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {world.hs.admin_token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).close()
    try:
        time.sleep(1.2)  # auth_cache_seconds: 1
        ours = asyncio.run(_search(world.public_url, token, {"search_term": "a"}))
        theirs = asyncio.run(_search(world.hs.public_url, token, {"search_term": "a"}))
        assert ours[0] == theirs[0] == 401 and ours[1]["errcode"] == theirs[1]["errcode"] == "M_USER_LOCKED"
    finally:
        req = urllib.request.Request(
            f"{world.hs.url}/_synapse/admin/v2/users/{urllib.request.quote(uid)}",
            data=json.dumps({"locked": False}).encode(),
            method="PUT",
            headers={"Authorization": f"Bearer {world.hs.admin_token}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(req).close()


def test_only_active_managed_people_appear(world: World) -> None:
    disabled = [p for p in world.first.desired.people.values() if p.disabled]
    for p in disabled:
        assert not search(world, p.display_name, 50)["results"] or all(
            r["user_id"] not in {u for u, q in world.first.desired.people.items() if q.disabled}
            for r in search(world, p.display_name, 50)["results"]
        )
    # The provisioner's own admin account and the excluded one are Synapse accounts, never results.
    assert world.hs.admin_user_id not in ids(search(world, "admin", 50))


# --- the sync feeds it ----------------------------------------------------------------------------------


def test_hire_found_and_leaver_gone_right_after_the_sync(world: World) -> None:
    people = sorted(world.people().items())
    leaver_uid, leaver = people[-2]
    assert leaver_uid in ids(search(world, leaver.display_name))
    unit_dn = leaver.dn.split(",", 1)[1]
    world.ldap.modify(
        f"dn: uid=nanyatyy.sotrudnik,{unit_dn}\nchangetype: add\nobjectClass: inetOrgPerson\n"
        "uid: nanyatyy.sotrudnik\ncn: Нанятый Сотрудник\nsn: Нанятый\ngivenName: Сотрудник\n"
        "displayName: Нанятый Сотрудник Ильич\ntitle: Инспектор по ёлкам\n"
        # Two desk numbers (one with an extension) and a mobile, as multi-valued attributes carry them
        # (OpenLDAP's telephoneNumber syntax is PrintableString: "ext." here, "доб." only in AD).
        "telephoneNumber: +7 495 987-65-43 ext. 25139\ntelephoneNumber: 8 (499) 222-33-44\n"
        "mobile: +7 916 555-66-77\n\n"
        f"dn: {leaver.dn}\nchangetype: delete\n\n"
    )
    result = sync(world.config)
    assert result.exit_code == exitcodes.OK, result.message
    hire = "@nanyatyy.sotrudnik:example.test"
    deadline = time.monotonic() + 5  # reload_seconds is 0.2; the rebuild of 60 people takes milliseconds
    while time.monotonic() < deadline and hire not in ids(search(world, "елкам")):
        time.sleep(0.1)
    assert ids(search(world, "инспектор елкам")) == [hire]
    assert ids(search(world, "98765")) == []  # digits match as a suffix, not anywhere inside
    assert ids(search(world, "6543")) == [hire]
    # A number as printed with its extension, the extension alone, every number of the person.
    assert ids(search(world, "+7 (495) 987-65-43 ext. 25139")) == [hire]
    assert ids(search(world, "8 495 987 65 43 доб. 25139")) == [hire]
    assert ids(search(world, "доб. 25139")) == [hire]
    assert ids(search(world, "+7 495 987-65-43 доб. 25138")) == []
    assert ids(search(world, "987-65-43")) == [hire]
    assert ids(search(world, "+7 499 222-33-44")) == [hire]
    assert ids(search(world, "8 916 555-66-77")) == [hire]
    # The profile carries all of them too, as one string.
    profile = _as(
        world, "GET", f"/_matrix/client/v3/profile/{urllib.request.quote(hire)}", b"", "application/json"
    )
    assert (
        profile["org.civmatrix.phone"] == "+7 495 987-65-43 ext. 25139, 8 (499) 222-33-44, +7 916 555-66-77"
    )
    assert leaver_uid not in ids(search(world, leaver.display_name, 50))


def _as(world: World, method: str, path: str, body: bytes, content_type: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{world.public_url}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {world.token}", "Content-Type": content_type})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read() or b"{}"))


def test_a_picture_someone_set_shows_in_results_after_the_next_sync(world: World) -> None:
    """Avatars are people's own: the search result carries the one their account has, as Synapse's would."""
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2219bc30000000049454e44ae426082"
    )
    uri = _as(world, "POST", "/_matrix/media/v3/upload?filename=me.png", png, "image/png")["content_uri"]
    me = urllib.request.quote(world.me)
    _as(world, "PUT", f"/_matrix/client/v3/profile/{me}/avatar_url",
        json.dumps({"avatar_url": uri}).encode(), "application/json")  # fmt: skip
    name = world.people()[world.me].display_name
    assert result_for(world, name, world.me)["avatar_url"] is None  # the index is from before the picture
    assert sync(world.config).exit_code == exitcodes.OK
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and result_for(world, name, world.me)["avatar_url"] != uri:
        time.sleep(0.1)
    assert result_for(world, name, world.me)["avatar_url"] == uri
    assert result_for(world, name, world.me)["display_name"].startswith(name)


def result_for(world: World, term: str, user_id: str) -> dict[str, Any]:
    hits = [r for r in search(world, term, 50)["results"] if r["user_id"] == user_id]
    assert hits, f"{user_id} not found by {term!r}"
    return dict(hits[0])


def test_service_down_falls_back_to_synapse_and_restart_serves_again(world: World) -> None:
    people = world.people()
    uid, p = next((u, p) for u, p in sorted(people.items()) if p.title and u != world.me)
    title_word = max(p.title.split(), key=len)  # type: ignore[union-attr]
    assert ids(search(world, title_word, 50))
    world.service.send_signal(signal.SIGINT)
    world.service.wait(10)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{world.service_url}/health", timeout=2)
    # nginx answers from Synapse's own user directory: names are still found, titles no longer.
    surname = p.display_name.split()[0]
    deadline = time.monotonic() + 10  # Synapse fills its directory in the background after the sync
    while time.monotonic() < deadline and uid not in ids(search(world, surname, 50)):
        time.sleep(0.3)
    fallback = search(world, surname, 50)
    assert uid in ids(fallback)
    assert all(
        r["display_name"] == people[r["user_id"]].display_name
        for r in fallback["results"]
        if r["user_id"] in people
    )
    assert ids(search(world, title_word, 50)) == []
    world.service = start_service(world.config, world.port, world.config.parent / "search.log")
    assert uid in ids(search(world, title_word, 50))
