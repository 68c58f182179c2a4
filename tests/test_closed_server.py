"""Issue 4 item 1: the generated Synapse config is closed, checked from the outside as an outsider would.

Every request here goes over HTTP to a real Synapse started with the generated config; nothing reads its
internals. The last part checks the embedded server's own lifecycle (restart keeps state, clear errors).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import proxy
from provisioner.embedded.nginx import EmbeddedNginx
from provisioner.embedded.ports import free_port
from provisioner.embedded.synapse import EmbeddedSynapse, write_homeserver_config
from provisioner.synapse import bootstrap
from provisioner.synapse.access import (
    PUBLIC_CLIENT_PATHS,
    needs_token,
    writes_directory_profile_field,
)
from provisioner.synapse.config import (
    DEVICE_TOKEN_PATH,
    PRESENCE_MODULE,
    REGISTRATION_SECRET_FILE,
    SPACE_BROWSING_MODULE,
    TEST_RATE_LIMITS,
    SynapseError,
    check_config,
    closed_config_violations,
    render_homeserver_config,
)
from tests.closed_probes import closed_server_failures
from tests.closed_probes import http as probes_http
from tests.fixtures.synapse import ADMIN_LOCALPART, SERVER_NAME, SynapseHandle, unique_localpart

pytestmark = pytest.mark.synapse


def http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One raw request, the way an outsider would send it; returns (status, JSON body or {})."""
    return probes_http(method, url, body, token, timeout=10)


# --- federation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/_matrix/federation/v1/query/profile?user_id=@admin:example.test",
        "/_matrix/federation/v1/publicRooms",
        "/_matrix/federation/v1/openid/userinfo?access_token=x",
    ],
)
def test_federation_endpoints_unreachable_on_both_listeners(synapse: SynapseHandle, path: str) -> None:
    for base in (synapse.public_url, synapse.admin_url):
        status, body = http("GET", base + path)
        assert status == 404, (base, path, status, body)
        assert body.get("errcode") == "M_UNRECOGNIZED"


def test_server_does_not_federate_outwards(synapse: SynapseHandle) -> None:
    # A remote profile lookup would make Synapse contact other.example; the empty whitelist refuses it.
    status, body = http(
        "GET",
        synapse.public_url + "/_matrix/client/v3/profile/@someone:matrix.org",
        token=synapse.admin_token,
    )
    assert status in (403, 404), (status, body)


# --- registration and guests -----------------------------------------------------------------------------


def test_registration_refused(synapse: SynapseHandle) -> None:
    body = {
        "username": unique_localpart("intruder"),
        "password": "p4ssw0rd-long",
        "auth": {"type": "m.login.dummy"},
    }
    url = synapse.public_url + "/_matrix/client/v3/register"
    # Twice over: the guard asks for a token, and behind it Synapse registers nobody (with a token it
    # takes the request for an appservice's and refuses it too).
    status, reply = http("POST", url, body)
    assert (status, reply.get("errcode")) == (401, "M_MISSING_TOKEN")
    status, reply = http("POST", url, body, token=synapse.admin_token)
    assert status in (400, 403) and "access_token" not in reply, reply
    for token in (None, synapse.admin_token):
        status, reply = http("GET", url + "/available?username=anyone", token=token)
        assert status in (401, 403) and reply.get("available") is not True


def test_guest_registration_refused(synapse: SynapseHandle) -> None:
    for token in (None, synapse.admin_token):
        status, body = http("POST", synapse.public_url + "/_matrix/client/v3/register?kind=guest", {}, token)
        assert status in (401, 403), body
        assert "access_token" not in body


# --- room directory --------------------------------------------------------------------------------------


def test_public_rooms_need_a_token(synapse: SynapseHandle) -> None:
    for method, body in (("GET", None), ("POST", {})):
        status, reply = http(method, synapse.public_url + "/_matrix/client/v3/publicRooms", body)
        assert status == 401 and reply["errcode"] == "M_MISSING_TOKEN", (method, status, reply)
    status, _ = http("GET", synapse.public_url + "/_matrix/client/v3/publicRooms", token=synapse.admin_token)
    assert status == 200


