"""Directory login (provisioner.synapse.auth): real slapd, real Synapse, real logins over HTTP.

Every login goes to ``POST /_matrix/client/v3/login`` on the *public* listener, as Element would send it.
The pure parts (what Synapse hands the module, filters, config) are table-driven at the top.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ldap3.utils.conv import escape_bytes

from provisioner import exitcodes
from provisioner.config import ConfigError, load_config
from provisioner.core.identity import base_localpart
from provisioner.embedded.slapd import EmbeddedSlapd, ssha
from provisioner.embedded.synapse import EmbeddedSynapse
from provisioner.ldap_reader import login_filter
from provisioner.observe import CACHE_VERSION
from provisioner.sample import SampleDirectory, generate_directory
from provisioner.synapse.auth import (
    MAX_LOGIN_LENGTH,
    MAX_PASSWORD_LENGTH,
    Directory,
    ModuleConfig,
    Person,
    anchor_filter,
    base_taken_by_other,
    input_refusal,
    module_config_from,
    parse_module_config,
    person_filter,
    typed_login,
)
from provisioner.synapse.config import SynapseError, check_config
from provisioner.sync import run
from tests.closed_probes import closed_server_failures
from tests.helpers import write_config

MODULE = "provisioner.synapse.auth.DirectoryAuthProvider"
SERVER = "example.test"

# --------------------------------------------------------------------------------------------------------
# Pure: what Synapse hands the module, filters, config
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("ivanov.ii", "ivanov.ii"),
        ("IVANOV.II", "IVANOV.II"),  # case is kept: LDAP's uid equality ignores it, exact case breaks ties
        ("@ivanov.ii:example.test", "ivanov.ii"),
        ("@Ivanov.II:EXAMPLE.TEST", "Ivanov.II"),
        ("  смирнов.ав ", "смирнов.ав"),
        ("@смирнов.ав:example.test", "смирнов.ав"),
        ("пётр@mos", "пётр@mos"),
        ("@ivanov.ii:evil.test", None),
        ("@ivanov.ii", None),
        ("@:example.test", None),
        ("", None),
    ],
)
def test_typed_login(username, expected):
    assert typed_login(username, SERVER) == expected


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("ivanov.ii", "Right-horse-9", None),
        ("смирнов.ав", "пароль с пробелами и ёлками", None),  # Cyrillic, spaces: a real login and password
        ("@ivanov.ii:example.test", "p" * MAX_PASSWORD_LENGTH, None),
        ("i" * MAX_LOGIN_LENGTH, "x", None),
        ("ivanov\x00.ii", "x", "U+0000 in the login"),
        ("ivanov.ii\n", "x", "U+000A in the login"),
        ("ivanov.ii\x1b[2J", "x", "U+001B in the login"),
        ("\u202eii.vonavi", "x", "U+202E in the login"),  # right-to-left override: a login that lies
        ("ivanov\u200b.ii", "x", "U+200B in the login"),  # zero-width space
        ("ivanov.ii\u2028", "x", "U+2028 in the login"),
        ("i" * (MAX_LOGIN_LENGTH + 1), "x", "a login of 257 characters"),
        ("ivanov.ii", "", "empty password"),
        ("ivanov.ii", None, "empty password"),
        ("ivanov.ii", 12345, "empty password"),
        ("ivanov.ii", "pass\x00word", "a control character in the password"),
        ("ivanov.ii", "pass\tword", "a control character in the password"),
        ("ivanov.ii", "p" * (MAX_PASSWORD_LENGTH + 1), "a password of 1025 characters"),
    ],
)
def test_input_refusal(username, password, reason):
    refusal = input_refusal(username, password)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None and reason in refusal


FAKE_LDAP = SimpleNamespace(
    uri="ldap://127.0.0.1:3890",
    service_dn="cn=svc,dc=mos,dc=test",
    service_password="s3cret",
    suffix="dc=mos,dc=test",
)


def test_module_config_from_openldap_is_the_sync_rule(tmp_path):
    cfg = load_config(write_config(tmp_path, FAKE_LDAP))
    mc = module_config_from(cfg)
    assert mc == {
        "uri": "ldap://127.0.0.1:3890",
        "bind_dn": "cn=svc,dc=mos,dc=test",
        "base_dn": "dc=mos,dc=test",
        "filter": "(objectClass=inetOrgPerson)",
        "login_attribute": "uid",
        "anchor_attribute": "entryUUID",
        "disabled_filter": "(employeeType=disabled)",
        "start_tls": False,
        "timeout": 10.0,
        "bind_password_file": str((tmp_path / "ldap_pw").resolve()),
    }
    parsed = parse_module_config(mc)
    assert parsed.bind_password == "s3cret"
    assert "s3cret" not in repr(parsed)
    for login in ("ivanov.ii", "смирнов.ав", "a*b(c)\\d", "o'brien"):
        assert person_filter(parsed, login) == login_filter(cfg.directory, login)


def test_module_config_from_active_directory(tmp_path):
    cfg = load_config(
        write_config(
            tmp_path,
            FAKE_LDAP,
            directory={
                "preset": "active_directory",
                "disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)",
            },
        )
    )
    mc = module_config_from(cfg)
    assert mc["filter"] == "(&(objectCategory=person)(objectClass=user))"
    assert mc["login_attribute"] == "sAMAccountName"
    assert mc["anchor_attribute"] == "objectGUID"
    assert mc["disabled_filter"] == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    parsed = parse_module_config(mc)
    guid = uuid.uuid4()
    # The anchor is str(UUID(bytes_le=raw)) (ldap_common.decode_value); the search needs the raw bytes back.
    assert anchor_filter(parsed, str(guid)) == f"(&{mc['filter']}(objectGUID={escape_bytes(guid.bytes_le)}))"
    assert anchor_filter(parsed, "not-a-guid") is None


def test_module_config_from_env_secret(tmp_path, monkeypatch):
    path = write_config(
        tmp_path, FAKE_LDAP, directory={"bind_password_file": None, "bind_password_env": "LDAP_PW"}
    )
    monkeypatch.setenv("LDAP_PW", "from-env")
    mc = module_config_from(load_config(path))
    assert mc["bind_password_env"] == "LDAP_PW" and "bind_password_file" not in mc
    assert parse_module_config(mc).bind_password == "from-env"


GOOD = {
    "uri": "ldap://127.0.0.1:389",
    "bind_dn": "cn=svc",
    "bind_password_env": "PW",
    "base_dn": "dc=x",
    "filter": "(objectClass=inetOrgPerson)",
    "login_attribute": "uid",
    "anchor_attribute": "entryUUID",
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"uri": None}, "uri"),
        ({"uri": "http://x"}, "uri"),
        ({"bogus": 1}, "bogus"),
        ({"bind_password": "inline"}, "bind_password"),
        ({"bind_password_file": "/nonexistent/pw"}, "bind_password_file"),
        ({"bind_password_env": None}, "bind_password_file"),
        ({"filter": "objectClass=person"}, "filter"),
        ({"disabled_filter": "(a=b"}, "disabled_filter"),
        ({"login_attribute": ""}, "login_attribute"),
        ({"timeout": 0}, "timeout"),
        ({"start_tls": "yes"}, "start_tls"),
    ],
)
def test_parse_module_config_names_the_bad_key(change, key):
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse_module_config(raw, environ={"PW": "pw"})
    assert err.value.key == key, str(err.value)


def test_parse_module_config_defaults():
    parsed = parse_module_config(GOOD, environ={"PW": "pw"})
    assert parsed == ModuleConfig(
        uri="ldap://127.0.0.1:389", bind_dn="cn=svc", bind_password="pw", base_dn="dc=x",
        filter="(objectClass=inetOrgPerson)", login_attribute="uid", anchor_attribute="entryUUID",
        disabled_filter=None, start_tls=False, timeout=10.0,
    )  # fmt: skip


def P(login: str, anchor: str) -> Person:
    return Person(dn=f"uid={login}", anchor=anchor, login=login)


@pytest.mark.parametrize(
    ("me", "holders", "winner"),
    [
        (
            P("смирнов.ав", "a2"),
            [P("smirnov.av", "a9")],
            "a9",
        ),  # an exact login always wins over a transliteration
        (P("Kuznetsov.AV", "a1"), [P("kuznetsov.av", "a9"), P("Kuznetsov.AV", "a1")], "a9"),
        (P("kuznetsov.av", "a9"), [P("kuznetsov.av", "a9"), P("Kuznetsov.AV", "a1")], None),
        (
            P("ivanov.ii", "a5"),
            [P("ivanov.ii", "a3"), P("ivanov.ii", "a5")],
            "a3",
        ),  # two exact: lowest anchor
        (P("ivanov.ii", "a3"), [P("ivanov.ii", "a3"), P("ivanov.ii", "a5")], None),
        (P("пётр@mos", "a1"), [], None),
    ],
)
def test_base_taken_by_other_follows_the_sync_rule(me, holders, winner):
    other = base_taken_by_other(base_localpart(me.login), me, holders)
    assert (other.anchor if other else None) == winner


# --------------------------------------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------------------------------------


@dataclass
class City:
    ldap: EmbeddedSlapd
    hs: Any
    path: Path
    directory: SampleDirectory

    def person(self, uid: str):
        return next(p for p in self.directory.special if p.uid == uid)

    def set_password(self, dn: str, password: str) -> None:
        self.ldap.modify(
            f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {ssha(password)}\n\n"
        )

    def sync(self, allow: int | None = None):
        result = asyncio.run(
            run(load_config(self.path, token_required=True), apply=True, allow_removals=allow, progress=False)
        )
        assert result.exit_code == exitcodes.OK, result.message
        return result

    def login(self, user: str, password: str) -> tuple[int, dict[str, Any]]:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        }
        return http(self.hs.public_url + "/_matrix/client/v3/login", body)

    def admin(
        self, path: str, body: dict[str, Any] | None = None, method: str | None = None
    ) -> dict[str, Any]:
        status, reply = http(self.hs.url + path, body, token=self.hs.admin_token, method=method)
        assert status == 200, (path, status, reply)
        return reply

    def user_ids(self) -> set[str]:
        reply = self.admin("/_synapse/admin/v2/users?limit=1000&deactivated=true&locked=true")
        return {u["name"] for u in reply["users"]}

    def log_text(self) -> str:
        return self.hs.server.log_path.read_text(encoding="utf-8")


def http(
    url: str, body: dict[str, Any] | None = None, *, token: str | None = None, method: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def module(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"module": MODULE, "config": config}]


@pytest.fixture
def city(make_slapd, fresh_synapse, tmp_path) -> City:
    """80 people (all the special logins, 4 disabled), a Synapse with the module; not synced yet."""
    directory = generate_directory(80, seed=11, broken=False, disabled_fraction=0.05)
    ldap = make_slapd(directory=directory)
    # The module's config comes from the provisioner's; the homeserver URL and token are known only later.
    mc = module_config_from(load_config(write_config(tmp_path, ldap)))
    hs = fresh_synapse(modules=module(mc))
    path = write_config(tmp_path, ldap, hs_url=hs.url, token=hs.admin_token)
    return City(ldap, hs, path, directory)


def mxid(localpart: str) -> str:
    return f"@{localpart}:{SERVER}"


@pytest.mark.slapd
@pytest.mark.synapse
def test_login_lands_on_the_provisioned_account(city):
    result = city.sync()
    lp = result.desired.localparts
    people = {
        uid: city.person(uid)
        for uid in ("ivanov.ii", "smirnov.av", "смирнов.ав", "kuznetsov.av", "Kuznetsov.AV")
    }
    passwords = {uid: f"Pw-{uuid.uuid4().hex[:12]}" for uid in people}
    for uid, p in people.items():
        city.set_password(p.dn, passwords[uid])
    before = city.user_ids()
    account = {uid: mxid(lp[p.entry_uuid]) for uid, p in people.items()}
    # The collided people really have suffixed IDs, so landing on them proves the anchor lookup.
    assert account["smirnov.av"] == mxid("smirnov.av")
    assert account["смирнов.ав"].startswith("@smirnov.av-")
    assert account["Kuznetsov.AV"].startswith("@kuznetsov.av-")

    cases = [
        ("ivanov.ii", "ivanov.ii"),
        ("IVANOV.II", "ivanov.ii"),
        ("@ivanov.ii:example.test", "ivanov.ii"),
        (" Ivanov.II ", "ivanov.ii"),
        ("smirnov.av", "smirnov.av"),
        ("смирнов.ав", "смирнов.ав"),
        ("СМИРНОВ.АВ", "смирнов.ав"),
        ("@смирнов.ав:example.test", "смирнов.ав"),
        (account["смирнов.ав"], "смирнов.ав"),  # the suffixed Matrix ID (what re-authentication sends)
        ("kuznetsov.av", "kuznetsov.av"),
        ("Kuznetsov.AV", "Kuznetsov.AV"),  # same login to LDAP ignoring case: the exact one is chosen
    ]
    for typed, uid in cases:
        status, reply = city.login(typed, passwords[uid])
        assert status == 200, (typed, reply)
        assert reply["user_id"] == account[uid], typed
        # The token works: the person is in, not just authenticated.
        status, who = http(
            city.hs.public_url + "/_matrix/client/v3/account/whoami", token=reply["access_token"]
        )
        assert (status, who["user_id"]) == (200, account[uid])

    # Differing only in case from two logins and matching neither exactly: refused, not guessed.
    status, reply = city.login("KUZNETSOV.AV", passwords["kuznetsov.av"])
    assert (status, reply["errcode"]) == (403, "M_FORBIDDEN")
    assert city.user_ids() == before

    log = city.log_text()
    # What Synapse hands the module is what was typed: bare, any case, Cyrillic, or a full Matrix ID.
    for typed in (
        "'IVANOV.II'",
        "'смирнов.ав'",
        "'СМИРНОВ.АВ'",
        f"'{account['смирнов.ав'][1:].split(':')[0]}'",
    ):
        assert f"directory login {typed} accepted" in log, typed
    assert "is not unique" in log
    assert not any(pw in log for pw in passwords.values())


@pytest.mark.slapd
@pytest.mark.synapse
def test_refusals_create_nothing(city):
    city.sync()
    ivanov = city.person("ivanov.ii")
    city.set_password(ivanov.dn, "Right-horse-9")
    disabled_dn = next(
        e.dn for e in city.directory.entries if ("employeeType", ("disabled",)) in e.attributes
    )
    disabled_uid = disabled_dn.split(",", 1)[0].split("=", 1)[1]
    city.set_password(disabled_dn, "Disabled-pw-1")
    before = city.user_ids()
    assert mxid(base_localpart(disabled_uid)) not in before  # the sync never made one

    cases = [
        ("ivanov.ii", "wrong-horse"),
        ("ivanov.ii", ""),  # an unauthenticated bind would "succeed": never sent
        ("@ivanov.ii:example.test", ""),
        ("nobody.here", "Right-horse-9"),
        ("*", "Right-horse-9"),  # a filter wildcard is a literal after escaping
        ("ivanov.ii)(uid=*", "Right-horse-9"),
        ("@ivanov.ii:evil.test", "Right-horse-9"),
        (disabled_uid, "Disabled-pw-1"),
    ]
    for typed, password in cases:
        status, reply = city.login(typed, password)
        assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN"), (typed, reply)
    assert city.user_ids() == before
    log = city.log_text()
    assert "'ivanov.ii' refused: wrong password" in log
    assert "'ivanov.ii' refused: empty password" in log
    assert f"'{disabled_uid}' refused: uid={disabled_uid}," in log and "is disabled in the directory" in log
    assert "Right-horse-9" not in log and "wrong-horse" not in log and "Disabled-pw-1" not in log


@pytest.mark.slapd
@pytest.mark.synapse
def test_the_directory_is_the_only_password(city):
    """Issue 12: no second password, no admin password login, no 500 on hostile input, with the module."""
    result = city.sync()
    ivanov = city.person("ivanov.ii")
    account = mxid(result.desired.localparts[ivanov.entry_uuid])
    city.set_password(ivanov.dn, "Directory-pw-1")
    status, reply = city.login("ivanov.ii", "Directory-pw-1")
    assert (status, reply.get("user_id")) == (200, account), reply
    token = reply["access_token"]
    space = next(r for r in city.admin("/_synapse/admin/v1/rooms?limit=500")["rooms"] if r["room_type"])
    room = next(r for r in city.admin("/_synapse/admin/v1/rooms?limit=500")["rooms"] if not r["room_type"])
    tree = {
        "alias": space["canonical_alias"],
        "space_id": space["room_id"],
        "room_id": room["room_id"],
        "person_id": account,
        "admin_user": city.hs.admin_user_id,
        "admin_password": city.hs.admin.password,
    }
    employee = {
        "token": token,
        "user_id": account,
        "password": "Directory-pw-1",
        "new_password": "Second-pw-2",
    }
    failures = closed_server_failures(city.hs.public_url, **tree, employee=employee)
    assert not failures, "\n".join(failures)
    # The password change got past user-interactive auth (the directory password is right) and was then
    # refused by Synapse itself, not by a missing flow.
    uia = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": account},
           "password": "Directory-pw-1"}  # fmt: skip
    status, reply = http(
        city.hs.public_url + "/_matrix/client/v3/account/password",
        {"new_password": "Second-pw-3", "auth": uia},
        token=token,
    )
    assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN"), reply
    # Only the directory's password logs in, and a reset there takes effect at once.
    assert city.login("ivanov.ii", "Directory-pw-1")[0] == 200
    city.set_password(ivanov.dn, "Directory-pw-4")
    assert city.login("ivanov.ii", "Directory-pw-1")[0] == 403
    assert city.login("ivanov.ii", "Directory-pw-4")[0] == 200
    # The synced room state is members-only: nobody needs the guard to keep the space's history closed.
    state_url = f"/_synapse/admin/v1/rooms/{urllib.parse.quote(space['room_id'])}/state"

    def visibility() -> Any:
        state = city.admin(state_url)["state"]
        return next(e for e in state if e["type"] == "m.room.history_visibility")["content"]

    assert visibility() == {"history_visibility": "shared"}
    # A server synced by an older version has world-readable spaces, and a room cache of that version:
    # the next sync reads the rooms again and closes them.
    city.admin(
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(space['room_id'])}/state/m.room.history_visibility/",
        {"history_visibility": "world_readable"},
        method="PUT",
    )
    cache = Path(load_config(city.path).sync.state_dir) / "rooms-cache.json"
    text = cache.read_text(encoding="utf-8")
    current = f'{{"v": {CACHE_VERSION},'
    assert text.startswith(current)
    cache.write_text(text.replace(current, '{"v": 1,', 1), encoding="utf-8")
    assert any(a.kind == "update_room" and a.history_visibility for a in city.sync().plan.actions)
    assert visibility() == {"history_visibility": "shared"}
    log = city.log_text()
    # Hostile input was refused by the module's first check: no directory search, no database, no 500.
    assert "refused: a control or formatting character U+0000 in the login" in log
    assert "refused: a control character in the password" in log
    assert "refused: a login of 20000 characters" in log
    assert "unexpected error" not in log
    assert not [line for line in log.splitlines() if "Processed request" in line and ' 500 "' in line]
    assert "Directory-pw-1" not in log and "Second-pw-2" not in log


@pytest.mark.slapd
@pytest.mark.synapse
def test_renamed_login_lands_on_the_old_account(city):
    result = city.sync()
    person = city.person("petrova.an")
    account = mxid(result.desired.localparts[person.entry_uuid])
    city.ldap.modify(f"dn: {person.dn}\nchangetype: modrdn\nnewrdn: uid=petrova.an.new\ndeleteoldrdn: 1\n\n")
    new_dn = "uid=petrova.an.new," + person.dn.split(",", 1)[1]
    city.set_password(new_dn, "Renamed-pw-7")
    before = city.user_ids()
    # Before the next sync and after it: the new login is the same person (same entryUUID), same account.
    status, reply = city.login("petrova.an.new", "Renamed-pw-7")
    assert (status, reply.get("user_id")) == (200, account), reply
    # The old login is nobody's in LDAP now, but it is still the person's Matrix ID: typing it finds the
    # account, its anchor, and so the same person.
    status, reply = city.login("petrova.an", "Renamed-pw-7")
    assert (status, reply.get("user_id")) == (200, account), reply
    assert "'petrova.an' accepted" in city.log_text()
    city.sync()
    status, reply = city.login("petrova.an.new", "Renamed-pw-7")
    assert (status, reply.get("user_id")) == (200, account), reply
    assert city.user_ids() == before


@pytest.mark.slapd
@pytest.mark.synapse
def test_login_before_the_first_sync_is_adopted(city):
    ivanov, latin, cyrillic = city.person("ivanov.ii"), city.person("smirnov.av"), city.person("смирнов.ав")
    for p in (ivanov, latin, cyrillic):
        city.set_password(p.dn, f"First-{p.entry_uuid[:8]}")
    # смирнов.ав first: the base ID smirnov.av belongs to the person whose login is exactly that, so the
    # module makes nothing and the sync gives смирнов.ав the suffixed ID.
    status, reply = city.login("смирнов.ав", f"First-{cyrillic.entry_uuid[:8]}")
    assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN")
    assert "belongs to uid=smirnov.av" in city.log_text()

    made = {}
    for p in (ivanov, latin):
        status, reply = city.login(p.uid, f"First-{p.entry_uuid[:8]}")
        assert status == 200, reply
        made[p.entry_uuid] = reply["user_id"]
        assert reply["user_id"] == mxid(base_localpart(p.uid))
    # Several first logins at once (a person with Element on phone and desktop): one account, one link.
    racer = city.person("petrova.an")
    city.set_password(racer.dn, "Race-pw-4")
    replies: list[tuple[int, dict[str, Any]]] = []
    threads = [
        threading.Thread(target=lambda: replies.append(city.login("petrova.an", "Race-pw-4")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [s for s, _ in replies] == [200] * 6, replies
    assert {r["user_id"] for _, r in replies} == {mxid("petrova.an")}
    made[racer.entry_uuid] = mxid("petrova.an")
    # A second login reuses the account (found by the external id now).
    status, reply = city.login("IVANOV.II", f"First-{ivanov.entry_uuid[:8]}")
    assert (status, reply["user_id"]) == (200, made[ivanov.entry_uuid])
    detail = city.admin(f"/_synapse/admin/v2/users/{urllib.parse.quote(made[ivanov.entry_uuid])}")
    assert {"auth_provider": "civmatrix", "external_id": ivanov.entry_uuid} in detail["external_ids"]

    result = city.sync()
    for anchor, user_id in made.items():
        assert mxid(result.desired.localparts[anchor]) == user_id  # adopted, not a second account
    users = city.user_ids()
    assert sum(1 for u in users if u.startswith("@ivanov.ii") and not u.startswith("@ivanov.ii2")) == 1
    assert {u for u in users if u.startswith("@smirnov.av")} == {
        mxid("smirnov.av"),
        mxid(result.desired.localparts[cyrillic.entry_uuid]),
    }
    assert city.sync().plan.actions == ()  # converged
    # The person whose login was refused before the sync can log in now, onto the synced account.
    status, reply = city.login("смирнов.ав", f"First-{cyrillic.entry_uuid[:8]}")
    assert (status, reply.get("user_id")) == (200, mxid(result.desired.localparts[cyrillic.entry_uuid]))


@pytest.mark.slapd
@pytest.mark.synapse
def test_leaver_locked_by_the_sync_loses_sessions_and_login(city):
    result = city.sync()
    leaver = city.person("petrova.an2")
    account = mxid(result.desired.localparts[leaver.entry_uuid])
    city.set_password(leaver.dn, "Leaving-pw-3")
    status, reply = city.login("petrova.an2", "Leaving-pw-3")
    assert (status, reply["user_id"]) == (200, account)
    token = reply["access_token"]
    whoami = city.hs.public_url + "/_matrix/client/v3/account/whoami"
    assert http(whoami, token=token)[0] == 200

    entry = next(e for e in city.directory.entries if e.dn == leaver.dn)
    city.ldap.modify(f"dn: {leaver.dn}\nchangetype: delete\n\n")
    city.sync(allow=1)
    status, reply = http(whoami, token=token)
    assert (status, reply.get("errcode")) == (401, "M_USER_LOCKED")
    status, reply = city.login("petrova.an2", "Leaving-pw-3")
    assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN")  # gone from the directory
    assert "'petrova.an2' refused: no person with uid=petrova.an2" in city.log_text()
    assert f"is linked to {leaver.entry_uuid}: no person with entryUUID" in city.log_text()

    # Back in the directory (a restore: same entryUUID, same password) but still locked until the next
    # sync: the module accepts the password, Synapse refuses the locked account.
    lines = [f"{a}: {v}" for a, values in entry.attributes for v in values]
    city.ldap.modify(f"dn: {entry.dn}\nchangetype: add\n" + "\n".join(lines) + "\n\n", relax=True)
    city.set_password(leaver.dn, "Leaving-pw-3")
    status, reply = city.login("petrova.an2", "Leaving-pw-3")
    assert (status, reply.get("errcode")) == (401, "M_USER_LOCKED")
    city.sync()  # the provisioner locked them, so it unlocks them
    status, reply = city.login("petrova.an2", "Leaving-pw-3")
    assert (status, reply.get("user_id")) == (200, account)


@pytest.mark.slapd
@pytest.mark.synapse
def test_synapse_refuses_locked_and_deactivated_even_when_the_module_accepts(city):
    result = city.sync()
    lp = result.desired.localparts
    locked, gone = city.person("ivanov.ii"), city.person("kuznetsov.av")
    for p in (locked, gone):
        city.set_password(p.dn, "Still-in-ldap-5")
    locked_id, gone_id = mxid(lp[locked.entry_uuid]), mxid(lp[gone.entry_uuid])
    city.admin(f"/_synapse/admin/v2/users/{urllib.parse.quote(locked_id)}", {"locked": True}, method="PUT")
    city.admin(f"/_synapse/admin/v1/deactivate/{urllib.parse.quote(gone_id)}", {"erase": False})
    before = city.user_ids()

    status, reply = city.login("ivanov.ii", "Still-in-ldap-5")
    assert (status, reply["errcode"]) == (401, "M_USER_LOCKED")
    status, reply = city.login("kuznetsov.av", "Still-in-ldap-5")
    assert (status, reply["errcode"]) == (403, "M_USER_DEACTIVATED")
    log = city.log_text()
    assert f"'ivanov.ii' accepted as {locked_id}" in log  # the module said yes; Synapse said no
    assert f"'kuznetsov.av' accepted as {gone_id}" in log
    assert city.user_ids() == before  # and no replacement account was made for either


@pytest.mark.synapse
def test_config_with_the_module_passes_synapse_check(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("service-secret\n")
    good = {**GOOD, "bind_password_env": None, "bind_password_file": str(pw), "disabled_filter": "(a=b)"}
    good = {k: v for k, v in good.items() if v is not None}
    server = EmbeddedSynapse(tmp_path / "hs", modules=module(good))
    server.check_config()
    bad = EmbeddedSynapse(
        tmp_path / "hs-bad", modules=module({**good, "bind_password_file": str(tmp_path / "missing")})
    )
    with pytest.raises(SynapseError, match="bind_password_file"):
        check_config(bad.write_config())
    assert "service-secret" not in server.config_path.read_text()


class _BlackHole:
    """A TCP port that accepts connections and never answers: an LDAP server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.synapse
