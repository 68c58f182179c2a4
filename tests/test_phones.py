"""Phone numbers (pure): how a directory value splits into numbers and extensions, and how a person's
values are joined for the profile and the search snapshot."""

from __future__ import annotations

import pytest

from provisioner.core.phones import MAX_JOINED, Phone, join_values, numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+7 (495) 149-03-75", [("74951490375", "")]),
        ("+7 (495) 149-03-75 ext. 25139", [("74951490375", "25139")]),
        ("+7 (495) 149-03-75 EXT 25139", [("74951490375", "25139")]),
        ("+7 (495) 149-03-75 extension 25139", [("74951490375", "25139")]),
        ("8 (495) 149-03-75 доб. 123", [("84951490375", "123")]),
        ("8 (495) 149-03-75 Доб 123", [("84951490375", "123")]),
        ("8 (495) 149-03-75 добавочный 123", [("84951490375", "123")]),
        ("8 (495) 149-03-75 (доб. 123)", [("84951490375", "123")]),
        ("8 (495) 149-03-75, доб. 123", [("84951490375", "123")]),  # the extension after a comma
        ("+7 495 123-45-67 вн. 4512", [("74951234567", "4512")]),
        ("+7 495 123-45-67 внутр. 4512", [("74951234567", "4512")]),
        ("+7 495 123-45-67 доп. 4512", [("74951234567", "4512")]),
        ("+7 495 123-45-67 x4512", [("74951234567", "4512")]),
        ("+74951234567x4512", [("74951234567", "4512")]),
        ("+7 495 123-45-67 #4512", [("74951234567", "4512")]),
        ("+7 495 123-45-67 доб.: 4512", [("74951234567", "4512")]),
        ("+7 495 111-22-33, +7 916 555-66-77", [("74951112233", ""), ("79165556677", "")]),
        ("+7 495 111-22-33; 8-916-555-66-77", [("74951112233", ""), ("89165556677", "")]),
        ("+7 495 111-22-33 / +7 495 111-22-44 доб. 5", [("74951112233", ""), ("74951112244", "5")]),
        ("+7 495 123-45-67 (приёмная)", [("74951234567", "")]),  # words that are no marker are not digits
        ("нет", []),
        ("", []),
        ("Добров 1234", [("1234", "")]),  # "Доб" inside a word is no marker
        ("+44 20 7946 0958", [("442079460958", "")]),
    ],
)
def test_numbers_in_a_value(value: str, expected: list[tuple[str, str]]) -> None:
    assert [(p.main, p.extension) for p in numbers(value)] == expected


@pytest.mark.parametrize(
    ("main", "forms"),
    [
        ("74951490375", ("74951490375", "4951490375")),  # +7: trunk code dropped to compare
        ("84951490375", ("84951490375", "4951490375")),  # 8: the same number
        ("4951490375", ("4951490375",)),
        ("94951490375", ("94951490375",)),  # eleven digits, but no Russian trunk code
        ("442079460958", ("442079460958",)),
    ],
)
def test_forms_compare_russian_numbers_without_the_trunk_code(main: str, forms: tuple[str, ...]) -> None:
    assert Phone(main).forms == forms


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["+7 495 111-22-33"], "+7 495 111-22-33"),  # one number: exactly as before
        (["  +7 495   111-22-33 "], "+7 495 111-22-33"),
        (["+7 495 111-22-33", "+7 916 555-66-77"], "+7 495 111-22-33, +7 916 555-66-77"),
        (["+7 495 111-22-33", "8 (495) 111-22-33"], "+7 495 111-22-33"),  # the same number twice
        (["+7 495 111-22-33", "+7 495 111-22-33 доб. 7"], "+7 495 111-22-33, +7 495 111-22-33 доб. 7"),
        (["+7 495 111-22-33; +7 916 555-66-77", "8 916 555 66 77"], "+7 495 111-22-33; +7 916 555-66-77"),
        (["", "   "], None),
        ([], None),
        (["1" * 65, "+7 495 111-22-33"], "+7 495 111-22-33"),  # over 64 characters: not a number
    ],
)
def test_join_values(values: list[str], expected: str | None) -> None:
    assert join_values(values) == expected


def test_joined_numbers_stop_before_the_limit_and_the_first_always_stays() -> None:
    values = [f"+7 495 {i:03d}-00-00 доб. {i:05d}" for i in range(40)]
    joined = join_values(values)
    assert joined is not None and len(joined) <= MAX_JOINED
    assert joined.startswith(values[0] + ", ")
    kept = numbers(joined)
    assert 5 < len(kept) < 40
    assert [(p.main, p.extension) for p in kept] == [
        (f"7495{i:03d}0000", f"{i:05d}") for i in range(len(kept))
    ]