# --- admin API -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/_synapse/admin/v1/server_version"),
        ("GET", "/_synapse/admin/v2/users"),
        ("GET", "/_synapse/admin/v1/rooms"),
        # The shared-secret registration endpoint is admin API too: no nonce for outsiders.
        ("GET", "/_synapse/admin/v1/register"),
        ("PUT", "/_synapse/admin/v2/users/@evil:example.test"),
        ("GET", "/_synapse/admin"),
        ("GET", "/_synapse/admin/"),
        ("GET", "/_synapse/admin/v1/../v1/server_version"),
        ("GET", "/_synapse//admin/v1/server_version"),
        ("GET", "/_synapse/./admin/v1/server_version"),
        ("GET", "/_synapse/%61dmin/v1/server_version"),
    ],
)
def test_admin_api_refused_on_public_listener(synapse: SynapseHandle, method: str, path: str) -> None:
    body: dict[str, Any] | None = {} if method == "PUT" else None
    status, reply = http(method, synapse.public_url + path, body, token=synapse.admin_token)
    assert status == 404, (path, status, reply)
    assert "server_version" not in reply and "users" not in reply and "nonce" not in reply


def test_admin_api_works_on_loopback_listener(synapse: SynapseHandle) -> None:
    status, reply = http(
        "GET", synapse.admin_url + "/_synapse/admin/v1/server_version", token=synapse.admin_token
    )
    assert status == 200 and reply["server_version"]
    status, reply = http(
        "GET", synapse.admin_url + "/_synapse/admin/v2/users?limit=1", token=synapse.admin_token
    )
    assert status == 200 and "users" in reply
    assert synapse.server.config["listeners"][1]["bind_addresses"] == ["127.0.0.1"]


def test_public_listener_serves_the_client_api(synapse: SynapseHandle) -> None:
    status, reply = http("GET", synapse.public_url + "/_matrix/client/versions")
    assert status == 200 and reply["versions"]
    status, reply = http(
        "GET", synapse.public_url + "/_matrix/client/v3/account/whoami", token=synapse.admin_token
    )
    assert status == 200 and reply["user_id"] == synapse.admin_user_id


def test_a_synapse_password_logs_nobody_in(synapse: SynapseHandle) -> None:
    # An account made with a password (as register_new_matrix_user does) has it in Synapse's table, but
    # local passwords are off: only the directory module answers m.login.password, and this server has none.
    person = synapse.register(unique_localpart("login"), "secret-pass-8")
    for base in (synapse.public_url, synapse.admin_url):
        status, reply = http(
            "POST",
            base + "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": person.user_id},
                "password": "secret-pass-8",
            },
        )
        assert status in (400, 403) and "access_token" not in reply, (base, status, reply)
        status, reply = http("GET", base + "/_matrix/client/v3/login")
        assert status == 200 and "m.login.password" not in {f["type"] for f in reply["flows"]}
    # The token from registration (the only way in for a local account) works.
    status, reply = http(
        "GET", synapse.public_url + "/_matrix/client/v3/account/whoami", token=person.access_token
    )
    assert (status, reply.get("user_id")) == (200, person.user_id)


# --- nothing readable without a token (issue 12) ---------------------------------------------------------


def _org_tree(handle: SynapseHandle, world_readable: bool = True) -> dict[str, str]:
    """A department space with a room, made the way old servers had them: world-readable, with aliases."""
    token, c = handle.admin_token, handle.admin_url + "/_matrix/client/v3"
    alias = unique_localpart("dept")
    visibility = "world_readable" if world_readable else "shared"
    status, space = http(
        "POST",
        c + "/createRoom",
        {
            "name": "Департамент информационных технологий",
            "topic": "Правительство Москвы / Департамент информационных технологий",
            "preset": "public_chat",
            "visibility": "private",
            "room_alias_name": alias,
            "creation_content": {"type": "m.space"},
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": visibility},
                },
            ],
        },
        token=token,
    )
    assert status == 200, space
    status, room = http("POST", c + "/createRoom", {"name": "Общий", "preset": "public_chat"}, token=token)
    assert status == 200, room
    return {
        "alias": f"#{alias}:{handle.server_name}",
        "space_id": space["room_id"],
        "room_id": room["room_id"],
        "person_id": handle.admin_user_id,
        "admin_user": handle.admin_user_id,
        "admin_password": handle.admin.password,
    }


