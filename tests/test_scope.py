"""Scope and leaver containers (pure): ``directory.exclude`` and ``directory.leavers``, DN matching, and the
rule that power levels go only to a room's members.

The held-out case these tests stand for: six people moved with ``modrdn`` into ``ou=Уволенные`` were taken
for a new unit — a space and a room "Уволенные", the six joined into it, and the head of their old department
made its moderator without being a member.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.config import ConfigError, parse_config
from provisioner.core.actions import CreateRoom, DeactivateUser, Join, LockUser, UpdateRoom
from provisioner.core.desired import desired_state
from provisioner.core.directory import ReadResult, interpret
from provisioner.core.dn import DNError, Subtrees
from provisioner.core.model import DirectorySnapshot, RawEntry
from provisioner.core.reconcile import Observed, ObservedUser, SyncPolicy, previous_identities, reconcile
from tests.test_reconcile import simulate

SERVER = "example.test"
PROV = f"@admin:{SERVER}"
BASE = "dc=mos,dc=test"
LEAVERS_OU = f"ou=Уволенные,{BASE}"
DEPT = f"ou=Отдел ЖКХ\\, благоустройства,ou=Управа района Царицыно,{BASE}"
OTHER = f"ou=Юридический отдел,ou=Управа района Царицыно,{BASE}"


# --- DN matching ------------------------------------------------------------------------------------------

MATCH_CASES = [
    # (listed DN, DN asked about, expected match)
    (LEAVERS_OU, f"uid=a,{LEAVERS_OU}", LEAVERS_OU),
    (LEAVERS_OU, "UID=a,OU=УВОЛЕННЫЕ,DC=MOS,DC=TEST", LEAVERS_OU),  # case of types and Cyrillic values
    (LEAVERS_OU, "uid=a , ou=Уволенные ,  dc=mos, dc=test", LEAVERS_OU),  # spaces around commas
    (LEAVERS_OU, "uid=a,ou=\\D0\\A3\\D0\\B2\\D0\\BE\\D0\\BB\\D0\\B5\\D0\\BD\\D0\\BD\\D1\\8B\\D0\\B5,dc=mos,dc=test",
     LEAVERS_OU),  # hex-escaped UTF-8, as some servers send it
    ("ou=Уволенные ,dc=mos,dc=test", f"uid=a,{LEAVERS_OU}", "ou=Уволенные ,dc=mos,dc=test"),  # listed with a space
    (LEAVERS_OU, f"uid=a,ou=Sub,{LEAVERS_OU}", LEAVERS_OU),  # a subtree, not only direct children
    (LEAVERS_OU, LEAVERS_OU, LEAVERS_OU),  # the container itself
    (LEAVERS_OU, f"uid=a,ou=Уволенные 2,{BASE}", None),  # a name that merely starts alike
    (LEAVERS_OU, f"uid=a,ou=Уволенные\\,ou=x,{BASE}", None),  # an escaped comma is inside one value
    (LEAVERS_OU, f"uid=a,ou=Уволенные,ou=Архив,{BASE}", None),  # same name elsewhere in the tree
    (f"ou=Отдел\\, А,{BASE}", f"uid=a,ou=Отдел\\2C А,{BASE}", f"ou=Отдел\\, А,{BASE}"),  # two escapes of ","
    (f"uid=svc,{BASE}", f"UID=SVC,{BASE}", f"uid=svc,{BASE}"),  # a single entry, listed by its own DN
    (f"uid=svc,{BASE}", f"uid=svc2,{BASE}", None),
    ("ou=Йошкар-Ола,dc=x", "uid=a,ou=Йошкар-Ола,dc=x", "ou=Йошкар-Ола,dc=x"),  # NFD "Й" matches NFC "Й"
    ("OU=Disabled Users,DC=corp,DC=test", "CN=Иванов\\, Иван,OU=Disabled Users,DC=corp,DC=test",
     "OU=Disabled Users,DC=corp,DC=test"),  # AD spelling, an escaped comma in the CN
]  # fmt: skip


@pytest.mark.parametrize(("listed", "dn", "expected"), MATCH_CASES)
def test_subtree_matching(listed: str, dn: str, expected: str | None) -> None:
    assert Subtrees([listed]).container_of(dn) == expected


def test_the_most_specific_container_is_named_and_bad_dns_raise() -> None:
    inner = f"ou=Архив,{LEAVERS_OU}"
    subtrees = Subtrees([LEAVERS_OU, inner])
    assert subtrees.container_of(f"uid=a,{inner}") == inner
    assert subtrees.container_of(f"uid=a,{LEAVERS_OU}") == LEAVERS_OU
    with pytest.raises(DNError):
        subtrees.container_of("uid=a,ou=\\ZZ,dc=mos,dc=test")
    assert Subtrees([]).container_of("not a dn") is None  # nothing listed: nothing parsed, nothing to raise


# --- interpreting a read ----------------------------------------------------------------------------------


def config(directory: dict[str, Any] | None = None, **top: Any):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
            "directory": {
                "uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME", "base_dn": BASE,
                **(directory or {}),
            },
            "layout": {"max_room_size": 20, "head_title_pattern": "^Начальник"},
            **top,
        }
    )  # fmt: skip


def person(i: int, parent: str, **extra: str) -> RawEntry:
    attrs = {"entryuuid": (f"uuid-{i}",), "uid": (f"user{i}",), "displayname": (f"Сотрудник {i}",),
             **{k.lower(): (v,) for k, v in extra.items()}}  # fmt: skip
    return RawEntry(f"uid=user{i},{parent}", attrs)


def ou(name_dn: str, anchor: str) -> RawEntry:
    return RawEntry(name_dn, {"entryuuid": (anchor,)})


HEAD = person(0, DEPT, title="Начальник отдела")
STAFF = [person(i, DEPT, manager=HEAD.dn) for i in range(1, 7)]
LAWYER = person(9, OTHER)
UNIT_ENTRIES = (ou(f"ou=Управа района Царицыно,{BASE}", "ou-1"), ou(DEPT, "ou-2"), ou(OTHER, "ou-3"),
                ou(LEAVERS_OU, "ou-4"), ou(f"ou=Внешние,{BASE}", "ou-5"))  # fmt: skip


def moved(entry: RawEntry, parent: str) -> RawEntry:
    return RawEntry(f"{entry.dn.split(',', 1)[0]},{parent}", entry.attrs)


def read(entries: list[RawEntry], cfg, disabled: frozenset[str] = frozenset()) -> DirectorySnapshot:  # type: ignore[no-untyped-def]
    return interpret(
        ReadResult(entries, UNIT_ENTRIES, disabled, True, None), cfg.directory_policy(), skip_log=False
    )


def unit_names(snap: DirectorySnapshot) -> set[str]:
    return {u.name for u in snap.units}


def test_people_in_leavers_and_excluded_containers_are_set_aside_and_make_no_unit() -> None:
    cfg = config({"leavers": ["OU=уволенные , DC=MOS,DC=test"], "exclude": [f"ou=Внешние,{BASE}"]})
    entries = [HEAD, LAWYER, *(moved(p, LEAVERS_OU) for p in STAFF[:3]), moved(STAFF[3], f"ou=Внешние,{BASE}"),
               *STAFF[4:]]  # fmt: skip
    snap = read(entries, cfg)
    assert {p.anchor for p in snap.people} == {"uuid-0", "uuid-9", "uuid-5", "uuid-6"}
    causes = {a.anchor: a.cause for a in snap.set_aside}
    assert causes == {
        "uuid-1": "moved to the leavers container OU=уволенные , DC=MOS,DC=test",
        "uuid-2": "moved to the leavers container OU=уволенные , DC=MOS,DC=test",
        "uuid-3": "moved to the leavers container OU=уволенные , DC=MOS,DC=test",
        "uuid-4": f"moved out of scope (directory.exclude: ou=Внешние,{BASE})",
    }
    assert "Уволенные" not in unit_names(snap) and "Внешние" not in unit_names(snap)
    assert snap.skipped == ()  # set aside is not "broken": no warning per leaver
    assert snap.entries_read == len(entries)


def test_a_leavers_container_wins_over_every_other_attribute_and_exclude_wins_over_leavers() -> None:
    cfg = config({"leavers": [LEAVERS_OU], "exclude": [f"ou=Архив,{LEAVERS_OU}"]})
    # Enabled, with a department and a manager: still a leaver, because of where the entry is.
    enabled = moved(person(1, DEPT, manager=HEAD.dn, title="Начальник отдела"), LEAVERS_OU)
    archived = moved(person(2, DEPT), f"ou=Архив,{LEAVERS_OU}")
    snap = read([HEAD, enabled, archived], cfg)
    assert [p.anchor for p in snap.people] == ["uuid-0"]
    assert [a.cause.split(" ")[0:3] for a in snap.set_aside] == [
        ["moved", "to", "the"],
        ["moved", "out", "of"],
    ]


def test_without_the_keys_nothing_changes() -> None:
    snap = read([HEAD, *STAFF, moved(LAWYER, LEAVERS_OU)], config())
    assert snap.set_aside == () and len(snap.people) == 8
    assert "Уволенные" in unit_names(snap)  # an OU like any other, as before


def test_ad_flat_layout_with_a_disabled_users_ou() -> None:
    """AD shape: everyone in one flat OU, the department an attribute; leavers parked in OU=Disabled Users."""
    base = "DC=corp,DC=test"
    cfg = parse_config({
        "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
        "directory": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME", "base_dn": base,
                      "preset": "active_directory", "leavers": [f"ou=disabled users,{base.lower()}"]},
    })  # fmt: skip

    def ad(i: int, ou_name: str, department: str) -> RawEntry:
        return RawEntry(f"CN=Сотрудник\\, {i},OU={ou_name},{base}", {
            "objectguid": (f"{i:08d}-0000-0000-0000-000000000000",), "samaccountname": (f"user{i}",),
            "displayname": (f"Сотрудник {i}",), "department": (department,)})  # fmt: skip

    entries = [ad(1, "Staff", "Финансы"), ad(2, "Staff", "Финансы"), ad(3, "Disabled Users", "Финансы"),
               ad(4, "Disabled Users", "Отдел кадров")]  # fmt: skip
    snap = interpret(ReadResult(entries, (), frozenset(), True, None), cfg.directory_policy(), skip_log=False)
    assert [p.login for p in snap.people] == ["user1", "user2"]
    assert len(snap.set_aside) == 2
    assert unit_names(snap) == {"Финансы"}  # "Отдел кадров" had only a leaver: no unit for it either


# --- the whole pure pipeline: read -> desired -> plan -------------------------------------------------------

POLICY = SyncPolicy(server_name=SERVER, provisioner=PROV, creator_in_power_levels=False,
                    deactivate_after_seconds=100.0, min_directory_fraction=0.5)  # fmt: skip


def plan(snap: DirectorySnapshot, cfg, observed: Observed, now: float = 1000.0):  # type: ignore[no-untyped-def]
    previous, taken = previous_identities(snap, observed, SERVER)
    rooms = {m: k for k, r in observed.rooms.items() if r.kind == "room" for m in r.members}
    desired = desired_state(snap, cfg.layout_policy(), previous_localparts=previous, taken=taken | {"admin"},
                            previous_rooms=rooms)  # fmt: skip
    return desired, reconcile(desired, observed, snap, POLICY, now=now)


START = Observed(users={PROV: ObservedUser(PROV, "admin", True, False, False)}, rooms={}, registry={})


def test_six_moved_into_the_leavers_ou_are_locked_then_deactivated_and_nothing_is_created() -> None:
    cfg = config({"leavers": [LEAVERS_OU]})
    _, first = plan(read([HEAD, LAWYER, *STAFF], cfg), cfg, START)
    obs = simulate(first, START)
    after = read([HEAD, LAWYER, *(moved(p, LEAVERS_OU) for p in STAFF)], cfg)
    desired, second = plan(after, cfg, obs)
    locks = [a for a in second.actions if isinstance(a, LockUser)]
    assert sorted(a.user_id for a in locks) == [f"@user{i}:{SERVER}" for i in range(1, 7)]
    assert {a.cause for a in locks} == {f"moved to the leavers container {LEAVERS_OU}"}
    assert not any(isinstance(a, CreateRoom | Join) for a in second.actions)
    names = [r.name for r in desired.layout.rooms] + [s.name for s in desired.layout.spaces]
    assert "Уволенные" not in names
    obs2 = simulate(second, obs, now=1000.0)
    _, late = plan(after, cfg, obs2, now=1101.0)
    assert sorted(a.user_id for a in late.actions if isinstance(a, DeactivateUser)) == sorted(
        a.user_id for a in locks
    )


def test_a_head_is_never_given_power_in_a_room_they_are_not_in() -> None:
    """Without the leavers key the OU is a unit like any other; its room must still not list the six's old head."""
    cfg = config()
    _, first = plan(read([HEAD, LAWYER, *STAFF], cfg), cfg, START)
    obs = simulate(first, START)
    desired, second = plan(read([HEAD, LAWYER, *(moved(p, LEAVERS_OU) for p in STAFF)], cfg), cfg, obs)
    head = f"@user0:{SERVER}"
    for r in (*desired.layout.rooms, *desired.layout.spaces):
        assert set(r.moderators) <= set(r.members), r
    for a in second.actions:
        if isinstance(a, CreateRoom | UpdateRoom) and a.power_users:
            members = {j.user_id for j in second.actions if isinstance(j, Join) and j.room_key == a.key}
            members |= obs.rooms[a.key].members if a.key in obs.rooms else set()
            assert {u for u, _ in a.power_users} - {PROV} <= members, (a.key, a.power_users)
    leavers_room = next(r for r in desired.layout.rooms if r.name == "Уволенные")
    assert head not in leavers_room.moderators and len(leavers_room.members) == 6


