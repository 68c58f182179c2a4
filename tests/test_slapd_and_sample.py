"""The sample-directory generator (pure) and the embedded slapd (real OpenLDAP on loopback)."""

from __future__ import annotations

import base64
import re
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ldap3
import pytest

from provisioner.core.dn import format_dn, normalize_dn, parse_dn
from provisioner.embedded import slapd as slapd_module
from provisioner.embedded.slapd import EmbeddedSlapd, SlapdError, SlapdNotInstalled
from provisioner.ldap_common import LDAP_INVALID_CREDENTIALS, LDAP_SIZELIMIT_EXCEEDED
from provisioner.sample import (
    BIG_UNIT,
    FEMALE_FIRST_NAMES,
    MALE_FIRST_NAMES,
    NAME_LONG,
    NAME_WITH_COMMA,
    NAME_WITH_HASH,
    NAME_WITH_PLUS,
    NAME_WITH_QUOTES,
    NAME_WITH_TRAILING_SPACE,
    LdifEntry,
    SampleDirectory,
    entry_uuid,
    female_surname,
    generate_directory,
    write_ldif,
)

PERSON = "inetOrgPerson"
MakeSlapd = Callable[..., EmbeddedSlapd]


def people_of(directory: SampleDirectory) -> list[LdifEntry]:
    broken = {b.dn for b in directory.broken}
    return [e for e in directory.entries if PERSON in e.get("objectClass") and e.dn not in broken]


def parent_of(dn: str) -> str:
    """The comparison key of the parent DN (split by a real RFC 4514 parser: names hold commas)."""
    parent = parse_dn(dn)[1:]
    return normalize_dn(format_dn(parent)) if parent else ""


