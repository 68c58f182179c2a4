"""The outsider and employee probe sets of issue 12, as plain HTTP against any base URL.

Reusable by every test that has a closed server to probe: the Synapse listener directly
(tests/test_closed_server.py, tests/test_directory_login.py) and the production topology through nginx
(the topology test calls :func:`closed_server_failures` with nginx's URL). Each probe says what an
outsider or an employee would try and what a closed server must answer; :func:`run_probes` returns the
probes that got something else, so ``assert not failures`` shows every miss at once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Reply = tuple[int, dict[str, Any]]


def http(
    method: str,
    url: str,
    body: Mapping[str, Any] | None = None,
    token: str | None = None,
    *,
    timeout: float = 30,
) -> Reply:
    """One raw request (the path is sent as given, never normalised); returns (status, JSON body or {})."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {}
    return status, parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    expected: str  # what a closed server answers, in words (shown on failure)
    ok: Callable[[int, dict[str, Any]], bool] = field(repr=False)
    body: Mapping[str, Any] | None = None
    token: str | None = field(default=None, repr=False)


def _missing_token(status: int, body: dict[str, Any]) -> bool:
    return status == 401 and body.get("errcode") == "M_MISSING_TOKEN"


def _unknown_token(status: int, body: dict[str, Any]) -> bool:
    return status == 401 and body.get("errcode") == "M_UNKNOWN_TOKEN"


def _refused_login(status: int, body: dict[str, Any]) -> bool:
    # 403 M_FORBIDDEN from the directory module; 400 "Unknown login type" on a server without it; 429 from
    # production's login rate limit (3 attempts, then one per 6 s): refused too, no token. The tests that
    # must see the reason run with test rate limits, and the admin's login is the first login probe.
    return status in (400, 403, 429) and "access_token" not in body


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _login(user: str, password: str) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }


def outsider_probes(
    *, alias: str, space_id: str, room_id: str, person_id: str, admin_user: str, admin_password: str
) -> list[Probe]:
    """What someone without a token tries: read the org tree, log in as the admin, break the login."""
    c = "/_matrix/client"
    refused = "401 M_MISSING_TOKEN"
    probes = [
        Probe("alias lookup", "GET", f"{c}/v3/directory/room/{_q(alias)}", refused, _missing_token),
        Probe("alias lookup (r0)", "GET", f"{c}/r0/directory/room/{_q(alias)}", refused, _missing_token),
        Probe("alias lookup with a made-up token", "GET", f"{c}/v3/directory/room/{_q(alias)}",
              "401 M_UNKNOWN_TOKEN", _unknown_token, token="syt_bWFkZS11cA_notreal_000000"),
        Probe("space summary", "GET", f"{c}/v1/room_summary/{_q(space_id)}", refused, _missing_token),
        Probe("space summary by alias", "GET", f"{c}/v1/room_summary/{_q(alias)}", refused, _missing_token),
        Probe("room directory visibility", "GET", f"{c}/v3/directory/list/room/{_q(room_id)}", refused,
              _missing_token),
        Probe("public rooms", "GET", f"{c}/v3/publicRooms", refused, _missing_token),
        Probe("public rooms (POST)", "POST", f"{c}/v3/publicRooms", refused, _missing_token, body={}),
        Probe("space hierarchy", "GET", f"{c}/v1/rooms/{_q(space_id)}/hierarchy", refused, _missing_token),
        Probe("room state", "GET", f"{c}/v3/rooms/{_q(room_id)}/state", refused, _missing_token),
        Probe("room messages", "GET", f"{c}/v3/rooms/{_q(room_id)}/messages?dir=b", refused, _missing_token),
        Probe("room initial sync", "GET", f"{c}/v3/rooms/{_q(room_id)}/initialSync", refused, _missing_token),
        Probe("profile", "GET", f"{c}/v3/profile/{_q(person_id)}", refused, _missing_token),
        Probe("user directory", "POST", f"{c}/v3/user_directory/search", refused, _missing_token,
              body={"search_term": "a"}),
        Probe("capabilities", "GET", f"{c}/v3/capabilities", refused, _missing_token),
        Probe("admin password login", "POST", f"{c}/v3/login", "refused (400/403), no token", _refused_login,
              body=_login(admin_user, admin_password)),
        Probe("admin password login (legacy r0)", "POST", f"{c}/r0/login", "refused (400/403), no token",
              _refused_login, body=_login(admin_user, admin_password)),
        Probe("NUL in the login", "POST", f"{c}/v3/login", "refused (400/403), never 500", _refused_login,
              body=_login("ivanov\x00.ii", "x")),
        Probe("NUL in the password", "POST", f"{c}/v3/login", "refused (400/403), never 500", _refused_login,
              body=_login("ivanov.ii", "pass\x00word")),
        Probe("control characters in the login", "POST", f"{c}/v3/login", "refused (400/403)",
              _refused_login, body=_login("ivanov.ii\r\n\x1b[2J", "x")),
        Probe("over-long login", "POST", f"{c}/v3/login", "refused (400/403)", _refused_login,
              body=_login("a" * 20_000, "x")),
        Probe("over-long password", "POST", f"{c}/v3/login", "refused (400/403)", _refused_login,
              body=_login("ivanov.ii", "p" * 100_000)),
        # What a client needs before login still works: a server that refused everything would pass the rest.
        Probe("versions", "GET", f"{c}/versions", "200", lambda s, b: s == 200 and bool(b.get("versions"))),
        Probe("login flows", "GET", f"{c}/v3/login", "200 with flows", lambda s, b: s == 200 and "flows" in b),
    ]  # fmt: skip
    return probes


