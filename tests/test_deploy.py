"""The deployment in deploy/: static checks of every file, and Synapse with workers started for real.

Docker is not available here, so the compose file is checked statically: it parses, every file it mounts or
builds from exists, every variable and secret it uses is declared. The Synapse configs it mounts are the
output of :mod:`provisioner.deploy` (a test keeps them current) and pass Synapse's own config check.
The worker topology is then proven with real processes: the main process, a sync worker, an event
persister and the presence writer, started from the generated files against PostgreSQL and Redis.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import deploy
from provisioner.embedded.ports import LOOPBACK, free_port, free_ports
from provisioner.synapse.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PG = {"host": LOOPBACK, "port": 5432, "user": "postgres"}

# The example organisation the committed files are rendered for (docs/DEPLOYMENT.md shows how to render
# your own). The login module's config is what provisioner.synapse.auth.module_config_from makes of
# deploy/civmatrix.yaml (a test checks that).
EXAMPLE_SERVER_NAME = "city.example"
EXAMPLE_BASEURL = "https://matrix.city.example/"
EXAMPLE_LOGIN: Mapping[str, Any] = {
    "uri": "ldaps://ldap.city.example:636",
    "bind_dn": "cn=civmatrix,ou=services,dc=city,dc=example",
    "base_dn": "ou=people,dc=city,dc=example",
    "filter": "(objectClass=inetOrgPerson)",
    "login_attribute": "uid",
    "anchor_attribute": "entryUUID",
    "disabled_filter": "(employeeType=disabled)",
    "start_tls": False,
    "timeout": 10.0,
    "bind_password_file": "/run/secrets/ldap_password",
}


def example_deployment(**changes: Any) -> deploy.Deployment:
    options: dict[str, Any] = {"target": "compose", "login": EXAMPLE_LOGIN} | changes
    return deploy.standard_deployment(EXAMPLE_SERVER_NAME, EXAMPLE_BASEURL, **options)


# --------------------------------------------------------------------------------------------------------
# Static: every file parses, references exist
# --------------------------------------------------------------------------------------------------------


def test_every_yaml_and_json_file_in_deploy_parses() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json", ".config"))
    assert len(files) >= 8
    for path in files:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        assert isinstance(data, dict) and data, f"{path} is empty or not a mapping"


def test_committed_files_are_what_the_generator_makes() -> None:
    """deploy/synapse, deploy/nginx and deploy/element-config.json are generated: never hand-edited.

    ``CIVMATRIX_REGENERATE_DEPLOY=1 pytest tests/test_deploy.py -k generator`` rewrites them after a change
    to provisioner/deploy.py or to the example inputs above.
    """
    if os.environ.get("CIVMATRIX_REGENERATE_DEPLOY") == "1":
        deploy.write_deployment(DEPLOY, example_deployment())
    expected = deploy.deployment_files(example_deployment())
    for rel, text in expected.items():
        assert (DEPLOY / rel).read_text(encoding="utf-8") == text, (
            f"deploy/{rel} differs from provisioner.deploy's output; regenerate it (docs/DEPLOYMENT.md)"
        )
    on_disk = {p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "synapse" / "workers").glob("*.yaml")}
    assert on_disk == {rel for rel in expected if rel.startswith("synapse/workers/")}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _declared_env() -> set[str]:
    names = set()
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def test_compose_variables_are_declared_in_env_example() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used, "the compose file is expected to take its versions and ports from .env"
    assert used <= _declared_env(), f"undeclared in deploy/.env.example: {sorted(used - _declared_env())}"
    # "$$" escapes a literal dollar for the container's shell; a lone "$name" would be interpolated.
    assert not re.findall(r"(?<!\$)\$[A-Za-z_]", text.replace("${", "")), "bare $VAR in docker-compose.yml"


def test_compose_mounts_and_builds_only_files_that_exist() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        else:
            assert "image" in service, f"{name} has neither image nor build"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: mounts {source}, which is not in the repository"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} not declared"
        for env_file in service.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file} missing"


def test_compose_secrets_are_declared_and_documented() -> None:
    compose = _compose()
    declared = compose["secrets"]
    used = {
        (s if isinstance(s, str) else s["source"])
        for service in compose["services"].values()
        for s in service.get("secrets", [])
    }
    assert used <= set(declared), f"undeclared secrets: {sorted(used - set(declared))}"
    assert set(declared) <= used, f"declared but unused secrets: {sorted(set(declared) - used)}"
    readme = (DEPLOY / "secrets" / "README.md").read_text(encoding="utf-8")
    for name, spec in declared.items():
        assert spec["file"] == f"./secrets/{name}", f"secret {name} must live at ./secrets/{name}"
        assert f"`{name}`" in readme, f"deploy/secrets/README.md does not say how to make {name}"
    # What provisioner.deploy.ensure_secrets generates is exactly what the Synapse and Postgres services use.
    assert set(deploy.GENERATED_SECRETS) <= set(declared)
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
                assert key.endswith("_FILE"), (
                    f"{name}: {key} looks like an inline secret; use a *_FILE secret"
                )


def test_compose_runs_every_generated_worker_with_its_own_config() -> None:
    compose = _compose()
    d = example_deployment()
    commands = {name: " ".join(s.get("command", [])) for name, s in compose["services"].items()}
    for worker in d.workers:
        assert worker.name in compose["services"], f"no compose service for worker {worker.name}"
        command = commands[worker.name]
        assert "synapse.app.generic_worker" in command
        assert f"/etc/synapse/workers/{worker.name}.yaml" in command
        assert command.index("/etc/synapse/homeserver.yaml") < command.index(f"/workers/{worker.name}.yaml")
    assert "synapse.app.homeserver" in commands["synapse"]
    # The admin listener is loopback inside the synapse container (Rule 1): whoever talks to it shares it.
    for name in ("provisioner", "bot"):
        assert compose["services"][name]["network_mode"] == "service:synapse"
    assert "provisioner --config /etc/civmatrix/civmatrix.yaml sync --quiet" in commands["provisioner"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml run" in commands["bot"]
    # Only the proxy publishes ports.
    published = [name for name, s in compose["services"].items() if s.get("ports")]
    assert published == ["nginx"]


def test_no_process_serves_federation() -> None:
    d = example_deployment()
    hs = deploy.homeserver_config(d)
    listeners = list(hs["listeners"])
    for worker in d.workers:
        listeners += deploy.worker_config(d, worker)["worker_listeners"]
    names = {name for listener in listeners for r in listener["resources"] for name in r["names"]}
    assert names == {"client", "replication"}
    assert hs["federation_domain_whitelist"] == [] and hs["federation_sender_instances"] == []
    admin = [listener for listener in hs["listeners"] if listener["port"] == d.admin_port]
    assert [listener["bind_addresses"] for listener in admin] == [["127.0.0.1"]]


# --- nginx: a small model of its location matching, applied to the generated config -------------------


_QUOTED = r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\""


def _server_blocks(conf: str) -> list[str]:
    """Top-level ``server {}`` blocks; braces inside quoted strings (JSON answers) do not count."""
    blocks, depth, start = [], 0, None
    for m in re.finditer(_QUOTED + r"|\bserver\s*\{|\{|\}", conf):
        token = m.group()
        if token[0] in "'\"":
            continue
        if token.startswith("server") and depth == 0:
            start, depth = m.start(), 1
        elif token.endswith("{"):
            depth += bool(start is not None)
        elif start is not None:
            depth -= 1
            if depth == 0:
                blocks.append(conf[start : m.end()])
                start = None
    return blocks


def _route(block: str, path: str) -> str:
    """Which location body serves ``path``: nginx picks the longest prefix; ``^~`` stops there,
    otherwise the first matching regex (in file order) wins, else that longest prefix."""
    body = rf"((?:{_QUOTED}|[^{{}}'\"])*)"
    locations: list[tuple[str, str, str]] = re.findall(
        r"location\s+(\^~|~|=)?\s*(\S+)\s*\{" + body + r"\}", block
    )
    exact = [body for m, p, body in locations if m == "=" and path == p]
    if exact:
        return exact[0].strip()
    prefixes = [(m, p, body) for m, p, body in locations if m in ("", "^~") and path.startswith(p)]
    best = max(prefixes, key=lambda x: len(x[1]), default=None)
    if best and best[0] == "^~":
        return best[2].strip()
    for m, pattern, body in locations:
        if m == "~" and re.search(pattern, path):
            return body.strip()
    assert best is not None, f"no location for {path}"
    return best[2].strip()


def _upstream(body: str) -> str:
    found = re.match(r"proxy_pass http://(\w+);", body)
    return found.group(1) if found else body


def test_nginx_blocks_the_admin_api_and_federation_and_routes_to_workers() -> None:
    conf = (DEPLOY / "nginx" / "civmatrix.conf").read_text(encoding="utf-8")
    matrix = next(b for b in _server_blocks(conf) if "server_name matrix.city.example;" in b)
    for path in (
        "/_synapse/admin/v1/register",
        "/_synapse/admin/v2/users/@a:city.example",
        "/_synapse/admin",
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/.well-known/matrix/server",
        "/index.html",
    ):
        assert _route(matrix, path).startswith("return 404 "), path
    expected = {
        "/_matrix/client/v3/sync": "synapse_sync",
        "/_matrix/client/r0/sync": "synapse_sync",
        "/_matrix/client/v3/rooms/!r:city.example/messages": "synapse_sync",
        "/_matrix/client/v3/user_directory/search": "civmatrix_search",
        "/_matrix/client/v3/keys/query": "synapse_sync",
        "/_matrix/client/v3/presence/@a:city.example/status": "synapse_presence",
        "/_matrix/client/v3/login": "synapse_main",
        "/_matrix/client/v3/rooms/!r:city.example/send/m.room.message/1": "synapse_main",
        "/_matrix/client/versions": "synapse_main",
        "/_synapse/client/pick_username": "synapse_main",
    }
    for path, upstream in expected.items():
        assert _upstream(_route(matrix, path)) == upstream, path
    # The search service's fallback is the pool that serves the user directory without it.
    assert "error_page 502 503 504 = @synapse_user_directory;" in _route(
        matrix, "/_matrix/client/v3/user_directory/search"
    )
    assert re.search(r"location @synapse_user_directory \{\s*proxy_pass http://synapse_sync;", matrix)
    wellknown = _route(matrix, "/.well-known/matrix/client")
    answer = re.search(r"return 200 '(.*)';", wellknown)
    assert answer and json.loads(answer.group(1)) == {
        "m.homeserver": {"base_url": EXAMPLE_BASEURL.rstrip("/")}
    }
    assert "ssl_certificate /run/secrets/tls_cert;" in matrix
    hs = yaml.safe_load((DEPLOY / "synapse" / "homeserver.yaml").read_text(encoding="utf-8"))
    assert f"client_max_body_size {hs['max_upload_size']};" in matrix
    assert re.search(r"listen 80;.*return 301 https://", conf, re.S)


def test_element_config_is_pinned_to_the_server() -> None:
    config = json.loads((DEPLOY / "element-config.json").read_text(encoding="utf-8"))
    assert config["default_server_config"]["m.homeserver"] == {
        "base_url": "https://matrix.city.example",
        "server_name": "city.example",
    }
    assert config["disable_custom_urls"] is True and config["disable_guests"] is True
    assert config["setting_defaults"]["UIFeature.registration"] is False
    assert config["integrations_ui_url"] == "" and "jitsi" not in config


# --- systemd -------------------------------------------------------------------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name, encoding="utf-8")
    return parser


HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "ProtectKernelTunables": "true",
    "ProtectControlGroups": "true",
    "RestrictSUIDSGID": "true",
}


@pytest.mark.parametrize(
    "unit",
    ["synapse.service", "synapse-worker@.service", "civmatrix-sync.service", "civmatrix-bot.service"],
)
def test_systemd_services_are_hardened(unit: str) -> None:
    service = _unit(unit)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{unit}: {key}={service.get(key)}"
    assert service.get("User") and service["User"] != "root"
    assert "ExecStart" in service


def test_systemd_workers_and_sync_timer() -> None:
    worker = _unit("synapse-worker@.service")
    assert "/etc/matrix-synapse/workers/%i.yaml" in worker["Service"]["ExecStart"]
    assert "synapse.service" in worker["Unit"]["After"] and "synapse.service" in worker["Unit"]["BindsTo"]
    timer = _unit("civmatrix-sync.timer")["Timer"]
    assert timer["OnCalendar"] == "*:0/15" and timer["Persistent"] == "true"
    sync = _unit("civmatrix-sync.service")["Service"]
    # A oneshot is "activating" until it exits, and systemd never starts a unit that is already starting:
    # a run longer than 15 minutes delays the next one instead of overlapping it.
    assert sync["Type"] == "oneshot"
    assert "provisioner --config /etc/civmatrix/civmatrix.yaml sync --quiet" in sync["ExecStart"]
    bot = _unit("civmatrix-bot.service")["Service"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml run" in bot["ExecStart"]


def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "systemd").glob("*.timer"))
    for unit in units:
        target = tmp_path / unit.name.replace("@.service", "@synapse-sync-1.service")
        target.write_text(unit.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    # The binaries (/opt/civmatrix/venv/bin/...) do not exist on a test machine; everything else must be clean.
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "is not executable" not in line and "No such file or directory" not in line
    ]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------
# Synapse's own check of the generated configs
# --------------------------------------------------------------------------------------------------------


def _local_paths(tmp: Path) -> deploy.Paths:
    return deploy.Paths(
        config_dir=str(tmp / "synapse"),
        data_dir=str(tmp / "data"),
        secrets_dir=str(tmp / "secrets"),
        tls_cert=str(tmp / "tls.crt"),
        tls_key=str(tmp / "tls.key"),
    )


def test_the_compose_configs_pass_synapses_config_check(tmp_path: Path) -> None:
    """The committed compose configs, with only their file paths moved into tmp_path (the rest is identical)."""
    paths = _local_paths(tmp_path)
    d = example_deployment(
        paths=paths, login={**EXAMPLE_LOGIN, "bind_password_file": f"{paths.secrets_dir}/ldap_password"}
    )
    deploy.ensure_secrets(tmp_path / "secrets", d.database)
    (tmp_path / "secrets" / "ldap_password").write_text("not-used\n", encoding="utf-8")
    deploy.write_deployment(tmp_path, d)
    deploy.check_deployment(tmp_path, d)


def test_scaled_out_host_configs_pass_synapses_config_check(tmp_path: Path) -> None:
    d = deploy.standard_deployment(
        EXAMPLE_SERVER_NAME,
        EXAMPLE_BASEURL,
        target="host",
        sync_workers=3,
        event_persisters=2,
        paths=_local_paths(tmp_path),
    )
    assert d.writers("events") == ["synapse-events-1", "synapse-events-2"]
    deploy.ensure_secrets(tmp_path / "secrets", d.database)
    deploy.write_deployment(tmp_path, d)
    deploy.check_deployment(tmp_path, d)
    nginx = (tmp_path / "nginx" / "civmatrix.conf").read_text(encoding="utf-8")
    assert all(f"server 127.0.0.1:{w.client_port};" in nginx for w in d.workers if w.role == "sync")


def test_ensure_secrets_never_replaces_a_secret(tmp_path: Path) -> None:
    database = deploy.Postgres(host="postgres")
    assert set(deploy.ensure_secrets(tmp_path, database)) == set(deploy.GENERATED_SECRETS)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert deploy.ensure_secrets(tmp_path, database) == []
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    password = before[deploy.POSTGRES_PASSWORD]
    assert before[deploy.PGPASS] == f"postgres:5432:synapse:synapse:{password}\n"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in tmp_path.iterdir())


def test_deploy_civmatrix_yaml_is_a_valid_config_matching_the_login_module(tmp_path: Path) -> None:
    from bridge.cli import parse_config as parse_bot_config
    from provisioner.config import load_config
    from provisioner.synapse import auth as synapse_auth

    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("admin_token", "ldap_password", "bot_token"):
        (secrets_dir / name).write_text(f"{name}-value\n", encoding="utf-8")
    text = (DEPLOY / "civmatrix.yaml").read_text(encoding="utf-8").replace("/run/secrets", str(secrets_dir))
    path = tmp_path / "civmatrix.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(str(path), token_required=True)
    assert cfg.homeserver.url == "http://127.0.0.1:8080"  # the loopback admin listener, never the proxy
    assert cfg.homeserver.server_name == EXAMPLE_SERVER_NAME
    bot = parse_bot_config(yaml.safe_load(text), str(path))
    assert bot.access_token == "bot_token-value"
    login = synapse_auth.module_config_from(cfg)
    login["bind_password_file"] = login["bind_password_file"].replace(str(secrets_dir), "/run/secrets")
    assert login == dict(EXAMPLE_LOGIN)


# --------------------------------------------------------------------------------------------------------
# Real: main process + sync worker + event persister + presence writer on PostgreSQL and Redis
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database with the C collation Synapse requires; dropped afterwards."""
    psycopg2 = pytest.importorskip(
        "psycopg2", reason="psycopg2 is in the test extra: pip install -e '.[test]'"
    )
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {PG['host']}:{PG['port']} (user {PG['user']}): {e}".strip())
    admin.autocommit = True
    name = f"civmatrix_deploy_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[int]:
    """A private redis-server on a free loopback port (no persistence: Synapse uses it for pub/sub only)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt install redis-server)")
    pytest.importorskip(
        "txredisapi", reason="Synapse's redis extra is missing: pip install 'matrix-synapse[redis]'"
    )
    port = free_port()
    log = open(tmp_path / "redis.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        _wait_for(lambda: _redis_ping(port), 10, "redis-server", process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _redis_ping(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for(
    check: Any, timeout: float, what: str, process: subprocess.Popen[bytes], log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            state = (
                f"exited with {process.returncode}"
                if process.poll() is not None
                else f"not ready after {timeout:.0f}s"
            )
            raise AssertionError(f"{what} {state}\n{tail}")
        time.sleep(0.1)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _call(
    port: int, method: str, path: str, body: Mapping[str, Any] | None = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _register(admin_port: int, secret: str, localpart: str, password: str) -> None:
    """Shared-secret registration on the loopback admin listener (the test's own way in; production has none)."""
    status, reply = _call(admin_port, "GET", "/_synapse/admin/v1/register")
    assert status == 200, reply
    message = "\x00".join((reply["nonce"], localpart, password, "notadmin")).encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()
    body = {"nonce": reply["nonce"], "username": localpart, "password": password, "admin": False, "mac": mac}
    status, reply = _call(admin_port, "POST", "/_synapse/admin/v1/register", body)
    assert status == 200, reply


class Processes:
    """The Synapse processes of one test; all are stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        env = dict(os.environ)
        # The main process imports the admin refuser (and the login module) from civmatrix.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        self.running[name] = (process, log)
        return process

    def wait_healthy(self, name: str, port: int, timeout: float = 90) -> None:
        process, log = self.running[name]
        _wait_for(lambda: _healthy(port), timeout, name, process, log)

    def rss_mib(self) -> dict[str, float]:
        sizes = {}
        for name, (process, _) in self.running.items():
            status = Path(f"/proc/{process.pid}/status").read_text()
            kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            sizes[name] = kib / 1024
        return sizes

    def stop_all(self) -> None:
        for process, _ in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.synapse
def test_synapse_with_workers_on_postgres_and_redis(
    tmp_path: Path, postgres_database: str, redis_server: int
) -> None:
    import psycopg2  # type: ignore[import-untyped]

    paths = _local_paths(tmp_path)
    d = deploy.standard_deployment(
        "deploy.test",
        "https://matrix.deploy.test/",
        target="host",
        paths=paths,
        database=deploy.Postgres(host=LOOPBACK, port=5432, user="postgres", database=postgres_database),
        redis=deploy.Redis(host=LOOPBACK, port=redis_server),
        ports=iter(free_ports(8)),
        # The test's only way to make accounts with a password: shared-secret registration on the admin
        # listener. Production has no such secret (people log in through LDAP).
        overrides={"registration_shared_secret_path": f"{paths.secrets_dir}/registration_shared_secret"},
    )
    assert [w.role for w in d.workers] == ["sync", "events", "presence"]
    sync_worker, persister, presence = d.workers
    deploy.ensure_secrets(tmp_path / "secrets", d.database)
    secret = uuid.uuid4().hex
    (tmp_path / "secrets" / "registration_shared_secret").write_text(secret, encoding="utf-8")
    deploy.write_deployment(tmp_path, d)
    homeserver = str(tmp_path / "synapse" / "homeserver.yaml")

    processes = Processes(tmp_path)
    try:
        began = time.monotonic()
        processes.start("main", ["synapse.app.homeserver", "-c", homeserver])
        processes.wait_healthy("main", d.public_port)
        processes.wait_healthy("main", d.admin_port, 10)
        main_ready = time.monotonic() - began
        for worker in d.workers:
            worker_yaml = str(tmp_path / "synapse" / "workers" / f"{worker.name}.yaml")
            processes.start(worker.name, ["synapse.app.generic_worker", "-c", homeserver, "-c", worker_yaml])
        for worker in d.workers:
            processes.wait_healthy(worker.name, worker.client_port or worker.replication_port or 0)
        all_ready = time.monotonic() - began

        # Register and log in through the main process (login on its public listener, as a client would).
        _register(d.admin_port, secret, "alice", "correct horse battery")
        status, login = _call(
            d.public_port,
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "correct horse battery",
            },
        )
        assert status == 200, login
        token = login["access_token"]
        assert login["user_id"] == "@alice:deploy.test"

        # The public listener still refuses the admin API (Rule 2 of provisioner.synapse.config).
        status, reply = _call(d.public_port, "GET", "/_synapse/admin/v1/server_version")
        assert (status, reply.get("errcode")) == (404, "M_UNRECOGNIZED")

        status, room = _call(
            d.public_port,
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "private_chat", "name": "deploy"},
            token,
        )
        assert status == 200, room
        room_id = room["room_id"]
        body = f"hello through the workers {uuid.uuid4().hex[:6]}"
        status, sent = _call(
            d.public_port,
            "PUT",
            f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": body},
            token,
        )
        assert status == 200, sent

        # Persisted by the event persister, not by the main process that received it.
        with psycopg2.connect(dbname=postgres_database, **PG) as conn, conn.cursor() as cur:
            cur.execute("SELECT instance_name FROM events WHERE event_id = %s", (sent["event_id"],))
            assert cur.fetchone() == (persister.name,)

        # /sync through the sync worker's own port returns the message (it learned of it over Redis).
        assert sync_worker.client_port is not None
        status, synced = _call(
            sync_worker.client_port, "GET", "/_matrix/client/v3/sync?timeout=0", token=token
        )
        assert status == 200, synced
        timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == [body]

        # Every kind of request nginx sends to a sync worker is one the worker really serves (a route to a
        # worker without the servlet would answer 404 M_UNRECOGNIZED to every client).
        quoted_room, event = urllib.parse.quote(room_id), urllib.parse.quote(sent["event_id"])
        worker_requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/messages?dir=b&limit=5", None),
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/members", None),
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/joined_members", None),
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/context/{event}", None),
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/event/{event}", None),
            ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/hierarchy", None),
            ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/threads", None),
            ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/timestamp_to_event?ts=0&dir=f", None),
            ("GET", f"/_matrix/client/v1/rooms/{quoted_room}/relations/{event}", None),
            ("GET", "/_matrix/client/v3/joined_rooms", None),
            ("POST", "/_matrix/client/v3/user_directory/search", {"search_term": "alice"}),
            ("POST", "/_matrix/client/v3/keys/query", {"device_keys": {"@alice:deploy.test": []}}),
            ("GET", "/_matrix/client/v3/capabilities", None),
            ("GET", f"/_matrix/client/v3/rooms/{quoted_room}/initialSync", None),
        ]
        for method, path, request_body in worker_requests:
            bare = urllib.parse.unquote(path.split("?")[0])
            assert any(re.search(r, bare) for r in sync_worker.routes), (
                f"{bare} is not routed to the sync worker"
            )
            status, reply = _call(sync_worker.client_port, method, path, request_body, token)
            assert status == 200, (path, status, reply)

        # Presence is written by the presence writer and read back through it.
        assert presence.client_port is not None
        quoted = urllib.parse.quote("@alice:deploy.test")
        status, reply = _call(
            presence.client_port,
            "PUT",
            f"/_matrix/client/v3/presence/{quoted}/status",
            {"presence": "online", "status_msg": "at my desk"},
            token,
        )
        assert status == 200, reply
        status, reply = _call(
            presence.client_port, "GET", f"/_matrix/client/v3/presence/{quoted}/status", token=token
        )
        assert status == 200 and reply["presence"] == "online" and reply["status_msg"] == "at my desk", reply

        sizes = processes.rss_mib()
        print(
            f"\nstartup: main {main_ready:.1f}s, all {all_ready:.1f}s; RSS MiB: "
            + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items())
        )
    finally:
        processes.stop_all()
