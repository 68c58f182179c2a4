"""Benchmark: the same directory synced into three server shapes, and the bot's reply time through nginx.

    nice python bench/topology.py                       # 2,500 people, 100 bot commands (about 30 min, 2 cores)
    nice python bench/topology.py --people 400 --commands 30   # quick check

One run, one directory (generated once, served by one slapd), one machine:

(a) ``single-sqlite``: one Synapse process on SQLite, nginx in front (what ``make demo`` runs);
(b) ``single-pg``: one Synapse process on a private PostgreSQL cluster;
(c) ``workers``: :class:`provisioner.embedded.topology.Topology`: PostgreSQL, Redis, Synapse main + sync worker
    + event persister + presence writer, nginx in front (what ``make demo ARGS=--workers`` runs).

For each: a full first sync and a no-change re-sync, each as the real ``provisioner sync`` child process
through the loopback admin listener; wall time, and CPU seconds per process during that sync (from
``/proc/<pid>/stat``: utime + stime, plus reaped children for PostgreSQL's postmaster and nginx's master;
the provisioner's own from ``wait4``). On (a) and (c), the event bot (the real ``bridge.cli run`` process,
talking to the public nginx URL) answers ``--commands`` ``!event list`` commands sent one after the other by a
matrix-nio client through nginx in an unencrypted room; latency runs from just before the send to the
moment the bot's reply (``m.in_reply_to`` the command) reaches that client's sync.

Results are printed as markdown; everything lives in one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from nio import AsyncClient, RoomCreateResponse, RoomSendResponse

from bench.proc import cpu_seconds
from provisioner import proxy
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import LOOPBACK, free_port
from provisioner.embedded.postgres import EmbeddedPostgres
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.embedded.synapse import EmbeddedSynapse, RegisteredAccount
from provisioner.embedded.topology import Topology
from provisioner.sample import generate_directory
from provisioner.synapse.config import TEST_RATE_LIMITS

ROOT = Path(__file__).resolve().parents[1]
SERVER = "example.test"


class Shape:
    """One server shape: started, measured, stopped."""

    name = ""
    public_url = ""
    admin_url = ""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> dict[str, int]: ...
    def create_admin(self) -> RegisteredAccount: ...
    def register(self, localpart: str) -> RegisteredAccount: ...
    def wait_for_background_updates(self) -> None: ...


class Single(Shape):
    def __init__(self, root: Path, name: str, postgres: EmbeddedPostgres | None, **synapse: Any) -> None:
        """``synapse``: more of :class:`EmbeddedSynapse`'s arguments (modules, the civmatrix modules off)."""
        self.name = name
        self.postgres = postgres
        database = None
        if postgres is not None:
            postgres.initialise()  # makes the password the DSN below names
            database = {k: v for k, v in postgres.dsn().items() if k != "passfile"} | {
                "password": postgres.password
            }
        port = free_port()
        self.public_url = f"http://{LOOPBACK}:{port}"
        self.synapse = EmbeddedSynapse(root / "synapse", database=database, behind_proxy=True,
                                       public_baseurl=self.public_url + "/", rate_limits=TEST_RATE_LIMITS,
                                       log_level="WARNING", **synapse)  # fmt: skip
        self.admin_url = self.synapse.admin_url
        site = proxy.Proxy("_", self.public_url, (f"{LOOPBACK}:{port}",),
                           proxy.Upstream(proxy.MAIN, (f"{LOOPBACK}:{self.synapse.public_port}",)))  # fmt: skip
        self.nginx = EmbeddedNginx(root / "nginx", proxy.site(site), port=port)

    def start(self) -> None:
        if self.postgres is not None:
            self.postgres.start()
        self.synapse.start()
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        self.synapse.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def pids(self) -> dict[str, int]:
        found = {"synapse": self.synapse.pid or 0, "nginx": self.nginx.pid or 0}
        if self.postgres is not None:
            found["postgres"] = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        return found

    def create_admin(self) -> RegisteredAccount:
        return self.synapse.create_admin("admin")

    def register(self, localpart: str) -> RegisteredAccount:
        return self.synapse.register(localpart, displayname=localpart.title())

    def wait_for_background_updates(self) -> None:
        self.synapse.wait_for_background_updates()


