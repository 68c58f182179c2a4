"""Benchmark: directory search — index build time and memory, query latency at 1 and 50 concurrent clients.

    nice python bench/search.py --people 25000 250000            # the service alone (real Synapse for tokens)
    nice python bench/search.py --people 25000 --synapse-compare # + the same queries through Synapse's search
    nice python bench/search.py --people 25000 --direct          # the service without nginx in front

People come from ``provisioner.sample`` (the same generator as the demo), read through the real directory
interpreter, so titles, unit paths, phones and e-mails look like the city's. The query mix is what people
type: surname prefixes of 1–6 letters, full names, surname + first name, Latin transliterations, title
words, unit words, phone suffixes, e-mail prefixes; drawn with a fixed seed. The service runs as the real
CLI (``bridge --config F search``) in its own process, checking the token against a real Synapse, behind
a private nginx with the project's own site (``provisioner.proxy``), as clients reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import yaml

from bridge.search.snapshot import IndexedPerson, write_snapshot
from provisioner import proxy
from provisioner.core.directory import ReadResult, interpret, units_by_key
from provisioner.core.identity import assign_localparts, transliterate
from provisioner.core.model import RawEntry
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import free_port
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.sample import generate_directory
from provisioner.synapse.config import TEST_RATE_LIMITS

ROOT = Path(__file__).resolve().parents[1]
SERVER = "example.test"


def sample_people(n: int, seed: int = 1) -> list[IndexedPerson]:
    """``n`` people of the sample city, as the sync would list them for search."""
    from provisioner.config import parse_config

    directory = generate_directory(n, seed=seed, broken=False)
    cfg = parse_config(
        {"homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
         "directory": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME",
                       "base_dn": directory.base_dn, "disabled_filter": "(employeeType=disabled)"}}
    )  # fmt: skip
    people, units, disabled = [], [], set()
    for e in directory.entries:
        raw = RawEntry(e.dn, {k.lower(): v for k, v in e.attributes})
        classes = {c.lower() for c in e.get("objectClass")}
        if "inetorgperson" in classes:
            people.append(raw)
            if "disabled" in e.get("employeeType"):
                disabled.add(e.dn)
        elif "organizationalunit" in classes:
            units.append(raw)
    snap = interpret(ReadResult(people, units, frozenset(disabled), True, None), cfg.directory_policy())
    lps = assign_localparts((p.anchor, p.login) for p in snap.people)
    paths = {k: u.path for k, u in units_by_key(snap.units).items()}
    return [
        IndexedPerson(f"@{lps[p.anchor]}:{SERVER}", p.display_name, p.login, p.sort_name, p.title,
                      paths.get(p.unit_key, ()), p.email, p.phone)
        for p in snap.enabled
    ]  # fmt: skip


def query_mix(people: list[IndexedPerson], count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(count):
        p = rng.choice(people)
        surname, *rest = p.display_name.split()
        kind = rng.random()
        if kind < 0.30:
            out.append(surname[: rng.randint(1, 6)])  # typing, letter by letter
        elif kind < 0.40:
            out.append(p.display_name)
        elif kind < 0.50:
            out.append(f"{surname} {rest[0][:3]}" if rest else surname)
        elif kind < 0.60:
            out.append(transliterate(surname)[: rng.randint(3, 8)])
        elif kind < 0.70 and p.title:
            out.append(rng.choice(p.title.split()))
        elif kind < 0.80 and p.department:
            out.append(rng.choice(rng.choice(p.department).split()))
        elif kind < 0.90 and p.phone:
            digits = "".join(c for c in p.phone if c.isdigit())
            out.append(digits[-rng.randint(4, 7) :])
        elif p.email:
            out.append(p.email[: rng.randint(4, len(p.email))])
        else:
            out.append(surname)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def measure_build(path: str) -> dict[str, float]:
    """Run in a child process: RSS before/after loading the snapshot and building the index."""
    from bridge.search.index import build_index
    from bridge.search.snapshot import read_snapshot

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    before = rss_mb()
    t0 = time.perf_counter()
    _, people = read_snapshot(path)
    t1 = time.perf_counter()
    index = build_index(people)
    t2 = time.perf_counter()
    built_mb = rss_mb() - before
    queries = query_mix(list(people), 3000)
    lat = []
    for q in queries:
        s = time.perf_counter()
        index.search(q, 10)
        lat.append(time.perf_counter() - s)
    return {"load_s": t1 - t0, "build_s": t2 - t1, "rss_mb": built_mb, "people": len(index),
            "inproc_p50_ms": pct(lat, 0.5), "inproc_p99_ms": pct(lat, 0.99)}  # fmt: skip


async def load(url: str, token: str, queries: list[str], concurrency: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    it = iter(queries)
    headers = {"Authorization": f"Bearer {token}"}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors
            for q in it:
                s = time.perf_counter()
                async with session.post(url, json={"search_term": q, "limit": 10}, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                lat.append(time.perf_counter() - s)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "rps": len(lat) / wall, "errors": errors,
            "mean_ms": statistics.fmean(lat) * 1000}  # fmt: skip


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, {["Authorization"] = "Bearer %s", ["Content-Type"] = "application/json"},
                    bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"p50_ms":%%.3f,"p99_ms":%%.3f,"max_ms":%%.3f,"requests":%%d,"errors":%%d,"rps":%%.1f}\\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, summary.requests / (summary.duration / 1e6)))
end
"""


