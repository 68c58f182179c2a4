"""Benchmark: what one presence change costs with everyone online — civmatrix's Synapse against stock.

    python bench/presence.py --people 1000 --changes 20

Real servers throughout, one run, two sides measured one after the other on the same machine:

* **civmatrix**: the ``homeserver.yaml`` every deployment renders, which loads
  :mod:`provisioner.synapse.presence` (the sync's spaces kept out of presence fan-out);
* **stock**: the same file without that module (``presence_scope=False``): Synapse's own behaviour, and what a
  config-file exclusion that nobody reloaded after the sync amounts to.

Each side gets a fresh Synapse (SQLite) and the provisioner's full sync of the same generated city in the
default space tree (everyone in their unit's space and every space above it, so the top space holds
everyone). Then every enabled person comes online as Element does: a token, an initial sync with
lazy-loaded members, then ``/sync`` long polls (``timeout=30000``, ``set_presence=online``), started over
``--ramp`` seconds. Measured per side:

* **login storm**: from the first client to quiet (no sync returned for 3 s): sync responses returned and
  presence events delivered to clients, Synapse CPU seconds;
* **one change**: a person who shares a room with ``room_mates`` others goes ``unavailable`` / ``online``
  ``--changes`` times (PUT ``/presence``, 3 s apart); per change, the clients whose sync carried it, all sync
  responses returned, and Synapse's CPU over the window less its idle CPU over the same length.

Synapse's CPU is read from /proc for its process alone; the load generator's own CPU (this process) is
reported beside it: it shares the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.proc import cpu_seconds
from bench.watch import write_cfg
from provisioner.config import load_config
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.sample import generate_directory
from provisioner.synapse.config import TEST_RATE_LIMITS
from provisioner.sync import run as sync_run

# Element's lazy-loading filter, in short.
FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}})


@dataclass
class Traffic:
    """What the clients' long polls returned, as (monotonic time, user, presence senders) per response."""

    responses: list[tuple[float, str, frozenset[str]]] = field(default_factory=list)

    def since(self, t0: float, t1: float = float("inf")) -> list[tuple[float, str, frozenset[str]]]:
        return [r for r in self.responses if t0 <= r[0] < t1]


async def client(
    session: aiohttp.ClientSession, base: str, user: str, token: str, traffic: Traffic, ready: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    since: str | None = None
    while True:
        query = {"filter": FILTER, "timeout": "30000" if since else "0", "set_presence": "online"}
        if since:
            query["since"] = since
        url = f"{base}/_matrix/client/v3/sync?{urllib.parse.urlencode(query)}"
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=90)) as resp:
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(1)
            continue
        if "next_batch" not in body:
            await asyncio.sleep(1)
            continue
        senders = frozenset(e.get("sender", "") for e in body.get("presence", {}).get("events", []))
        if since is None:
            ready.append(user)
        else:
            traffic.responses.append((time.monotonic(), user, senders))
        since = body["next_batch"]


