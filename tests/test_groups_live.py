"""Groups, levels and announcement channels against a real slapd and a real Synapse.

A small city written by hand: two departments (one with a sub-unit) whose staff name their heads in
``manager``, and groups under ou=Groups: a working group with a nested group that nests it back (a cycle),
a groupOfUniqueNames of event organisers, and an empty groupOfNames holding the schema's placeholder.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.matrix.client import HomeserverClient
from bridge.matrix.contract import MARKER_TYPE
from provisioner import exitcodes
from provisioner.config import Config, load_config
from provisioner.core.reconcile import Observed
from provisioner.observe import observe
from provisioner.sync import run
from tests.helpers import write_config

pytestmark = [pytest.mark.slapd, pytest.mark.synapse]

BASE = "dc=city,dc=test"
TRANSPORT = f"ou=Департамент транспорта,{BASE}"
METRO = f"ou=Отдел метро,{TRANSPORT}"
FINANCE = f"ou=Департамент финансов,{BASE}"
GROUPS = f"ou=Groups,{BASE}"
WG = f"cn=Рабочая группа по цифровизации,{GROUPS}"
ANALYSTS = f"cn=Аналитики,{GROUPS}"
ORGANISERS = f"cn=Ответственные за мероприятия,{GROUPS}"
EMPTY = f"cn=Пустая группа,{GROUPS}"
SERVER = "example.test"


def _person(uid: str, unit_dn: str, name: str, title: str, manager: str | None) -> str:
    first, last = name.split(" ", 1)
    lines = [f"dn: uid={uid},{unit_dn}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {name}",
             f"sn: {last}", f"givenName: {first}", f"displayName: {name}", f"title: {title}"]  # fmt: skip
    if manager:
        lines.append(f"manager: uid={manager},{TRANSPORT if manager.startswith('t') else FINANCE}"
                     if not manager.startswith("m") else f"manager: uid={manager},{METRO}")  # fmt: skip
    return "\n".join(lines) + "\n\n"


def city_ldif() -> str:
    out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: city\no: Город\n\n"]
    for dn in (TRANSPORT, METRO, FINANCE, GROUPS):
        out.append(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0][3:]}\n\n")
    out.append(_person("t.head", TRANSPORT, "Тимур Главный", "Директор департамента", None))
    out += [
        _person(f"t{i}", TRANSPORT, f"Татьяна Транспортная{i}", "Специалист", "t.head") for i in (1, 2, 3)
    ]
    out.append(_person("m.head", METRO, "Марат Метров", "Начальник отдела", None))
    out += [_person(f"m{i}", METRO, f"Мария Метрова{i}", "Специалист", "m.head") for i in (1, 2)]
    out.append(_person("f.head", FINANCE, "Фёдор Финансов", "Директор департамента", None))
    out += [_person(f"f{i}", FINANCE, f"Фаина Финансова{i}", "Специалист", "f.head") for i in (1, 2)]
    out.append(f"dn: {WG}\nobjectClass: groupOfNames\ncn: Рабочая группа по цифровизации\n"
               f"member: uid=t1,{TRANSPORT}\nmember: uid=f1,{FINANCE}\nmember: {ANALYSTS}\n\n")  # fmt: skip
    out.append(
        f"dn: {ANALYSTS}\nobjectClass: groupOfNames\ncn: Аналитики\nmember: uid=m1,{METRO}\nmember: {WG}\n\n"
    )
    out.append(f"dn: {ORGANISERS}\nobjectClass: groupOfUniqueNames\ncn: Ответственные за мероприятия\n"
               f"uniqueMember: uid=t2,{TRANSPORT}\nuniqueMember: uid=f2,{FINANCE}\n\n")  # fmt: skip
    out.append(
        f"dn: {EMPTY}\nobjectClass: groupOfNames\ncn: Пустая группа\nmember: cn=placeholder,{BASE}\n\n"
    )
    return "".join(out)


GROUPS_CFG = {
    "map": [
        {"dn": WG, "room": True},
        {"dn": ORGANISERS, "level": 50, "units": "own"},
        {"base": GROUPS, "filter": "(cn=Пустая*)", "room": True},
    ]
}


@pytest.fixture
def city(make_slapd, fresh_synapse, tmp_path):
    ldap = make_slapd(people=0, start=False, suffix=BASE)
    ldap.load_ldif(city_ldif())
    ldap.start()
    hs = fresh_synapse()
    path = write_config(
        tmp_path, ldap, hs_url=hs.url, token=hs.admin_token, server_name=SERVER,
        layout={"max_room_size": 50, "announcements": {"units": "top"}},
        directory={"exclude": [GROUPS]}, extra={"groups": GROUPS_CFG},
    )  # fmt: skip
    return ldap, hs, path


def sync(path: Path, allow: int | None = None):
    cfg = load_config(path, token_required=True)
    return asyncio.run(run(cfg, apply=True, allow_removals=allow, progress=False))


async def _observed(cfg: Config) -> Observed:
    assert cfg.homeserver.admin_token
    async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as c:
        return await observe(c, (await c.whoami()).user_id)


async def _state(cfg: Config, room_id: str, etype: str) -> dict:
    assert cfg.homeserver.admin_token
    async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as c:
        return dict(await c.get_state(room_id, etype, "") or {})


async def _set_level(cfg: Config, room_id: str, user: str, level: int) -> None:
    assert cfg.homeserver.admin_token
    async with HomeserverClient(cfg.homeserver.url, cfg.homeserver.admin_token) as c:
        pl = dict(await c.get_state(room_id, "m.room.power_levels", "") or {})
        pl["users"] = {**pl.get("users", {}), user: level}
        await c.send_state(room_id, "m.room.power_levels", "", pl)


def u(login: str) -> str:
    return f"@{login}:{SERVER}"


def test_group_rooms_levels_and_channels_follow_the_directory(city):
    ldap, hs, path = city
    cfg = load_config(path, token_required=True)
    first = sync(path)
    assert first.exit_code == exitcodes.OK, (first.message, first.report)
    assert any("cycle" in n and "Аналитики" in n for n in first.snapshot.notes)
    obs = asyncio.run(_observed(cfg))
    group_rooms = [r for r in obs.rooms.values() if r.purpose == "group"]
    # The cycle resolved: the working group holds its own members and the nested group's; the empty group
    # (only a placeholder DN) has no room.
    assert len(group_rooms) == 1 and group_rooms[0].name == "Рабочая группа по цифровизации"
    wg = group_rooms[0]
    assert wg.members - {u("admin")} == {u("t1"), u("f1"), u("m1")}
    marker = asyncio.run(_state(cfg, wg.room_id, MARKER_TYPE))
    assert marker["kind"] == "group"

    dept = {
        r.key.rpartition("#")[0]: r for r in obs.rooms.values() if r.kind == "room" and r.purpose == "unit"
    }
    by_name = {r.name: r for r in dept.values()}
    transport, finance = by_name["Департамент транспорта"], by_name["Департамент финансов"]
    # Heads from manager, and organisers from the group, moderate their own unit's room.
    assert transport.power_users.get(u("t.head")) == 50 and transport.power_users.get(u("t2")) == 50
    assert finance.power_users.get(u("f2")) == 50 and u("t2") not in finance.power_users
    assert transport.raised == {u("t.head"): 50, u("t2"): 50}

    channels = {r.name: r for r in obs.rooms.values() if r.purpose == "announcements"}
    assert set(channels) == {"Департамент транспорта — Объявления", "Департамент финансов — Объявления"}
    news = channels["Департамент транспорта — Объявления"]
    # The whole subtree reads (the metro sub-unit too); the head and the organiser post.
    assert news.members - {u("admin")} == {u(x) for x in ("t.head", "t1", "t2", "t3", "m.head", "m1", "m2")}
    pl = asyncio.run(_state(cfg, news.room_id, "m.room.power_levels"))
    assert pl["events_default"] == 50 and pl["users_default"] == 0
    assert (
        pl["users"].get(u("t.head")) == 50 and pl["users"].get(u("t2")) == 50 and u("t1") not in pl["users"]
    )
    assert pl["events"]["m.reaction"] == 0 and pl["events"]["m.poll.response"] == 0
    assert asyncio.run(_state(cfg, news.room_id, MARKER_TYPE))["kind"] == "announcements"
    # The presence module keeps the channels out of presence like the spaces.
    spaces = sum(1 for r in obs.rooms.values() if r.kind == "space")
    want = f"presence: {spaces + 2} rooms kept out of presence fan-out"
    deadline = time.monotonic() + 30
    while want not in hs.server.log_path.read_text(encoding="utf-8", errors="replace"):
        assert time.monotonic() < deadline, f"Synapse's log never said {want!r}"
        time.sleep(0.3)

    # A level set by hand in a managed room is not the provisioner's to take back.
    asyncio.run(_set_level(cfg, transport.room_id, u("t3"), 50))
    # The directory changes: t1 leaves the working group, f2 joins it through the nested group, t2 is no
    # longer an organiser, and t.head's staff stop naming them as their manager.
    ldap.modify(
        f"dn: {WG}\nchangetype: modify\ndelete: member\nmember: uid=t1,{TRANSPORT}\n\n"
        f"dn: {ANALYSTS}\nchangetype: modify\nadd: member\nmember: uid=f2,{FINANCE}\n\n"
        f"dn: {ORGANISERS}\nchangetype: modify\ndelete: uniqueMember\nuniqueMember: uid=t2,{TRANSPORT}\n\n"
        + "".join(f"dn: uid=t{i},{TRANSPORT}\nchangetype: modify\ndelete: manager\n\n" for i in (1, 2, 3))
    )
    held = sync(path)
    assert held.exit_code == exitcodes.REMOVALS_HELD, held.message  # lowering is held like removals
    assert "lower the power of" in (held.message or held.removal_check.reason or "")
    second = sync(path, allow=10)
    assert second.exit_code == exitcodes.OK, (second.message, second.report)
    obs2 = asyncio.run(_observed(cfg))
    wg2 = obs2.rooms[wg.key]
    assert wg2.members - {u("admin")} == {u("f1"), u("m1"), u("f2")}
    t2 = obs2.rooms[transport.key]
    assert u("t.head") not in t2.power_users and u("t2") not in t2.power_users  # lowered to the default
    assert t2.power_users.get(u("t3")) == 50  # set by hand: kept
    assert t2.raised == {}
    news2 = asyncio.run(_state(cfg, news.room_id, "m.room.power_levels"))
    assert u("t.head") not in news2["users"] and u("t2") not in news2["users"]
    assert obs2.rooms[finance.key].power_users.get(u("f.head")) == 50  # nothing else moved
    audit = (path.parent / "state" / "audit.jsonl").read_text(encoding="utf-8")
    assert '"lowered": [["@t.head:example.test", 50]' in audit  # every lowering is audited with its level
    third = sync(path)
    assert third.exit_code == exitcodes.OK and third.plan.actions == (), third.plan.actions


def _cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"map": [{"dn": f"cn=Нет такой,{GROUPS}", "room": True}]}, "groups.map[0].dn: cn=Нет такой"),
        ({"cycles": "error", "map": [{"dn": WG, "room": True}]}, "cycle: cn=Рабочая группа"),
        (
            {"map": [{"dn": ORGANISERS, "units": ["Департамент культуры"]}]},
            "'Департамент культуры' names no unit",
        ),
        ({"map": [{"dn": WG, "room": "yes"}]}, "groups.map[0].room: must be true or false"),
    ],
)
def test_group_config_errors_exit_2_and_touch_nothing(city, tmp_path, groups, message):
    ldap, hs, good = city
    (tmp_path / "bad").mkdir()
    path = write_config(tmp_path / "bad", ldap, hs_url=hs.url, token=hs.admin_token, server_name=SERVER,
                        directory={"exclude": [GROUPS]}, extra={"groups": groups})  # fmt: skip
    done = _cli(path, "sync")
    assert done.returncode == exitcodes.CONFIG, done.stderr
    assert message in done.stderr, done.stderr
    cfg = load_config(good, token_required=True)  # the same server, read with a config that loads
    obs = asyncio.run(_observed(cfg))
    assert not obs.rooms and not obs.registry  # nothing was touched
