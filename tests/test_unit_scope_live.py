"""Department by department against a real slapd and a real Synapse: ``--unit`` and ``layout.onboarded_units``.

What a department's run wrote is counted in Synapse's own database (events per room, and whose membership
each state event is about), so "nothing elsewhere" is what the server stored, not what the plan said.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import exitcodes
from provisioner.config import load_config
from provisioner.core.actions import Action, CreateRoom, CreateUser, LockUser
from provisioner.core.directory import interpret
from provisioner.core.model import ROOT_UNIT, DirectorySnapshot
from provisioner.ldap_reader import read_directory_sync
from provisioner.sample import generate_directory
from provisioner.sync import run
from tests.helpers import write_config
from tests.test_sync_live import observed

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

TRANSPORT = "Департамент транспорта и развития дорожно-транспортной инфраструктуры"
HEALTH = "Департамент здравоохранения"


@pytest.fixture
def city(make_slapd, fresh_synapse, tmp_path):
    """120 people in seven top-level units, a fresh Synapse, and a way to rewrite the config."""
    directory = generate_directory(120, seed=3, big_unit=10, broken=False)
    ldap = make_slapd(directory=directory)
    hs = fresh_synapse()

    def configure(**layout) -> Path:
        return write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, layout=layout)

    return ldap, hs, configure


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def read(path: Path) -> DirectorySnapshot:
    cfg = load_config(path, token_required=True)
    return interpret(read_directory_sync(cfg.directory), cfg.directory_policy())


def department(snap: DirectorySnapshot, top: str) -> tuple[set[str], set[str]]:
    """The unit keys and the people's DNs of a top-level unit, from the directory itself."""
    units = {u.key for u in snap.units if u.path[:1] == (top,)}
    return units, {p.dn for p in snap.people if p.unit_key in units}


