"""The deployment in deploy/: static checks of every file, and Synapse with workers started for real.

Docker is not available here, so the compose file is checked statically: it parses, every file it mounts or
builds from exists, every variable and secret it uses is declared. The Synapse configs it mounts are the
output of :mod:`provisioner.deploy` (a test keeps them current) and pass Synapse's own config check.
The worker topology is then proven with real processes: the main process, a sync worker, an event
persister and the presence writer, started from the generated files against PostgreSQL and Redis.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import deploy
from provisioner.embedded.ports import LOOPBACK
from provisioner.synapse.config import PROJECT_ROOT, WORKER_GUARD_MODULE, closed_config_violations

DEPLOY = PROJECT_ROOT / "deploy"

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
    """deploy/synapse, deploy/nginx, deploy/element-config.json and deploy/well-known-client.json are generated:
    never hand-edited.

    After a change to provisioner/deploy.py or to the example inputs above, rewrite them with
    ``PYTHONPATH=. .venv/bin/python -m tests.test_deploy`` and review the diff. The test itself never writes:
    a test that rewrote its expectation before comparing could not fail.
    """
    expected = deploy.deployment_files(example_deployment())
    for rel, text in expected.items():
        assert (DEPLOY / rel).read_text(encoding="utf-8") == text, (
            f"deploy/{rel} differs from provisioner.deploy's output; after reviewing the change, rewrite it "
            "with: PYTHONPATH=. .venv/bin/python -m tests.test_deploy"
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
    for name in ("provisioner", "bot", "search"):
        assert compose["services"][name]["network_mode"] == "service:synapse"
    assert "provisioner --config /etc/civmatrix/civmatrix.yaml -v watch" in commands["provisioner"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml run" in commands["bot"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml search" in commands["search"]
    assert compose["services"]["search"]["image"] == compose["services"]["bot"]["image"]
    assert compose["services"]["search"]["image"] == compose["services"]["provisioner"]["image"]
    # Only the proxy publishes ports.
    published = [name for name, s in compose["services"].items() if s.get("ports")]
    assert published == ["nginx"]


def test_compose_matches_the_model_nginx_and_synapse_are_rendered_from() -> None:
    """The compose file is hand-written around the generated files: every host:port the proxy model routes
    to is a compose service listening there, and the services Synapse's config names exist."""
    compose = _compose()
    services = compose["services"]
    d = example_deployment()
    model = deploy.proxy_model(d)
    routed = [server for upstream in (model.main, *model.workers) for server in upstream.servers]
    for server in routed:
        host, port = server.rsplit(":", 1)
        assert host in services, f"nginx routes to {server}, but compose has no service {host}"
        assert host in services["nginx"]["depends_on"], f"nginx does not wait for {host}"
        check = " ".join(services[host].get("healthcheck", {}).get("test", []))
        assert host == d.main_host or f":{port}/health" in check, f"{host}'s healthcheck is not on :{port}"
    assert model.search is not None and model.search.split(":")[0] == d.main_host
    assert d.database.host in services and d.redis.host in services
    assert "./nginx/civmatrix.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    assert {w.name for w in d.workers} <= set(services)


def test_production_keeps_synapses_login_limits_and_trusts_forwarded_addresses_behind_nginx() -> None:
    """The demo's raised login limits (provisioner.demo.DEMO_RATE_LIMITS) never reach deploy/."""
    from provisioner.demo import DEMO_RATE_LIMITS

    text = "\n".join(p.read_text(encoding="utf-8") for p in (DEPLOY / "synapse").rglob("*.yaml"))
    assert not any(key in text for key in DEMO_RATE_LIMITS), "a demo rate limit is in deploy/synapse"
    hs = deploy.homeserver_config(example_deployment())
    public = next(listener for listener in hs["listeners"] if listener["port"] == 8008)
    assert public["x_forwarded"] is True
    for worker in example_deployment().workers:
        for listener in deploy.worker_config(example_deployment(), worker)["worker_listeners"]:
            if "client" in listener["resources"][0]["names"]:
                assert listener["x_forwarded"] is True, worker.name


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
    # The production config keeps the closed-server rules through its overrides (issue 12).
    assert closed_config_violations(hs) == []


def test_workers_are_closed_by_a_module_and_a_config_without_it_is_flagged() -> None:
    """Workers ignore listener ``additional_resources``: the guard reaches them as a module (its effect on a
    running worker is tests/test_topology.py's probe of the worker ports)."""
    hs = deploy.homeserver_config(example_deployment())
    assert WORKER_GUARD_MODULE in [m["module"] for m in hs["modules"]]
    stripped = hs | {"modules": [m for m in hs["modules"] if m["module"] != WORKER_GUARD_MODULE]}
    problems = closed_config_violations(stripped)
    assert len(problems) == 1 and WORKER_GUARD_MODULE in problems[0], problems


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
    # Element is told: ask everyone for a recovery key at first login (a generated one, no passphrase),
    # and start private rooms encrypted, as the server does.
    e2ee = {"default": True, "secure_backup_required": True, "secure_backup_setup_methods": ["key"]}
    assert answer and json.loads(answer.group(1)) == {
        "m.homeserver": {"base_url": EXAMPLE_BASEURL.rstrip("/")},
        "io.element.e2ee": e2ee,
    }
    # The same document for the organisation's web site (the server name's host), where Element Web looks.
    assert json.loads((DEPLOY / "well-known-client.json").read_text(encoding="utf-8")) == json.loads(
        answer.group(1)
    )
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
    [
        "synapse.service",
        "synapse-worker@.service",
        "civmatrix-sync.service",
        "civmatrix-watch.service",
        "civmatrix-bot.service",
        "civmatrix-search.service",
    ],
)
def test_systemd_services_are_hardened(unit: str) -> None:
    service = _unit(unit)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{unit}: {key}={service.get(key)}"
    assert service.get("User") and service["User"] != "root"
    assert "ExecStart" in service


