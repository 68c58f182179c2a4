"""RFC 4514 parsing with the cases real directories contain."""

import pytest

from provisioner.core.dn import DNError, format_dn, normalize_dn, parse_dn, relative_to


@pytest.mark.parametrize(
    ("dn", "expected"),
    [
        (
            "uid=a,ou=Отдел ЖКХ,dc=mos,dc=test",
            [("uid", "a"), ("ou", "Отдел ЖКХ"), ("dc", "mos"), ("dc", "test")],
        ),
        (
            r"ou=Отдел учёта\, отчётности и контроля,dc=x",
            [("ou", "Отдел учёта, отчётности и контроля"), ("dc", "x")],
        ),
        (r"ou=Отдел \"Мои документы\",dc=x", [("ou", 'Отдел "Мои документы"'), ("dc", "x")]),
        (r"ou=\D0\9E\D1\82\D0\B4\D0\B5\D0\BB,dc=x", [("ou", "Отдел"), ("dc", "x")]),
        (r"ou=\#1 sector,dc=x", [("ou", "#1 sector"), ("dc", "x")]),
        (r"ou=trailing\ ,dc=x", [("ou", "trailing "), ("dc", "x")]),
        (r"ou=A\+B,dc=x", [("ou", "A+B"), ("dc", "x")]),
        ('ou="Quoted, old style",dc=x', [("ou", "Quoted, old style"), ("dc", "x")]),
        ("OU = spaced , DC=x", [("ou", "spaced"), ("dc", "x")]),
    ],
)
def test_parse_single_valued(dn, expected):
    parsed = parse_dn(dn)
    assert [(r[0].type, r[0].value) for r in parsed] == expected


def test_multi_valued_rdn():
    parsed = parse_dn("cn=Иванов+uid=ivanov,ou=x,dc=y")
    assert [(a.type, a.value) for a in parsed[0]] == [("cn", "Иванов"), ("uid", "ivanov")]
    assert len(parsed) == 3


@pytest.mark.parametrize("bad", ["", "   ", "novalue", "ou=x,", "ou=x\\", r"ou=\zz,dc=x", 'ou="open,dc=x'])
def test_bad_dns_raise(bad):
    with pytest.raises(DNError):
        parse_dn(bad)


def test_roundtrip_and_normalize():
    dn = r"ou=Отдел учёта\, отчётности,ou=\#A\+B \"q\",dc=mos"
    assert parse_dn(format_dn(parse_dn(dn))) == parse_dn(dn)
    assert normalize_dn("OU=Отдел  ЖКХ,DC=Mos") == normalize_dn("ou=отдел жкх,dc=mos")


def test_relative_to():
    base = parse_dn("dc=mos,dc=test")
    rel = relative_to(parse_dn("uid=a,ou=B,DC=MOS,dc=test"), base)
    assert rel is not None and [r[0].value for r in rel] == ["a", "B"]
    assert relative_to(parse_dn("uid=a,dc=other,dc=test"), base) is None
