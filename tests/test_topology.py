"""The production topology end to end: what the test starts is what deploy/ describes.

Its own PostgreSQL cluster and Redis, Synapse's main process with a sync worker, an event persister and the
presence writer (their files from :mod:`provisioner.deploy`, the renderer of deploy/synapse), and nginx in
front (the site from :mod:`provisioner.proxy`, the renderer of deploy/nginx). Nothing is skipped when the
machine lacks a running PostgreSQL or Redis: the test starts its own (scripts/setup.sh installs them).

The story: a sync of 200 people through the loopback admin listener leaves no ERROR in any Synapse log;
people log in through nginx with their directory password, find a colleague, exchange a DM, see each
other's presence (written by the presence writer) and read receipt through the sync worker; the event bot
answers a command in an encrypted room through nginx; outsiders are refused, and issue 12's probe set
(tests/closed_probes.py) passes through nginx and on the main process's own listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    ReceiptEvent,
    RoomCreateResponse,
    RoomSendResponse,
)

from bridge.bot.app import EventBot
from bridge.bot.config import BotConfig
from bridge.events.clock import ManualClock
from bridge.events.store import open_sqlite
from provisioner import exitcodes, proxy, sync
from provisioner.config import Config, load_config
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import LOOPBACK, free_port
from provisioner.embedded.slapd import EmbeddedSlapd, ssha
from provisioner.embedded.synapse import RegisteredAccount
from provisioner.embedded.topology import Topology
from provisioner.sample import SampleDirectory, SamplePerson, generate_directory
from provisioner.synapse.auth import module_config_from
from provisioner.synapse.config import TEST_RATE_LIMITS
from tests.closed_probes import closed_server_failures
from tests.helpers import write_config

pytestmark = [pytest.mark.synapse, pytest.mark.slapd]

PEOPLE = 200
PASSWORD = "directory-password-1"
# The shape of Element X's room-list request (simplified sliding sync, MSC4186), trimmed.
ELEMENT_X_SYNC: dict[str, Any] = {
    "conn_id": "room-list",
    "lists": {
        "all": {
            "ranges": [[0, 19]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"], ["m.room.canonical_alias", ""], ["m.room.create", ""],
            ],
        }
    },
    "extensions": {"to_device": {"enabled": True}, "e2ee": {"enabled": True}, "receipts": {"enabled": True},
                   "typing": {"enabled": True}, "account_data": {"enabled": True}},
}  # fmt: skip
SERVER_NAME = "example.test"


@dataclass
class Stack:
    topology: Topology
    slapd: EmbeddedSlapd
    directory: SampleDirectory
    cfg: Config
    sync_errors: dict[str, list[str]]
    root: Path
    admin: RegisteredAccount

    @property
    def url(self) -> str:
        return self.topology.public_url


def _log_sizes(t: Topology) -> dict[str, int]:
    return {n: t.log_path(n).stat().st_size for n in t.process_names if t.log_path(n).exists()}


def _new_lines(t: Topology, since: dict[str, int], name: str) -> list[str]:
    with t.log_path(name).open(encoding="utf-8", errors="replace") as handle:
        handle.seek(since.get(name, 0))
        return handle.read().splitlines()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Not a pytest tmp_path: PostgreSQL runs as its own OS user, which cannot enter /tmp/pytest-of-root.
    root = Path(tempfile.mkdtemp(prefix="civmatrix-topology-"))
    root.chmod(0o711)  # enterable, not listable
    tmp = tmp_path_factory.mktemp("topology-cfg")
    directory = generate_directory(PEOPLE, seed=11, broken=False, disabled_fraction=0.0)
    slapd = EmbeddedSlapd(tmp_path_factory.mktemp("topology-slapd"), suffix=directory.base_dn)
    slapd.load_ldif(directory.to_ldif())
    slapd.start()
    hashed = ssha(PASSWORD)
    slapd.modify(
        "".join(
            f"dn: {p.dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {hashed}\n\n"
            for p in directory.samples
        )
    )
    login = module_config_from(load_config(write_config(tmp, slapd)))
    topology = Topology(root, server_name=SERVER_NAME, login=login, overrides=TEST_RATE_LIMITS, durable=False)
    try:
        topology.start()
        admin = topology.create_admin("admin")
        cfg = load_config(
            write_config(tmp, slapd, hs_url=topology.admin_url, token=admin.access_token), token_required=True
        )
        topology.wait_for_background_updates()
        before = _log_sizes(topology)
        result = asyncio.run(sync.run(cfg, apply=True, progress=False))
        assert result.exit_code == exitcodes.OK, result.message
        errors = {
            name: [line for line in _new_lines(topology, before, name) if " ERROR " in line]
            for name in topology.process_names
        }
        yield Stack(topology, slapd, directory, cfg, {k: v for k, v in errors.items() if v}, root, admin)
    finally:
        topology.stop()
        slapd.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_sync_through_the_admin_listener_logs_no_error(stack: Stack) -> None:
    assert stack.sync_errors == {}
    # The events of the sync were written by the event persister, not by the main process that took them.
    writers = stack.topology.postgres.query("SELECT DISTINCT instance_name FROM events")
    assert writers == [["synapse-events-1"]]


def test_every_synapse_process_keeps_the_spaces_out_of_presence(stack: Stack) -> None:
    """The sync's spaces are found by the presence module in each process, with no restart."""
    rows = stack.topology.postgres.query("SELECT count(*) FROM room_stats_state WHERE room_type = 'm.space'")
    spaces = int(rows[0][0])
    assert spaces >= 5  # the sample city's tree
    want = f"presence: {spaces} rooms kept out of presence fan-out"
    deadline = time.monotonic() + 60
    missing = list(stack.topology.process_names)
    while missing and time.monotonic() < deadline:
        missing = [n for n in missing if want not in stack.topology.log_path(n).read_text(errors="replace")]
        time.sleep(0.5)
    assert not missing, f"{missing} never logged {want!r}"