def test_a_head_moderates_only_the_shard_they_sit_in() -> None:
    cfg = parse_config({
        "homeserver": {"url": "http://127.0.0.1:1", "server_name": SERVER},
        "directory": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME", "base_dn": BASE},
        "layout": {"max_room_size": 5, "head_title_pattern": "^Начальник", "space_members": "unit"},
    })  # fmt: skip
    staff = [person(i, DEPT, manager=HEAD.dn) for i in range(1, 12)]
    desired, _ = plan(read([HEAD, *staff], cfg), cfg, START)
    shards = [r for r in desired.layout.rooms if r.unit_key != "root"]
    assert len(shards) == 3
    head = f"@user0:{SERVER}"
    assert [head in r.moderators for r in shards] == [head in r.members for r in shards]
    assert sum(head in r.moderators for r in shards) == 1


# --- configuration ----------------------------------------------------------------------------------------

CONFIG_ERRORS = [
    ({"leavers": "ou=Уволенные,dc=mos,dc=test"}, "directory.leavers: must be a list of DNs"),
    ({"leavers": ["ou=Уволенные,dc=other,dc=test"]}, "directory.leavers[0]: 'ou=Уволенные,dc=other,dc=test' is not under"),
    ({"exclude": [f"ou=A,{BASE}", "ou=\\ZZ,dc=mos,dc=test"]}, "directory.exclude[1]: is not a valid DN"),
    ({"exclude": ["no equals sign"]}, "directory.exclude[0]: is not a valid DN"),
    ({"exclude": ["DC=Mos, dc=TEST"]}, "directory.exclude[0]: 'DC=Mos, dc=TEST' is the base DN itself"),
    ({"leavers": [None]}, "directory.leavers[0]: must be a DN like ou=Leavers,dc=mos,dc=test"),
    ({"leavers": [""]}, "directory.leavers[0]: must be a DN"),
]  # fmt: skip


@pytest.mark.parametrize(("directory", "message"), CONFIG_ERRORS)
def test_config_errors_name_the_key(directory: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(directory)
    assert message in str(e.value)


def test_config_keeps_the_dns_as_written_and_passes_them_to_the_core() -> None:
    cfg = config({"exclude": [" ou=Внешние , dc=mos,dc=test "], "leavers": [LEAVERS_OU]})
    assert cfg.directory.exclude == ("ou=Внешние , dc=mos,dc=test",)
    policy = cfg.directory_policy()
    assert policy.exclude == ("ou=Внешние , dc=mos,dc=test",) and policy.leavers == (LEAVERS_OU,)