def test_outsiders_read_nothing_and_employees_change_nothing(synapse: SynapseHandle) -> None:
    tree = _org_tree(synapse)
    # The alias really resolves for someone with a token: the refusals below are the guard, not a 404.
    status, reply = http(
        "GET",
        f"{synapse.public_url}/_matrix/client/v3/directory/room/{urllib.parse.quote(tree['alias'])}",
        token=synapse.admin_token,
    )
    assert (status, reply.get("room_id")) == (200, tree["space_id"])
    for base in (synapse.public_url, synapse.admin_url):  # every listener, not only the proxied one
        employee = synapse.register(unique_localpart("emp"), "Synapse-side-pw-1")
        failures = closed_server_failures(
            base,
            **tree,
            employee={
                "token": employee.access_token,
                "user_id": employee.user_id,
                "password": employee.password,
                "new_password": "Second-password-2",
            },
        )
        assert not failures, "\n".join([base, *failures])
        # What the employee may not write, the sync (a server admin) does.
        status, reply = http(
            "PUT",
            f"{base}/_matrix/client/v3/profile/{urllib.parse.quote(employee.user_id)}/org.civmatrix.title",
            {"org.civmatrix.title": "Главный специалист"},
            token=synapse.admin_token,
        )
        assert status == 200, reply


def test_a_weakened_server_fails_the_probes(tmp_path: Path) -> None:
    # Local passwords on and the guard taken off: the probe set must notice both.
    server = EmbeddedSynapse(
        tmp_path / "weak",
        server_name=SERVER_NAME,
        rate_limits=TEST_RATE_LIMITS,
        overrides={"password_config": {"localdb_enabled": True}},
    )
    for listener in server.config["listeners"]:
        listener["additional_resources"].pop("/_matrix/client", None)
    problems = closed_config_violations(server.config)
    assert any("localdb_enabled" in p for p in problems) and any("client_api_guard" in p for p in problems)
    server.start()
    try:
        admin = server.create_admin(ADMIN_LOCALPART)
        handle = SynapseHandle(server=server, admin=admin)
        employee = handle.register(unique_localpart("emp"), "Synapse-side-pw-1")
        tree = _org_tree(handle)
        failures = closed_server_failures(
            server.public_url,
            **tree,
            employee={
                "token": employee.access_token,
                "user_id": employee.user_id,
                "password": employee.password,
                "new_password": "Second-password-2",
            },
        )
        # nginx with the rule closes the tokenless reads on its own; what needs Synapse (a made-up token,
        # local passwords) it cannot fix.
        with _nginx_in_front_of(tmp_path, server.public_port) as url:
            through_nginx = {f.split(":", 1)[0] for f in closed_server_failures(url, **tree)}
    finally:
        server.stop()
    assert through_nginx == {
        "alias lookup with a made-up token",
        "admin password login",
        "admin password login (legacy r0)",
    }, through_nginx
    failed = {f.split(":", 1)[0] for f in failures}
    assert {
        "alias lookup",
        "space summary",
        "room directory visibility",
        "admin password login",
        "capabilities deny password, name and 3PID changes",
        "password change",
        "login with the attempted second password",
        "directory profile field (a title of one's own)",
    } <= failed, failures


# --- profiles, directory, encryption ---------------------------------------------------------------------


