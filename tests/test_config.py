"""Config parsing: defaults, presets and errors that name the file and key."""

import pytest
import yaml

from provisioner.config import ConfigError, load_config, parse_config

BASE = {
    "homeserver": {"url": "http://127.0.0.1:8008", "server_name": "example.test"},
    "directory": {
        "uri": "ldap://127.0.0.1:3890",
        "bind_dn": "cn=p,dc=x",
        "bind_password_env": "PW",
        "base_dn": "dc=x",
    },
}


@pytest.fixture(autouse=True)
def _pw(monkeypatch):
    monkeypatch.setenv("PW", "secret")


def with_(path, value):
    import copy

    data = copy.deepcopy(BASE)
    node = data
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def test_example_config_parses(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    src = Path(__file__).parent.parent / "config" / "example.yaml"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ldap_password").write_text("pw\n")
    (tmp_path / "secrets" / "admin_token").write_text("tok\n")
    shutil.copy(src, tmp_path / "c.yaml")
    cfg = load_config(tmp_path / "c.yaml", token_required=True)
    assert cfg.directory.bind_password == "pw"
    assert cfg.homeserver.admin_token == "tok"
    assert cfg.layout.max_room_size == 200
    assert cfg.safety.max_removals == 500
    assert "@admin:example.test" in cfg.exclude
    assert "pw" not in repr(cfg) and "tok" not in repr(cfg)


def test_presets():
    ad = parse_config(with_("directory.preset", "active_directory"))
    assert ad.directory.attributes.anchor == "objectGUID"
    assert ad.directory.attributes.login == "sAMAccountName"
    assert ad.directory.department_from == "attribute"
    assert "1.2.840.113556.1.4.803" in (ad.directory.disabled_filter or "")
    ol = parse_config(BASE)
    assert ol.directory.attributes.anchor == "entryUUID" and ol.directory.department_from == "dn"
    over = parse_config(with_("directory.attributes", {"login": "mail", "phone": None}))
    assert over.directory.attributes.login == "mail" and over.directory.attributes.phone is None
    # Both presets read the mobile number too (inetOrgPerson and AD both call it "mobile"); null turns it off.
    assert ad.directory.attributes.mobile == ol.directory.attributes.mobile == "mobile"
    assert parse_config(with_("directory.attributes", {"mobile": None})).directory.attributes.mobile is None


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("layout.max_room_size", 1, "layout.max_room_size", "between"),
        ("layout.max_room_size", "big", "layout.max_room_size", "whole number"),
        ("directory.uri", "http://x", "directory.uri", "ldap://"),
        ("directory.preset", "novell", "directory.preset", "one of"),
        ("directory.filter", "objectClass=person", "directory.filter", "RFC 4515"),
        ("directory.base_dn", "not a dn", "directory.base_dn", "="),
        ("directory.bind_password", "inline", "directory.bind_password", "never written"),
        ("directory.attributes", {"anchor": None}, "directory.attributes.anchor", "required"),
        ("directory.attributes", {"colour": "x"}, "directory.attributes.colour", "unknown key"),
        ("directory.department_from", "attribute", "directory.department_from", "attributes.department"),
        ("homeserver.server_name", "bad name!", "homeserver.server_name", "server name"),
        ("safety.max_removal_percent", 150, "safety.max_removal_percent", "between"),
        ("exclude", ["admin"], "exclude[0]", "Matrix user ID"),
        ("layout.head_title_pattern", "(", "layout.head_title_pattern", "regular expression"),
        ("bogus", 1, "bogus", "unknown section"),
        ("directory.department_separator", 5, "directory.department_separator", "must be a string"),
        ("directory.department_separator", ["/"], "directory.department_separator", "must be a string"),
    ],
)
def test_errors_name_the_key(path, value, key, words):
    with pytest.raises(ConfigError) as e:
        parse_config(with_(path, value), "/etc/civmatrix.yaml")
    assert e.value.key == key
    assert words in str(e.value)
    assert str(e.value).startswith("/etc/civmatrix.yaml:" + key)


def test_missing_secret_file_named(tmp_path):
    data = with_("directory.bind_password_file", "nope.txt")
    del data["directory"]["bind_password_env"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="directory.bind_password_file: cannot read"):
        load_config(tmp_path / "c.yaml")


def test_unset_env_named(monkeypatch):
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError, match="PW is not set"):
        parse_config(BASE)


def test_token_required_for_sync():
    with pytest.raises(ConfigError, match="homeserver.admin_token_file"):
        parse_config(BASE, token_required=True)


def test_room_size_leaves_a_seat_for_people_beside_provisioner_and_bot():
    data = with_("layout.max_room_size", 2)
    parse_config(data)  # the provisioner alone: one seat left
    data["bot"] = {"user_id": "@events:example.test"}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.key == "layout.max_room_size" and "with a bot" in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("homeserver: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