class Workers(Shape):
    def __init__(self, root: Path, **topology: Any) -> None:
        """``topology``: more of :class:`Topology`'s arguments (the login module, sync workers)."""
        self.name = "workers"
        self.topology = Topology(root, server_name=SERVER, overrides=TEST_RATE_LIMITS, **topology)
        self.public_url, self.admin_url = self.topology.public_url, self.topology.admin_url

    def start(self) -> None:
        self.topology.start()

    def stop(self) -> None:
        self.topology.stop()

    def pids(self) -> dict[str, int]:
        return self.topology.pids()

    def create_admin(self) -> RegisteredAccount:
        return self.topology.create_admin("admin")

    def register(self, localpart: str) -> RegisteredAccount:
        return self.topology.register(localpart, displayname=localpart.title())

    def wait_for_background_updates(self) -> None:
        self.topology.wait_for_background_updates()


def write_cfg(d: Path, ldap: EmbeddedSlapd, shape: Shape, token: str, bot: RegisteredAccount | None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "token").write_text(token)
    data: dict[str, Any] = {
        "homeserver": {"url": shape.admin_url, "server_name": SERVER, "admin_token_file": "token"},
        "directory": {"uri": ldap.uri, "bind_dn": ldap.service_dn,
                      "bind_password_file": str(ldap.service_password_file), "base_dn": ldap.suffix,
                      "disabled_filter": "(employeeType=disabled)"},
        "layout": {"max_room_size": 200, "org_name": "Правительство Москвы",
                   "head_title_pattern": "^(Начальник|Руководитель|Глава|Префект|Заведующий)"},
        "sync": {"concurrency": 8, "state_dir": "state"},
        "exclude": [f"@admin:{SERVER}"],
    }  # fmt: skip
    if bot:
        (d / "bot_token").write_text(bot.access_token)
        data["bot"] = {"user_id": bot.user_id, "access_token_file": "bot_token", "store": "bot.db",
                       "crypto_store_dir": "bot-crypto", "device_id": bot.device_id}  # fmt: skip
    path = d / "civmatrix.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def timed_sync(cfg: Path, shape: Shape) -> dict[str, Any]:
    pids = shape.pids()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out = cfg.parent / "sync.out"
    with open(out, "w") as handle:
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli", "--config", str(cfg), "sync", "--quiet"],
                                stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{shape.name}: sync exited {code}:\n{out.read_text()[-3000:]}")
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["provisioner"] = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu}


