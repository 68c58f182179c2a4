"""``provisioner watch`` as a process against a real slapd (syncprov, contextCSN) and a real Synapse.

One watch runs for the whole module over 120 people (one full sync at start); each test changes the directory
while it runs and waits for what a person would see. Order matters: the threshold and the outage come last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.matrix.contract import PROFILE_KEYS
from provisioner import exitcodes
from provisioner.config import load_config
from provisioner.core.directory import interpret
from provisioner.core.identity import base_localpart
from provisioner.core.model import Person
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.ldap_reader import read_directory_sync
from provisioner.sample import generate_directory
from tests import closed_probes as probes
from tests.fixtures.synapse import SynapseHandle, _start
from tests.helpers import write_config
from tests.test_sync_live import observed

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

PEOPLE = 120
ARCHIVE = "Уволенные"
OUTSIDE = "Внешние"
WATCH = {"poll_seconds": 0.3, "debounce_seconds": 0.5, "max_delay_seconds": 3}


class World:
    def __init__(self, ldap: EmbeddedSlapd, hs: SynapseHandle, path: Path) -> None:
        self.ldap, self.hs, self.path = ldap, hs, path
        self.cfg = load_config(path, token_required=True)
        self.proc: subprocess.Popen[str] | None = None

    def start_watch(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "provisioner.cli", "--config", str(self.path), "-v", "watch"],
            stdout=subprocess.PIPE,
            stderr=open(self.path.parent / "watch.log", "a"),
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path.parent / "state" / "watch.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def people(self) -> list[Person]:
        return sorted(interpret(read_directory_sync(self.cfg.directory), self.cfg.directory).enabled,
                      key=lambda p: p.dn)  # fmt: skip

    def uid(self, p: Person) -> str:
        return f"@{base_localpart(p.login)}:example.test"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        return http(self.hs.url, method, path, self.hs.admin_token, body)

    def login(self, user_id: str) -> str:
        code, data = self.admin("POST", f"/_synapse/admin/v1/users/{user_id}/login", {})
        assert code == 200, data
        return str(data["access_token"])

    def user(self, user_id: str) -> dict[str, Any]:
        return self.admin("GET", f"/_synapse/admin/v2/users/{user_id}")[1]


def http(base: str, method: str, path: str, token: str, body: dict[str, Any] | None = None):
    """``tests.closed_probes.http`` with the path quoted onto ``base`` (user ids keep their @ and :)."""
    return probes.http(method, base + urllib.parse.quote(path, safe="/:?=&@"), body, token, timeout=10)


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("watch")
    directory = generate_directory(PEOPLE, seed=5, broken=False, disabled_fraction=0.0)
    ldap = EmbeddedSlapd(tmp / "slapd", suffix=directory.base_dn)
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    hs = _start(tmp / "synapse")
    # People moved under ou=Уволенные are leavers (directory.leavers, listed in another case and spacing), as
    # in directories that park leavers in an OU; ou=Внешние is out of scope (directory.exclude).
    scope = {
        "leavers": [f"OU={ARCHIVE.lower()} ,{ldap.suffix.upper()}"],
        "exclude": [f"ou={OUTSIDE},{ldap.suffix}"],
    }
    for name in (ARCHIVE, OUTSIDE):
        ldap.modify(
            f"dn: ou={name},{ldap.suffix}\nchangetype: add\nobjectClass: organizationalUnit\nou: {name}\n\n"
        )
    path = write_config(tmp, ldap, hs_url=hs.url, token=hs.admin_token, layout={"max_room_size": 30},
                        directory=scope,
                        safety={"max_removals": 8, "max_removal_percent": 50, "min_directory_fraction": 0.5},
                        extra={"watch": WATCH})  # fmt: skip
    try:
        with watching(World(ldap, hs, path)) as w:
            yield w
    finally:
        hs.server.stop()
        ldap.stop()


@contextlib.contextmanager
def watching(w: World) -> Iterator[World]:
    """``w`` with its watch process running past its first full sync; the watch is stopped (SIGTERM) after."""
    w.proc = w.start_watch()
    try:
        wait_for("the first full sync", lambda: w.status().get("last_run", {}).get("exit_code") == 0, 300)
        yield w
    finally:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
            w.proc.wait(30)


def refused(hs: SynapseHandle, token: str) -> str | None:
    code, data = http(hs.url, "GET", "/_matrix/client/v3/account/whoami", token)
    return data.get("errcode") if code in (401, 403) else None


def test_deleted_person_is_locked_within_seconds(world):
    p = world.people()[3]
    token = world.login(world.uid(p))
    assert refused(world.hs, token) is None
    world.ldap.modify(f"dn: {p.dn}\nchangetype: delete\n\n")
    start = time.monotonic()
    errcode = wait_for("the token to be refused", lambda: refused(world.hs, token), 15)
    assert errcode in ("M_USER_LOCKED", "M_UNKNOWN_TOKEN")
    assert time.monotonic() - start < 10
    assert world.user(world.uid(p))["locked"] is True
    # The full run that follows takes the leaver out of their rooms.
    wait_for("the kick", lambda: not http(world.hs.url, "GET", f"/_synapse/admin/v1/users/{world.uid(p)}/joined_rooms",
                                          world.hs.admin_token)[1].get("joined_rooms"), 30)  # fmt: skip


def test_disabled_person_is_locked(world):
    p = world.people()[5]
    token = world.login(world.uid(p))
    world.ldap.modify(f"dn: {p.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n")
    assert wait_for("the lock", lambda: refused(world.hs, token), 15) == "M_USER_LOCKED"


def _joined_rooms(world: World, uid: str) -> list[str]:
    return list(
        world.admin("GET", f"/_synapse/admin/v1/users/{uid}/joined_rooms")[1].get("joined_rooms") or []
    )


@pytest.mark.parametrize("container", [ARCHIVE, OUTSIDE])
def test_moved_into_a_leavers_or_excluded_ou_is_locked_within_seconds(world, container):
    p = world.people()[7]
    token = world.login(world.uid(p))
    rdn = p.dn.split(",", 1)[0]
    world.ldap.modify(f"dn: {p.dn}\nchangetype: moddn\nnewrdn: {rdn}\ndeleteoldrdn: 1\n"
                      f"newsuperior: ou={container},{world.ldap.suffix}\n\n")  # fmt: skip
    start = time.monotonic()
    assert wait_for("the lock", lambda: refused(world.hs, token), 15) == "M_USER_LOCKED"
    assert time.monotonic() - start < 10  # the fast path, as for a deletion, not the next full run
    # The full run that follows kicks them and makes nothing for the OU they were moved into.
    wait_for("the kick", lambda: not _joined_rooms(world, world.uid(p)), 30)
    obs = asyncio.run(observed(world.cfg))
    assert not any(container.casefold() in (r.name or "").casefold() for r in obs.rooms.values())


def test_hire_is_created_and_joined(world):
    some = world.people()[0]
    parent = some.dn.split(",", 1)[1]
    world.ldap.modify(
        f"dn: uid=novyi.sotrudnik,{parent}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: novyi.sotrudnik\n"
        "cn: Новый Сотрудник\nsn: Сотрудник\ndisplayName: Новый Сотрудник\n\n"
    )
    uid = "@novyi.sotrudnik:example.test"

    def joined() -> bool:
        code, data = world.admin("GET", f"/_synapse/admin/v1/users/{uid}/joined_rooms")
        return code == 200 and bool(data.get("joined_rooms"))

    wait_for("the hire in a room", joined, 30)
    assert world.user(uid)["displayname"] == "Новый Сотрудник"


def test_uid_rename_keeps_the_account_and_unit_rename_renames_the_space(world):
    p = world.people()[10]
    before = world.user(world.uid(p))
    parent = p.dn.split(",", 1)[1]
    world.ldap.modify(f"dn: {p.dn}\nchangetype: modrdn\nnewrdn: uid=pereimenovan\ndeleteoldrdn: 1\n\n")
    unit_rdn, unit_parent = parent.split(",", 1)
    world.ldap.modify(
        f"dn: {parent}\nchangetype: modrdn\nnewrdn: ou=Отдел Переименованный\ndeleteoldrdn: 1\n\n"
    )

    def renamed_room() -> bool:
        obs = asyncio.run(observed(world.cfg))
        return any("Переименованный" in (r.name or "") for r in obs.rooms.values())

    wait_for("the renamed unit's room", renamed_room, 30)
    assert world.user(world.uid(p))["locked"] is False  # same anchor: same account, not a leaver
    assert before["name"] == world.uid(p)
    code, _ = world.admin("GET", "/_synapse/admin/v2/users/@pereimenovan:example.test")
    assert code == 404  # no second account for the new login


def test_burst_of_300_changes_is_coalesced(world):
    runs_before = world.status()["last_run"]["at"]
    log_before = len((world.path.parent / "watch.log").read_text())
    people = world.people()[20:120]
    for round_ in range(3):
        world.ldap.modify("".join(f"dn: {p.dn}\nchangetype: modify\nreplace: title\ntitle: Должность {round_}\n\n"
                                  for p in people))  # fmt: skip
    sample = people[-1]
    wait_for("the last title", lambda: _title(world, sample) == "Должность 2", 60)
    # Profiles change during a run and its status is written when the run ends: wait for that end too.
    wait_for("the run's status", lambda: world.status().get("last_run", {}).get("at", 0) > runs_before, 60)
    log = (world.path.parent / "watch.log").read_text()[log_before:]
    runs = [ln for ln in log.splitlines() if "watch run (changes)" in ln]
    assert len(runs) <= 3, runs  # 300 writes, coalesced by the debounce (max_delay cuts a long burst)


def _title(world: World, p: Person) -> str | None:
    code, data = http(world.hs.url, "GET", f"/_matrix/client/v3/profile/{world.uid(p)}", world.hs.admin_token)
    title = data.get(PROFILE_KEYS["title"])
    return title if isinstance(title, str) else None


def test_second_watch_is_refused_with_the_holders_pid(world):
    second = world.start_watch()
    _, err = second.communicate(timeout=60)
    assert second.returncode == exitcodes.LOCKED
    log = (world.path.parent / "watch.log").read_text()
    assert f"pid {world.proc.pid}" in log and "only one sync or watch" in log


def test_threshold_holds_a_mass_removal_and_the_watch_keeps_running(world):
    victims = world.people()[30:42]  # 12 > max_removals 8
    world.ldap.modify("".join(f"dn: {p.dn}\nchangetype: delete\n\n" for p in victims))
    st = wait_for("the held run", lambda: (s := world.status()) and s["last_run"]["exit_code"] == 6 and s, 20)
    assert "would remove 12 people" in st["problem"]
    assert not any(world.user(world.uid(p))["locked"] for p in victims)
    assert world.proc.poll() is None
    out = subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(world.path), "status"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "watch: running" in out.stdout and "exit 6" in out.stdout and "would remove 12" in out.stdout
    # The administrator's confirmation, as they would give it: the number the refused sync names. It can
    # exceed the watch's 12: a full sync also counts heads whose moderator level goes with their reports.
    held = subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(world.path), "sync", "--quiet"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert held.returncode == 6, held.stderr
    allow = re.search(r"--allow-removals (\d+)", held.stderr)
    assert allow is not None and int(allow.group(1)) >= 12, held.stderr
    ok = subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(world.path), "sync", "--quiet",
                         "--allow-removals", allow.group(1)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert all(world.user(world.uid(p))["locked"] for p in victims)


def test_synapse_restarted_mid_watch(world):
    p = world.people()[45]
    token = world.login(world.uid(p))
    world.hs.server.kill()
    world.ldap.modify(f"dn: {p.dn}\nchangetype: delete\n\n")
    st = wait_for(
        "the failed run", lambda: (s := world.status()) and s["last_run"]["exit_code"] == 5 and s, 30
    )
    assert "homeserver" in st["problem"]
    assert world.proc.poll() is None
    world.hs.server.start()
    assert wait_for("the lock after the restart", lambda: refused(world.hs, token), 60) == "M_USER_LOCKED"


def test_slapd_killed_and_restarted_mid_watch(world):
    world.ldap.kill()
    wait_for("the watch to notice", lambda: (world.status().get("last_check") or {}).get("error"), 15)
    assert world.proc.poll() is None
    world.ldap.start()
    p = world.people()[50]
    token = world.login(world.uid(p))
    world.ldap.modify(f"dn: {p.dn}\nchangetype: delete\n\n")
    # Backoff after the outage is at most a few seconds here (two or three failed checks).
    assert wait_for("the lock after the restart", lambda: refused(world.hs, token), 40) == "M_USER_LOCKED"
