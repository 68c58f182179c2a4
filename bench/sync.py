"""Benchmark: the full sync against a raw floor, no-change re-sync, 1 % churn, on fresh real servers.

    python bench/sync.py --people 2500                 # quick run (minutes)
    python bench/sync.py --people 25000 --floor-concurrency 16   # full run (tens of minutes)
    python bench/sync.py --people 2500 --postgres      # Synapse on the local PostgreSQL

One run prints one table. The *raw floor* produces the same end state (users with display names and
profile fields, spaces and rooms with their state, memberships, closed join rules, the identity registry)
with the minimal admin-API calls and no reading or planning, on its own fresh Synapse, at each concurrency
given; the provisioner's full sync is then run as the real CLI on another fresh Synapse, and its ratio to the
best floor is reported. Events written are counted in Synapse's database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bridge.matrix.client import ExternalId, HomeserverClient
from bridge.matrix.contract import PROFILE_KEYS
from provisioner.apply import create_room_body
from provisioner.config import load_config
from provisioner.core.actions import CreateRoom
from provisioner.core.desired import desired_state
from provisioner.core.directory import interpret
from provisioner.core.reconcile import RegistryEntry, profile_hash, profile_of
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.ldap_reader import read_directory_sync
from provisioner.observe import registry_content, registry_shard, shard_type
from provisioner.sample import generate_directory

ROOT = Path(__file__).resolve().parents[1]


def count_events(hs: EmbeddedSynapse, pg: dict[str, Any] | None) -> int:
    if pg:
        out = subprocess.run(
            ["psql", "-h", pg["host"], "-U", pg["user"], "-d", pg["database"], "-tAc", "SELECT count(*) FROM events"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(out.stdout.strip())
    db = sqlite3.connect(f"file:{hs.data_dir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        db.close()


def fresh_pg(name: str) -> dict[str, Any]:
    for sql in (
        f'DROP DATABASE IF EXISTS "{name}"',
        f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    ):
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True, capture_output=True
        )
    return {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": name}  # fmt: skip


def start_synapse(tmp: Path, name: str, pg: dict[str, Any] | None) -> tuple[EmbeddedSynapse, str]:
    hs = EmbeddedSynapse(tmp / name, database=pg, log_level="WARNING")
    hs.start()
    return hs, hs.create_admin("admin").access_token


def write_cfg(tmp: Path, ldap: EmbeddedSlapd, hs: EmbeddedSynapse, token: str, concurrency: int) -> Path:
    d = tmp / f"cfg-{hs.admin_port}"
    d.mkdir(exist_ok=True)
    (d / "token").write_text(token)
    data = {
        "homeserver": {"url": hs.admin_url, "server_name": hs.server_name, "admin_token_file": "token"},
        "directory": {"uri": ldap.uri, "bind_dn": ldap.service_dn,
                      "bind_password_file": str(ldap.service_password_file), "base_dn": ldap.suffix,
                      "disabled_filter": "(employeeType=disabled)"},
        "layout": {"max_room_size": 200, "org_name": "Правительство Москвы",
                   "head_title_pattern": "^(Начальник|Руководитель|Глава|Префект|Заведующий)"},
        "safety": {"max_removals": 100000, "max_removal_percent": 100},
        "sync": {"concurrency": concurrency, "state_dir": "state"},
        "exclude": [f"@admin:{hs.server_name}"],
    }  # fmt: skip
    (d / "civmatrix.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return d / "civmatrix.yaml"


# --- the raw floor -----------------------------------------------------------------------------------------


async def raw_floor(cfg_path: Path, hs: EmbeddedSynapse, token: str, concurrency: int) -> float:
    """The same end state with the minimal admin-API calls; the plan is computed before the clock starts."""
    cfg = load_config(cfg_path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy(), skip_log=False)
    admin = f"@admin:{hs.server_name}"
    desired = desired_state(snap, cfg.layout_policy(), taken={"admin"})
    server = hs.server_name
    sem = asyncio.Semaphore(concurrency)
    async with HomeserverClient(hs.admin_url, token, pool_limit=concurrency * 2) as c:
        caps = await c.capabilities()
        creator_in_pl = caps.default_room_version not in ("12", "org.matrix.hydra.11")
        t0 = time.perf_counter()

        async def bounded(coro: Any) -> Any:
            async with sem:
                return await coro

        async def user(uid: str) -> None:
            p = desired.people[uid]
            await c.put_user(
                uid, displayname=p.display_name, external_ids=[ExternalId("civmatrix", p.anchor)]
            )
            for name, value in profile_of(p):
                if value:
                    await c.set_profile_field(uid, PROFILE_KEYS[name], value)

        registry = {
            p.anchor: RegistryEntry(desired.localparts[p.anchor], None, profile_hash(p)) for p in snap.enabled
        }
        shards: dict[int, dict[str, RegistryEntry]] = defaultdict(dict)
        for a, e in registry.items():
            shards[registry_shard(a)][a] = e
        await asyncio.gather(*(c.put_account_data(admin, shard_type(n), registry_content(s))
                               for n, s in shards.items()))  # fmt: skip
        await asyncio.gather(
            *(bounded(user(f"@{desired.localparts[p.anchor]}:{server}")) for p in snap.enabled)
        )

        ids: dict[str, str] = {}

        def body(key: str, unit: str, shard: int, name: str, alias: str, topic: str, parent: str | None,
                 mods: tuple[str, ...], space: bool) -> dict[str, Any]:  # fmt: skip
            users = {admin: 100} if creator_in_pl else {}
            users.update({m: 50 for m in mods})
            room = CreateRoom(key=key, room_kind="space" if space else "room", unit_key=unit, shard=shard,
                              name=name, alias=alias, topic=topic, parent_key=parent,
                              power_users=tuple(users.items()),
                              encrypted=not space and cfg.layout.room_encryption)  # fmt: skip
            return create_room_body(room, server=server, parent_room_id=ids.get(parent) if parent else None)

        spaces = list(desired.layout.spaces)
        depth: dict[str, int] = {}
        for s in spaces:  # planner order puts parents first
            depth[s.unit_key] = 0 if s.parent_key is None else depth.get(s.parent_key, 0) + 1
        for d in sorted(set(depth.values())):
            level = [s for s in spaces if depth[s.unit_key] == d]

            async def mk_space(s: Any) -> None:
                ids[s.unit_key] = await c.create_room(body(s.unit_key, s.unit_key, 0, s.name, s.alias, s.topic,
                                                           s.parent_key, s.moderators, True))  # fmt: skip

            await asyncio.gather(*(bounded(mk_space(s)) for s in level))

        async def mk_room(r: Any) -> None:
            ids[r.key] = await c.create_room(body(r.key, r.unit_key, r.shard, r.name, r.alias, r.topic,
                                                  r.unit_key, r.moderators, False))  # fmt: skip

        await asyncio.gather(*(bounded(mk_room(r)) for r in desired.layout.rooms))
        links = [(s.unit_key, child) for s in spaces for child in s.children]
        await asyncio.gather(*(bounded(c.send_state(ids[p], "m.space.child", ids[ch], {"via": [server]}))
                               for p, ch in links if ch in ids))  # fmt: skip
        lanes = [(ids[s.unit_key], list(s.members)) for s in spaces if s.members]
        lanes += [(ids[r.key], list(r.members)) for r in desired.layout.rooms]

        async def lane(room_id: str, members: list[str]) -> None:
            async with sem:
                for m in members:
                    await c.admin_join(room_id, m)
                await c.send_state(room_id, "m.room.join_rules", "", {"join_rule": "invite"})

        await asyncio.gather(*(lane(rid, ms) for rid, ms in sorted(lanes, key=lambda x: -len(x[1]))))
        return time.perf_counter() - t0


# --- the provisioner ---------------------------------------------------------------------------------------


def run_cli(cfg_path: Path, *extra: str) -> tuple[float, dict[str, Any], int, str]:
    """Run ``provisioner sync`` as a child; its own peak RSS comes from wait4 (not the Synapses reaped)."""
    out_path, err_path = cfg_path.parent / "out.txt", cfg_path.parent / "err.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "provisioner.cli", "--config", str(cfg_path), "sync",
                                 "--quiet", *extra], stdout=out, stderr=err, cwd=ROOT)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text()
    stats: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("requests: "):
            stats = json.loads(line.split(": ", 1)[1].replace("'", '"'))
    if code not in (0, 8):
        print(stdout[-3000:], err_path.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"sync failed with exit {code}")
    return wall, stats, usage.ru_maxrss, stdout


def churn(ldap: EmbeddedSlapd, cfg_path: Path, fraction: float) -> int:
    cfg = load_config(cfg_path, token_required=True)
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy(), skip_log=False)
    people = sorted(snap.enabled, key=lambda p: p.anchor)
    n = max(4, int(len(people) * fraction))
    quarter = n // 4
    units = sorted({p.dn.split(",", 1)[1] for p in people})
    changes: list[str] = []
    for p in people[:quarter]:
        changes.append(f"dn: {p.dn}\nchangetype: delete\n")
    for p in people[quarter : 2 * quarter]:
        changes.append(
            f"dn: {p.dn}\nchangetype: modify\nreplace: displayName\ndisplayName: {p.display_name} (изм.)\n"
        )
    for i, p in enumerate(people[2 * quarter : 3 * quarter]):
        target = units[(i * 7919) % len(units)]
        if target != p.dn.split(",", 1)[1]:
            changes.append(f"dn: {p.dn}\nchangetype: modrdn\nnewrdn: {p.dn.split(',', 1)[0]}\n"
                           f"deleteoldrdn: 1\nnewsuperior: {target}\n")  # fmt: skip
    for i in range(n - 3 * quarter):
        unit = units[(i * 104729) % len(units)]
        changes.append(f"dn: uid=bench.new{i},{unit}\nchangetype: add\nobjectClass: inetOrgPerson\n"
                       f"uid: bench.new{i}\ncn: Новый {i}\nsn: Новый\ndisplayName: Новый Сотрудник {i}\n")  # fmt: skip
    ldap.modify("\n".join(changes) + "\n")
    return len(changes)


def resync_phase(work: Path, results: dict[str, Any]) -> None:
    """No-change, 1 % churn and following re-syncs against servers restarted from ``work``."""
    saved = json.loads((work / "bench-state.json").read_text())
    ldap = EmbeddedSlapd(work / "slapd", port=saved["ldap_port"], service_password=saved["ldap_password"],
                         root_password=saved["ldap_root_password"])  # fmt: skip
    ldap.start()
    hs = EmbeddedSynapse(work / "provisioner", public_port=saved["public_port"], admin_port=saved["admin_port"],
                         log_level="WARNING")  # fmt: skip
    hs.start()
    cfg_path = Path(saved["cfg"])
    try:
        again, again_stats, rss_kb, _ = run_cli(cfg_path)
        print(f"no-change sync: {again:.2f} s, {again_stats}", flush=True)
        again2, again2_stats, _, _ = run_cli(cfg_path)
        print(f"no-change sync (again): {again2:.2f} s, {again2_stats}", flush=True)
        changed = churn(ldap, cfg_path, 0.01)
        churn_t, churn_stats, _, _ = run_cli(cfg_path, "--allow-removals", "100000")
        print(f"1% churn sync ({changed} changes): {churn_t:.2f} s, {churn_stats}", flush=True)
        final, final_stats, _, _ = run_cli(cfg_path)
    finally:
        hs.stop()
        ldap.stop()
    results.update(
        no_change={"seconds": min(again, again2), **again_stats},
        churn={"seconds": churn_t, "changes": changed, **churn_stats},
        after_churn={"seconds": final, **final_stats},
        resync_peak_rss_mb=rss_kb / 1024,
    )
    print(f"| no-change re-sync | {min(again, again2):.2f} s, {again_stats.get('writes', '?')} writes |")
    print(
        f"| re-sync after 1 % churn ({changed} changes) | {churn_t:.2f} s, {churn_stats.get('writes', '?')} writes |"
    )
    print(f"| following re-sync | {final:.2f} s, {final_stats.get('writes', '?')} writes |")


def full_phase(work: Path, people: int, concurrency: int, results: dict[str, Any]) -> None:
    """Fresh slapd + Synapse under ``work``, one full sync; servers stopped, state kept for resync_phase."""
    directory = generate_directory(people, seed=1)
    ldap = EmbeddedSlapd(work / "slapd")
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    hs, token = start_synapse(work, "provisioner", None)
    try:
        cfg_path = write_cfg(work, ldap, hs, token, concurrency)
        full, full_stats, rss_kb, _ = run_cli(cfg_path)
        events = count_events(hs, None)
        print(
            f"full sync: {full:.1f} s, {events} events, {full_stats}, peak RSS {rss_kb / 1024:.0f} MB",
            flush=True,
        )
    finally:
        hs.stop()
        ldap.stop()
    (work / "bench-state.json").write_text(json.dumps({
        "ldap_port": ldap.port, "ldap_password": ldap.service_password, "ldap_root_password": ldap.root_password,
        "public_port": hs.public_port, "admin_port": hs.admin_port, "cfg": str(cfg_path),
    }))  # fmt: skip
    results.update(full={"seconds": full, "events": events, **full_stats}, peak_rss_mb=rss_kb / 1024)
    print(f"| provisioner full sync (read + plan + apply) | {full:.1f} s, {events} events, "
          f"{full_stats.get('writes', '?')} write requests |")  # fmt: skip
    print(f"| provisioner peak RSS | {rss_kb / 1024:.0f} MB |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=2500)
    ap.add_argument("--floor-concurrency", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--concurrency", type=int, default=16, help="the provisioner's sync.concurrency")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--phase",
        choices=("all", "full", "resync"),
        default="all",
        help="full: one full sync into --workdir and stop; resync: re-syncs against --workdir",
    )
    ap.add_argument("--workdir", type=Path, help="keep the servers' data here (with --phase full/resync)")
    args = ap.parse_args()
    results: dict[str, Any] = {"people": args.people, "database": "postgresql" if args.postgres else "sqlite"}
    if args.phase != "all":
        if args.workdir is None:
            raise SystemExit("--phase full/resync needs --workdir")
        args.workdir.mkdir(parents=True, exist_ok=True)
        if args.phase == "full":
            full_phase(args.workdir.resolve(), args.people, args.concurrency, results)
        else:
            resync_phase(args.workdir.resolve(), results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    directory = generate_directory(args.people, seed=1)
    with tempfile.TemporaryDirectory(prefix="civmatrix-bench-") as tmpname:
        tmp = Path(tmpname)
        ldap = EmbeddedSlapd(tmp / "slapd")
        ldap.load_ldif(directory.to_ldif())
        ldap.start()
        try:
            floors: dict[int, tuple[float, int]] = {}
            if not args.skip_floor:
                for conc in args.floor_concurrency:
                    pg = fresh_pg(f"bench_floor_{conc}") if args.postgres else None
                    hs, token = start_synapse(tmp, f"floor-{conc}", pg)
                    try:
                        cfg_path = write_cfg(tmp, ldap, hs, token, conc)
                        wall = asyncio.run(raw_floor(cfg_path, hs, token, conc))
                        floors[conc] = (wall, count_events(hs, pg))
                        print(
                            f"floor at concurrency {conc}: {wall:.1f} s, {floors[conc][1]} events", flush=True
                        )
                    finally:
                        hs.stop()
            pg = fresh_pg("bench_provisioner") if args.postgres else None
            hs, token = start_synapse(tmp, "provisioner", pg)
            try:
                cfg_path = write_cfg(tmp, ldap, hs, token, args.concurrency)
                full, full_stats, rss_kb, _out = run_cli(cfg_path)
                events = count_events(hs, pg)
                print(f"full sync: {full:.1f} s, {events} events, {full_stats}", flush=True)
                again, again_stats, _, _ = run_cli(cfg_path)
                print(f"no-change sync: {again:.2f} s, {again_stats}", flush=True)
                changed = churn(ldap, cfg_path, 0.01)
                churn_t, churn_stats, _, _churn_out = run_cli(cfg_path, "--allow-removals", "100000")
                print(f"1% churn sync ({changed} changes): {churn_t:.2f} s, {churn_stats}", flush=True)
                final, final_stats, _, _ = run_cli(cfg_path)
            finally:
                hs.stop()
        finally:
            ldap.stop()
    results.update(
        floors={str(k): {"seconds": v[0], "events": v[1]} for k, v in floors.items()},
        full={"seconds": full, "events": events, **full_stats},
        no_change={"seconds": again, **again_stats},
        churn={"seconds": churn_t, "changes": changed, **churn_stats},
        after_churn={"seconds": final, **final_stats},
        peak_rss_mb=rss_kb / 1024,
    )
    best = min(floors.items(), key=lambda kv: kv[1][0]) if floors else None
    print()
    print(f"| measure ({args.people} people, Synapse on {results['database']}) | value |")
    print("|---|---|")
    for conc, (wall, ev) in sorted(floors.items()):
        print(f"| raw floor, concurrency {conc} | {wall:.1f} s, {ev} events |")
    print(f"| provisioner full sync (read + plan + apply) | {full:.1f} s, {events} events, "
          f"{full_stats.get('writes', '?')} write requests |")  # fmt: skip
    if best:
        print(f"| ratio full sync / best floor (c={best[0]}) | {full / best[1][0]:.2f}x |")
    print(f"| no-change re-sync | {again:.2f} s, {again_stats.get('writes', '?')} writes |")
    print(
        f"| re-sync after 1 % churn ({changed} changes) | {churn_t:.2f} s, {churn_stats.get('writes', '?')} writes |"
    )
    print(f"| following re-sync | {final:.2f} s, {final_stats.get('writes', '?')} writes |")
    print(f"| provisioner peak RSS | {rss_kb / 1024:.0f} MB |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