def events(hs) -> tuple[int, dict[str, int]]:
    """The last stream position and the number of events per room, from Synapse's database."""
    db = sqlite3.connect(f"file:{hs.server.data_dir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        top = db.execute("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetchone()[0]
        rows = db.execute("SELECT room_id, COUNT(*) FROM events GROUP BY room_id").fetchall()
        return top, dict(rows)
    finally:
        db.close()


def written_since(hs, position: int) -> list[tuple[str, str, str | None]]:
    """(room ID, event type, state key) of every event stored after ``position``."""
    db = sqlite3.connect(f"file:{hs.server.data_dir / 'homeserver.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT e.room_id, e.type, s.state_key FROM events e LEFT JOIN state_events s USING (event_id) "
            "WHERE e.stream_ordering > ? ORDER BY e.stream_ordering",
            (position,),
        ).fetchall()
    finally:
        db.close()


def room_unit(key: str, kind: str) -> str:
    return key if kind == "space" else key.rpartition("#")[0]


def test_scoped_plan_is_the_slice_of_the_full_plan_and_bad_units_touch_nothing(city):
    ldap, hs, configure = city
    path = configure()
    cfg = load_config(path, token_required=True)
    snap = read(path)
    units, dns = department(snap, TRANSPORT)
    whole = asyncio.run(run(cfg, apply=False, progress=False, snapshot=snap))
    scoped = asyncio.run(run(cfg, apply=False, progress=False, snapshot=snap, units=["департамент транс"]))
    uid_of = {p.dn: f"@{whole.desired.localparts[p.anchor]}:example.test" for p in snap.people}
    ours = {uid_of[dn] for dn in dns}

    def in_slice(a: Action) -> bool:
        keys = {getattr(a, k, None) for k in ("key", "room_key", "child_key")} - {None}
        user = getattr(a, "user_id", None)
        if isinstance(a, CreateUser):
            return user in ours
        if keys and all(room_unit(str(k), "room" if "#" in str(k) else "space") in units for k in keys):
            return True
        # The spaces above: the department's people join them.
        return a.kind == "join" and getattr(a, "room_key", None) == ROOT_UNIT and user in ours

    expected = [a for a in whole.plan.actions if in_slice(a)]
    got = [a for a in scoped.plan.actions if in_slice(a)]
    assert got == expected and len(expected) > 3 * len(ours)
    rest = [a for a in scoped.plan.actions if not in_slice(a)]
    # Beyond the slice only the organisation's space is made (power for nobody outside), its bot and
    # provisioner joins, and the registry rows of the department's people.
    assert {a.kind for a in rest} <= {
        "create_room",
        "update_room",
        "save_registry",
        "exempt_rate_limit",
        "join",
    }
    roots = [a for a in rest if isinstance(a, CreateRoom)]
    assert [a.key for a in roots] == [ROOT_UNIT]
    assert {u for u, _ in roots[0].power_users} <= ours | {hs.admin_user_id}
    assert scoped.removal_check.managed == len(ours)

    shown = cli(path, "layout", "--unit", "ДЕПАРТАМЕНТ ТРАНСПОРТА")
    assert shown.returncode == 0, shown.stderr
    assert f"[space] {TRANSPORT}" in shown.stdout and HEALTH not in shown.stdout
    assert "[space] Правительство Москвы" in shown.stdout  # the space above it, for context
    listed = cli(path, "directory", "--unit", TRANSPORT.replace("е", "ё", 1))
    assert listed.returncode == 0, listed.stderr
    assert f"people       : {len(dns)} (" in listed.stdout and f"units        : {len(units)}" in listed.stdout

    before = events(hs)
    ambiguous = cli(path, "sync", "--unit", "Отдел ЖКХ")
    assert ambiguous.returncode == exitcodes.CONFIG, ambiguous.stderr
    assert "fits several units" in ambiguous.stderr
    assert "Префектура ЦАО / Управа Басманного района / Отдел ЖКХ" in ambiguous.stderr
    assert "Префектура ЮАО / Управа района Бирюлёво Восточное / Отдел ЖКХ" in ambiguous.stderr
    unknown = cli(path, "plan", "--unit", "Департамент культуры")
    assert unknown.returncode == exitcodes.CONFIG and "no such unit" in unknown.stderr, unknown.stderr
    bad_config = configure(onboarded_units=["Департамент культуры"])
    refused = cli(bad_config, "sync")
    assert refused.returncode == exitcodes.CONFIG, refused.stderr
    assert "layout.onboarded_units" in refused.stderr and "nothing was done" in refused.stderr
    assert events(hs) == before
    assert not asyncio.run(observed(cfg)).registry


def test_department_by_department_then_a_reorganisation_of_one(city):
    ldap, hs, configure = city
    path = configure(onboarded_units=["департамент транспорта"])
    first = cli(path, "sync", "--quiet")
    assert first.returncode == 0, first.stderr
    cfg = load_config(path, token_required=True)
    snap = read(path)
    t_units, t_dns = department(snap, TRANSPORT)
    h_units, h_dns = department(snap, HEALTH)
    obs = asyncio.run(observed(cfg))
    by_anchor = {p.anchor: p for p in snap.people}
    created = {by_anchor[a].dn for a in obs.registry}
    assert created == {dn for dn in t_dns if not next(p for p in snap.people if p.dn == dn).disabled}
    assert {room_unit(k, r.kind) for k, r in obs.rooms.items()} == t_units | {ROOT_UNIT}
    transport_rooms = {r.room_id for k, r in obs.rooms.items() if room_unit(k, r.kind) in t_units}

    # Onboarding a second department leaves the first one's rooms exactly as they were.
    position, counts = events(hs)
    path = configure(onboarded_units=["департамент транспорта", HEALTH])
    second = cli(path, "sync", "--quiet")
    assert second.returncode == 0, second.stderr
    after_counts = events(hs)[1]
    assert {r: after_counts[r] for r in transport_rooms} == {r: counts[r] for r in transport_rooms}
    obs = asyncio.run(observed(cfg))
    assert {room_unit(k, r.kind) for k, r in obs.rooms.items()} == t_units | h_units | {ROOT_UNIT}
    uid = {by_anchor[a].dn: f"@{e.localpart}:example.test" for a, e in obs.registry.items()}
    t_people, h_people = {uid[d] for d in t_dns if d in uid}, {uid[d] for d in h_dns if d in uid}
    assert h_people and t_people
    assert [w for w in written_since(hs, position) if w[0] in transport_rooms] == []

    # A reorganisation of transport: a new sub-unit takes two people, one more moves up, one is disabled;
    # meanwhile someone in health is disabled too, which this run must leave alone.
    people = sorted((p for p in snap.enabled if p.dn in t_dns), key=lambda p: p.dn)
    deep = max(people, key=lambda p: p.dn.count(","))
    top_dn = "ou=" + deep.dn.split(",ou=")[-1]
    new_ou = f"ou=Отдел цифровизации,{top_dn}"
    movers = [p for p in people if p is not deep][:2]
    gone = next(p for p in people if p not in movers and p is not deep)
    h_gone = sorted((p for p in snap.enabled if p.dn in h_dns), key=lambda p: p.dn)[0]
    rdn = lambda p: p.dn.split(",", 1)[0]  # noqa: E731
    ldap.modify(
        f"dn: {new_ou}\nchangetype: add\nobjectClass: organizationalUnit\nou: Отдел цифровизации\n\n"
        + "".join(
            f"dn: {p.dn}\nchangetype: modrdn\nnewrdn: {rdn(p)}\ndeleteoldrdn: 1\nnewsuperior: {new_ou}\n\n"
            for p in movers
        )
        + f"dn: {deep.dn}\nchangetype: modrdn\nnewrdn: {rdn(deep)}\ndeleteoldrdn: 1\nnewsuperior: {top_dn}\n\n"
        + f"dn: {gone.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n"
        + f"dn: {h_gone.dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n\n"
    )
    position, counts = events(hs)
    before = asyncio.run(observed(cfg))
    scoped = cli(path, "sync", "--quiet", "--unit", TRANSPORT, "--allow-removals", "1")
    assert scoped.returncode == 0, scoped.stderr + scoped.stdout
    assert "scope: " + TRANSPORT in scoped.stdout
    after = asyncio.run(observed(cfg))
    t_now = {room_unit(k, r.kind) for k, r in after.rooms.items() if r.kind == "space"}
    assert len(t_now - t_units - {ROOT_UNIT} - h_units) == 1  # the new sub-unit's space
    transport_ids = {
        r.room_id for k, r in after.rooms.items() if room_unit(k, r.kind) in t_now - h_units - {ROOT_UNIT}
    }
    root_id = after.rooms[ROOT_UNIT].room_id
    writes = written_since(hs, position)
    assert writes
    for room_id, kind, state_key in writes:
        if room_id in transport_ids:
            continue
        # Elsewhere only the organisation's space, and there only the department's people's membership.
        assert room_id == root_id and kind == "m.room.member" and state_key in t_people, (room_id, kind)
    untouched = set(counts) - transport_ids - {root_id}
    assert {r: events(hs)[1].get(r) for r in untouched} == {r: counts[r] for r in untouched}
    assert after.users[uid[gone.dn]].locked and not after.users[uid[h_gone.dn]].locked
    for p in movers:
        rooms = [r for r in after.rooms.values() if r.kind == "room" and uid[p.dn] in r.members]
        assert len(rooms) == 1 and "Отдел цифровизации" in (rooms[0].name or "")
    assert before.rooms.keys() <= after.rooms.keys()

    # Converged: the department plans nothing more; the whole run still has health's lock to do.
    again = cli(path, "plan", "--unit", TRANSPORT)
    assert again.returncode == 0 and "plan: 0 actions" in again.stdout, again.stdout
    whole = asyncio.run(run(load_config(path, token_required=True), apply=False, progress=False))
    locks = [a.user_id for a in whole.plan.actions if isinstance(a, LockUser)]
    assert locks == [uid[h_gone.dn]]

    status = cli(path, "status", "--unit", "департамент транспорта")
    assert status.returncode == 0, status.stderr
    assert f"unit: {TRANSPORT}" in status.stdout and "Отдел цифровизации" in status.stdout
    assert "last change: " in status.stdout and "never" not in status.stdout.split("last change: ")[1]