def test_a_hanging_directory_does_not_block_synapse(fresh_synapse, tmp_path):
    hole = _BlackHole()
    try:
        (tmp_path / "pw").write_text("x")
        config = {**GOOD, "bind_password_env": None, "bind_password_file": str(tmp_path / "pw"), "timeout": 4}
        config["uri"] = f"ldap://127.0.0.1:{hole.port}"
        hs = fresh_synapse(modules=module({k: v for k, v in config.items() if v is not None}))
        outcome: dict[str, Any] = {}

        def slow_login() -> None:
            body = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "ivanov.ii"},
                "password": "pw",
            }
            began = time.monotonic()
            outcome["reply"] = http(hs.public_url + "/_matrix/client/v3/login", body)
            outcome["seconds"] = time.monotonic() - began

        before = len(hole.conns)
        t = threading.Thread(target=slow_login)
        t.start()
        # The login is waiting on the directory once the login module has connected to the black hole.
        deadline = time.monotonic() + 30
        while len(hole.conns) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(hole.conns) > before, "the login never reached the directory"
        began = time.monotonic()
        status, _ = http(hs.public_url + "/_matrix/client/versions")
        assert status == 200 and time.monotonic() - began < 1.0  # the reactor is free
        assert t.is_alive()
        t.join(60)
        status, reply = outcome["reply"]
        assert (status, reply.get("errcode")) == (
            403,
            "M_FORBIDDEN",
        )  # a dead directory refuses, never admits
        assert outcome["seconds"] >= 3
        assert "the directory is unavailable" in hs.server.log_path.read_text(encoding="utf-8")
    finally:
        hole.close()