# --------------------------------------------------------------------------------------------------------
# People through nginx
# --------------------------------------------------------------------------------------------------------


class Client:
    """A real matrix-nio client through nginx; syncs in the background."""

    def __init__(self, url: str, login: str, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.login_name = login
        self.client = AsyncClient(
            url, login, store_path=str(store), config=AsyncClientConfig(encryption_enabled=True)
        )
        self.events: list[tuple[str, dict[str, Any]]] = []
        # (room, event id, reader) of every read receipt this client's sync delivered.
        self.receipts: list[tuple[str, str, str]] = []
        self.task: asyncio.Task[Any] | None = None

        async def on_event(room: Any, event: Any) -> None:
            self.events.append((room.room_id, getattr(event, "source", {}) or {}))

        async def on_receipt(room: Any, event: ReceiptEvent) -> None:
            self.receipts += [(room.room_id, r.event_id, r.user_id) for r in event.receipts]

        self.client.add_event_callback(on_event, object)  # type: ignore[arg-type]
        self.client.add_ephemeral_callback(on_receipt, ReceiptEvent)  # type: ignore[arg-type]

    async def log_in(self, password: str) -> LoginResponse:
        reply = await self.client.login(password, device_name="topology test")
        assert isinstance(reply, LoginResponse), reply
        return reply

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.sync_forever(timeout=1000, full_state=True))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.client.close()

    async def send(self, room: str, body: str) -> str:
        for _ in range(5):
            if self.client.should_query_keys:
                await self.client.keys_query()
            reply = await self.client.room_send(
                room, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
            )
            if isinstance(reply, RoomSendResponse):
                return str(reply.event_id)
            await asyncio.sleep(0.5)
        raise AssertionError(f"sending to {room} failed: {reply}")

    def bodies(self, room: str, sender: str | None = None) -> list[str]:
        out = []
        for room_id, source in self.events:
            content = source.get("content", {})
            if room_id == room and (sender is None or source.get("sender") == sender) and "body" in content:
                out.append(str(content["body"]))
        # Decrypted events reach the callback as their decrypted class; their source is the clear event.
        return out


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
async def people(stack: Stack, tmp_path: Path) -> AsyncIterator[Callable[[SamplePerson], Client]]:
    made: list[Client] = []

    def make(person: SamplePerson) -> Client:
        client = Client(stack.url, person.uid, tmp_path / person.uid)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()


def _surname(person: SamplePerson) -> str:
    return person.display_name.split()[0]


