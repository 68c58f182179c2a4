"""Interpreting entries (pure): departments from an attribute, adversarial names and spellings."""

from __future__ import annotations

from provisioner.config import parse_config
from provisioner.core.directory import ReadResult, interpret
from provisioner.core.identity import clean_text
from provisioner.core.model import RawEntry

CFG = parse_config(
    {
        "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
        "directory": {
            "uri": "ldap://127.0.0.1:1",
            "bind_dn": "cn=x",
            "bind_password_env": "HOME",
            "base_dn": "dc=corp,dc=test",
            "preset": "openldap",
            "department_from": "attribute",
            "attributes": {"anchor": "employeeNumber", "department": "departmentNumber"},
        },
    }
).directory_policy()


def entry(n: int, department: str, name: str | None = None) -> RawEntry:
    attrs = {
        "employeenumber": (f"E{n}",),
        "uid": (f"user{n}",),
        "displayname": (name or f"Person {n}",),
        "departmentnumber": (department,),
    }
    return RawEntry(f"cn=u{n},cn=Users,dc=corp,dc=test", attrs)


def read(*entries: RawEntry):  # type: ignore[no-untyped-def]
    return interpret(ReadResult(entries, (), frozenset(), True, None), CFG, skip_log=False)


def unit_of(snap, n: int):  # type: ignore[no-untyped-def]
    by_key = {u.key: u for u in snap.units}
    person = next(p for p in snap.people if p.anchor == f"E{n}")
    return by_key[person.unit_key]


def test_a_slash_inside_a_name_is_not_a_level():
    snap = read(entry(1, "Префектура ЮАО / Отдел ЖКХ"), entry(2, "Префектура ЮАО/Отдел ЖКХ"))
    assert unit_of(snap, 1).path == ("Префектура ЮАО", "Отдел ЖКХ")
    assert unit_of(snap, 2).path == ("Префектура ЮАО/Отдел ЖКХ",)
    assert unit_of(snap, 1).key != unit_of(snap, 2).key


def test_one_odd_spelling_does_not_rename_a_department():
    people = [entry(i, "Отдел кадров") for i in range(5)] + [entry(9, "отдел  КАДРОВ")]
    snap = read(*people)
    assert {unit_of(snap, i).key for i in (0, 9)} == {unit_of(snap, 0).key}
    assert unit_of(snap, 9).path == ("Отдел кадров",)


def test_unicode_forms_of_one_name_are_one_department():
    nfc, nfd = "Отдел районной политики", "Отдел раи\u0306онной политики"
    snap = read(entry(1, nfc), entry(2, nfd), entry(3, nfc))
    assert unit_of(snap, 1).key == unit_of(snap, 2).key and unit_of(snap, 2).path == (nfc,)


def test_joiners_stay_in_names_direction_overrides_do_not():
    assert clean_text("👩\u200d💻 Анна") == "👩\u200d💻 Анна"
    assert clean_text("محمد\u200cرضا") == "محمد\u200cرضا"
    assert clean_text("\u202eevil\u202c") == "evil"
    assert clean_text("Ан\u200bна\u00ad") == "Анна"


def test_an_over_long_department_keeps_its_people_in_it():
    snap = read(entry(1, "Префектура ЮАО / " + "Д" * 300), entry(2, "Префектура ЮАО"))
    unit = unit_of(snap, 1)
    assert unit.path[0] == "Префектура ЮАО" and unit.path[1] == "Д" * 255
    assert unit.key != unit_of(snap, 2).key and not snap.skipped


def test_every_desk_and_mobile_number_is_kept_in_order_once() -> None:
    """A second number is a second value of telephoneNumber, or the mobile attribute; none is dropped."""
    attrs = {
        **entry(1, "Отдел").attrs,
        "telephonenumber": ("+7 (495) 149-03-75 ext. 25139", "8 (499) 222-33-44"),
        "mobile": ("+7 916 555-66-77", "8 495 149 03 75 доб. 25139"),  # the last: the desk number again
    }
    one = {**entry(2, "Отдел").attrs, "telephonenumber": ("+7 495 111-22-33",)}
    only_mobile = {**entry(3, "Отдел").attrs, "mobile": ("+7 916 000-00-03",)}
    snap = read(
        *(
            RawEntry(f"cn=u{n},cn=Users,dc=corp,dc=test", a)
            for n, a in ((1, attrs), (2, one), (3, only_mobile))
        )
    )
    phones = {p.anchor: p.phone for p in snap.people}
    assert phones == {
        "E1": "+7 (495) 149-03-75 ext. 25139, 8 (499) 222-33-44, +7 916 555-66-77",
        "E2": "+7 495 111-22-33",  # one number: the string it always was
        "E3": "+7 916 000-00-03",
    }


def test_mobile_is_read_only_when_mapped() -> None:
    cfg = parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
            "directory": {
                "uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME",
                "base_dn": "dc=corp,dc=test", "department_from": "attribute",
                "attributes": {"anchor": "employeeNumber", "department": "departmentNumber", "mobile": None},
            },
        }
    ).directory_policy()  # fmt: skip
    attrs = {**entry(1, "Отдел").attrs, "telephonenumber": ("+7 495 111-22-33",), "mobile": ("+7 916 1",)}
    raw = RawEntry("cn=u1,cn=Users,dc=corp,dc=test", attrs)
    snap = interpret(ReadResult((raw,), (), frozenset(), True, None), cfg, skip_log=False)
    assert [p.phone for p in snap.people] == ["+7 495 111-22-33"]