def test_profile_requires_auth_but_colleagues_may_look_up(synapse: SynapseHandle) -> None:
    colleague = synapse.register(unique_localpart("colleague"), "secret-pass-2", displayname="Смирнова Ольга")
    other = synapse.register(unique_localpart("other"), "secret-pass-3", displayname="Кузнецов Иван")
    url = f"{synapse.public_url}/_matrix/client/v3/profile/{colleague.user_id}"

    status, reply = http("GET", url)
    assert status == 401 and reply["errcode"] == "M_MISSING_TOKEN"
    # They share no room, and still see each other (limit_profile_requests_to_users_who_share_rooms: false).
    status, reply = http("GET", url, token=other.access_token)
    assert status == 200 and reply["displayname"] == "Смирнова Ольга"

    status, reply = http(
        "POST",
        f"{synapse.public_url}/_matrix/client/v3/user_directory/search",
        {"search_term": "Смирнова", "limit": 10},
        token=other.access_token,
    )
    assert status == 200
    assert colleague.user_id in {r["user_id"] for r in reply["results"]}


def test_private_rooms_and_dms_are_encrypted_by_default(synapse: SynapseHandle) -> None:
    person = synapse.register(unique_localpart("enc"), "secret-pass-4")
    for preset, encrypted in (("private_chat", True), ("trusted_private_chat", True), ("public_chat", False)):
        status, reply = http(
            "POST",
            synapse.public_url + "/_matrix/client/v3/createRoom",
            {"preset": preset, "is_direct": preset == "trusted_private_chat"},
            token=person.access_token,
        )
        assert status == 200, reply
        status, _ = http(
            "GET",
            f"{synapse.public_url}/_matrix/client/v3/rooms/{reply['room_id']}/state/m.room.encryption/",
            token=person.access_token,
        )
        assert (status == 200) is encrypted, preset


def test_url_previews_off(synapse: SynapseHandle) -> None:
    status, _ = http(
        "GET",
        synapse.public_url + "/_matrix/client/v1/media/preview_url?url=https://example.org",
        token=synapse.admin_token,
    )
    assert status in (403, 404)


# --- the config itself ------------------------------------------------------------------------------------


def test_generated_config_passes_synapse_check(synapse: SynapseHandle) -> None:
    check_config(synapse.server.config_path)