def test_systemd_workers_watch_and_manual_sync() -> None:
    worker = _unit("synapse-worker@.service")
    assert "/etc/matrix-synapse/workers/%i.yaml" in worker["Service"]["ExecStart"]
    assert "synapse.service" in worker["Unit"]["After"] and "synapse.service" in worker["Unit"]["BindsTo"]
    # The watch replaced the 15-minute timer: it runs for ever, restarts after a crash, and a second one
    # (exit 9: the lock is held) is not restarted in a loop.
    assert not (DEPLOY / "systemd" / "civmatrix-sync.timer").exists()
    watch = _unit("civmatrix-watch.service")["Service"]
    assert "provisioner --config /etc/civmatrix/civmatrix.yaml watch" in watch["ExecStart"]
    assert watch["Restart"] == "always" and watch["RestartPreventExitStatus"] == "9"
    sync = _unit("civmatrix-sync.service")["Service"]
    assert sync["Type"] == "oneshot"
    assert "provisioner --config /etc/civmatrix/civmatrix.yaml sync --quiet" in sync["ExecStart"]
    bot = _unit("civmatrix-bot.service")["Service"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml run" in bot["ExecStart"]
    search = _unit("civmatrix-search.service")["Service"]
    assert "bridge --config /etc/civmatrix/civmatrix.yaml search" in search["ExecStart"]


def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze not found: apt-get install systemd (or run scripts/setup.sh)"
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


def _deploy_config(tmp_path: Path) -> tuple[Any, Any, Mapping[str, Any]]:
    """deploy/civmatrix.yaml as the provisioner and the search service parse it (secrets faked)."""
    from bridge.search.config import parse_search
    from provisioner.config import load_config

    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("admin_token", "ldap_password", "bot_token"):
        (secrets_dir / name).write_text(f"{name}-value\n", encoding="utf-8")
    text = (DEPLOY / "civmatrix.yaml").read_text(encoding="utf-8").replace("/run/secrets", str(secrets_dir))
    path = tmp_path / "civmatrix.yaml"
    path.write_text(text, encoding="utf-8")
    raw = yaml.safe_load(text)
    return load_config(str(path), token_required=True), parse_search(raw, str(path)), raw


def test_search_service_reads_the_index_the_sync_writes_in_both_targets(tmp_path: Path) -> None:
    """The sync writes search.index into its state dir; the search unit and the compose service read that
    same file, read-only."""
    cfg, search, raw = _deploy_config(tmp_path)
    assert "search" in raw, "deploy/civmatrix.yaml has no search: section: the sync would write no snapshot"
    index = Path(raw["search"]["index"])
    assert cfg.search_index == str(index) == str(search.index)
    assert index.parent == Path(cfg.sync.state_dir) == Path("/var/lib/civmatrix/state")
    # Tokens are checked at the same loopback listener the provisioner and bot use (never the proxy).
    assert search.homeserver_url == cfg.homeserver.url == "http://127.0.0.1:8080"
    # compose: the provisioner writes the state volume at that path; the search service mounts it read-only.
    services = _compose()["services"]
    volume = f"civmatrix-state:{index.parent}"
    assert volume in services["provisioner"]["volumes"]
    assert f"{volume}:ro" in services["search"]["volumes"]
    assert not services["search"].get("secrets"), "the search service needs no secret: callers bring tokens"
    # systemd: the state dir is read-only for the unit, and it never claims it as its own StateDirectory.
    unit = _unit("civmatrix-search.service")["Service"]
    assert str(index.parent) in [p.lstrip("-") for p in unit["ReadOnlyPaths"].split()]
    assert "StateDirectory" not in unit
    watch = _unit("civmatrix-watch.service")["Service"]
    assert "--config /etc/civmatrix/civmatrix.yaml" in watch["ExecStart"]


def test_nginx_search_upstream_is_where_the_search_service_listens(tmp_path: Path) -> None:
    """compose: nginx -> synapse:PORT, the service in synapse's namespace on all addresses (a loopback bind
    there is unreachable from nginx's container); host: nginx -> 127.0.0.1:PORT, the unit admitting loopback
    peers only."""
    _, search, _ = _deploy_config(tmp_path)
    assert search.port == deploy.SEARCH_PORT
    compose_model = deploy.proxy_model(example_deployment())
    assert compose_model.search == f"synapse:{search.port}"
    assert _compose()["services"]["search"]["network_mode"] == "service:synapse"
    assert search.host == "0.0.0.0"
    conf = (DEPLOY / "nginx" / "civmatrix.conf").read_text(encoding="utf-8")
    assert re.search(rf"upstream civmatrix_search \{{[^}}]*server synapse:{search.port}\b", conf)
    host_model = deploy.proxy_model(example_deployment(target="host"))
    assert host_model.search == f"{LOOPBACK}:{search.port}"
    unit = _unit("civmatrix-search.service")["Service"]
    assert unit["IPAddressDeny"] == "any" and unit["IPAddressAllow"] == "localhost"


if __name__ == "__main__":
    # The explicit way to regenerate the committed files (see test_committed_files_are_what_the_generator_makes).
    for written in deploy.write_deployment(DEPLOY, example_deployment()):
        print(f"wrote {written.relative_to(PROJECT_ROOT)}")
