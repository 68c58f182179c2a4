"""Benchmark: what the client-API token guard (provisioner.synapse.guard) costs per request.

    python bench/guard.py                    # 2,000 requests per kind and server
    python bench/guard.py --requests 10000

Two fresh Synapse processes on loopback, the closed-server config each, one with the guard and one with
it taken off (as a stock image would run). Each gets the same sequential requests over one keep-alive
connection, as one client would send them: an authenticated ``/account/whoami`` (the guard checks the token,
then the servlet checks it again), an authenticated alias lookup, and a tokenless alias lookup (which the
guard refuses, and the stock server answers). Prints median and 95th-percentile latency and requests per
second for each.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.synapse.config import TEST_RATE_LIMITS


def timed(port: int, path: str, token: str | None, n: int) -> tuple[list[float], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    times, status = [], 0
    for _ in range(n):
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - began)
        status = response.status
    conn.close()
    return times, status


def run(root: Path, guarded: bool, n: int) -> list[tuple[str, list[float], int]]:
    server = EmbeddedSynapse(root, rate_limits=TEST_RATE_LIMITS, log_level="WARNING")
    if not guarded:
        for listener in server.config["listeners"]:
            listener.get("additional_resources", {}).pop("/_matrix/client", None)
    server.start()
    try:
        admin = server.create_admin("admin")
        person = server.register("person")
        body = json.dumps({"room_alias_name": "dept", "preset": "private_chat"}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=30)
        conn.request("POST", "/_matrix/client/v3/createRoom", body,
                     {"Authorization": f"Bearer {admin.access_token}"})  # fmt: skip
        assert conn.getresponse().status == 200
        alias = "/_matrix/client/v3/directory/room/" + urllib.parse.quote("#dept:example.test", safe="")
        results = []
        for name, path, token in (
            ("whoami (token)", "/_matrix/client/v3/account/whoami", person.access_token),
            ("alias lookup (token)", alias, person.access_token),
            ("alias lookup (no token)", alias, None),
        ):
            timed(server.public_port, path, token, min(200, n))  # warm the caches
            times, status = timed(server.public_port, path, token, n)
            results.append((name, times, status))
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="civmatrix-bench-guard-") as tmp:
        rows = {guarded: run(Path(tmp) / str(guarded), guarded, args.requests) for guarded in (True, False)}
    print(f"{'request':26} {'server':9} {'status':>6} {'median ms':>10} {'p95 ms':>8} {'req/s':>7}")
    for (name, times, status), (_, stock, stock_status) in zip(rows[True], rows[False], strict=True):
        for label, t, s in (("guarded", times, status), ("stock", stock, stock_status)):
            p95 = sorted(t)[int(len(t) * 0.95)]
            print(f"{name:26} {label:9} {s:>6} {statistics.median(t) * 1000:>10.2f} {p95 * 1000:>8.2f} "
                  f"{len(t) / sum(t):>7.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