def employee_probes(*, token: str, user_id: str, password: str, new_password: str) -> list[Probe]:
    """What a logged-in employee tries: a second password, another name, an address of their own.

    ``password`` is their real (directory) password, used for user-interactive auth as Element would.
    """
    c = "/_matrix/client"
    localpart = user_id[1:].split(":", 1)[0]
    uia = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }

    def capabilities_closed(status: int, body: dict[str, Any]) -> bool:
        caps = body.get("capabilities") or {}
        return status == 200 and all(
            (caps.get(name) or {}).get("enabled") is False
            for name in ("m.change_password", "m.set_displayname", "m.3pid_changes")
        )

    return [
        Probe("capabilities deny password, name and 3PID changes", "GET", f"{c}/v3/capabilities",
              "m.change_password, m.set_displayname, m.3pid_changes all false", capabilities_closed, token=token),
        Probe("password change", "POST", f"{c}/v3/account/password", "refused (not 200)",
              lambda s, b: s != 200 and s < 500, body={"new_password": new_password, "auth": uia}, token=token),
        Probe("login with the attempted second password", "POST", f"{c}/v3/login", "refused, no token",
              _refused_login, body=_login(localpart, new_password)),
        Probe("display name change", "PUT", f"{c}/v3/profile/{_q(user_id)}/displayname", "403 M_FORBIDDEN",
              lambda s, b: s == 403 and b.get("errcode") == "M_FORBIDDEN", body={"displayname": "Кто-то Другой"},
              token=token),
        Probe("directory profile field (a title of one's own)", "PUT",
              f"{c}/v3/profile/{_q(user_id)}/org.civmatrix.title", "403 M_FORBIDDEN",
              lambda s, b: s == 403 and b.get("errcode") == "M_FORBIDDEN", body={"org.civmatrix.title": "Мэр"},
              token=token),
        Probe("3PID add", "POST", f"{c}/v3/account/3pid/add", "refused with M_FORBIDDEN",
              lambda s, b: s in (400, 403) and b.get("errcode") == "M_FORBIDDEN",
              body={"client_secret": "s3cr3t", "sid": "1", "auth": uia}, token=token),
        Probe("3PID email token", "POST", f"{c}/v3/account/3pid/email/requestToken", "refused (4xx, not 500)",
              lambda s, b: 400 <= s < 500,
              body={"client_secret": "s3cr3t", "email": "x@example.org", "send_attempt": 1}, token=token),
    ]  # fmt: skip


def run_probes(base_url: str, probes: Iterable[Probe]) -> list[str]:
    """Every probe whose answer is not the closed one, as ``name: METHOD path → status errcode (expected)``."""
    failures = []
    for p in probes:
        status, body = http(p.method, base_url.rstrip("/") + p.path, p.body, p.token)
        if not p.ok(status, body):
            got = f"{status} {body.get('errcode', '')}".strip()
            failures.append(f"{p.name}: {p.method} {p.path[:80]} → {got} (expected {p.expected})")
    return failures


def closed_server_failures(
    base_url: str,
    *,
    alias: str,
    space_id: str,
    room_id: str,
    person_id: str,
    admin_user: str,
    admin_password: str,
    employee: Mapping[str, str] | None = None,
) -> list[str]:
    """The whole probe set against ``base_url``: outsiders, then (if given) one employee.

    ``employee`` holds ``token``, ``user_id``, ``password`` (their real one) and ``new_password``.
    """
    probes = outsider_probes(
        alias=alias, space_id=space_id, room_id=room_id, person_id=person_id,
        admin_user=admin_user, admin_password=admin_password,
    )  # fmt: skip
    if employee is not None:
        probes += employee_probes(**employee)
    return run_probes(base_url, probes)