async def test_people_log_in_find_each_other_and_talk_across_workers(
    stack: Stack, people: Callable[[SamplePerson], Client]
) -> None:
    t = stack.topology
    first, second = stack.directory.samples[0], stack.directory.samples[1]
    alice, boris = people(first), people(second)
    since = _log_sizes(t)
    me = await alice.log_in(PASSWORD)
    other = await boris.log_in(PASSWORD)

    # Found by surname through nginx (Synapse fills its user directory in the background after the sync).
    async def found() -> list[dict[str, Any]]:
        status, reply = await asyncio.to_thread(
            _call, stack.url, "POST", "/_matrix/client/v3/user_directory/search",
            {"search_term": _surname(second), "limit": 20}, me.access_token,
        )  # fmt: skip
        assert status == 200, reply
        return [r for r in reply["results"] if r.get("user_id") == other.user_id]

    hit = (await until(found, f"{second.display_name} in the user directory"))[0]
    assert hit["display_name"] == second.display_name

    alice.start()
    boris.start()
    created = await alice.client.room_create(is_direct=True, invite=[other.user_id], name="DM")
    assert isinstance(created, RoomCreateResponse), created
    dm = created.room_id
    await until(lambda: dm in boris.client.invited_rooms or dm in boris.client.rooms, "the DM invitation")
    await boris.client.join(dm)
    await until(lambda: other.user_id in alice.client.rooms[dm].users, "boris in the DM")

    message = await alice.send(dm, "Добрый день, Борис!")
    await until(lambda: "Добрый день, Борис!" in boris.bodies(dm, me.user_id), "the DM message at boris")

    # Presence: written by the presence writer, read through the sync worker by the other side.
    await alice.client.set_presence("online", "на месте")

    def presence_seen() -> bool:
        user = boris.client.rooms[dm].users.get(me.user_id)
        return user is not None and user.presence == "online" and user.status_msg == "на месте"

    await until(presence_seen, "alice's presence at boris")

    # Read receipt: boris reads the message; alice's sync (on the sync worker) shows it.
    await boris.client.room_read_markers(dm, fully_read_event=message, read_event=message)

    await until(lambda: (dm, message, other.user_id) in alice.receipts, "boris's read receipt at alice")

    # Which process served what: nginx sent /sync to the sync worker and presence to the presence writer,
    # and the message was persisted by the event persister.
    sync_lines = _new_lines(t, since, "synapse-sync-1")
    assert any("/_matrix/client/v3/sync" in line for line in sync_lines)
    assert any("/_matrix/client/v3/user_directory/search" in line for line in sync_lines)
    presence_lines = _new_lines(t, since, "synapse-presence")
    assert any("PUT /_matrix/client/v3/presence/" in line for line in presence_lines)
    assert not any("/_matrix/client/v3/sync" in line for line in _new_lines(t, since, "main"))
    assert t.postgres.query(f"SELECT instance_name FROM events WHERE event_id = '{message}'") == [
        ["synapse-events-1"]
    ]


