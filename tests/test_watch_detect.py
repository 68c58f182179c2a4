"""Change detectors: contextCSN against a real slapd (syncprov); highestCommittedUSN against a fake rootDSE.

slapd cannot serve AD's rootDSE attribute, so the USN detector alone is fed by a fake connection (the rest of
the watch is tested against real servers in test_watch_live.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.config import parse_config
from provisioner.ldap_reader import DirectoryUnreachable, read_directory_sync
from provisioner.watch import CsnDetector, DetectionUnavailable, NoDetector, UsnDetector, make_detector
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
    with pytest.raises(DetectionUnavailable, match="Not an Active Directory server.*change_detection: csn"):
        det.check()


RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "RUNBOOK.md"


def runbook_syncprov_ldif() -> str:
    """The one ```ldif block of RUNBOOK's "Enabling syncprov": what an operator applies, verbatim."""
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text[text.index("### Enabling syncprov") :]
    blocks = re.findall(r"```ldif\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_csn_without_syncprov_names_the_fix(make_slapd, tmp_path):
    ldap = make_slapd(people=10, broken=False, syncprov=False)
    det = CsnDetector(config(tmp_path, ldap).directory)
    with pytest.raises(DetectionUnavailable) as e:
        det.check()
    assert f"contextCSN of {ldap.suffix}" in str(e.value)
    assert 'Enable the syncprov overlay on that database (see docs/RUNBOOK.md, "Enabling syncprov")' in str(
        e.value
    )
    det.close()


def test_runbook_ldif_enables_syncprov_on_a_cn_config_slapd(make_slapd, tmp_path):
    ldap = make_slapd(people=10, broken=False, syncprov=False, cn_config=True)
    det = CsnDetector(config(tmp_path, ldap).directory)
    with pytest.raises(DetectionUnavailable):
        det.check()
    ldap.modify_config(runbook_syncprov_ldif())
    first = det.check()
    some = read_directory_sync(config(tmp_path, ldap).directory).people[0].dn
    ldap.modify(f"dn: {some}\nchangetype: modify\nreplace: title\ntitle: Другая\n\n")
    assert det.check() != first
    ldap.stop()
    ldap.start()  # the overlay is in slapd.d now, not in slapd.conf: it survives a restart
    det.close()
    assert det.check()
    det.close()


def test_contextcsn_hidden_from_the_service_account_is_unavailable_not_unreachable(make_slapd, tmp_path):
    ldap = make_slapd(people=10, broken=False, cn_config=True)
    det = CsnDetector(config(tmp_path, ldap).directory)
    assert det.check()
    ldap.modify_config(
        "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcAccess\n"
        f'olcAccess: {{0}}to dn.base="{ldap.suffix}" attrs=contextCSN by * none\n\n'
    )
    det.close()
    with pytest.raises(DetectionUnavailable, match=f"let {re.escape(ldap.service_dn)} read contextCSN"):
        det.check()
    det.close()