async def quiet(traffic: Traffic, *, still: float = 3.0, cap: float = 240.0) -> None:
    """Until no long poll has returned for ``still`` seconds (or ``cap`` passed)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < cap:
        last = traffic.responses[-1][0] if traffic.responses else t0
        if time.monotonic() - last >= still and time.monotonic() - t0 >= still:
            return
        await asyncio.sleep(0.5)


async def admin_login(session: aiohttp.ClientSession, hs: EmbeddedSynapse, admin: str, user: str) -> str:
    url = f"{hs.admin_url}/_synapse/admin/v1/users/{urllib.parse.quote(user)}/login"
    async with session.post(url, json={}, headers={"Authorization": f"Bearer {admin}"}) as resp:
        body = await resp.json()
        return str(body["access_token"])


def rooms_of(admin_url: str, admin: str, *, spaces: bool = False) -> dict[str, list[str]]:
    """Department rooms (or, with ``spaces``, the spaces) with their members, read from the server."""
    from tests.closed_probes import http

    out: dict[str, list[str]] = {}
    status, listed = http("GET", f"{admin_url}/_synapse/admin/v1/rooms?limit=10000", None, admin)
    assert status == 200, listed
    for room in listed["rooms"]:
        if (room.get("room_type") == "m.space") != spaces:
            continue
        rid = urllib.parse.quote(room["room_id"])
        status, members = http("GET", f"{admin_url}/_synapse/admin/v1/rooms/{rid}/members", None, admin)
        if status == 200:
            out[room["room_id"]] = list(members["members"])
    return out


async def one_side(
    name: str, work: Path, ldap: EmbeddedSlapd, *, scoped: bool, changes: int, ramp: float
) -> dict[str, Any]:
    hs = EmbeddedSynapse(
        work / f"synapse-{name}", rate_limits=TEST_RATE_LIMITS, presence_scope=scoped, log_level="INFO"
    )
    hs.start()
    try:
        admin = hs.create_admin("admin").access_token
        (work / f"cfg-{name}").mkdir(parents=True, exist_ok=True)
        cfg = load_config(write_cfg(work / f"cfg-{name}", ldap, hs, admin, "tree"), token_required=True)
        t0 = time.monotonic()
        result = await sync_run(cfg, apply=True, progress=False)
        assert result.exit_code == 0, result.message
        out: dict[str, Any] = {"sync_s": round(time.monotonic() - t0, 1)}
        if scoped:  # the module polls every 10 s; let it see the spaces before anyone is online
            await asyncio.sleep(12)
        rooms = rooms_of(hs.admin_url, admin)
        admin_id = f"@admin:{hs.server_name}"
        people = sorted({m for ms in rooms.values() for m in ms} - {admin_id})
        biggest = max(rooms.values(), key=len)
        subject = sorted(set(biggest) - {admin_id})[0]
        out["online"] = len(people) - 1
        out["room_mates"] = len(set(biggest) - {admin_id, subject})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tokens = {u: await admin_login(session, hs, admin, u) for u in people}
            pid = hs.pid
            assert pid is not None
            side = Side(session, hs.public_url, pid, tokens, subject)
            try:
                out["storm"] = await side.storm(ramp)
                out.update(await side.changes(changes))
            finally:
                await side.stop()
        return out
    finally:
        hs.stop()


@dataclass
class Side:
    """One side's clients: every person but ``subject`` long-polling, and the subject's presence changes."""

    session: aiohttp.ClientSession
    base: str
    pid: int  # Synapse's
    tokens: dict[str, str]
    subject: str
    traffic: Traffic = field(default_factory=Traffic)
    ready: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def storm(self, ramp: float) -> dict[str, Any]:
        """Everyone comes online over ``ramp`` seconds; measured until the long polls are quiet."""
        me0, hs0, t0 = time.process_time(), cpu_seconds(self.pid), time.monotonic()
        others = [u for u in self.tokens if u != self.subject]
        for user in others:
            poll = client(self.session, self.base, user, self.tokens[user], self.traffic, self.ready)
            self.tasks.append(asyncio.create_task(poll))
            await asyncio.sleep(ramp / len(others))
        while len(self.ready) < len(self.tasks) and time.monotonic() - t0 < 600:
            await asyncio.sleep(0.5)
        await quiet(self.traffic)
        storm = self.traffic.since(t0)
        return {
            "seconds": round(time.monotonic() - t0, 1),
            "initial_syncs": len(self.ready),
            "sync_responses": len(storm),
            "presence_events_delivered": sum(len(s) for _, _, s in storm),
            "synapse_cpu_s": round(cpu_seconds(self.pid) - hs0, 1),
            "loadgen_cpu_s": round(time.process_time() - me0, 1),
        }

    async def changes(self, count: int, window: float = 3.0) -> dict[str, Any]:
        """``count`` presence changes of the subject, ``window`` apart, less Synapse's idle CPU."""
        i0, it = cpu_seconds(self.pid), time.monotonic()
        await asyncio.sleep(window)
        idle_cpu = (cpu_seconds(self.pid) - i0) / (time.monotonic() - it) * window
        url = f"{self.base}/_matrix/client/v3/presence/{urllib.parse.quote(self.subject)}/status"
        per_change: list[dict[str, float]] = []
        for k in range(count):
            c0, w0 = cpu_seconds(self.pid), time.monotonic()
            await put_presence(
                self.session, url, self.tokens[self.subject], "unavailable" if k % 2 == 0 else "online"
            )
            await asyncio.sleep(window)
            got = self.traffic.since(w0, w0 + window)
            per_change.append(
                {
                    "woken_with_it": sum(1 for _, _, s in got if self.subject in s),
                    "sync_responses": len(got),
                    "synapse_cpu_ms": 1000 * max(0.0, cpu_seconds(self.pid) - c0 - idle_cpu),
                }
            )
        return {
            "idle_synapse_cpu_ms_per_3s": round(1000 * idle_cpu, 1),
            "per_change": {k: round(mean(c[k] for c in per_change), 1) for k in per_change[0]},
        }

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def put_presence(session: aiohttp.ClientSession, url: str, token: str, state: str) -> None:
    """One presence change; a loaded box may refuse a connection for a while, so a few tries."""
    text = ""
    for attempt in range(5):
        try:
            async with session.put(
                url, json={"presence": state}, headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:  # fmt: skip
                if resp.status == 200:
                    return
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as e:
            text = repr(e)
        await asyncio.sleep(1 + attempt)
    raise RuntimeError(f"PUT presence failed 5 times: {text}")


def mean(values: Iterable[float]) -> float:
    v = list(values)
    return sum(v) / len(v) if v else 0.0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--ramp", type=float, default=30.0, help="seconds over which the clients come online")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-presence-"))
    directory = generate_directory(args.people, seed=args.seed, broken=False, disabled_fraction=0.0)
    ldap = EmbeddedSlapd(work / "slapd", suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif(), replace=True)
    ldap.start()
    try:
        results: dict[str, Any] = {"people": args.people}
        for name, scoped in (("civmatrix", True), ("stock", False)):
            results[name] = await one_side(
                name, work, ldap, scoped=scoped, changes=args.changes, ramp=args.ramp
            )
            print(name, json.dumps(results[name], ensure_ascii=False), flush=True)
        a, b = results["civmatrix"], results["stock"]
        results["ratios_stock_over_civmatrix"] = {
            "storm_presence_events": round(
                b["storm"]["presence_events_delivered"] / max(1, a["storm"]["presence_events_delivered"]), 1
            ),
            "storm_synapse_cpu": round(
                b["storm"]["synapse_cpu_s"] / max(0.1, a["storm"]["synapse_cpu_s"]), 1
            ),
            "change_woken": round(
                b["per_change"]["woken_with_it"] / max(1, a["per_change"]["woken_with_it"]), 1
            ),
            "change_synapse_cpu": round(
                b["per_change"]["synapse_cpu_ms"] / max(1.0, a["per_change"]["synapse_cpu_ms"]), 1
            ),
        }
        print(json.dumps(results, ensure_ascii=False, indent=1))
    finally:
        ldap.stop()


if __name__ == "__main__":
    asyncio.run(main())