def wrk_load(
    url: str, token: str, queries: list[str], connections: int, seconds: int, tmp: Path, *, pause_ms: int = 0
) -> dict[str, Any]:
    """``connections`` clients each sending the next query as soon as the answer is in (closed loop, wrk in
    C), or ``pause_ms`` after it: a person typing (10 keystrokes a second at 100 ms)."""
    bodies = ",".join(
        "[==[" + json.dumps({"search_term": q, "limit": 10}, ensure_ascii=False) + "]==]" for q in queries
    )
    script = tmp / f"wrk-{connections}-{pause_ms}.lua"
    # Uniform around the mean, so 50 people do not all press a key in the same millisecond.
    pause = f"delay = function() return math.random(0, {2 * pause_ms}) end\n" if pause_ms else ""
    script.write_text(WRK_SCRIPT % (bodies, token) + pause, encoding="utf-8")
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def start_service(tmp: Path, index: Path, hs: EmbeddedSynapse) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = {"homeserver": {"url": hs.admin_url, "server_name": SERVER},
           "search": {"listen": f"127.0.0.1:{port}", "index": str(index), "homeserver": hs.public_url}}  # fmt: skip
    path = tmp / f"search-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "--config", str(path), "search"],
        stdout=open(tmp / f"search-{port}.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with aiohttp_get(f"http://127.0.0.1:{port}/health") as people:
                if people > 0:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("search service did not start")


class aiohttp_get:
    def __init__(self, url: str) -> None:
        import urllib.request

        with urllib.request.urlopen(url, timeout=2) as r:
            self.people = int(json.loads(r.read())["people"])

    def __enter__(self) -> int:
        return self.people

    def __exit__(self, *exc: object) -> None:
        return None


async def fill_synapse(hs: EmbeddedSynapse, token: str, people: list[IndexedPerson]) -> float:
    """Accounts with display names, for Synapse's own user directory; returns seconds."""
    from bridge.matrix.client import HomeserverClient

    t0 = time.perf_counter()
    sem = asyncio.Semaphore(16)
    async with HomeserverClient(hs.admin_url, token, pool_limit=32) as c:
        await c.override_ratelimit(f"@admin:{SERVER}")

        async def one(p: IndexedPerson) -> None:
            async with sem:
                await c.put_user(p.user_id, displayname=p.display_name)

        await asyncio.gather(*(one(p) for p in people))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, nargs="+", default=[25000, 250000])
    # Enough that a run rarely sends the same query twice, except what people really repeat (first letters).
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    ap.add_argument(
        "--synapse-compare", action="store_true", help="also query Synapse's own search (<= 25,000)"
    )
    ap.add_argument("--via", help="base URL of another proxy in front of the service")
    ap.add_argument("--direct", action="store_true", help="query the service itself, not through nginx")
    ap.add_argument("--measure-build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_build:
        print(json.dumps(measure_build(args.measure_build)))
        return
    if shutil.which("wrk") is None:
        sys.exit("bench/search.py: the load comes from wrk, which is not installed (apt-get install wrk)")
    # Stopped with SIGTERM, still stop the servers it started (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    hs = EmbeddedSynapse(tmp / "synapse", log_level="WARNING", rate_limits=TEST_RATE_LIMITS,
                         overrides={"rc_user_directory": {"per_second": 10000, "burst_count": 10000}})  # fmt: skip
    hs.start()
    rows: list[dict[str, Any]] = []
    try:
        token = hs.create_admin("admin").access_token
        for n in args.people:
            t0 = time.perf_counter()
            people = sample_people(n)
            index = tmp / f"search-{n}.json"
            write_snapshot(index, people, generated_at=time.time())
            gen = time.perf_counter() - t0
            size_mb = index.stat().st_size / 1e6
            built = json.loads(subprocess.run(
                [sys.executable, __file__, "--measure-build", str(index)], capture_output=True, text=True,
                check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout)  # fmt: skip
            proc, port = start_service(tmp, index, hs)
            nginx_port = free_port()
            site = proxy.Proxy(
                server_name=SERVER, public_baseurl=f"http://127.0.0.1:{nginx_port}/",
                listen=(f"127.0.0.1:{nginx_port}",),
                main=proxy.Upstream(proxy.MAIN, (f"127.0.0.1:{hs.public_port}",)), search=f"127.0.0.1:{port}",
            )  # fmt: skip
            nginx = EmbeddedNginx(tmp / f"nginx-{n}", proxy.site(site), port=nginx_port)
            nginx.start()
            try:
                base = args.via or (
                    f"http://127.0.0.1:{port}" if args.direct else f"http://127.0.0.1:{nginx_port}"
                )
                url = f"{base}/_matrix/client/v3/user_directory/search"
                queries = query_mix(people, args.queries)
                asyncio.run(load(url, token, queries[:200], 10))  # warm-up: token cache, connections
                one = wrk_load(url, token, queries, 1, args.seconds, tmp)
                fifty = wrk_load(url, token, queries, 50, args.seconds, tmp)
                typing = wrk_load(url, token, queries, 50, args.seconds, tmp, pause_ms=100)
                zero = asyncio.run(zero_hits(url, token, queries[:500]))
            finally:
                nginx.stop()
                proc.terminate()
                proc.wait(10)
            row: dict[str, Any] = {"people": len(people), "snapshot_mb": size_mb, "generate_s": gen, **built,
                                   "c1": one, "c50": fifty, "c50_typing": typing, "zero_hits": zero}  # fmt: skip
            if args.synapse_compare and n <= 25000:
                row["synapse_fill_s"] = asyncio.run(fill_synapse(hs, token, people))
                time.sleep(5)  # the user directory is updated in the background
                url = f"{hs.public_url}/_matrix/client/v3/user_directory/search"
                row["synapse_c1"] = wrk_load(url, token, queries, 1, args.seconds, tmp)
                row["synapse_c50"] = wrk_load(url, token, queries, 50, args.seconds, tmp)
                row["synapse_c50_typing"] = wrk_load(url, token, queries, 50, args.seconds, tmp, pause_ms=100)
                row["synapse_zero_hits"] = asyncio.run(zero_hits(url, token, queries[:500]))
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        hs.stop()


async def zero_hits(url: str, token: str, queries: list[str]) -> float:
    """Share of the queries that found nobody (Synapse knows names only)."""
    empty = 0
    async with aiohttp.ClientSession() as s:
        for q in queries:
            async with s.post(url, json={"search_term": q, "limit": 10},
                              headers={"Authorization": f"Bearer {token}"}) as r:  # fmt: skip
                if not (await r.json()).get("results"):
                    empty += 1
    return empty / len(queries)


if __name__ == "__main__":
    main()