async def test_the_bot_answers_in_an_encrypted_room_through_nginx(
    stack: Stack, people: Callable[[SamplePerson], Client], tmp_path: Path
) -> None:
    t = stack.topology
    account = t.register("events", displayname="События")
    bot = EventBot(
        BotConfig(
            homeserver_url=t.public_url,
            user_id=account.user_id,
            access_token=account.access_token,
            device_id=account.device_id,
            store=str(tmp_path / "bot.db"),
            crypto_store_dir=tmp_path / "bot-crypto",
            sync_timeout_ms=1000,
        ),
        open_sqlite(str(tmp_path / "bot.db")),
        ManualClock(datetime.datetime.now(datetime.UTC)),
    )
    person = people(stack.directory.samples[2])
    me = await person.log_in(PASSWORD)
    person.start()
    await bot.start()
    try:
        created = await person.client.room_create(
            name="Encrypted",
            invite=[account.user_id],
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        assert isinstance(created, RoomCreateResponse), created
        room = created.room_id
        await until(lambda: room in bot.client.rooms, "the bot in the encrypted room")
        await until(
            lambda: list(person.client.device_store.active_user_devices(account.user_id)),
            "the bot's device keys",
        )
        await person.send(room, "!event help")
        answers = await until(lambda: person.bodies(room, account.user_id), "the bot's answer")
        assert "!event create" in answers[0]
        # The answer was encrypted on the wire: the room's timeline on the server holds no clear notice.
        status, history = await asyncio.to_thread(
            _call, t.public_url, "GET",
            f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/messages?dir=b&limit=50", None, me.access_token,
        )  # fmt: skip
        assert status == 200, history
        from_bot = [e["type"] for e in history["chunk"] if e["sender"] == account.user_id]
        assert "m.room.encrypted" in from_bot and "m.room.message" not in from_bot
    finally:
        await bot.stop()


# --------------------------------------------------------------------------------------------------------
# Outsiders through nginx
# --------------------------------------------------------------------------------------------------------


def _call(
    url: str, method: str, path: str, body: Any = None, token: str | None = None, context: Any = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"{}")
        except ValueError:
            return err.code, {"raw": raw.decode(errors="replace")}


def test_outsiders_are_refused_at_the_proxy(stack: Stack) -> None:
    url = stack.url
    admin_token = stack.cfg.homeserver.admin_token
    probes = [
        ("GET", "/_synapse/admin/v1/server_version", None, None),
        # Even the admin's own token does not open the admin API from outside.
        ("GET", "/_synapse/admin/v2/users?limit=1", None, admin_token),
        ("GET", "/_synapse/admin/v1/register", None, None),
        ("POST", "/_matrix/client/v3/register", {"username": "intruder", "password": "x" * 12}, None),
        ("POST", "/_matrix/client/v3/register?kind=guest", {}, None),
        ("GET", "/_matrix/federation/v1/version", None, None),
        ("GET", "/_matrix/key/v2/server", None, None),
        ("GET", "/.well-known/matrix/server", None, None),
        ("POST", "/_matrix/client/v3/user_directory/search", {"search_term": "a"}, None),
        ("GET", "/_matrix/client/v3/publicRooms", None, None),
        ("GET", f"/_matrix/client/v3/profile/{urllib.parse.quote('@admin:' + SERVER_NAME)}", None, None),
    ]
    for method, path, body, token in probes:
        status, reply = _call(url, method, path, body, token)
        assert status in (401, 403, 404), (path, status, reply)
        assert reply.get("errcode") in ("M_UNRECOGNIZED", "M_NOT_FOUND", "M_MISSING_TOKEN", "M_FORBIDDEN"), (
            path,
            reply,
        )
    # What a client needs before logging in still works.
    assert _call(url, "GET", "/_matrix/client/versions")[0] == 200
    status, flows = _call(url, "GET", "/_matrix/client/v3/login")
    assert status == 200 and {"type": "m.login.password"} in flows["flows"]
    status, wellknown = _call(url, "GET", "/.well-known/matrix/client")
    assert (status, wellknown["m.homeserver"]) == (200, {"base_url": url})
    assert wellknown["io.element.e2ee"]["secure_backup_required"] is True
    # A wrong directory password is refused by the login module.
    person = stack.directory.samples[0]
    status, reply = _call(
        url,
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": person.uid},
            "password": "no",
        },
    )
    assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN")


# What a worker's client port answers differently from the main process when reached without nginx: the
# worker guard (provisioner.synapse.guard.WorkerGuard) mounts the same token check, so the only difference left
# is a servlet a worker does not have, which answers 404 M_UNRECOGNIZED rather than M_FORBIDDEN (closed too).
_ONLY_ON_THE_MAIN_PROCESS = {"3PID add"}


