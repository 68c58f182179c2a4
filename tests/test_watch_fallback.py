"""``provisioner watch`` on an OpenLDAP without the syncprov overlay, then with it (RUNBOOK's LDIF, live).

A real slapd running from ``slapd.d`` (cn=config, as Debian runs it) without syncprov, a real Synapse, and the
watch as a process. Without the overlay the watch must say so (an ERROR naming the fix), ``status`` must exit
10, and leavers must still be locked within ``watch.fallback_seconds`` plus a read and a lock. Then RUNBOOK's
LDIF is applied to the running slapd and the watch must go back to contextCSN by itself. Order matters.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from provisioner import exitcodes
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.sample import generate_directory
from tests.fixtures.synapse import _start
from tests.helpers import write_config
from tests.test_watch_detect import runbook_syncprov_ldif
from tests.test_watch_live import World, refused, wait_for, watching

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

PEOPLE = 60
FALLBACK = 2.0
WATCH = {"poll_seconds": 0.3, "debounce_seconds": 0.5, "max_delay_seconds": 3, "fallback_seconds": FALLBACK}
#: What a lock may take on top of the fallback's interval: a roster read of 60 people and two requests to
#: Synapse take well under a second; the rest is slack for a shared CI machine.
SLACK = 6.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("watchfb")
    directory = generate_directory(PEOPLE, seed=11, broken=False, disabled_fraction=0.0)
    ldap = EmbeddedSlapd(tmp / "slapd", suffix=directory.base_dn, syncprov=False, cn_config=True)
    ldap.load_ldif(directory.to_ldif())
    ldap.start()
    hs = _start(tmp / "synapse")
    path = write_config(tmp, ldap, hs_url=hs.url, token=hs.admin_token, layout={"max_room_size": 30},
                        safety={"max_removals": 8, "max_removal_percent": 50},
                        extra={"watch": WATCH})  # fmt: skip
    try:
        with watching(World(ldap, hs, path)) as w:
            yield w
    finally:
        hs.server.stop()
        ldap.stop()


def log_text(world: World) -> str:
    return (world.path.parent / "watch.log").read_text(encoding="utf-8")


def status(world: World) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(world.path), "status"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_watch_says_what_is_wrong_and_status_exits_10(world):
    errors = [ln for ln in log_text(world).splitlines() if " ERROR " in ln or ln.startswith("ERROR")]
    assert any("change detection (csn) cannot work" in ln and "Enable the syncprov overlay" in ln
               and "Enabling syncprov" in ln for ln in errors), log_text(world)  # fmt: skip
    out = status(world)
    assert out.returncode == exitcodes.DETECTION, out.stdout + out.stderr
    assert "CHANGE DETECTION NOT WORKING" in out.stdout and f"read every {FALLBACK} s" in out.stdout
    assert world.proc.poll() is None


def test_a_deleted_person_is_locked_within_the_fallback_bound(world):
    p = world.people()[3]
    token = world.login(world.uid(p))
    world.ldap.modify(f"dn: {p.dn}\nchangetype: delete\n\n")
    start = time.monotonic()
    assert wait_for("the lock", lambda: refused(world.hs, token), FALLBACK + SLACK) == "M_USER_LOCKED"
    assert time.monotonic() - start < FALLBACK + SLACK


def test_a_disabled_person_is_locked_within_the_fallback_bound(world):
    p = world.people()[5]
    token = world.login(world.uid(p))
    world.ldap.modify(f"dn: {p.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n")
    assert wait_for("the lock", lambda: refused(world.hs, token), FALLBACK + SLACK) == "M_USER_LOCKED"


def test_runbook_ldif_applied_live_brings_contextcsn_back(world):
    before = len(log_text(world))
    world.ldap.modify_config(runbook_syncprov_ldif())
    wait_for("the recovery", lambda: "change detection (csn) works again" in log_text(world)[before:], 20)
    wait_for("the status file", lambda: world.status().get("fallback") is None and world.status()["last_check"]
             .get("token"), 20)  # fmt: skip
    out = status(world)
    assert out.returncode == exitcodes.OK, out.stdout + out.stderr
    assert "NOT WORKING" not in out.stdout
    # Detected through contextCSN now: a leaver is locked at the detector's pace, and the run says "leavers"
    # after a token change, not after a fallback read.
    token_before = world.status()["last_check"]["token"]
    p = world.people()[7]
    token = world.login(world.uid(p))
    world.ldap.modify(f"dn: {p.dn}\nchangetype: delete\n\n")
    assert wait_for("the lock", lambda: refused(world.hs, token), 15) == "M_USER_LOCKED"
    assert world.status()["last_check"]["token"] != token_before
    assert world.status().get("fallback") is None
    assert "cannot work" not in log_text(world)[before:]