@pytest.mark.slapd
def test_nobody_in_a_leavers_or_excluded_container_logs_in(make_slapd, tmp_path):
    """A first login would make an account the sync never locks (it is in no registry): the module refuses
    people in ``directory.exclude``/``directory.leavers``, matched as the sync matches them."""
    sample = generate_directory(40, seed=3, broken=False, disabled_fraction=0.0)
    ldap = make_slapd(directory=sample)
    leavers = f"OU=Уволенные , {ldap.suffix.upper()}"
    cfg = load_config(write_config(tmp_path, ldap, directory={"leavers": [leavers]}))
    mc = module_config_from(cfg)
    assert mc["out_of_scope"] == [leavers]
    directory = Directory(parse_module_config(mc))
    someone, other = sorted((e for e in sample.entries if e.first("uid")), key=lambda e: e.dn)[:2]
    login = someone.first("uid")
    assert directory.find_by_login(login).person is not None
    ldap.modify(f"dn: ou=Уволенные,{ldap.suffix}\nchangetype: add\nobjectClass: organizationalUnit\nou: Уволенные\n\n"
                f"dn: {someone.dn}\nchangetype: modrdn\nnewrdn: {someone.dn.split(',', 1)[0]}\ndeleteoldrdn: 1\n"
                f"newsuperior: ou=Уволенные,{ldap.suffix}\n\n")  # fmt: skip
    refused = directory.find_by_login(login)
    assert refused.person is None and f"is in {leavers}, out of scope" in (refused.refusal or "")
    assert directory.find_by_login(other.first("uid")).person is not None
    with pytest.raises(ConfigError):
        parse_module_config({**mc, "out_of_scope": ["not a dn"]})
