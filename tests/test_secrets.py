"""The one secret reader: file or environment, stripped, never empty, never shown in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.matrix.secrets import SecretError, read_secret


def test_file_wins_and_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("syt_token\n", encoding="utf-8")
    assert read_secret(file=tmp_path / "t", env="X", environ={"X": "other"}) == "syt_token"


def test_environment_when_no_file(tmp_path: Path) -> None:
    assert read_secret(env="X", environ={"X": " pw "}) == "pw"


@pytest.mark.parametrize(
    ("content", "source", "message"),
    [
        (None, "file", "cannot read"),
        ("  \n", "file", "is empty"),
    ],
)
def test_unusable_file_names_the_file(tmp_path: Path, content: str | None, source: str, message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SecretError, match=message) as err:
        read_secret(file=path)
    assert err.value.source == source and str(path) in str(err.value)


def test_unset_or_blank_variable_names_the_variable() -> None:
    for environ in ({}, {"CIVMATRIX_PW": "   "}):
        with pytest.raises(SecretError, match="CIVMATRIX_PW is not set") as err:
            read_secret(env="CIVMATRIX_PW", environ=environ)
        assert err.value.source == "env"


def test_nothing_named_is_an_error() -> None:
    with pytest.raises(SecretError):
        read_secret()
