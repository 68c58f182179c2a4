"""The LDAP reader against a real slapd: paging past the size limit, truncation, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provisioner import exitcodes
from provisioner.core.directory import interpret
from provisioner.core.model import ROOT_UNIT
from provisioner.ldap_reader import (
    DirectoryAuthError,
    DirectoryConfigError,
    DirectoryReader,
    DirectoryUnreachable,
    login_filter,
    read_directory_sync,
)
from tests.helpers import config, write_config

pytestmark = pytest.mark.slapd


CLIENTS = pytest.mark.parametrize("client", ["python-ldap", "ldap3"])


@CLIENTS
def test_reads_everyone_past_sizelimit_500(make_slapd, tmp_path, client):
    server = make_slapd(people=700, seed=3, big_unit=260)
    cfg = config(tmp_path, server, directory={"client": client})
    result = read_directory_sync(cfg.directory)
    assert result.complete, result.stop_reason
    snap = interpret(result, cfg.directory_policy())
    # 700 generated people plus the broken entries, all read although slapd's sizelimit is 500.
    assert len(result.people) >= 700
    assert len(snap.people) >= 700 - 5
    assert snap.complete


@CLIENTS
def test_truncated_read_is_reported_not_hidden(make_slapd, tmp_path, client):
    server = make_slapd(people=700, seed=3, paged_total_unlimited_for_service=False)
    cfg = config(tmp_path, server, directory={"client": client})
    result = read_directory_sync(cfg.directory)
    assert not result.complete
    assert "size limit" in (result.stop_reason or "")
    assert len(result.people) < 700


@CLIENTS
def test_interpretation_of_sample(slapd, sample_directory, tmp_path, client):
    cfg = config(tmp_path, slapd, directory={"client": client})
    result = read_directory_sync(cfg.directory)
    snap = interpret(result, cfg.directory_policy())
    assert snap.complete
    assert len(snap.people) + len(snap.skipped) == len(result.people)
    assert len(snap.people) >= sample_directory.people
    by_login = {p.login: p for p in snap.people}
    # Cyrillic unit names and escaped commas survive into the department path.
    assert any("Отдел учёта, отчётности и контроля" in (p.department or "") for p in snap.people)
    # Units are keyed on the OU's entryUUID, so a rename keeps its rooms.
    assert all(u.key.startswith("ou:") for u in snap.units)
    # Broken entries are skipped with their DN and a reason.
    reasons = " ".join(s.reason for s in snap.skipped)
    assert "duplicate entryUUID" in reasons and "login" in reasons
    assert all(s.dn for s in snap.skipped)
    assert len(snap.disabled) == sample_directory.disabled
    # The entry directly under the base has no unit: it sits in the organisation's own room.
    assert any(p.unit_key == ROOT_UNIT for p in snap.people)
    # Logins are kept as written; the colliding pair is resolved later by the identity mapping.
    assert "smirnov.av" in by_login and "смирнов.ав" in by_login


def test_login_filter_escapes_values(tmp_path, slapd):
    cfg = config(tmp_path, slapd)
    flt = login_filter(cfg.directory, "a*)(uid=*")
    assert "\\2a" in flt and "\\28" in flt and "\\29" in flt
    with DirectoryReader(cfg.directory) as reader:
        found, reason = reader.search_all(flt, ["uid"])
    assert found == [] and reason is None


@CLIENTS
def test_wrong_password(tmp_path, slapd, client):
    cfg = config(tmp_path, slapd)
    path = write_config(tmp_path, slapd, directory={"client": client})
    (tmp_path / "ldap_pw").write_text("wrong")
    from provisioner.config import load_config

    with pytest.raises(DirectoryAuthError, match="wrong DN or password"):
        read_directory_sync(load_config(path).directory)
    assert cfg


@CLIENTS
def test_unreachable(tmp_path, slapd, client):
    cfg = config(
        tmp_path, slapd, directory={"uri": "ldap://127.0.0.1:1", "timeout_seconds": 2, "client": client}
    )
    with pytest.raises(DirectoryUnreachable, match="cannot reach"):
        read_directory_sync(cfg.directory)


@CLIENTS
def test_wrong_base_dn(tmp_path, slapd, client):
    cfg = config(tmp_path, slapd, directory={"base_dn": "ou=Нет такого,dc=mos,dc=test", "client": client})
    with pytest.raises(DirectoryConfigError, match="does not exist"):
        read_directory_sync(cfg.directory)


@CLIENTS
def test_filter_matching_nothing(tmp_path, slapd, client):
    cfg = config(tmp_path, slapd, directory={"filter": "(objectClass=posixAccount)", "client": client})
    with pytest.raises(DirectoryConfigError, match="matched no entries"):
        read_directory_sync(cfg.directory)


@pytest.mark.parametrize(
    ("override", "code", "words"),
    [
        ({"uri": "ldap://127.0.0.1:1", "timeout_seconds": 2}, exitcodes.DIRECTORY, "cannot reach"),
        ({"base_dn": "dc=nope,dc=test"}, exitcodes.DIRECTORY, "does not exist"),
        ({"filter": "(objectClass=posixAccount)"}, exitcodes.DIRECTORY, "matched no entries"),
    ],
)
def test_cli_bad_input_one_line_and_exit_code(tmp_path, slapd, override, code, words):
    path = write_config(tmp_path, slapd, directory=override)
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), "directory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_directory_and_layout(tmp_path, slapd):
    import json

    path = write_config(tmp_path, slapd)
    out = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), "directory"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "read         : complete" in out.stdout and "skipped" in out.stdout
    lay = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "--config", str(path), "layout", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lay.returncode == 0, lay.stderr
    data = json.loads(lay.stdout)
    assert all(r["size"] + 1 <= 50 for r in data["rooms"])
    assert any(r["shards"] > 1 for r in data["rooms"])  # the 120-person unit is split
    assert any("Отдел" in r["name"] for r in data["rooms"])
