"""Benchmark: `provisioner watch` — LDAP delete → token refused, hire → findable and in a room, idle CPU.

    python bench/watch.py --people 1000 --leavers 50 --hires 10 --spread 300 --big 25000

Real servers throughout: a fresh slapd (syncprov) with ``--people`` generated people and a fresh Synapse
(SQLite); the CLI's full sync first, then ``provisioner watch`` as a process with the default ``watch:``
settings. Leavers are logged in (a real access token each), then deleted in LDAP at uniformly random moments
over ``--spread`` seconds; each latency is the time from the ldapmodify returning to the first refused
``/account/whoami`` (polled every 50 ms). Hires are added the same way and timed until their account exists,
is in a room and is returned by the user directory search. The idle watch's CPU is read from /proc over
``--idle`` seconds. ``--big`` sets up a second slapd of that many people (no Synapse) to time what of the
leaver path grows with the directory: the change check, and the roster read (in-scope and disabled anchors)
with its comparison; a whole read with its interpretation is timed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bridge.matrix.client import HomeserverClient
from provisioner.config import load_config, parse_config
from provisioner.core.directory import interpret
from provisioner.core.identity import base_localpart
from provisioner.core.reconcile import RegistryEntry
from provisioner.core.watch import leavers
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.ldap_reader import read_directory_sync
from provisioner.observe import REGISTRY_SHARDS, read_registry, registry_content, registry_shard, shard_type
from provisioner.sample import generate_directory
from provisioner.watch import CsnDetector, read_roster
from tests import closed_probes as probes

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def http(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """``tests.closed_probes.http`` with the path quoted onto ``base`` (user ids keep their @ and :)."""
    return probes.http(method, base + urllib.parse.quote(path, safe="/:?=&@"), body, token, timeout=10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def write_cfg(
    d: Path,
    ldap: EmbeddedSlapd,
    hs: EmbeddedSynapse,
    token: str,
    space_members: str,
    *,
    disabled_filter: str = "(employeeType=disabled)",
    max_removal_percent: float = 10,
) -> Path:
    (d / "token").write_text(token)
    data = {
        "homeserver": {"url": hs.admin_url, "server_name": hs.server_name, "admin_token_file": "token"},
        "directory": {"uri": ldap.uri, "bind_dn": ldap.service_dn,
                      "bind_password_file": str(ldap.service_password_file), "base_dn": ldap.suffix,
                      "disabled_filter": disabled_filter},
        "layout": {"max_room_size": 200, "org_name": "Правительство Москвы", "space_members": space_members},
        "safety": {"max_removals": 500, "max_removal_percent": max_removal_percent},
        "sync": {"concurrency": 16, "state_dir": "state"},
        "exclude": [f"@admin:{hs.server_name}"],
    }  # fmt: skip
    path = d / "civmatrix.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def leaver(
    ldap: EmbeddedSlapd, hs: EmbeddedSynapse, token: str, dn: str, at: float, out: list[float]
) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    ldap.modify(f"dn: {dn}\nchangetype: delete\n\n")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        code, data = http(hs.public_url, "GET", "/_matrix/client/v3/account/whoami", token)
        if code in (401, 403) and data.get("errcode") in ("M_USER_LOCKED", "M_UNKNOWN_TOKEN"):
            out.append(time.monotonic() - t0)
            return
        time.sleep(0.05)
    out.append(float("inf"))


def hire(ldap: EmbeddedSlapd, hs: EmbeddedSynapse, admin: str, searcher: str, parent: str, i: int, at: float,
         out: list[float]) -> None:  # fmt: skip
    time.sleep(max(0.0, at - time.monotonic()))
    login, name = f"bench.hire{i}", f"Новичок Номер{i}"
    ldap.modify(f"dn: uid={login},{parent}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {login}\n"
                f"cn: {name}\nsn: Номер{i}\ndisplayName: {name}\n\n")  # fmt: skip
    t0 = time.monotonic()
    uid = f"@{login}:{hs.server_name}"
    while time.monotonic() - t0 < 300:
        code, rooms = http(hs.admin_url, "GET", f"/_synapse/admin/v1/users/{uid}/joined_rooms", admin)
        if code == 200 and rooms.get("joined_rooms"):
            _, found = http(hs.public_url, "POST", "/_matrix/client/v3/user_directory/search", searcher,
                            {"search_term": f"Номер{i}", "limit": 10})  # fmt: skip
            if any(r.get("user_id") == uid for r in found.get("results", [])):
                out.append(time.monotonic() - t0)
                return
        time.sleep(0.2)
    out.append(float("inf"))


def big_directory(work: Path, people: int) -> dict[str, Any]:
    """What of the leaver path grows with the directory, on a slapd of ``people`` (no Synapse needed)."""
    directory = generate_directory(people, seed=3)
    ldap = EmbeddedSlapd(work / "big-slapd", suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    try:
        cfg = parse_config({
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
            "directory": {"uri": ldap.uri, "bind_dn": ldap.service_dn, "base_dn": ldap.suffix,
                          "bind_password_file": str(ldap.service_password_file),
                          "disabled_filter": "(employeeType=disabled)"},
        }).directory  # fmt: skip
        det = CsnDetector(cfg)
        det.check()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(200):
            det.check()
        check = {
            "cpu_ms": (time.process_time() - c0) / 200 * 1000,
            "wall_ms": (time.perf_counter() - w0) / 200 * 1000,
        }
        det.close()
        w0 = time.perf_counter()
        full = interpret(read_directory_sync(cfg), cfg)
        full_read = time.perf_counter() - w0
        before = read_roster(cfg)
        victim = full.enabled[len(full.enabled) // 2]
        ldap.modify(f"dn: {victim.dn}\nchangetype: delete\n\n")
        times = []
        for _ in range(5):
            w0 = time.perf_counter()
            after = read_roster(cfg)
            found = leavers(before, after)
            times.append(time.perf_counter() - w0)
        assert found == ((victim.anchor, "left the directory"),), found
        return {"people": len(full.people), "check": check, "full_read_interpret_s": full_read,
                "roster_read_and_compare_s": {"median": statistics.median(times), "max": max(times)}}  # fmt: skip
    finally:
        ldap.stop()


async def registry_read(work: Path, people: int) -> dict[str, Any]:
    """The fast path's other size-dependent read: the identity registry of ``people`` (64 account-data shards)."""
    hs = EmbeddedSynapse(work / "big-synapse", log_level="WARNING")
    hs.start()
    try:
        token = hs.create_admin("admin").access_token
        async with HomeserverClient(hs.admin_url, token) as client:
            who = await client.whoami()
            entries = {
                f"anchor-{i:06d}": RegistryEntry(f"person.{i}", None, "0123456789abcdef")
                for i in range(people)
            }
            for n in range(REGISTRY_SHARDS):
                shard = {a: e for a, e in entries.items() if registry_shard(a) == n}
                await client.put_account_data(who.user_id, shard_type(n), registry_content(shard))
            times = []
            for _ in range(5):
                w0 = time.perf_counter()
                registry, _ = await read_registry(client, who.user_id)
                times.append(time.perf_counter() - w0)
            assert len(registry) == people
        return {"entries": people, "median_s": statistics.median(times), "max_s": max(times)}
    finally:
        hs.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--leavers", type=int, default=50)
    ap.add_argument("--hires", type=int, default=10)
    ap.add_argument("--spread", type=float, default=300.0, help="seconds over which leavers and hires happen")
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument(
        "--big", type=int, default=0, help="also time the size-dependent part at this many people"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--space-members", choices=("tree", "unit"), default="tree",
                    help="layout.space_members; 'unit' makes the first full sync at 25,000 an hour shorter, "
                    "and the leaver path does not touch memberships")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-watch-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"people": args.people}
    directory = generate_directory(args.people, seed=args.seed, broken=False)
    ldap = EmbeddedSlapd(work / "slapd", suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif(), replace=True)
    ldap.start()
    hs = EmbeddedSynapse(work / "synapse", log_level="WARNING")
    hs.start()
    watch: subprocess.Popen[bytes] | None = None
    try:
        admin = hs.create_admin("admin").access_token
        cfg_path = write_cfg(work, ldap, hs, admin, args.space_members)
        cli = [sys.executable, "-m", "provisioner.cli", "--config", str(cfg_path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        subprocess.run([*cli, "sync", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
        results["initial_full_sync_s"] = time.monotonic() - t0
        cfg = load_config(cfg_path)
        snap = interpret(read_directory_sync(cfg.directory), cfg.directory)
        rng = random.Random(args.seed)
        people = rng.sample(list(snap.enabled), args.leavers + 1)
        tokens = {}
        for p in people:
            uid = f"@{base_localpart(p.login)}:{hs.server_name}"
            code, data = http(hs.admin_url, "POST", f"/_synapse/admin/v1/users/{uid}/login", admin, {})
            assert code == 200, (uid, data)
            tokens[p.dn] = data["access_token"]
        searcher = tokens.pop(people[-1].dn)
        log = open(work / "watch.log", "wb")  # noqa: SIM115
        watch = subprocess.Popen([*cli, "-v", "watch"], env=env, stdout=log, stderr=subprocess.STDOUT)
        state = cfg_path.parent / "state" / "watch.json"
        while not (state.exists() and json.loads(state.read_text()).get("last_run")):
            time.sleep(0.2)
        time.sleep(2)
        c0, w0 = cpu_seconds(watch.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(watch.pid) - c0
        idle_wall = time.monotonic() - w0
        checks = idle_wall / cfg.watch.poll_seconds
        results["idle"] = {"seconds": idle_wall, "cpu_s": idle_cpu, "cpu_pct_of_core": 100 * idle_cpu / idle_wall,
                           "checks": round(checks), "cpu_ms_per_check": 1000 * idle_cpu / checks,
                           "check_wall_ms_last": json.loads(state.read_text())["last_check"]["ms"]}  # fmt: skip
        print("idle:", results["idle"], flush=True)
        start = time.monotonic() + 1
        lat: list[float] = []
        hired: list[float] = []
        parent = people[0].dn.split(",", 1)[1]
        threads = [threading.Thread(target=leaver, args=(ldap, hs, tokens[p.dn], p.dn,
                                                         start + rng.uniform(0, args.spread), lat))
                   for p in people[:-1]]  # fmt: skip
        threads += [threading.Thread(target=hire, args=(ldap, hs, admin, searcher, parent, i,
                                                        start + rng.uniform(0, args.spread), hired))
                    for i in range(args.hires)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results["leavers"] = {"n": len(lat), "p50_s": statistics.median(lat), "p99_s": pct(lat, 0.99),
                              "max_s": max(lat), "spread_s": args.spread}  # fmt: skip
        if hired:
            results["hires"] = {"n": len(hired), "p50_s": statistics.median(hired), "p99_s": pct(hired, 0.99),
                                "max_s": max(hired)}  # fmt: skip
        print("leavers:", results["leavers"], "hires:", results.get("hires"), flush=True)
    finally:
        if watch is not None and watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
            watch.wait(30)
        hs.stop()
        ldap.stop()
    if args.big:
        results["big"] = big_directory(work, args.big)
        results["big"]["registry_read"] = asyncio.run(registry_read(work, args.big))
    # The 15-minute timer, computed: a change waits for the next tick (uniform over 900 s), then the run.
    run_25k = 8.12  # docs/PERFORMANCE.md: a no-change full re-sync at 25,000 people
    results["timer_15min_computed"] = {"p50_s": 450 + run_25k, "p99_s": 0.99 * 900 + run_25k,
                                       "avg_cpu_pct_of_core_upper_bound": 100 * run_25k / 900}  # fmt: skip
    print(json.dumps(results, indent=1, ensure_ascii=False))
    (work / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
