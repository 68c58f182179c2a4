"""The one-command demo: a generated city government on a local slapd and Synapse, synced, with the bot.

Everything lives under one directory (``--dir``): the LDAP database, the Synapse data, the secrets, the
config the demo generated, logs and the bot's store. A second run in the same directory resumes: the same
ports, accounts and rooms, and the sync then has (almost) nothing to do. A lock file refuses a second demo
running in the same directory at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from provisioner import exitcodes, proxy, runlock
from provisioner.config import Config, load_config
from provisioner.demo_fill import Fill, first_scope, read_snapshot
from provisioner.embedded.nginx import EmbeddedNginx, NginxError
from provisioner.embedded.ports import LOOPBACK, free_port, free_ports, port_is_free
from provisioner.embedded.postgres import PostgresError
from provisioner.embedded.redis import RedisError
from provisioner.embedded.slapd import EmbeddedSlapd, SlapdError, ssha
from provisioner.embedded.synapse import EmbeddedSynapse, RegisteredAccount, admin_request
from provisioner.embedded.topology import Topology
from provisioner.ldap_reader import DirectoryError
from provisioner.sample import SampleDirectory, generate_directory
from provisioner.synapse.config import SynapseError

SERVER_NAME = "example.test"
DEMO_PASSWORD = "demo-password"
BOT_LOCALPART = "events"
STATE_FILE = "demo.json"
PENDING = "pending"
MAX_UPLOAD = "50M"
# How long the banner waits for Synapse to index colleagues for search (it does so after the sync, in the
# background); at 25,000 people this takes minutes.
FINDABLE_TIMEOUT = 900.0

# A demo setting, never used in deploy/: one person at one machine tries every login the banner offers,
# mistypes a password, logs in again from a second client. Synapse's defaults (a burst of 5 logins per
# address, then one every ~5 minutes) would answer the seventh with 429 M_LIMIT_EXCEEDED.
DEMO_RATE_LIMITS: dict[str, Any] = {
    "rc_login": {
        "address": {"per_second": 1, "burst_count": 30},
        "account": {"per_second": 1, "burst_count": 30},
        "failed_attempts": {"per_second": 1, "burst_count": 10},
    }
}


class DemoError(Exception):
    """A problem the person running the demo can fix; the message says how."""


@dataclass
class DemoState:
    public_port: int
    admin_port: int
    ldap_port: int
    people: int
    seed: int
    samples: list[dict[str, str]]
    # Added with nginx in front; 0 in a directory made before (a port is picked on resume).
    nginx_port: int = 0
    workers: bool = False
    # Added with the directory search service (bridge search); 0 in an older directory (picked on resume).
    search_port: int = 0
    # The banner's people are in (their units synced first) / a fill of the whole city has finished once. A
    # directory made before these existed was synced whole before its banner: both true.
    first_in: bool = True
    city_in: bool = True

    @classmethod
    def load(cls, path: Path) -> DemoState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise DemoError(f"{path} is damaged ({e}); remove the directory to start over") from None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)


@contextlib.contextmanager
def demo_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "demo.lock"
    fh: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the demo's lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "?"
        fh.close()
        raise DemoError(f"another demo is already running in {root} (pid {other}); stop it first") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _secret(path: Path, make: str | None = None) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make if make is not None else secrets.token_urlsafe(24)
    path.write_text(value, encoding="utf-8")
    path.chmod(0o600)
    return value


def _check_ports(state: DemoState) -> None:
    ports = [("LDAP", state.ldap_port)]
    if not state.workers:  # the topology checks its own ports
        ports += [("Matrix", state.public_port), ("admin", state.admin_port), ("proxy", state.nginx_port)]
    if state.search_port:
        ports.append(("search", state.search_port))
    for name, port in ports:
        if not port_is_free(port):
            raise DemoError(
                f"the demo's {name} port 127.0.0.1:{port} is in use by another program; stop it, or use "
                "another --dir for a fresh demo on new ports"
            )


def _write_config(root: Path, slapd: EmbeddedSlapd, admin_url: str, search_port: int) -> Path:
    data: dict[str, Any] = {
        "homeserver": {
            "url": admin_url,
            "server_name": SERVER_NAME,
            "admin_token_file": "secrets/admin_token",
        },
        "directory": {
            "uri": slapd.uri,
            "bind_dn": slapd.service_dn,
            "bind_password_file": "secrets/ldap_service_password",
            "base_dn": slapd.suffix,
            "preset": "openldap",
            "disabled_filter": "(employeeType=disabled)",
        },
        "layout": {
            "max_room_size": 200,
            "org_name": "Правительство Москвы",
            "head_title_pattern": "^(Начальник|Руководитель|Глава|Префект|Заведующий|Директор)",
        },
        "sync": {"concurrency": 8, "state_dir": "state", "audit_log": "state/audit.jsonl"},
        "exclude": [f"@admin:{SERVER_NAME}"],
        "bot": {
            "user_id": f"@{BOT_LOCALPART}:{SERVER_NAME}",
            "access_token_file": "secrets/bot_token",
            "store": "bot/events.db",
            "crypto_store_dir": "bot/crypto",
            "timezone": "Europe/Moscow",
        },
        # The proxy sends user_directory/search here: colleagues found by title, unit, phone, e-mail.
        "search": {"listen": f"{LOOPBACK}:{search_port}", "index": "state/search.json"},
    }
    path = root / "civmatrix.yaml"
    path.write_text(
        "# Generated by `provisioner demo`; edit freely, the demo keeps your file on the next start.\n"
        + yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return path


def _say(msg: str) -> None:
    print(msg, flush=True)


class _Single:
    """nginx in front of one Synapse process on SQLite (the default demo)."""

    def __init__(self, root: Path, state: DemoState, login: dict[str, Any], search: str | None) -> None:
        self.public_url = f"http://{LOOPBACK}:{state.nginx_port}"
        self.synapse = EmbeddedSynapse(
            root / "synapse",
            server_name=SERVER_NAME,
            public_port=state.public_port,
            admin_port=state.admin_port,
            public_baseurl=self.public_url + "/",
            behind_proxy=True,
            modules=[{"module": "provisioner.synapse.auth.DirectoryAuthProvider", "config": login}],
            rate_limits=DEMO_RATE_LIMITS,
            overrides={"max_upload_size": MAX_UPLOAD},
            log_level="WARNING",
        )
        site = proxy.Proxy(
            server_name="_",
            public_baseurl=self.public_url,
            listen=(f"{LOOPBACK}:{state.nginx_port}",),
            main=proxy.Upstream(proxy.MAIN, (f"{LOOPBACK}:{state.public_port}",)),
            max_body_size=MAX_UPLOAD,
            search=search,
        )
        self.nginx = EmbeddedNginx(root / "nginx", proxy.site(site), port=state.nginx_port)
        self.admin_url = self.synapse.admin_url
        self.what = "nginx in front of one Synapse process (SQLite)"
        self.logs = [self.synapse.log_path]

    def start(self) -> None:
        self.synapse.start()
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        self.synapse.stop()

    def create_admin(self) -> RegisteredAccount:
        return self.synapse.create_admin("admin")

    def register(self, localpart: str, displayname: str) -> RegisteredAccount:
        return self.synapse.register(localpart, displayname=displayname)

    def wait_for_background_updates(self) -> None:
        self.synapse.wait_for_background_updates()


class _Workers:
    """The production topology: PostgreSQL + Redis + Synapse main and workers + nginx (``--workers``)."""

    def __init__(self, root: Path, login: dict[str, Any], search_port: int | None) -> None:
        self.topology = Topology(
            root / "topology",
            server_name=SERVER_NAME,
            login=login,
            overrides=DEMO_RATE_LIMITS,
            search_port=search_port,
        )
        self.public_url = self.topology.public_url
        self.admin_url = self.topology.admin_url
        names = ", ".join(w.name for w in self.topology.deployment.workers)
        self.what = f"nginx in front of Synapse main + {names}, on PostgreSQL and Redis"
        self.logs = [self.topology.log_path(n) for n in self.topology.process_names]

    def start(self) -> None:
        self.topology.start()

    def stop(self) -> None:
        self.topology.stop()

    def create_admin(self) -> RegisteredAccount:
        return self.topology.create_admin("admin")

    def register(self, localpart: str, displayname: str) -> RegisteredAccount:
        return self.topology.register(localpart, displayname=displayname)

    def wait_for_background_updates(self) -> None:
        self.topology.wait_for_background_updates()


def _new_state(root: Path, people: int, seed: int, workers: bool) -> tuple[DemoState, SampleDirectory]:
    _say(f"civmatrix demo: generating a city government of {people} people…")
    directory = generate_directory(people, seed=seed)
    samples = [{"login": p.uid, "name": p.display_name, "title": p.title, "dn": p.dn}
               for p in directory.samples]  # fmt: skip
    ports = free_ports(5)
    state = DemoState(
        ports[0],
        ports[1],
        ports[2],
        people,
        seed,
        samples,
        nginx_port=ports[3],
        workers=workers,
        search_port=ports[4],
        first_in=False,
        city_in=False,
    )
    return state, directory


def _load_state(
    root: Path, people: int, seed: int, workers: bool
) -> tuple[DemoState, SampleDirectory | None]:
    state = DemoState.load(root / STATE_FILE)
    if state is None:
        return _new_state(root, people, seed, workers)
    if state.workers != workers:
        made, asked = ("--workers", "without it") if state.workers else ("no --workers", "with --workers")
        raise DemoError(
            f"{root} holds a demo made with {made} (its accounts live in that server's database); run it "
            f"{asked} again as before, or use another --dir for this one"
        )
    if people != state.people:
        _say(f"note: this demo directory holds {state.people} people; --people {people} is ignored "
             "(use another --dir for a different size)")  # fmt: skip
    if not state.nginx_port:
        state.nginx_port = free_port()
    if not state.search_port:
        state.search_port = free_port()
    return state, None


def run_demo(root: Path, *, people: int, seed: int = 1, once: bool = False, workers: bool = False) -> int:
    """Bring everything up, sync the banner's people, start the bot and the search, print how to log in, fill
    in the rest of the city in the background, then start the watch and wait for Ctrl-C; ``once`` returns
    when the city is in."""
    from provisioner.synapse.auth import module_config_from

    started = time.monotonic()
    root = root.resolve()
    with demo_lock(root):
        state_path = root / STATE_FILE
        state, directory = _load_state(root, people, seed, workers)
        fresh = directory is not None
        _check_ports(state)
        slapd = EmbeddedSlapd(
            root / "ldap",
            port=state.ldap_port,
            root_password=_secret(root / "secrets" / "ldap_root_password"),
            service_password=_secret(root / "secrets" / "ldap_service_password"),
        )
        if directory is not None:
            _say("starting OpenLDAP (slapd) and loading the directory…")
            slapd.load_ldif(directory.to_ldif())
        slapd.start()
        processes: dict[str, subprocess.Popen[bytes]] = {}
        servers: _Single | _Workers | None = None
        fill: Fill | None = None
        try:
            if fresh:
                # The demo's sample employees get a known password, so a person can log in from Element.
                _set_demo_password(slapd, [s["dn"] for s in state.samples])
            cfg_path = root / "civmatrix.yaml"
            # Placeholders until Synapse is up and the accounts exist (the config names the files).
            _secret(root / "secrets" / "admin_token", PENDING)
            _secret(root / "secrets" / "bot_token", PENDING)
            placeholder = not cfg_path.exists()
            if placeholder:
                # The login module's settings come from the directory section; the admin URL is known
                # once the servers are laid out below.
                _write_config(root, slapd, "http://127.0.0.1:1", state.search_port)
            first_cfg = load_config(cfg_path)
            login = module_config_from(first_cfg)
            # A config kept from before the search service has no search: section: Synapse answers alone.
            search = _search_listen(first_cfg)
            search_port = int(search.rsplit(":", 1)[1]) if search else None
            servers = (
                _Workers(root, login, search_port) if state.workers else _Single(root, state, login, search)
            )
            if isinstance(servers, _Workers):
                topo = servers.topology
                state.public_port, state.admin_port = topo.deployment.public_port, topo.deployment.admin_port
                state.nginx_port = topo.nginx_port
            if placeholder:
                _write_config(root, slapd, servers.admin_url, state.search_port)
            state.save(state_path)
            _say(f"starting {servers.what} (closed server, directory login)…")
            servers.start()
            if (root / "secrets" / "admin_token").read_text().strip() == PENDING:
                (root / "secrets" / "admin_token").write_text(servers.create_admin().access_token)
                bot = servers.register(BOT_LOCALPART, "События")
                (root / "secrets" / "bot_token").write_text(bot.access_token)
            cfg = load_config(cfg_path, token_required=True)
            servers.wait_for_background_updates()
            if not state.first_in:
                _first_sync(cfg, state)
                state.first_in = True
                state.save(state_path)
            user_ids = _sample_user_ids(cfg, state)
            processes["bot"] = _start_child(root, cfg, "bot")
            if search:
                processes["search"] = _start_child(root, cfg, "search")
            token = cfg.homeserver.admin_token or ""
            findable = _wait_until_findable(servers.public_url, token, state.samples[-1], user_ids)
            by_title = _title_query(state.samples[-1]) if search else None
            if by_title and not _wait_until_findable(
                servers.public_url, token, state.samples[-1], user_ids, term=by_title
            ):
                by_title = None
            joined = {
                s["login"]: _joined(servers.admin_url, token, user_ids.get(s["login"], ""))
                for s in state.samples
            }
            # Started before the banner so that the banner can say it is running; it holds the run lock.
            fill = Fill(cfg)
            fill.start()
            banner_at = time.monotonic() - started
            _print_welcome(state, cfg, servers, findable=findable, joined=joined, by_title=by_title,
                           banner_at=banner_at, fill=not once)  # fmt: skip
            if once:
                _show_fill(fill, started, lambda: False)
                _city_done(fill, state, state_path, slapd, started, banner_at)
                return exitcodes.OK
            stop = _on_ctrl_c()
            if _show_fill(fill, started, stop.is_set, processes):
                _city_done(fill, state, state_path, slapd, started, banner_at)
                processes["watch"] = _start_child(root, cfg, "watch")
                _say("the directory watch is running (state/watch.log): a person deleted or disabled in LDAP "
                     "is locked within seconds, a hire appears in their room.")  # fmt: skip
                _wait_for_ctrl_c(processes, stop)
            return exitcodes.OK
        finally:
            if fill is not None:
                fill.stop()
            for proc in processes.values():
                _stop_process(proc)
            if servers is not None:
                servers.stop()
            slapd.stop()
            _say("demo stopped; run the same command again to resume.")


SPLIT_NOTE = "split unit"
# How often the progress line is redrawn on a terminal, and written as a new line in a log.
TTY_EVERY = 1.0
LOG_EVERY = 30.0


def _first_sync(cfg: Config, state: DemoState) -> None:
    """The banner's people's units, whole, with their rooms and the spaces above them, before anyone else."""
    from provisioner import sync

    _say("syncing the people the banner names first (their units, rooms and the spaces above them)…")
    try:
        snapshot = asyncio.run(read_snapshot(cfg))
    except DirectoryError as e:
        raise DemoError(f"the demo's directory could not be read: {e}") from None
    policy = cfg.layout_policy()
    capacity = policy.max_room_size - policy.reserved_seats
    scoped = first_scope(snapshot, {s["login"] for s in state.samples}, capacity)
    try:
        with runlock.hold(cfg.sync.state_dir, "run", "demo: the banner's people first"):
            result = asyncio.run(sync.run(cfg, apply=True, progress=True, snapshot=scoped))
    except runlock.Locked as e:
        raise DemoError(str(e)) from None
    if result.report is not None:
        done = ", ".join(f"{k} {v}" for k, v in sorted(result.report.done.items())) or "nothing to change"
        _say(f"the banner's {len(scoped.enabled)} people synced in {result.report.seconds:.0f} s: {done}")
    if result.exit_code not in (exitcodes.OK, exitcodes.PARTIAL):
        raise DemoError(f"the sync stopped: {result.message}")
    ids = {p.login: uid for uid, p in result.desired.people.items()}
    for sample in state.samples:
        if sample["login"] in ids:
            sample["user_id"] = ids[sample["login"]]


def _sample_user_ids(cfg: Config, state: DemoState) -> dict[str, str]:
    """Login → Matrix ID of the banner's people, as the first sync recorded them."""
    from provisioner import sync

    ids = {s["login"]: s["user_id"] for s in state.samples if s.get("user_id")}
    if len(ids) == len(state.samples):
        return ids
    # A directory made before the IDs were recorded: a plan (nothing applied) knows them.
    result = asyncio.run(sync.run(cfg, apply=False, progress=False))
    return {p.login: uid for uid, p in result.desired.people.items()}