def _render(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return render_homeserver_config(
        server_name="city.example", data_dir=tmp_path, public_port=8008, admin_port=8009, **kwargs
    )


def test_production_config_is_closed(tmp_path: Path) -> None:
    config = _render(tmp_path)
    expected = {
        "federation_domain_whitelist": [],
        "trusted_key_servers": [],
        "enable_registration": False,
        "allow_guest_access": False,
        "allow_public_rooms_without_auth": False,
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        "push": {"include_content": False},
        "require_auth_for_profile_requests": True,
        "limit_profile_requests_to_users_who_share_rooms": False,
        "encryption_enabled_by_default_for_room_type": "invite",
        "report_stats": False,
        "suppress_key_server_warning": True,
    }
    assert {k: config[k] for k in expected} == expected
    assert config["password_config"] == {"enabled": True, "localdb_enabled": False}
    assert config["enable_set_displayname"] is False and config["enable_3pid_changes"] is False
    assert closed_config_violations(config) == []
    assert config["user_directory"]["search_all_users"] is True
    assert config["presence"]["enabled"] is True
    # Shared-secret registration is a dev/test switch; without it no one can mint accounts with a secret.
    assert "registration_shared_secret" not in config and "registration_shared_secret_path" not in config
    # Rate limits stay at Synapse's defaults in production.
    assert not [k for k in config if k.startswith("rc_")]
    resources = [
        name for listener in config["listeners"] for r in listener["resources"] for name in r["names"]
    ]
    assert set(resources) == {"client"}
    # No secret is inlined: they are files.
    assert "macaroon_secret_key" not in config and "form_secret" not in config


@pytest.mark.parametrize(
    ("overrides", "flagged"),
    [
        ({"password_config": {"localdb_enabled": True}}, "password_config.localdb_enabled"),
        ({"password_config": {"localdb_enabled": None}}, "password_config.localdb_enabled"),
        ({"password_config": {"enabled": False}}, "password_config.enabled"),
        ({"enable_set_displayname": True}, "enable_set_displayname"),
        ({"enable_3pid_changes": True}, "enable_3pid_changes"),
    ],
)
def test_a_weakened_config_is_flagged(tmp_path: Path, overrides: dict[str, Any], flagged: str) -> None:
    problems = closed_config_violations(_render(tmp_path, overrides=overrides))
    assert len(problems) == 1 and problems[0].startswith(flagged), problems


def test_a_listener_without_the_guard_is_flagged(tmp_path: Path) -> None:
    stock = _render(tmp_path, refuse_admin_on_public=False)
    problems = closed_config_violations(stock)
    assert [p.split(" ", 1)[0] for p in problems] == ["listeners[0]", "listeners[0]", "listeners[1]"]
    assert any("readable without a token" in p for p in problems)
    assert any("serves the admin API" in p for p in problems)


def test_production_config_with_postgres_passes_synapse_check(tmp_path: Path) -> None:
    config = _render(
        tmp_path,
        database={"host": "127.0.0.1", "port": 5432, "user": "synapse", "database": "synapse"},
    )
    assert config["database"]["name"] == "psycopg2"
    assert config["database"]["args"]["database"] == "synapse"
    check_config(write_homeserver_config(tmp_path, config))


def test_config_with_a_login_module_passes_synapse_check(tmp_path: Path) -> None:
    ldap = {
        "module": "ldap_auth_provider.LdapAuthProviderModule",
        "config": {
            "enabled": True,
            "uri": "ldap://127.0.0.1:389",
            "base": "ou=people,dc=city,dc=example",
            "attributes": {"uid": "uid", "mail": "mail", "name": "cn"},
        },
    }
    config = _render(tmp_path, modules=[ldap])
    # The caller's modules first, then the two every rendered config loads for the space tree.
    assert config["modules"] == [
        ldap,
        *({"module": m, "config": {}} for m in (PRESENCE_MODULE, SPACE_BROWSING_MODULE)),
    ]
    check_config(write_homeserver_config(tmp_path, config))


def test_overrides_merge_last_and_deep(tmp_path: Path) -> None:
    config = _render(
        tmp_path, rate_limits={"rc_joins": {"local": {"per_second": 5}}}, overrides={"push": {"x": 1}}
    )
    assert config["rc_joins"] == {"local": {"per_second": 5}}
    assert config["push"] == {"include_content": False, "x": 1}


def test_admin_listener_must_stay_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(SynapseError, match="loopback"):
        _render(tmp_path, admin_bind_host="0.0.0.0")


def test_check_config_reports_synapse_message(tmp_path: Path) -> None:
    config = _render(
        tmp_path, overrides={"listeners": [{"port": 1, "type": "http", "resources": [{"names": ["nope"]}]}]}
    )
    path = write_homeserver_config(tmp_path, config)
    with pytest.raises(SynapseError, match="Unknown listener resource"):
        check_config(path)


def test_written_files_keep_secrets_out_of_the_config(tmp_path: Path) -> None:
    config = _render(tmp_path, shared_secret_registration=True)
    path = write_homeserver_config(tmp_path, config)
    secret = (tmp_path / REGISTRATION_SECRET_FILE).read_text()
    assert secret not in path.read_text()
    assert (tmp_path / REGISTRATION_SECRET_FILE).stat().st_mode & 0o077 == 0
    assert yaml.safe_load(path.read_text())["registration_shared_secret_path"].endswith(
        REGISTRATION_SECRET_FILE
    )


# --- the embedded server's lifecycle ----------------------------------------------------------------------


def test_restart_after_kill_keeps_state(fresh_synapse: Callable[..., SynapseHandle]) -> None:
    handle = fresh_synapse()
    server = handle.server
    assert server.last_start_seconds is not None and server.last_start_seconds < 30
    person = handle.register("survivor", "secret-pass-5")

    server.kill()
    assert not server.is_running()
    began = time.monotonic()
    server.start()
    restart_seconds = time.monotonic() - began

    status, reply = http(
        "GET", server.public_url + "/_matrix/client/v3/account/whoami", token=person.access_token
    )
    assert status == 200 and reply["user_id"] == person.user_id
    status, _ = http("GET", server.admin_url + "/_synapse/admin/v1/server_version", token=handle.admin_token)
    assert status == 200
    server.stop()
    assert not server.is_running()
    assert restart_seconds < 30


def test_second_server_on_same_directory_is_refused(synapse: SynapseHandle) -> None:
    twin = EmbeddedSynapse(synapse.server.data_dir, public_port=free_port(), admin_port=free_port())
    with pytest.raises(SynapseError, match="already runs"):
        twin.start()
    assert synapse.server.is_running()


def test_port_in_use_is_reported(synapse: SynapseHandle, tmp_path: Path) -> None:
    clash = EmbeddedSynapse(
        tmp_path / "clash", public_port=synapse.server.public_port, admin_port=free_port()
    )
    with pytest.raises(SynapseError, match=f"port 127.0.0.1:{synapse.server.public_port} is already in use"):
        clash.start()


def test_failed_start_quotes_the_log(tmp_path: Path) -> None:
    broken = EmbeddedSynapse(
        tmp_path / "broken", overrides={"database": {"name": "psycopg2", "args": {"port": 1}}}
    )
    with pytest.raises(SynapseError, match="exited with code") as err:
        broken.start()
    assert "homeserver.log (tail)" in str(err.value)
    assert not broken.is_running()


# --- the one list of tokenless paths (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/_matrix/client/versions", False),
        ("GET", "/_matrix/client/v3/login", False),
        ("POST", "/_matrix/client/v3/login", False),
        ("POST", "/_matrix/client/r0/login", False),
        ("POST", "/_matrix/client/api/v1/login", False),
        ("POST", "/_matrix/client/v3/refresh", False),
        ("GET", "/_matrix/client/v1/auth_metadata", False),
        ("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", False),
        ("OPTIONS", "/_matrix/client/v3/directory/room/%23x:city.example", False),  # CORS preflight
        ("GET", "/health", False),  # outside the client API
        ("GET", "/.well-known/matrix/client", False),
        ("GET", "/_matrix/client/v3/directory/room/%23x:city.example", True),
        ("GET", "/_matrix/client/v1/room_summary/!r:city.example", True),
        ("GET", "/_matrix/client/v3/directory/list/room/!r:city.example", True),
        ("GET", "/_matrix/client/v3/publicRooms", True),
        ("GET", "/_matrix/client/v3/login/sso/redirect", True),  # no SSO on this server
        ("POST", "/_matrix/client/v3/register", True),
        ("POST", "/_matrix/client/v3/account/password/email/requestToken", True),
        ("GET", "/_matrix/client/v3/login/../directory/room/%23x:city.example", True),
        ("GET", "/_matrix/client/v3/loginx", True),
        ("GET", "/_matrix/client/v3/login/", True),
        ("GET", "/_matrix/client/versions/", True),
        ("GET", "/_matrix/client/v4/login", True),
    ],
)
def test_which_requests_need_a_token(method: str, path: str, needed: bool) -> None:
    assert needs_token(method, path) is needed


