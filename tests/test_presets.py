"""Each preset's defaults come from one table (``provisioner.config.PRESETS``): the docs state the same values,
`provisioner directory` prints what is in effect and where it came from, and the watch detects changes the way
the table says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner import exitcodes
from provisioner.config import (
    PRESETS,
    SHOWN_SETTINGS,
    effective_settings,
    load_config,
    parse_config,
    preset_default,
)
from provisioner.core.directory import interpret
from provisioner.ldap_reader import read_directory_sync
from provisioner.watch import make_detector
from tests.helpers import write_config

ROOT = Path(__file__).parent.parent
# Where each shown setting sits in config/example.yaml (anchor is under attributes).
EXAMPLE_KEY = {name: name for name in SHOWN_SETTINGS}


def _example_comment(key: str) -> str:
    """The comment of ``key`` in config/example.yaml's directory section, continuation lines included."""
    lines = (ROOT / "config" / "example.yaml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^\s+{key}:", ln))
    text = lines[start].split("#", 1)[1]
    for ln in lines[start + 1 :]:
        if not ln.lstrip().startswith("#"):
            break
        text += " " + ln.split("#", 1)[1].strip()
    return " ".join(text.split())


def _shown(value: str | None) -> str:
    return "none" if value is None else value


@pytest.mark.parametrize("name", SHOWN_SETTINGS)
def test_example_config_states_each_presets_default(name: str) -> None:
    comment = _example_comment(EXAMPLE_KEY[name])
    for preset in PRESETS:
        assert f"{preset}: {_shown(preset_default(preset, name))}" in comment, (name, preset, comment)


def test_readme_table_of_preset_defaults_is_the_code_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    presets = list(PRESETS)
    header = "| setting | " + " | ".join(f"`{p}`" for p in presets) + " |"
    assert header in readme
    for name in SHOWN_SETTINGS:
        cells = " | ".join(f"`{_shown(preset_default(p, name))}`" for p in presets)
        assert f"| `{name}` | {cells} |" in readme, name


def _cfg(**directory: object):  # type: ignore[no-untyped-def]
    return parse_config({
        "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
        "directory": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_env": "HOME",
                      "base_dn": "dc=x", **directory},
    })  # fmt: skip


@pytest.mark.parametrize("preset", list(PRESETS))
def test_unset_keys_take_the_table_and_the_watch_detects_as_it_says(preset: str) -> None:
    cfg = _cfg(preset=preset)
    settings = {name: (value, origin) for name, value, origin in effective_settings(cfg.directory)}
    for name in SHOWN_SETTINGS:
        assert settings[name][0] == preset_default(preset, name)
    assert settings["change_detection"][1] == f"auto: the {preset} preset's"
    assert make_detector(cfg.directory).name == preset_default(preset, "change_detection")


def test_a_key_set_in_the_config_is_reported_as_set() -> None:
    cfg = _cfg(disabled_filter="(employeeType=disabled)", change_detection="none")
    settings = {name: (value, origin) for name, value, origin in effective_settings(cfg.directory)}
    assert settings["disabled_filter"] == ("(employeeType=disabled)", "set in the config")
    assert settings["change_detection"] == ("none", "set in the config")
    assert settings["filter"] == ("(objectClass=inetOrgPerson)", "the openldap preset's default")
    assert _cfg(disabled_filter=None).directory.disabled_filter is None  # null still turns it off


def _cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip


def test_directory_command_prints_the_defaults_in_effect(slapd, tmp_path: Path) -> None:
    path = write_config(tmp_path, slapd, directory={"leavers": [f"OU=Уволенные , {slapd.suffix.upper()}"]})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["directory"]["disabled_filter"]  # the preset's default, as in a config that never set it
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = _cli(path, "directory")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # The openldap default reads fine on a server without the ppolicy overlay: it matches nobody, no error.
    assert "disabled_filter  : (pwdAccountLockedTime=000001010000Z)  [the openldap preset's default]" in text
    assert "anchor           : entryUUID  [the openldap preset's default]" in text
    assert "change_detection : csn  [auto: the openldap preset's]" in text
    assert f"leavers          : OU=Уволенные , {slapd.suffix.upper()}" in text
    assert re.search(r"people\s+: \d+ \(\d+ enabled, 0 disabled\)", text), text


@pytest.mark.parametrize(
    ("directory", "key"),
    [({"leavers": ["ou=Уволенные,dc=elsewhere"]}, "directory.leavers[0]"),
     ({"exclude": ["ou=Внешние,,dc=mos"]}, "directory.exclude[0]")],
)  # fmt: skip
def test_a_bad_container_stops_the_command_with_exit_2_naming_the_key(
    slapd, tmp_path, directory, key
) -> None:
    out = _cli(write_config(tmp_path, slapd, directory=directory), "directory")
    assert out.returncode == exitcodes.CONFIG
    assert key in out.stderr


def test_openldap_default_disables_on_ppolicys_admin_lock_only(make_slapd, tmp_path: Path) -> None:
    """With the ppolicy overlay, the default finds an administrator's lock and ignores a timed lockout."""
    ldap = make_slapd(40, broken=False, disabled_fraction=0.0, ppolicy=True)
    path = write_config(tmp_path, ldap)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["directory"]["disabled_filter"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cfg = load_config(path)
    people = sorted(
        interpret(read_directory_sync(cfg.directory), cfg.directory_policy()).people, key=lambda p: p.dn
    )
    locked_by_admin, locked_for_a_while = people[0], people[1]
    ldap.modify(
        f"dn: {locked_by_admin.dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
        "pwdAccountLockedTime: 000001010000Z\n\n"
        f"dn: {locked_for_a_while.dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
        "pwdAccountLockedTime: 20260101000000Z\n\n"
    )
    snap = interpret(read_directory_sync(cfg.directory), cfg.directory_policy())
    assert [p.dn for p in snap.disabled] == [locked_by_admin.dn]