def _show_fill(
    fill: Fill,
    started: float,
    stopped: Callable[[], bool],
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
) -> bool:
    """Show the fill's progress on one line until it ends (True) or ``stopped()`` (False).

    On a terminal the line is redrawn in place; in a log (output not a terminal) a line every LOG_EVERY s.
    """
    tty = sys.stdout.isatty()
    every = TTY_EVERY if tty else LOG_EVERY
    shown = -every
    width = 0
    while not fill.finished.wait(0.25):
        if stopped():
            if tty and width:
                sys.stdout.write("\n")
            return False
        if processes is not None and _check_children(processes, "\n" if tty and width else "") and tty:
            width = 0  # the warning took the line
        now = time.monotonic()
        if now - shown >= every:
            shown = now
            line = f"[{now - started:5.0f} s] {fill.line()}"
            if tty:
                sys.stdout.write("\r" + line.ljust(width))
                sys.stdout.flush()
                width = len(line)
            else:
                _say(line)
    if tty and width:
        sys.stdout.write("\r" + " " * width + "\r")
    return True


def _city_done(
    fill: Fill, state: DemoState, state_path: Path, slapd: EmbeddedSlapd, started: float, banner_at: float
) -> None:
    """Say how the fill ended; the first full success is remembered (the banner says so on the next start),
    and names someone in the second room of a unit larger than one room, now that the unit is split."""
    out = fill.outcome
    assert out is not None
    total = time.monotonic() - started
    if out.exit_code == exitcodes.OK:
        _say(
            f"the whole city is in: {out.people} people, {out.rooms} rooms and {out.spaces} spaces, after "
            f"{total:.0f} s (the banner after {banner_at:.0f} s; the fill took {out.seconds:.0f} s)"
        )
        split = None
        if fill.result is not None and not any(s.get("note") == SPLIT_NOTE for s in state.samples):
            split = _split_unit_person(fill.result, {s["login"] for s in state.samples})
        if split is not None:
            _set_demo_password(slapd, [split["dn"]])
            state.samples.append(split)
            _say(f"  {_split_line(split)} Log in as {split['login']} / {DEMO_PASSWORD} to see it.")
        elif not any(s.get("note") == SPLIT_NOTE for s in state.samples):
            _say("  No unit at this size is larger than one room.")
        if not state.city_in or split is not None:
            state.city_in = True
            state.save(state_path)
    elif out.exit_code == exitcodes.PARTIAL:
        _say(f"the city is in, after {total:.0f} s, except what failed: {out.error}; the directory watch "
             "retries it")  # fmt: skip
    else:
        _say(f"warning: filling in the city stopped after {total:.0f} s: {out.error}; the directory watch "
             "retries it, or run the same command again")  # fmt: skip