@pytest.mark.parametrize(
    ("method", "path", "owned"),
    [
        ("PUT", "/_matrix/client/v3/profile/@a:city.example/org.civmatrix.title", True),
        ("DELETE", "/_matrix/client/v3/profile/@a:city.example/org.civmatrix.directory", True),
        ("PUT", "/_matrix/client/v3/profile/%40a%3Acity.example/org%2Ecivmatrix%2Ephone", True),
        (
            "PUT",
            "/_matrix/client/unstable/uk.tcpip.msc4133/profile/@a:city.example/org.civmatrix.email",
            True,
        ),
        ("GET", "/_matrix/client/v3/profile/@a:city.example/org.civmatrix.title", False),
        ("PUT", "/_matrix/client/v3/profile/@a:city.example/avatar_url", False),
        ("PUT", "/_matrix/client/v3/profile/@a:city.example/m.tz", False),
        ("PUT", "/_matrix/client/v3/profile/@a:city.example/org.civmatrixx", False),
    ],
)
def test_which_profile_writes_belong_to_the_directory(method: str, path: str, owned: bool) -> None:
    assert writes_directory_profile_field(method, path) is owned


def test_the_nginx_site_takes_its_public_paths_from_the_one_list() -> None:
    site = proxy.http_context(
        proxy.Proxy(
            server_name="city.example",
            public_baseurl="https://matrix.city.example/",
            listen=("127.0.0.1:8443",),
            main=proxy.Upstream("synapse_main", ("127.0.0.1:8008",)),
        )
    )
    block = site.split("$civmatrix_needs_token {", 1)[1].split("\n}", 1)[0]
    # Each public path is a single-quoted nginx regex (backslashes doubled inside the quotes) mapped to 0.
    patterns = [
        line.strip()[2:].rsplit("' 0;", 1)[0].replace("\\\\", "\\")
        for line in block.splitlines()
        if line.strip().startswith("'~")
    ]
    assert patterns == list(PUBLIC_CLIENT_PATHS)
    # nginx regexes are PCRE; Python's re reads these the same (no lookarounds, no named groups).
    assert all(p.startswith("^/_matrix/client/") and p.endswith("$") and "(?" not in p for p in patterns)


