"""A real Synapse on loopback, configured as the closed server (used by the demo, the tests and the benches).

Two parts:

* :func:`render_homeserver_config` is pure: parameters in, the ``homeserver.yaml`` mapping out. It encodes
  the closed-server rules of issue 4 (no federation, no registration, no guests, no public directory for
  outsiders, no URL previews, no push content, E2EE by default for private rooms, colleagues findable,
  presence on).
* :class:`EmbeddedSynapse` owns one data directory and one ``python -m synapse.app.homeserver`` subprocess.

The admin API and the listeners
-------------------------------
Synapse has no listener resource for the admin API: the ``client`` resource mounts ``/_synapse/admin``
together with ``/_matrix/client`` (``SynapseHomeServer._configure_named_resource`` in
synapse/app/homeserver.py; the known resource names are listed in ``synapse.config.server.KNOWN_RESOURCES``
and ``admin`` is not one). So:

Rule 1. The *admin* listener serves ``client`` on loopback only; the provisioner and the bot talk to it.

Rule 2. The *public* listener serves ``client`` too, but mounts :func:`admin_api_refuser` over
``/_synapse/admin`` through the listener's ``additional_resources`` (Synapse installs those after the named
resources, so the refuser replaces the admin tree on that listener only). Every admin path there answers
``404 M_UNRECOGNIZED``, exactly like a path that does not exist. Synapse imports the refuser by name, so the
``provisioner`` package must be importable by the Synapse process: :class:`EmbeddedSynapse` puts the project
on ``PYTHONPATH``; a deployment installs civmatrix next to Synapse, and its reverse proxy blocks
``/_synapse/admin`` as well (defence in depth).

Rule 3. Neither listener serves ``federation``, ``keys`` or ``openid``, and
``federation_domain_whitelist: []`` makes Synapse refuse all federation traffic even if a listener were
added by mistake.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import yaml

from provisioner.embedded.ports import LOOPBACK, free_ports, port_is_free

if TYPE_CHECKING:
    from twisted.web.resource import Resource

log = logging.getLogger(__name__)

# The project root, so the Synapse subprocess can import ``provisioner.embedded.synapse.admin_api_refuser``
# even when civmatrix is not pip-installed (a checkout running its tests).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

ADMIN_REFUSER_MODULE = "provisioner.embedded.synapse.admin_api_refuser"

# Files inside a data directory; everything the server writes lives under it.
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


def _listener(port: int, host: str, *, refuse_admin: bool, x_forwarded: bool) -> dict[str, Any]:
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
    if refuse_admin:
        listener["additional_resources"] = {"/_synapse/admin": {"module": ADMIN_REFUSER_MODULE, "config": {}}}
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
    drops Rule 2 for a Synapse that cannot import civmatrix (a stock image): then the reverse proxy alone
    must block ``/_synapse/admin``.
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
            _listener(public_port, bind_host, refuse_admin=refuse_admin_on_public, x_forwarded=behind_proxy),
            _listener(admin_port, admin_bind_host, refuse_admin=False, x_forwarded=False),
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
    if modules:
        config["modules"] = [dict(m) for m in modules]
    if shared_secret_registration:
        config["registration_shared_secret_path"] = str(data_dir / REGISTRATION_SECRET_FILE)
    if rate_limits:
        config = _deep_merge(config, rate_limits)
    if overrides:
        config = _deep_merge(config, overrides)
    return config


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


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)


def ensure_secret_files(data_dir: Path) -> None:
    """Create the signing key and the secrets once; later starts reuse them (tokens and keys survive).

    The ed25519 signing key is written directly (``ed25519 <version> <unpadded base64 seed>``, the format
    ``signedjson.key.read_signing_keys`` reads), which saves the ``--generate-keys`` start of Synapse.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / SIGNING_KEY_FILE
    if not key_path.exists():
        seed = base64.b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
        _write_secret(key_path, f"ed25519 a_{secrets.token_hex(2)} {seed}\n")
    for name in (MACAROON_SECRET_FILE, FORM_SECRET_FILE, REGISTRATION_SECRET_FILE):
        path = data_dir / name
        if not path.exists():
            _write_secret(path, secrets.token_urlsafe(48))


def write_homeserver_config(data_dir: Path, config: Mapping[str, Any], *, log_level: str = "INFO") -> Path:
    """Write ``homeserver.yaml``, its log config and the secret files into ``data_dir``; return the path."""
    data_dir = Path(data_dir)
    ensure_secret_files(data_dir)
    (data_dir / MEDIA_DIR).mkdir(exist_ok=True)
    log_config = render_log_config(data_dir / LOG_FILE, log_level)
    (data_dir / LOG_CONFIG_FILE).write_text(yaml.safe_dump(log_config, sort_keys=False), encoding="utf-8")
    path = data_dir / CONFIG_FILE
    header = "# Generated by civmatrix (provisioner.embedded.synapse); edit the generator, not this file.\n"
    path.write_text(header + yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def _synapse_env() -> dict[str, str]:
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
        env=_synapse_env(),
        check=False,
    )
    if result.returncode != 0 or "Config parses OK" not in result.stdout:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise SynapseError(f"Synapse rejects the config {path}: {detail}")