def _set_demo_password(slapd: EmbeddedSlapd, dns: list[str]) -> None:
    hashed = ssha(DEMO_PASSWORD)
    slapd.modify("".join(
        f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {hashed}\n\n" for dn in dns
    ))  # fmt: skip


def _split_unit_person(result: Any, taken: set[str]) -> dict[str, str] | None:
    """Someone in the second room of a unit too big for one room, to show what a split looks like."""
    rooms = sorted(
        (r for r in result.desired.layout.rooms if r.shard_count > 1), key=lambda r: (r.shard != 2, r.key)
    )
    for room in rooms:
        for user_id in room.members:
            person = result.desired.people.get(user_id)
            if person is not None and not person.disabled and person.login not in taken:
                return {"login": person.login, "name": person.display_name, "title": person.title or "",
                        "dn": person.dn, "note": SPLIT_NOTE}  # fmt: skip
    return None


def _split_line(split: dict[str, str], seats: int | None = None) -> str:
    size = f" ({seats} seats)" if seats else ""
    return (
        f"{split['name']} ({split['login']}) works in a unit larger than one room{size}: they sit in one of "
        "its rooms, and in the unit's space with everyone else."
    )


def _title_query(colleague: dict[str, str]) -> str | None:
    """Surname and the longest word of the title: a query only the directory search can answer."""
    words = (colleague.get("title") or "").split()
    return f"{_surname(colleague['name'])} {max(words, key=len).lower()}" if words else None