# --- tokens for the local accounts: registration, then rotation on the admin listener (issue 12) -----------


def test_local_accounts_get_and_rotate_tokens_without_any_password(
    synapse: SynapseHandle, tmp_path: Path
) -> None:
    secret_file = str(synapse.server.data_dir / REGISTRATION_SECRET_FILE)
    url = synapse.admin_url
    admin_file, bot_file = tmp_path / "admin_token", tmp_path / "bot_token"
    ops, bot = unique_localpart("ops"), unique_localpart("events")
    common = ["--url", url, "--secret-file", secret_file]
    assert (
        bootstrap.main(["register", *common, "--user", ops, "--admin", "--token-file", str(admin_file)]) == 0
    )
    assert bootstrap.main(["register", *common, "--user", bot, "--token-file", str(bot_file)]) == 0
    assert admin_file.stat().st_mode & 0o077 == 0 and bot_file.stat().st_mode & 0o077 == 0
    admin_token, bot_token = admin_file.read_text().strip(), bot_file.read_text().strip()
    users = "/_synapse/admin/v2/users?limit=1"
    status, reply = http("GET", url + users, token=admin_token)
    assert status == 200, reply
    _, bot_who = http("GET", url + "/_matrix/client/v3/account/whoami", token=bot_token)
    assert bot_who["user_id"] == f"@{bot}:{SERVER_NAME}" and bot_who["device_id"]

    # The admin rotates its own token, then the bot's: same devices, the old tokens dead at once.
    assert bootstrap.main(["rotate", "--url", url, "--token-file", str(admin_file)]) == 0
    new_admin = admin_file.read_text().strip()
    assert new_admin != admin_token
    status, reply = http("GET", url + users, token=admin_token)
    assert (status, reply.get("errcode")) == (401, "M_UNKNOWN_TOKEN")
    status, reply = http("GET", url + users, token=new_admin)
    assert status == 200, reply
    rotate_bot = [
        "rotate",
        "--url",
        url,
        "--admin-token-file",
        str(admin_file),
        "--token-file",
        str(bot_file),
    ]
    assert bootstrap.main(rotate_bot) == 0
    new_bot = bot_file.read_text().strip()
    status, who = http("GET", url + "/_matrix/client/v3/account/whoami", token=new_bot)
    assert (status, who["device_id"]) == (200, bot_who["device_id"])  # the bot keeps its keys' device
    assert http("GET", url + "/_matrix/client/v3/account/whoami", token=bot_token)[0] == 401

    # Only an admin mints, only on the admin listener, only for a device that exists.
    body = {"user_id": bot_who["user_id"], "device_id": bot_who["device_id"]}
    status, reply = http("POST", url + DEVICE_TOKEN_PATH, body, token=new_bot)
    assert (status, reply.get("errcode")) == (403, "M_FORBIDDEN")
    status, reply = http("POST", url + DEVICE_TOKEN_PATH, body)
    assert (status, reply.get("errcode")) == (401, "M_MISSING_TOKEN")
    status, reply = http("POST", synapse.public_url + DEVICE_TOKEN_PATH, body, token=new_admin)
    assert status == 404 and "access_token" not in reply
    status, reply = http(
        "POST", url + DEVICE_TOKEN_PATH, {**body, "device_id": "NOSUCHDEVICE"}, token=new_admin
    )
    assert status == 404 and "access_token" not in reply
    status, reply = http("POST", url + DEVICE_TOKEN_PATH, {**body, "user_id": "@x:elsewhere.test"}, new_admin)
    assert status == 400 and "access_token" not in reply
    # A bad secret or a dead token: a clear error and exit 1, the token file untouched.
    (tmp_path / "wrong").write_text("not-the-secret")
    bad = [
        "register",
        "--url",
        url,
        "--secret-file",
        str(tmp_path / "wrong"),
        "--user",
        unique_localpart("x"),
    ]
    assert bootstrap.main([*bad, "--token-file", str(tmp_path / "x_token")]) == 1
    assert not (tmp_path / "x_token").exists() and not list(tmp_path.glob(".x_token.*"))
    bot_file.write_text(bot_token)
    assert bootstrap.main(rotate_bot) == 1
    assert bot_file.read_text() == bot_token