def parse_ldif(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """A strict little RFC 2849 reader (no folding: the generator never folds), to check what we wrote."""
    out: list[tuple[str, dict[str, list[str]]]] = []
    for record in text.strip("\n").split("\n\n"):
        attrs: dict[str, list[str]] = {}
        for line in record.split("\n"):
            name, sep, rest = line.partition(":")
            assert sep, line
            value = base64.b64decode(rest[2:]).decode() if rest.startswith(":") else rest[1:]
            assert rest.startswith((" ", ": ")), line
            attrs.setdefault(name, []).append(value)
        (dn,) = attrs.pop("dn")
        out.append((dn, attrs))
    return out


# ---------------------------------------------------------------------------------------------------------
# The generator


def test_generator_is_deterministic_for_a_seed() -> None:
    a = generate_directory(400, seed=3)
    assert a.to_ldif() == generate_directory(400, seed=3).to_ldif()
    assert a.to_ldif() != generate_directory(400, seed=4).to_ldif()


def test_exactly_the_requested_people_with_predictable_anchors(sample_directory: SampleDirectory) -> None:
    people = people_of(sample_directory)
    assert len(people) == sample_directory.people == 300
    assert [p.first("entryUUID") for p in people] == [entry_uuid(7, "person", i) for i in range(300)]
    assert all(p.first("uid") and p.first("sn") and p.first("cn") and p.first("displayName") for p in people)


def test_ldif_round_trips(sample_directory: SampleDirectory, tmp_path: Path) -> None:
    path = tmp_path / "dir.ldif"
    written = write_ldif(path, 300, seed=7, big_unit=120)
    text = path.read_text(encoding="utf-8")
    assert text == sample_directory.to_ldif() == written.to_ldif()
    parsed = parse_ldif(text)
    assert [dn for dn, _ in parsed] == [e.dn for e in sample_directory.entries]
    for (_, attrs), entry in zip(parsed, sample_directory.entries, strict=True):
        assert {k: tuple(v) for k, v in attrs.items()} == dict(entry.attributes)
    # Units come before anything below them (slapadd loads in order).
    seen = {normalize_dn(sample_directory.base_dn)}
    for dn, _ in parsed[1:]:
        assert parent_of(dn) in seen, dn
        seen.add(normalize_dn(dn))


def test_names_agree_in_gender(sample_directory: SampleDirectory) -> None:
    big = generate_directory(3000, seed=11)
    female_endings = ("ова", "ева", "ёва", "ина", "ская", "цкая", "ая")
    male_endings = ("ов", "ев", "ёв", "ин", "ский", "цкий", "ой", "ый")
    checked = Counter[str]()
    for person in people_of(sample_directory) + people_of(big):
        surname = person.first("sn") or ""
        given = (person.first("givenName") or "").split()
        assert person.first("displayName") == f"{surname} {' '.join(given)}"
        if len(given) != 2:  # the foreign-born colleague without a patronymic
            assert person.first("uid") == "o'brien"
            continue
        first, patronymic = given
        last_part = surname.split("-")[-1]
        if patronymic.endswith("ич"):
            assert first in MALE_FIRST_NAMES, person.dn
            assert not last_part.endswith(female_endings), person.dn
            checked["male"] += 1
        else:
            assert patronymic.endswith("на"), person.dn
            assert first in FEMALE_FIRST_NAMES, person.dn
            assert not last_part.endswith(male_endings), person.dn
            checked["female"] += 1
    assert checked["male"] > 500 and checked["female"] > 500
    surnames = {p.first("sn") or "" for p in people_of(big)}
    assert any("-" in s for s in surnames) and any("ё" in s for s in surnames)


@pytest.mark.parametrize(
    ("male", "female"),
    [
        ("Иванов", "Иванова"),
        ("Фёдоров", "Фёдорова"),
        ("Вишневский", "Вишневская"),
        ("Трубецкой", "Трубецкая"),
        ("Толстой", "Толстая"),
        ("Ильин", "Ильина"),
        ("Шевченко", "Шевченко"),
        ("Черных", "Черных"),
        ("Римский-Корсаков", "Римская-Корсакова"),
        ("Мамин-Сибиряк", "Мамина-Сибиряк"),
    ],
)
def test_female_surnames(male: str, female: str) -> None:
    assert female_surname(male) == female


def test_tree_has_the_escaping_cases_and_keeps_same_named_units(sample_directory: SampleDirectory) -> None:
    units = {u.name: u for u in sample_directory.units}
    for name in (NAME_WITH_COMMA, NAME_WITH_QUOTES, NAME_WITH_PLUS, NAME_WITH_HASH, NAME_WITH_TRAILING_SPACE):
        assert name in units, name
        # The DN carries the exact name back (trailing space included) through an RFC 4514 parser.
        assert parse_dn(units[name].dn)[0][0].value == name
    assert "\\," in units[NAME_WITH_COMMA].dn and '\\"' in units[NAME_WITH_QUOTES].dn
    assert "\\+" in units[NAME_WITH_PLUS].dn and "ou=\\#" in units[NAME_WITH_HASH].dn
    assert units[NAME_WITH_TRAILING_SPACE].dn.startswith("ou=Сектор архива\\ ,")
    assert len(NAME_LONG) > 120 and NAME_LONG in units
    zhkkh = [u for u in sample_directory.units if u.name == "Отдел ЖКХ"]
    assert len(zhkkh) >= 2 and len({u.parent_dn for u in zhkkh}) == len(zhkkh)
    assert 3 <= sample_directory.max_depth <= 5
    names = {u.name for u in sample_directory.units}
    assert any(n.startswith("Департамент") for n in names) and any(n.startswith("Префектура") for n in names)
    assert any(n.startswith("Управа") for n in names)


def test_the_big_unit_is_big(sample_directory: SampleDirectory) -> None:
    big = sample_directory.big_unit_dn
    assert parse_dn(big)[0][0].value == BIG_UNIT
    direct = Counter(parent_of(p.dn) for p in people_of(sample_directory))
    assert direct[normalize_dn(big)] == 120 == sample_directory.largest_unit
    assert sorted(direct.values())[-2] < 60
    assert generate_directory(2000).largest_unit == 250  # max(250, people // 20)
    assert generate_directory(100).largest_unit == 33  # people // 3 below 500 people


def test_realistic_shape_at_city_scale() -> None:
    directory = generate_directory(25_000)
    assert directory.people == 25_000
    sizes = [u.size for u in directory.units if u.dn != directory.big_unit_dn]
    assert sum(sizes) + directory.largest_unit == 25_000
    assert sum(5 <= s <= 60 for s in sizes) / len(sizes) > 0.8
    assert max(sizes) <= 60 and directory.largest_unit == 1250
    assert 200 <= directory.disabled <= 300
    assert Counter(u.depth for u in directory.units).keys() >= {1, 2, 3, 4, 5}
    uids = [p.first("uid") or "" for p in people_of(directory)]
    assert len(set(uids)) == len(uids)
    assert any(re.fullmatch(r"[a-z.\-]+\d", u) for u in uids)  # the admins' numeric suffix on a clash


def test_login_collisions_a_mapper_must_handle(sample_directory: SampleDirectory) -> None:
    by_uid = {p.first("uid"): p for p in people_of(sample_directory)}
    for uid in ("смирнов.ав", "smirnov.av", "Kuznetsov.AV", "kuznetsov.av", "o'brien", "ivanov ii", "ivanov.ii",
                "пётр@mos", "petrova.an", "petrova.an2"):  # fmt: skip
        assert uid in by_uid, uid
    assert parent_of(by_uid["Kuznetsov.AV"].dn) != parent_of(by_uid["kuznetsov.av"].dn)
    assert {p.uid for p in sample_directory.special} >= {"смирнов.ав", "Kuznetsov.AV", "пётр@mos"}


def test_heads_titles_and_managers(sample_directory: SampleDirectory) -> None:
    people = people_of(sample_directory)
    dns = {normalize_dn(p.dn) for p in people}
    heads = {p.first("manager") for p in people if p.first("manager")}
    assert all(normalize_dn(m) in dns for m in heads if m)
    titles = {p.first("title") for p in people}
    assert {"Начальник отдела", "Начальник управления", "Руководитель департамента", "Глава управы",
            "Префект", "Заведующий сектором"} <= titles  # fmt: skip
    # A head reports to the head of the parent unit; the heads of top-level units have no manager.
    units = {normalize_dn(u.dn): u for u in sample_directory.units}
    for p in people:
        manager = p.first("manager")
        if manager is None:
            assert units[parent_of(p.dn)].depth == 1
        elif normalize_dn(manager) == normalize_dn(p.dn):
            pytest.fail(f"{p.dn} manages themselves")
    disabled = [p for p in people if p.first("employeeType") == "disabled"]
    assert len(disabled) == sample_directory.disabled == 3


def test_broken_entries(sample_directory: SampleDirectory) -> None:
    by_dn = {e.dn: e for e in sample_directory.entries}
    broken = [by_dn[b.dn] for b in sample_directory.broken]
    assert len(broken) == 6
    assert sum(1 for e in broken if e.first("uid") is None) == 1
    assert any(
        (e.first("displayName") or "x").strip() == "" and (e.first("cn") or "x").strip() == "" for e in broken
    )
    assert any(len(e.first("displayName") or "") > 255 for e in broken)
    uuids = Counter(e.first("entryUUID") for e in sample_directory.entries)
    assert [n for n in uuids.values() if n > 1] == [2]
    assert any(parent_of(e.dn) == normalize_dn(sample_directory.base_dn) for e in broken)
    assert not generate_directory(300, seed=7, big_unit=120, broken=False).broken
    service = by_dn[sample_directory.service_dn]
    assert PERSON not in service.get("objectClass") and service.first("userPassword")


# ---------------------------------------------------------------------------------------------------------
# The embedded slapd


def dns_in(output: str) -> list[str]:
    out = []
    for line in output.splitlines():
        if line.startswith("dn:: "):
            out.append(base64.b64decode(line[5:]).decode())
        elif line.startswith("dn: "):
            out.append(line[4:])
    return out


def test_slapd_holds_the_sample(slapd: EmbeddedSlapd, sample_directory: SampleDirectory) -> None:
    result = slapd.ldapsearch(f"(objectClass={PERSON})", ["1.1"], page_size=1000)
    assert result.returncode == 0, result.stderr
    found = {normalize_dn(dn) for dn in dns_in(result.stdout)}
    expected = {normalize_dn(e.dn) for e in sample_directory.entries if PERSON in e.get("objectClass")}
    assert found == expected and len(found) == 306
    unit = next(u for u in sample_directory.units if u.name == NAME_WITH_TRAILING_SPACE)
    under = slapd.ldapsearch("(objectClass=*)", ["ou"], base=unit.dn)
    assert under.returncode == 0 and normalize_dn(dns_in(under.stdout)[0]) == normalize_dn(unit.dn)


def test_slapd_keeps_the_generated_anchors(slapd: EmbeddedSlapd) -> None:
    anchor = entry_uuid(7, "person", 5)
    result = slapd.ldapsearch(f"(entryUUID={anchor})", ["entryUUID", "uid"])
    assert result.returncode == 0 and anchor in result.stdout
    dupes = slapd.ldapsearch(f"(entryUUID={entry_uuid(7, 'broken', 3)})", ["1.1"])
    assert len(dns_in(dupes.stdout)) == 2  # slapadd accepts a duplicate entryUUID


def test_service_account_reads_everything_paged_but_unpaged_stops_at_500(
    make_slapd: MakeSlapd,
) -> None:
    server = make_slapd(700)
    paged = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"], page_size=1000)
    assert paged.returncode == 0, paged.stderr
    assert len(dns_in(paged.stdout)) == 706
    small_pages = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"], page_size=100)
    assert small_pages.returncode == 0 and len(dns_in(small_pages.stdout)) == 706
    unpaged = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"])
    assert unpaged.returncode == LDAP_SIZELIMIT_EXCEEDED
    assert len(dns_in(unpaged.stdout)) == 500 and "Size limit exceeded" in unpaged.stderr


def test_capped_service_account_stops_paged_reads_early(make_slapd: MakeSlapd) -> None:
    server = make_slapd(700, paged_total_unlimited_for_service=False)
    paged = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"], page_size=100)
    assert paged.returncode == LDAP_SIZELIMIT_EXCEEDED
    assert len(dns_in(paged.stdout)) == 500
    # The rootdn is never limited: the data is all there.
    root = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"], as_root=True)
    assert root.returncode == 0 and len(dns_in(root.stdout)) == 706


def test_ldap3_paged_read_as_the_service_account(make_slapd: MakeSlapd) -> None:
    server = make_slapd(700)
    conn = ldap3.Connection(
        ldap3.Server(server.uri, get_info=ldap3.NONE),
        user=server.service_dn,
        password=server.service_password,
        auto_bind=True,
    )
    try:
        entries = conn.extend.standard.paged_search(
            server.suffix,
            f"(objectClass={PERSON})",
            attributes=["entryUUID"],
            paged_size=1000,
            generator=False,
        )
        assert len([e for e in entries if e["type"] == "searchResEntry"]) == 706
    finally:
        conn.unbind()


def test_anonymous_and_wrong_password_see_nothing(slapd: EmbeddedSlapd) -> None:
    anon = ldap3.Connection(ldap3.Server(slapd.uri, get_info=ldap3.NONE), auto_bind=True)
    try:
        anon.search(slapd.suffix, f"(objectClass={PERSON})", attributes=["uid"])
        assert anon.entries == []
    finally:
        anon.unbind()
    wrong = ldap3.Connection(
        ldap3.Server(slapd.uri, get_info=ldap3.NONE), user=slapd.service_dn, password="wrong"
    )
    assert not wrong.bind() and wrong.result["result"] == LDAP_INVALID_CREDENTIALS


def test_entry_uuid_survives_rename_and_move(make_slapd: MakeSlapd) -> None:
    directory = generate_directory(60, seed=5)
    server = make_slapd(directory=directory)
    person = people_of(directory)[10]
    anchor = person.first("entryUUID")
    target = next(u for u in directory.units if u.name == NAME_WITH_COMMA)
    server.modify(
        f"dn: {person.dn}\nchangetype: modrdn\nnewrdn: uid=renamed.login\ndeleteoldrdn: 1\n"
        f"newsuperior: {target.dn}\n"
    )
    result = server.ldapsearch(f"(entryUUID={anchor})", ["uid", "entryUUID"])
    assert result.returncode == 0
    (dn,) = dns_in(result.stdout)
    assert normalize_dn(dn) == normalize_dn(f"uid=renamed.login,{target.dn}")
    assert "uid: renamed.login" in result.stdout and f"entryUUID: {anchor}" in result.stdout


def test_live_add_modify_delete_and_relaxed_anchor(make_slapd: MakeSlapd) -> None:
    server = make_slapd(20, seed=2, broken=False)
    anchor = entry_uuid(2, "person", 9999)
    server.modify(
        f"dn: uid=novikova.ea,{server.suffix}\nchangetype: add\nobjectClass: inetOrgPerson\n"
        f"uid: novikova.ea\ncn: Новикова Елена Андреевна\nsn: Новикова\nentryUUID: {anchor}\n",
        relax=True,
    )
    server.modify(
        f"dn: uid=novikova.ea,{server.suffix}\nchangetype: modify\nreplace: title\ntitle: Консультант\n"
    )
    found = server.ldapsearch(f"(entryUUID={anchor})", ["title"])
    assert "title:: " in found.stdout  # Cyrillic comes back base64-encoded
    server.modify(f"dn: uid=novikova.ea,{server.suffix}\nchangetype: delete\n")
    assert dns_in(server.ldapsearch(f"(entryUUID={anchor})", ["1.1"]).stdout) == []
    with pytest.raises(SlapdError, match="ldapmodify .* failed"):
        server.modify(f"dn: uid=nobody,{server.suffix}\nchangetype: delete\n")


def test_kill_and_restart_keep_the_data(make_slapd: MakeSlapd) -> None:
    server = make_slapd(30, seed=3)
    server.kill()
    assert not server.running
    server.start()
    result = server.ldapsearch(f"(entryUUID={entry_uuid(3, 'person', 0)})", ["1.1"])
    assert len(dns_in(result.stdout)) == 1
    with pytest.raises(SlapdError, match="load_ldif needs slapd stopped"):
        server.load_ldif("dn: ou=x,dc=mos,dc=test\nobjectClass: organizationalUnit\nou: x\n")


def test_service_account_is_created_when_the_data_has_none(make_slapd: MakeSlapd) -> None:
    server = make_slapd(0)  # an empty database: start() adds the suffix and the service entry
    assert server.ldapsearch("(objectClass=*)", ["1.1"]).returncode == 0
    assert server.service_password_file.read_text() == server.service_password
    assert oct(server.service_password_file.stat().st_mode & 0o777) == "0o600"


def test_start_reports_a_busy_port(make_slapd: MakeSlapd) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SlapdError, match=f"port {port} .* in use"):
            make_slapd(0, port=port)


def test_missing_slapd_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slapd_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(slapd_module, "SEARCH_DIRS", ())
    with pytest.raises(SlapdNotInstalled, match=r"slapd not found: apt-get install slapd ldap-utils"):
        EmbeddedSlapd(tmp_path).start()


def test_loading_twice_needs_replace(make_slapd: MakeSlapd) -> None:
    directory = generate_directory(20, seed=4, broken=False)
    server = make_slapd(directory=directory, start=False)
    with pytest.raises(SlapdError, match="replace=True"):
        server.load_ldif(directory.to_ldif())
    server.load_ldif(directory.to_ldif(), replace=True)
    server.start()
    found = server.ldapsearch(f"(objectClass={PERSON})", ["1.1"])
    assert found.returncode == 0 and len(dns_in(found.stdout)) == 20


@pytest.mark.slapd
def test_a_slapd_that_dies_on_start_shows_its_log(tmp_path: Path) -> None:
    server = EmbeddedSlapd(tmp_path, sizelimit=-7)  # slapd refuses the limits line and exits
    with pytest.raises(SlapdError, match=r"(?s)slapd exited with 1 while starting.*size\.soft=-7"):
        server.start()
    assert not server.running