# --------------------------------------------------------------------------------------------------------
# The public listener's admin refuser (imported by the Synapse process, see Rule 2)
# --------------------------------------------------------------------------------------------------------

_UNRECOGNIZED = json.dumps({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}).encode()


def admin_api_refuser(config: Mapping[str, Any], module_api: object) -> Resource:
    """Synapse ``additional_resources`` factory: a leaf that answers every admin path with 404.

    ``isLeaf`` makes Twisted hand every sub-path (``/_synapse/admin/v1/...``) to this one resource, so no
    admin servlet is reachable on the listener that mounts it. Twisted is imported here, inside the
    Synapse process, so importing this module elsewhere does not need it.
    """
    from twisted.web.resource import Resource

    class _AdminRefuser(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            return _UNRECOGNIZED

    # Twisted leaves Resource.__init__ unannotated.
    return _AdminRefuser()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisteredAccount:
    """An account made with the shared secret: its id, a live access token and the password it was given."""

    user_id: str
    access_token: str = field(repr=False)
    device_id: str
    password: str = field(repr=False)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedSynapse:
    """One Synapse process on loopback with all its files in ``data_dir``.

    Not started by the constructor: call :meth:`start` (or use ``with``). :meth:`stop` ends it with SIGTERM,
    :meth:`kill` with SIGKILL (fault injection); :meth:`start` again reuses the same config, keys, database
    and ports, so state survives. The HTTP helpers here are blocking (urllib): from async code wrap them in
    ``asyncio.to_thread``. A lock file refuses a second Synapse on the same data directory.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        server_name: str = "example.test",
        public_port: int | None = None,
        admin_port: int | None = None,
        bind_host: str = LOOPBACK,
        public_baseurl: str | None = None,
        database: str | Path | Mapping[str, Any] | None = None,
        password_providers: Sequence[Mapping[str, Any]] = (),
        modules: Sequence[Mapping[str, Any]] = (),
        shared_secret_registration: bool = True,
        rate_limits: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        log_level: str = "INFO",
        python: str = sys.executable,
        start_timeout: float = 90.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.server_name = server_name
        if public_port is None or admin_port is None:
            picked = free_ports(2)
            public_port = public_port or picked[0]
            admin_port = admin_port or picked[1]
        self.public_port = public_port
        self.admin_port = admin_port
        self.bind_host = bind_host
        self.config: dict[str, Any] = render_homeserver_config(
            server_name=server_name,
            data_dir=self.data_dir,
            public_port=public_port,
            admin_port=admin_port,
            bind_host=bind_host,
            public_baseurl=public_baseurl,
            database=database,
            password_providers=password_providers,
            modules=modules,
            shared_secret_registration=shared_secret_registration,
            rate_limits=rate_limits,
            overrides=overrides,
        )
        self.log_level = log_level
        self.python = python
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._lock: IO[str] | None = None
        self.last_start_seconds: float | None = None

    # --- addresses ---------------------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """The client listener (what people and outsiders reach); it refuses ``/_synapse/admin``."""
        return f"http://{LOOPBACK}:{self.public_port}"

    @property
    def admin_url(self) -> str:
        """The loopback listener with the admin API (the provisioner and the bot use this one)."""
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """True while the process this object started is alive."""
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -------------------------------------------------------------------------------------

    def write_config(self) -> Path:
        """Write the config files (idempotent; secrets and keys are kept) and return the config path."""
        return write_homeserver_config(self.data_dir, self.config, log_level=self.log_level)

    def check_config(self) -> None:
        """Run Synapse's own config check on the written config (see :func:`check_config`)."""
        check_config(self.write_config(), python=self.python)

    def _take_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.data_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise SynapseError(
                f"a Synapse already runs on {self.data_dir} (lock held by {owner}); stop it first "
                "or use another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def start(self) -> None:
        """Start Synapse and return once ``/health`` answers on both listeners.

        Raises :class:`SynapseError` naming the cause (port in use, process exited, timeout), with the tail
        of its log, and leaves no process behind.
        """
        if self.is_running():
            return
        for host, port in ((self.bind_host, self.public_port), (LOOPBACK, self.admin_port)):
            if not port_is_free(port, host):
                raise SynapseError(
                    f"port {host}:{port} is already in use; stop what listens there or choose other ports"
                )
        self._take_lock()
        try:
            self.write_config()
            self.log_path.touch()
            self._stdout = open(self.data_dir / STDOUT_FILE, "ab")  # noqa: SIM115 - lives as long as the process
            began = time.monotonic()
            self._process = subprocess.Popen(
                [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                env=_synapse_env(),
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the demo's terminal reaches the demo, which stops us cleanly.
                start_new_session=True,
            )
            self._wait_healthy(began)
            self.last_start_seconds = time.monotonic() - began
            log.info(
                "synapse started in %.1fs (pid %d, %s)", self.last_start_seconds, self.pid, self.public_url
            )
        except BaseException:
            self._terminate(signal.SIGKILL, timeout=10)
            raise

    def _wait_healthy(self, began: float) -> None:
        deadline = began + self.start_timeout
        pending = [self.public_url, self.admin_url]
        while pending:
            process = self._process
            assert process is not None
            code = process.poll()
            if code is not None:
                raise SynapseError(f"Synapse exited with code {code} while starting.\n{self._log_tails()}")
            if time.monotonic() > deadline:
                raise SynapseError(
                    f"Synapse did not answer /health within {self.start_timeout:.0f}s.\n{self._log_tails()}"
                )
            try:
                with urllib.request.urlopen(pending[0] + "/health", timeout=2) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)

    def _log_tails(self) -> str:
        return (
            f"--- {self.log_path} (tail) ---\n{_tail(self.log_path)}\n"
            f"--- {self.data_dir / STDOUT_FILE} (tail) ---\n{_tail(self.data_dir / STDOUT_FILE)}"
        )

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        process = self._process
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "synapse (pid %d) ignored %s for %.0fs; killing it", process.pid, sig.name, timeout
                    )
                    process.kill()
                    code = process.wait()
            else:
                code = process.returncode
            self._process = None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        self._release_lock()
        return code

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGTERM, then SIGKILL after ``timeout`` seconds); a stopped server is a no-op."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would: for fault-injection tests."""
        self._terminate(signal.SIGKILL, timeout=10)

    def restart(self) -> None:
        """Stop cleanly and start again on the same data (config re-rendered, state kept)."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedSynapse:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- accounts (blocking HTTP on the admin listener) -----------------------------------------------

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.admin_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                parsed: dict[str, Any] = json.loads(response.read() or b"{}")
                return parsed
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace")[:500]
            raise SynapseError(f"{method} {path} answered {err.code}: {detail}") from None

    def _shared_secret(self) -> str:
        if "registration_shared_secret_path" not in self.config:
            raise SynapseError(
                "this Synapse was configured without shared_secret_registration, so accounts with a "
                "password cannot be made here; pass shared_secret_registration=True (dev/test only)"
            )
        return (self.data_dir / REGISTRATION_SECRET_FILE).read_text(encoding="utf-8").strip()

    def register(
        self,
        localpart: str,
        password: str | None = None,
        *,
        admin: bool = False,
        displayname: str | None = None,
    ) -> RegisteredAccount:
        """Register an account with ``/_synapse/admin/v1/register`` and the shared secret (HMAC-SHA1)."""
        password = password or secrets.token_urlsafe(18)
        nonce = str(self._request("GET", "/_synapse/admin/v1/register")["nonce"])
        mac = hmac.new(self._shared_secret().encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode("utf-8"))
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        body: dict[str, Any] = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        reply = self._request("POST", "/_synapse/admin/v1/register", body)
        return RegisteredAccount(
            user_id=str(reply["user_id"]),
            access_token=str(reply["access_token"]),
            device_id=str(reply.get("device_id", "")),
            password=password,
        )

    def create_admin(
        self, localpart: str = "admin", password: str | None = None, *, displayname: str | None = None
    ) -> RegisteredAccount:
        """Register a server admin and exempt it from rate limits (the provisioning account).

        Returns the account; its ``access_token`` is what the provisioner uses.
        """
        account = self.register(localpart, password, admin=True, displayname=displayname)
        quoted = urllib.parse.quote(account.user_id, safe="")
        self._request(
            "POST",
            f"/_synapse/admin/v1/users/{quoted}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0},
            token=account.access_token,
        )
        return account

    def create_user_with_password(
        self, localpart: str, password: str, *, displayname: str | None = None
    ) -> RegisteredAccount:
        """Register an ordinary account with a Synapse password (test clients only; people use LDAP)."""
        return self.register(localpart, password, admin=False, displayname=displayname)


@contextlib.contextmanager
def running_synapse(data_dir: Path, **kwargs: Any) -> Iterator[EmbeddedSynapse]:
    """``with running_synapse(dir) as hs:`` starts a server and always stops it."""
    server = EmbeddedSynapse(data_dir, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