def test_the_closed_probes_pass_through_nginx_and_on_the_main_process(stack: Stack) -> None:
    """Issue 12's probe set (tests/closed_probes.py) on the production topology, with the org tree the sync
    made, a person who logs in with the directory password, and the admin the sync runs as."""
    t = stack.topology
    status, listed = _call(
        t.admin_url, "GET", "/_synapse/admin/v1/rooms?limit=500", None, stack.admin.access_token
    )
    assert status == 200, listed
    space = next(r for r in listed["rooms"] if r["room_type"] == "m.space" and r["canonical_alias"])
    room = next(r for r in listed["rooms"] if not r["room_type"])
    person = stack.directory.samples[4]

    def log_in(base: str) -> dict[str, str]:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": person.uid},
                "password": PASSWORD}  # fmt: skip
        status, login = _call(base, "POST", "/_matrix/client/v3/login", body)
        assert status == 200, (base, login)
        return {"token": login["access_token"], "user_id": login["user_id"], "password": PASSWORD,
                "new_password": "Second-password-2"}  # fmt: skip

    first = log_in(t.public_url)
    tree = {
        "alias": space["canonical_alias"],
        "space_id": space["room_id"],
        "room_id": room["room_id"],
        "person_id": first["user_id"],
        "admin_user": stack.admin.user_id,
        "admin_password": stack.admin.password,
    }
    # The alias really resolves for someone with a token: the refusals below are the guard, not a 404.
    alias_path = f"/_matrix/client/v3/directory/room/{urllib.parse.quote(tree['alias'])}"
    status, reply = _call(t.public_url, "GET", alias_path, None, first["token"])
    assert (status, reply.get("room_id")) == (200, tree["space_id"]), reply

    # nginx (what outsiders reach), then the main process's public and admin listeners without nginx: both
    # mount the token guard, so nginx is not the only lock.
    for base in (t.public_url, t.main_url, t.admin_url):
        failures = closed_server_failures(
            base, **tree, employee=first if base == t.public_url else log_in(base)
        )
        assert not failures, "\n".join([base, *failures])

    # A worker's client port without nginx (the compose network): closed as the main process is, and no
    # admin API even for the admin's token; its replication port serves no client API at all.
    ports = {w.name: w.client_port for w in t.deployment.workers if w.client_port}
    assert {"synapse-sync-1", "synapse-presence"} <= set(ports), ports
    for name, port in ports.items():
        base = f"http://{LOOPBACK}:{port}"
        failures = closed_server_failures(base, **tree, employee=log_in(base))
        assert {f.split(":", 1)[0] for f in failures} == _ONLY_ON_THE_MAIN_PROCESS, "\n".join(
            [name, *failures]
        )
        # One of the two admin servlets a worker registers (UserRestServletV2Get): 200 without the refuser.
        user_path = f"/_synapse/admin/v2/users/{urllib.parse.quote(stack.admin.user_id)}"
        status, reply = _call(base, "GET", user_path, None, stack.admin.access_token)
        assert (status, reply.get("errcode")) == (404, "M_UNRECOGNIZED"), (name, status, reply)
    for w in t.deployment.workers:
        if w.replication_port:
            status, reply = _call(
                f"http://{LOOPBACK}:{w.replication_port}", "GET", "/_matrix/client/versions"
            )
            assert (status, reply.get("errcode")) == (404, "M_UNRECOGNIZED"), (w.name, status, reply)


def test_search_goes_to_the_search_service_and_falls_back_to_synapse(stack: Stack) -> None:
    """Rule 5 of provisioner.proxy, with a second nginx from the same model plus a search service port."""
    t = stack.topology
    search_port = free_port()
    model = proxy.Proxy(
        server_name="_",
        public_baseurl=t.public_url,
        listen=(f"{LOOPBACK}:{free_port()}",),
        main=t.proxy.main,
        workers=t.proxy.workers,
        search=f"{LOOPBACK}:{search_port}",
    )
    port = int(model.listen[0].rsplit(":", 1)[1])
    person = stack.directory.samples[0]
    status, login = _call(
        t.public_url,
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": person.uid},
            "password": PASSWORD,
        },
    )
    assert status == 200, login
    token = login["access_token"]
    with EmbeddedNginx(stack.root / "nginx-search", proxy.site(model), port=port) as nginx:
        base = f"http://{LOOPBACK}:{nginx.port}"
        # Down: Synapse's user directory answers the same request (a colleague, never oneself).
        colleague = stack.directory.samples[1]
        status, reply = _call(base, "POST", "/_matrix/client/v3/user_directory/search",
                              {"search_term": _surname(colleague)}, token)  # fmt: skip
        assert status == 200, reply
        assert colleague.display_name in [r.get("display_name") for r in reply["results"]], reply
        # Up: the search service answers, and it is handed the person's token to check.
        seen: list[str] = []
        server = _one_shot_search_service(search_port, seen)
        try:
            status, reply = _call(base, "POST", "/_matrix/client/v3/user_directory/search",
                                  {"search_term": "x"}, token)  # fmt: skip
        finally:
            server.shutdown()
        assert (status, reply) == (200, {"limited": False, "results": [{"user_id": "@search:service"}]})
        assert seen == [f"Bearer {token}"]


