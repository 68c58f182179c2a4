"""Localpart mapping: table-driven cases and properties (stable, one-to-one)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.core.identity import assign_localparts, base_localpart, display_name, is_valid_localpart

GRAMMAR = re.compile(r"^[a-z0-9._\-]+$")


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ("ivanov.ii", "ivanov.ii"),
        ("Kuznetsov.AV", "kuznetsov.av"),
        ("смирнов.ав", "smirnov.av"),
        ("Щукина.ЮЁ", "shchukina.yue"),
        ("o'brien", "o_brien"),
        ("ivanov ii", "ivanov_ii"),
        ("пётр@mos", "petr_mos"),
        ("José.Müller", "jose.muller"),
        ("  padded  ", "padded"),
        ("a/b+c=d", "a_b_c_d"),
    ],
)
def test_base_localpart(login, expected):
    assert base_localpart(login) == expected


def test_unmappable_login_gets_hash():
    lp = base_localpart("☃☃☃")
    assert lp.startswith("user-") and is_valid_localpart(lp)
    assert base_localpart("☃☃☃") == lp


def test_long_login_capped():
    lp = base_localpart("x" * 300)
    assert len(lp) <= 64 and is_valid_localpart(lp)


def test_collision_exact_login_wins_and_others_get_stable_hash():
    got = assign_localparts([("a2", "Ivanov"), ("a1", "ivanov"), ("a3", "иванов")])
    assert got["a1"] == "ivanov"
    assert got["a2"].startswith("ivanov-") and got["a3"].startswith("ivanov-")
    assert len(set(got.values())) == 3


def test_previous_assignment_wins_over_newcomer():
    first = assign_localparts([("a3", "иванов")])
    assert first["a3"] == "ivanov"
    second = assign_localparts([("a3", "иванов"), ("a1", "ivanov")], previous=first)
    assert second["a3"] == "ivanov"
    assert second["a1"] != "ivanov"


def test_login_rename_keeps_id():
    first = assign_localparts([("a1", "petrova.an")])
    renamed = assign_localparts([("a1", "sidorova.an")], previous=first)
    assert renamed["a1"] == "petrova.an"


def test_taken_localparts_avoided():
    got = assign_localparts([("a1", "admin")], taken={"admin"})
    assert got["a1"] != "admin" and got["a1"].startswith("admin-")


logins = st.text(alphabet=st.sampled_from(list("abcxyzАБВЖЩЁ.-_ '@12")), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.uuids().map(str), logins), min_size=1, max_size=40, unique_by=lambda t: t[0]))
def test_one_to_one_and_valid(people):
    got = assign_localparts(people)
    assert len(got) == len(people)
    assert len(set(got.values())) == len(people)
    assert all(GRAMMAR.match(lp) and len(lp) <= 64 for lp in got.values())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.uuids().map(str), logins), min_size=1, max_size=30, unique_by=lambda t: t[0]),
    st.lists(st.tuples(st.uuids().map(str), logins), max_size=10, unique_by=lambda t: t[0]),
    st.randoms(),
)
def test_stable_whoever_joins_later(existing, newcomers, rnd):
    first = assign_localparts(existing)
    everyone = existing + [n for n in newcomers if n[0] not in first]
    rnd.shuffle(everyone)
    second = assign_localparts(everyone, previous=first)
    assert all(second[a] == first[a] for a in first)
    assert len(set(second.values())) == len(second)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("Иванов  Иван\tИванович", None, None, None), "Иванов Иван Иванович"),
        ((None, "Петров П.", None, None), "Петров П."),
        ((None, None, "Сидоров", "Семён Семёнович"), "Сидоров Семён Семёнович"),
        (("   ", "Фолбэк", None, None), "Фолбэк"),
        (("x" * 300, None, None, None), None),
        (("...", None, None, None), None),
    ],
)
def test_display_name(args, expected):
    assert display_name(*args)[0] == expected