def _surname(name: str) -> str:
    return name.split()[0] if name.split() else name


def _wait_until_findable(
    url: str, token: str, colleague: dict[str, str], user_ids: dict[str, str], term: str | None = None
) -> bool:
    """Poll the user directory through the public URL until ``colleague`` is found by surname.

    Synapse fills its user directory in the background after a bulk sync; a banner printed before that
    would promise a search that finds nobody yet.
    """
    target = user_ids.get(colleague["login"])
    if target is None:
        return False
    body = {"search_term": term or _surname(colleague["name"]), "limit": 50}
    deadline = time.monotonic() + FINDABLE_TIMEOUT
    said = False
    while time.monotonic() < deadline:
        with contextlib.suppress(SynapseError):
            reply = admin_request(url, "POST", "/_matrix/client/v3/user_directory/search", body, token)
            if any(r.get("user_id") == target for r in reply.get("results", [])):
                return True
        if not said:
            _say("waiting until colleagues can be found by name (Synapse indexes them after the sync)…")
            said = True
        time.sleep(1.0)
    return False


def _joined(admin_url: str, token: str, user_id: str) -> list[str]:
    """The names of the rooms and spaces ``user_id`` has joined, as the server reports them."""
    if not user_id:
        return []
    quoted = urllib.parse.quote(user_id, safe="")
    try:
        rooms = admin_request(
            admin_url, "GET", f"/_synapse/admin/v1/users/{quoted}/joined_rooms", token=token
        )
        names = []
        for room_id in rooms.get("joined_rooms", []):
            info = admin_request(admin_url, "GET", f"/_synapse/admin/v1/rooms/{urllib.parse.quote(room_id)}",
                                 token=token)  # fmt: skip
            kind = "space" if info.get("room_type") == "m.space" else "room"
            names.append(f"{kind} «{info.get('name') or room_id}»")
        return sorted(names, key=lambda n: (n.startswith("space"), n))
    except SynapseError as e:
        return [f"(could not be read: {e})"]


