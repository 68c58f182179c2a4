"""Units by the names people see: case and ё do not matter, a unique start is enough, ambiguity lists the units."""

from __future__ import annotations

import pytest

from bridge.events.units import (
    Ambiguous,
    Found,
    NotFound,
    SpaceSeen,
    Unit,
    build_units,
    fold,
    is_here,
    match_unit,
)

MFC = Unit("ou:f1e977ad-0000", ("ГБУ МФЦ города Москвы",))
ARBAT = Unit("ou:a1", ("Префектура ЦАО", "Управа района Арбат"))
ARBAT_ZHKH = Unit("ou:a2", ("Префектура ЦАО", "Управа района Арбат", "Отдел ЖКХ"))
TVER = Unit("ou:t1", ("Префектура ЦАО", "Управа Тверского района"))
TVER_ZHKH = Unit("ou:t2", ("Префектура ЦАО", "Управа Тверского района", "Отдел ЖКХ"))
FIN = Unit("ou:fin", ("Департамент финансов",))
FIN_TAX = Unit("ou:tax", ("Департамент финансов", "Налоговое управление"))
TREE = [MFC, ARBAT, TVER, ARBAT_ZHKH, TVER_ZHKH, FIN, FIN_TAX, Unit("ou:prefect", ("Префектура ЦАО",))]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ГБУ МФЦ города Москвы", MFC),  # the name as shown
        ("гбу мфц города москвы", MFC),  # case
        ("«ГБУ  МФЦ города Москвы»", MFC),  # quotes and doubled spaces
        ("ГБУ МФЦ", MFC),  # a unique start
        ("ou:f1e977ad-0000", MFC),  # the internal key still works for whoever has it
        ("Департамент финансов", FIN),  # exact beats the prefix that its sub-unit also has
        ("Департамент финансов / Налоговое", FIN_TAX),  # a path, the last part cut short
        ("департамент финансов/налоговое управление", FIN_TAX),  # "/" without spaces
        ("Управа района Арбат / Отдел ЖКХ", ARBAT_ZHKH),  # a trailing part of the path
        ("Префектура ЦАО » Управа района Арбат", ARBAT),  # breadcrumb separator
        ("налоговое", FIN_TAX),  # the start of a sub-unit's own name
    ],
)
def test_found(typed: str, expected: Unit) -> None:
    assert match_unit(typed, TREE) == Found(expected)


def test_yo_is_e() -> None:
    tree = [Unit("ou:x", ("Отдел учёта",))]
    assert match_unit("отдел учета", tree) == Found(tree[0])
    assert fold("Ёлка") == fold("елка")


def test_same_name_in_two_councils_is_ambiguous_with_both_paths() -> None:
    m = match_unit("Отдел ЖКХ", TREE)
    assert isinstance(m, Ambiguous) and m.candidates == (ARBAT_ZHKH, TVER_ZHKH) and m.more == 0
    assert [c.label for c in m.candidates] == [
        "Префектура ЦАО / Управа района Арбат / Отдел ЖКХ",
        "Префектура ЦАО / Управа Тверского района / Отдел ЖКХ",
    ]
    assert isinstance(match_unit("Управа", TREE), Ambiguous)  # a start shared by two units


def test_not_found_suggests_units_with_a_word_of_the_query() -> None:
    m = match_unit("МФЦ Москвы", TREE)
    assert isinstance(m, NotFound) and m.suggestions == (MFC,)
    assert match_unit("   ", TREE) == NotFound("   ", ())


def test_here_words() -> None:
    assert is_here("here") and is_here("Здесь") and is_here("тут") and not is_here("Управа")


def test_build_units_takes_the_path_from_the_topic_else_the_chain_of_names() -> None:
    spaces = [
        SpaceSeen("root", "Правительство Москвы", "Правительство Москвы", None),
        SpaceSeen("ou:fin", "Департамент финансов", "Департамент финансов", "root"),
        # A long name shortened in the space name; the topic keeps the whole path.
        SpaceSeen(
            "ou:tax",
            "Управление налоговой полит…",
            "Департамент финансов / Управление налоговой политики",
            "ou:fin",
        ),
        SpaceSeen("ou:notopic", "Сектор", "", "ou:fin"),
    ]
    units = {u.key: u for u in build_units(spaces)}
    assert units["ou:tax"].path == ("Департамент финансов", "Управление налоговой политики")
    assert units["ou:notopic"].label == "Правительство Москвы / Департамент финансов / Сектор"
    assert match_unit("управление налоговой", list(units.values())) == Found(units["ou:tax"])