# --- the same rule in a real nginx in front of Synapse ------------------------------------------------------


@contextlib.contextmanager
def _nginx_in_front_of(tmp_path: Path, upstream_port: int) -> Iterator[str]:
    """The product's nginx site (provisioner.proxy, as deploy/ and the demo render it) in a real nginx on
    loopback in front of one Synapse listener; yields its base URL."""
    port = free_port()
    site = proxy.site(
        proxy.Proxy(
            server_name="city.example",
            public_baseurl=f"http://127.0.0.1:{port}/",
            listen=(f"127.0.0.1:{port}",),
            main=proxy.Upstream("synapse_main", (f"127.0.0.1:{upstream_port}",)),
        )
    )
    with EmbeddedNginx(tmp_path / "nginx", site, port=port):
        yield f"http://127.0.0.1:{port}"


def test_nginx_with_the_rule_refuses_what_synapse_refuses(synapse: SynapseHandle, tmp_path: Path) -> None:
    tree = _org_tree(synapse)
    employee = synapse.register(unique_localpart("emp"), "Synapse-side-pw-1")
    with _nginx_in_front_of(tmp_path, synapse.server.public_port) as url:
        failures = closed_server_failures(
            url,
            **tree,
            employee={
                "token": employee.access_token,
                "user_id": employee.user_id,
                "password": employee.password,
                "new_password": "Second-password-2",
            },
        )
        assert not failures, "\n".join(failures)
        # nginx's refusal carries CORS for Element Web, and a CORS preflight still passes.
        alias = f"/_matrix/client/v3/directory/room/{urllib.parse.quote(tree['alias'])}"
        with urllib.request.urlopen(urllib.request.Request(url + alias, method="OPTIONS"), timeout=10) as r:
            assert r.status in (200, 204)  # answered by Synapse, not refused
        try:
            urllib.request.urlopen(url + alias, timeout=10)
            raise AssertionError("nginx let a tokenless request through")
        except urllib.error.HTTPError as err:
            assert err.code == 401 and err.headers["Access-Control-Allow-Origin"] == "*"
            assert json.loads(err.read())["errcode"] == "M_MISSING_TOKEN"
        status, reply = http("GET", f"{url}{alias}?access_token={synapse.admin_token}")
        assert (status, reply.get("room_id")) == (200, tree["space_id"])