# The demo's long-running children: what a warning calls each, where it logs (under the demo dir), and
# its command after ``python -m``; ``--config`` is inserted after the module.
_CHILDREN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "bot": ("the event bot", "bot/bot.log", ("bridge.cli", "run")),
    "search": ("the search service", "state/search.log", ("bridge.cli", "search")),
    "watch": ("the directory watch", "state/watch.log", ("provisioner.cli", "-v", "watch")),
}


def _start_child(root: Path, cfg: Config, which: str) -> subprocess.Popen[bytes]:
    _, log_name, (module, *command) = _CHILDREN[which]
    log_path = root / log_name
    log_path.parent.mkdir(exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", cfg.path, *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        start_new_session=True,
    )


def _search_listen(cfg: Config) -> str | None:
    section = cfg.raw.get("search")
    if not isinstance(section, dict):
        return None
    return str(section.get("listen") or f"{LOOPBACK}:8010")


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _on_ctrl_c() -> threading.Event:
    """Ctrl-C (or SIGTERM) sets the event instead of raising in the middle of whatever runs."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _check_children(processes: dict[str, subprocess.Popen[bytes]], prefix: str = "") -> bool:
    """Warn about (and forget) children that exited; True if any did. ``prefix`` ends a progress line."""
    warned = False
    for which, proc in list(processes.items()):
        if proc.poll() is not None:
            what, log_name, _ = _CHILDREN[which]
            _say(f"{prefix}warning: {what} exited with code {proc.returncode} (see {log_name})")
            del processes[which]
            warned = True
    return warned


def _wait_for_ctrl_c(processes: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        _check_children(processes)


def _print_welcome(
    state: DemoState,
    cfg: Config,
    servers: _Single | _Workers,
    *,
    findable: bool,
    joined: dict[str, list[str]],
    by_title: str | None = None,
    banner_at: float = 0.0,
    fill: bool = True,
) -> None:
    url = servers.public_url
    first = state.samples[0] if state.samples else {"login": "?", "name": "?", "title": "?"}
    colleague = state.samples[-1] if state.samples else first
    split = next((s for s in state.samples if s.get("note") == SPLIT_NOTE), None)
    lines = [
        "",
        f"civmatrix demo is running: {servers.what}.",
        f"  Homeserver URL : {url}   (server name {cfg.homeserver.server_name})",
        f"  Log in as      : {first['login']}  /  {DEMO_PASSWORD}   ({first['name']}, {first['title']})",
        "  Other employees with the same password:",
        *[f"      {s['login']:<20} {s['name']} — {s['title']}" for s in state.samples[1:]],
        "  Use any Matrix client: Element web, desktop or mobile — choose 'custom homeserver' and enter the",
        "  URL above. What each of them has joined, read back from the server:",
        *[
            f"        {s['login']}: {', '.join(joined.get(s['login']) or ['nothing yet'])}"
            for s in state.samples
        ],
    ]
    if split is not None:
        lines.append(f"  {_split_line(split, cfg.layout.max_room_size)}")
    elif state.city_in:
        lines.append(f"  No unit at this size is larger than one room ({cfg.layout.max_room_size} seats).")
    else:
        lines.append(
            f"  Where a unit is larger than one room ({cfg.layout.max_room_size} seats), the line «the whole "
            "city is in» names someone in its second room."
        )
    if findable:
        lines.append(
            f"  Colleagues are found by surname in 'Start chat': «{_surname(colleague['name'])}» finds "
            f"{colleague['name']} (checked through the URL above)."
        )
    else:
        lines.append(
            "  Colleague search is still being indexed by Synapse; names become findable within minutes."
        )
    if by_title:
        lines.append(
            f"  The search also takes titles, units, phone digits and e-mail: «{by_title}» finds "
            f"{colleague['name']} (checked the same way)."
        )
    lines += [
        f"  The event bot is @{BOT_LOCALPART}:{SERVER_NAME} (try `!event help` in a room).",
        f"  Ready {banner_at:.0f} s after the command: the people above, their units' rooms, the spaces "
        "above them, the bot and the search.",
    ]
    if state.city_in:
        lines.append(
            f"  The rest of the city ({state.people} people) is in from before; a full sync checks it "
            "against the directory now."
        )
    else:
        lines.append(
            f"  Still filling in: the rest of the city ({state.people} people in all). Until the line "
            "«the whole city is in» they are not all in their rooms, spaces and the search yet."
        )
    if fill:
        lines += [
            "  The directory watch (a leaver locked within seconds, a hire in their room) starts after that.",
            "  Press Ctrl-C to stop; the same command resumes with everything kept.",
        ]
    lines.append("")
    _say("\n".join(lines))


def demo_main(root: str, people: int, once: bool, *, workers: bool = False) -> int:
    try:
        return run_demo(Path(root), people=people, once=once, workers=workers)
    except (DemoError, SlapdError, SynapseError, NginxError, PostgresError, RedisError) as e:
        print(f"error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
