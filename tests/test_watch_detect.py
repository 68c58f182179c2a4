"""Change detectors: contextCSN against a real slapd (syncprov); highestCommittedUSN against a fake rootDSE.

slapd cannot serve AD's rootDSE attribute, so the USN detector alone is fed by a fake connection (the rest of
the watch is tested against real servers in test_watch_live.py).
"""

from __future__ import annotations

import pytest

from provisioner.config import parse_config
from provisioner.ldap_reader import DirectoryConfigError, DirectoryUnreachable, read_directory_sync
from provisioner.watch import CsnDetector, NoDetector, UsnDetector, make_detector
from tests.helpers import config


def directory_cfg(preset: str, detection: str = "auto"):
    return parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
            "directory": {
                "uri": "ldap://127.0.0.1:1",
                "bind_dn": "cn=x",
                "bind_password_env": "HOME",
                "base_dn": "dc=x",
                "preset": preset,
                "change_detection": detection,
            },
        }
    ).directory


def test_auto_picks_by_preset_and_none_is_none():
    assert isinstance(make_detector(directory_cfg("openldap")), CsnDetector)
    assert isinstance(make_detector(directory_cfg("active_directory")), UsnDetector)
    assert isinstance(make_detector(directory_cfg("active_directory", "csn")), CsnDetector)
    assert isinstance(make_detector(directory_cfg("openldap", "none")), NoDetector)


def test_unknown_change_detection_is_a_config_error_naming_the_key():
    from provisioner.config import ConfigError

    with pytest.raises(ConfigError, match="directory.change_detection: must be one of auto, csn, usn, none"):
        directory_cfg("openldap", "syncrepl-ish")


def test_contextcsn_moves_with_every_write_and_survives_a_restart(make_slapd, tmp_path):
    ldap = make_slapd(people=20, broken=False)
    det = CsnDetector(
        config(tmp_path, ldap).directory
    )  # a contextCSN needs the overlay: EmbeddedSlapd Rule 5
    first = det.check()
    assert first and det.check() == first  # nothing changed: the same token
    cfg = config(tmp_path, ldap).directory
    some = read_directory_sync(cfg).people[0].dn
    ldap.modify(f"dn: {some}\nchangetype: modify\nreplace: title\ntitle: Новая должность\n\n")
    second = det.check()
    assert second != first
    ldap.stop()
    with pytest.raises(DirectoryUnreachable, match="change detection"):
        det.check()
    ldap.start()
    # Reconnected. EmbeddedSlapd.start() resets the service password (a write), so the token moved, as any
    # change made while the watch could not look must.
    third = det.check()
    assert third and third != second
    det.close()


class FakeRootDSE:
    """A python-ldap connection whose rootDSE says what the test wants (AD's highestCommittedUSN)."""

    def __init__(self, attrs):
        self.attrs = attrs
        self.bases = []

    def search_s(self, base, scope, flt, attrlist):
        self.bases.append((base, tuple(attrlist)))
        return [("", {k: [str(v).encode()] for k, v in self.attrs.items() if k in attrlist})]

    def unbind_s(self):
        pass


def test_usn_detector_reads_highest_committed_usn_on_the_root_dse():
    det = UsnDetector(directory_cfg("active_directory"))
    fake = FakeRootDSE({"highestCommittedUSN": 41230})
    det._open = lambda: fake  # the fault-injection seam: everything else is the real detector
    assert det.check() == "41230"
    fake.attrs["highestCommittedUSN"] = 41231
    assert det.check() == "41231"
    assert fake.bases == [("", ("highestCommittedUSN",))] * 2


def test_usn_detector_on_a_server_without_it_says_what_to_set():
    det = UsnDetector(directory_cfg("active_directory"))
    det._open = lambda: FakeRootDSE({})
    with pytest.raises(DirectoryConfigError, match="not an Active Directory server .*change_detection: csn"):
        det.check()