def _one_shot_search_service(port: int, seen: list[str]) -> Any:
    """A stand-in search service (the real one is another issue's): answers one fixed result."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps({"limited": False, "results": [{"user_id": "@search:service"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_same_site_over_tls_with_a_self_signed_pair(stack: Stack, tmp_path: Path) -> None:
    t = stack.topology
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    from provisioner import deploy

    model = deploy.proxy_model(
        t.deployment, listen=(f"{LOOPBACK}:{port} ssl",), tls=proxy.Tls(str(cert), str(key))
    )
    with EmbeddedNginx(tmp_path / "nginx-tls", proxy.site(model), port=port):
        context = ssl.create_default_context(cafile=str(cert))
        base = f"https://{LOOPBACK}:{port}"
        status, versions = _call(base, "GET", "/_matrix/client/versions", context=context)
        assert status == 200 and "v1.11" in versions["versions"]
        status, reply = _call(base, "GET", "/_synapse/admin/v1/server_version", context=context)
        assert (status, reply["errcode"]) == (404, "M_UNRECOGNIZED")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(base + "/_matrix/client/versions", timeout=10)


def test_every_route_to_the_sync_worker_is_served_there(stack: Stack) -> None:
    """A route to a worker without the servlet would answer 404 M_UNRECOGNIZED to every client."""
    t = stack.topology
    person = stack.directory.samples[3]
    status, login = _call(
        t.public_url,
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": person.uid},
            "password": PASSWORD,
        },
    )
    assert status == 200, login
    token, user = login["access_token"], login["user_id"]
    status, room = _call(t.public_url, "POST", "/_matrix/client/v3/createRoom", {"name": "routes"}, token)
    assert status == 200, room
    quoted_room = urllib.parse.quote(room["room_id"])
    status, sent = _call(
        t.public_url,
        "PUT",
        f"/_matrix/client/v3/rooms/{quoted_room}/send/m.room.message/routes1",
        {"msgtype": "m.text", "body": "routes"},
        token,
    )
    assert status == 200, sent
    event = urllib.parse.quote(sent["event_id"])
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/_matrix/client/v3/sync?timeout=0", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/messages?dir=b&limit=5", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/members", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/joined_members", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/context/{event}", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/event/{event}", None),
        ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/hierarchy", None),
        ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/threads", None),
        ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/timestamp_to_event?ts=0&dir=f", None),
        ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/relations/{event}", None),
        ("GET", "/_matrix/client/v3/joined_rooms", None),
        ("POST", "/_matrix/client/v3/keys/query", {"device_keys": {user: []}}),
        ("GET", "/_matrix/client/v3/capabilities", None),
        ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/initialSync", None),
        # Element X: simplified sliding sync (MSC4186), a room list window with the state it shows.
        ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", ELEMENT_X_SYNC),
    ]
    since = _log_sizes(t)
    sync_routes = next(u for u in t.proxy.workers if u.name == "synapse_sync").routes
    for method, path, body in requests:
        bare = urllib.parse.unquote(path.split("?")[0])
        assert any(re.search(r, bare) for r in sync_routes), f"{bare} is not routed to the sync worker"
        status, reply = _call(t.public_url, method, path, body, token)
        assert status == 200, (path, status, reply)
    served = "\n".join(_new_lines(t, since, "synapse-sync-1"))
    for _, path, _ in requests:
        assert path.split("?")[0] in served, f"{path} was not served by the sync worker"
    # Element X's room list really lists the room, with its name, from the sync worker (MSC4186 lists
    # carry a count; the rooms come with the state asked for).
    status, sliding = _call(t.public_url, "POST", requests[-1][1], ELEMENT_X_SYNC, token)
    assert status == 200, sliding
    assert sliding["lists"]["all"]["count"] >= 1, sliding["lists"]
    assert sliding["rooms"][room["room_id"]]["name"] == "routes", sliding["rooms"].get(room["room_id"])
