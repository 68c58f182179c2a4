"""The README's first command, end to end: the demo brings everything up, a person logs in, it resumes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]
ROOT = Path(__file__).resolve().parents[1]


def demo_cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "provisioner.cli", "demo", "--dir", str(root), "--people", "60", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def call(url: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def login(url: str, user: str, password: str) -> tuple[int, dict]:
    body = json.dumps(
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    ).encode()
    req = urllib.request.Request(
        f"{url}/_matrix/client/v3/login",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_demo_runs_resumes_and_lets_a_person_log_in(tmp_path):
    root = tmp_path / "demo"
    first = subprocess.run(demo_cmd(root, "--once"), capture_output=True, text=True, timeout=600, env=env())
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "civmatrix demo is running: nginx in front of one Synapse process (SQLite)." in first.stdout
    url = re.search(r"Homeserver URL : (http://\S+)", first.stdout).group(1)
    user = re.search(r"Log in as\s+: (\S+)\s+/\s+(\S+)", first.stdout)
    assert user
    # Everything the demo wrote lives under its directory; people reach Synapse through the demo's nginx.
    assert {"ldap", "synapse", "nginx", "secrets", "civmatrix.yaml", "demo.json"} <= {
        p.name for p in root.iterdir()
    }
    state = json.loads((root / "demo.json").read_text())
    assert url == f"http://127.0.0.1:{state['nginx_port']}"
    # The banner promises nothing that was not checked: the colleague search was tried through that URL.
    assert "checked through the URL above" in first.stdout
    # Nothing the sync did made Synapse log an error. (One line at startup is Synapse's own: each client
    # listener builds a /sync servlet, and the second registers its cache metric again.)
    errors = [
        line
        for line in (root / "synapse" / "homeserver.log").read_text().splitlines()
        if " ERROR " in line and "Metric named cache_lru_cache_sync_valid_filter" not in line
    ]
    assert errors == []

    proc = subprocess.Popen(
        demo_cmd(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env()
    )
    try:
        out = ""
        deadline = time.time() + 300
        while "Press Ctrl-C" not in out and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert "civmatrix demo is running:" in out, out
        # Resumed: same URL, and the sync found nothing (or almost nothing) to do.
        assert url in out
        assert "create_user" not in out
        status, body = login(url, user.group(1), user.group(2))
        assert status == 200, body
        assert body["user_id"] == f"@{user.group(1)}:example.test"
        token = body["access_token"]
        # Find a colleague by surname, as in Element's "Start chat", and message them.
        colleague = re.findall(r"^\s{6}(\S+)\s+(\S+) ", out, re.MULTILINE)[-1]
        surname = colleague[1]
        found: dict = {"results": []}
        for _ in range(60):
            found = call(
                url,
                "POST",
                "/_matrix/client/v3/user_directory/search",
                token,
                {"search_term": surname, "limit": 20},
            )
            if any(r["user_id"] == f"@{colleague[0]}:example.test" for r in found["results"]):
                break
            time.sleep(0.5)
        target = f"@{colleague[0]}:example.test"
        assert target in {r["user_id"] for r in found["results"]}, (surname, found)
        room = call(
            url,
            "POST",
            "/_matrix/client/v3/createRoom",
            token,
            {"preset": "trusted_private_chat", "is_direct": True, "invite": [target]},
        )["room_id"]
        call(
            url,
            "PUT",
            f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
            token,
            {"msgtype": "m.text", "body": "Добрый день! Совещание в 15:00."},
        )
        status, other = login(url, colleague[0], user.group(2))
        assert status == 200, other
        synced = call(url, "GET", "/_matrix/client/v3/sync?timeout=0", other["access_token"])
        assert room in synced["rooms"]["invite"]
        status, body = login(url, user.group(1), "wrong-password")
        assert status == 403
        # One person at one machine tries every login the banner offers, and the first one again: no 429
        # (Synapse's default allows a burst of five per address; the demo documents its own limit).
        offered = [m[0] for m in re.findall(r"^\s{6}(\S+)\s+(\S+) ", out, re.MULTILINE)]
        for name in [user.group(1), *offered, user.group(1)]:
            status, body = login(url, name, user.group(2))
            assert status == 200, (name, body)
        # A second demo in the same directory is refused with a clear message.
        second = subprocess.run(
            demo_cmd(root, "--once"), capture_output=True, text=True, timeout=60, env=env()
        )
        assert second.returncode != 0
        assert "already running" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "demo stopped" in rest


def test_demo_with_workers_prints_a_login_that_works_through_the_proxy() -> None:
    """``make demo ARGS="--workers"``: PostgreSQL, Redis, Synapse main + workers and nginx, all private."""
    import shutil
    import tempfile

    # Not tmp_path: the demo's PostgreSQL runs as the postgres user, which must be able to enter it.
    base = Path(tempfile.mkdtemp(prefix="civmatrix-demo-workers-"))
    base.chmod(0o711)
    root = base / "demo"
    proc = subprocess.Popen(
        demo_cmd(root, "--workers"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env()
    )
    try:
        out = ""
        deadline = time.time() + 400
        while "Press Ctrl-C" not in out and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert (
            "Synapse main + synapse-sync-1, synapse-events-1, synapse-presence, on PostgreSQL and Redis"
            in out
        )
        url = re.search(r"Homeserver URL : (http://\S+)", out).group(1)
        user = re.search(r"Log in as\s+: (\S+)\s+/\s+(\S+)", out)
        status, body = login(url, user.group(1), user.group(2))
        assert status == 200, body
        synced = call(url, "GET", "/_matrix/client/v3/sync?timeout=0", body["access_token"])
        assert synced["rooms"]["join"], "the person's department room and space"
        # The sync went through the worker topology: its own cluster, its own Redis.
        topology = root / "topology"
        assert (topology / "postgres" / "data" / "PG_VERSION").exists()
        assert "GET /_matrix/client/v3/sync" in (topology / "logs" / "synapse-sync-1.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    try:
        assert proc.returncode == 0, rest
        assert "demo stopped" in rest
        # The same directory cannot be resumed as the other kind of demo: its accounts live in PostgreSQL.
        other = subprocess.run(
            demo_cmd(root, "--once"), capture_output=True, text=True, timeout=60, env=env()
        )
        assert other.returncode != 0 and "--workers" in other.stderr and "Traceback" not in other.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_banner_people_log_in_find_and_message_before_the_city_is_in(tmp_path):
    """Issue 20: the banner comes once its people are in, before the rest of the city; the rest fills in the
    background with a progress line and says when it is done; then the watch starts."""
    import queue
    import threading

    root = tmp_path / "demo"
    cmd = [*demo_cmd(root)[:-1], "150"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    out = ""

    def read_until(marker: str, seconds: float) -> None:
        nonlocal out
        deadline = time.time() + seconds
        while marker not in out and time.time() < deadline:
            with contextlib.suppress(queue.Empty):
                out += lines.get(timeout=1)
        assert marker in out, out[-3000:]

    def drain() -> None:
        nonlocal out
        with contextlib.suppress(queue.Empty):
            while True:
                out += lines.get_nowait()

    try:
        read_until("Press Ctrl-C", 600)
        banner = out
        assert "Still filling in: the rest of the city (150 people in all)" in banner
        assert re.search(r"Ready \d+ s after the command", banner)
        url = re.search(r"Homeserver URL : (http://\S+)", banner).group(1)
        user, password = re.search(r"Log in as\s+: (\S+)\s+/\s+(\S+)", banner).groups()
        status, body = login(url, user, password)
        assert status == 200, body
        token = body["access_token"]
        colleague, surname = re.findall(r"^\s{6}(\S+)\s+(\S+) ", banner, re.MULTILINE)[-1]
        target = f"@{colleague}:example.test"
        found = call(url, "POST", "/_matrix/client/v3/user_directory/search", token,
                     {"search_term": surname, "limit": 20})  # fmt: skip
        assert target in {r["user_id"] for r in found["results"]}, (surname, found)
        room = call(url, "POST", "/_matrix/client/v3/createRoom", token,
                    {"preset": "trusted_private_chat", "is_direct": True, "invite": [target]})["room_id"]  # fmt: skip
        call(url, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1", token,
             {"msgtype": "m.text", "body": "Добрый день! Совещание в 15:00."})  # fmt: skip
        status, other = login(url, colleague, password)
        assert status == 200, other
        synced = call(url, "GET", "/_matrix/client/v3/sync?timeout=0", other["access_token"])
        assert room in synced["rooms"]["invite"]
        # All of that happened while the rest of the city was still filling in.
        drain()
        assert "the whole city is in:" not in out, out[len(banner) :]
        admin = (root / "secrets" / "admin_token").read_text().strip()
        state = json.loads((root / "demo.json").read_text())
        users = call(f"http://127.0.0.1:{state['admin_port']}", "GET",
                     "/_synapse/admin/v2/users?limit=1&guests=false", admin)["total"]  # fmt: skip
        # The banner's units came first: far from everyone had an account when the banner was printed.
        assert users < 140, users
        # A manual sync meanwhile is refused by the run lock, and told who holds it.
        manual = subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(root / "civmatrix.yaml"),
                                 "sync"], capture_output=True, text=True, timeout=120, env=env(), cwd=root)  # fmt: skip
        drain()
        if "the whole city is in:" not in out:
            assert manual.returncode != 0 and "demo: filling in the city" in manual.stderr, manual.stderr
        read_until("the whole city is in:", 900)
        assert re.search(r"filling in the rest of the city: \d+/\d+ actions", out)
        done = re.search(r"the whole city is in: (\d+) people, (\d+) rooms and (\d+) spaces, after (\d+) s "
                         r"\(the banner after (\d+) s", out)  # fmt: skip
        assert done, out[-2000:]
        assert int(done.group(5)) < int(done.group(4))
        users = call(f"http://127.0.0.1:{state['admin_port']}", "GET",
                     "/_synapse/admin/v2/users?limit=1&guests=false", admin)["total"]  # fmt: skip
        # Everyone the line counts, plus the admin and the bot.
        assert users == int(done.group(1)) + 2, (users, done.group(0))
        read_until("the directory watch is running", 60)
        # Everyone is findable now, not only the banner's units: the account created last, by its surname.
        newest = call(f"http://127.0.0.1:{state['admin_port']}", "GET",
                      "/_synapse/admin/v2/users?limit=1&guests=false&order_by=creation_ts&dir=b", admin)["users"][0]  # fmt: skip
        assert newest["name"] not in {
            f"@{login}:example.test" for login in re.findall(r"^\s{8}(\S+):", banner, re.M)
        }
        # The search service reloads the snapshot the fill wrote within seconds (in a thread, off its loop).
        hits: dict = {"results": []}
        for _ in range(60):
            hits = call(url, "POST", "/_matrix/client/v3/user_directory/search", token,
                        {"search_term": newest["displayname"].split()[0], "limit": 50})  # fmt: skip
            if newest["name"] in {r["user_id"] for r in hits["results"]}:
                break
            time.sleep(1)
        assert newest["name"] in {r["user_id"] for r in hits["results"]}, (newest, hits)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    drain()
    assert proc.returncode == 0, out[-2000:]
    assert "demo stopped" in out
