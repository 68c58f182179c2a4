"""Benchmark: the watch's fallback without change detection (no syncprov) — cost per poll and leaver latency.

    python bench/watch_fallback.py --people 25000 --polls 20
    python bench/watch_fallback.py --people 0 --e2e-people 300 --leavers 20 --spread 90

Real servers throughout. The cost: a fresh slapd of ``--people`` generated people *without* the syncprov
overlay (so ``contextCSN`` is missing, as on a server nobody set up), then ``--polls`` fallback polls, each
exactly what the watch does every ``watch.fallback_seconds``: :func:`provisioner.watch.read_roster` (two paged
searches for the anchor only: everyone the filter matches, and those of them the disabled filter matches,
evaluated by slapd) and the comparison with the last roster (:func:`provisioner.core.watch.leavers`). Per
poll: the wall time, slapd's CPU (utime+stime from /proc/<pid>/stat) and this process's CPU (the watch runs
the same call in a thread, so that is the watch's CPU per poll). One person is deleted and one disabled
before the last poll, and that poll must find exactly those two.

The latency (``--e2e-people``, with Synapse): ``provisioner watch`` as a process against a slapd without
syncprov and the default ``watch:`` settings (so the fallback reads every ``watch.fallback_seconds``);
``--leavers`` people are logged in, then deleted (every other one: disabled) at uniformly random moments over
``--spread`` seconds; each latency is from the ldapmodify returning to the first refused ``/account/whoami``.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.watch import cpu_seconds, http, pct, write_cfg
from provisioner.config import load_config, parse_config
from provisioner.core.directory import interpret
from provisioner.core.identity import base_localpart
from provisioner.core.watch import leavers
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.ldap_reader import read_directory_sync
from provisioner.sample import generate_directory
from provisioner.watch import CsnDetector, DetectionUnavailable, read_roster

ROOT = Path(__file__).resolve().parents[1]
DISABLED = "(employeeType=disabled)"


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": pct(values, 0.9), "max": max(values)}


def poll_cost(work: Path, people: int, polls: int) -> dict[str, Any]:
    directory = generate_directory(people, seed=3)
    ldap = EmbeddedSlapd(work / "cost-slapd", suffix=directory.base_dn, syncprov=False)
    ldap.load_ldif(directory.to_ldif(), replace=True)
    ldap.start()
    try:
        assert ldap.pid is not None
        cfg = parse_config({
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
            "directory": {"uri": ldap.uri, "bind_dn": ldap.service_dn, "base_dn": ldap.suffix,
                          "bind_password_file": str(ldap.service_password_file), "disabled_filter": DISABLED},
        }).directory  # fmt: skip
        try:
            CsnDetector(cfg).check()
            raise SystemExit("contextCSN is there: this slapd has syncprov, the fallback would not run")
        except DetectionUnavailable:
            pass
        last = read_roster(cfg)  # a warm cache, as after the watch's first read
        wall, slapd_cpu, own_cpu = [], [], []
        enabled = sorted(last.enabled)
        snap = interpret(read_directory_sync(cfg), cfg)
        by_anchor = {p.anchor: p for p in snap.people}
        gone, off = by_anchor[enabled[len(enabled) // 3]], by_anchor[enabled[2 * len(enabled) // 3]]
        found: tuple[tuple[str, str], ...] = ()
        for i in range(polls):
            if i == polls - 1:
                ldap.modify(f"dn: {gone.dn}\nchangetype: delete\n\n"
                            f"dn: {off.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n")  # fmt: skip
            s0, c0, w0 = cpu_seconds(ldap.pid), time.process_time(), time.perf_counter()
            roster = read_roster(cfg)
            found = leavers(last, roster)
            wall.append(time.perf_counter() - w0)
            own_cpu.append(time.process_time() - c0)
            slapd_cpu.append(cpu_seconds(ldap.pid) - s0)
            assert roster.complete, roster.stop_reason
            last = roster
        assert found == ((gone.anchor, "left the directory"), (off.anchor, "disabled in the directory")), (
            found
        )
        return {"people": len(snap.people), "in_scope": len(last.present), "disabled": len(last.disabled),
                "polls": polls, "wall_s": summary(wall), "slapd_cpu_s": summary(slapd_cpu),
                "watch_cpu_s": summary(own_cpu)}  # fmt: skip
    finally:
        ldap.stop()


def leaver(
    ldap: EmbeddedSlapd, url: str, token: str, dn: str, disable: bool, at: float, out: list[float]
) -> None:
    time.sleep(max(0.0, at - time.monotonic()))
    change = "modify\nreplace: employeeType\nemployeeType: disabled" if disable else "delete"
    ldap.modify(f"dn: {dn}\nchangetype: {change}\n\n")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        code, data = http(url, "GET", "/_matrix/client/v3/account/whoami", token)
        if code in (401, 403) and data.get("errcode") in ("M_USER_LOCKED", "M_UNKNOWN_TOKEN"):
            out.append(time.monotonic() - t0)
            return
        time.sleep(0.05)
    out.append(float("inf"))


def end_to_end(work: Path, people: int, n: int, spread: float, seed: int) -> dict[str, Any]:
    directory = generate_directory(people, seed=seed, broken=False)
    ldap = EmbeddedSlapd(work / "e2e-slapd", suffix=directory.base_dn, syncprov=False)
    ldap.load_ldif(directory.to_ldif(), replace=True)
    ldap.start()
    hs = EmbeddedSynapse(work / "synapse", log_level="WARNING")
    hs.start()
    watch: subprocess.Popen[bytes] | None = None
    try:
        admin = hs.create_admin("admin").access_token
        cfg_path = write_cfg(work, ldap, hs, admin, "tree", disabled_filter=DISABLED, max_removal_percent=50)
        cfg = load_config(cfg_path)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "provisioner.cli", "--config", str(cfg_path)]
        subprocess.run([*cli, "sync", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
        rng = random.Random(seed)
        chosen = rng.sample(list(interpret(read_directory_sync(cfg.directory), cfg.directory).enabled), n)
        tokens = {}
        for p in chosen:
            uid = f"@{base_localpart(p.login)}:{hs.server_name}"
            code, data = http(hs.admin_url, "POST", f"/_synapse/admin/v1/users/{uid}/login", admin, {})
            assert code == 200, (uid, data)
            tokens[p.dn] = data["access_token"]
        log = open(work / "watch.log", "wb")  # noqa: SIM115
        watch = subprocess.Popen([*cli, "-v", "watch"], env=env, stdout=log, stderr=subprocess.STDOUT)
        state = cfg_path.parent / "state" / "watch.json"
        while not (state.exists() and json.loads(state.read_text()).get("fallback")
                   and json.loads(state.read_text()).get("last_run")):  # fmt: skip
            time.sleep(0.2)
        time.sleep(2)
        start, lat = time.monotonic() + 1, []
        threads = [threading.Thread(target=leaver, args=(ldap, hs.public_url, tokens[p.dn], p.dn, i % 2 == 1,
                                                         start + rng.uniform(0, spread), lat))
                   for i, p in enumerate(chosen)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"people": people, "fallback_seconds": cfg.watch.fallback_seconds, "n": len(lat),
                "p50_s": statistics.median(lat), "p99_s": pct(lat, 0.99), "max_s": max(lat), "spread_s": spread}  # fmt: skip
    finally:
        if watch is not None and watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
            watch.wait(30)
        hs.stop()
        ldap.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=25000, help="the cost run's directory (0: skip it)")
    ap.add_argument("--polls", type=int, default=20)
    ap.add_argument("--e2e-people", type=int, default=0, help="the Synapse-backed latency run (0: skip it)")
    ap.add_argument("--leavers", type=int, default=20)
    ap.add_argument("--spread", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-watch-fallback-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"loadavg_at_start": os.getloadavg()}
    if args.people:
        results["poll_cost"] = poll_cost(work, args.people, args.polls)
        print("poll cost:", json.dumps(results["poll_cost"]), flush=True)
    if args.e2e_people:
        results["leaver_latency"] = end_to_end(work, args.e2e_people, args.leavers, args.spread, args.seed)
    print(json.dumps(results, indent=1, ensure_ascii=False))
    (work / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
