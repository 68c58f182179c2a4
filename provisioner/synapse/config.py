"""The closed-server ``homeserver.yaml``, rendered as data; and Synapse's own check of a rendered file.

This is the config that runs *inside* Synapse, shared by the deployment renderer (:mod:`provisioner.deploy`)
and the process manager of the demo and the tests (:mod:`provisioner.embedded.synapse`).

The admin API and the listeners
-------------------------------
Synapse has no listener resource for the admin API: the ``client`` resource mounts ``/_synapse/admin``
together with ``/_matrix/client`` (``SynapseHomeServer._configure_named_resource`` in
synapse/app/homeserver.py; the known resource names are listed in ``synapse.config.server.KNOWN_RESOURCES``
and ``admin`` is not one). So:

Rule 1. The *admin* listener serves ``client`` on loopback only; the provisioner and the bot talk to it.

Rule 2. The *public* listener serves ``client`` too, but mounts
:func:`provisioner.synapse.refuser.admin_api_refuser` over ``/_synapse/admin`` through the listener's
``additional_resources`` (Synapse installs those after the named resources, so the refuser replaces the
admin tree on that listener only). Every admin path there answers ``404 M_UNRECOGNIZED``, exactly like a
path that does not exist. Synapse imports the refuser by name, so the ``provisioner`` package must be
importable by the Synapse process: the process manager puts the project on ``PYTHONPATH``; a deployment
installs civmatrix next to Synapse, and its reverse proxy blocks ``/_synapse/admin`` as well (defence in
depth).

Rule 3. Neither listener serves ``federation``, ``keys`` or ``openid``, and
``federation_domain_whitelist: []`` makes Synapse refuse all federation traffic even if a listener were
added by mistake.

The directory is the only password
----------------------------------
Rule 4. ``password_config: {enabled: true, localdb_enabled: false}``: ``m.login.password`` is answered by
the directory module (:mod:`provisioner.synapse.auth`) alone. ``enabled`` must stay true, because Synapse
checks it for every ``m.login.password`` login, the module's included; ``localdb_enabled: false`` drops
Synapse's own password table from login, from user-interactive auth and from password change
(``AuthHandler.can_change_password``), so no second password can be set that outlives the directory, and
no local account (the provisioning admin, the bot) has a password login at all: their tokens come from
registration on the loopback listener (docs/RUNBOOK.md). Display names and 3PIDs belong to the directory
(``enable_set_displayname``, ``enable_3pid_changes``: false; the sync writes names through the admin API,
which these do not limit); avatars stay the person's own, the directory has no photos. The capabilities
endpoint says all of this to clients (``m.change_password``, ``m.set_displayname``, ``m.3pid_changes``).

Rule 5. Both listeners mount :func:`provisioner.synapse.guard.client_api_guard` at ``/_matrix/client``: the
client API with a token check in front, so nothing is readable without a valid token except the paths a
client needs before login (:data:`provisioner.synapse.access.PUBLIC_CLIENT_PATHS`, the same list the reverse
proxy uses). Workers ignore ``additional_resources``; what they mount instead is what a module registers, so a
deployment with workers lists :class:`provisioner.synapse.guard.WorkerGuard` under ``modules``: on each worker
it mounts the same guard on the client listeners and the admin refuser on every listener.

Rule 6. The admin listener alone mounts :func:`provisioner.synapse.tokens.device_token_minter`: a server
admin mints a new token for an existing device there (token rotation of the provisioning account and of the
bot, whose end-to-end keys belong to its device). No password is involved anywhere.

Not closed-ness rules, but rendered the same way into every deployment: ``modules`` lists
:class:`provisioner.synapse.presence.PresenceScope`, which keeps the provisioner's spaces (everyone is in
the top one) out of presence fan-out in every process, as the sync creates them, without a restart, and
:class:`provisioner.synapse.limits.SpaceBrowsing`, which lets a person browse the whole space tree without
meeting Synapse's fixed hierarchy rate limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"

# The project root, so a Synapse subprocess can import the modules of :mod:`provisioner.synapse`
# even when civmatrix is not pip-installed (a checkout running its tests).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

ADMIN_REFUSER_MODULE = "provisioner.synapse.refuser.admin_api_refuser"
CLIENT_GUARD_MODULE = "provisioner.synapse.guard.client_api_guard"
WORKER_GUARD_MODULE = "provisioner.synapse.guard.WorkerGuard"
PRESENCE_MODULE = "provisioner.synapse.presence.PresenceScope"
SPACE_BROWSING_MODULE = "provisioner.synapse.limits.SpaceBrowsing"
DEVICE_TOKEN_MODULE = "provisioner.synapse.tokens.device_token_minter"
DEVICE_TOKEN_PATH = "/_synapse/civmatrix/v1/device_token"  # provisioner.synapse.tokens.PATH

CONFIG_FILE = "homeserver.yaml"
LOG_CONFIG_FILE = "log.config"
LOG_FILE = "homeserver.log"
STDOUT_FILE = "synapse.stdout.log"
SIGNING_KEY_FILE = "signing.key"
MACAROON_SECRET_FILE = "macaroon_secret"
FORM_SECRET_FILE = "form_secret"
REGISTRATION_SECRET_FILE = "registration_shared_secret"
SQLITE_FILE = "homeserver.db"
MEDIA_DIR = "media_store"
LOCK_FILE = "synapse.lock"


class SynapseError(Exception):
    """The embedded Synapse could not be configured, started, stopped or used; the message says why."""


# --------------------------------------------------------------------------------------------------------
# The config (pure)
# --------------------------------------------------------------------------------------------------------


def _database_section(database: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """SQLite for a path, psycopg2 for a DSN mapping (host, port, user, database, optional password)."""
    if isinstance(database, str | Path):
        return {"name": "sqlite3", "args": {"database": str(database)}}
    missing = [k for k in ("host", "user", "database") if k not in database]
    if missing:
        raise SynapseError(
            f"PostgreSQL database settings lack {', '.join(missing)}; got keys {sorted(database)}"
        )
    args: dict[str, Any] = {
        "host": database["host"],
        "port": int(database.get("port", 5432)),
        "user": database["user"],
        "database": database["database"],
        "cp_min": int(database.get("cp_min", 5)),
        "cp_max": int(database.get("cp_max", 10)),
    }
    if "password" in database:
        args["password"] = database["password"]
    return {"name": "psycopg2", "args": args}


def _listener(
    port: int, host: str, *, refuse_admin: bool, guard_client: bool, mint_tokens: bool, x_forwarded: bool
) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "port": port,
        "bind_addresses": [host],
        "type": "http",
        "tls": False,
        # Only behind the reverse proxy: a listener reached directly would let clients spoof their address
        # (and with it the per-address login rate limit).
        "x_forwarded": x_forwarded,
        "resources": [{"names": ["client"], "compress": False}],
    }
    extra: dict[str, Any] = {}
    if guard_client:
        extra["/_matrix/client"] = {"module": CLIENT_GUARD_MODULE, "config": {}}
    if refuse_admin:
        extra["/_synapse/admin"] = {"module": ADMIN_REFUSER_MODULE, "config": {}}
    if mint_tokens:
        extra[DEVICE_TOKEN_PATH] = {"module": DEVICE_TOKEN_MODULE, "config": {}}
    if extra:
        listener["additional_resources"] = extra
    return listener


def _reachable(host: str) -> str:
    """An address a client on this machine can use for a listener bound to ``host``."""
    return LOOPBACK if host in ("0.0.0.0", "::", "") else host


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def render_homeserver_config(
    *,
    server_name: str,
    data_dir: Path,
    public_port: int,
    admin_port: int,
    bind_host: str = LOOPBACK,
    admin_bind_host: str = LOOPBACK,
    public_baseurl: str | None = None,
    behind_proxy: bool = False,
    refuse_admin_on_public: bool = True,
    database: str | Path | Mapping[str, Any] | None = None,
    password_providers: Sequence[Mapping[str, Any]] = (),
    modules: Sequence[Mapping[str, Any]] = (),
    shared_secret_registration: bool = False,
    rate_limits: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    presence_scope: bool = True,
    space_browsing: bool = True,
) -> dict[str, Any]:
    """Return the closed-server ``homeserver.yaml`` as a mapping.

    Secrets are referenced by file (``*_path`` keys under ``data_dir``), never inlined; write them with
    :func:`ensure_secret_files`. ``database`` is a SQLite path (default ``data_dir/homeserver.db``) or a
    PostgreSQL mapping with ``host``, ``port``, ``user``, ``database`` and optionally ``password``.
    ``shared_secret_registration`` adds ``registration_shared_secret_path``: whoever holds that secret can
    create admins even with registration off, so it is for the demo and the tests only.
    ``rate_limits`` (``rc_*`` keys) and then ``overrides`` are merged last; production keeps Synapse's rate
    limits and exempts only the provisioning account (``override_ratelimit``).
    ``behind_proxy`` trusts ``X-Forwarded-For`` on the public listener. ``refuse_admin_on_public=False``
    drops Rules 2 and 5 for a Synapse that cannot import civmatrix (a stock image): then the reverse proxy
    alone must block ``/_synapse/admin`` and tokenless client-API requests, and presence is not scoped.
    ``presence_scope=False`` and ``space_browsing=False`` leave out :data:`PRESENCE_MODULE` and
    :data:`SPACE_BROWSING_MODULE` (a bench's or a test's stock-Synapse side only).
    """
    if admin_bind_host not in (LOOPBACK, "::1", "localhost"):
        raise SynapseError(
            f"admin_bind_host is {admin_bind_host!r}; the admin API must listen on loopback only "
            "(127.0.0.1 or ::1); put the provisioner on the same machine or in the same pod"
        )
    if public_port == admin_port:
        raise SynapseError(f"public_port and admin_port are both {public_port}; they must differ")
    data_dir = Path(data_dir)
    config: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": public_baseurl or f"http://{_reachable(bind_host)}:{public_port}/",
        "pid_file": str(data_dir / "homeserver.pid"),
        "report_stats": False,
        "listeners": [
            _listener(
                public_port,
                bind_host,
                refuse_admin=refuse_admin_on_public,
                guard_client=refuse_admin_on_public,
                mint_tokens=False,
                x_forwarded=behind_proxy,
            ),
            _listener(
                admin_port,
                admin_bind_host,
                refuse_admin=False,
                guard_client=refuse_admin_on_public,
                mint_tokens=refuse_admin_on_public,
                x_forwarded=False,
            ),
        ],
        "database": _database_section(database if database is not None else data_dir / SQLITE_FILE),
        "log_config": str(data_dir / LOG_CONFIG_FILE),
        "media_store_path": str(data_dir / MEDIA_DIR),
        "signing_key_path": str(data_dir / SIGNING_KEY_FILE),
        "macaroon_secret_key_path": str(data_dir / MACAROON_SECRET_FILE),
        "form_secret_path": str(data_dir / FORM_SECRET_FILE),
        # --- closed: nobody outside can reach, join or enumerate --------------------------------------
        # An empty whitelist denies all federation; leaving the key unset would allow every server.
        "federation_domain_whitelist": [],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "allow_profile_lookup_over_federation": False,
        "allow_device_name_lookup_over_federation": False,
        "enable_registration": False,
        "allow_guest_access": False,
        "allow_public_rooms_without_auth": False,
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        # --- the directory is the only password (Rule 4) --------------------------------------------
        # ``enabled`` stays true: it gates ``m.login.password`` as such, so false would switch off the
        # directory module's logins too (AuthHandler.validate_login). ``localdb_enabled: false`` removes
        # Synapse's own password check after the module refuses, and with it password change.
        "password_config": {"enabled": True, "localdb_enabled": False},
        # The directory owns names and addresses; the sync writes them through the admin API, which
        # these switches do not limit (ProfileHandler.set_displayname(by_admin=True)).
        "enable_set_displayname": False,
        "enable_3pid_changes": False,
        # Message bodies must not leave the server through the push gateway (Apple/Google).
        "push": {"include_content": False},
        # --- findable: colleagues look each other up without sharing a room ---------------------------
        "user_directory": {"enabled": True, "search_all_users": True, "prefer_local_users": True},
        "require_auth_for_profile_requests": True,
        "limit_profile_requests_to_users_who_share_rooms": False,
        # --- presence on; its cost is kept bounded by the layout (no room holds the whole organisation) --
        "presence": {"enabled": True, "include_offline_users_on_sync": False},
        # --- E2EE by default for DMs and private rooms (public-join rooms stay readable for newcomers) ---
        "encryption_enabled_by_default_for_room_type": "invite",
        # --- cheap to start and run: no thumbnails generated on demand, no metrics ---------------------
        "dynamic_thumbnails": False,
        "enable_metrics": False,
    }
    if password_providers:
        config["password_providers"] = [dict(p) for p in password_providers]
    all_modules = [dict(m) for m in modules]
    listed = {m.get("module") for m in all_modules}
    for module, wanted in ((PRESENCE_MODULE, presence_scope), (SPACE_BROWSING_MODULE, space_browsing)):
        if wanted and refuse_admin_on_public and module not in listed:
            all_modules.append({"module": module, "config": {}})
    if all_modules:
        config["modules"] = all_modules
    if shared_secret_registration:
        config["registration_shared_secret_path"] = str(data_dir / REGISTRATION_SECRET_FILE)
    if rate_limits:
        config = _deep_merge(config, rate_limits)
    if overrides:
        config = _deep_merge(config, overrides)
    return config


def closed_config_violations(config: Mapping[str, Any]) -> list[str]:
    """What in a rendered ``homeserver.yaml`` breaks Rules 2, 4 and 5, workers included; empty when closed.

    For the tests and for a deployment check of a config that went through ``overrides``: each line names
    the key and what it must be.
    """
    problems: list[str] = []
    passwords = config.get("password_config") or {}
    if passwords.get("localdb_enabled", True) is not False:
        problems.append("password_config.localdb_enabled must be false: Synapse-side passwords outlive "
                        "the directory and give local accounts a password login")  # fmt: skip
    if passwords.get("enabled", True) is not True:
        problems.append("password_config.enabled must stay true: it switches off directory logins too")
    for key in ("enable_set_displayname", "enable_3pid_changes"):
        if config.get(key, True) is not False:
            problems.append(f"{key} must be false: the directory owns names and addresses")
    for n, listener in enumerate(config.get("listeners") or ()):
        names = {name for r in listener.get("resources") or () for name in r.get("names") or ()}
        if "client" not in names:
            continue
        extra = listener.get("additional_resources") or {}
        if (extra.get("/_matrix/client") or {}).get("module") != CLIENT_GUARD_MODULE:
            problems.append(f"listeners[{n}] serves the client API without {CLIENT_GUARD_MODULE} at "
                            "/_matrix/client: readable without a token")  # fmt: skip
        if n == 0 and (extra.get("/_synapse/admin") or {}).get("module") != ADMIN_REFUSER_MODULE:
            # The renderer puts the public listener first.
            problems.append(f"listeners[{n}] (public) serves the admin API: mount {ADMIN_REFUSER_MODULE}")
        if n == 0 and DEVICE_TOKEN_PATH in extra:
            problems.append(
                f"listeners[{n}] (public) mints tokens at {DEVICE_TOKEN_PATH}: admin listener only"
            )
    # Workers need Redis; stream writers are named in instance_map. Either means worker processes read this.
    workers = (config.get("redis") or {}).get("enabled") or set(config.get("instance_map") or ()) - {"main"}
    modules = {(m or {}).get("module") for m in config.get("modules") or ()}
    if workers and WORKER_GUARD_MODULE not in modules:
        problems.append(f"modules lacks {WORKER_GUARD_MODULE} in a config for workers: their client ports "
                        "would answer without a token and serve the admin API")  # fmt: skip
    return problems


# Generous limits for tests that log many people in; never used unless a caller passes them.
TEST_RATE_LIMITS: Mapping[str, Any] = {
    key: {"per_second": 1000, "burst_count": 1000}
    for key in ("rc_message", "rc_registration", "rc_admin_redaction", "rc_3pid_validation")
} | {
    "rc_login": {
        "address": {"per_second": 1000, "burst_count": 1000},
        "account": {"per_second": 1000, "burst_count": 1000},
        "failed_attempts": {"per_second": 1000, "burst_count": 1000},
    },
    "rc_joins": {
        "local": {"per_second": 1000, "burst_count": 1000},
        "remote": {"per_second": 1000, "burst_count": 1000},
    },
    "rc_invites": {
        "per_room": {"per_second": 1000, "burst_count": 1000},
        "per_user": {"per_second": 1000, "burst_count": 1000},
        "per_issuer": {"per_second": 1000, "burst_count": 1000},
    },
    "rc_room_creation": {"per_second": 1000, "burst_count": 1000},
    "rc_profile": {"per_second": 1000, "burst_count": 1000},
    # People's passwords live in LDAP; Synapse-hashed passwords exist only for test accounts.
    "bcrypt_rounds": 4,
}


def render_log_config(log_file: Path, level: str = "INFO") -> dict[str, Any]:
    """A plain file log (no rotation, no buffering) so a failed start can quote its tail at once."""
    return {
        "version": 1,
        "formatters": {
            "precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"}
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_file),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}, "twisted": {"level": "WARNING"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def synapse_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def check_config(path: Path, *, python: str = sys.executable, timeout: float = 60.0) -> None:
    """Validate a ``homeserver.yaml`` with Synapse's own checker, without starting a server.

    This is ``python -m synapse.config -c FILE`` (synapse/config/__main__.py): it loads the config the way
    the server does (all sections, module configs, secret files) and prints "Config parses OK!".
    Raises :class:`SynapseError` with Synapse's message when the config is rejected.
    """
    result = subprocess.run(
        [python, "-m", "synapse.config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=synapse_env(),
        check=False,
    )
    if result.returncode != 0 or "Config parses OK" not in result.stdout:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise SynapseError(f"Synapse rejects the config {path}: {detail}")