async def bot_latency(shape: Shape, cfg: Path, bot: RegisteredAccount, commands: int) -> list[float]:
    person = shape.register(f"bench{os.getpid()}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The bot talks to the public URL, through nginx, like any client.
    bot_cfg = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    bot_cfg["homeserver"]["url"] = shape.public_url
    bot_path = cfg.parent / "bot.yaml"
    bot_path.write_text(yaml.safe_dump(bot_cfg, allow_unicode=True), encoding="utf-8")
    log = open(cfg.parent / "bot.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--config", str(bot_path), "run"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=cfg.parent, env=env)  # fmt: skip
    client = AsyncClient(shape.public_url, person.user_id, device_id=person.device_id)
    client.restore_login(person.user_id, person.device_id, person.access_token)
    replies: dict[str, float] = {}

    async def on_event(room: Any, event: Any) -> None:
        source = getattr(event, "source", None) or {}
        relates = source.get("content", {}).get("m.relates_to", {})
        target = relates.get("m.in_reply_to", {}).get("event_id")
        if source.get("sender") == bot.user_id and target:
            replies.setdefault(target, time.perf_counter())

    client.add_event_callback(on_event, object)  # type: ignore[arg-type]
    sync_task = asyncio.create_task(client.sync_forever(timeout=30000))
    latencies: list[float] = []
    try:
        created = await client.room_create(name="bench", invite=[bot.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room = created.room_id
        deadline = time.monotonic() + 60

        # A command sent before the bot joined is history to it and never answered: wait for the join.
        def joined() -> bool:
            r = client.rooms.get(room)
            # nio lists invited members among the users too.
            return r is not None and bot.user_id in r.users and bot.user_id not in r.invited_users

        while not joined():
            if time.monotonic() > deadline:
                raise SystemExit(f"{shape.name}: the bot did not join; see {cfg.parent / 'bot.log'}")
            await asyncio.sleep(0.05)
        # Warm-up: the first command also waits for the bot to join and start syncing.
        for i in range(commands + 1):
            sent_at = time.perf_counter()
            reply = await client.room_send(
                room, "m.room.message", {"msgtype": "m.text", "body": "!event list"}
            )
            assert isinstance(reply, RoomSendResponse), reply
            while reply.event_id not in replies:
                if time.monotonic() > deadline + 10 * i:
                    raise SystemExit(
                        f"{shape.name}: no bot reply to command {i}; see {cfg.parent / 'bot.log'}"
                    )
                await asyncio.sleep(0.005)
            if i:
                latencies.append(replies[reply.event_id] - sent_at)
    finally:
        sync_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sync_task
        await client.close()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="civmatrix-bench-topology-"))
    path.chmod(0o711)  # PostgreSQL's own OS user must enter it
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_shape(work: Path, ldap: EmbeddedSlapd, shape: Shape, commands: int, with_bot: bool) -> dict[str, Any]:
    began = time.perf_counter()
    shape.start()
    try:
        startup = time.perf_counter() - began
        admin = shape.create_admin()
        # Every shape has the bot in its config, so every sync joins it into every department room.
        bot = shape.register("events")
        cfg = write_cfg(work / f"cfg-{shape.name}", ldap, shape, admin.access_token, bot)
        shape.wait_for_background_updates()
        result: dict[str, Any] = {"startup": startup}
        print(f"[{shape.name}] up in {startup:.1f}s; full sync…", file=sys.stderr, flush=True)
        result["full"] = timed_sync(cfg, shape)
        print(f"[{shape.name}] full {result['full']['wall']:.0f}s; re-sync…", file=sys.stderr, flush=True)
        result["resync"] = timed_sync(cfg, shape)
        if with_bot:
            print(f"[{shape.name}] bot latency…", file=sys.stderr, flush=True)
            result["bot"] = asyncio.run(bot_latency(shape, cfg, bot, commands))
        return result
    finally:
        shape.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=2500)
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--shapes", default="single-sqlite,single-pg,workers")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) for inspection")
    args = parser.parse_args()
    directory = generate_directory(args.people, seed=1)
    results: dict[str, dict[str, Any]] = {}
    with workdir(args.keep) as work:
        ldap = EmbeddedSlapd(work / "ldap", suffix=directory.base_dn)
        ldap.load_ldif(directory.to_ldif())
        ldap.start()
        try:
            for name in args.shapes.split(","):
                shape: Shape
                if name == "single-sqlite":
                    shape = Single(work / name, name, None)
                elif name == "single-pg":
                    shape = Single(work / name, name, EmbeddedPostgres(work / name / "postgres"))
                else:
                    shape = Workers(work / name)
                results[name] = run_shape(work, ldap, shape, args.commands, with_bot=name != "single-pg")
                # Each shape's figures as soon as they exist: a later failure loses nothing measured.
                print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
        finally:
            ldap.stop()
    print_table(args, results)


def print_table(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{args.people} people ({generate_directory(args.people, seed=1).people} in the directory), "
          f"`python bench/topology.py --people {args.people} --commands {args.commands}`\n")  # fmt: skip
    print("| shape | start | full sync | no-change re-sync | bot reply p50 | bot reply p99 |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        bot = r.get("bot")
        p50 = f"{pct(bot, 0.5) * 1000:.0f} ms" if bot else "—"
        p99 = f"{pct(bot, 0.99) * 1000:.0f} ms" if bot else "—"
        print(f"| {name} | {r['startup']:.1f} s | {r['full']['wall']:.0f} s | {r['resync']['wall']:.1f} s "
              f"| {p50} | {p99} |")  # fmt: skip
    print("\nCPU seconds per process during the sync (full / re-sync):\n")
    for name, r in results.items():
        parts = [f"{proc} {r['full']['cpu'][proc]:.1f} / {r['resync']['cpu'].get(proc, 0):.1f}"
                 for proc in r["full"]["cpu"]]  # fmt: skip
        print(f"- **{name}**: " + ", ".join(parts))
    for name, r in results.items():
        if r.get("bot"):
            mean = statistics.mean(r["bot"]) * 1000
            print(
                f"- {name} bot: {len(r['bot'])} commands, mean {mean:.0f} ms, max {max(r['bot']) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
